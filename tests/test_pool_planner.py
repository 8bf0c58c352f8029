"""The pool's decisions as a pure step: plain values in, a plan out; no sockets, no loop."""

from __future__ import annotations

import random
from collections import deque

import pytest

from smtp_backends import (
    SMTPDataError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)
from smtp_backends.pool_planner import (
    BatchBook,
    EntryState,
    Line,
    PoolPlanner,
    Share,
    Verdict,
    verdict_of,
)


def opened(planner: PoolPlanner, now: float, *tokens: str) -> dict[str, object]:
    """Request for each token, step, and pretend every new entry was opened."""
    for token in tokens:
        planner.request(token)
    plan = planner.step(now)
    assigned = {}
    for token, entry in plan.assign:
        if entry.client is None:
            entry.client = f"client-{entry.number}"
        assigned[token] = entry
    return assigned


def test_first_request_creates_an_entry_to_open() -> None:
    planner = PoolPlanner(2)
    planner.request("a")
    plan = planner.step(0.0)
    assert [(token, entry.number, entry.client) for token, entry in plan.assign] == [("a", 1, None)]
    assert plan.close == []
    assert planner.active_count == 1


def test_never_more_than_max_connections_and_waiters_keep_their_order() -> None:
    planner = PoolPlanner(2)
    got = opened(planner, 0.0, "a", "b", "c", "d")
    assert sorted(got) == ["a", "b"]
    assert list(planner.waiting) == ["c", "d"]
    assert len(planner.entries) == 2
    planner.release(got["b"], 1.0, reusable=True, sent=1)  # type: ignore[arg-type]
    plan = planner.step(1.0)
    assert [token for token, _ in plan.assign] == ["c"]
    assert plan.assign[0][1] is got["b"]
    assert list(planner.waiting) == ["d"]


def test_idle_entry_is_reused_most_recent_first() -> None:
    planner = PoolPlanner(3)
    got = opened(planner, 0.0, "a", "b")
    planner.release(got["a"], 1.0, reusable=True)  # type: ignore[arg-type]
    planner.release(got["b"], 2.0, reusable=True)  # type: ignore[arg-type]
    planner.request("c")
    plan = planner.step(2.5)
    assert plan.assign[0][1] is got["b"]
    assert len(planner.entries) == 2


def test_unhealthy_release_closes_the_entry_and_frees_its_slot_once_closed() -> None:
    planner = PoolPlanner(1)
    got = opened(planner, 0.0, "a", "b")
    assert list(planner.waiting) == ["b"]
    entry = got["a"]
    planner.release(entry, 1.0, reusable=False)  # type: ignore[arg-type]
    assert entry.state is EntryState.CLOSING  # type: ignore[attr-defined]
    # Its socket is still open while it closes: the slot is not free yet.
    assert planner.step(1.0).assign == []
    planner.discard(entry)  # type: ignore[arg-type]
    assert entry.state is EntryState.CLOSED  # type: ignore[attr-defined]
    assert planner.entries == []
    plan = planner.step(1.0)
    assert [(token, e.client) for token, e in plan.assign] == [("b", None)]


def test_unopened_entry_is_never_kept_idle() -> None:
    planner = PoolPlanner(1)
    planner.request("a")
    ((_, entry),) = planner.step(0.0).assign
    planner.release(entry, 1.0, reusable=True)
    assert entry.state is EntryState.CLOSED
    assert planner.entries == []


def test_max_messages_per_connection_retires_the_entry() -> None:
    planner = PoolPlanner(1, max_messages_per_connection=3)
    got = opened(planner, 0.0, "a")
    entry = got["a"]
    planner.release(entry, 1.0, reusable=True, sent=2)  # type: ignore[arg-type]
    assert entry.state is EntryState.IDLE  # type: ignore[attr-defined]
    planner.request("b")
    assert planner.step(1.0).assign[0][1] is entry
    planner.release(entry, 2.0, reusable=True, sent=1)  # type: ignore[arg-type]
    assert entry.state is EntryState.CLOSING  # type: ignore[attr-defined]
    assert entry.messages_sent == 3  # type: ignore[attr-defined]
    # Released again (it is not active): nothing changes.
    planner.release(entry, 3.0, reusable=True, sent=5)  # type: ignore[arg-type]
    assert entry.messages_sent == 3  # type: ignore[attr-defined]


