"""The Mailer: the process's pooled sending for one :class:`MailerSettings` value.

Every adapter (Django, Flask, Celery, ASGI) sends through a :class:`Mailer`:

* **One keying rule.** Pools live on the :mod:`smtp_backends.bridge` loop,
  keyed by ``(scope, settings, lane)``. Equal settings share connections
  across requests, threads and backend instances (Django 6.1 builds a new
  backend for every ``mailers[alias]`` access: nothing lives on them). A
  ``scope`` (a Flask app's state, a Celery queue) keeps pools apart.
* **Two lanes.** A list sent with ``keep_order`` goes over one connection of
  its own lane, in order; single messages, and lists without
  ``keep_order``, use up to ``pool_size`` connections.
* **Fork safety.** The bridge is per process: a forked child makes its own
  pools and never touches its parent's sockets (they are kept, unused, so
  that collecting them cannot disturb the parent).
* **Retiring.** A :class:`MailerSlot` (one per Flask app, ASGI app...)
  retires its previous Mailer when the settings change: its pools close in
  the background, connections in use after their current send.
* **Sync and async twins of one coroutine.** :meth:`Mailer.send` (for sync
  callers: WSGI views, Celery workers) and :meth:`Mailer.asend` (any event
  loop, including the fresh one asgiref or Flask starts per async view) both
  run :meth:`Mailer.deliver` on the bridge loop. Items may be lazy
  (callables rendering a message as the previous one is on the wire), and
  ``on_result(index, outcome)`` hears of each message as its reply arrives.

Policies: the settings' policy options (DKIM, OAuth 2.0, rate limits,
failover, proxy, DSN, REQUIRETLS) are checked with the settings; the
objects that hold state (a rate limiter's buckets, failover cool-downs, an
OAuth provider's token cache) are made here, once per process and settings
value (:func:`live_connection`), and reach the pools and connections as
their :class:`~smtp_backends.ConnectionConfig`: two equal settings share one
limiter and one failover state. With every policy off, nothing is made and
the settings' own connection config is used. An event hook is a callback
called in :meth:`Mailer.deliver` with each item's outcome (where
``on_result`` is).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Union

from . import addresses, event_hooks
from . import events as _events
from .bridge import get_bridge, run_async, run_sync, shared_pool
from .client import SMTP, BatchItem
from .config import ConnectionConfig
from .delivery import ResultCallback
from .errors import SMTPException, SMTPProtocolError, SMTPResponseException, SMTPServerDisconnected
from .pool import SMTPPool
from .protocol.dsn import DSN
from .protocol.transaction import Outcome
from .settings import MailerSettings

__all__ = ("Mailer", "MailerSlot", "Outgoing", "addr_spec", "get_mailer", "live_connection")

#: What a Mailer sends per message: a batch item, or an :class:`Outgoing`.
Item = Union[BatchItem, "Outgoing"]
#: The outcome of one message: ``(refused recipients, reply text)`` or its exception.
Result = Union[Outcome, Exception]  # noqa: UP007

# Objects inherited from the parent across fork() are kept here, never used
# and never collected: collecting them could close sockets the parent owns.
_inherited: list[object] = []


def addr_spec(address: str) -> str:
    """The bare address of one header address, or ``address`` stripped if it is not one.

    Lenient, for callers that leave the refusal to the protocol core (which
    refuses what is not one address). Adapters use the strict form,
    :func:`smtp_backends.addresses.addr_spec`, the one parser of them all.
    """
    try:
        return addresses.addr_spec(address)
    except (ValueError, TypeError):
        return address.strip()


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message with ESMTP parameters: what :meth:`SMTP.sendmail` takes.

    Attributes:
        sender / recipients / data: the envelope and the exact bytes.
        mail_options / rcpt_options: ESMTP parameters of MAIL FROM and of
            every RCPT TO.
        dsn: this message's delivery status notifications (RFC 3461),
            instead of the settings' ``dsn`` (None: the settings').
        requiretls: REQUIRETLS for this message (RFC 8689; None: the settings').
    """

    sender: str
    recipients: Sequence[str]
    data: bytes | str
    mail_options: Sequence[str] = ()
    rcpt_options: Sequence[str] = ()
    dsn: DSN | None = None
    requiretls: bool | None = None


@dataclasses.dataclass
class _Live:
    """A pool this Mailer made, and where it lives (for closing it later)."""

    pid: int
    pool: SMTPPool
    loop: asyncio.AbstractEventLoop


_closing: set[asyncio.Task[None]] = set()

# The connection configs with their stateful policy objects, one per settings
# value in this process (a forked child makes its own: a parent's limiter or
# token cache may hold a lock taken at the fork).
_live_configs: dict[MailerSettings, ConnectionConfig] = {}
_live_lock = threading.Lock()
_live_pid = os.getpid()


