"""smtp_backends.timeouts.wait_for: asyncio.wait_for without swallowing a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from smtp_backends.timeouts import wait_for


async def test_a_cancellation_as_the_work_completes_is_not_swallowed() -> None:
    # The race of CPython gh-86296: the work's result and the caller's cancellation
    # arrive together. asyncio.wait_for before 3.12 returned the result.
    work: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    caller = asyncio.create_task(wait_for(work, 10))
    await asyncio.sleep(0)
    work.set_result("connected")
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_cancelled_caller_cancels_the_work() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(10)

    inner = asyncio.ensure_future(work())
    caller = asyncio.create_task(wait_for(inner, 10))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert inner.cancelled()


async def test_the_result_within_the_time() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await wait_for(work(), 5) == "done"
    assert await wait_for(work(), None) == "done"


async def test_a_timeout_cancels_the_work_and_raises_timeout_error() -> None:
    cleaned = []

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    with pytest.raises(asyncio.TimeoutError):
        await wait_for(work(), 0.01)
    assert cleaned == [True]  # the work's clean-up ran before the error


async def test_no_time_at_all_never_starts_the_work() -> None:
    ran = []

    async def work() -> None:
        ran.append(True)

    with pytest.raises(asyncio.TimeoutError):
        await wait_for(work(), 0)
    assert ran == []


async def test_the_works_own_error_and_cancellation_come_through() -> None:
    async def failing() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await wait_for(failing(), 5)
    cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait_for(cancelled, 5)
