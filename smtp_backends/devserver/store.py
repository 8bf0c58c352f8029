"""The development server's mailbox: received messages, kept in memory within bounds.

:class:`Mailbox` keeps the newest messages behind one lock, within two caps: a number
of messages and a total number of bytes (the oldest go first; one message larger than
the byte cap is refused). Test code can block until mail arrives (:meth:`Mailbox.wait_for`),
pick messages by search or plus-address tag, and the web inbox follows every change
through a :class:`Subscription` (server-sent events).

A development server must show whatever a buggy application sends, so nothing here
raises on a malformed message (see :mod:`smtp_backends.devserver.message`).
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from .message import Attachment, StoredMessage
from .search import Query

__all__ = (
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "Attachment",
    "Mailbox",
    "MailboxEvent",
    "MessageTooLarge",
    "StoredMessage",
    "Subscription",
)

#: How many messages a :class:`Mailbox` keeps unless told otherwise.
DEFAULT_MAX_MESSAGES = 1000

#: How many bytes of messages (as received) a :class:`Mailbox` keeps unless told otherwise.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

# Events a subscriber may have waiting before it is told to start over (a browser tab
# that stopped reading must not make the server keep every event for it).
_SUBSCRIPTION_BACKLOG = 1000

# Recent events kept (without their messages) so that a subscriber that reconnects
# after a gap is replayed what it missed rather than told to reload.
_HISTORY = 1000


class MessageTooLarge(ValueError):
    """A message is larger than the mailbox's whole byte cap (:attr:`Mailbox.max_bytes`)."""


@dataclass(frozen=True)
class MailboxEvent:
    """One change to a :class:`Mailbox`, as its subscribers see it.

    Attributes:
        kind: ``"store"`` (the message :attr:`ids` arrived), ``"delete"`` (the
            messages :attr:`ids` are gone: cleared, deleted or evicted by a cap) or
            ``"reset"`` (the subscriber fell behind and must reload everything).
        version: the mailbox's :attr:`Mailbox.version` after the change.
        message: the new message of a ``store`` event, when it is still known (a
            replayed event carries only its id: look it up with :meth:`Mailbox.get`).
        ids: the ids stored or removed.
    """

    kind: str
    version: int
    message: StoredMessage | None = None
    ids: tuple[int, ...] = ()


