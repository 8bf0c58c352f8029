"""From an email message object to what goes on the wire.

:func:`extract_sender` and :func:`extract_recipients` derive the envelope
from the headers (Sender/From, To/Cc/Bcc, or the Resent-* block when the
message is resent, RFC 5322 3.6.6); :func:`flatten` serialises the message
without its Bcc headers, choosing the policy (SMTPUTF8, 7bit or 8bit
transfer) from what the server supports.
"""

from __future__ import annotations

import email.generator
import email.header
import email.headerregistry
import email.message
import email.policy
import email.utils
import io
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .addresses import ascii_fallback
from .errors import SMTPNotSupported
from .protocol.commands import envelope_address
from .protocol.data import declared_size, encode_content
from .protocol.extensions import Extensions
from .protocol.transaction import Envelope

__all__ = (
    "AnyMessage",
    "ascii_envelope",
    "batch_preparer",
    "envelope_for_data",
    "envelope_for_message",
    "extract_recipients",
    "extract_sender",
    "flatten",
    "message_bytes",
    "needs_smtputf8",
    "serialize",
)

AnyMessage = email.message.Message  # EmailMessage and the email.mime classes derive from it

_RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
_RESENT_RECIPIENT_HEADERS = ("Resent-To", "Resent-Cc", "Resent-Bcc")


def _resent(message: AnyMessage) -> bool:
    dates = message.get_all("Resent-Date")
    if dates is not None and len(dates) > 1:
        raise ValueError("Message has more than one 'Resent-' header block")
    return bool(dates)


def _addresses(value: Any) -> list[str]:
    """The addr-specs in one address header value, validated."""
    found: list[str] = []
    if isinstance(value, email.headerregistry.AddressHeader):
        for address in value.addresses:
            found.append(envelope_address(address.addr_spec))
        return found
    if isinstance(value, email.header.Header):
        parts = email.header.decode_header(value)
        value = "".join(
            p.decode(charset or "ascii") if isinstance(p, bytes) else p for p, charset in parts
        )
    text = str(value)
    if not text.strip():
        return found
    for name, addr in email.utils.getaddresses([text]):
        if not addr:
            if name:
                raise ValueError(f"Cannot read an address in header value {text!r}")
            continue
        found.append(envelope_address(addr))
    return found


def extract_sender(message: AnyMessage) -> str | None:
    """The envelope sender from Sender (preferred, RFC 5322 3.6.2) or From.

    Uses Resent-Sender / Resent-From for a resent message.

    Raises:
        ValueError: more than one Resent- block, or an unsafe address.
    """
    prefix = "Resent-" if _resent(message) else ""
    header = message[prefix + "Sender"]
    if header is None:
        header = message[prefix + "From"]
    if header is None:
        return None
    addresses = _addresses(header)
    return addresses[0] if addresses else None


def extract_recipients(message: AnyMessage) -> list[str]:
    """The envelope recipients from To, Cc and Bcc (or their Resent- forms).

    Raises:
        ValueError: more than one Resent- block, or an unsafe address.
    """
    names = _RESENT_RECIPIENT_HEADERS if _resent(message) else _RECIPIENT_HEADERS
    recipients: list[str] = []
    for name in names:
        for value in message.get_all(name, []):
            recipients.extend(_addresses(value))
    return recipients


_NO_SMTPUTF8 = "An address needs SMTPUTF8, and SMTPUTF8 is not supported by the server"


def needs_smtputf8(addresses: Iterable[str]) -> bool:
    """Whether any envelope address is non-ASCII (RFC 6531)."""
    return not all(address.isascii() for address in addresses)


def ascii_envelope(
    sender: str, recipients: list[str], extensions: Extensions
) -> tuple[str, list[str]]:
    """The envelope addresses for a server without SMTPUTF8 (unchanged when it has it).

    A non-ASCII domain goes as IDNA A-labels, which every server accepts.

    Raises:
        SMTPNotSupported: a non-ASCII local part (only SMTPUTF8 can carry it),
            naming the address.
    """
    if extensions.supports("smtputf8") or not needs_smtputf8([sender, *recipients]):
        return sender, recipients
    converted: list[str] = []
    for address in [sender, *recipients]:
        ascii = ascii_fallback(address)
        if ascii is None:
            raise SMTPNotSupported(
                f"{address!r} has a non-ASCII local part, which needs SMTPUTF8 "
                "(RFC 6531), and SMTPUTF8 is not supported by the server"
            )
        converted.append(ascii)
    return converted[0], converted[1:]


