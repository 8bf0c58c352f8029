"""Running async work for sync callers, on one long-lived event loop per process.

Sync code (WSGI views, Flask, command-line tools, Celery workers) cannot
keep an asyncio connection between calls: ``asyncio.run`` and asgiref's
``async_to_sync`` start a fresh loop each time, and a connection belongs to
the loop that opened it. The bridge owns one event loop in a daemon thread,
started lazily; pools created through :func:`shared_pool` live there and
their connections are reused across calls and requests.

* :func:`run_sync` runs a coroutine there and blocks for the result (with an
  optional timeout); exceptions arrive with their tracebacks. It works from
  plain threads and from inside a running event loop of another thread (it
  blocks that loop only for the call; prefer :func:`run_async` there).
* :func:`run_async` awaits the same from any other event loop.
* After ``fork()`` the child starts a bridge of its own and never touches the
  parent's loop, sockets or pools.
* At interpreter exit the pools are closed (QUIT) and the loop stopped.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

from .errors import SMTPPoolClosedError, SMTPTimeoutError
from .pool import SMTPPool

__all__ = ("Bridge", "get_bridge", "run_async", "run_sync", "shared_pool", "shutdown")

T = TypeVar("T")


class Bridge:
    """An event loop in a daemon thread, and the pools that live on it."""

    def __init__(self, name: str = "smtp-backends-bridge") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pools: dict[Hashable, SMTPPool] = {}
        self.pid = os.getpid()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Bridge {state}, {len(self._pools)} pools>"

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's event loop, started on first use."""
        with self._lock:
            if self._loop is None or not self.running:
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        ready = threading.Event()
        loops: list[asyncio.AbstractEventLoop] = []

        def serve() -> None:
            # Created here, not in the caller's thread: the loop's own handles
            # would otherwise keep the caller's context variables (a request,
            # an app) alive for the life of the process.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loops.append(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(
            target=contextvars.Context().run, args=(serve,), name=self._name, daemon=True
        )
        thread.start()
        ready.wait()
        self._loop, self._thread = loops[0], thread

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the bridge's own thread."""
        return threading.current_thread() is self._thread

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coroutine`` on the bridge loop; returns a thread-safe future.

        The work runs in an empty context: pooled connections outlive the call,
        and must not keep the caller's context variables (its request) alive.
        """
        loop = self.loop
        return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coroutine, loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the bridge loop and block until it is done.

        Raises:
            RuntimeError: called from the bridge's own thread (it would wait
                for itself forever).
            SMTPTimeoutError: ``timeout`` passed first (the work is cancelled).
            Whatever the coroutine raised, with its traceback.
        """
        if self.in_loop_thread():
            coroutine.close()
            raise RuntimeError("Bridge.run() called on the bridge's own loop; await instead")
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own timeout error (3.11+: the same class)
                raise
            future.cancel()
            raise SMTPTimeoutError(
                f"Timed out after {timeout} s waiting for the mail bridge"
            ) from None
        except concurrent.futures.CancelledError:
            raise SMTPPoolClosedError(
                "The mail bridge shut down before the call finished"
            ) from None

    async def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the bridge loop from any event loop."""
        if self.in_loop_thread():
            return await coroutine
        return await asyncio.wrap_future(self.submit(coroutine))

    def pool(self, key: Hashable, factory: Callable[[], SMTPPool]) -> SMTPPool:
        """The process's pool for ``key``, created by ``factory`` on first use."""
        with self._lock:
            pool = self._pools.get(key)
            if pool is None or pool.closed:
                pool = self._pools[key] = factory()
            return pool

    def close(self, timeout: float = 10.0) -> None:
        """Close every pool (QUIT), then stop the loop and its thread."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or not thread.is_alive():
            return

        async def close_pools() -> None:
            await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)
            # End the calls still running, as asyncio.run does, so that no
            # caller waits for a loop that is about to stop.
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(close_pools(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


_bridge: Bridge | None = None
_bridge_lock = threading.Lock()
# Objects inherited from the parent across fork() are kept here, never used
# and never collected: collecting them could close sockets the parent owns.
_inherited: list[Bridge] = []


def get_bridge() -> Bridge:
    """The process's bridge (a new one in a forked child)."""
    global _bridge
    with _bridge_lock:
        if _bridge is None or _bridge.pid != os.getpid():
            if _bridge is not None:
                _inherited.append(_bridge)
            _bridge = Bridge()
        return _bridge


def _after_fork_in_child() -> None:
    global _bridge, _bridge_lock
    _bridge_lock = threading.Lock()  # the parent may have held it while forking
    if _bridge is not None:
        _inherited.append(_bridge)
        _bridge = None


def shutdown(timeout: float = 10.0) -> None:
    """Close the process's pools and stop its bridge (run at interpreter exit)."""
    global _bridge
    with _bridge_lock:
        bridge, _bridge = _bridge, None
    if bridge is not None and bridge.pid == os.getpid():
        bridge.close(timeout)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(shutdown)


def run_sync(
    function: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> T:
    """Call the async ``function(*args, **kwargs)`` on the bridge and return its result.

    Raises:
        SMTPTimeoutError: ``timeout`` seconds passed first.
        Whatever the function raised.
    """

    async def call() -> T:
        return await function(*args, **kwargs)

    return get_bridge().run(call(), timeout)


async def run_async(function: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """Await the async ``function(*args, **kwargs)`` on the bridge from any loop."""

    async def call() -> T:
        return await function(*args, **kwargs)

    return await get_bridge().run_async(call())


def shared_pool(key: Hashable, factory: Callable[[], SMTPPool]) -> SMTPPool:
    """The process-wide pool for ``key`` (e.g. the connection settings).

    Use it only through :func:`run_sync` / :func:`run_async`: it lives on
    the bridge loop.
    """
    return get_bridge().pool(key, factory)
