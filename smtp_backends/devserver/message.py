"""One received message, parsed once on arrival.

:class:`StoredMessage` is one received message with the parts a developer looks at
(subject, addresses, text and HTML bodies, attachments, plus-address tags) decoded up
front, so the web inbox never parses a message twice. The mailbox that keeps them is
:mod:`smtp_backends.devserver.store`.

A development server must show whatever a buggy application sends, so nothing here
raises on a malformed message: a header or part that cannot be decoded is shown as
raw text instead.
"""

from __future__ import annotations

import email
import email.header
import email.headerregistry
import email.message
import email.policy
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ("Attachment", "StoredMessage", "plus_tag")

# Media types shown as message bodies rather than listed as attachments.
_BODY_TYPES = ("text/plain", "text/html")


@dataclass(frozen=True)
class Attachment:
    """One attachment of a received message.

    Attributes:
        filename: the file name the sender gave (decoded), or a generated
            ``attachment-N.ext`` when there was none.
        content_type: the part's media type, lower case (``application/pdf``).
        payload: the decoded content.
    """

    filename: str
    content_type: str
    payload: bytes = field(repr=False)

    @property
    def size(self) -> int:
        """The size of :attr:`payload` in bytes."""
        return len(self.payload)


def plus_tag(address: str) -> str:
    """The tag of a plus address (``user+tag@domain`` gives ``tag``), or '' if none.

    Subaddressing (RFC 5233): the tag is what follows the first ``+`` of the local
    part. A quoted local part is read without its quotes.
    """
    local, at, _ = address.strip().strip("<>").rpartition("@")
    if not at:
        return ""
    _, plus, tag = local.strip('"').partition("+")
    return tag if plus else ""


def _parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _header(message: email.message.Message, name: str) -> str:
    """One header, decoded ('' if absent); the raw value if it cannot be decoded."""
    try:
        value = message.get(name)
    except Exception:
        # policy.default parses lazily and a hostile header can make it raise; show the
        # undecoded value rather than lose the message.
        return _raw_headers(message).get(name.lower(), "")
    if value is None:
        return ""
    if isinstance(value, email.headerregistry.BaseHeader):
        return str(value)
    # A compat32 message (see StoredMessage): decode RFC 2047 encoded words ourselves.
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except Exception:
        return str(value)


def _raw_headers(message: email.message.Message) -> dict[str, str]:
    """Lower-case name -> undecoded value, first occurrence wins."""
    found: dict[str, str] = {}
    for name, value in message.raw_items():
        found.setdefault(name.lower(), str(value))
    return found


def _all_headers(message: email.message.Message) -> tuple[tuple[str, str], ...]:
    """Every header in order, decoded where possible."""
    headers: list[tuple[str, str]] = []
    for name, raw_value in message.raw_items():
        try:
            value = str(message.policy.header_fetch_parse(name, raw_value))
        except Exception:
            # Same reason as in _header: keep the undecoded text.
            value = str(raw_value)
        headers.append((name, value))
    return tuple(headers)


def _text_content(part: email.message.Message) -> str:
    """A text part decoded to str, with LF line endings; undecodable bytes become U+FFFD."""
    try:
        content = str(part.get_content())  # type: ignore[attr-defined]
    except Exception:
        # An unknown or lying charset, or a compat32 part without get_content().
        payload = _payload_bytes(part)
        try:
            content = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
        except LookupError:
            content = payload.decode("utf-8", errors="replace")
    # SMTP delivers CRLF; LF is what Python code comparing bodies expects.
    return content.replace("\r\n", "\n")


