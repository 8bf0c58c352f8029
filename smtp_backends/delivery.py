"""The transaction engine: many messages over one connection, pipelined or not.

RFC 2920 3.1 shapes the groups: with PIPELINING, MAIL, every RCPT and DATA
leave together and DATA ends the group; the message content and its dot
lead the next group, followed by the next message's MAIL/RCPT/DATA, so a
message costs one round trip in steady state. Every reply is still judged
on its own by the message's :class:`~smtp_backends.protocol.transaction.Transaction`.
Without PIPELINING the same judgement runs in lock-step.

Nothing is lost or doubled: a message counts as sent only after the 2xx to
its dot; a connection lost after the dot gives SMTPUnknownOutcomeError for
that message, and the messages not yet sent are reported as not sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Sequence

from .deadline import SendClock
from .errors import (
    SMTPException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)
from .protocol.connection import Command, Phase
from .protocol.data import END_OF_DATA
from .protocol.replies import SMTPResponse
from .protocol.transaction import AfterData, Envelope, Outcome, Transaction
from .transport import SMTPTransport, log_reply, log_sent, logger

__all__ = ("deliver",)

# Above this size a group's pieces are written one by one instead of joined,
# so a large message is not copied just to be sent.
_JOIN_LIMIT = 256 * 1024


# What the step generator asks of its driver: wait until this many replies
# are in, or (_DRAIN) until the send buffer has room.
_DRAIN = -1


#: Called once per message as soon as its outcome is final: (index, outcome).
ResultCallback = Callable[[int, "Outcome | Exception"], object]
#: Called with a message's index when its content leaves ahead of its dot (large messages).
ContentCallback = Callable[[int], object]


async def deliver(
    transport: SMTPTransport,
    preparers: Sequence[Callable[[], Envelope]],
    timeout: float | None,
    close: Callable[[], None],
    on_result: ResultCallback | None = None,
    clock: SendClock | None = None,
    on_content: ContentCallback | None = None,
) -> list[Outcome | Exception]:
    """Run one transaction per envelope over ``transport``; see :meth:`SMTP.send_messages`.

    The steps are a plain generator (:func:`_steps`) resumed straight from the
    transport's callbacks, so a reply group costs no task wake-up; only the
    end of the whole batch wakes the caller. ``on_result`` hears of each
    message's end-of-data reply the moment it arrives (a caller that must
    record accepted messages at once, say before a crash, relies on that) and
    of every other outcome when the batch ends. ``clock`` bounds each
    message's whole transaction (``send_timeout``); ``on_content`` (with
    ``on_result``) hears of a message whose content left before its dot, so
    that a failure before the dot still counts as a real attempt.

    Raises:
        asyncio.CancelledError: the caller was cancelled (the connection is
            closed: its state is in doubt).
    """
    steps = _steps(transport, preparers, timeout, close, on_result, clock, on_content)
    driver = _Driver(transport, steps, timeout, clock)
    driver.advance(None)
    try:
        return await driver.done
    except BaseException:
        if not driver.finished:  # cancelled while waiting on the server
            transport.stop_waiting()
            steps.close()
            close()
        raise


class _Driver:
    """Resumes the step generator whenever what it waits for has happened."""

    __slots__ = ("clock", "done", "finished", "steps", "timeout", "transport")

    def __init__(
        self,
        transport: SMTPTransport,
        steps: Generator[int, None, list[Outcome | Exception]],
        timeout: float | None,
        clock: SendClock | None = None,
    ) -> None:
        self.transport = transport
        self.steps = steps
        self.timeout = timeout
        self.clock = clock
        self.done: asyncio.Future[list[Outcome | Exception]] = transport.loop.create_future()
        self.finished = False

    def resume(self) -> None:
        self.advance(None)

    def fail(self, error: SMTPException) -> None:
        self.advance(error if self.clock is None else self.clock.relabel(error))

    def advance(self, error: SMTPException | None) -> None:
        transport, steps = self.transport, self.steps
        while not self.finished:
            try:
                wanted = steps.send(None) if error is None else steps.throw(error)
            except StopIteration as stop:
                self.finished = True
                if not self.done.done():
                    self.done.set_result(stop.value)
                return
            except BaseException as exc:  # the steps let it out: the caller's to see
                self.finished = True
                if not self.done.done():
                    self.done.set_exception(exc)
                return
            error = None
            timeout = self.timeout if self.clock is None else self.clock.cap(self.timeout)
            try:
                if wanted == _DRAIN:
                    waiting = transport.wait_for_drain(timeout, self.resume, self.fail)
                else:
                    waiting = transport.wait_for_replies(wanted, timeout, self.resume, self.fail)
            except SMTPException as exc:
                error = exc
                continue
            if waiting:
                return


def _steps(
    transport: SMTPTransport,
    preparers: Sequence[Callable[[], Envelope]],
    timeout: float | None,
    close: Callable[[], None],
    on_result: ResultCallback | None,
    clock: SendClock | None = None,
    on_content: ContentCallback | None = None,
) -> Generator[int, None, list[Outcome | Exception]]:
    """The transactions, as steps that yield what they wait for.

    Pipelined: each group is [previous content + dot] [RSET] MAIL RCPT...
    DATA, and ends at DATA (RFC 2920 3.1); the next envelope is prepared
    while the server works on the current group. Lock-step: one command
    a group, and a transaction stops as soon as its envelope failed.
    """
    connection = transport.connection
    debug = logger.isEnabledFor(logging.DEBUG)
    total = len(preparers)
    slots: list[Transaction | Exception | None] = [None] * total
    out: list[bytes] = []
    expected: list[tuple[Transaction | None, Command]] = []
    # Transactions whose end-of-data dot was handed to the transport: only
    # these can have an unknown outcome if the connection fails.
    dots_sent: set[int] = set()
    # For on_result: a transaction's position, and the positions already told.
    positions: dict[int, int] = {}
    told: set[int] = set()

    def tell(index: int, outcome: Outcome | Exception) -> None:
        assert on_result is not None
        told.add(index)
        try:
            on_result(index, outcome)
        except Exception:  # the caller's bug must not tear down a live transaction
            logger.exception("on_result callback failed for message %d", index)

    def queue(transaction: Transaction | None, command: Command, data: bytes) -> None:
        out.append(connection.send(command, data))
        expected.append((transaction, command))
        if debug:
            log_sent(command, data)

    def follow(transaction: Transaction, after: AfterData) -> None:
        # The dot itself is added when the group is written (see write_group).
        if after is AfterData.CONTENT:
            queue(transaction, Command.CONTENT, transaction.envelope.content)
        elif after is AfterData.EMPTY_DOT:
            queue(transaction, Command.CONTENT, b"")
        elif after is AfterData.RSET:
            queue(None, Command.RSET, b"RSET\r\n")

    def write_group() -> Generator[int, None, int]:
        pieces = out[:]
        entries = expected[len(expected) - len(pieces) :]
        out.clear()
        if sum(map(len, pieces)) <= _JOIN_LIMIT:
            joined: list[bytes] = []
            for piece, (transaction, command) in zip(pieces, entries, strict=True):
                joined.append(piece)
                if command is Command.CONTENT:
                    joined.append(END_OF_DATA)
                    dots_sent.add(id(transaction))
            transport.write(b"".join(joined))
            return len(expected)
        for piece, (transaction, command) in zip(pieces, entries, strict=True):
            if piece:
                transport.write(piece)
            if command is Command.CONTENT:
                assert transaction is not None
                if piece and on_content is not None and id(transaction) in positions:
                    on_content(positions[id(transaction)])
                if clock is not None:
                    clock.watch(id(transaction))
                # A large message must leave before its dot is handed over:
                # if the connection fails first, it was certainly not accepted.
                yield _DRAIN
                transport.write(END_OF_DATA)
                dots_sent.add(id(transaction))
        return len(expected)

    def read_group(count: int) -> Generator[int, None, None]:
        if clock is not None:
            # Wait for each transaction's replies in turn, each wait bounded by
            # that transaction's own deadline (send_timeout).
            upto = 0
            while upto < count:
                owner = expected[upto][0]
                end = upto + 1
                while end < count and expected[end][0] is owner:
                    end += 1
                if owner is not None:
                    clock.watch(id(owner))
                if end < count:
                    yield end
                upto = end
        yield count
        group = expected[:count]
        del expected[:count]
        for transaction, command in group:
            event = connection.next_event()
            assert event is not None
            reply = event[1]
            if debug:
                log_reply(reply)
            after = _judge(transaction, command, reply)
            if after is not None and transaction is not None:
                follow(transaction, after)
            elif on_result is not None and command is Command.CONTENT:
                assert transaction is not None
                tell(positions[id(transaction)], transaction.outcome())
        if connection.phase is Phase.CLOSED:  # a 421 ended the session
            raise SMTPServerDisconnected("The server closed the connection (421)")

    def round_trip() -> Generator[int, None, None]:
        if out:
            count = yield from write_group()
            yield from read_group(count)

    def prepare(index: int) -> Transaction | Exception:
        try:
            transaction = Transaction(preparers[index]())
        except Exception as exc:  # bad input, or a lazy item's own failure: this one fails
            return exc
        if on_result is not None:
            positions[id(transaction)] = index
        return transaction

    try:
        if connection.pipelining:
            upcoming = prepare(0) if total else None
            for index in range(total):
                current, slots[index] = upcoming, upcoming
                if isinstance(current, Transaction):
                    if clock is not None:
                        clock.start(id(current))
                    mail, *rcpts, data = current.envelope.commands
                    queue(current, Command.MAIL, mail)
                    for rcpt in rcpts:
                        queue(current, Command.RCPT, rcpt)
                    queue(current, Command.DATA, data)
                count = (yield from write_group()) if out else 0
                upcoming = prepare(index + 1) if index + 1 < total else None
                if count:
                    yield from read_group(count)
        else:
            for index in range(total):
                current = slots[index] = prepare(index)
                if not isinstance(current, Transaction):
                    continue
                yield from round_trip()  # the previous message's content, if any
                if clock is not None:
                    clock.start(id(current))
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
        _fail_in_flight(transport, expected, exc, dots_sent)
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
    outcomes: list[Outcome | Exception] = []
    for index, slot in enumerate(slots):
        if isinstance(slot, Transaction):
            outcome: Outcome | Exception = slot.outcome()
        else:
            assert slot is not None
            outcome = slot
        outcomes.append(outcome)
        if on_result is not None and index not in told:
            tell(index, outcome)
    return outcomes


def _fail_in_flight(
    transport: SMTPTransport,
    expected: list[tuple[Transaction | None, Command]],
    exc: BaseException,
    dots_sent: set[int],
) -> None:
    """Give every transaction still awaiting a reply its failure."""
    # Judge the replies that did arrive (say a 421) before failing the rest.
    while expected and transport.connection.ready_events:
        event = transport.connection.next_event()
        assert event is not None
        transaction, command = expected.pop(0)
        _judge(transaction, command, event[1])
    error = (
        exc if isinstance(exc, SMTPException) else SMTPServerDisconnected(f"Interrupted: {exc!r}")
    )
    for transaction, command in expected:
        if transaction is None or transaction.done:
            continue
        if command is Command.CONTENT and id(transaction) in dots_sent:
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


def _judge(
    transaction: Transaction | None, command: Command, reply: SMTPResponse
) -> AfterData | None:
    """Pass a reply to its transaction; for DATA, say what must follow."""
    if transaction is None:
        return None  # RSET: its reply changes no outcome
    if command is Command.MAIL:
        transaction.on_mail(reply)
    elif command is Command.RCPT:
        transaction.on_rcpt(reply)
    elif command is Command.DATA:
        return transaction.on_data(reply)
    else:
        transaction.on_end_of_data(reply)
    return None
