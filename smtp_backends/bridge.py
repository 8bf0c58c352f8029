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
* The loop is asyncio's, or uvloop's when asked for (``Bridge(loop="uvloop")``,
  or ``SMTP_BACKENDS_LOOP=uvloop`` in the environment for the process's
  bridge) and installed (the ``uvloop`` extra).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import importlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

from .errors import SMTPPoolClosedError, SMTPTimeoutError
from .pool import SMTPPool

__all__ = (
    "LOOP_ENVIRONMENT_VARIABLE",
    "Bridge",
    "get_bridge",
    "run_async",
    "run_sync",
    "shared_pool",
    "shutdown",
)

T = TypeVar("T")

logger = logging.getLogger("smtp_backends")

#: The environment variable naming the process bridge's event loop: ``asyncio``
#: (the default) or ``uvloop``.
LOOP_ENVIRONMENT_VARIABLE = "SMTP_BACKENDS_LOOP"
_LOOPS = ("asyncio", "uvloop")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# How long Bridge.run waits, after its timeout, for the cancelled work to stop.
_CANCEL_GRACE = 5.0


def _loop_factory(name: str | None) -> tuple[str, LoopFactory]:
    """The loop to run: ``name``, else the environment's choice, else asyncio's.

    Raises:
        ValueError: an unknown loop name (in the argument or the environment).
        ModuleNotFoundError: ``name="uvloop"`` and uvloop is not installed.
    """
    explicit = name is not None
    if name is None:
        name = os.environ.get(LOOP_ENVIRONMENT_VARIABLE, "").strip().lower() or "asyncio"
        where = f"{LOOP_ENVIRONMENT_VARIABLE}={name!r}"
    else:
        where = f"loop={name!r}"
    if name not in _LOOPS:
        raise ValueError(f"{where}: the event loop must be one of {', '.join(_LOOPS)}")
    if name == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if explicit:
                from .extras import install_hint

                raise ModuleNotFoundError(
                    f"loop='uvloop' needs uvloop: {install_hint('uvloop')}",
                    name="uvloop",
                ) from None
            # Asked for by the environment (which may serve other programs too):
            # run on asyncio's loop rather than not at all, and say so.
            logger.warning("%s, but uvloop is not installed: using asyncio's loop", where)
            return "asyncio", asyncio.new_event_loop
        factory: LoopFactory = uvloop.new_event_loop
        return "uvloop", factory
    return "asyncio", asyncio.new_event_loop


class Bridge:
    """An event loop in a daemon thread, and the pools that live on it.

    Args:
        name: the loop thread's name.
        loop: ``"asyncio"`` or ``"uvloop"``; None (the default) reads
            ``SMTP_BACKENDS_LOOP`` from the environment, else asyncio.

    Raises:
        ValueError: an unknown loop name.
        ModuleNotFoundError: ``loop="uvloop"`` without uvloop installed.
    """

    def __init__(self, name: str = "smtp-backends-bridge", *, loop: str | None = None) -> None:
        self._name = name
        #: The kind of event loop the bridge runs: ``"asyncio"`` or ``"uvloop"``.
        self.loop_name, self._loop_factory = _loop_factory(loop)
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
            loop = self._loop_factory()
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
            SMTPTimeoutError: ``timeout`` passed first (the work is cancelled,
                and has stopped, its connection closed, before this is raised).
            Whatever the coroutine raised, with its traceback.
        """
        if self.in_loop_thread():
            coroutine.close()
            raise RuntimeError("Bridge.run() called on the bridge's own loop; await instead")
        future, cancel, finished = self._start_tracked(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own timeout error (3.11+: the same class)
                raise
            cancel()
            # The cancellation reaches the loop asynchronously: until the work has
            # seen it, a reply arriving meanwhile could still complete it. Whoever
            # hears of the timeout may rely on the work having stopped (a send's
            # connection closed), so wait for that, within reason.
            finished.wait(_CANCEL_GRACE)
            raise SMTPTimeoutError(
                f"Timed out after {timeout} s waiting for the mail bridge"
            ) from None
        except concurrent.futures.CancelledError:
            raise SMTPPoolClosedError(
                "The mail bridge shut down before the call finished"
            ) from None

    def _start_tracked(
        self, coroutine: Coroutine[Any, Any, T]
    ) -> tuple[concurrent.futures.Future[T], Callable[[], None], threading.Event]:
        """Run ``coroutine`` as a task on the loop, in an empty context.

        Returns its result as a thread-safe future, a thread-safe way to
        cancel it, and an event set once the task has ended (cancelled or not).
        """
        loop = self.loop
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        finished = threading.Event()
        tasks: list[asyncio.Task[T]] = []
        cancelled = False

        def settle(task: asyncio.Task[T]) -> None:
            try:
                if task.cancelled():
                    future.cancel()
                elif task.exception() is not None:
                    future.set_exception(task.exception())
                else:
                    future.set_result(task.result())
            finally:
                finished.set()

        def start() -> None:
            task = loop.create_task(coroutine)
            tasks.append(task)
            task.add_done_callback(settle)
            if cancelled:  # given up before it started: it ends at its first step
                task.cancel()

        def cancel_on_loop() -> None:
            nonlocal cancelled
            cancelled = True
            for task in tasks:
                task.cancel()

        def cancel() -> None:
            loop.call_soon_threadsafe(cancel_on_loop)

        # Created in an empty context: see submit().
        loop.call_soon_threadsafe(start, context=contextvars.Context())
        return future, cancel, finished

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
