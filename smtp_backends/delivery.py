"""Running the transaction engine of :mod:`smtp_backends.protocol.batch` over one transport.

The engine is sans-IO: a generator that writes through a callable and
yields what it waits for. This driver resumes it straight from the
transport's callbacks (a reply group costs no task wake-up; only the end
of the whole batch wakes the caller), and closes the connection when the
caller is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from .deadline import SendClock
from .errors import SMTPException
from .protocol.batch import DRAIN, ContentCallback, ResultCallback, Steps, run_batch
from .protocol.transaction import Envelope, Outcome
from .transport import SMTPTransport, log_reply, log_sent, logger

__all__ = ("ContentCallback", "ResultCallback", "deliver")

T = TypeVar("T")


async def deliver(
    transport: SMTPTransport,
    items: Sequence[T],
    prepare: Callable[[T], Envelope],
    timeout: float | None,
    close: Callable[[], None],
    on_result: ResultCallback | None = None,
    clock: SendClock | None = None,
    on_content: ContentCallback | None = None,
) -> list[Outcome | Exception]:
    """Run one transaction per item over ``transport``; see :meth:`SMTP.send_messages`.

    ``prepare(item)`` makes each item's envelope when its turn comes.
    ``on_result`` hears of each message's end-of-data reply the moment it
    arrives (a caller that must record accepted messages at once, say before
    a crash, relies on that) and of every other outcome when the batch ends.
    ``clock`` bounds each message's whole transaction (``send_timeout``);
    ``on_content`` (with ``on_result``) hears of a message whose content left
    before its dot, so that a failure before the dot still counts as a real
    attempt.

    Raises:
        asyncio.CancelledError: the caller was cancelled (the connection is
            closed: its state is in doubt).
    """
    debug = logger.isEnabledFor(logging.DEBUG)
    steps = run_batch(
        transport.connection,
        items,
        prepare,
        transport.write,
        close,
        on_result,
        log_sent if debug else None,
        log_reply if debug else None,
        clock,
        on_content,
    )
    driver = _Driver(transport, steps, timeout, clock)
    driver.advance()
    try:
        return await driver.done
    except BaseException:
        if not driver.finished:  # cancelled while waiting on the server
            transport.stop_waiting()
            steps.close()
            close()
        raise


class _Driver:
    """Resumes the steps whenever what they wait for has happened."""

    __slots__ = ("_fail", "_resume", "clock", "done", "finished", "steps", "timeout", "transport")

    def __init__(
        self,
        transport: SMTPTransport,
        steps: Steps,
        timeout: float | None,
        clock: SendClock | None = None,
    ) -> None:
        self.transport = transport
        self.steps = steps
        self.timeout = timeout
        self.clock = clock
        self.done: asyncio.Future[list[Outcome | Exception]] = transport.loop.create_future()
        self.finished = False
        # The callbacks every wait hands the transport, bound once: resuming
        # is advance() itself, with no error, so a reply group costs no extra hop.
        self._resume: Callable[[], None] = self.advance
        self._fail: Callable[[SMTPException], None] = self.fail

    def fail(self, error: SMTPException) -> None:
        """The wait ended in ``error``: throw it into the steps."""
        self.advance(error if self.clock is None else self.clock.relabel(error))

    def advance(self, error: SMTPException | None = None) -> None:
        """Run the steps until they wait for something that has not happened yet."""
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
                if wanted == DRAIN:
                    waiting = transport.wait_for_drain(timeout, self._resume, self._fail)
                else:
                    waiting = transport.wait_for_replies(wanted, timeout, self._resume, self._fail)
            except SMTPException as exc:
                error = exc
                continue
            if waiting:
                return
