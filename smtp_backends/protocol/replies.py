"""Parsing server replies (RFC 5321 section 4.2), with size caps.

A reply is one or more lines ``CODE-text`` ending with a line ``CODE text``
(or a bare ``CODE``). The parser is fed raw bytes as they arrive and yields
complete replies; anything malformed or oversized raises
:class:`~smtp_backends.errors.SMTPProtocolError`.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from ..errors import SMTPProtocolError

__all__ = (
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_MAX_REPLY_SIZE",
    "ReplyParser",
    "SMTPResponse",
    "SMTPStatus",
)

#: Longest reply line accepted, terminator included. RFC 5321 4.5.3.1.5 sets
#: 512 octets; real servers exceed it, so allow generously but not unboundedly.
DEFAULT_MAX_LINE_LENGTH = 8192
#: Largest multiline reply accepted, all lines together (an EHLO with many
#: extensions is a few hundred bytes; a flood is not a reply).
DEFAULT_MAX_REPLY_SIZE = 65536

_DIGITS = frozenset(b"0123456789")

# The repeated one-line replies a parser keeps (see _KnownReplies): a server's
# replies to MAIL, RCPT and DATA are the same text for every message.
_KNOWN_REPLIES = 32
_KNOWN_LINE = 128


class _NotOneLineReply(Exception):
    """A line of a run is not a complete one-line reply: the general path takes the run."""


# RFC 3463 2: class "." subject "." detail, class 2, 4 or 5.
_ENHANCED_STATUS = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")


class SMTPStatus(enum.IntEnum):
    """Reply codes by name (RFC 5321 4.2.3, and RFC 4954 / 3207 for AUTH and STARTTLS).

    The same names and values as aiosmtplib's ``SMTPStatus``, so code comparing
    ``response.code`` with them runs unchanged; ``invalid_response`` (-1) is
    the code of a reply that could not be read.
    """

    invalid_response = -1
    system_status_ok = 211
    help_message = 214
    ready = 220
    closing = 221
    auth_successful = 235
    completed = 250
    will_forward = 251
    cannot_vrfy = 252
    auth_continue = 334
    start_input = 354
    domain_unavailable = 421
    mailbox_unavailable = 450
    error_processing = 451
    insufficient_storage = 452
    tls_not_available = 454
    unrecognized_command = 500
    unrecognized_parameters = 501
    command_not_implemented = 502
    bad_command_sequence = 503
    parameter_not_implemented = 504
    domain_does_not_accept_mail = 521
    access_denied = 530
    auth_failed = 535
    mailbox_does_not_exist = 550
    user_not_local = 551
    storage_exceeded = 552
    mailbox_name_invalid = 553
    transaction_failed = 554
    syntax_error = 555


class SMTPResponse(NamedTuple):
    """One server reply: its code and its text (lines joined with ``\\n``)."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 enhanced status code leading the text (``"2.1.5"``), if any."""
        head = self.message.partition("\n")[0].split(" ", 1)[0]
        return head if _ENHANCED_STATUS.fullmatch(head) else None


class _KnownReplies(dict[bytes, "SMTPResponse"]):
    """One connection's one-line replies, by their line, the ones its server repeats kept.

    ``known[line]`` is the reply of a complete one-line reply (its line
    without CRLF): taken from here when the line was seen twice already,
    built otherwise. Most servers answer MAIL, RCPT and DATA with the same
    text every time ("250 2.1.0 Ok"), so a pipelined group's replies are
    mostly looked up, not built. A line is kept on its second sighting only
    (a reply carrying a queue id comes once), and only a few short ones are
    kept, so a server cannot make the parser hold more than a few kilobytes.
    Replies are immutable: sharing one is safe.

    A line is checked before its reply is built (so a kept line was checked
    once): ``CODE text`` with a code from 200 to 599, no CR or LF in it, and
    at most ``limit`` bytes with its CRLF. Any other line raises
    :class:`_NotOneLineReply`.
    """

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._seen: set[bytes] = set()

    def __missing__(self, line: bytes) -> SMTPResponse:
        if not (
            3 < len(line) <= self._limit - 2
            and line[3] == 32  # a space: a last (or only) line
            and line[0] in b"2345"
            and line[1] in _DIGITS
            and line[2] in _DIGITS
            and b"\r" not in line
            and b"\n" not in line
        ):
            raise _NotOneLineReply
        reply: SMTPResponse = tuple.__new__(
            SMTPResponse, (int(line[:3]), line[4:].decode("utf-8", "replace"))
        )
        if len(self) < _KNOWN_REPLIES and len(line) <= _KNOWN_LINE:
            seen = self._seen
            if line in seen:
                self[line] = reply
            elif len(seen) < _KNOWN_REPLIES:
                seen.add(line)
        return reply


