"""SendClock (smtp_backends/deadline.py): the deadlines behind ``send_timeout``."""

from __future__ import annotations

import asyncio

import pytest

from smtp_backends import (
    SMTPConnectTimeoutError,
    SMTPReadTimeoutError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from smtp_backends.deadline import SendClock


async def test_without_a_limit_there_is_no_clock() -> None:
    assert SendClock.starting_now(None) is None


async def test_each_transaction_gets_its_own_deadline() -> None:
    loop = asyncio.get_running_loop()
    clock = SendClock(loop, 10.0)
    assert clock.deadline is None
    assert clock.cap(3.0) == 3.0 and clock.cap(None) is None
    assert clock.remaining() == float("inf") and not clock.expired()
    clock.start(1)
    await asyncio.sleep(0.02)
    clock.start(2)
    clock.watch(1)
    first = clock.deadline
    clock.watch(2)
    assert first is not None and clock.deadline is not None
    assert clock.deadline - first >= 0.015
    clock.watch(99)  # unknown: the deadline stays
    assert clock.deadline - first >= 0.015
    assert 9.0 < clock.remaining() <= 10.0
    assert clock.cap(None) == pytest.approx(clock.remaining(), abs=0.01)
    assert clock.cap(1.0) == 1.0
    assert "limit=10.0 s" in repr(clock)


async def test_a_single_send_counts_from_its_call() -> None:
    loop = asyncio.get_running_loop()
    clock = SendClock(loop, 5.0, first_deadline=loop.time() + 0.5)
    clock.start(1)  # its first transaction keeps the deadline set at the call
    clock.start(2)  # later ones get a full limit
    clock.watch(1)
    assert clock.remaining() <= 0.5
    clock.watch(2)
    assert clock.remaining() > 4.0


async def test_relabel_only_timeouts_this_clock_caused() -> None:
    loop = asyncio.get_running_loop()
    running = SendClock(loop, 5.0, loop.time() + 5.0)
    passed = SendClock(loop, 0.5, loop.time() - 0.01)
    read = SMTPReadTimeoutError("Timed out waiting for a reply (0.3 s)")
    lost = SMTPServerDisconnected("Connection lost")
    assert running.relabel(read) is read  # the per-operation timeout fired first
    assert passed.relabel(lost) is lost
    relabelled = passed.relabel(read)
    assert type(relabelled) is SMTPReadTimeoutError
    assert str(relabelled) == "The send took longer than its send_timeout (0.5 s)"
    assert relabelled.__cause__ is read
    assert type(passed.relabel(SMTPTimeoutError("drain"))) is SMTPTimeoutError
    assert type(passed.relabel(SMTPConnectTimeoutError("greeting"))) is SMTPConnectTimeoutError
    assert passed.expired() and passed.cap(10.0) == 0.0
    not_sent = passed.not_sent()
    assert type(not_sent) is SMTPTimeoutError and str(not_sent).startswith("Not sent:")


async def test_bound_cancels_work_that_outlives_the_deadline() -> None:
    clock = SendClock.starting_now(0.05)
    assert clock is not None
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(SMTPTimeoutError, match="send_timeout") as caught:
        await clock.bound(slow())
    assert type(caught.value) is SMTPTimeoutError
    assert cancelled.is_set()
    late = SendClock.starting_now(0.01)
    assert late is not None
    with pytest.raises(SMTPConnectTimeoutError, match="send_timeout"):
        await late.bound(asyncio.sleep(5), connecting=True)


async def test_bound_passes_on_results_and_other_timeouts() -> None:
    clock = SendClock.starting_now(5.0)
    assert clock is not None

    async def answer() -> int:
        return 42

    assert await clock.bound(answer()) == 42
    own = SMTPReadTimeoutError("Timed out waiting for a reply (0.1 s)")

    async def times_out() -> None:
        raise own

    with pytest.raises(SMTPReadTimeoutError) as caught:
        await clock.bound(times_out())
    assert caught.value is own  # the per-operation timeout, told as it was

    # The work's own timeout, capped to the time left, fires as the deadline passes:
    # told as the send_timeout it is.
    loop = asyncio.get_running_loop()
    ending = SendClock(loop, 0.5, loop.time() + 0.0015)
    with pytest.raises(SMTPReadTimeoutError, match="send_timeout") as late:
        await ending.bound(times_out())
    assert late.value.__cause__ is own