def test_idle_timeout_closes_in_the_step_and_reports_next_expiry() -> None:
    planner = PoolPlanner(2, idle_timeout=10.0)
    got = opened(planner, 0.0, "a", "b")
    planner.release(got["a"], 1.0, reusable=True)  # type: ignore[arg-type]
    planner.release(got["b"], 4.0, reusable=True)  # type: ignore[arg-type]
    assert planner.next_expiry() == 11.0
    assert planner.step(10.9).close == []
    plan = planner.step(11.0)
    assert plan.close == [got["a"]]
    assert got["a"].state is EntryState.CLOSING  # type: ignore[attr-defined]
    assert planner.next_expiry() == 14.0
    assert planner.step(20.0).close == [got["b"]]
    assert planner.next_expiry() is None
    assert len(planner.entries) == 2  # both still closing


def test_no_idle_timeout_never_expires() -> None:
    planner = PoolPlanner(1, idle_timeout=None)
    got = opened(planner, 0.0, "a")
    planner.release(got["a"], 0.0, reusable=True)  # type: ignore[arg-type]
    assert planner.next_expiry() is None
    assert planner.step(1e9).close == []


def test_cancel_removes_only_waiting_tokens() -> None:
    planner = PoolPlanner(1)
    opened(planner, 0.0, "a", "b")
    assert planner.cancel("b") is True
    assert planner.cancel("b") is False
    assert planner.cancel("a") is False  # already served
    assert list(planner.waiting) == []


def test_discard_and_close_all_idle() -> None:
    planner = PoolPlanner(3)
    got = opened(planner, 0.0, "a", "b", "c")
    planner.release(got["a"], 1.0, reusable=True)  # type: ignore[arg-type]
    planner.release(got["b"], 1.0, reusable=True)  # type: ignore[arg-type]
    planner.discard(got["c"])  # type: ignore[arg-type]
    assert planner.active_count == 0
    idle = planner.close_all_idle()
    assert set(map(id, idle)) == {id(got["a"]), id(got["b"])}
    assert all(e.state is EntryState.CLOSING for e in idle)
    assert planner.idle_count == 0
    for entry in idle:
        planner.discard(entry)
    assert planner.entries == []
    # Releasing an entry already out of the pool changes nothing.
    planner.release(got["a"], 2.0, reusable=True)  # type: ignore[arg-type]
    assert planner.entries == []


