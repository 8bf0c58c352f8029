"""The transaction engine (smtp_backends.protocol.batch), driven with plain bytes.

No event loop and no socket: a :class:`ClientConnection` is fed server bytes, the engine's
writes are collected, and each step it yields (a number of replies, or DRAIN) is answered
by hand. These tables pin the groups of RFC 2920 3.1, the judgement of each reply, the
outcomes after a failure, and that a message's transaction is let go once judged.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from smtp_backends.errors import (
    SMTPDataError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPUnknownOutcomeError,
)
from smtp_backends.protocol.batch import DRAIN, JOIN_LIMIT, Steps, run_batch
from smtp_backends.protocol.connection import ClientConnection
from smtp_backends.protocol.transaction import Envelope

SENDER = "s@example.org"
CONTENT = b"Subject: x\r\n\r\nbody\r\n"


class TrackedEnvelope(Envelope):
    """An Envelope that can be watched with a weak reference."""

    __slots__ = ("__weakref__",)


def ready_connection(*, pipelining: bool = True) -> ClientConnection:
    connection = ClientConnection()
    connection.receive_data(b"220 hi\r\n")
    connection.next_event()
    connection.send(connection_command("EHLO"), b"EHLO me\r\n")
    connection.receive_data(b"250 ok\r\n")
    connection.next_event()
    connection.pipelining = pipelining
    return connection


def connection_command(name: str) -> Any:
    from smtp_backends.protocol.connection import Command

    return Command[name]


class Harness:
    """Runs the engine over ``items``; ``written`` collects each write."""

    def __init__(
        self,
        items: Sequence[Any],
        *,
        pipelining: bool = True,
        prepare: Callable[[Any], Envelope] | None = None,
        clock: Any = None,
        on_content: Callable[[int], object] | None = None,
    ) -> None:
        self.connection = ready_connection(pipelining=pipelining)
        self.written: list[bytes] = []
        self.closed = 0
        self.told: list[tuple[int, object]] = []
        self.steps: Steps = run_batch(
            self.connection,
            items,
            prepare or (lambda recipients: TrackedEnvelope(SENDER, recipients, CONTENT)),
            self.written.append,
            self.close,
            lambda index, outcome: self.told.append((index, outcome)),
            clock=clock,
            on_content=on_content,
        )
        self.wanted: int | None = None
        self.result: list[Any] | None = None
        self._resume(None)

    def close(self) -> None:
        self.closed += 1

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data

    def reply(self, data: bytes) -> None:
        """Feed server bytes and resume the engine (they must complete its wait)."""
        self.connection.receive_data(data)
        assert self.wanted is not None and self.connection.ready_events >= self.wanted
        self._resume(None)

    def fail(self, error: Exception) -> None:
        self._resume(error)

    def _resume(self, error: Exception | None) -> None:
        try:
            self.wanted = self.steps.send(None) if error is None else self.steps.throw(error)
        except StopIteration as stop:
            self.wanted = None
            self.result = stop.value


def test_pipelined_groups_one_round_trip_per_message() -> None:
    run = Harness([["a@example.org"], ["b@example.org", "c@example.org"]])
    assert run.wanted == 3
    assert run.take() == b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    # The content and its dot lead the next group, with the next message's envelope.
    assert run.take() == (
        CONTENT + b".\r\n"
        b"MAIL FROM:<s@example.org>\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\nDATA\r\n"
    )
    assert run.wanted == 5
    run.reply(b"250 queued 1\r\n250 ok\r\n250 ok\r\n550 no c\r\n354 go\r\n")
    assert run.told == [(0, ({}, "queued 1"))]  # told at once
    assert run.take() == CONTENT + b".\r\n"
    run.reply(b"250 queued 2\r\n")
    assert run.result is not None
    assert run.result[0] == ({}, "queued 1")
    refused, text = run.result[1]
    assert text == "queued 2" and list(refused) == ["c@example.org"]
    assert refused["c@example.org"].code == 550
    assert run.closed == 0


def test_a_transaction_is_let_go_once_its_outcome_is_final() -> None:
    envelopes: list[weakref.ref[TrackedEnvelope]] = []

    def prepare(recipients: list[str]) -> Envelope:
        envelope = TrackedEnvelope(SENDER, recipients, CONTENT)
        envelopes.append(weakref.ref(envelope))
        return envelope

    run = Harness([["a@example.org"], ["b@example.org"], ["c@example.org"]], prepare=prepare)
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    run.reply(b"250 queued 1\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    gc.collect()
    # Message 0 is judged: its envelope (content, command bytes) is gone; 1 is in flight.
    assert [ref() is None for ref in envelopes] == [True, False, False]
    run.reply(b"550 rejected 2\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    gc.collect()
    assert [ref() is None for ref in envelopes] == [True, True, False]
    run.reply(b"250 queued 3\r\n")
    assert run.result is not None
    assert isinstance(run.result[1], SMTPDataError)


def test_data_refused_resets_and_a_354_after_no_recipient_gets_a_lone_dot() -> None:
    run = Harness([["a@example.org"], ["b@example.org"], ["c@example.org"]])
    run.take()
    run.reply(b"250 ok\r\n250 ok\r\n451 not now\r\n")
    # DATA refused: RSET, then the next message.
    assert run.take().startswith(b"RSET\r\nMAIL FROM:")
    run.reply(b"250 reset\r\n250 ok\r\n550 nobody\r\n354 go\r\n")
    # RFC 2920 3.1: a DATA accepted for no recipient is closed with a lone dot.
    assert run.take().startswith(b".\r\nMAIL FROM:")
    run.reply(b"554 no valid recipients\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    run.reply(b"250 queued\r\n")
    assert run.result is not None
    first, second, third = run.result
    assert isinstance(first, SMTPDataError) and first.code == 451
    assert isinstance(second, SMTPRecipientsRefused)
    assert third == ({}, "queued")
    # The end-of-data replies were told at once, the DATA failure at the end.
    assert [index for index, _ in run.told] == [1, 2, 0]


def test_lock_step_stops_a_transaction_at_its_first_failure() -> None:
    run = Harness([["a@example.org"], ["b@example.org"]], pipelining=False)
    assert run.take() == b"MAIL FROM:<s@example.org>\r\n"
    run.reply(b"553 bad sender\r\n")
    assert run.take() == b"RSET\r\n"
    run.reply(b"250 reset\r\n")
    assert run.take() == b"MAIL FROM:<s@example.org>\r\n"
    run.reply(b"250 ok\r\n")
    assert run.take() == b"RCPT TO:<b@example.org>\r\n"
    run.reply(b"250 ok\r\n")
    assert run.take() == b"DATA\r\n"
    run.reply(b"354 go\r\n")
    assert run.take() == CONTENT + b".\r\n"
    run.reply(b"250 queued\r\n")
    assert run.result is not None
    assert isinstance(run.result[0], SMTPSenderRefused)
    assert run.result[1] == ({}, "queued")


def test_a_connection_lost_after_the_dot_leaves_that_outcome_unknown() -> None:
    run = Harness([["a@example.org"], ["b@example.org"], ["c@example.org"]])
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    lost = SMTPServerDisconnected("Connection lost")
    run.fail(lost)
    assert run.result is not None and run.closed == 1
    unknown, second, third = run.result
    assert isinstance(unknown, SMTPUnknownOutcomeError)
    assert unknown.__cause__ is lost
    assert second is lost  # its MAIL was sent, not accepted: the connection error
    assert isinstance(third, SMTPServerDisconnected) and "Not sent" in str(third)
    assert sorted(index for index, _ in run.told) == [0, 1, 2]


def test_a_bad_item_fails_alone() -> None:
    def prepare(item: Any) -> Envelope:
        if item is None:
            raise ValueError("no such message")
        return Envelope(SENDER, item, CONTENT)

    run = Harness([None, ["a@example.org"]], prepare=prepare)
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    run.reply(b"250 queued\r\n")
    assert run.result is not None
    assert isinstance(run.result[0], ValueError)
    assert run.result[1] == ({}, "queued")


def test_a_large_message_drains_before_its_dot() -> None:
    big = b"x" * (JOIN_LIMIT + 10) + b"\r\n"
    run = Harness([["a@example.org"]], prepare=lambda r: Envelope(SENDER, r, big))
    run.take()
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert run.wanted == DRAIN
    assert run.take() == big  # written on its own, not joined; no dot yet
    run._resume(None)  # the send buffer drained
    assert run.take() == b".\r\n"
    run.reply(b"250 queued\r\n")
    assert run.result == [({}, "queued")]


class RecordingClock:
    """A stand-in for the driver's SendClock: records what the engine tells it."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int]] = []

    def start(self, key: int) -> None:
        self.heard.append(("start", key))

    def watch(self, key: int) -> None:
        self.heard.append(("watch", key))


