"""What happens while mail goes out, as events: one model for every layer and adapter.

Each event is a frozen dataclass; :func:`subscribe` a callable (or a
coroutine function) to hear of them::

    from smtp_backends import events

    def log_failures(event: events.MessageFailed) -> None:
        print(event.message_id, event.code, event.error)

    events.subscribe(log_failures, events.MessageFailed)

Events are emitted where they are true: the outcome of a message by the
layer that knows it is final (the client for a connection of your own, the
pool when it may still retry a message, the sending layer for a message
that never reached a connection), connection events by the client and the
pool. They are emitted on the loop that sends (the bridge loop for sync
callers): a subscriber must be quick; a coroutine subscriber runs as a task
of that loop. A subscriber that raises is logged (logger
``smtp_backends.events``) and never disturbs sending.

Nobody subscribed, nothing is built: the sending paths check
:attr:`EventBus.active`, one attribute, before doing any work for events.

Message events carry the envelope's addresses (they stay in the process);
:mod:`smtp_backends.telemetry` leaves them out of spans unless asked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .outcomes import Verdict

__all__ = (
    "BatchFinished",
    "BatchStarted",
    "CancelSend",
    "ConnectionAcquired",
    "ConnectionClosed",
    "ConnectionOpened",
    "ConnectionRecycled",
    "ConnectionReleased",
    "Event",
    "EventBus",
    "MessageCancelled",
    "MessageEvent",
    "MessageFailed",
    "MessageRetried",
    "MessageSent",
    "OutcomeUnknown",
    "RecipientRefused",
    "Relay",
    "bus",
    "cancelled",
    "emit",
    "resolve_pre_send",
    "subscribe",
    "subscribed",
    "unsubscribe",
)

logger = logging.getLogger("smtp_backends.events")


class CancelSend(Exception):
    """Raised by a ``pre_send`` receiver to cancel a message (Django and Flask signals).

    A cancelled message is not sent and is reported as not sent: Django's
    ``send_messages`` does not count it, Flask's ``send`` raises this
    exception, and a :class:`MessageCancelled` event is emitted.
    """


# Events ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """What every event has.

    Attributes:
        host: the server's name or address (a Unix socket's path).
        port: the server's port (None for a Unix socket).
        time: when it happened (seconds since the epoch).
        batch: the number of the batch it belongs to (see
            :class:`BatchStarted`), or None.
    """

    host: str
    port: int | None
    time: float = dataclasses.field(default_factory=time.time)
    batch: int | None = None

    @property
    def server(self) -> str:
        """``host:port`` (the socket's path for a Unix socket)."""
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageEvent(Event):
    """What every event about one message has.

    Attributes:
        message_id: its Message-ID header (None if it has none, or when the
            message never reached a connection and was not an email object).
        sender: the envelope sender (MAIL FROM).
        recipients: the envelope recipients (RCPT TO).
        size: its size in bytes, as sent (0 if it was never rendered).
        started: when it was prepared for the wire (seconds since the epoch;
            equal to ``time`` when it never was).
        duration: seconds from ``started`` to its outcome.
    """

    message_id: str | None = None
    sender: str = ""
    recipients: tuple[str, ...] = ()
    size: int = 0
    started: float = 0.0
    duration: float = 0.0

    @property
    def recipient_count(self) -> int:
        """How many envelope recipients it had."""
        return len(self.recipients)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageSent(MessageEvent):
    """The server accepted the message (for every recipient, or all but ``refused``).

    Attributes:
        code: the reply code to the end of data (250).
        reply: the text of that reply (often the server's queue id).
        refused: how many recipients were refused (each also has a
            :class:`RecipientRefused`).
    """

    code: int = 250
    reply: str = ""
    refused: int = 0

    @property
    def verdict(self) -> Verdict:
        """:attr:`Verdict.SENT`, or :attr:`Verdict.REFUSED` when some were refused."""
        return Verdict.REFUSED if self.refused else Verdict.SENT


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecipientRefused(MessageEvent):
    """The server refused one recipient of a message.

    Attributes:
        recipient: the refused address.
        code: the reply code to its RCPT.
        reply: the reply's text.
        verdict: :attr:`Verdict.RETRYABLE` (4xx) or :attr:`Verdict.PERMANENT`.
    """

    recipient: str = ""
    code: int = 0
    reply: str = ""
    verdict: Verdict = Verdict.PERMANENT


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageFailed(MessageEvent):
    """The message was not sent.

    Attributes:
        error: the exception it failed with.
        code: the server's reply code, when a reply decided it (else None).
        verdict: :attr:`Verdict.RETRYABLE` or :attr:`Verdict.PERMANENT`
            (see :func:`smtp_backends.outcomes.classify`).
    """

    error: BaseException | None = None
    code: int | None = None
    verdict: Verdict = Verdict.PERMANENT


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutcomeUnknown(MessageEvent):
    """The connection ended after the message's end of data and before the reply.

    The server may have it: it is never resent automatically.

    Attributes:
        error: the :class:`~smtp_backends.errors.SMTPUnknownOutcomeError`.
    """

    error: BaseException | None = None

    @property
    def verdict(self) -> Verdict:
        """:attr:`Verdict.UNKNOWN`."""
        return Verdict.UNKNOWN


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageRetried(MessageEvent):
    """The pool sends the message again on another connection.

    Its connection was lost before its end of data, so the server cannot
    have it. Its final outcome follows as another event.

    Attributes:
        error: why the attempt failed.
    """

    error: BaseException | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageCancelled(MessageEvent):
    """A ``pre_send`` receiver cancelled the message: it was not sent.

    Attributes:
        reason: what the receiver said (the text of its :class:`CancelSend`,
            or which receiver returned False).
    """

    reason: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchStarted(Event):
    """A list of messages is about to be sent (``batch`` numbers it).

    Attributes:
        size: how many messages.
    """

    size: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchFinished(Event):
    """Every message of a batch has its outcome.

    Attributes:
        size: how many messages.
        sent: how many were accepted (for at least one recipient).
        failed: how many were not (refused, failed, or outcome unknown).
        duration: seconds since its :class:`BatchStarted`.
    """

    size: int = 0
    sent: int = 0
    failed: int = 0
    duration: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionOpened(Event):
    """A connection is ready: greeting read, EHLO, STARTTLS and login done.

    Attributes:
        duration: seconds it took.
        encrypted: whether it runs over TLS.
    """

    duration: float = 0.0
    encrypted: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionClosed(Event):
    """A connection was closed.

    Attributes:
        clean: whether the session had ended (QUIT or the server's 421)
            rather than being cut.
        lifetime: seconds since it was opened (0.0 if it never was known open).
    """

    clean: bool = False
    lifetime: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionRecycled(Event):
    """The pool retires a connection (a new one replaces it when needed).

    Attributes:
        reason: ``"max-messages"`` (it sent its share), ``"idle"`` (unused
            too long) or ``"check-failed"`` (it failed its NOOP check after
            sitting idle).
        messages: how many messages it sent.
    """

    reason: str = ""
    messages: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionAcquired(Event):
    """The pool lent a connection to a send.

    Attributes:
        wait: seconds the send waited for it (opening it included).
        in_use: connections of that pool lent out now.
    """

    wait: float = 0.0
    in_use: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionReleased(Event):
    """A send gave its pooled connection back.

    Attributes:
        held: seconds it was lent.
        in_use: connections of that pool still lent out.
    """

    held: float = 0.0
    in_use: int = 0


# The registry ---------------------------------------------------------------------

#: A subscriber: called with each event; may be a coroutine function.
Subscriber = Callable[[Any], object]


@dataclasses.dataclass(frozen=True)
class _Entry:
    subscriber: Subscriber
    kinds: tuple[type[Event], ...]


class EventBus:
    """The process's subscribers, and the emitter the sending paths call.

    ``active`` is True while anyone subscribes: the one attribute the hot
    paths read before building an event. Subscribing and emitting are safe
    from any thread.
    """

    __slots__ = ("_entries", "_lock", "_tasks", "active")

    def __init__(self) -> None:
        #: Whether anyone subscribes (read by the sending paths).
        self.active = False
        # Replaced whole, never changed in place: emit() reads it without a lock.
        self._entries: tuple[_Entry, ...] = ()
        self._lock = threading.Lock()
        self._tasks: set[Any] = set()

    def subscribe(self, subscriber: Subscriber, *kinds: type[Event]) -> Subscriber:
        """Call ``subscriber(event)`` for each event (of ``kinds`` only, if given).

        Returns the subscriber (usable as a decorator). Subscribing the same
        callable again replaces its event kinds.

        Raises:
            TypeError: ``subscriber`` is not callable, or a kind is not an
                :class:`Event` class.
        """
        if not callable(subscriber):
            raise TypeError(f"A subscriber must be callable, not {type(subscriber).__name__}")
        for kind in kinds:
            if not (isinstance(kind, type) and issubclass(kind, Event)):
                raise TypeError(f"Event kinds must be Event classes, not {kind!r}")
        with self._lock:
            kept = tuple(e for e in self._entries if e.subscriber != subscriber)
            self._entries = (*kept, _Entry(subscriber, kinds))
            self.active = True
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> bool:
        """Stop calling ``subscriber``; returns whether it was subscribed."""
        with self._lock:
            kept = tuple(e for e in self._entries if e.subscriber != subscriber)
            found = len(kept) != len(self._entries)
            self._entries = kept
            self.active = bool(kept)
        return found

    @property
    def subscribers(self) -> list[Subscriber]:
        """The subscribers, in the order they are called."""
        return [entry.subscriber for entry in self._entries]

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every subscriber that wants it; never raises."""
        for entry in self._entries:
            if entry.kinds and not isinstance(event, entry.kinds):
                continue
            try:
                result = entry.subscriber(event)
                if inspect.isawaitable(result):
                    self._schedule(result, entry.subscriber)
            except Exception:
                logger.exception(
                    "Event subscriber %r failed on %s", entry.subscriber, type(event).__name__
                )

    def _schedule(self, awaitable: Awaitable[None], subscriber: Subscriber) -> None:
        """Run a coroutine subscriber's work on this loop, or on the bridge loop."""

        async def run() -> None:
            await awaitable

        def done(future: Any) -> None:
            self._tasks.discard(future)
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                logger.error(
                    "Event subscriber %r failed", subscriber, exc_info=(type(error), error, None)
                )

        try:
            future: Any = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no loop in this thread (a sync adapter's own event)
            from .bridge import get_bridge

            future = asyncio.run_coroutine_threadsafe(run(), get_bridge().loop)
        self._tasks.add(future)  # a loop holds its tasks weakly
        future.add_done_callback(done)

    async def drain(self) -> None:
        """Wait for the coroutine subscribers started so far (for tests and shutdown)."""
        pending = list(self._tasks)
        for future in pending:
            if isinstance(future, concurrent.futures.Future):
                await asyncio.wrap_future(future)
            else:
                await asyncio.gather(future, return_exceptions=True)


#: The process's event bus.
bus = EventBus()
subscribe = bus.subscribe
unsubscribe = bus.unsubscribe
emit = bus.emit


@contextmanager
def subscribed(subscriber: Subscriber, *kinds: type[Event]) -> Iterator[Subscriber]:
    """Subscribe ``subscriber`` for the duration of a ``with`` block."""
    bus.subscribe(subscriber, *kinds)
    try:
        yield subscriber
    finally:
        bus.unsubscribe(subscriber)


class Relay:
    """Hands the bus's events of one kind to a framework's signal while it has receivers.

    The Django and Flask signals start it when a receiver connects and stop
    it after the last one goes, so that with nobody listening nothing is
    relayed and sending pays nothing.

    Args:
        kind: the :class:`Event` class relayed.
        deliver: sends one event to the signal's receivers.
        has_receivers: whether the signal still has receivers (weak ones may
            have been collected since the last event).
    """

    def __init__(
        self,
        kind: type[Event],
        deliver: Callable[[Event], None],
        has_receivers: Callable[[], bool],
    ) -> None:
        self.kind = kind
        self._deliver = deliver
        self._has_receivers = has_receivers
        self._relaying = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Subscribe to the bus (once)."""
        with self._lock:
            if not self._relaying:
                bus.subscribe(self, self.kind)
                self._relaying = True

    def stop(self) -> None:
        """Unsubscribe from the bus (once)."""
        with self._lock:
            if self._relaying:
                bus.unsubscribe(self)
                self._relaying = False

    def __call__(self, event: Event) -> None:
        if not self._has_receivers():  # only weak receivers, now collected
            self.stop()
            return
        self._deliver(event)


_batch_numbers = itertools.count(1)


def next_batch_number() -> int:
    """A new batch number (unique in the process)."""
    return next(_batch_numbers)


def resolve_pre_send(
    message: Any, responses: Any, kind: type | tuple[type, ...]
) -> tuple[Any, str]:
    """What ``pre_send`` receivers decided for ``message`` (for the adapters' signals).

    Args:
        message: the message the receivers were given.
        responses: ``[(receiver, returned value), ...]`` as a signal's send returns it.
        kind: the adapter's message class: a receiver returning one replaces
            the message (the last such wins).

    Returns:
        ``(message to send, "")``, or ``(None, reason)`` when a receiver
        returned False (a receiver raising :class:`CancelSend` cancels too:
        the adapter catches it).
    """
    for receiver, value in responses:
        if value is False:
            name = getattr(receiver, "__qualname__", None) or repr(receiver)
            return None, f"cancelled by {name}"
        if isinstance(value, kind):
            message = value
    return message, ""


def cancelled(
    host: str,
    port: int | None,
    *,
    message_id: str | None,
    sender: str,
    recipients: tuple[str, ...],
    reason: str,
) -> None:
    """Emit :class:`MessageCancelled` (if anyone listens): an adapter's pre_send cancelled it."""
    if bus.active:
        bus.emit(
            MessageCancelled(
                host=host,
                port=port,
                message_id=message_id,
                sender=sender,
                recipients=recipients,
                started=time.time(),
                reason=reason,
            )
        )
