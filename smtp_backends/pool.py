"""SMTPPool: a bounded set of SMTP connections, reused across sends.

Decisions (who gets which connection, which to open or close) are made by
the pure :class:`~smtp_backends.pool_planner.PoolPlanner`; this module does
the I/O around them: connecting lazily (greeting, EHLO, STARTTLS and AUTH
once per connection), checking a connection that sat idle before reusing
it, QUITting connections that expire, and spreading batches, whose
scheduling (each message's account, what goes back in line, when to stop
reconnecting) is the pure :class:`~smtp_backends.pool_planner.BatchBook`'s.

A connection whose state is in doubt is never returned: the client closes
itself on any timeout, cancellation or protocol error, and the pool takes
back only connections that are still connected.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from . import event_hooks
from . import events as _events
from .client import SMTP, BatchItem, Default
from .config import ConnectionConfig
from .deadline import SendClock
from .delivery import ResultCallback
from .errors import (
    SMTPException,
    SMTPPoolClosedError,
    SMTPPoolTimeoutError,
    SMTPServerDisconnected,
)
from .message import AnyMessage
from .outcomes import resend_now
from .pool_planner import (
    BatchBook,
    EntryState,
    FinalCallback,
    JudgedCallback,
    Plan,
    PoolEntry,
    PoolPlanner,
    Share,
    check_batch_limits,
)
from .protocol.transaction import Outcome
from .transport import logger

__all__ = ("SMTPPool",)

T = TypeVar("T")

#: Most messages one connection takes from a batch at a time.
_MAX_CHUNK = 500

#: Progress callback of :meth:`SMTPPool.send_messages`: (done, total).
ProgressCallback = Callable[[int, int], object]


# Whether a failed send may go out again at once on another connection: the
# sending layer's one classifier decides (lost before the end of data only).
_retryable = resend_now


Entry = PoolEntry[SMTP]


def _ledger_judge(
    ledger: event_hooks.Ledger, items: Sequence[BatchItem], indices: list[int]
) -> JudgedCallback:
    """Report a share's judgements to the events ledger (only while events are on)."""

    def judged(position: int, outcome: Outcome | Exception, retried: bool) -> None:
        ledger.judged(position, outcome, retried, items[indices[position]])

    return judged


