"""Addresses: the one parser every adapter uses for envelope addresses.

An address a user gives (``"Ann <ann@example.org>"``, ``"ann@example.org"``,
``"postmaster"``) must be exactly one mailbox (RFC 5322 section 3.4), or it is
an error before anything is sent: ``"not an address"`` and
``"a@x.org b@x.org"`` are refused with a message that names the problem,
where :func:`email.utils.parseaddr` would quietly keep a fragment of them.

The rules are Django 6's (``EmailBackend.prep_address()``), so that every
adapter agrees with Django's stock backend:

* the parser is the standard library's RFC 5322 address parser, and any
  defect it reports is an error;
* a local mailbox without a domain (``"webmaster"``) is allowed, as Django
  allows it;
* a non-ASCII local part is allowed: such an address is sent with SMTPUTF8
  (RFC 6531) when the server offers it, and refused when it does not;
* a non-ASCII domain is kept as it is (U-labels); when the server does not
  offer SMTPUTF8 the core sends it as IDNA A-labels (:func:`ascii_fallback`),
  which every server accepts.

This module is pure (no I/O): the protocol core may use it too.
"""

from __future__ import annotations

import dataclasses
import functools
from email.errors import HeaderParseError
from email.headerregistry import AddressHeader
from typing import Any

__all__ = (
    "Mailbox",
    "addr_spec",
    "ascii_fallback",
    "idna_domain",
    "parse_mailbox",
)

# Defects Django (and we) accept: a local mailbox such as "webmaster" (Django
# ticket #15042), and a non-ASCII local part, valid with SMTPUTF8 (the
# standard library flags it before Python 3.15, cpython issue 81074; the
# closing parenthesis is in its message).
_ACCEPTED_DEFECTS = frozenset(
    {
        "addr-spec local part with no domain",
        "local-part contains non-ASCII characters)",
    }
)


@dataclasses.dataclass(frozen=True)
class Mailbox:
    """One parsed address.

    Attributes:
        display_name: the name before ``<...>`` ("" when none).
        local_part: what comes before the ``@``.
        domain: what comes after it ("" for a local mailbox).
        addr_spec: the bare address for the envelope (quoted where RFC 5321
            needs it).
    """

    display_name: str
    local_part: str
    domain: str
    addr_spec: str

    @property
    def ascii(self) -> bool:
        """Whether the address is plain ASCII (no SMTPUTF8 needed)."""
        return self.addr_spec.isascii()


def _several(text: str) -> int:
    """How many addresses ``text`` seems to hold when split on blanks, commas, semicolons."""
    parts = text.replace(",", " ").replace(";", " ").split()
    return sum(1 for part in parts if "@" in part.strip("<>"))


@functools.lru_cache(maxsize=4096)
def _parse(text: str, what: str) -> Mailbox:
    # Cached: bulk sending repeats the same sender and often the same
    # recipients. Errors are raised again each time, never cached.
    label = f"{what} {text!r}" if what else repr(text)
    if not text.strip():
        raise ValueError(f"Invalid address {label}, not one address: it is empty")
    try:
        parsed = AddressHeader.value_parser(text)
    except (HeaderParseError, IndexError, AttributeError) as exc:  # it gives up on some input
        raise ValueError(f"Invalid address {label}, not one address: {exc}") from None
    mailboxes = parsed.all_mailboxes
    defects = sorted({str(defect) for defect in parsed.all_defects} - _ACCEPTED_DEFECTS)
    # A line break or control character is reported as such, never as a list.
    controls = any("non-printables" in defect for defect in defects)
    if len(mailboxes) > 1 or (defects and not controls and _several(text) > 1):
        count = max(len(mailboxes), _several(text))
        raise ValueError(
            f"Invalid address {label}, not one address: it holds {count} "
            "(give each address as its own item)"
        )
    if defects:
        raise ValueError(f"Invalid address {label}, not one address: {'; '.join(defects)}")
    if len(mailboxes) != 1 or not mailboxes[0].local_part:
        raise ValueError(f"Invalid address {label}, not one address: no mailbox found")
    mailbox = mailboxes[0]
    return Mailbox(
        display_name=mailbox.display_name or "",
        local_part=mailbox.local_part,
        domain=mailbox.domain or "",
        addr_spec=mailbox.addr_spec,
    )


def parse_mailbox(address: Any, what: str = "") -> Mailbox:
    """``address`` as exactly one :class:`Mailbox`.

    Args:
        address: ``"a@example.org"``, ``"Name <a@example.org>"``, or a
            ``(name, address)`` pair (Flask-Mail's form); lazy strings are
            turned into text.
        what: what the address is, for the error (``"recipient"``,
            ``"MAIL_DEFAULT_SENDER"``).

    Raises:
        TypeError: not a str (nor a pair).
        ValueError: not exactly one mailbox, or a defect (CR/LF, bad
            syntax): the message names the address and the problem.
    """
    if isinstance(address, tuple):
        if len(address) != 2 or not isinstance(address[1], str):
            raise TypeError(f"An address pair must be (name, address), not {address!r}")
        address = address[1]
    elif not isinstance(address, str):
        if type(address).__name__ != "__proxy__":  # Django's lazy strings
            raise TypeError(f"An address must be a str, not {type(address).__name__}")
        address = str(address)
    return _parse(str(address), what)


def addr_spec(address: Any, what: str = "") -> str:
    """The bare address (addr-spec) of one address, for the envelope.

    ``"Ann <ann@example.org>"`` gives ``ann@example.org``; ``"<>"`` (the null
    reverse-path) stays ``"<>"``. Unicode is kept (see the module's rules).

    Raises:
        TypeError / ValueError: as :func:`parse_mailbox`.
    """
    if isinstance(address, str) and address.strip() == "<>":
        return "<>"
    return parse_mailbox(address, what).addr_spec


def idna_domain(domain: str) -> str:
    """``domain`` as IDNA A-labels (``öäü.com`` -> ``xn--4ca9at.com``), as Django encodes it.

    Raises:
        ValueError: not a valid internationalised domain name.
    """
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"Invalid domain {domain!r}: {exc}") from None


def ascii_fallback(address: str) -> str | None:
    """``address`` (an addr-spec) in ASCII for a server without SMTPUTF8, or None.

    A non-ASCII domain becomes IDNA A-labels; a non-ASCII local part cannot
    be written in ASCII (None: the address needs SMTPUTF8).
    """
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    try:
        return f"{local}@{idna_domain(domain)}"
    except ValueError:
        return None
