"""The transaction engine: many messages over one connection, pipelined or not.

Sans-IO: :func:`run_batch` is a generator that drives a
:class:`~smtp_backends.protocol.connection.ClientConnection`. It hands the
bytes to send to a ``write`` callable and yields what it waits for: a number
of replies to be parsed, or :data:`DRAIN` (room in the send buffer); whoever
drives it (``smtp_backends.delivery`` over asyncio, or a test table) resumes
it once that has happened, or throws in the
:class:`~smtp_backends.errors.SMTPException` that ended the wait.

RFC 2920 3.1 shapes the groups: with PIPELINING, MAIL, every RCPT and DATA
leave together and DATA ends the group; the message content and its dot
lead the next group, followed by the next message's MAIL/RCPT/DATA, so a
message costs one round trip in steady state. Every reply is still judged
on its own by the message's :class:`~smtp_backends.protocol.transaction.Transaction`.
Without PIPELINING the same judgement runs in lock-step.

Nothing is lost or doubled: a message counts as sent only after the 2xx to
its dot; a connection lost after the dot gives SMTPUnknownOutcomeError for
that message, and the messages not yet sent are reported as not sent.

Bounded memory: a message's transaction (its envelope, content and command
bytes) is let go as soon as its outcome is final; the batch keeps only the
outcome, so a batch of 100,000 messages holds 100,000 outcomes, not 100,000
transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from typing import Protocol, TypeVar, cast

from ..errors import (
    SMTPException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)
from .connection import ClientConnection, Command, Phase
from .data import END_OF_DATA
from .replies import SMTPResponse
from .transaction import AfterData, Envelope, Outcome, Transaction

__all__ = (
    "DRAIN",
    "JOIN_LIMIT",
    "ContentCallback",
    "ResultCallback",
    "SendDeadlines",
    "Steps",
    "run_batch",
)

T = TypeVar("T")

_logger = logging.getLogger("smtp_backends")

#: Above this much message content in a group, its pieces are written one by
#: one instead of joined, so a large message is not copied just to be sent
#: (commands are short: a group of them is joined whatever their number).
JOIN_LIMIT = 256 * 1024

#: Yielded by the steps: wait until the send buffer has room (a positive
#: number instead means: until that many replies are parsed).
DRAIN = -1

#: Called once per message as soon as its outcome is final: (index, outcome).
ResultCallback = Callable[[int, "Outcome | Exception"], object]

#: Called with a message's index when its content leaves ahead of its dot (large messages).
ContentCallback = Callable[[int], object]


class SendDeadlines(Protocol):
    """Per-message deadlines (``send_timeout``), kept by whoever drives the engine.

    The engine only says when a message starts and which message the next
    wait is for; the driver caps its waits accordingly.
    """

    def start(self, key: int) -> None:
        """Message ``key`` (its index) writes its first command now."""

    def watch(self, key: int) -> None:
        """The next wait is for message ``key``'s replies or content."""


#: The generator :func:`run_batch` returns.
Steps = Generator[int, None, "list[Outcome | Exception]"]

# What a reply answers: the transaction (None for RSET) and the command.
_Expected = tuple["Transaction | None", Command]


