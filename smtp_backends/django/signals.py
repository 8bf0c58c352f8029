"""Django signals carrying :mod:`smtp_backends.events`, and ``pre_send``.

::

    from django.dispatch import receiver
    from smtp_backends.django import signals

    @receiver(signals.message_sent)
    def record(sender, event, **kwargs):
        Delivery.objects.create(message_id=event.message_id, reply=event.reply)

Each event signal is sent with the event's class as ``sender`` and the
event as ``event``. It relays the core event bus only while it has
receivers (nobody connected, nothing is relayed and sending pays nothing).
Receivers run where the event happens: on the bridge loop's thread for
pooled sends, so they must be quick and synchronous (to await, subscribe a
coroutine with :func:`smtp_backends.events.subscribe` instead). One that
raises is logged and never disturbs sending.

``pre_send`` is sent for each ``EmailMessage`` before the backend sends it
(before the ``CeleryBackend`` queues it),
with the backend's class as ``sender`` and ``message=`` and ``backend=``. A
receiver may change the message in place, return a replacement
``EmailMessage``, or cancel it by raising
:class:`smtp_backends.events.CancelSend` or returning ``False``. A cancelled
message is not sent and not counted in ``send_messages()``'s result, and a
:class:`~smtp_backends.events.MessageCancelled` event (signal
``message_cancelled``) says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.core.mail import EmailMessage
from django.dispatch import Signal

from .. import events

__all__ = (
    "EventSignal",
    "connection_closed",
    "connection_opened",
    "connection_recycled",
    "message_cancelled",
    "message_failed",
    "message_retried",
    "message_sent",
    "outcome_unknown",
    "pre_send",
    "recipient_refused",
)

logger = logging.getLogger("smtp_backends.events")


class EventSignal(Signal):  # type: ignore[misc]
    """A signal sent for each event of ``kind``, while it has receivers.

    Args:
        kind: the :class:`smtp_backends.events.Event` class it carries.
    """

    def __init__(self, kind: type[events.Event]) -> None:
        super().__init__()
        self.kind = kind
        self._relay = events.Relay(kind, self._send_event, self.has_listeners)

    def connect(self, receiver: Any, *args: Any, **kwargs: Any) -> None:
        """As :meth:`django.dispatch.Signal.connect`; starts relaying the events."""
        super().connect(receiver, *args, **kwargs)
        self._relay.start()

    def disconnect(self, *args: Any, **kwargs: Any) -> bool:
        """As :meth:`django.dispatch.Signal.disconnect`; stops relaying after the last."""
        found: bool = super().disconnect(*args, **kwargs)
        if not self.has_listeners():
            self._relay.stop()
        return found

    def _send_event(self, event: events.Event) -> None:
        for receiver, result in self.send_robust(sender=type(event), event=event):
            if isinstance(result, Exception):
                logger.error(
                    "Receiver %r of %s failed",
                    receiver,
                    type(event).__name__,
                    exc_info=(type(result), result, result.__traceback__),
                )


#: Sent with ``message=`` (an EmailMessage) and ``backend=`` before it is sent.
pre_send = Signal()
message_sent = EventSignal(events.MessageSent)
recipient_refused = EventSignal(events.RecipientRefused)
message_failed = EventSignal(events.MessageFailed)
message_retried = EventSignal(events.MessageRetried)
outcome_unknown = EventSignal(events.OutcomeUnknown)
message_cancelled = EventSignal(events.MessageCancelled)
connection_opened = EventSignal(events.ConnectionOpened)
connection_closed = EventSignal(events.ConnectionClosed)
connection_recycled = EventSignal(events.ConnectionRecycled)


def _cancel(backend: Any, message: Any, reason: str) -> None:
    recipients = tuple(str(address) for address in message.recipients())
    events.cancelled(
        str(getattr(backend, "host", None) or "localhost"),
        getattr(backend, "port", None),
        message_id=message.extra_headers.get("Message-ID"),
        sender=str(message.from_email or ""),
        recipients=recipients,
        reason=reason,
    )


def apply_pre_send(backend: Any, messages: Iterable[Any]) -> list[Any]:
    """The messages to send after ``pre_send``'s receivers (cancelled ones left out)."""
    messages = list(messages)
    if not pre_send.has_listeners():
        return messages
    kept: list[Any] = []
    for message in messages:
        try:
            responses = pre_send.send(sender=type(backend), message=message, backend=backend)
        except events.CancelSend as cancel:
            _cancel(backend, message, str(cancel) or "cancelled by a pre_send receiver")
            continue
        decided, reason = events.resolve_pre_send(message, responses, EmailMessage)
        if decided is None:
            _cancel(backend, message, reason)
        else:
            kept.append(decided)
    return kept


async def aapply_pre_send(backend: Any, messages: Iterable[Any]) -> list[Any]:
    """:func:`apply_pre_send` from async code (sync receivers run off the event loop)."""
    messages = list(messages)
    if not pre_send.has_listeners():
        return messages
    kept: list[Any] = []
    for message in messages:
        try:
            responses = await pre_send.asend(sender=type(backend), message=message, backend=backend)
        except events.CancelSend as cancel:
            _cancel(backend, message, str(cancel) or "cancelled by a pre_send receiver")
            continue
        decided, reason = events.resolve_pre_send(message, responses, EmailMessage)
        if decided is None:
            _cancel(backend, message, reason)
        else:
            kept.append(decided)
    return kept
