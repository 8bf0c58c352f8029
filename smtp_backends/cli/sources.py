"""Where ``send`` gets its messages: files, directories, mboxes, stdin, or flags.

A message read from a file goes out byte for byte as it is stored (so a
DKIM signature made over it still verifies), except that its Bcc and
Resent-Bcc fields are removed from the header section: blind recipients
must never see each other (RFC 5322 3.6.3). Its envelope comes from its
headers unless ``--from`` / ``--to`` say otherwise.
"""

from __future__ import annotations

import email.policy
import email.utils
import mailbox
import mimetypes
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import BinaryIO

from .. import BatchItem
from ..message import extract_recipients, extract_sender

__all__ = (
    "LoadedMessage",
    "SourceError",
    "build_message",
    "load_sources",
    "split_addresses",
    "strip_bcc",
)


class SourceError(ValueError):
    """A message source cannot be read or gives no usable message."""


@dataclass(frozen=True)
class LoadedMessage:
    """One message ready to send: where it came from, its envelope and its bytes."""

    #: For the report: a path, ``path[3]`` for an mbox's fourth message, ``<stdin>``...
    label: str
    sender: str
    recipients: tuple[str, ...]
    #: Exactly what goes after DATA (Bcc removed).
    data: bytes
    #: A message built from the flags, which the client flattens for the server it
    #: meets (7-bit transfer without 8BITMIME; its Bcc header stays out of the data).
    message: EmailMessage | None = None

    @property
    def item(self) -> BatchItem:
        """What :meth:`SMTP.send_messages` takes for this message."""
        if self.message is not None:
            return self.message
        return (self.sender, list(self.recipients), self.data)


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_BLIND = {b"bcc", b"resent-bcc"}


def strip_bcc(data: bytes) -> bytes:
    """``data`` without its Bcc and Resent-Bcc header fields (continuation lines too).

    Everything else, the body included, is left byte for byte as it was.
    """
    end = _HEADER_END.search(data)
    # The header section ends with its last field's line break; the blank line is not in it.
    header_end = len(data) if end is None else end.start() + (2 if data[end.start()] == 13 else 1)
    header = data[:header_end]
    lines = header.splitlines(keepends=True)
    kept: list[bytes] = []
    dropping = False
    changed = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            # A continuation line (RFC 5322 2.2.3) belongs to the field above it.
            if dropping:
                continue
            kept.append(line)
            continue
        match = _FIELD_NAME.match(line)
        dropping = bool(match and match[1].lower() in _BLIND)
        changed = changed or dropping
        if not dropping:
            kept.append(line)
    if not changed:
        return data
    return b"".join(kept) + data[header_end:]


def split_addresses(values: Sequence[str] | None, flag: str) -> list[str]:
    """The addr-specs in repeated ``--to``-style values (each may list several).

    Raises:
        SourceError: a value holds no address or something that is not one.
    """
    found: list[str] = []
    for value in values or ():
        pairs = email.utils.getaddresses([value])
        addresses = [address for _, address in pairs if address]
        if not addresses or any("@" not in address for address in addresses):
            raise SourceError(f"{flag}: {value!r} is not an email address")
        found.extend(addresses)
    return found


def _envelope(
    label: str, data: bytes, sender: str | None, recipients: Sequence[str]
) -> LoadedMessage:
    """The loaded message, its envelope from the flags or else from its headers."""
    if sender is None or not recipients:
        parsed = BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
        try:
            if sender is None:
                sender = extract_sender(parsed)
            if not recipients:
                recipients = extract_recipients(parsed)
        except (ValueError, TypeError) as error:
            raise SourceError(f"{label}: {error}") from None
        if sender is None:
            raise SourceError(f"{label}: no Sender or From header (give --from)")
        if not recipients:
            raise SourceError(f"{label}: no To, Cc or Bcc header (give --to)")
    return LoadedMessage(label, sender, tuple(recipients), strip_bcc(data))


def _is_mbox(head: bytes) -> bool:
    return head.startswith(b"From ")


def _from_mbox(path: Path, label: str) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.keys()):
            yield f"{label}[{number}]", box.get_bytes(key)
    finally:
        box.close()


def _from_file(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"{path}: cannot read it ({error.strerror or error})") from None
    if _is_mbox(data[:5]):
        yield from _from_mbox(path, str(path))
    else:
        yield str(path), data


