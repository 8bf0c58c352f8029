"""SMTPPool: a bounded set of SMTP connections, reused across sends.

Decisions (who gets which connection, which to open or close) are made by
the pure :class:`~smtp_backends.pool_planner.PoolPlanner`; this module does
the I/O around them: connecting lazily (greeting, EHLO, STARTTLS and AUTH
once per connection), checking a connection that sat idle before reusing
it, QUITting connections that expire, and spreading batches.

A connection whose state is in doubt is never returned: the client closes
itself on any timeout, cancellation or protocol error, and the pool takes
back only connections that are still connected.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from .client import SMTP, BatchItem
from .config import ConnectionConfig
from .delivery import ResultCallback
from .errors import (
    SMTPException,
    SMTPPoolClosedError,
    SMTPPoolTimeoutError,
    SMTPServerDisconnected,
    SMTPUnknownOutcomeError,
)
from .message import AnyMessage
from .pool_planner import EntryState, Plan, PoolEntry, PoolPlanner
from .protocol.transaction import Outcome
from .transport import logger

__all__ = ("SMTPPool",)

T = TypeVar("T")

#: Most messages one connection takes from a batch at a time.
_MAX_CHUNK = 500

#: Progress callback of :meth:`SMTPPool.send_messages`: (done, total).
ProgressCallback = Callable[[int, int], object]


def _retryable(outcome: object) -> bool:
    """Whether a failed send may be tried again on another connection.

    Only when the connection was lost before the end-of-data dot: the server
    cannot have accepted the message. Never after the dot (unknown outcome).
    """
    return isinstance(outcome, SMTPServerDisconnected) and not isinstance(
        outcome, SMTPUnknownOutcomeError
    )


class _Waiter:
    """A caller waiting for a connection (hashable token for the planner)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[PoolEntry]) -> None:
        self.future = future