def flatten(message: AnyMessage, *, utf8: bool = False, eight_bit: bool = True) -> bytes:
    """Serialise ``message`` for sending, without Bcc and Resent-Bcc.

    The caller's object is not changed.

    Args:
        utf8: headers may carry raw UTF-8 (the server supports SMTPUTF8 and
            the envelope needs it).
        eight_bit: the server takes 8-bit content (8BITMIME); otherwise
            8-bit parts are re-encoded for 7-bit transport.
    """
    if "Bcc" in message or "Resent-Bcc" in message:
        # A shallow copy shares the payload but gets its own header list when
        # the Bcc headers are deleted below.
        copied = message.__class__.__new__(message.__class__)
        copied.__dict__.update(message.__dict__)
        del copied["Bcc"]
        del copied["Resent-Bcc"]
        message = copied
    policy: email.policy.Policy
    if isinstance(message, email.message.EmailMessage):
        policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    else:
        policy = email.policy.compat32.clone(linesep="\r\n")
    if not eight_bit:
        policy = policy.clone(cte_type="7bit")
    buffer = io.BytesIO()
    _Generator(buffer, policy=policy).flatten(message)
    return buffer.getvalue()


def serialize(
    message: AnyMessage,
    *,
    policy: email.policy.Policy | None = None,
    linesep: str | None = None,
) -> bytes:
    """``message.as_bytes(policy=policy)``, byte for byte, in less time.

    The bytes of :meth:`email.message.Message.as_bytes` (``From `` lines are
    not mangled; every header stays, Bcc included), for adapters that must
    send exactly what their framework renders, such as Django's backends.

    Args:
        policy: the policy to render with (default: the message's own).
        linesep: overrides the policy's line separator (``"\r\n"`` for SMTP).
    """
    chosen = message.policy if policy is None else policy
    if linesep is not None and chosen.linesep != linesep:
        chosen = chosen.clone(linesep=linesep)
    buffer = io.BytesIO()
    _Generator(buffer, mangle_from_=False, policy=chosen).flatten(message)
    return buffer.getvalue()


class _Generator(email.generator.BytesGenerator):
    """The standard generator, with a fast path for short ASCII headers, and checked.

    Folding a header through the standard policies is most of the cost of
    flattening a typical message: the modern policy rebuilds and re-renders
    the header's parse tree, compat32 runs it through ``email.header.Header``.
    For a value that fits on one line and that folding provably leaves as it
    is, both produce exactly ``name + ": " + value + linesep``; this writes
    that directly. Anything else (long, non-ASCII, encoded-word-like, empty
    or padded values, header objects of other kinds) goes through the
    standard fold, so the bytes are always the ones the standard library
    would produce (checked against it in tests/test_message.py).

    Every header is checked before it is written, on every Python: its name
    (RFC 5322 2.2) and, for a folded one, that no line break in it starts a
    line of its own (the checks of CPython's ``verify_generated_headers``, the
    CVE-2024-6923 fix, which live in the standard header writer this one
    replaces and which the standard bytes generator never runs).
    """

    def _write_headers(self, msg: Any) -> None:
        policy = self.policy
        if isinstance(policy, email.policy.EmailPolicy):
            self._write_modern_headers(msg, policy)
        elif type(policy) is email.policy.Compat32:
            self._write_compat32_headers(msg, policy)
        else:
            self._write_other_headers(msg, policy)

    def _write_modern_headers(self, msg: Any, policy: email.policy.EmailPolicy) -> None:
        maxlen = policy.max_line_length or sys.maxsize
        linesep = policy.linesep
        write = self._fp.write  # type: ignore[attr-defined]
        checked = _CHECKED_NAMES
        for name, value in msg.raw_items():
            if name not in checked or type(name) is not str:
                _check_name(name)
            text = _one_line_value(value)
            if text is not None:
                written = value.name
                if written is not name and (written not in checked or type(written) is not str):
                    _check_name(written)  # a header object made under another name
                if len(written) + 2 + len(text) <= maxlen:
                    write(f"{written}: {text}{linesep}".encode("ascii"))
                    continue
            # The modern fold writes the header object's own name.
            folded = policy.fold_binary(name, value)
            write(_checked(folded, linesep, name, getattr(value, "name", name)))
        self.write(self._NL)  # type: ignore[attr-defined]

    def _write_compat32_headers(self, msg: Any, policy: email.policy.Compat32) -> None:
        # compat32 folds a str through Header(value, header_name=name): a value
        # of printable ASCII words separated by single spaces, with no leading or
        # trailing blank and no encoded-word, within the line length, comes out
        # unchanged (Header only splits above the limit, drops a trailing blank
        # and rewraps at line breaks).
        maxlen = policy.max_line_length or 1_000_000
        linesep = policy.linesep
        write = self._fp.write  # type: ignore[attr-defined]
        fold = policy.fold_binary
        checked = _CHECKED_NAMES
        for name, value in msg.raw_items():
            if name not in checked or type(name) is not str:
                _check_name(name)
            if (
                type(value) is str
                and len(name) + 2 + len(value) <= maxlen
                and _COMPAT32_ONE_LINE(value)
                and "=?" not in value
            ):
                write(f"{name}: {value}{linesep}".encode("ascii"))
            else:
                write(_checked(fold(name, value), linesep, name, name))
        self.write(self._NL)  # type: ignore[attr-defined]

    def _write_other_headers(self, msg: Any, policy: Any) -> None:
        # The standard bytes generator's loop, with the checks.
        write = self._fp.write  # type: ignore[attr-defined]
        for name, value in msg.raw_items():
            _check_name(name)
            folded = policy.fold_binary(name, value)
            write(_checked(folded, policy.linesep, name, getattr(value, "name", name)))
        self.write(self._NL)  # type: ignore[attr-defined]

    def _write_lines(self, lines: str) -> None:
        # The standard generator splits the text at every line break and writes
        # each line and a linesep separately; one substitution is the same text.
        # Only for short texts: a large attachment written line by line never
        # needs a second whole copy of itself in memory.
        if len(lines) > _SUBSTITUTE_UP_TO:
            super()._write_lines(lines)  # type: ignore[misc]
        elif lines:
            self.write(_LINE_BREAK.sub(self._NL, lines))  # type: ignore[attr-defined]