def _payload_bytes(part: email.message.Message) -> bytes:
    """A leaf part's decoded bytes (a message/rfc822 part: the embedded message)."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    # A message/* part: its payload is the embedded message.
    return b"".join(
        bytes(item) for item in part.get_payload() if isinstance(item, email.message.Message)
    )


def _leaves(part: email.message.Message) -> Iterable[email.message.Message]:
    """The non-multipart parts in order; a message/rfc822 part counts as one leaf."""
    if part.get_content_maintype() == "multipart":
        payload = part.get_payload()
        if isinstance(payload, list):
            for child in payload:
                if isinstance(child, email.message.Message):
                    yield from _leaves(child)
        return
    yield part


def _bodies(
    message: email.message.Message,
) -> tuple[str | None, str | None, tuple[Attachment, ...]]:
    """The first text/plain and text/html body parts, and everything else as attachments."""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part in _leaves(message):
        content_type = part.get_content_type()
        name = part.get_filename()
        is_attachment = name is not None or part.get_content_disposition() == "attachment"
        if not is_attachment and content_type == "text/plain" and text is None:
            text = _text_content(part)
        elif not is_attachment and content_type == "text/html" and html is None:
            html = _text_content(part)
        else:
            if not name:
                extension = mimetypes.guess_extension(content_type) or ".bin"
                name = f"attachment-{len(attachments) + 1}{extension}"
            attachments.append(Attachment(name, content_type, _payload_bytes(part)))
    return text, html, tuple(attachments)


@dataclass(frozen=True)
class StoredMessage:
    """One message the development server received, parsed once on arrival.

    Construct with the envelope and the raw bytes; every other attribute is derived
    from ``raw`` (parsed with :data:`email.policy.default`).

    Attributes:
        id: 1, 2, 3... in arrival order (never reused, also not after a clear).
        envelope_from: the SMTP envelope sender (MAIL FROM; '' for the null path).
        envelope_to: the SMTP envelope recipients (RCPT TO), Bcc included.
        received_at: when the message arrived (UTC).
        raw: the message exactly as received.
        subject: the decoded Subject header ('' if absent); likewise ``from_``
            (From), ``to`` (To), ``cc`` (Cc), ``message_id`` (Message-ID) and
            ``date`` (Date).
        text: the first text/plain body part, decoded, or None.
        html: the first text/html body part, decoded, or None.
        attachments: every other part, in order.
        headers: every header as ``(name, decoded value)``, in order.
        tags: the plus-address tags of the envelope recipients, in order, without
            repeats: ``ada+signup-42@example.org`` gives ``signup-42`` (see
            :func:`plus_tag`).
    """

    id: int
    envelope_from: str
    envelope_to: tuple[str, ...]
    received_at: datetime
    raw: bytes = field(repr=False)
    subject: str = field(init=False)
    from_: str = field(init=False, repr=False)
    to: str = field(init=False, repr=False)
    cc: str = field(init=False, repr=False)
    date: str = field(init=False, repr=False)
    message_id: str = field(init=False, repr=False)
    text: str | None = field(init=False, repr=False)
    html: str | None = field(init=False, repr=False)
    attachments: tuple[Attachment, ...] = field(init=False, repr=False)
    headers: tuple[tuple[str, str], ...] = field(init=False, repr=False)
    tags: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            derived = _derive(_parse(self.raw))
        except Exception:
            # policy.default raises on some malformed MIME parameters (while parsing, or
            # later when a part is inspected); the compat32 parser accepts anything.
            derived = _derive(email.message_from_bytes(self.raw, policy=email.policy.compat32))
        for name, value in derived.items():
            # The dataclass is frozen; these are computed exactly once, here.
            object.__setattr__(self, name, value)
        tags = (plus_tag(address) for address in self.envelope_to)
        object.__setattr__(self, "tags", tuple(dict.fromkeys(tag for tag in tags if tag)))

    @property
    def size(self) -> int:
        """The message's size as received, in bytes (what the mailbox's byte cap counts)."""
        return len(self.raw)

    def has_tag(self, tag: str) -> bool:
        """Whether one of :attr:`tags` equals ``tag``, ignoring case."""
        wanted = tag.casefold()
        return any(own.casefold() == wanted for own in self.tags)

    def parsed(self) -> email.message.EmailMessage:
        """:attr:`raw` parsed afresh as an :class:`~email.message.EmailMessage`.

        Raises:
            Exception: whatever :mod:`email` raises on a message it cannot parse.
        """
        return _parse(self.raw)


def _derive(message: email.message.Message) -> dict[str, object]:
    """What :class:`StoredMessage` shows of a parsed message."""
    text, html, attachments = _bodies(message)
    return {
        "subject": _header(message, "Subject"),
        "from_": _header(message, "From"),
        "to": _header(message, "To"),
        "cc": _header(message, "Cc"),
        "date": _header(message, "Date"),
        "message_id": _header(message, "Message-ID"),
        "text": text,
        "html": html,
        "attachments": attachments,
        "headers": _all_headers(message),
    }