class _Waiter:
    """A caller waiting for a connection (hashable token for the planner)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Entry]) -> None:
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
        max_attempts: real attempts per message of :meth:`send_messages` (a
            reply refused it for now, or its content left before the
            connection failed); one that only waited behind a failure is not
            charged.
        max_reconnects: connections in a row that :meth:`send_messages` may
            lose without getting any message further (after the first such
            loss) before it stops and fails what is left.
        **options: the connection keywords of :class:`smtp_backends.SMTP`
            (hostname, port, username, password, use_tls, start_tls,
            timeout, send_timeout, ...), validated once here. ``send_timeout``
            bounds a whole :meth:`send_message` (waiting for a connection,
            connecting and the transaction) and each message's transaction in
            :meth:`send_messages`.

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
        max_attempts: int = 3,
        max_reconnects: int = 3,
        **options: Any,
    ) -> None:
        self.config = ConnectionConfig(**options)
        check_batch_limits(max_attempts, max_reconnects)
        self.max_attempts = max_attempts
        self.max_reconnects = max_reconnects
        self._planner: PoolPlanner[SMTP, _Waiter] = PoolPlanner(
            max_connections, max_messages_per_connection, idle_timeout
        )
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

    def _apply(self, plan: Plan[SMTP, _Waiter]) -> None:
        for token, entry in plan.assign:
            if token.future.done():  # the waiter gave up in the meantime: give it back
                self._planner.release(entry, self._now(), reusable=entry.client is not None)
                self._apply(self._planner.step(self._now()))
            else:
                token.future.set_result(entry)
        for entry in plan.close:
            if _events.bus.active:
                event_hooks.recycled(self.config, "idle", entry.messages_sent)
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

    def _close_entry(self, entry: Entry) -> asyncio.Task[None] | None:
        """Close a CLOSING entry (QUIT in the background); it leaves the pool after.

        Returns the closing task, for a caller that must not return before a
        dead connection's socket is gone.
        """
        client = entry.client
        if client is None:
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

    async def _quit(self, entry: Entry, client: SMTP) -> None:
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

    def _discard(self, entry: Entry) -> None:
        self._planner.discard(entry)
        self._released.set()

    async def _acquire(self, clock: SendClock | None = None) -> tuple[Entry, SMTP]:
        """An entry and its ready client; waiting and connecting count against ``clock``."""
        if self._closed:
            raise SMTPPoolClosedError("The pool is closed")
        loop = self._bound_loop()
        asked = time.perf_counter() if _events.bus.active else 0.0
        waiter = _Waiter(loop.create_future())
        self._planner.request(waiter)
        self._step()
        wait = self.acquire_timeout if clock is None else clock.cap(self.acquire_timeout)
        timer = (
            loop.call_later(
                wait,
                self._give_up,
                waiter,
                clock.limit if clock is not None and wait != self.acquire_timeout else None,
            )
            if wait is not None and not waiter.future.done()
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
            if clock is None:
                client = await self._make_ready(entry)
            else:
                client = await clock.bound(self._make_ready(entry), connecting=True)
        except BaseException:
            self._planner.release(entry, self._now(), reusable=False)
            closing = self._close_entry(entry)
            if closing is None:  # never opened: its slot is free now
                self._step()
            await self._settle(closing)  # else free once its socket is gone
            raise
        if asked:
            event_hooks.acquired(self.config, entry, asked, self._planner.active_count)
        return entry, client

    def _give_up(self, waiter: _Waiter, send_timeout: float | None = None) -> None:
        """The acquire timeout (or the send's ``send_timeout``) passed: stop waiting."""
        if not waiter.future.done() and self._planner.cancel(waiter):
            limit = (
                f"{self.acquire_timeout} s"
                if send_timeout is None
                else f"the send's send_timeout ({send_timeout} s)"
            )
            waiter.future.set_exception(
                SMTPPoolTimeoutError(
                    f"No connection became free within {limit} "
                    f"({self._planner.max_connections} in use)"
                )
            )

    async def _make_ready(self, entry: Entry) -> SMTP:
        """Open a new entry's connection, or check one that sat idle; return it."""
        client = entry.client
        if client is not None and client.is_connected:
            if self._now() - entry.idle_since < self.check_after:
                return client
            try:
                await client.noop()
                return client
            except (SMTPException, OSError):
                logger.debug("pool: connection #%d failed its check; replacing it", entry.number)
                client.close()
                if _events.bus.active:
                    event_hooks.recycled(self.config, "check-failed", entry.messages_sent)
        client = SMTP.from_config(self.config)
        entry.client = client
        await client.connect()
        self.connections_opened += 1
        return client

    def _release(self, entry: Entry, *, reusable: bool, sent: int = 0) -> asyncio.Task[None] | None:
        """Give ``entry`` back; returns the task closing it if its connection failed."""
        client = entry.client
        connected = client is not None and client.is_connected
        healthy = reusable and connected and not self._closed
        self._planner.release(entry, self._now(), reusable=healthy, sent=sent)
        if event_hooks.lent:
            event_hooks.released(self.config, entry, self._planner.active_count)
        closing = None
        if entry.state is EntryState.CLOSING:
            if healthy and _events.bus.active:
                event_hooks.recycled(self.config, "max-messages", entry.messages_sent)
            closing = self._close_entry(entry)
        self._released.set()
        self._step()
        return None if connected else closing

    async def _with_client(
        self,
        operation: Callable[[SMTP, float | Default | None], Awaitable[T]],
        send_timeout: float | Default | None,
    ) -> T:
        """Run ``operation(client, send_timeout)`` on a pooled client.

        Retried once, on another connection, when a reused connection was
        lost before the end of data (the server cannot have the message).
        ``send_timeout`` (the configured one by default) bounds it all.
        """
        limit = self.config.send_timeout if isinstance(send_timeout, Default) else send_timeout
        clock = SendClock.starting_now(limit)
        for attempt in (1, 2):
            entry, client = await self._acquire(clock)
            reused = entry.messages_sent > 0
            sent = 0
            ledger = event_hooks.open_ledger(self.config) if _events.bus.active else None
            try:
                if clock is not None and clock.expired():
                    raise clock.not_sent()
                result = await operation(
                    client, send_timeout if clock is None else clock.remaining()
                )
                sent = 1
                return result
            except SMTPException as exc:
                # With failover, a fresh connection may go to another host; with a
                # rate limit, a throttled message waits and goes again.
                config = self.config
                elsewhere = reused or config.failover is not None or config.rate_limit is not None
                retry = attempt == 1 and elsewhere and _retryable(exc)
                if ledger is not None:
                    ledger[0].judged(0, exc, retry)
                if retry:
                    logger.debug(
                        "pool: connection #%d lost before the message; retrying", entry.number
                    )
                    continue
                raise
            finally:
                if ledger is not None:
                    event_hooks.close_ledger(ledger[1])
                await self._settle(self._release(entry, reusable=True, sent=sent))
        raise AssertionError("unreachable")  # pragma: no cover

    # Sending ------------------------------------------------------------------

    async def send_message(self, message: AnyMessage, /, **kwargs: Any) -> Outcome:
        """Send one message object over a pooled connection.

        Takes and returns what :meth:`SMTP.send_message` does; its
        ``send_timeout`` (the pool's by default) also bounds waiting for a
        connection and connecting.
        """
        send_timeout = kwargs.pop("send_timeout", Default.token)
        if _events.bus.active and not event_hooks.in_scope():
            return await event_hooks.scoped(
                self.config,
                [message],
                lambda _: self.send_message(message, send_timeout=send_timeout, **kwargs),
                batch=False,
            )
        return await self._with_client(
            lambda client, left: client.send_message(message, send_timeout=left, **kwargs),
            send_timeout,
        )

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        **kwargs: Any,
    ) -> Outcome:
        """Send raw message data over a pooled connection; as :meth:`SMTP.sendmail`.

        ``send_timeout`` as for :meth:`send_message`.
        """
        send_timeout = kwargs.pop("send_timeout", Default.token)
        if _events.bus.active and not event_hooks.in_scope():
            return await event_hooks.scoped(
                self.config,
                [(sender, recipients, message)],
                lambda _: self.sendmail(
                    sender, recipients, message, send_timeout=send_timeout, **kwargs
                ),
                batch=False,
            )
        return await self._with_client(
            lambda client, left: client.sendmail(
                sender, recipients, message, send_timeout=left, **kwargs
            ),
            send_timeout,
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
        :meth:`SMTP.send_messages`). Each message has its own account (see
        :class:`~smtp_backends.pool_planner.BatchBook`): it is charged an
        attempt only when a reply refused it for now (4xx) or its content
        left before the connection failed, and is tried again, on any
        connection, until ``max_attempts``; the messages that were waiting
        behind a failed one go back to the front of the line uncharged. The
        batch goes on while the server accepts connections, and stops after
        ``max_reconnects`` lost connections in a row that got no message
        further. A message whose outcome is unknown is never resent. Every
        message ends sent, refused, failed after its attempts (or when the
        batch stopped), or unknown.

        Args:
            messages: message objects, ``(sender, recipients, data)`` tuples, or
                callables returning one (see :meth:`SMTP.send_messages`); a
                callable is called again if its message is tried again.
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
        if _events.bus.active and not event_hooks.in_scope():
            return await event_hooks.scoped(
                self.config,
                items,
                lambda told: self.send_messages(items, on_progress=on_progress, on_result=told),
                batch=True,
                on_result=on_result,
            )
        total = len(items)
        if not total:
            return []
        book = BatchBook(total, self.max_attempts, self.max_reconnects)
        # One pipelined run per connection: each chunk ends with one round trip
        # that carries no next message, so chunks are as large as an even share
        # (capped, so that work is rebalanced now and then).
        chunk = max(1, min(_MAX_CHUNK, math.ceil(total / self.max_connections)))
        changed = asyncio.Event()  # something went back in line, or the batch ended
        report: FinalCallback | None = None
        if on_result is not None or on_progress is not None:
            done = 0

            def report(index: int, outcome: Outcome | Exception) -> None:
                # Told by each share as it settles a message (never per message
                # when nobody asked for it).
                nonlocal done
                done += 1
                if on_result is not None:
                    try:
                        on_result(index, outcome)
                    except Exception:  # as in SMTP.send_messages: logged, never fatal
                        logger.exception("on_result callback failed for message %d", index)
                if on_progress is not None:
                    on_progress(done, total)

        def stop(error: Exception) -> None:
            for index in book.give_up():
                outcome = book.latest[index] or error
                book.outcomes[index] = outcome
                if report is not None:
                    report(index, outcome)
            changed.set()

        async def run_chunk(client: SMTP, indices: list[int]) -> tuple[int, bool]:
            """Send one share on ``client``: (messages accepted, whether any got further)."""
            ledger, token = (
                event_hooks.open_ledger(self.config) if _events.bus.active else (None, None)
            )
            share = Share(
                book,
                indices,
                lambda: client.is_connected,
                report,
                None if ledger is None else _ledger_judge(ledger, items, indices),
            )
            try:
                # share.judge settles each message as its reply arrives (the
                # others go back in line), even when nobody asked for on_result:
                # on_result hears of an accepted message at once, and progress on
                # this connection resets the count of fruitless connections at
                # once, so that failures elsewhere cannot stop a batch that moves.
                results = await client._send_batch(
                    [items[i] for i in indices],
                    Default.token,
                    Default.token,
                    share.judge,
                    share.content_left.add,
                )
            except SMTPException as exc:  # the connection failed before sending
                results = [exc] * len(indices)
            finally:
                if token is not None:
                    event_hooks.close_ledger(token)
            if not share.complete:  # the sending layer returned what it did not tell
                for position, outcome in enumerate(results):
                    share.judge(position, outcome)
            book.chunk_done()
            changed.set()
            return share.accepted, share.progressed

        workers = min(self.max_connections, math.ceil(total / chunk))
        limit = self._planner.max_messages_per_connection
        alive = workers

        async def worker() -> None:
            nonlocal alive
            while not book.finished:
                if not book.pending:
                    # The rest is in flight elsewhere; some of it may come back.
                    changed.clear()
                    await changed.wait()
                    continue
                try:
                    entry, client = await self._acquire()
                except SMTPPoolClosedError:
                    raise
                except SMTPException as exc:
                    alive -= 1
                    if not alive:
                        # No connection at all can be had: what is left fails alike.
                        stop(exc)
                    return  # the other workers go on with what is left
                sent = 0
                progressed = False
                # max_messages_per_connection holds within a batch too: the
                # connection goes back (and is recycled) once it has had its share.
                allowance = limit - entry.messages_sent if limit is not None else sys.maxsize
                try:
                    while (
                        book.pending and client.is_connected and not self._closed and allowance > 0
                    ):
                        indices = book.take(min(chunk, allowance))
                        allowance -= len(indices)
                        accepted, moved = await run_chunk(client, indices)
                        sent += accepted
                        progressed = progressed or moved
                finally:
                    # A failed connection's slot stays counted until its socket is gone.
                    await self._settle(self._release(entry, reusable=True, sent=sent))
                lost = book.pending and not client.is_connected
                if lost and not book.connection_lost(progressed):
                    logger.debug("pool: the batch stops: connections keep failing")
                    stop(
                        SMTPServerDisconnected(
                            f"Not sent: {self.max_reconnects + 1} connections in a row were "
                            "lost before any message got through"
                        )
                    )
                    return

        tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed (the pool closed) or we were cancelled
                task.cancel()
            raise
        finally:
            changed.set()
        final: list[Outcome | Exception] = []
        for outcome in book.outcomes:
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
