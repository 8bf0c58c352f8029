"""Encoding client commands, refusing anything that could inject a command.

Every argument is checked before a byte is produced: CR, LF, NUL and the
other control characters raise :class:`ValueError`, so a caller-supplied
address, option or host name can never end a command line early and start
another one (RFC 5321 section 2.3.8 allows no bare CR or LF in commands).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = (
    "command",
    "ehlo_name",
    "envelope_address",
    "mail_from",
    "option",
    "rcpt_to",
)

# C0 controls and DEL. TAB is included: no argument we send needs one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Their friends once a command is encoded as UTF-8: C1 controls (NEL, U+0085,
# ends a line for some parsers) and the Unicode line and paragraph separators.
_C1_OR_SEPARATOR = re.compile(r"[\x80-\x9f\u2028\u2029]")
# A quoted string anywhere (a display name such as "Doe, <John>").
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
# A quoted-string local part ("john doe"@example.org) may hold these.
_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\]|\\.)*"')
# Outside a quoted local part, these would end the path or start parameters.
_UNSAFE_IN_PATH = re.compile(r'[\s<>"()\[\],;:\\]')
_UNSAFE_IN_DOMAIN_LITERAL = re.compile(r"[\s<>\[\]\\]")
# An ESMTP parameter: keyword, optionally "=value" (RFC 5321 4.1.2).
# Values are printable ASCII, or non-ASCII text without C1 controls and
# Unicode line separators (RFC 6531 allows UTF-8 in some values).
_OPTION = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9-]*(?:=[\x21-\x3c\x3e-\x7e\xa0-\u2027\u202a-\U0010ffff]+)?"
)
# A host name or address literal for EHLO/HELO.
_EHLO_NAME = re.compile(r"^(?:\[[^\s\[\]\\]+\]|[^\s\[\]\\<>()@,;:\"]+)$")


def _reject_controls(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains a control character: {value!r}")


def envelope_address(address: str, *, allow_empty: bool = False) -> str:
    """Return the bare address (addr-spec) to put between ``<`` and ``>``.

    Accepts ``"user@example.org"`` and ``"Display Name <user@example.org>"``
    (the display name is dropped). The address is validated here rather than
    trusting :func:`email.utils.parseaddr`, which truncates some malformed
    input instead of rejecting it.

    Args:
        address: the address as the caller gave it.
        allow_empty: accept ``""`` (the null reverse-path ``<>``, for bounces).

    Raises:
        TypeError: ``address`` is not a str.
        ValueError: control characters, spaces or brackets that could change
            the command, or an empty address where one is needed.
    """
    if not isinstance(address, str):
        raise TypeError(f"An address must be a str, not {type(address).__name__}")
    return _envelope_address(address, allow_empty)


# Bulk sending repeats the same sender (and often the same recipients):
# validate each distinct address once. Errors are raised again, never cached.
@functools.lru_cache(maxsize=4096)
def _envelope_address(address: str, allow_empty: bool) -> str:
    _reject_controls(address, "Address")
    addr = address.strip()
    if addr.endswith(">"):
        start = addr.rfind("<")
        display = _QUOTED_STRING.sub("", addr[:start])  # a quoted name may hold < or >
        if start < 0 or addr[start:].count(">") != 1 or "<" in display or ">" in display:
            raise ValueError(f"Unbalanced angle brackets in address: {address!r}")
        addr = addr[start + 1 : -1].strip()
    if not addr:
        if allow_empty:
            return ""
        raise ValueError(f"Empty address: {address!r}")
    # RFC 5321 4.1.2: Mailbox = Local-part "@" ( Domain / address-literal ).
    local, at, domain = addr.rpartition("@")
    if not at:
        local, domain = addr, ""
    elif not local:
        raise ValueError(f"Empty local part in address: {address!r}")
    unquoted = _QUOTED_LOCAL_PART.sub("", local, count=1)
    if _UNSAFE_IN_PATH.search(unquoted):
        raise ValueError(f"Address has characters not allowed in an SMTP path: {address!r}")
    if domain.startswith("[") and domain.endswith("]"):
        if len(domain) == 2 or _UNSAFE_IN_DOMAIN_LITERAL.search(domain[1:-1]):
            raise ValueError(f"Malformed address literal: {address!r}")
    elif _UNSAFE_IN_PATH.search(domain) or (at and not domain):
        raise ValueError(f"Address has characters not allowed in an SMTP path: {address!r}")
    return addr


def option(value: str) -> str:
    """Validate one ESMTP parameter (``SIZE=1024``, ``BODY=8BITMIME``...).

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: spaces, controls or anything else that is not one parameter.
    """
    if not isinstance(value, str):
        raise TypeError(f"An option must be a str, not {type(value).__name__}")
    if not _OPTION.fullmatch(value):
        raise ValueError(f"Malformed ESMTP parameter: {value!r}")
    return value


def ehlo_name(name: str) -> str:
    """Validate the name sent with EHLO or HELO (a domain or an address literal).

    Raises:
        ValueError: an empty name, controls, spaces or characters that are
            neither part of a domain nor of an address literal.
    """
    if not isinstance(name, str):
        raise TypeError(f"The local host name must be a str, not {type(name).__name__}")
    _reject_controls(name, "Local host name")
    if not _EHLO_NAME.fullmatch(name):
        raise ValueError(f"Invalid local host name for EHLO/HELO: {name!r}")
    return name


def command(verb: str, *arguments: str, encoding: str = "ascii") -> bytes:
    """Encode ``VERB arg arg...`` with its CRLF.

    Raises:
        ValueError: a control character (C0, DEL, C1, U+2028/U+2029) in the
            verb or an argument, or text that the encoding cannot represent.
    """
    _reject_controls(verb, "Command")
    for argument in arguments:
        _reject_controls(argument, "Command argument")
        if _C1_OR_SEPARATOR.search(argument):
            raise ValueError(f"Command argument contains a line-breaking character: {argument!r}")
    line = " ".join((verb, *arguments)) if arguments else verb
    try:
        return line.encode(encoding) + b"\r\n"
    except UnicodeEncodeError as exc:
        raise ValueError(f"Command {verb} cannot be encoded as {encoding}: {exc}") from None


def _path_command(head: bytes, address: str, options: Iterable[str], utf8: bool) -> bytes:
    # The address and each option are validated already: build the bytes directly.
    encoding = "utf-8" if utf8 else "ascii"
    try:
        if not options:  # the common case (an empty list or tuple): one concatenation
            return head + address.encode(encoding) + b">\r\n"
        parts = [head, address.encode(encoding), b">"]
        for value in options:
            parts.append(b" " + option(value).encode(encoding))
    except UnicodeEncodeError as exc:
        verb = head.split(b" ", 1)[0].decode()
        raise ValueError(f"Command {verb} cannot be encoded as {encoding}: {exc}") from None
    parts.append(b"\r\n")
    return b"".join(parts)


def mail_from(sender: str, options: Iterable[str] = (), *, utf8: bool = False) -> bytes:
    """Encode ``MAIL FROM:<sender> [options]``.

    Args:
        sender: the envelope sender; ``""`` gives the null reverse-path.
        options: ESMTP parameters such as ``SIZE=...``, ``BODY=8BITMIME``.
        utf8: encode the address as UTF-8 (the SMTPUTF8 extension, RFC 6531).

    Raises:
        ValueError: an unsafe address or option, or a non-ASCII address
            without ``utf8``.
    """
    return _path_command(b"MAIL FROM:<", envelope_address(sender, allow_empty=True), options, utf8)


def rcpt_to(recipient: str, options: Iterable[str] = (), *, utf8: bool = False) -> bytes:
    """Encode ``RCPT TO:<recipient> [options]``; raises as :func:`mail_from`."""
    return _path_command(b"RCPT TO:<", envelope_address(recipient), options, utf8)
