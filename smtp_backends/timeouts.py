"""``asyncio.wait_for`` that never swallows its caller's cancellation.

Before Python 3.12, ``asyncio.wait_for`` returned the awaited result when the
caller was cancelled at the moment that work completed (CPython gh-86296): a
cancelled ``connect()`` could go on and connect, a cancelled STARTTLS go on and
upgrade. From 3.12 it is built on ``asyncio.timeout()`` and correct; before,
:func:`wait_for` here waits with ``asyncio.wait()``, which lets the
cancellation through, and cancels the work itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ("wait_for",)

T = TypeVar("T")


async def wait_for(work: Awaitable[T], timeout: float | None) -> T:
    """Await ``work`` for at most ``timeout`` seconds (None: no limit).

    As ``asyncio.wait_for``: on timeout the work is cancelled, waited for, and
    ``asyncio.TimeoutError`` raised (its result is returned if it finished
    regardless). Unlike it before Python 3.12: a cancellation of the caller
    always raises ``CancelledError`` (the work is cancelled), never a result.
    """
    if timeout is None or sys.version_info >= (3, 12):
        return await asyncio.wait_for(work, timeout)
    task = asyncio.ensure_future(work)
    done = False
    if timeout > 0:
        try:
            finished, _ = await asyncio.wait((task,), timeout=timeout)
        except BaseException:  # the caller was cancelled: so is the work
            task.cancel()
            raise
        done = bool(finished)
    if not done and not task.done():
        # Timed out (or no time at all: as asyncio.wait_for, the work never starts).
        task.cancel()
        try:
            await asyncio.wait((task,))  # let the work end (its clean-up runs)
        except BaseException:
            task.cancel()
            raise
    try:
        return task.result()
    except asyncio.CancelledError:
        if done:
            raise  # the work itself was cancelled, not timed out
        raise asyncio.TimeoutError from None