def live_connection(settings: MailerSettings) -> ConnectionConfig:
    """``settings.connection`` with the objects of its stateful policies (a rate
    limiter, failover cool-downs, an OAuth token provider), made once per process
    and settings value; the settings' own config when there are none."""
    global _live_pid
    stateful = settings.stateful_policies
    if not stateful:
        return settings.connection
    with _live_lock:
        if _live_pid != os.getpid():
            _inherited.append(list(_live_configs.values()))
            _live_configs.clear()
            _live_pid = os.getpid()
        config = _live_configs.get(settings)
        if config is None:
            built = {keyword: spec.build() for keyword, spec in stateful.items()}
            config = _live_configs[settings] = settings.connection.replace(**built)
        return config


def _start_close(pool: SMTPPool) -> None:
    task = asyncio.get_running_loop().create_task(pool.close())
    _closing.add(task)  # the loop holds tasks weakly
    task.add_done_callback(_closing.discard)


def _drop(client: SMTP) -> None:
    """Close ``client`` at once (no QUIT); never raises."""
    # RuntimeError: its loop is gone (the bridge was shut down): nothing left to close.
    with contextlib.suppress(RuntimeError):
        client.close()


async def _connect(client: SMTP) -> None:
    try:
        await client.connect()
    except BaseException:
        _drop(client)
        raise


async def _quit(client: SMTP, strict: bool) -> None:
    # Whatever the reply to QUIT (smtplib does not check it), a lost connection
    # or a TLS error, the connection is just closed; a reply that breaks the
    # protocol is raised when ``strict``.
    try:
        await client.quit()
    except SMTPProtocolError:
        _drop(client)
        if strict:
            raise
    except (OSError, SMTPResponseException, SMTPServerDisconnected, TimeoutError):
        _drop(client)