def run_batch(
    connection: ClientConnection,
    items: Sequence[T],
    prepare: Callable[[T], Envelope],
    write: Callable[[bytes], None],
    close: Callable[[], None],
    on_result: ResultCallback | None = None,
    log_sent: Callable[[Command, bytes], None] | None = None,
    log_reply: Callable[[SMTPResponse], None] | None = None,
    clock: SendDeadlines | None = None,
    on_content: ContentCallback | None = None,
) -> Steps:
    """One transaction per item over ``connection``, as steps that yield what they wait for.

    Pipelined: each group is [previous content + dot] [RSET] MAIL RCPT...
    DATA, and ends at DATA (RFC 2920 3.1); the next envelope is prepared
    while the server works on the current group. Lock-step: one command
    a group, and a transaction stops as soon as its envelope failed.

    Args:
        connection: the connection state machine (greeted, ready).
        items: what to send; ``prepare(item)`` makes each one's envelope when
            its turn comes (anything it raises becomes that item's outcome).
        write: hands bytes to the transport.
        close: drops the connection (called when it failed: its state is in doubt).
        on_result: told each end-of-data reply's outcome at once, every other
            outcome when the batch ends (a callback's own exception is ignored).
        log_sent: called with each command sent (for debug logging).
        log_reply: called with each reply judged.
        clock: told when each message starts and whose replies each wait is
            for, so that the driver can bound every message's whole
            transaction (``send_timeout``).
        on_content: told a message's index when its content left ahead of
            its dot, so that a failure before the dot still counts as a real
            attempt.

    Returns (as the generator's value):
        One outcome per item, in order: ``(refused, reply_text)`` or the exception.
    """
    total = len(items)
    # A message's transaction until its outcome is final, then the outcome.
    slots: list[Transaction | Outcome | Exception | None] = [None] * total
    told = bytearray(total if on_result is not None else 0)
    # The group being built: its pieces, and where the end-of-data dots are in it.
    out: list[bytes] = []
    content_size = 0  # bytes of message content in `out`
    dots: list[tuple[int, Transaction]] = []
    expected: list[_Expected] = []
    send = connection.send
    send_envelope = connection.send_envelope
    send_content = connection.send_content
    take_replies = connection.take_replies
    pipelined = connection.pipelining
    MAIL, RCPT, DATA, CONTENT = Command.MAIL, Command.RCPT, Command.DATA, Command.CONTENT
    # Pipelined, a reply to MAIL starts a whole envelope's replies (judged in
    # one call); no command is None, so lock-step never takes that branch.
    ENVELOPE = MAIL if pipelined else None
    SEND_CONTENT = AfterData.CONTENT
    CLOSED = Phase.CLOSED

    def tell(index: int, outcome: Outcome | Exception) -> None:
        assert on_result is not None
        told[index] = 1
        try:
            on_result(index, outcome)
        except Exception:  # the caller's bug must not tear down a live transaction
            _logger.exception("on_result callback failed for message %d", index)

    def queue(transaction: Transaction | None, command: Command, data: bytes) -> None:
        out.append(send(command, data))
        expected.append((transaction, command))
        if log_sent is not None:
            log_sent(command, data)

    def follow(transaction: Transaction, after: AfterData) -> None:
        nonlocal content_size
        if after is AfterData.CONTENT or after is AfterData.EMPTY_DOT:
            content = transaction.envelope.content if after is AfterData.CONTENT else b""
            out.append(send_content(content))
            content_size += len(content)
            expected.append((transaction, CONTENT))
            if log_sent is not None:
                log_sent(CONTENT, content)
            dots.append((len(out), transaction))
            out.append(END_OF_DATA)
        else:
            queue(None, Command.RSET, b"RSET\r\n")
            # The transaction failed and nothing more of it is awaited.
            slots[transaction.index] = transaction.outcome()

    # Plain functions, not sub-generators, on the path every message takes:
    # a generator created and delegated to per group costs more than the rest
    # of the group's bookkeeping. Only a group too large to join yields.

    def write_joined() -> int:
        """Write the group in one piece; return the replies now awaited."""
        nonlocal content_size
        content_size = 0
        write(b"".join(out))
        out.clear()
        for _, transaction in dots:
            transaction.dot_sent = True
        dots.clear()
        return len(expected)

    def write_pieces() -> Generator[int, None, int]:
        """Write a large group piece by piece (see JOIN_LIMIT)."""
        nonlocal content_size
        content_size = 0
        pieces = out[:]
        at = dict(dots)
        out.clear()
        dots.clear()
        for position, piece in enumerate(pieces):
            dotted = at.get(position)
            if dotted is not None:
                if on_content is not None and position and pieces[position - 1]:
                    on_content(dotted.index)
                if clock is not None:
                    clock.watch(dotted.index)
                # A large message must leave before its dot is handed over:
                # if the connection fails first, it was certainly not accepted.
                yield DRAIN
                write(piece)
                dotted.dot_sent = True
            elif piece:
                write(piece)
        return len(expected)

    def judge(count: int) -> None:
        """Judge the ``count`` replies that are in, oldest first."""
        nonlocal out, expected, content_size
        if count == len(expected):  # pipelined: always the whole group, so no copy
            group, expected = expected, []
        else:
            group = expected[:count]
            del expected[:count]
        replies = take_replies(count)
        if log_reply is not None:
            # All at once: they all arrived before anything judging them sends.
            for reply in replies:
                log_reply(reply)
        if len(replies) != count:  # the driver waited for all: one short would be lost
            raise AssertionError(f"{count} replies awaited, {len(replies)} ready")
        position = 0
        while position < count:
            transaction, command = group[position]
            if command is ENVELOPE and transaction is not None:
                # The whole envelope, MAIL to DATA, is in this group: it left
                # as one (RFC 2920 3.1) and a group is judged all at once.
                after = transaction.on_envelope(replies, position)
                position += len(transaction.envelope.commands)
            else:
                reply = replies[position]
                position += 1
                if transaction is None:  # RSET: its reply changes no outcome
                    continue
                if command is CONTENT:  # the end of data: the outcome is final
                    index = transaction.index
                    slots[index] = outcome = transaction.on_end_of_data(reply)
                    if on_result is not None:
                        # tell(), inline
                        told[index] = 1
                        try:
                            on_result(index, outcome)
                        except Exception:  # the caller's bug must not tear down a live one
                            _logger.exception("on_result callback failed for message %d", index)
                    continue
                if command is RCPT:
                    transaction.on_rcpt(reply)
                    continue
                if command is MAIL:
                    transaction.on_mail(reply)
                    continue
                after = transaction.on_data(reply)  # DATA
            if after is SEND_CONTENT:
                # follow(), inline for the path every message takes: the
                # content and its dot lead the next group (RFC 2920 3.1).
                content = transaction.envelope.content
                out += (send_content(content), END_OF_DATA)
                content_size += len(content)
                expected.append((transaction, CONTENT))
                dots.append((len(out) - 1, transaction))
                if log_sent is not None:
                    log_sent(CONTENT, content)
            else:
                follow(transaction, after)
        if connection.phase is CLOSED:  # a 421 ended the session
            raise SMTPServerDisconnected("The server closed the connection (421)")

    def in_turn(count: int) -> Generator[int, None, None]:
        """Wait for each message's replies in turn, each wait bounded by its own deadline."""
        assert clock is not None
        upto = 0
        while upto < count:
            owner = expected[upto][0]
            end = upto + 1
            while end < count and expected[end][0] is owner:
                end += 1
            if owner is not None:
                clock.watch(owner.index)
            if end < count:
                yield end
            upto = end

    def round_trip() -> Generator[int, None, None]:
        if out:
            if content_size <= JOIN_LIMIT:
                count = write_joined()
            else:
                count = yield from write_pieces()
            if clock is not None:
                yield from in_turn(count)
            yield count
            judge(count)

    def start(index: int) -> Transaction | Exception:
        try:
            return Transaction(prepare(items[index]), index)
        except Exception as exc:  # bad input, or a lazy item's own failure: this one fails
            return exc

    try:
        if pipelined:
            upcoming = start(0) if total else None
            for index in range(total):
                current, slots[index] = upcoming, upcoming
                if type(current) is Transaction:
                    if clock is not None:
                        clock.start(index)
                    # MAIL, every RCPT and DATA, registered in one call (a
                    # thousand recipients would make a thousand calls otherwise).
                    commands = current.envelope.commands
                    send_envelope(commands)
                    out += commands
                    recipients = len(commands) - 2
                    if recipients == 1:  # the common case, without building a list
                        expected += ((current, MAIL), (current, RCPT), (current, DATA))
                    else:
                        expected += [
                            (current, MAIL),
                            *[(current, RCPT)] * recipients,
                            (current, DATA),
                        ]
                    if log_sent is not None:
                        log_sent(MAIL, commands[0])
                        for rcpt in commands[1:-1]:
                            log_sent(RCPT, rcpt)
                        log_sent(DATA, commands[-1])
                if not out:
                    count = 0
                elif content_size <= JOIN_LIMIT:
                    # write_joined(), inline: once per message in steady state.
                    content_size = 0
                    write(b"".join(out))
                    out.clear()
                    while dots:  # no loop variable left holding a transaction
                        dots.pop()[1].dot_sent = True
                    count = len(expected)
                else:
                    count = yield from write_pieces()
                # Prepared while the server works on the group just written:
                # start(), inline.
                if index + 1 < total:
                    try:
                        upcoming = Transaction(prepare(items[index + 1]), index + 1)
                    except Exception as exc:  # bad input, or a lazy item's own failure
                        upcoming = exc
                else:
                    upcoming = None
                if count:
                    if clock is not None:
                        yield from in_turn(count)
                    yield count
                    judge(count)
        else:
            for index in range(total):
                current = slots[index] = start(index)
                if not isinstance(current, Transaction):
                    continue
                yield from round_trip()  # the previous message's content, if any
                if clock is not None:
                    clock.start(index)
                mail, *rcpts, data = current.envelope.commands
                queue(current, Command.MAIL, mail)
                yield from round_trip()
                for rcpt in rcpts:
                    if current.error is not None:
                        break
                    queue(current, Command.RCPT, rcpt)
                    yield from round_trip()
                if current.error is not None:
                    follow(current, current.skip_data())
                else:
                    queue(current, Command.DATA, data)
                    yield from round_trip()
        yield from round_trip()
    except SMTPException as exc:
        _fail_in_flight(connection, expected, exc)
        close()
        lost = SMTPServerDisconnected(
            f"Not sent: the connection was lost before this message ({exc})"
        )
        for position, slot in enumerate(slots):
            if slot is None:
                slots[position] = lost
            elif isinstance(slot, Transaction):
                slot.fail(lost if not slot.mail_accepted else exc)
    except BaseException:
        close()
        raise
    # Every slot is set by now (by the loop, or to `lost` above): a transaction
    # still open, or an outcome that was final before the batch ended.
    outcomes = cast(
        "list[Outcome | Exception]",
        [slot.outcome() if type(slot) is Transaction else slot for slot in slots],
    )
    if on_result is not None:
        # Those not told yet, in order (most were, as their end-of-data reply came).
        index = told.find(0)
        while index >= 0:
            tell(index, outcomes[index])
            index = told.find(0, index + 1)
    return outcomes