def test_with_a_clock_each_message_replies_are_awaited_in_turn() -> None:
    # send_timeout: each message's deadline runs from its MAIL, and each wait is for one
    # message's replies (its own deadline caps it), oldest first.
    clock = RecordingClock()
    run = Harness([["a@example.org"], ["b@example.org"]], clock=clock)
    assert run.wanted == 3
    assert clock.heard == [("start", 0), ("watch", 0)]
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    # The group carries message 0's content and message 1's envelope: first the dot's reply.
    assert run.wanted == 1
    assert clock.heard[2:] == [("start", 1), ("watch", 0)]
    run.reply(b"250 queued 1\r\n")
    assert run.wanted == 4 and clock.heard[4:] == [("watch", 1)]
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")  # the group is judged once all are in
    run.reply(b"250 queued 2\r\n")
    assert run.result == [({}, "queued 1"), ({}, "queued 2")]
    assert clock.heard[5:] == [("watch", 1)]


def test_with_a_clock_lock_step_starts_each_message_at_its_mail() -> None:
    clock = RecordingClock()
    run = Harness([["a@example.org"], ["b@example.org"]], pipelining=False, clock=clock)
    assert clock.heard == [("start", 0), ("watch", 0)]
    for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 queued 1\r\n"):
        run.reply(reply)
    run.reply(b"250 ok\r\n")  # message 1's MAIL
    assert ("start", 1) in clock.heard
    for reply in (b"250 ok\r\n", b"354 go\r\n", b"250 queued 2\r\n"):
        run.reply(reply)
    assert run.result == [({}, "queued 1"), ({}, "queued 2")]
    assert clock.heard.index(("start", 1)) > clock.heard.index(("watch", 0))