class SMTPPool:
    """A pool of SMTP connections to one server, for many sends.

    Args:
        max_connections: most connections open at once.
        max_messages_per_connection: reconnect after this many messages
            (None: no limit).
        idle_timeout: close a connection unused for this many seconds.
        acquire_timeout: most seconds to wait for a free connection (None:
            the connection ``timeout``); exceeding it raises
            :class:`SMTPPoolTimeoutError`.
        check_after: a connection idle this long is checked with NOOP before
            reuse; a dead one is replaced transparently.
        **options: the connection keywords of :class:`smtp_backends.SMTP`
            (hostname, port, username, password, use_tls, start_tls,
            timeout, ...), validated once here.

    Raises:
        ValueError / TypeError: invalid limits or connection options.
    """

    def __init__(
        self,
        *,
        max_connections: int = 8,
        max_messages_per_connection: int | None = None,
        idle_timeout: float | None = 60.0,
        acquire_timeout: float | None = None,
        check_after: float = 2.0,
        **options: Any,
    ) -> None:
        self.config = ConnectionConfig(**options)
        self._planner = PoolPlanner(max_connections, max_messages_per_connection, idle_timeout)
        self.acquire_timeout = (
            acquire_timeout if acquire_timeout is not None else self.config.timeout
        )
        self.check_after = check_after
        self._closed = False
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._released = asyncio.Event()  # a connection was given back (for close())
        self._expiry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Connections opened over the pool's life (for tests and monitoring).
        self.connections_opened = 0

    @classmethod
    def from_config(cls, config: ConnectionConfig, **limits: Any) -> SMTPPool:
        """A pool for an already validated :class:`ConnectionConfig`."""
        pool = cls(**limits)
        pool.config = config
        if limits.get("acquire_timeout") is None:
            pool.acquire_timeout = config.timeout
        return pool

    def __repr__(self) -> str:
        config = self.config
        state = "closed" if self._closed else f"{len(self._planner.waiting)} waiting"
        return (
            f"<SMTPPool {config.effective_hostname}:{config.effective_port} "
            f"max={self._planner.max_connections} {self._planner.entries!r} {state}>"
        )

    @property
    def max_connections(self) -> int:
        """The most connections open at once."""
        return self._planner.max_connections

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def __aenter__(self) -> SMTPPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # Acquiring and releasing ----------------------------------------------

    def _now(self) -> float:
        return self._bound_loop().time()

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "This SMTPPool belongs to another event loop; use smtp_backends.bridge "
                "to share a pool between loops or threads"
            )
        return loop

    def _apply(self, plan: Plan) -> None:
        for token, entry in plan.assign:
            assert isinstance(token, _Waiter)
            if token.future.done():  # the waiter gave up in the meantime: give it back
                self._planner.release(entry, self._now(), reusable=entry.client is not None)
                self._apply(self._planner.step(self._now()))
            else:
                token.future.set_result(entry)
        for entry in plan.close:
            self._close_entry(entry)
        self._schedule_expiry()

    def _step(self) -> None:
        self._apply(self._planner.step(self._now()))

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        when = self._planner.next_expiry()
        if when is not None and not self._closed:
            self._expiry = self._bound_loop().call_at(when, self._step)

    def _close_entry(self, entry: PoolEntry) -> asyncio.Task[None] | None:
        """Close a CLOSING entry (QUIT in the background); it leaves the pool after.

        Returns the closing task, for a caller that must not return before a
        dead connection's socket is gone.
        """
        client = entry.client
        if not isinstance(client, SMTP):
            self._discard(entry)
            return None
        task = asyncio.get_running_loop().create_task(self._quit(entry, client))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)
        return task

    @staticmethod
    async def _settle(task: asyncio.Task[None] | None) -> None:
        """Wait until a failed connection has left the pool (shielded: it always does)."""
        if task is not None:
            await asyncio.shield(task)

    async def _quit(self, entry: PoolEntry, client: SMTP) -> None:
        try:
            if client.is_connected:
                await client.quit(timeout=5)
        except (SMTPException, OSError):
            pass
        finally:
            # Only once the socket is really closed is its slot free (a
            # cancelled or failed send's too): never more sockets than the limit.
            client.close()
            await client.wait_closed()
            self._discard(entry)
            if not self._closed:
                self._step()

    def _discard(self, entry: PoolEntry) -> None:
        self._planner.discard(entry)
        self._released.set()

    async def _acquire(self) -> PoolEntry:
        if self._closed:
            raise SMTPPoolClosedError("The pool is closed")
        loop = self._bound_loop()
        waiter = _Waiter(loop.create_future())
        self._planner.request(waiter)
        self._step()
        timer = (
            loop.call_later(self.acquire_timeout, self._give_up, waiter)
            if self.acquire_timeout is not None and not waiter.future.done()
            else None
        )
        try:
            # Awaited directly (not through wait_for): before Python 3.12,
            # wait_for could swallow a cancellation once the entry was handed
            # over, and the cancelled caller would send anyway.
            entry = await waiter.future
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result(), reusable=True)  # handed over, but unwanted
            else:
                self._planner.cancel(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        try:
            await self._make_ready(entry)
        except BaseException:
            self._planner.release(entry, self._now(), reusable=False)
            closing = self._close_entry(entry)
            if closing is None:  # never opened: its slot is free now
                self._step()
            await self._settle(closing)  # else free once its socket is gone
            raise
        return entry

    def _give_up(self, waiter: _Waiter) -> None:
        """The acquire timeout passed: stop waiting for a connection."""
        if not waiter.future.done() and self._planner.cancel(waiter):
            waiter.future.set_exception(
                SMTPPoolTimeoutError(
                    f"No connection became free within {self.acquire_timeout} s "
                    f"({self._planner.max_connections} in use)"
                )
            )

    async def _make_ready(self, entry: PoolEntry) -> None:
        """Open a new entry's connection, or check one that sat idle."""
        client = entry.client
        if isinstance(client, SMTP) and client.is_connected:
            if self._now() - entry.idle_since < self.check_after:
                return
            try:
                await client.noop()
                return
            except (SMTPException, OSError):
                logger.debug("pool: connection #%d failed its check; replacing it", entry.number)
                client.close()
        client = SMTP.from_config(self.config)
        entry.client = client
        await client.connect()
        self.connections_opened += 1

    def _release(
        self, entry: PoolEntry, *, reusable: bool, sent: int = 0
    ) -> asyncio.Task[None] | None:
        """Give ``entry`` back; returns the task closing it if its connection failed."""
        client = entry.client
        connected = isinstance(client, SMTP) and client.is_connected
        healthy = reusable and connected and not self._closed
        self._planner.release(entry, self._now(), reusable=healthy, sent=sent)
        closing = None
        if entry.state is EntryState.CLOSING:
            closing = self._close_entry(entry)
        self._released.set()
        self._step()
        return None if connected else closing

    async def _with_client(self, operation: Callable[[SMTP], Awaitable[T]]) -> T:
        """Run ``operation`` on a pooled client.

        Retried once, on another connection, when a reused connection was
        lost before the end of data (the server cannot have the message).
        """
        for attempt in (1, 2):
            entry = await self._acquire()
            reused = entry.messages_sent > 0
            client = entry.client
            assert isinstance(client, SMTP)
            sent = 0
            try:
                result = await operation(client)
                sent = 1
                return result
            except SMTPException as exc:
                if attempt == 1 and reused and _retryable(exc):
                    logger.debug(
                        "pool: connection #%d lost before the message; retrying", entry.number
                    )
                    continue
                raise
            finally:
                await self._settle(self._release(entry, reusable=True, sent=sent))
        raise AssertionError("unreachable")  # pragma: no cover

    # Sending ------------------------------------------------------------------

    async def send_message(self, message: AnyMessage, /, **kwargs: Any) -> Outcome:
        """Send one message object over a pooled connection.

        Takes and returns what :meth:`SMTP.send_message` does.
        """
        return await self._with_client(lambda client: client.send_message(message, **kwargs))

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        **kwargs: Any,
    ) -> Outcome:
        """Send raw message data over a pooled connection; as :meth:`SMTP.sendmail`."""
        return await self._with_client(
            lambda client: client.sendmail(sender, recipients, message, **kwargs)
        )

    async def send_messages(
        self,
        messages: Iterable[BatchItem],
        /,
        *,
        on_progress: ProgressCallback | None = None,
        on_result: ResultCallback | None = None,
    ) -> list[Outcome | Exception]:
        """Send a batch spread over up to ``max_connections`` connections.

        Each connection sends its share pipelined (see
        :meth:`SMTP.send_messages`). Messages whose connection was lost
        before their end of data are retried once on another connection;
        a message whose outcome is unknown is never resent.

        Args:
            messages: message objects, ``(sender, recipients, data)`` tuples, or
                callables returning one (see :meth:`SMTP.send_messages`); a
                callable is called again if its message is retried on another
                connection.
            on_progress: called as ``on_progress(done, total)`` as outcomes arrive.
            on_result: called as ``on_result(index, outcome)`` once per message
                (index into ``messages``) with its final outcome, at once when
                the server answers its end of data; see :meth:`SMTP.send_messages`.

        Returns:
            One outcome per message, in input order: ``(errors, response_text)``
            or the exception that message failed with.
        """
        if self._closed:
            raise SMTPPoolClosedError("The pool is closed")
        items = list(messages)
        total = len(items)
        outcomes: list[Outcome | Exception | None] = [None] * total
        if not total:
            return []
        pending: deque[int] = deque(range(total))
        retried: set[int] = set()
        # One pipelined run per connection: each chunk ends with one round trip
        # that carries no next message, so chunks are as large as an even share
        # (capped, so that progress is reported and work rebalanced now and then).
        chunk = max(1, min(_MAX_CHUNK, math.ceil(total / self.max_connections)))
        done = 0

        def settle(index: int, outcome: Outcome | Exception) -> None:
            nonlocal done
            outcomes[index] = outcome
            done += 1
            if on_result is not None:
                try:
                    on_result(index, outcome)
                except Exception:  # as in SMTP.send_messages: logged, never fatal
                    logger.exception("on_result callback failed for message %d", index)
            if on_progress is not None:
                on_progress(done, total)

        async def run_chunk(client: SMTP, indices: list[int]) -> int:
            """Send one share on ``client``; returns how many were accepted."""
            accepted = 0
            judged: set[int] = set()

            def judge(position: int, outcome: Outcome | Exception) -> None:
                # Settled as each reply arrives, so on_result hears of an
                # accepted message at once; retries go back in line.
                nonlocal accepted
                if position in judged:
                    return
                judged.add(position)
                index = indices[position]
                if _retryable(outcome) and index not in retried:
                    retried.add(index)
                    pending.append(index)
                else:
                    accepted += isinstance(outcome, tuple)
                    settle(index, outcome)

            try:
                results = await client.send_messages([items[i] for i in indices], on_result=judge)
            except SMTPException as exc:  # the connection failed before sending
                results = [exc] * len(indices)
            for position, outcome in enumerate(results):
                judge(position, outcome)
            return accepted

        workers = min(self.max_connections, math.ceil(total / chunk))
        alive = workers

        async def worker() -> None:
            nonlocal alive
            while pending:
                try:
                    entry = await self._acquire()
                except SMTPPoolClosedError:
                    raise
                except SMTPException as exc:
                    alive -= 1
                    if not alive:
                        # No connection at all can be had: what is left fails alike.
                        while pending:
                            settle(pending.popleft(), exc)
                    return  # the other workers go on with what is left
                client = entry.client
                assert isinstance(client, SMTP)
                sent = 0
                try:
                    # At least one chunk per connection acquired, even if it was lost
                    # already: the chunk's messages are then charged their attempt.
                    while pending:
                        indices = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                        sent += await run_chunk(client, indices)
                        if not client.is_connected:
                            break
                finally:
                    await self._settle(self._release(entry, reusable=True, sent=sent))

        await asyncio.gather(*(worker() for _ in range(workers)))
        final: list[Outcome | Exception] = []
        for outcome in outcomes:
            assert outcome is not None
            final.append(outcome)
        return final

    # Closing --------------------------------------------------------------------

    async def close(self) -> None:
        """Refuse new work, then QUIT every connection.

        Waiting callers get :class:`SMTPPoolClosedError`. Idle connections
        are QUIT at once; connections in use are QUIT as soon as their
        current send finishes (each send is bounded by its own timeouts),
        and this waits for all of them.
        """
        if self._closed:
            await self._drain_closing()
            return
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._planner.waiting:
            token = self._planner.waiting.popleft()
            assert isinstance(token, _Waiter)
            if not token.future.done():
                token.future.set_exception(SMTPPoolClosedError("The pool was closed"))
        if self._loop is not None:
            for entry in self._planner.close_all_idle():
                self._close_entry(entry)
        await self._drain_closing()

    async def _drain_closing(self) -> None:
        """Wait until every connection, busy or closing, has left the pool."""
        while self._planner.entries:
            self._released.clear()
            if self._closing_tasks:
                await asyncio.gather(*self._closing_tasks, return_exceptions=True)
            else:  # a send still runs; its release will close the connection
                await self._released.wait()