def _fail_in_flight(
    connection: ClientConnection, expected: list[_Expected], error: SMTPException
) -> None:
    """Give every transaction still awaiting a reply its failure."""
    # Judge the replies that did arrive (say a 421) before failing the rest.
    while expected and connection.ready_events:
        event = connection.next_event()
        assert event is not None
        transaction, command = expected.pop(0)
        if transaction is not None:
            _judge(transaction, command, event[1])
    for transaction, command in expected:
        if transaction is None or transaction.done:
            continue
        if command is Command.CONTENT and transaction.dot_sent:
            # The dot went out: the server may have accepted the message.
            text = (
                "The connection ended after the message was sent and before the "
                f"server's reply; it may or may not have been accepted ({error})"
            )
            unknown: SMTPException = (
                SMTPUnknownOutcomeTimeoutError(text)
                if isinstance(error, SMTPTimeoutError)
                else SMTPUnknownOutcomeError(text)
            )
            unknown.__cause__ = error
            transaction.fail(unknown)
        else:
            transaction.fail(error)
    expected.clear()


def _judge(transaction: Transaction, command: Command, reply: SMTPResponse) -> None:
    """Pass a late reply (one that came with the failure) to its transaction."""
    if command is Command.MAIL:
        transaction.on_mail(reply)
    elif command is Command.RCPT:
        transaction.on_rcpt(reply)
    elif command is Command.DATA:
        transaction.on_data(reply)
    else:
        transaction.on_end_of_data(reply)