class Mailer:
    """Sends with one :class:`MailerSettings` over the process's pooled connections.

    Get one with :func:`get_mailer` (one per settings and scope in the
    process); building one directly is cheap too, as its pools are found by
    key on the bridge.

    Args:
        settings: what to send with.
        scope: keeps these pools apart from other scopes' (None: shared by
            everything in the process with equal settings).
        pool_factory: make the pools yourself (an :class:`SMTPPool` with
            settings of its own); ``settings`` then give only the policies.
    """

    def __init__(
        self,
        settings: MailerSettings,
        *,
        scope: Hashable = None,
        pool_factory: Callable[[], SMTPPool] | None = None,
    ) -> None:
        self.settings = settings
        self.scope = scope
        self._pool_factory = pool_factory
        # Replaced whole, never changed in place: readers need no lock.
        self._live: dict[bool, _Live] = {}
        self._connection: tuple[int, ConnectionConfig] | None = None

    def __repr__(self) -> str:
        s = self.settings
        return f"<Mailer {s.host}:{s.connection.effective_port} scope={self.scope!r}>"

    @property
    def connection(self) -> ConnectionConfig:
        """The connection config this Mailer sends with: the settings', with the
        process's objects of their stateful policies (see :func:`live_connection`)."""
        known = self._connection
        if known is None or known[0] != os.getpid():
            known = self._connection = (os.getpid(), live_connection(self.settings))
        return known[1]

    # Pools -------------------------------------------------------------------

    def make_pool(self, *, ordered: bool = False) -> SMTPPool:
        """A new pool for these settings (one connection for the ordered lane)."""
        if self._pool_factory is not None:
            return self._pool_factory()
        s = self.settings
        return SMTPPool.from_config(
            self.connection,
            max_connections=1 if ordered else max(1, s.pool_size),
            max_messages_per_connection=s.max_messages_per_connection,
            idle_timeout=s.idle_timeout,
        )

    def pool(self, *, ordered: bool = False) -> SMTPPool:
        """The process's pool of one lane (made on first use, on the bridge loop).

        Use it only on the bridge loop (through :meth:`send` or
        :func:`smtp_backends.bridge.run_sync`).
        """
        factory = self._pool_factory
        # A pool of one connection keeps the order already: one lane then.
        lane = ordered and factory is None and self.settings.pool_size > 1
        key = ("smtp_backends.mailer", self.scope, factory or self.settings, lane)
        pool = shared_pool(key, lambda: self.make_pool(ordered=lane))
        live = self._live.get(lane)
        if live is None or live.pool is not pool:
            # Asked for in an empty context: a loop keeps the context it was
            # made in, and this may run inside a request.
            loop = contextvars.Context().run(lambda: get_bridge().loop)
            self._live = {**self._live, lane: _Live(os.getpid(), pool, loop)}
        return pool

    @property
    def pools(self) -> list[SMTPPool]:
        """This process's open pools of this Mailer (for monitoring and tests)."""
        pid = os.getpid()
        return [
            live.pool
            for live in list(self._live.values())
            if live.pid == pid and not live.pool.closed
        ]

    def close_later(self) -> None:
        """Close the pools in the background, on their loop; returns at once.

        Safe from a garbage-collection finaliser: takes no lock, and does
        nothing in a forked child (whose parent owns the sockets) or once the
        bridge is gone.
        """
        for live in list(self._live.values()):
            if live.pid != os.getpid() or live.pool.closed:
                continue
            # A closed loop raises RuntimeError: the bridge closed its pools already.
            with contextlib.suppress(RuntimeError):
                live.loop.call_soon_threadsafe(
                    _start_close, live.pool, context=contextvars.Context()
                )

    async def _close(self) -> None:
        pools = self.pools
        await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)

    def close(self) -> None:
        """Close the pools now (QUIT); the next send opens new connections."""
        if self.pools:
            run_sync(self._close)

    async def aclose(self) -> None:
        """Close the pools from any event loop; as :meth:`close`."""
        if self.pools:
            await run_async(self._close)

    async def __aenter__(self) -> Mailer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Sending -------------------------------------------------------------------

    async def deliver(
        self,
        items: Sequence[Item],
        *,
        ordered: bool | None = None,
        on_result: ResultCallback | None = None,
        via: Any = None,
    ) -> list[Result]:
        """Send ``items``; one outcome per item, in order. The one coroutine of every send.

        Runs on the bridge loop (:meth:`send` and :meth:`asend` put it there).

        Args:
            items: batch items (message objects, ``(sender, recipients,
                data)`` tuples, or callables returning one) or :class:`Outgoing`.
            ordered: send a list in order over one connection (None:
                ``settings.keep_order``).
            on_result: called as ``on_result(index, outcome)`` as each
                message's outcome is known.
            via: a connection of the caller's own (:meth:`connect`) instead
                of the pool: one message goes as ``via.sendmail(...)``.

        Returns:
            ``(refused recipients, reply text)`` or the exception, per item.
        """
        if not items:
            return []
        if _events.bus.active and not event_hooks.in_scope():
            return await event_hooks.scoped(
                self.settings.connection,
                items,
                lambda told: self.deliver(items, ordered=ordered, on_result=told, via=via),
                batch=True,
                on_result=on_result,
            )
        try:
            if via is not None:
                return await self._over(via, items, on_result)
            if not self.settings.pooled:
                client = SMTP.from_config(self.connection)
                await _connect(client)
                try:
                    return await self._over(client, items, on_result)
                finally:
                    await _quit(client, strict=False)
            if any(isinstance(item, Outgoing) for item in items):
                return await _one_by_one(self.pool(), items, on_result)
            lane = self.settings.keep_order if ordered is None else ordered
            pool = self.pool(ordered=lane and len(items) > 1)
            return await pool.send_messages(items, on_result=on_result)  # type: ignore[arg-type]
        except OSError as exc:  # the connection (or the pool) failed as a whole
            return [exc] * len(items)

    async def _over(
        self, client: Any, items: Sequence[Item], on_result: ResultCallback | None
    ) -> list[Result]:
        if len(items) == 1 or any(isinstance(item, Outgoing) for item in items):
            return await _one_by_one(client, items, on_result)
        return list(await client.send_messages(items, on_result=on_result))

    def send(
        self,
        items: Iterable[Item],
        *,
        ordered: bool | None = None,
        on_result: ResultCallback | None = None,
        via: Any = None,
    ) -> list[Result]:
        """Send from sync code: :meth:`deliver` on the bridge loop, blocking until done.

        Never raises for a failed message: each outcome is returned (the
        bridge failing as a whole gives every item its error).
        """
        items = list(items)
        # Events (if anyone listens) are emitted in this caller's context.
        deliver = event_hooks.from_caller(self.deliver) if _events.bus.active else self.deliver
        try:
            return run_sync(deliver, items, ordered=ordered, on_result=on_result, via=via)
        except OSError as exc:  # the bridge itself failed (shut down...)
            return [exc] * len(items)

    async def asend(
        self,
        items: Iterable[Item],
        *,
        ordered: bool | None = None,
        on_result: ResultCallback | None = None,
        via: Any = None,
    ) -> list[Result]:
        """Send from any event loop without blocking it; as :meth:`send`."""
        items = list(items)
        deliver = event_hooks.from_caller(self.deliver) if _events.bus.active else self.deliver
        try:
            return await run_async(deliver, items, ordered=ordered, on_result=on_result, via=via)
        except OSError as exc:
            return [exc] * len(items)

    # Connections of one's own ------------------------------------------------------

    def connect(self) -> SMTP:
        """A connection of the caller's own (not pooled), connected on the bridge.

        Raises:
            OSError: the connection failed (it is closed).
        """
        client = SMTP.from_config(self.connection)
        run_sync(_connect, client)
        return client

    async def aconnect(self) -> SMTP:
        """:meth:`connect` from any event loop."""
        client = SMTP.from_config(self.connection)
        await run_async(_connect, client)
        return client

    @staticmethod
    def disconnect(client: SMTP, *, strict: bool = True) -> None:
        """QUIT a connection from :meth:`connect` and close it, whatever the reply.

        Raises:
            SMTPProtocolError: the reply broke the protocol (when ``strict``).
        """
        run_sync(_quit, client, strict)

    @staticmethod
    async def adisconnect(client: SMTP, *, strict: bool = True) -> None:
        """:meth:`disconnect` from any event loop."""
        await run_async(_quit, client, strict)

    @staticmethod
    def drop(client: SMTP) -> None:
        """Close a connection at once, without QUIT (never raises)."""
        _drop(client)

    @staticmethod
    def inherited(*objects: object) -> None:
        """Keep objects inherited from a parent process (never used, never collected)."""
        _inherited.append(objects)