def test_repr_shows_states() -> None:
    planner = PoolPlanner(2)
    got = opened(planner, 0.0, "a", "b")
    planner.release(got["a"], 1.0, reusable=True, sent=4)  # type: ignore[arg-type]
    planner.request("z")
    text = repr(planner)
    assert "<#1 idle, 4 sent>" in text
    assert "<#2 active, 0 sent>" in text
    assert "0 waiting" in text or "1 waiting" in text


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_connections": 0}, ValueError),
        ({"max_connections": True}, TypeError),
        ({"max_connections": 1, "max_messages_per_connection": 0}, ValueError),
        ({"max_connections": 1, "idle_timeout": 0}, ValueError),
    ],
)
def test_invalid_limits(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        PoolPlanner(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- batches


def _response(code: int) -> SMTPResponseException:
    return SMTPResponseException(code, "text")


@pytest.mark.parametrize(
    ("outcome", "content_left", "verdict"),
    [
        (({}, "2.0.0 queued"), False, Verdict.SENT),
        (({"x@example.com": SMTPResponse(550, "no")}, "queued"), False, Verdict.SENT),
        (SMTPUnknownOutcomeError("dot left, no reply"), False, Verdict.UNKNOWN),
        (SMTPUnknownOutcomeTimeoutError("dot left, timed out"), True, Verdict.UNKNOWN),
        (SMTPSenderRefused(451, "later", "a@example.com"), False, Verdict.TRANSIENT),
        (SMTPSenderRefused(421, "closing", "a@example.com"), False, Verdict.TRANSIENT),
        (SMTPSenderRefused(550, "no", "a@example.com"), False, Verdict.PERMANENT),
        (SMTPDataError(451, "queue full"), False, Verdict.TRANSIENT),
        (SMTPDataError(554, "spam"), False, Verdict.PERMANENT),
        (
            SMTPRecipientsRefused([SMTPRecipientRefused(550, "no", "a@example.com")]),
            False,
            Verdict.PERMANENT,
        ),
        (
            SMTPRecipientsRefused(
                [
                    SMTPRecipientRefused(550, "no", "a@example.com"),
                    SMTPRecipientRefused(450, "busy", "b@example.com"),
                ]
            ),
            False,
            Verdict.TRANSIENT,
        ),
        # No reply about it, nothing of it left: it only waited behind a failure.
        (SMTPServerDisconnected("Not sent: lost before this message"), False, Verdict.NOT_SENT),
        (SMTPReadTimeoutError("no reply to MAIL"), False, Verdict.NOT_SENT),
        (SMTPProtocolError("garbage"), False, Verdict.NOT_SENT),
        # Its content left before the dot: a real attempt, though no reply came.
        (SMTPServerDisconnected("lost mid-content"), True, Verdict.TRANSIENT),
        (SMTPTimeoutError("drain timed out"), True, Verdict.TRANSIENT),
        (ValueError("bad address"), False, Verdict.PERMANENT),
        (SMTPNotSupported("needs SMTPUTF8"), False, Verdict.PERMANENT),
    ],
)
def test_verdict_of_an_outcome(outcome: object, content_left: bool, verdict: Verdict) -> None:
    assert verdict_of(outcome, content_left) is verdict


def test_batch_book_charges_only_real_attempts_and_requeues_the_rest_in_front() -> None:
    book = BatchBook(6, max_attempts=3, max_reconnects=3)
    assert book.take(4) == [0, 1, 2, 3]
    assert book.in_flight == 4
    assert book.record(0, Verdict.SENT) is True
    assert book.record(1, Verdict.TRANSIENT) is False  # a 451: to the back, charged
    assert book.record(2, Verdict.NOT_SENT) is False  # waited behind it: uncharged
    assert book.record(3, Verdict.NOT_SENT) is False
    assert list(book.pending) == [4, 5, 1]
    book.chunk_done()
    assert list(book.pending) == [2, 3, 4, 5, 1]  # in their order, ahead of the rest
    assert book.attempts == [0, 1, 0, 0, 0, 0]
    assert book.settled == 1 and book.in_flight == 0 and not book.finished


def test_batch_book_fails_a_message_after_max_attempts() -> None:
    book = BatchBook(1, max_attempts=2)
    book.take(1)
    assert book.record(0, Verdict.TRANSIENT) is False
    book.take(1)
    assert book.record(0, Verdict.TRANSIENT) is True
    assert book.attempts == [2]
    assert book.finished


def test_batch_book_never_requeues_unknown_or_permanent_outcomes() -> None:
    book = BatchBook(2)
    book.take(2)
    assert book.record(0, Verdict.UNKNOWN) is True
    assert book.record(1, Verdict.PERMANENT) is True
    assert book.finished and book.settled == 2


def test_batch_book_stops_after_max_reconnects_fruitless_losses_in_a_row() -> None:
    book = BatchBook(3, max_reconnects=2)
    for _ in range(2):
        book.record(book.take(1)[0], Verdict.NOT_SENT)
        book.chunk_done()
        assert book.connection_lost(progressed=False) is True
    # Any progress resets the count.
    index = book.take(1)[0]
    book.record(index, Verdict.SENT)
    assert book.connection_lost(progressed=True) is True
    for _ in range(2):
        book.record(book.take(1)[0], Verdict.NOT_SENT)
        book.chunk_done()
        assert book.connection_lost(progressed=False) is True
    book.record(book.take(1)[0], Verdict.NOT_SENT)
    book.chunk_done()
    assert book.connection_lost(progressed=False) is False
    assert book.stopped
    assert sorted(book.give_up()) == [1, 2]
    assert book.finished and book.settled == 3


def test_batch_book_settles_what_comes_back_once_stopped() -> None:
    book = BatchBook(2)
    book.take(2)
    assert book.give_up() == []
    assert book.record(0, Verdict.NOT_SENT) is True  # in flight when it stopped
    assert book.record(1, Verdict.TRANSIENT) is True
    assert book.finished and book.settled == 2
    assert "stopped" in repr(book)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": 2.5}, TypeError),
        ({"max_reconnects": -1}, ValueError),
        ({"max_reconnects": True}, TypeError),
    ],
)
def test_invalid_batch_limits(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        BatchBook(1, **kwargs)  # type: ignore[arg-type]


def test_a_share_settles_each_message_once_in_one_step() -> None:
    book = BatchBook(4, max_attempts=2)
    finals: list[tuple[int, object]] = []
    judged: list[tuple[int, bool]] = []
    share = Share(
        book,
        book.take(4),
        lambda: False,
        lambda index, outcome: finals.append((index, outcome)),
        lambda position, outcome, retried: judged.append((position, retried)),
    )
    accepted: tuple[dict[str, SMTPResponse], str] = ({}, "queued")
    share.judge(0, accepted)
    share.judge(0, accepted)  # told again (the batch's own list): judged once
    refused = ({"x@example.com": SMTPResponse(550, "no")}, "queued as 2")
    share.judge(1, refused)
    later = SMTPDataError(451, "queue full")
    share.judge(2, later)
    assert not share.complete
    share.judge(3, SMTPServerDisconnected("Not sent: lost before this message"))
    assert share.complete and "4 judged" in repr(share)
    assert finals == [(0, accepted), (1, refused)]  # the others go again
    assert judged == [(0, False), (1, False), (2, True), (3, True)]
    assert book.outcomes == [accepted, refused, None, None]
    assert book.latest[2] is later
    assert (share.accepted, share.progressed) == (2, True)
    assert book.settled == 2 and book.in_flight == 0 and book.attempts == [0, 0, 1, 0]
    book.chunk_done()
    assert list(book.pending) == [3, 2]


def test_a_share_charges_a_message_not_sent_on_a_live_connection() -> None:
    # A connection that lives on cannot leave a message unsent for ever.
    book = BatchBook(1, max_attempts=1)
    share = Share(book, book.take(1), lambda: True)
    lost = SMTPServerDisconnected("Not sent: lost before this message")
    share.judge(0, lost)
    assert book.outcomes == [lost] and book.finished and share.progressed


def test_a_share_that_only_waited_got_nothing_further() -> None:
    book = BatchBook(2)
    share = Share(book, book.take(2), lambda: False)
    for position in (0, 1):
        share.judge(position, SMTPServerDisconnected("Not sent: lost before this message"))
    assert (share.accepted, share.progressed) == (0, False)
    assert book.outcomes == [None, None] and book.attempts == [0, 0]


@pytest.mark.parametrize("seed", range(20))
def test_the_line_keeps_the_order_of_one_deque(seed: int) -> None:
    # The line takes fresh messages as a slice; in any mix of takes, put-backs
    # in front and at the end, it holds what a plain deque would, in order.
    rng = random.Random(seed)
    total = rng.randrange(0, 60)
    line, model = Line(total), deque(range(total))
    out: list[int] = []
    for _ in range(80):
        action = rng.randrange(4)
        if action == 0:
            most = rng.randrange(1, 12)
            taken = line.take(most)
            assert taken == [model.popleft() for _ in range(min(most, len(model)))]
            out += taken
        elif action == 1 and out:
            index = out.pop(rng.randrange(len(out)))
            line.append(index)
            model.append(index)
        elif action == 2 and out:
            back = [out.pop() for _ in range(min(len(out), rng.randrange(1, 4)))]
            line.extendleft(reversed(back))
            model.extendleft(reversed(back))
        assert list(line) == list(model)
        assert len(line) == len(model) and bool(line) is bool(model)
    line.clear()
    assert not line and list(line) == [] and repr(line) == "Line([])"