def _from_directory(path: Path) -> Iterator[tuple[str, bytes]]:
    files = sorted(
        entry for entry in path.iterdir() if entry.suffix.lower() == ".eml" and entry.is_file()
    )
    if not files:
        raise SourceError(f"{path}: no .eml files in this directory")
    for file in files:
        yield from _from_file(file)


def _from_stdin(stdin: BinaryIO) -> Iterator[tuple[str, bytes]]:
    data = stdin.read()
    if not data.strip():
        raise SourceError("<stdin>: no message on standard input")
    if _is_mbox(data[:5]):
        # mailbox needs a file: split on the "From " separator lines ourselves.
        parts = re.split(rb"(?:^|\r?\n)From [^\n]*\n", data)
        messages = [part for part in parts if part.strip()]
        for number, part in enumerate(messages):
            yield f"<stdin>[{number}]", part
    else:
        yield "<stdin>", data


def load_sources(
    sources: Sequence[str],
    sender: str | None = None,
    recipients: Sequence[str] = (),
    stdin: BinaryIO | None = None,
) -> list[LoadedMessage]:
    """Every message of ``sources`` (paths, or ``-`` for standard input), in order.

    Raises:
        SourceError: a source is missing or unreadable, or a message has no
            envelope (no sender or recipients in its headers nor in the flags).
    """
    loaded: list[LoadedMessage] = []
    for source in sources:
        if source == "-":
            found = _from_stdin(stdin if stdin is not None else sys.stdin.buffer)
        else:
            path = Path(source)
            if path.is_dir():
                found = _from_directory(path)
            elif path.exists():
                found = _from_file(path)
            else:
                raise SourceError(f"{source}: no such file or directory")
        for label, data in found:
            loaded.append(_envelope(label, data, sender, recipients))
    return loaded


def _text_argument(value: str, flag: str, stdin: BinaryIO | None) -> str:
    """``value``, or the text of the file it names as ``@path`` (``@-``: stdin)."""
    if not value.startswith("@"):
        return value
    try:
        if value == "@-":
            raw = (stdin if stdin is not None else sys.stdin.buffer).read()
        else:
            raw = Path(value[1:]).read_bytes()
    except OSError as error:
        raise SourceError(f"{flag}: cannot read {value[1:]} ({error.strerror or error})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{flag}: {value[1:]} is not UTF-8 text") from None


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str | None = None,
    body: str | None = None,
    html: str | None = None,
    attachments: Sequence[str] = (),
    stdin: BinaryIO | None = None,
) -> LoadedMessage:
    """One message from the ``--from/--to/--cc/--bcc/--subject/--body/--html/--attach`` flags.

    Bcc recipients are in the envelope only, never in the message.

    Raises:
        SourceError: no recipient, an unreadable body or attachment file.
    """
    recipients = [*to, *cc, *bcc]
    if not recipients:
        raise SourceError("--to, --cc or --bcc: at least one recipient is needed")
    message = EmailMessage()
    message["From"] = sender
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    if bcc:
        message["Bcc"] = ", ".join(bcc)
    message["Subject"] = subject if subject is not None else ""
    message["Date"] = email.utils.formatdate(localtime=True)
    domain = sender.rpartition("@")[2] or None
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    text = _text_argument(body, "--body", stdin) if body is not None else ""
    message.set_content(text)
    if html is not None:
        message.add_alternative(_text_argument(html, "--html", stdin), subtype="html")
    for name in attachments:
        path = Path(name)
        try:
            content = path.read_bytes()
        except OSError as error:
            raise SourceError(f"--attach: cannot read {name} ({error.strerror or error})") from None
        kind, encoding = mimetypes.guess_type(path.name)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        filename = os.path.basename(name)
        if kind == "message/rfc822":
            # An attached message is carried as a message, never base64 (RFC 2046 5.2.1).
            attached = BytesParser(policy=email.policy.default).parsebytes(content)
            cte = "7bit" if content.isascii() else "8bit"
            message.add_attachment(attached, filename=filename, cte=cte)
            continue
        if maintype == "message":
            maintype, subtype = "application", "octet-stream"
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    data = strip_bcc(message.as_bytes(policy=email.policy.SMTP))
    return LoadedMessage("<built from flags>", sender, tuple(recipients), data, message)