async def _one_by_one(
    target: Any, items: Sequence[Item], on_result: ResultCallback | None
) -> list[Result]:
    """Each item as one ``sendmail`` on ``target`` (a pool or a client), in order."""
    results: list[Result] = []
    for index, item in enumerate(items):
        try:
            ready: Any = item() if callable(item) else item
            if isinstance(ready, Outgoing):
                per_message: dict[str, Any] = {}
                if ready.dsn is not None:
                    per_message["dsn"] = ready.dsn
                if ready.requiretls is not None:
                    per_message["requiretls"] = ready.requiretls
                result = target.sendmail(
                    ready.sender,
                    ready.recipients,
                    ready.data,
                    mail_options=list(ready.mail_options),
                    rcpt_options=list(ready.rcpt_options),
                    **per_message,
                )
            elif isinstance(ready, tuple):
                result = target.sendmail(*ready)
            else:
                result = target.send_message(ready)
            if inspect.isawaitable(result):  # a stand-in connection may be sync
                result = await result
            outcome: Result = result
        except (SMTPException, OSError, ValueError, TypeError) as exc:
            outcome = exc
        results.append(outcome)
        if on_result is not None:
            on_result(index, outcome)
    return results


_mailers: dict[tuple[Hashable, MailerSettings], Mailer] = {}
_mailers_lock = threading.Lock()
_mailers_pid = os.getpid()


def get_mailer(settings: MailerSettings, *, scope: Hashable = None) -> Mailer:
    """The process's :class:`Mailer` for ``settings`` (and ``scope``): one per value."""
    global _mailers_pid
    key = (scope, settings)
    mailer = _mailers.get(key)
    if mailer is not None and _mailers_pid == os.getpid():
        return mailer
    with _mailers_lock:
        if _mailers_pid != os.getpid():  # a forked child: the parent's are not ours
            _inherited.append(list(_mailers.values()))
            _mailers.clear()
            _mailers_pid = os.getpid()
        mailer = _mailers.get(key)
        if mailer is None:
            mailer = _mailers[key] = Mailer(settings, scope=scope)
        return mailer


class MailerSlot:
    """The current :class:`Mailer` of one owner (a Flask app, an ASGI app).

    :meth:`get` hands out the Mailer for the owner's current settings; when
    they change, the previous Mailer is retired (its pools close in the
    background, connections in use after their current send). Its own
    object is the scope that keeps the owner's pools apart from others'.
    """

    __slots__ = ("__weakref__", "_lock", "_mailer")

    def __init__(self) -> None:
        self._mailer: Mailer | None = None
        self._lock = threading.Lock()
        _slots.add(self)

    def get(self, settings: MailerSettings) -> Mailer:
        """The Mailer for ``settings``, retiring the previous one if they changed."""
        mailer = self._mailer
        if mailer is not None and mailer.settings == settings:
            return mailer
        with self._lock:
            previous = self._mailer
            if previous is not None and previous.settings == settings:
                return previous
            self._mailer = Mailer(settings, scope=self)
        if previous is not None:
            previous.close_later()
        return self._mailer

    @property
    def current(self) -> Mailer | None:
        """The Mailer handed out last (None before the first)."""
        return self._mailer

    def release(self) -> Mailer | None:
        """Forget the current Mailer (the next :meth:`get` makes a new one); returns it."""
        with self._lock:
            mailer, self._mailer = self._mailer, None
        return mailer

    def close_later(self) -> None:
        """Close the current Mailer's pools in the background (safe from a finaliser)."""
        mailer = self._mailer
        if mailer is not None:
            mailer.close_later()


_slots: weakref.WeakSet[MailerSlot] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a lock while it forked: the child
    # would wait for it forever.
    global _mailers_lock
    _mailers_lock = threading.Lock()
    for slot in list(_slots):
        slot._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
