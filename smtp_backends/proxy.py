"""Reaching the SMTP server through a SOCKS5, SOCKS4 or HTTP CONNECT proxy (python-socks).

Give :class:`SMTPProxy` as ``proxy=`` to :class:`~smtp_backends.SMTP` or
:class:`~smtp_backends.SMTPPool` (the ``proxy`` extra).
The proxy only carries bytes: implicit TLS and STARTTLS run end to end
through the tunnel and verify the SMTP server's name, never the proxy's. A
connection through a proxy never counts as local, so AUTH over plaintext
is refused as it would be to any remote server, even when the proxy itself
listens on loopback.

URL schemes follow curl's: ``socks5://`` resolves the SMTP host name here
and ``socks5h://`` lets the proxy resolve it; ``socks4://`` and
``socks4a://`` likewise; ``http://`` sends the name in the CONNECT request.

SOCKS goes through python-socks. HTTP CONNECT is done here: python-socks
reads the proxy's answer with one large ``recv`` and drops whatever follows
it, and in SMTP the server speaks first, so its greeting, arriving in the
same segment as the proxy's ``200``, would be lost. Here the answer is read
byte by byte up to its blank line and the greeting stays in the socket.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import socket
import urllib.parse
from typing import Any

from .errors import SMTPConnectError, SMTPConnectTimeoutError

__all__ = ("SMTPProxy",)

# scheme -> (python-socks scheme, resolve at the proxy)
_SCHEMES = {
    "socks5": ("socks5", False),
    "socks5h": ("socks5", True),
    "socks4": ("socks4", False),
    "socks4a": ("socks4", True),
    "http": ("http", True),
}
_DEFAULT_PORTS = {"socks5": 1080, "socks4": 1080, "http": 8080}
# The proxy's answer to CONNECT: status line and headers, bounded.
_MAX_HTTP_ANSWER = 16 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?")
_UNSAFE_HOST = re.compile(r"[\x00-\x20\x7f/@?#]")


@dataclasses.dataclass(frozen=True)
class SMTPProxy:
    """A proxy to tunnel SMTP connections through, parsed and checked once.

    Args:
        url: ``socks5://[user:password@]host[:port]`` (also ``socks5h``,
            ``socks4``, ``socks4a``, ``http``); credentials percent-encoded.
            The password never appears in reprs or errors.

    Raises:
        ValueError: an unknown scheme, no host, or a bad port.
        ImportError: python-socks is not installed.
    """

    url: str = dataclasses.field(repr=False)
    scheme: str = dataclasses.field(init=False)
    host: str = dataclasses.field(init=False)
    port: int = dataclasses.field(init=False)
    username: str | None = dataclasses.field(init=False, default=None)
    password: str | None = dataclasses.field(init=False, default=None, repr=False)
    remote_dns: bool = dataclasses.field(init=False, default=True)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise TypeError(f"A proxy URL must be a str, not {type(self.url).__name__}")
        parsed = urllib.parse.urlsplit(self.url)
        scheme = parsed.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(
                f"Unsupported proxy scheme {scheme!r}: use one of {', '.join(sorted(_SCHEMES))}"
            )
        try:
            port = parsed.port
        except ValueError:
            raise ValueError("Invalid proxy port") from None
        if not parsed.hostname:
            raise ValueError("The proxy URL has no host")
        kind, remote_dns = _SCHEMES[scheme]
        set_ = object.__setattr__
        set_(self, "scheme", scheme)
        set_(self, "host", parsed.hostname)
        set_(self, "port", port if port is not None else _DEFAULT_PORTS[kind])
        set_(self, "remote_dns", remote_dns)
        if parsed.username is not None:
            set_(self, "username", urllib.parse.unquote(parsed.username))
            set_(self, "password", urllib.parse.unquote(parsed.password or ""))
        _python_socks()

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"

    def _proxy(self, loop: asyncio.AbstractEventLoop) -> Any:
        python_socks = _python_socks()
        from python_socks.async_.asyncio import Proxy

        kind = {
            "socks5": python_socks.ProxyType.SOCKS5,
            "socks4": python_socks.ProxyType.SOCKS4,
            "http": python_socks.ProxyType.HTTP,
        }[_SCHEMES[self.scheme][0]]
        return Proxy(
            proxy_type=kind,
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            rdns=self.remote_dns,
            loop=loop,
        )

    async def open(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> socket.socket:
        """Open a tunnel to ``host:port``; returns its connected socket.

        Raises:
            SMTPConnectTimeoutError: the proxy took longer than ``timeout``.
            SMTPConnectError: the proxy could not be reached, refused the
                credentials or the destination.
        """
        import python_socks

        where = f"{host}:{port} through the proxy {self}"
        if self.scheme == "http":
            return await self._http_connect(host, port, local_addr, where)
        proxy = self._proxy(asyncio.get_running_loop())
        try:
            sock: socket.socket = await proxy.connect(
                host, port, timeout=timeout, local_addr=local_addr
            )
        except python_socks.ProxyTimeoutError:
            raise SMTPConnectTimeoutError(f"Timed out connecting to {where}") from None
        except python_socks.ProxyConnectionError as exc:
            raise SMTPConnectError(f"Error connecting to {where}: {exc}") from None
        except python_socks.ProxyError as exc:
            raise SMTPConnectError(f"The proxy refused to connect to {where}: {exc}") from None
        except OSError as exc:  # resolving the SMTP host here (socks5://, socks4://)
            raise SMTPConnectError(f"Error connecting to {where}: {exc}") from None
        return sock

    async def _http_connect(
        self, host: str, port: int, local_addr: tuple[str, int] | None, where: str
    ) -> socket.socket:
        """HTTP CONNECT (RFC 9110 9.3.6), reading exactly the proxy's answer."""
        if _UNSAFE_HOST.search(host):
            raise ValueError(f"Invalid host name for a proxy tunnel: {host!r}")
        loop = asyncio.get_running_loop()
        sock = await _connect_tcp(loop, self.host, self.port, local_addr, where)
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            if self.username is not None:
                secret = f"{self.username}:{self.password or ''}".encode()
                request += f"Proxy-Authorization: Basic {base64.b64encode(secret).decode()}\r\n"
            await loop.sock_sendall(sock, request.encode("utf-8") + b"\r\n")
            answer = bytearray()
            while not answer.endswith(b"\r\n\r\n"):
                if len(answer) > _MAX_HTTP_ANSWER:
                    raise SMTPConnectError(f"The proxy's answer is too long ({where})")
                byte = await loop.sock_recv(sock, 1)
                if not byte:
                    raise SMTPConnectError(f"The proxy closed the connection ({where})")
                answer += byte
            status = _STATUS_LINE.match(bytes(answer))
            if status is None:
                raise SMTPConnectError(f"The proxy's answer is not HTTP ({where})")
            if not status.group(1).startswith(b"2"):
                reason = (status.group(2) or b"").decode("latin-1")
                raise SMTPConnectError(
                    f"The proxy refused to connect to {where}: {status.group(1).decode()} {reason}"
                )
        except OSError as exc:
            sock.close()
            if isinstance(exc, SMTPConnectError):
                raise
            raise SMTPConnectError(f"Error connecting to {where}: {exc}") from None
        except BaseException:
            sock.close()
            raise
        return sock


async def _connect_tcp(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    local_addr: tuple[str, int] | None,
    where: str,
) -> socket.socket:
    """A connected non-blocking socket to the proxy (each resolved address in turn)."""
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SMTPConnectError(f"Error connecting to {where}: {exc}") from None
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            if local_addr is not None:
                sock.bind(local_addr)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise SMTPConnectError(f"Error connecting to {where}: {error}")


def _python_socks() -> Any:
    try:
        import python_socks
    except ImportError:  # pragma: no cover - the extra is part of `dev`
        from .extras import install_hint

        raise ImportError(f"Proxies need python-socks: {install_hint('proxy')}") from None
    return python_socks