# RFC 5322 2.2: field-name = 1*ftext; ftext = %d33-57 / %d59-126 (printable
# ASCII except ":"; no space, no control character, no line break).
_FIELD_NAME = re.compile(r"[!-9;-~]+").fullmatch
_FIELD_NAME_BYTES = re.compile(rb"[!-9;-~]+").fullmatch
# Names already checked (a message's headers repeat from one message to the
# next); bounded so that a stream of made-up names cannot grow it forever.
_CHECKED_NAMES: set[str] = set()
_CHECKED_NAMES_MAX = 4096
# A line break that does not continue the header (RFC 5322 2.2.3: a folded
# line starts with a space or a tab): CPython's NEWLINE_WITHOUT_FWSP, and also
# a line break at the very end (an empty line would end the header section).
_UNFOLDED_BREAK = re.compile(rb"\r(?![\n \t])|\n(?![ \t])").search


def _check_name(name: Any) -> None:
    """Raise unless ``name`` is a valid header field name (RFC 5322 2.2).

    Raises:
        TypeError: not a str.
        ValueError: empty, or a character other than printable ASCII but ':'.
    """
    if type(name) is str and name in _CHECKED_NAMES:
        return
    if not isinstance(name, str):
        raise TypeError(f"A header name must be a str, not {type(name).__name__}")
    # A str subclass may format (f-string, %s) as other text than it holds: check both.
    if not _FIELD_NAME(name) or (type(name) is not str and not _FIELD_NAME(f"{name}")):
        raise ValueError(
            f"Invalid header name {name[:100]!r}: RFC 5322 allows only printable ASCII "
            "other than ':' and space (a header injection attempt?)"
        )
    if type(name) is str and len(_CHECKED_NAMES) < _CHECKED_NAMES_MAX:
        _CHECKED_NAMES.add(name)


def _checked(folded: bytes, linesep: str, name: str, own_name: Any) -> bytes:
    """``folded`` (one header as its policy folded it), after checking it.

    What goes on the wire must be the header the message holds, and only it:
    its name (``name``, or the header object's ``own_name``, in any case) and
    a colon, lines that all continue it, and the line separator at the end.
    The name is read from the bytes themselves, so a header class whose
    ``fold()`` writes some other header is refused too.

    Raises:
        ValueError: any of that does not hold.
    """
    end = linesep.encode("ascii")
    written, colon, _ = folded.partition(b":")
    if (
        not colon
        or not folded.endswith(end)
        or not _FIELD_NAME_BYTES(written)
        or written.decode("ascii").lower() not in (name.lower(), str(own_name).lower())
        or _UNFOLDED_BREAK(folded, 0, len(folded) - len(end))
    ):
        raise ValueError(
            f"A header folds to {folded[:200]!r}: not one header ending with {linesep!r} "
            "whose every line break is followed by a space or tab (a header injection "
            "attempt?)"
        )
    return folded


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the standard generator splits lines at
_SUBSTITUTE_UP_TO = 64 * 1024
# Non-empty printable ASCII, no leading/trailing or doubled blank, no tab.
_COMPAT32_ONE_LINE = re.compile(r"[!-~]+(?: [!-~]+)*").fullmatch