class ReplyParser:
    """Incremental reply parser.

    Args:
        max_line_length: cap on one reply line, in bytes, terminator included.
        max_reply_size: cap on one whole (multiline) reply, in bytes.
    """

    __slots__ = (
        "_buffer",
        "_code",
        "_known",
        "_lines",
        "_lookup",
        "_size",
        "error",
        "max_line_length",
        "max_reply_size",
    )

    def __init__(
        self,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_reply_size = max_reply_size
        # One-line replies no longer than both caps take the fast path.
        self._known = _KnownReplies(min(max_line_length, max_reply_size))
        # known[line], bound once: a run of lines is looked up with map().
        self._lookup = self._known.__getitem__
        self._buffer = b""
        self._code = 0  # code of the multiline reply in progress; 0: none
        self._lines: list[str] = []
        self._size = 0
        #: The protocol error that stopped parsing, if any.
        self.error: SMTPProtocolError | None = None

    @property
    def has_partial_data(self) -> bool:
        """Whether bytes of an incomplete reply are buffered."""
        return bool(self._buffer) or self._code != 0

    def feed(self, data: bytes) -> list[SMTPResponse]:
        """Add received bytes; return the replies they complete, in order.

        Raises:
            SMTPProtocolError: a malformed line, a line or reply over its cap,
                or a multiline reply whose lines disagree on the code.
        """
        replies, error = self.parse(data)
        if error is not None:
            raise error
        return replies

    def parse(self, data: bytes) -> tuple[list[SMTPResponse], SMTPProtocolError | None]:
        """Like :meth:`feed`, but return the error instead of raising it.

        The replies completed before a malformed line are returned with the
        error, so that a good reply (say, the 250 accepting a message) is not
        lost because garbage followed it in the same packet. After an error
        the parser is unusable and every later call returns the same error.
        """
        if self.error is not None:
            return [], self.error
        buffer = self._buffer + data if self._buffer else data
        if not self._code:
            # The common case: whole one-line replies (a pipelined group's, of
            # any size), perhaps followed by the start of the next reply.
            end = buffer.rfind(b"\n") + 1
            if (
                end > 1
                and buffer[end - 2] == 13  # CR: the last line ends with CRLF
                and len(buffer) - end < self.max_line_length
            ):
                # Each line is checked (caps included) when it is not a known
                # one, and a known one was checked when first seen: a run of
                # replies the server repeats costs a lookup per line.
                try:
                    # known[line] for each line, without a comprehension's frame.
                    run = list(map(self._lookup, buffer[: end - 2].split(b"\r\n")))
                except _NotOneLineReply:
                    pass  # a multiline reply, a malformed line: the general path below
                else:
                    self._buffer = buffer[end:]
                    return run, None
        replies: list[SMTPResponse] = []
        start = 0
        try:
            while True:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                if end + 1 - start > self.max_line_length:
                    raise SMTPProtocolError("Reply line too long")
                line = buffer[start:end]
                start = end + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if (
                    not self._code
                    and line[3:4] == b" "
                    and line[:3].isdigit()
                    and line[0] in b"2345"
                    and len(line) + 2 <= self.max_reply_size
                ):
                    # The common case: a complete one-line reply.
                    text = line[4:].decode("utf-8", "replace")
                    replies.append(SMTPResponse(int(line[:3]), text))
                    continue
                reply = self._line(line)
                if reply is not None:
                    replies.append(reply)
            rest = buffer[start:]
            if len(rest) >= self.max_line_length:
                raise SMTPProtocolError("Reply line too long")
        except SMTPProtocolError as exc:
            self.error = exc
            self._buffer = b""
            return replies, exc
        self._buffer = rest
        return replies, None

    def _line(self, line: bytes) -> SMTPResponse | None:
        """Take one line without its terminator; return the reply it completes."""
        size = len(line)
        if size < 3 or line[0] not in b"2345" or line[1] not in _DIGITS or line[2] not in _DIGITS:
            raise SMTPProtocolError(f"Malformed reply line: {line[:80]!r}")
        separator = line[3:4]
        if separator not in (b" ", b"-", b""):
            raise SMTPProtocolError(f"Malformed reply line: {line[:80]!r}")
        code = int(line[:3])
        if self._code and code != self._code:
            raise SMTPProtocolError(f"Multiline reply changed its code: {line[:80]!r}")
        self._size += size + 2
        if self._size > self.max_reply_size:
            raise SMTPProtocolError("Reply too long")
        text = line[4:].decode("utf-8", "replace")
        if separator == b"-":
            self._code = code
            self._lines.append(text)
            return None
        if self._lines:
            self._lines.append(text)
            text = "\n".join(self._lines)
            self._lines = []
        self._code = 0
        self._size = 0
        return SMTPResponse(code, text)
