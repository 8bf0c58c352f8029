"""Link check: does every link in a message answer?

The links come from the HTML part (``href`` and ``src`` of ``a``, ``area``, ``img``
and ``link``) and from URLs in the text part; only ``http`` and ``https`` are
checked. Fetching is bounded and opt-in beyond loopback:

- only hosts on loopback (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``) and
  the names in :attr:`LinkCheckConfig.hosts` are fetched (``*``: any host); other
  links are listed as not checked;
- each request has a timeout, at most :attr:`LinkCheckConfig.max_links` links are
  checked, by at most :attr:`LinkCheckConfig.workers` threads at a time;
- a ``HEAD`` first, then a ``GET`` when it fails or is refused; redirects are
  reported (3xx counts as working), never followed; no proxy from the environment is
  used and no body is read.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from .message import StoredMessage
from .templates import URL_PATTERN

__all__ = ("LinkCheckConfig", "LinkChecker", "LinkResult", "extract_links")

_LINK_ATTRIBUTES = {"a": "href", "area": "href", "link": "href", "img": "src"}

_USER_AGENT = "smtp_backends-devserver-linkcheck"


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = _LINK_ATTRIBUTES.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.links.append(value.strip())


def extract_links(message: StoredMessage) -> list[str]:
    """The message's http(s) links, HTML part first, in order, without repeats."""
    found: list[str] = []
    if message.html is not None:
        parser = _LinkParser()
        try:
            parser.feed(message.html)
            parser.close()
        except Exception:
            # A development inbox shows whatever it got; a parser error loses no links
            # found before it.
            pass
        found.extend(parser.links)
    if message.text is not None:
        found.extend(match.group(0) for match in URL_PATTERN.finditer(message.text))
    return list(dict.fromkeys(link for link in found if _scheme(link) in {"http", "https"}))


def _scheme(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).scheme
    except ValueError:
        return ""  # such as an unclosed IPv6 bracket


@dataclass(frozen=True)
class LinkCheckConfig:
    """How the link check fetches.

    Attributes:
        hosts: names fetched besides loopback (``*``: any host).
        timeout: seconds for each request (connect and first reply).
        max_links: links checked per message; the rest are reported as not checked.
        workers: requests in flight at once.

    Raises:
        ValueError: a timeout that is not positive, or fewer than 1 link or worker.
    """

    hosts: tuple[str, ...] = ()
    timeout: float = 5.0
    max_links: int = 50
    workers: int = 4

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError("the link check timeout must be positive")
        if self.max_links < 1 or self.workers < 1:
            raise ValueError("the link check needs at least 1 link and 1 worker")
        object.__setattr__(self, "hosts", tuple(host.strip().lower() for host in self.hosts))

    def named(self, host: str) -> bool:
        """Whether ``host`` was allowed by name (or ``*``)."""
        return "*" in self.hosts or host.lower().rstrip(".") in self.hosts

    def allows(self, host: str) -> bool:
        """Whether links to ``host`` are fetched: named, or a loopback name or address."""
        host = host.lower().rstrip(".")
        if self.named(host) or host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _resolves_to_loopback(host: str, port: int | None) -> bool:
    """Whether every address ``host`` resolves to is a loopback address.

    ``*.localhost`` should resolve to loopback (RFC 6761 6.3) but a resolver may ask
    DNS; a link that is fetched because of its name must not leave the machine.
    """
    try:
        infos = socket.getaddrinfo(host, port or 80, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%")[0]).is_loopback for address in addresses
    )


@dataclass(frozen=True)
class LinkResult:
    """The check of one link.

    Attributes:
        url: the link.
        checked: whether it was fetched (False: host not allowed, or over the cap).
        status: the HTTP status of the last request, or None.
        ok: fetched and answered 2xx or 3xx.
        method: ``HEAD`` or ``GET``: the request the status belongs to.
        error: why it failed or was not checked, or None.
    """

    url: str
    checked: bool
    status: int | None = None
    ok: bool = False
    method: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {
            "url": self.url,
            "checked": self.checked,
            "status": self.status,
            "ok": self.ok,
            "method": self.method,
            "error": self.error,
        }


class LinkChecker:
    """Checks links as :class:`LinkCheckConfig` allows.

    Args:
        config: the bounds (defaults: loopback only, 5 s, 50 links, 4 at a time).
        ssl_context: the context for https links (default: verified, system CAs).
    """

    def __init__(
        self, config: LinkCheckConfig | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.config = config or LinkCheckConfig()
        self._ssl_context = ssl_context

    def check_message(self, message: StoredMessage) -> list[LinkResult]:
        """Check every link of ``message``."""
        return self.check(extract_links(message))

    def check(self, urls: Sequence[str]) -> list[LinkResult]:
        """Check ``urls`` in order; the results come back in the same order."""
        capped = list(urls[: self.config.max_links])
        over = [
            LinkResult(url, False, error=f"not checked: over the cap of {self.config.max_links}")
            for url in urls[self.config.max_links :]
        ]
        if not capped:
            return over
        with ThreadPoolExecutor(
            max_workers=min(self.config.workers, len(capped)),
            thread_name_prefix="smtp_backends-devserver-linkcheck",
        ) as pool:
            results = list(pool.map(self._check_one, capped))
        return results + over

    def _check_one(self, url: str) -> LinkResult:
        try:
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname or ""
            port = parts.port
        except ValueError:
            return LinkResult(url, False, error="not checked: malformed URL")
        if not host:
            return LinkResult(url, False, error="not checked: no host")
        if not self.config.allows(host):
            return LinkResult(
                url,
                False,
                error=f"not checked: {host} is not an allowed host (add it with --link-check-host)",
            )
        if not self.config.named(host) and not _resolves_to_loopback(host, port):
            return LinkResult(url, False, error=f"not checked: {host} is not on loopback here")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        status, error = self._request(parts.scheme, host, port, target, "HEAD")
        method = "HEAD"
        if status is None or status >= 400:
            # Some servers refuse or mishandle HEAD (405, 501, or worse): ask with GET.
            status, error = self._request(parts.scheme, host, port, target, "GET")
            method = "GET"
        ok = status is not None and 200 <= status < 400
        if status is not None and not ok:
            error = f"HTTP {status}"
        return LinkResult(url, True, status, ok, method, error)

    def _request(
        self, scheme: str, host: str, port: int | None, target: str, method: str
    ) -> tuple[int | None, str | None]:
        connection: http.client.HTTPConnection
        timeout = self.config.timeout
        if scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request(method, target, headers={"User-Agent": _USER_AGENT})
            response = connection.getresponse()
            # The status is all we want; the body is never read.
            return response.status, None
        except (OSError, http.client.HTTPException) as error:
            return None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        finally:
            connection.close()


def results_json(results: Iterable[LinkResult]) -> dict[str, Any]:
    """The JSON document of ``POST /api/messages/ID/link-check``."""
    listed = [result.to_json() for result in results]
    return {
        "links": listed,
        "checked": sum(1 for result in listed if result["checked"]),
        "broken": sum(1 for result in listed if result["checked"] and not result["ok"]),
    }
