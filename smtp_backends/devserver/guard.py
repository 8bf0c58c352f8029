"""Who may talk to the web inbox: the ``Host`` check and the cross-site check.

The inbox listens on loopback and has no login, so a browser is its only way in from
the outside:

- **DNS rebinding.** A page on ``evil.example`` can make its own name resolve to
  127.0.0.1 and then read the inbox as same-origin. The request still carries
  ``Host: evil.example``, so only names we know are answered (:class:`HostPolicy`):
  loopback names and addresses, the host the server was given, and names the user adds.
- **Cross-site requests.** Any page can make the browser *send* a form POST or a
  ``fetch()`` to 127.0.0.1. Requests that change something are refused when the
  browser says they come from elsewhere: an ``Origin`` other than the inbox's own
  (RFC 6454; ``null`` included), or ``Sec-Fetch-Site`` other than ``same-origin`` or
  ``none`` (Fetch Metadata). Clients that send neither (curl, urllib, test code) are
  not browsers being abused and are let through.

Both checks are pure functions of the request headers, so they are tested without
a server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol

__all__ = (
    "LOOPBACK_NAMES",
    "SAFE_METHODS",
    "Headers",
    "HostPolicy",
    "cross_site_reason",
    "host_name",
)

#: Names that always reach this machine's loopback (RFC 6761 6.3: ``localhost`` and
#: every name under it; browsers resolve them to loopback without asking DNS).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: Methods that change nothing (RFC 9110 9.2.1); every other method is checked.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Fetch Metadata values a state-changing request may carry: the inbox's own pages
# ("same-origin") or something the user did directly, such as a bookmark ("none").
_TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})


def host_name(value: str) -> str | None:
    """The host part of a ``Host`` header or URL authority, lower case, without port.

    ``[::1]:8025`` gives ``::1``; ``Example.ORG.`` gives ``example.org``. None when the
    value is not a plausible ``host[:port]`` (RFC 9110 7.2).
    """
    value = value.strip().lower()
    if not value or any(char.isspace() or char in "/\\@?#" for char in value):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return host
    host, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    return host.rstrip(".") or None


class HostPolicy:
    """The names the inbox answers to.

    Args:
        bound_host: the address the server listens on; answered unless it is a
            wildcard (``0.0.0.0``, ``::``, ``""``), which names no host.
        extra: more names (or addresses) to answer, such as a LAN name when the
            server listens on every interface. ``*`` turns the check off.
    """

    def __init__(self, bound_host: str, extra: Iterable[str] = ()) -> None:
        names = {name for name in LOOPBACK_NAMES}
        self.any_host = False
        for name in (bound_host, *extra):
            if name.strip() == "*":
                self.any_host = True
                continue
            parsed = host_name(f"[{name}]" if ":" in name and "[" not in name else name)
            if parsed is None:
                raise ValueError(f"not a host name: {name!r}")
            if parsed not in {"0.0.0.0", "::"}:
                names.add(parsed)
        self.names = frozenset(names)

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header is answered.

        A request without one (HTTP/1.0 clients) is answered: browsers always send it.
        """
        if self.any_host or host_header is None:
            return True
        host = host_name(host_header)
        if host is None:
            return False
        if host in self.names or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class Headers(Protocol):
    """Request headers: a ``dict`` or :class:`http.client.HTTPMessage` will do."""

    def get(self, name: str, /) -> str | None:
        """The header's value, or None."""


def cross_site_reason(method: str, headers: Headers, host_header: str | None) -> str:
    """Why a request must be refused as cross-site, or '' to let it through.

    Safe methods always pass. For others: a ``Sec-Fetch-Site`` other than
    ``same-origin``/``none``, or an ``Origin`` that is not ``http://`` plus the
    request's own ``Host``, refuses the request.
    """
    if method.upper() in SAFE_METHODS:
        return ""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in _TRUSTED_FETCH_SITES:
        return f"Sec-Fetch-Site is {site.strip()!r}"
    origin = headers.get("Origin")
    if origin is None:
        return ""
    expected = f"http://{(host_header or '').strip().lower()}"
    if origin.strip().lower() != expected:
        return f"Origin {origin.strip()!r} is not this inbox"
    return ""
