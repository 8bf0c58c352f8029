"""Blinker signals carrying :mod:`smtp_backends.events`, and ``pre_send``.

::

    from smtp_backends.flask import event_signals

    @event_signals.message_failed.connect
    def alert(sender, event, **kwargs):
        app.logger.warning("mail %s failed: %s", event.message_id, event.error)

The signals are also in the extension's namespace
(``smtp_backends.flask.signals``, e.g. ``signals.signal("message-sent")``)
beside Flask-Mail's ``email_dispatched``, which keeps working as before. Each event signal is
sent with the event's class as sender and the event as ``event``, and
relays the core event bus only while it has receivers. Receivers run where
the event happens (the bridge loop's thread for pooled sends): they must be
quick and synchronous; one that raises is logged and never disturbs sending.

``pre_send`` is sent with the app as sender and ``message=`` (the
:class:`~smtp_backends.flask.Message`) before each message is checked and
sent. A receiver may change the message in place, return a replacement
``Message``, or cancel it by raising
:class:`smtp_backends.events.CancelSend` or returning ``False``: the
message is not sent, ``email_dispatched`` is not sent for it, a
:class:`~smtp_backends.events.MessageCancelled` event says so, and
``send()`` raises :class:`~smtp_backends.events.CancelSend` (a cancelled
message is never reported as sent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import blinker

from .. import events
from .dispatch import signals as namespace
from .message import Message

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


class EventSignal(blinker.NamedSignal):
    """A blinker signal sent for each event of ``kind``, while it has receivers.

    Args:
        name: its name in the extension's namespace.
        kind: the :class:`smtp_backends.events.Event` class it carries.
    """

    def __init__(self, name: str, kind: type[events.Event]) -> None:
        super().__init__(name, doc=f"Sent for each {kind.__name__} event.")
        self.kind = kind
        self._relay = events.Relay(kind, self._send_event, lambda: bool(self.receivers))

    def connect(self, receiver: Any, sender: Any = blinker.ANY, weak: bool = True) -> Any:
        """As :meth:`blinker.Signal.connect`; starts relaying the events."""
        result = super().connect(receiver, sender, weak)
        self._relay.start()
        return result

    def disconnect(self, receiver: Callable[..., Any], sender: Any = blinker.ANY) -> None:
        """As :meth:`blinker.Signal.disconnect`; stops relaying after the last receiver."""
        super().disconnect(receiver, sender)
        if not self.receivers:
            self._relay.stop()

    def _send_event(self, event: events.Event) -> None:
        for receiver in self.receivers_for(type(event)):
            try:
                receiver(type(event), event=event)
            except Exception:
                logger.exception("Receiver %r of %s failed", receiver, type(event).__name__)


def _signal(name: str, kind: type[events.Event]) -> EventSignal:
    signal = EventSignal(name, kind)
    namespace[name] = signal
    return signal


#: Sent with the app as sender and ``message=`` before each message is sent.
pre_send: blinker.NamedSignal = namespace.signal(
    "pre-send", doc="Sent before a message is sent; a receiver may alter or cancel it."
)
message_sent = _signal("message-sent", events.MessageSent)
recipient_refused = _signal("recipient-refused", events.RecipientRefused)
message_failed = _signal("message-failed", events.MessageFailed)
message_retried = _signal("message-retried", events.MessageRetried)
outcome_unknown = _signal("outcome-unknown", events.OutcomeUnknown)
message_cancelled = _signal("message-cancelled", events.MessageCancelled)
connection_opened = _signal("connection-opened", events.ConnectionOpened)
connection_closed = _signal("connection-closed", events.ConnectionClosed)
connection_recycled = _signal("connection-recycled", events.ConnectionRecycled)


def _cancel(state: Any, message: Any, reason: str) -> events.CancelSend:
    recipients = tuple(str(address) for address in message.send_to)
    events.cancelled(
        str(getattr(state, "server", None) or "localhost"),
        getattr(state, "port", None),
        message_id=getattr(message, "msgId", None),
        sender=str(message.sender or ""),
        recipients=recipients,
        reason=reason,
    )
    return events.CancelSend(reason)


def apply_pre_send(state: Any, message: Message) -> Message:
    """The message to send after ``pre_send``'s receivers.

    Args:
        state: the app's mail state (its app is the signal's sender).
        message: the message about to be sent.

    Raises:
        CancelSend: a receiver cancelled it (it must not be sent).
    """
    if not pre_send.receivers:
        return message
    try:
        responses = pre_send.send(state._signal_sender(), message=message)
    except events.CancelSend as cancel:
        raise _cancel(state, message, str(cancel) or "cancelled by a pre_send receiver") from None
    decided, reason = events.resolve_pre_send(message, responses, Message)
    if decided is None:
        raise _cancel(state, message, reason)
    result: Message = decided
    return result