_BASE_FOLD = email.headerregistry.BaseHeader.fold


def _one_line_value(value: Any) -> str | None:
    """The value as the standard fold renders it, if the fast path may write it."""
    if getattr(type(value), "fold", None) is not _BASE_FOLD:
        return None  # a plain string (a parsed message's) or a class with its own folding
    tree = getattr(value, "_parse_tree", None)
    if not tree:
        return None
    text = str(tree)
    if not text or not text.isascii() or "=?" in text or "\r" in text or "\n" in text:
        return None
    return text


def message_bytes(message: str | bytes) -> bytes:
    """Raw message data as bytes (a str is encoded as UTF-8).

    Raises:
        TypeError: neither str nor bytes.
    """
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"A message must be str or bytes, not {type(message).__name__}")


def envelope_for_data(
    sender: str,
    recipients: str | Sequence[str],
    message: str | bytes,
    mail_options: Iterable[str] | None,
    rcpt_options: Iterable[str] | None,
    extensions: Extensions,
    sign: Callable[[bytes], bytes] | None = None,
) -> Envelope:
    """The envelope for raw message data, as :meth:`SMTP.sendmail` sends it.

    Adds SIZE when the server declares it (RFC 1870), SMTPUTF8 when an
    address needs it (RFC 6531) and BODY=8BITMIME when the data has 8-bit
    bytes and the server offers it (RFC 6152), unless the caller gave them.

    Raises:
        ValueError / TypeError: a bad address, option or message.
        SMTPNotSupported: SMTPUTF8 needed (or asked for) and not offered.
    """
    if isinstance(recipients, str):
        recipients = [recipients]
    recipients = list(recipients)
    mail = list(mail_options or ())
    raw = message_bytes(message)
    if sign is not None:
        # The final bytes, before dot-stuffing (which the server undoes): DKIM.
        raw = sign(raw)
    content = encode_content(raw)
    keywords = {option.split("=", 1)[0].upper() for option in mail if isinstance(option, str)}
    if "SMTPUTF8" not in keywords:
        sender, recipients = ascii_envelope(sender, recipients, extensions)
    offered = extensions.keywords
    utf8 = "SMTPUTF8" in keywords
    if not utf8 and needs_smtputf8([sender, *recipients]):
        mail.append("SMTPUTF8")
        utf8 = True
    if utf8 and "smtputf8" not in offered:
        raise SMTPNotSupported(
            "An address needs SMTPUTF8, and SMTPUTF8 is not supported by the server"
        )
    if "BODY" not in keywords and "8bitmime" in offered and not content.isascii():
        mail.append("BODY=8BITMIME")
    if "SIZE" not in keywords and "size" in offered:
        mail.insert(0, f"SIZE={declared_size(content)}")
    return Envelope(sender, recipients, content, mail, list(rcpt_options or ()), utf8=utf8)


def envelope_for_message(
    message: AnyMessage,
    sender: str | None,
    recipients: str | Sequence[str] | None,
    mail_options: Iterable[str] | None,
    rcpt_options: Iterable[str] | None,
    extensions: Extensions,
    sign: Callable[[bytes], bytes] | None = None,
) -> Envelope:
    """The envelope for a message object, as :meth:`SMTP.send_message` sends it.

    The sender and recipients come from the headers unless given; the
    message is flattened without Bcc, with raw UTF-8 headers only when
    SMTPUTF8 is used and 8-bit parts only when the server offers 8BITMIME.

    Raises:
        ValueError: no sender or no recipients, or a bad address.
        TypeError: not an email message.
        SMTPNotSupported: an address needs SMTPUTF8 and the server lacks it.
    """
    if not isinstance(message, email.message.Message):
        raise TypeError(f"Expected an email message, not {type(message).__name__}")
    if sender is None:
        sender = extract_sender(message)
        if sender is None:
            raise ValueError("No From header provided in message")
    if isinstance(recipients, str):
        recipients = [recipients]
    elif recipients is None:
        recipients = extract_recipients(message)
    if not recipients:
        raise ValueError("No recipient headers provided in message")
    sender, recipients = ascii_envelope(sender, list(recipients), extensions)
    utf8 = needs_smtputf8([sender, *recipients])
    if utf8 and not extensions.supports("smtputf8"):
        raise SMTPNotSupported(
            "An address needs SMTPUTF8, and SMTPUTF8 is not supported by the server"
        )
    data = flatten(message, utf8=utf8, eight_bit=extensions.supports("8bitmime"))
    options = list(mail_options or ())
    if utf8 and extensions.supports("8bitmime"):
        # As aiosmtplib: an SMTPUTF8 message is declared 8-bit too, after SMTPUTF8
        # (its header fields may be raw UTF-8, RFC 6532).
        given = {str(o).split("=", 1)[0].upper() for o in options}
        options += [k for k in ("SMTPUTF8", "BODY=8BITMIME") if k.split("=")[0] not in given]
    return envelope_for_data(sender, recipients, data, options, rcpt_options, extensions, sign)


