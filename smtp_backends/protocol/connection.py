"""The client side of one SMTP connection as a state machine, without I/O.

The caller registers each command it writes with :meth:`ClientConnection.send`
(which checks that the command may be sent now and returns its bytes), feeds
received bytes to :meth:`ClientConnection.receive_data`, and takes replies,
each paired with the command it answers, from :meth:`next_event`. A
transaction engine registers a whole pipelined envelope at once with
:meth:`ClientConnection.send_envelope` and takes a group's replies at once
with :meth:`ClientConnection.take_replies`.

The pipelining rule of RFC 2920 section 3.1 lives here: several commands may
be in flight only when the server advertised PIPELINING and the caller
enabled it, and a command that must end a group (EHLO, DATA, AUTH, NOOP,
QUIT, STARTTLS...) is never followed by another before its reply. Message
content may lead a group, but only right after a 354 reply to DATA.

Any protocol violation by the server moves the connection to ``ERROR`` and
every later call refuses: a connection whose state is in doubt is never
reused.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ..errors import SMTPProtocolError, SMTPServerDisconnected
from .replies import DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_REPLY_SIZE, ReplyParser, SMTPResponse

__all__ = ("ClientConnection", "Command", "Phase")


class Command(enum.Enum):
    """What a reply answers."""

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    CONTENT = "message content"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    OTHER = "command"

    # Members are singletons: identity hashing (in C) instead of Enum's hash of
    # the name (in Python), looked up several times per message in the sets below.
    __hash__ = object.__hash__


# RFC 2920 3.1: these may appear anywhere in a group; all others end it.
_GROUPABLE = frozenset({Command.MAIL, Command.RCPT, Command.RSET, Command.CONTENT})
# Replies to these never change the phase (unless they are 421).
_NO_TRANSITION = frozenset(
    {Command.MAIL, Command.RCPT, Command.CONTENT, Command.RSET, Command.NOOP, Command.AUTH}
)
# Commands whose positive replies are all 2xx, except DATA's (354 only).
_JUDGED = frozenset(
    {Command.MAIL, Command.RCPT, Command.DATA, Command.CONTENT, Command.RSET, Command.NOOP}
)
# Replies to these take receive_data's fast path: they are judged (all 2xx
# positive) and never change the phase unless they are 421.
_FAST = frozenset({Command.MAIL, Command.RCPT, Command.CONTENT, Command.RSET})
# Codes that send a reply to one of _FAST, or to DATA, off the fast path: a 421
# (it ends the session) or a reply out of step with its command (RFC 5321
# 4.3.2: DATA's only positive reply is 354, no other command has a 3xx one).
_FAST_STOP = frozenset({*range(300, 400), 421})
_DATA_STOP = frozenset({*range(200, 354), *range(355, 400), 421})
# Commands that need a completed EHLO/HELO first.
_NEEDS_HELLO = frozenset({Command.MAIL, Command.RCPT, Command.DATA, Command.AUTH, Command.STARTTLS})


class Phase(enum.Enum):
    """Where the connection stands."""

    AWAIT_GREETING = "awaiting greeting"
    GREETED = "greeted"  # EHLO/HELO needed
    READY = "ready"
    TLS_HANDSHAKE = "TLS handshake"  # 220 to STARTTLS received
    CLOSING = "closing"  # QUIT sent
    CLOSED = "closed"
    ERROR = "error"

    __hash__ = object.__hash__  # as Command


# Members as module globals for the paths every command and reply take: on
# CPython 3.11 looking a member up on its Enum class costs ten times as much.
_CONTENT = Command.CONTENT
_DATA = Command.DATA
_EHLO = Command.EHLO
_GREETING = Command.GREETING
_HELO = Command.HELO
_MAIL = Command.MAIL
_OTHER = Command.OTHER
_QUIT = Command.QUIT
_RCPT = Command.RCPT
_STARTTLS = Command.STARTTLS
_CLOSED = Phase.CLOSED
_CLOSING = Phase.CLOSING
_ERROR = Phase.ERROR
_GREETED = Phase.GREETED
_READY = Phase.READY
_TLS_HANDSHAKE = Phase.TLS_HANDSHAKE
# A pipelined envelope with one recipient, as send_envelope registers it.
_ONE_RECIPIENT = (_MAIL, _RCPT, _DATA)


class ClientConnection:
    """State of one client connection: what was sent, what replies mean.

    Args:
        max_line_length: reply line cap in bytes.
        max_reply_size: whole reply cap in bytes.
    """

    def __init__(
        self,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    ) -> None:
        self._parser = ReplyParser(max_line_length, max_reply_size)
        self.phase = Phase.AWAIT_GREETING
        #: Commands awaiting their reply, oldest first.
        self.pending: list[Command] = [Command.GREETING]
        # The parsed, unread replies and the commands they answer: two lists in
        # step rather than a list of pairs, so that a group's replies move in
        # and out by slices, without a tuple or a call per reply.
        self._answered: list[Command] = []
        self._replies: list[SMTPResponse] = []
        #: How many replies are parsed and waiting in :meth:`next_event`. An
        #: attribute kept in step with them, not a property: a transport
        #: reads it at every wait, and a property costs a Python call.
        self.ready_events = 0
        #: Set by the owner when the server advertised PIPELINING and it is wanted.
        self.pipelining = False
        self._content_allowed = False
        self.error: SMTPProtocolError | None = None

    def __repr__(self) -> str:
        return f"<ClientConnection {self.phase.value}, {len(self.pending)} awaiting reply>"

    # Sending ---------------------------------------------------------------

    def send(self, command: Command, data: bytes) -> bytes:
        """Register ``data`` (encoded ``command``) as sent and return it.

        Raises:
            SMTPServerDisconnected: the connection is closed or failed earlier.
            SMTPProtocolError: the command may not be sent now (out of order,
                or more than one in flight without pipelining).
        """
        phase = self.phase
        if phase is not _READY and phase is not _GREETED:
            if phase is _ERROR:
                cause = f": {self.error.message}" if self.error is not None else ""
                raise SMTPProtocolError(f"Connection unusable after an earlier error{cause}")
            if phase is _CLOSED or phase is _CLOSING:
                raise SMTPServerDisconnected("Connection closed")
            raise SMTPProtocolError(f"Cannot send {command.value} while {phase.value}")
        if command in _NEEDS_HELLO and phase is not _READY:
            raise SMTPProtocolError(f"{command.value} needs EHLO or HELO first")
        pending = self.pending
        if command is _CONTENT:
            if not self._content_allowed:
                raise SMTPProtocolError("Message content may only follow a 354 reply")
            self._content_allowed = False
        elif self._content_allowed:
            # After 354 the server reads everything up to the dot as message text.
            raise SMTPProtocolError(
                f"Cannot send {command.value} after 354: the content must come first"
            )
        elif pending and not (self.pipelining and pending[-1] in _GROUPABLE):
            raise SMTPProtocolError(
                f"Cannot send {command.value} before the reply to {pending[-1].value}"
            )
        if command is _QUIT:
            self.phase = _CLOSING
        pending.append(command)
        return data

    def send_envelope(self, commands: Sequence[bytes]) -> None:
        """Register a pipelined envelope as sent: MAIL, ``len(commands) - 2`` RCPT, DATA.

        What :meth:`send` checks for each of them, checked once for the
        group (RFC 2920 3.1: MAIL and RCPT may be followed in a group, DATA
        ends it).

        Raises:
            ValueError: fewer than three commands.
            SMTPServerDisconnected: the connection is closed or failed earlier.
            SMTPProtocolError: the envelope may not be sent now (no pipelining,
                out of order, or a command that ends a group still in flight).
        """
        count = len(commands)
        if count < 3:
            raise ValueError("An envelope is MAIL, at least one RCPT and DATA")
        pending = self.pending
        if (
            self.phase is _READY
            and self.pipelining
            and not self._content_allowed
            and (not pending or pending[-1] in _GROUPABLE)
        ):
            if count == 3:  # one recipient, the common case: no list built
                pending += _ONE_RECIPIENT
            else:
                pending += [_MAIL, *[_RCPT] * (count - 2), _DATA]
            return
        # Something refuses the group: send() says what, as it would for the
        # first command refused, and nothing of the group stays registered.
        before = len(pending)
        try:
            self.send(_MAIL, commands[0])
            for rcpt in commands[1:-1]:
                self.send(_RCPT, rcpt)
            self.send(_DATA, commands[-1])
        except BaseException:
            del pending[before:]
            raise

    def send_content(self, data: bytes) -> bytes:
        """:meth:`send` for the message content (its dot to follow), on the path every
        message takes: checked as ``send(Command.CONTENT, data)``.

        Raises:
            SMTPServerDisconnected: the connection is closed or failed earlier.
            SMTPProtocolError: content may only follow a 354 reply to DATA.
        """
        if self._content_allowed and self.phase is _READY:
            self._content_allowed = False
            self.pending.append(_CONTENT)
            return data
        return self.send(_CONTENT, data)

    # Receiving -------------------------------------------------------------

    def receive_data(self, data: bytes) -> int:
        """Feed received bytes; complete replies become events.

        Returns:
            How many replies are ready now (:attr:`ready_events`).

        Raises:
            SMTPProtocolError: malformed or oversized replies, a reply nobody
                asked for, or bytes after the 220 reply to STARTTLS (a
                response injection attempt).
        """
        phase = self.phase
        if phase is _ERROR:
            raise self.error or SMTPProtocolError("Connection failed earlier")
        if phase is _TLS_HANDSHAKE:
            self._fail("Data received after the STARTTLS reply, before the TLS handshake")
        replies, error = self._parser.parse(data)
        parsed = len(replies)
        taken = 0
        if phase is _READY:
            # The common case, inline: a run of replies to MAIL, RCPT, DATA,
            # content and RSET in a session that goes on. Each is checked as
            # _on_reply checks it (out of step, 421); the first one that is
            # not so plain goes to _on_reply with all after it.
            pending = self.pending
            # More of either may come. No strict=False: zip with a keyword
            # argument takes CPython's slow call path, once per reply group.
            for command, reply in zip(pending, replies):  # noqa: B905
                if command in _FAST:
                    if reply[0] in _FAST_STOP:
                        break
                elif command is _DATA and reply[0] not in _DATA_STOP:
                    # 354, or a refusal (4xx/5xx but 421). RFC 2920 3.1: DATA
                    # ends its group, so its reply is the last of the run.
                    self._content_allowed = reply[0] == 354
                else:
                    break
                taken += 1
            if taken:
                self._answered += pending[:taken]
                del pending[:taken]
                if taken != parsed:
                    self._replies += replies[:taken]
                elif self._replies:
                    self._replies += replies
                else:  # none unread (the engine took them all): the parser's new list
                    self._replies = replies
        if taken != parsed:
            for reply in replies[taken:] if taken else replies:
                self._on_reply(reply)
        if error is not None:
            # Raised after the good replies before it became events.
            self._fail(error.message)
        if self.phase is _TLS_HANDSHAKE and self._parser.has_partial_data:
            self._fail("Data received after the STARTTLS reply, before the TLS handshake")
        ready = self.ready_events = len(self._replies)
        return ready

    def next_event(self) -> tuple[Command, SMTPResponse] | None:
        """The oldest unread reply with the command it answers, or None."""
        if not self._replies:
            return None
        self.ready_events -= 1
        return self._answered.pop(0), self._replies.pop(0)

    def take_replies(self, count: int) -> list[SMTPResponse]:
        """The ``count`` oldest unread replies (at most :attr:`ready_events`), oldest first.

        For a caller that knows which command each answers (it sent them).
        """
        replies = self._replies
        if count >= len(replies):  # the common case: all of them, without a copy
            self._replies = []
            self._answered.clear()
            self.ready_events = 0
            return replies
        taken = replies[:count]
        del replies[:count]
        del self._answered[:count]
        self.ready_events = len(replies)
        return taken

    def _on_reply(self, reply: SMTPResponse) -> None:
        if self.phase is _TLS_HANDSHAKE:
            # RFC 3207 4.2 / CVE-2011-0411: nothing may follow the 220 before TLS.
            self._fail("Reply received after the STARTTLS reply, before the TLS handshake")
        if not self.pending:
            if reply.code in (421, 221):
                # RFC 5321 3.8: a server may announce its shutdown at any time
                # (421; some say goodbye with 221 instead): the session is over.
                self._answered.append(_OTHER)
                self._replies.append(reply)
                self.phase = _CLOSED
                return
            self._fail(f"Reply received with no command awaiting one: {reply}")
        command = self.pending.pop(0)
        code = reply.code
        if code < 400 and command in _JUDGED and (code < 300) is (command is _DATA):
            # RFC 5321 4.3.2: DATA's only positive reply is 354, and no other
            # transaction command has an intermediate (3xx) one. Such a reply is
            # out of step with the commands sent (an extra reply in a pipelined
            # group shifts every later one): the state is in doubt, and the
            # message must not be judged on a reply that was not its own.
            self._fail(
                f"Reply {code} cannot answer {command.value}: the replies are out of "
                f"step with the commands sent ({reply.message[:80]!r})"
            )
        if (command in _NO_TRANSITION and code != 421) or self.phase is _CLOSED:
            # A closed session stays closed, whatever arrives after its end (the
            # rest of a group's replies after a 421, bytes after connection_lost).
            self._answered.append(command)
            self._replies.append(reply)
            return
        if command is _GREETING:
            self.phase = _GREETED if code == 220 else _CLOSED
        elif command is _EHLO or command is _HELO:
            if code == 250:
                self.phase = _READY
        elif command is _STARTTLS:
            if code == 220:
                self.phase = _TLS_HANDSHAKE
        elif command is _DATA:
            self._content_allowed = code == 354
        elif command is _QUIT:
            self.phase = _CLOSED
        if code == 421 and self.phase is not _CLOSING:
            self.phase = _CLOSED
        self._answered.append(command)
        self._replies.append(reply)

    def _fail(self, message: str) -> None:
        # The replies parsed before the failure stay readable.
        self.ready_events = len(self._replies)
        self.phase = Phase.ERROR
        self.error = SMTPProtocolError(message)
        raise self.error

    # Lifecycle -------------------------------------------------------------

    def tls_established(self) -> None:
        """The STARTTLS handshake succeeded: forget everything learned before it.

        RFC 3207 4.2: the client must discard knowledge obtained from the
        server before TLS and send EHLO again.
        """
        if self.phase is not Phase.TLS_HANDSHAKE:
            raise SMTPProtocolError(f"No STARTTLS handshake expected while {self.phase.value}")
        self._parser = ReplyParser(self._parser.max_line_length, self._parser.max_reply_size)
        self._answered.clear()
        self._replies.clear()
        self.ready_events = 0
        self.pipelining = False
        self._content_allowed = False
        self.phase = Phase.GREETED

    def connection_lost(self) -> None:
        """The transport is gone; every later send refuses."""
        if self.phase is not Phase.ERROR:
            self.phase = Phase.CLOSED
