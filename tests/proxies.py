"""Small SOCKS5, SOCKS4/4a and HTTP CONNECT proxies on loopback, for the proxy tests.

Each runs its own event loop in a thread, relays bytes both ways once the tunnel is up,
and records every destination it was asked for. ``names`` maps host names to loopback
addresses that only the proxy knows (remote DNS: ``socks5h``, ``socks4a``, HTTP), so a
test can name the SMTP server ``smtp.test`` and check that TLS verifies that name.
Nothing here imports ``smtp_backends``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import struct
import threading

LOOPBACK = "127.0.0.1"


class ProxyServer:
    """A proxy of one ``kind`` ("socks5", "socks4" or "http") on 127.0.0.1.

    Args:
        names: host name -> (address, port) the proxy resolves itself.
        credentials: (user, password) the proxy requires (SOCKS5 user/password
            auth, SOCKS4 user id, HTTP basic ``Proxy-Authorization``).
    """

    def __init__(
        self,
        kind: str,
        *,
        names: dict[str, tuple[str, int]] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        assert kind in ("socks5", "socks4", "http")
        self.kind = kind
        self.names = dict(names or {})
        self.credentials = credentials
        #: (host, port) requested by each tunnel, as the client sent them.
        self.requests: list[tuple[str, int]] = []
        self.refused = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, scheme: str | None = None, *, user: str | None = None) -> str:
        """The proxy URL for the client (``scheme`` defaults to the kind)."""
        auth = ""
        if user is not None:
            auth = f"{user}@"
        elif self.credentials is not None:
            auth = f"{self.credentials[0]}:{self.credentials[1]}@"
        return f"{scheme or self.kind}://{auth}{LOOPBACK}:{self.port}"

    def __enter__(self) -> ProxyServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(5)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    # --------------------------------------------------------------- handshakes

    def _resolve(self, host: str, port: int) -> tuple[str, int]:
        self.requests.append((host, port))
        if host in self.names:
            return self.names[host]
        ipaddress.ip_address(host)  # only names the proxy knows, or addresses
        return host, port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            handshake = {"socks5": self._socks5, "socks4": self._socks4, "http": self._http}
            target = await handshake[self.kind](reader, writer)
            if target is not None:
                await self._relay(reader, writer, target)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = 2 if self.credentials else 0
        if version != 5 or wanted not in methods:
            writer.write(b"\x05\xff")
            self.refused += 1
            return None
        writer.write(bytes([5, wanted]))
        if wanted == 2:  # RFC 1929
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = (user, password) == self.credentials
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                self.refused += 1
                return None
        _, command, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        target = await self._open(host, port) if command == 1 else None
        reply = 0 if target is not None else 5  # 5: connection refused
        writer.write(bytes([5, reply, 0, 1]) + socket.inet_aton("0.0.0.0") + b"\x00\x00")
        return target

    async def _socks4(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        _, command, port, address = struct.unpack("!BBH4s", await reader.readexactly(8))
        user = (await reader.readuntil(b"\x00"))[:-1].decode()
        host = socket.inet_ntoa(address)
        if address.startswith(b"\x00\x00\x00") and address != b"\x00\x00\x00\x00":  # 4a
            host = (await reader.readuntil(b"\x00"))[:-1].decode()
        ok_user = self.credentials is None or user == self.credentials[0]
        target = await self._open(host, port) if command == 1 and ok_user else None
        if target is None:
            self.refused += 1
        writer.write(struct.pack("!BBH4s", 0, 90 if target else 91, 0, b"\x00" * 4))
        return target

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, authority, _ = request[0].split(" ")
        headers = dict(line.split(": ", 1) for line in request[1:] if ": " in line)
        if self.credentials is not None:
            expected = base64.b64encode(":".join(self.credentials).encode()).decode()
            if headers.get("Proxy-Authorization") != f"Basic {expected}":
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                return None
        host, _, port = authority.rpartition(":")
        target = await self._open(host.strip("[]"), int(port)) if method == "CONNECT" else None
        if target is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return None
        # The SMTP server speaks first: its greeting leaves in the same write as the
        # 200, as it may in the wild, so a client that reads past the answer loses it.
        try:
            greeting = await asyncio.wait_for(target[0].read(65536), 5)
        except asyncio.TimeoutError:
            greeting = b""
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n" + greeting)
        return target

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            address = self._resolve(host, port)
            return await asyncio.open_connection(*address)
        except (OSError, ValueError):
            return None

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        upstream_reader, upstream_writer = target
        self._writers.add(upstream_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sink.close()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers.discard(upstream_writer)
            upstream_writer.close()
            with contextlib.suppress(Exception):
                await upstream_writer.wait_closed()