# How many distinct senders' MAIL FROM lines one batch keeps (most batches have one).
_SENDERS_PER_BATCH = 32


class _FullPath(Exception):
    """Raised inside :func:`batch_preparer`'s fast path: this item needs the full path."""


def batch_preparer(
    extensions: Extensions,
    sign: Callable[[bytes], bytes] | None,
    general: Callable[[Any], Envelope],
) -> Callable[[Any], Envelope]:
    """The preparing function of one batch: each item to its envelope.

    The server's extensions are read here, once per batch. A plain
    ``(sender, recipients, data)`` tuple whose addresses are all ASCII and
    whose data is ``str`` or ``bytes`` takes a fast path: one pass over the
    addresses validates them (:func:`envelope_address`, so CR, LF and NUL are
    refused as ever) and builds their commands, with the same bytes as
    :func:`envelope_for_data` (SIZE, BODY=8BITMIME). Every other item - a
    callable, a message object, a non-ASCII address, anything to refuse - goes
    to ``general(item)``, the full path, which raises what it always raised.
    """
    offered = extensions.keywords
    declare_size = "size" in offered
    eight_bit = "8bitmime" in offered
    # Senders repeat within a batch: each one's "MAIL FROM:<address>" is built
    # once (the parameters after it depend on each message's content).
    mail_heads: dict[str, bytes] = {}

    def prepare(item: Any) -> Envelope:
        if item.__class__ is not tuple or len(item) != 3:
            return general(item)
        sender, recipients, message = item
        try:
            if message.__class__ is bytes:
                raw = message
            elif message.__class__ is str:
                raw = message.encode("utf-8")
            else:
                raise _FullPath
            head = mail_heads.get(sender)
            if head is None:
                address = envelope_address(sender, allow_empty=True)
                if not sender.isascii():  # display name included: SMTPUTF8 rules apply
                    raise _FullPath
                head = b"MAIL FROM:<" + address.encode("ascii") + b">"
                if len(mail_heads) < _SENDERS_PER_BATCH:
                    mail_heads[sender] = head
            kind = recipients.__class__
            if kind is list or kind is tuple:
                recipients = [*recipients]
            elif isinstance(recipients, str):
                recipients = [recipients]
            else:  # another iterable: the full path reads it (once)
                raise _FullPath
            if not recipients:
                raise _FullPath
            lines = [head]  # MAIL's line, completed below once its parameters are known
            for recipient in recipients:
                address = envelope_address(recipient)
                if not recipient.isascii():
                    raise _FullPath
                lines.append(b"RCPT TO:<%s>\r\n" % address.encode("ascii"))
        except (TypeError, ValueError, _FullPath):
            # Refused, odd or non-ASCII input: the full path, which raises its usual
            # error (nothing has been called on the item's behalf yet).
            return general(item)
        if sign is not None:
            # The final bytes, before dot-stuffing (which the server undoes): DKIM.
            raw = sign(raw)
        content = encode_content(raw)
        body = b" BODY=8BITMIME\r\n" if eight_bit and not content.isascii() else b"\r\n"
        if declare_size:
            # Untouched content has no stuffed dot (RFC 1870 4): its length is its size.
            size = len(content) if content is raw else declared_size(content)
            lines[0] = b"%s SIZE=%d%s" % (head, size, body)
        else:
            lines[0] = head + body
        lines.append(b"DATA\r\n")
        return Envelope.encoded(sender, recipients, content, lines)

    return prepare
