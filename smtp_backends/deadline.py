"""``send_timeout``: one bound on a whole send, on top of the per-operation ``timeout``.

The per-operation timeout bounds each wait (a reply, a drain, connecting); a server that
answers every command just under it can still stretch one send to many times that. A
:class:`SendClock` holds the deadlines of whole sends: the transaction engine caps each wait
at the time left to the oldest message it waits for, and a wait that ends because that
time ran out raises the same error family as any timeout, with the outcome it implies: the
message was not sent (SMTPTimeoutError / SMTPReadTimeoutError) while its end-of-data dot had
not left, and its outcome is unknown (SMTPUnknownOutcomeTimeoutError) after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from .errors import (
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPTimeoutError,
)
from .timeouts import wait_for

__all__ = ("SendClock",)

T = TypeVar("T")

# A timer may fire this early (the loop's clock resolution): still "the deadline passed".
_SLACK = 0.002


class SendClock:
    """Deadlines of whole sends, each ``limit`` seconds from its start.

    Args:
        loop: the event loop whose clock is used.
        limit: seconds allowed for one whole send (``send_timeout``).
        first_deadline: the deadline of the first transaction started, when its
            clock started earlier (a single send counts from its call).
    """

    __slots__ = ("_first", "_starts", "deadline", "limit", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: float,
        first_deadline: float | None = None,
    ) -> None:
        self.loop = loop
        self.limit = limit
        self._first = first_deadline
        self._starts: dict[int, float] = {}
        #: The deadline of the send the current wait is for (None: no send yet).
        self.deadline: float | None = first_deadline

    @classmethod
    def starting_now(cls, limit: float | None) -> SendClock | None:
        """A clock whose first send starts now, or None without a limit."""
        if limit is None:
            return None
        loop = asyncio.get_running_loop()
        return cls(loop, limit, loop.time() + limit)

    def __repr__(self) -> str:
        return f"<SendClock limit={self.limit} s, {self.remaining():.3f} s left>"

    # For the transaction engine ------------------------------------------

    def start(self, key: int) -> None:
        """A transaction (``key``: its id) writes its first command now."""
        if self._first is not None:
            deadline, self._first = self._first, None
        else:
            deadline = self.loop.time() + self.limit
        self._starts[key] = deadline

    def watch(self, key: int) -> None:
        """The next wait is bounded by transaction ``key``'s deadline."""
        self.deadline = self._starts.get(key, self.deadline)

    def cap(self, timeout: float | None) -> float | None:
        """``timeout`` shortened to the time left to the current deadline."""
        if self.deadline is None:
            return timeout
        left = max(0.0, self.deadline - self.loop.time())
        return left if timeout is None or left < timeout else timeout

    def remaining(self) -> float:
        """Seconds left to the current deadline (0 once passed; inf without one)."""
        if self.deadline is None:
            return float("inf")
        return max(0.0, self.deadline - self.loop.time())

    def expired(self) -> bool:
        """Whether the current deadline has passed."""
        return self.deadline is not None and self.loop.time() >= self.deadline - _SLACK

    def relabel(self, error: SMTPException) -> SMTPException:
        """A timeout caused by this clock, told as such (other errors unchanged)."""
        if not isinstance(error, SMTPTimeoutError) or not self.expired():
            return error
        text = f"The send took longer than its send_timeout ({self.limit} s)"
        relabelled: SMTPException = (
            SMTPConnectTimeoutError(text)
            if isinstance(error, SMTPConnectTimeoutError)
            else SMTPReadTimeoutError(text)
            if isinstance(error, SMTPReadTimeoutError)
            else SMTPTimeoutError(text)
        )
        relabelled.__cause__ = error
        return relabelled

    def not_sent(self) -> SMTPTimeoutError:
        """The error of a send whose time ran out before any of it was written."""
        return SMTPTimeoutError(
            f"Not sent: the send took longer than its send_timeout ({self.limit} s)"
        )

    # For the callers -------------------------------------------------------

    async def bound(self, work: Awaitable[T], *, connecting: bool = False) -> T:
        """Await ``work`` (no message data at stake) within the time left.

        Raises:
            SMTPConnectTimeoutError (``connecting``) / SMTPTimeoutError: the time ran out;
                ``work`` was cancelled.
        """
        try:
            return await wait_for(work, self.remaining())
        # First: our errors are TimeoutErrors too, as asyncio's is from Python 3.11.
        except SMTPTimeoutError as exc:  # its own timeout, capped by the time left
            relabelled = self.relabel(exc)
            if relabelled is exc:
                raise
            raise relabelled from exc
        except asyncio.TimeoutError:
            text = f"Not sent: the send took longer than its send_timeout ({self.limit} s)"
            if connecting:
                raise SMTPConnectTimeoutError(text) from None
            raise SMTPTimeoutError(text) from None

    @contextlib.asynccontextmanager
    async def holding(self, lock: asyncio.Lock) -> AsyncIterator[None]:
        """``async with lock`` whose wait counts against the time left."""
        await self.bound(lock.acquire())
        try:
            yield
        finally:
            lock.release()
