"""Flask-Mail's text and address helpers, its errors, and the header-injection checks.

Everything here works on plain values (no app, no extension): the message
class, the connections and the extension build on it.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from email.charset import SHORTEST, Charset
from email.header import Header
from email.utils import formataddr, parseaddr
from typing import TYPE_CHECKING, Any, Union

from smtp_backends.addresses import addr_spec

if TYPE_CHECKING:
    from .message import Attachment, Message

__all__ = (
    "Address",
    "BadHeaderError",
    "FlaskMailUnicodeDecodeError",
    "IncompleteMessageError",
    "NoRecipientsError",
    "NoSenderError",
    "force_text",
    "sanitize_address",
    "sanitize_addresses",
    "sanitize_subject",
)

#: An address as Flask-Mail takes it: ``"a@example.com"``, ``"Name <a@example.com>"``
#: or ``("Name", "a@example.com")``.
Address = Union[str, tuple[str, str]]  # noqa: UP007 - a runtime alias on Python 3.10

# ----------------------------------------------------------------------------- errors


class BadHeaderError(ValueError):
    """A header, address or option would inject a header or an SMTP command.

    Raised by every send before anything is written to the network. Flask-Mail
    derived it from :class:`Exception`; it is also a :class:`ValueError` here.
    """


class IncompleteMessageError(AssertionError, ValueError):
    """The message cannot be sent as it is (no sender, or no recipients).

    Flask-Mail signalled these with ``assert``; deriving from
    :class:`AssertionError` keeps ``except AssertionError`` working, and the
    check runs even under ``python -O``.
    """


class NoSenderError(IncompleteMessageError):
    """The message has no sender and ``MAIL_DEFAULT_SENDER`` is not set."""


class NoRecipientsError(IncompleteMessageError):
    """The message has no recipient (``recipients``, ``cc`` and ``bcc`` are empty)."""


# ----------------------------------------------------------------------------- text helpers


class FlaskMailUnicodeDecodeError(UnicodeDecodeError):
    """A UnicodeDecodeError that names the object that failed to decode (Flask-Mail's name)."""

    def __init__(self, obj: object, *args: Any) -> None:
        self.obj = obj
        super().__init__(*args)

    def __str__(self) -> str:
        return f"{super().__str__()}. You passed in {self.obj!r} ({type(self.obj)})"


def force_text(value: Any, encoding: str = "utf-8", errors: str = "strict") -> str:
    """``value`` as a str: lazy strings (Flask-Babel, speaklater) are resolved.

    Raises:
        UnicodeDecodeError: bytes that do not decode with ``encoding``.
    """
    if isinstance(value, str):
        return value
    try:
        return str(value, encoding, errors) if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as exc:
        raise FlaskMailUnicodeDecodeError(value, *exc.args) from exc


def _charset(name: str) -> Charset:
    """The :class:`~email.charset.Charset` used to render text in charset ``name``.

    UTF-8 text parts are sent 8-bit (unencoded) and UTF-8 headers use the
    shorter of Q and B encoding, as Flask-Mail renders them. Flask-Mail got
    that by changing the process-wide registry (``email.charset.add_charset``);
    a private Charset object gives the same bytes without touching it.
    """
    charset = Charset(name)
    if charset.input_charset == "utf-8":
        charset.header_encoding = SHORTEST
        charset.body_encoding = None  # type: ignore[assignment]
        charset.output_charset = "utf-8"
    return charset


def sanitize_subject(subject: str, encoding: str = "utf-8") -> str:
    """The Subject value: unchanged when ASCII, else RFC 2047 encoded words."""
    if subject.isascii():
        return subject
    try:
        return Header(subject, encoding).encode()
    except UnicodeEncodeError:
        return Header(subject, "utf-8").encode()


def sanitize_address(addr: Address, encoding: str = "utf-8") -> str:
    """One address ready for a header: display name encoded, IDN domain in punycode.

    Args:
        addr: ``"a@example.com"``, ``"Name <a@example.com>"`` or ``("Name", "a@example.com")``.
        encoding: charset for a non-ASCII display name (falls back to UTF-8).

    Raises:
        UnicodeError: a domain that is not a valid internationalised name.
    """
    if isinstance(addr, str):
        name, address = parseaddr(force_text(addr))
    else:
        name, address = addr
    try:
        name = Header(name, encoding).encode()
    except UnicodeEncodeError:
        name = Header(name, "utf-8").encode()
    if not address.isascii():
        if "@" in address:
            local, domain = address.split("@", 1)
            address = f"{Header(local, encoding)}@{domain.encode('idna').decode('ascii')}"
        else:
            address = Header(address, encoding).encode()
    return formataddr((name, address))


def header_address(addr: Address, encoding: str = "utf-8") -> str:
    """:func:`sanitize_address`, except for a non-ASCII local part, kept as UTF-8.

    Flask-Mail could not put such an address in a header at all; it is sent
    with SMTPUTF8 (RFC 6531), whose headers carry UTF-8 (RFC 6532).
    """
    text = addr[1] if isinstance(addr, tuple) else parseaddr(force_text(addr))[1]
    local, at, _ = text.rpartition("@")
    if not at or local.isascii():
        return sanitize_address(addr, encoding)
    name = addr[0] if isinstance(addr, tuple) else parseaddr(force_text(addr))[0]
    if not name:
        return text
    # The display name as sanitize_address() writes it; then the UTF-8 address.
    shown = sanitize_address((name, "x@example.invalid"), encoding)
    return shown[: shown.rindex("<")] + f"<{text}>"


def sanitize_addresses(addresses: Iterable[Address], encoding: str = "utf-8") -> list[str]:
    """:func:`sanitize_address` applied to each address."""
    return [sanitize_address(address, encoding) for address in addresses]


def _format_pair(name: str, address: str) -> str:
    """``("Name", "a@b")`` as ``Name <a@b>``, quoting the name only when it must be.

    Flask-Mail joined the parts as they were, so a name with a comma became
    two addresses; names without special characters come out the same.
    """
    if not name:
        return address
    if re.search(r'[][\\()<>@,:;".]', name):
        name = '"{}"'.format(name.replace("\\", "\\\\").replace('"', '\\"'))
    return f"{name} <{address}>"


def _as_address(value: Address | Sequence[str] | None) -> str | None:
    """A sender value as a str (tuples and two-item lists are joined)."""
    if value is None or isinstance(value, str):
        return value
    if len(value) != 2:
        raise ValueError(f"An address tuple must be (name, address), not {value!r}")
    return _format_pair(value[0], value[1])


def _address_list(value: Address | Iterable[Address] | None) -> list[Address]:
    """A recipients argument as a list (a single str is one address, not characters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _address_header(name: str, addresses: Sequence[str], limit: int = 78) -> str:
    """Join sanitised addresses for header ``name``, folded between addresses.

    The email package re-folds a header line longer than ``limit`` by parsing
    it and writing it again, and in doing so it decodes an encoded display
    name such as ``=?utf-8?q?Lee=2C_Ann?=`` and writes ``Lee, Ann <...>``: one
    address becomes two (Flask-Mail's long To and Cc lines suffer from it).
    Folding here, at the spaces between addresses and before ``<address>``,
    leaves no line for it to re-fold. Headers that fit on one line come out
    exactly as ``", ".join(addresses)``.
    """
    parts: list[str] = []
    for index, address in enumerate(addresses):
        comma = "," if index < len(addresses) - 1 else ""
        display, bracket, rest = address.rpartition(" <")
        if bracket and display and "\n" not in rest:
            parts += [display, f"<{rest}{comma}"]
        else:
            parts.append(address + comma)
    text = ""
    for part in parts:
        last_line = text.rsplit("\n", 1)[-1] if "\n" in text else f"{name}: {text}"
        if text and len(last_line) + 1 + len(part.split("\n", 1)[0]) > limit:
            text += "\n " + part
        else:
            text += (" " if text else "") + part
    return text


def _dedupe(values: Iterable[str]) -> list[str]:
    """Values in their first order, without repeats (Flask-Mail used a set)."""
    return list(dict.fromkeys(values))


@functools.lru_cache(maxsize=1)
def _msgid_domain() -> str:
    # make_msgid() looks the FQDN up on every call, which can take seconds on
    # hosts with slow DNS; once per process is enough.
    return socket.getfqdn()


# ----------------------------------------------------------------------------- header checks

# C0 controls except TAB, and DEL: never allowed in a header value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 5322 2.2: a field name is printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# RFC 2045 token (MIME type names, disposition types, charset names).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A Content-ID (msg-id without its angle brackets).
_CONTENT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")
# An ESMTP parameter may hold neither spaces nor controls.
_BAD_IN_OPTION = re.compile(r"[\x00-\x20\x7f]")


def _folded_ok(value: str) -> bool:
    """Whether a header value is safe: no controls, CRLF only as folding (RFC 5322 2.2.3).

    Each line after a CRLF must start with a space or tab and hold more than
    whitespace; a bare CR or LF is never allowed (Flask-Mail's rule for the
    subject, applied here to every free-text header).
    """
    if "\r" not in value and "\n" not in value:
        return not _CONTROL.search(value)
    for number, line in enumerate(value.split("\r\n")):
        if not line.strip() or (number and line[0] not in " \t") or _CONTROL.search(line):
            return False
    return True


def _address_problem(what: str, value: Any) -> str | None:
    """Why an address value would inject a header, or None."""
    parts = value if isinstance(value, (tuple, list)) else (value,)
    for part in parts:
        text = force_text(part)
        if _CONTROL.search(text):
            return f"{what} contains a line break or control character: {text!r}"
    return None


def _header_problems(message: Message) -> Iterator[str]:
    """Every reason ``message`` would inject a header or a command."""
    if message.subject and not _folded_ok(force_text(message.subject)):
        yield f"Subject contains a line break or control character: {message.subject!r}"
    singles: list[tuple[str, Any]] = [("Sender", message.sender), ("Reply-To", message.reply_to)]
    for what, value in singles:
        if value:
            problem = _address_problem(what, value)
            if problem:
                yield problem
    for what, values in (("To", message.recipients), ("Cc", message.cc), ("Bcc", message.bcc)):
        for value in values:
            problem = _address_problem(what, value)
            if problem:
                yield problem
    if message.charset is not None and not _TOKEN.fullmatch(message.charset):
        yield f"Invalid charset: {message.charset!r}"
    if not _folded_ok(force_text(message.msgId)):
        yield f"Message-ID contains a line break or control character: {message.msgId!r}"
    for subtype in message.alts:
        if not _TOKEN.fullmatch(subtype):
            yield f"Invalid alternative MIME subtype: {subtype!r}"
    for name, value in (message.extra_headers or {}).items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            yield f"Invalid header name: {name!r}"
        elif not _folded_ok(force_text(value)):
            yield f"Header {name} contains a line break or control character: {value!r}"
    for attachment in message.attachments:
        yield from _attachment_problems(attachment)
    for what, options in (
        ("mail_options", message.mail_options),
        ("rcpt_options", message.rcpt_options),
    ):
        for option in options:
            if not isinstance(option, str) or _BAD_IN_OPTION.search(option):
                yield f"ESMTP parameter in {what} contains a space or control: {option!r}"


def _attachment_problems(attachment: Attachment) -> Iterator[str]:
    if attachment.filename is not None and _CONTROL.search(attachment.filename):
        yield f"Attachment filename contains a control character: {attachment.filename!r}"
    maintype, _, subtype = attachment.content_type.partition("/")
    if not _TOKEN.fullmatch(maintype) or not subtype or _CONTROL.search(subtype):
        yield f"Invalid attachment content type: {attachment.content_type!r}"
    if not _TOKEN.fullmatch(attachment.disposition):
        yield f"Invalid attachment disposition: {attachment.disposition!r}"
    if attachment.content_id is not None and not _CONTENT_ID.fullmatch(attachment.content_id):
        yield f"Invalid Content-ID: {attachment.content_id!r}"
    for name, value in attachment.headers.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            yield f"Invalid attachment header name: {name!r}"
        elif not _folded_ok(force_text(value)):
            yield f"Attachment header {name} contains a line break or control: {value!r}"


def _single_address(what: str, value: Address) -> str:
    """The envelope form of ``value``, which must be exactly one address.

    Flask-Mail's parser kept the first address of ``"a@x, b@y"`` (and the
    word ``not`` of ``"not an address"``) without a word; here that is an
    error, by the one parser every adapter uses
    (:func:`smtp_backends.addresses.addr_spec`).

    The form is Flask-Mail's (:func:`sanitize_address`: an IDN domain in
    A-labels, which every server accepts), except for a non-ASCII local
    part, which no ASCII form can carry: that one stays as it is, for the
    client to send with SMTPUTF8 (or refuse when the server lacks it).

    Raises:
        ValueError: not exactly one address (the message names the problem).
    """
    if not isinstance(value, str) and (len(value) != 2 or not value[1]):
        raise ValueError(f"{what}: an address tuple must be (name, address), not {value!r}")
    spec = addr_spec(force_text(value if isinstance(value, str) else value[1]), what)
    local = spec.rpartition("@")[0] if "@" in spec else spec
    return sanitize_address(value) if local.isascii() else spec
