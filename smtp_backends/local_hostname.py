"""This host's name for EHLO when none is configured: looked up once per process.

``socket.getfqdn()`` may block on a resolver, so it runs in a thread of its own,
started before the first connection opens (:func:`prefetch_local_hostname`);
connections opened together (a pool's) share that one lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from .config import ConnectionConfig
from .protocol import commands

__all__ = ("default_local_hostname", "prefetch_local_hostname")

_fqdn: str | None = None
# The lookup in flight and its event loop: connections opened together (a
# pool's) share one lookup instead of each starting a thread for its own.
_fqdn_lookup: tuple[asyncio.AbstractEventLoop, asyncio.Future[str]] | None = None


def _lookup_fqdn() -> str:
    name = socket.getfqdn()
    try:
        commands.ehlo_name(name)
        name.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        name = "localhost"
    return name


def _start_fqdn_lookup() -> asyncio.Future[str]:
    """The FQDN lookup in flight on this loop, started now if there is none."""
    global _fqdn_lookup
    loop = asyncio.get_running_loop()
    if _fqdn_lookup is None or _fqdn_lookup[0] is not loop or _fqdn_lookup[1].cancelled():
        future: asyncio.Future[str] = loop.create_future()
        # One short-lived thread of its own, not the loop's default executor:
        # the lookup happens once per process, and creating an executor for
        # it (and wrapping its future) cost about as much CPU again as the
        # thread. A daemon, so that a slow resolver never holds up the end
        # of asyncio.run() or of the interpreter.
        threading.Thread(
            target=_look_up_for, args=(loop, future), name="smtp_backends-fqdn", daemon=True
        ).start()
        _fqdn_lookup = (loop, future)
    return _fqdn_lookup[1]


def _look_up_for(loop: asyncio.AbstractEventLoop, future: asyncio.Future[str]) -> None:
    """In the lookup thread: the FQDN, handed to ``future`` on its loop."""
    try:
        result: str | BaseException = _lookup_fqdn()
    except BaseException as exc:  # reported to the waiters, as an executor would
        result = exc
    # RuntimeError: the loop closed meanwhile, and nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle_lookup, future, result)


def _settle_lookup(future: asyncio.Future[str], result: str | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def prefetch_local_hostname(config: ConnectionConfig) -> None:
    """Start looking this host's FQDN up if the EHLO to come will need it.

    Called before connecting: the lookup then runs while the connection
    opens and the greeting comes.
    """
    if _fqdn is None and config.local_hostname is None:
        _start_fqdn_lookup()


async def default_local_hostname() -> str:
    """This host's FQDN for EHLO, looked up once per process off the event loop."""
    global _fqdn, _fqdn_lookup
    if _fqdn is None:
        # Shielded: one waiter's cancellation must not cancel the others' lookup.
        _fqdn = await asyncio.shield(_start_fqdn_lookup())
        _fqdn_lookup = None
    return _fqdn