class Subscription:
    """A feed of :class:`MailboxEvent` from one :class:`Mailbox`; see :meth:`Mailbox.subscribe`.

    Attributes:
        version: the mailbox's version when the subscription started; every event
            after it is delivered.
    """

    def __init__(self, mailbox: Mailbox, version: int) -> None:
        self.version = version
        self._mailbox = mailbox
        self._events: queue.Queue[MailboxEvent | None] = queue.Queue(_SUBSCRIPTION_BACKLOG)
        self._overflowed = False
        self._reset = False
        self._finished = False

    def _put(self, event: MailboxEvent) -> None:
        if self._overflowed:
            return
        try:
            self._events.put_nowait(event)
        except queue.Full:
            self._overflowed = True

    def get(self, timeout: float | None = None) -> MailboxEvent | None:
        """The next event; None once closed or after ``timeout`` seconds without one.

        After the backlog overflowed (or when :meth:`Mailbox.subscribe` could not
        replay what was missed), a single ``reset`` event is returned and the
        subscription closes.
        """
        if self._reset or self._overflowed:
            self._reset = self._overflowed = False
            self._finished = True
            self.close()
            return MailboxEvent("reset", self._mailbox.version)
        if self._finished:
            return None
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (directly or by the mailbox's shutdown)."""
        return not self._mailbox._subscribed(self)

    def close(self) -> None:
        """Stop receiving events and wake a waiting :meth:`get` (idempotent)."""
        self._mailbox._unsubscribe(self)
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(None)


class Mailbox:
    """A thread-safe, bounded, in-memory list of :class:`StoredMessage`.

    Args:
        max_messages: how many messages to keep; the oldest is dropped when a new
            one arrives at the limit.
        max_bytes: how many bytes of messages (their size as received) to keep; the
            oldest are dropped until a new one fits.

    Raises:
        ValueError: ``max_messages`` or ``max_bytes`` is below 1.
    """

    def __init__(
        self, max_messages: int = DEFAULT_MAX_MESSAGES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._messages: collections.deque[StoredMessage] = collections.deque()
        self._bytes = 0
        self._last_id = 0
        self._version = 0
        self._adding = threading.Lock()
        self._changed = threading.Condition()
        self._subscriptions: set[Subscription] = set()
        self._history: collections.deque[MailboxEvent] = collections.deque(maxlen=_HISTORY)

    # ------------------------------------------------------------------ changes

    def add(
        self,
        envelope_from: str,
        envelope_to: Iterable[str],
        raw: bytes,
        received_at: datetime | None = None,
    ) -> StoredMessage:
        """Parse and store one message; returns it with its new id.

        The oldest messages are dropped until both caps hold.

        Raises:
            MessageTooLarge: ``raw`` alone is larger than :attr:`max_bytes`.
        """
        if len(raw) > self.max_bytes:
            raise MessageTooLarge(
                f"a message of {len(raw)} bytes is larger than the inbox's cap "
                f"of {self.max_bytes} bytes"
            )
        received_at = received_at or datetime.now(timezone.utc)
        recipients = tuple(envelope_to)
        # Adds take their own lock so that ids stay in arrival order, while parsing (the slow
        # part) happens outside the lock readers use.
        with self._adding:
            self._last_id += 1
            message = StoredMessage(self._last_id, envelope_from, recipients, received_at, raw)
            with self._changed:
                evicted: list[int] = []
                while self._messages and (
                    len(self._messages) >= self.max_messages
                    or self._bytes + message.size > self.max_bytes
                ):
                    old = self._messages.popleft()
                    self._bytes -= old.size
                    evicted.append(old.id)
                if evicted:
                    self._publish("delete", ids=tuple(evicted))
                self._messages.append(message)
                self._bytes += message.size
                self._publish("store", message=message)
        return message

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Forget the messages with these ids; returns the ids that were stored."""
        wanted = set(ids)
        with self._changed:
            removed = [message.id for message in self._messages if message.id in wanted]
            if removed:
                self._keep(lambda message: message.id not in wanted)
                self._publish("delete", ids=tuple(removed))
        return removed

    def clear(self, query: str | Query | None = None, *, tag: str | None = None) -> list[int]:
        """Forget every stored message, or only those matching ``query`` and ``tag``.

        Ids keep counting up. Returns the ids removed.
        """
        with self._changed:
            selected = self._select(query, tag)
            if len(selected) == len(self._messages):
                self._messages.clear()
                self._bytes = 0
            elif selected:
                gone = {message.id for message in selected}
                self._keep(lambda message: message.id not in gone)
            removed = tuple(message.id for message in selected)
            if removed:
                self._publish("delete", ids=removed)
        return list(removed)

    def _keep(self, predicate: Callable[[StoredMessage], bool]) -> None:
        # Under self._changed: keep only the messages the predicate accepts.
        kept = [message for message in self._messages if predicate(message)]
        self._messages = collections.deque(kept)
        self._bytes = sum(message.size for message in kept)

    def _publish(
        self, kind: str, *, message: StoredMessage | None = None, ids: tuple[int, ...] = ()
    ) -> None:
        # Under self._changed: a new version, every subscriber told, every waiter woken.
        self._version += 1
        if message is not None:
            ids = (message.id,)
        event = MailboxEvent(kind, self._version, message, ids)
        # Kept without the message: the history must not hold evicted bytes alive.
        self._history.append(MailboxEvent(kind, self._version, None, ids))
        for subscription in self._subscriptions:
            subscription._put(event)
        self._changed.notify_all()

    # ------------------------------------------------------------------ reading

    def messages(
        self, query: str | Query | None = None, *, tag: str | None = None
    ) -> list[StoredMessage]:
        """A snapshot of the stored messages, oldest first.

        Args:
            query: keep only the messages matching this search (see
                :mod:`smtp_backends.devserver.search`).
            tag: keep only the messages with this plus-address tag (ignoring case).
        """
        with self._changed:
            return self._select(query, tag)

    def _select(self, query: str | Query | None, tag: str | None) -> list[StoredMessage]:
        # Under self._changed.
        if isinstance(query, str):
            query = Query.parse(query)
        return [
            message
            for message in self._messages
            if (not query or query.matches(message)) and (tag is None or message.has_tag(tag))
        ]

    def get(self, message_id: int) -> StoredMessage | None:
        """The stored message with this id, or None (never stored, dropped or cleared)."""
        with self._changed:
            for message in self._messages:
                if message.id == message_id:
                    return message
        return None

    def wait_for(
        self,
        count: int,
        timeout: float = 10.0,
        *,
        query: str | Query | None = None,
        tag: str | None = None,
    ) -> list[StoredMessage]:
        """Block until at least ``count`` messages (matching ``query`` and ``tag``, if
        given) are stored; returns them, oldest first.

        Raises:
            TimeoutError: fewer than ``count`` after ``timeout`` seconds.
        """
        if isinstance(query, str):
            query = Query.parse(query)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._select(query, tag)
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    which = " matching" if query or tag is not None else ""
                    raise TimeoutError(
                        f"expected {count}{which} message(s) within {timeout} s, got {len(found)}"
                    )
                self._changed.wait(remaining)

    @property
    def total_bytes(self) -> int:
        """The size of the stored messages together, as received."""
        with self._changed:
            return self._bytes

    @property
    def version(self) -> int:
        """A counter that moves on with every change (add, delete, clear, eviction)."""
        with self._changed:
            return self._version

    # ------------------------------------------------------------------ events

    def subscribe(self, since: int | None = None) -> Subscription:
        """Start a :class:`Subscription` to every change from now on.

        Args:
            since: a :attr:`version` the subscriber has already seen (the one a page
                was rendered at, or the last event it received): the changes after
                it are replayed first, or a ``reset`` event comes first when they
                are too old to replay (or ``since`` is not a version of this mailbox).

        Close it when done (:meth:`Subscription.close`), or call :meth:`close_subscriptions`.
        """
        with self._changed:
            subscription = Subscription(self, self._version)
            if since is not None and since != self._version:
                missed = [event for event in self._history if event.version > since]
                complete = 0 <= since < self._version and (
                    not missed or missed[0].version == since + 1
                )
                if complete:
                    for event in missed:
                        subscription._put(event)
                else:
                    subscription._reset = True
            self._subscriptions.add(subscription)
        return subscription

    def _subscribed(self, subscription: Subscription) -> bool:
        with self._changed:
            return subscription in self._subscriptions

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._changed:
            self._subscriptions.discard(subscription)

    def close_subscriptions(self) -> None:
        """Close every open :class:`Subscription` (a server shutting down)."""
        with self._changed:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()

    def __len__(self) -> int:
        with self._changed:
            return len(self._messages)