def test_a_large_message_reports_its_content_before_its_dot() -> None:
    big = b"x" * (JOIN_LIMIT + 10) + b"\r\n"
    clock = RecordingClock()
    contents: list[int] = []
    run = Harness(
        [["a@example.org"], ["b@example.org"]],
        prepare=lambda r: Envelope(SENDER, r, big if r == ["b@example.org"] else CONTENT),
        clock=clock,
        on_content=contents.append,
    )
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert contents == []  # a small message's content leaves joined with its dot
    run.reply(b"250 queued 1\r\n")
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert run.wanted == DRAIN
    assert contents == [1] and clock.heard[-1] == ("watch", 1)
    run._resume(None)  # the send buffer drained
    run.reply(b"250 queued 2\r\n")
    assert run.result == [({}, "queued 1"), ({}, "queued 2")]
    assert contents == [1]


@pytest.mark.parametrize("count", [0, 1])
def test_empty_and_single_batches(count: int) -> None:
    run = Harness([["a@example.org"]] * count)
    if count:
        run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
        run.reply(b"250 queued\r\n")
    assert run.result == [({}, "queued")] * count


def test_a_failing_on_result_callback_is_logged_and_the_batch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = ready_connection()
    written: list[bytes] = []

    def on_result(index: int, outcome: object) -> None:
        raise RuntimeError("the caller's bug")

    steps = run_batch(
        connection,
        [["a@example.org"]],
        lambda r: Envelope(SENDER, r, CONTENT),
        written.append,
        lambda: None,
        on_result,
    )
    assert next(steps) == 3
    connection.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert steps.send(None) == 1
    connection.receive_data(b"250 queued\r\n")
    with pytest.raises(StopIteration) as stop:
        steps.send(None)
    assert stop.value.value == [({}, "queued")]
    assert "on_result callback failed for message 0" in caplog.text


def test_replies_that_came_with_the_failure_are_judged_first() -> None:
    # The server accepts the first message's dot and refuses the second's MAIL, then the
    # connection drops before the rest: the replies that did arrive still count.
    run = Harness([["a@example.org"], ["b@example.org"]])
    run.reply(b"250 ok\r\n250 ok\r\n354 go\r\n")
    run.connection.receive_data(b"250 queued\r\n550 no sender\r\n")
    run.fail(SMTPServerDisconnected("Connection lost"))
    assert run.result is not None
    first, second = run.result
    assert first == ({}, "queued")
    assert isinstance(second, SMTPSenderRefused)
