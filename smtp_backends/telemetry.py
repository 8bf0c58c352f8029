"""OpenTelemetry spans and metrics from :mod:`smtp_backends.events` (the ``otel`` extra).

::

    from smtp_backends import telemetry

    telemetry.instrument()  # the global tracer and meter providers

Nothing is traced or measured until :func:`instrument` is called: it
subscribes to the event bus, so a process that never calls it pays nothing
(the sending paths check one attribute). It needs ``opentelemetry-api``
(the ``otel`` extra); spans and metrics go where the
application's OpenTelemetry SDK sends them.

Spans: one ``smtp batch`` (INTERNAL) per list of messages, and one
``smtp send`` (CLIENT) per message attempt, child of its batch, from the
moment the message was prepared for the wire to its outcome. Metrics and
attributes are listed in the README's "Observability" section. Addresses
never appear unless ``include_addresses=True``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from . import events
from .outcomes import Verdict

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - the extra is installed in every test run
    from .extras import install_hint

    raise ImportError(
        f"smtp_backends.telemetry needs OpenTelemetry: {install_hint('otel')}"
    ) from exc

__all__ = (
    "ATTRIBUTES",
    "INSTRUMENTATION_NAME",
    "METRICS",
    "Telemetry",
    "instrument",
    "uninstrument",
)

#: The instrumentation scope's name (of the tracer and the meter).
INSTRUMENTATION_NAME = "smtp_backends"

#: Every metric: name -> (instrument, unit, description).
METRICS: Mapping[str, tuple[str, str, str]] = {
    "smtp.client.messages": (
        "Counter",
        "{message}",
        "Messages whose outcome is known, by outcome (smtp.outcome).",
    ),
    "smtp.client.recipients": (
        "Counter",
        "{recipient}",
        "Envelope recipients of those messages, by smtp.recipient.outcome.",
    ),
    "smtp.client.message.size": (
        "Histogram",
        "By",
        "Size of each message that reached a connection, as sent.",
    ),
    "smtp.client.message.duration": (
        "Histogram",
        "s",
        "Send latency: from a message's preparation for the wire to its outcome.",
    ),
    "smtp.client.message.retries": (
        "Counter",
        "{message}",
        "Messages the pool sends again on another connection.",
    ),
    "smtp.client.connection.count": (
        "UpDownCounter",
        "{connection}",
        "Open connections, by smtp.client.connection.state (used: lent by a pool).",
    ),
    "smtp.client.connection.create_time": (
        "Histogram",
        "s",
        "Time to open a connection (TCP, greeting, EHLO, TLS, login).",
    ),
    "smtp.client.connection.wait_time": (
        "Histogram",
        "s",
        "Time a send waited for a pooled connection (opening it included).",
    ),
    "smtp.client.connection.use_time": (
        "Histogram",
        "s",
        "Time a pooled connection was lent to a send.",
    ),
    "smtp.client.connection.recycles": (
        "Counter",
        "{connection}",
        "Connections a pool retired, by smtp.client.connection.recycle_reason.",
    ),
}

#: Every attribute: name -> where it appears and what it holds.
ATTRIBUTES: Mapping[str, str] = {
    "server.address": "spans, metrics: the server's name (a Unix socket's path)",
    "server.port": "spans, metrics: the server's port",
    "smtp.outcome": (
        "message spans, smtp.client.messages/message.*: sent, refused, retryable, "
        "permanent, unknown-outcome, cancelled (retried on a retried attempt's span)"
    ),
    "smtp.response.status_code": "message spans: the reply code that decided the outcome",
    "smtp.message.id": "message spans: the Message-ID header",
    "smtp.message.size": "message spans: bytes sent",
    "smtp.message.recipient_count": "message spans: envelope recipients",
    "smtp.message.refused_count": "message spans: recipients refused",
    "smtp.batch.size": "batch spans: messages in the batch",
    "smtp.batch.sent": "batch spans: messages accepted",
    "smtp.batch.failed": "batch spans: messages not accepted",
    "error.type": "message spans: the exception's class for a failure",
    "smtp.recipient.outcome": "smtp.client.recipients: accepted, refused, failed, unknown",
    "smtp.client.connection.state": "smtp.client.connection.count: used, idle",
    "smtp.client.connection.recycle_reason": "recycles: max-messages, idle, check-failed",
    "smtp.envelope.sender": "message spans, only with include_addresses=True",
    "smtp.envelope.recipients": "message spans, only with include_addresses=True",
    "smtp.recipient.address": "refused-recipient span events, only with include_addresses=True",
}

_FINAL = (events.MessageSent, events.MessageFailed, events.OutcomeUnknown)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Telemetry:
    """An event subscriber that records spans and metrics.

    Build it with :func:`instrument` (which subscribes it).

    Args:
        tracer_provider / meter_provider: where spans and metrics go (None:
            the global providers).
        include_addresses: put the envelope's addresses on message spans.
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        include_addresses: bool = False,
    ) -> None:
        from . import __version__

        self.include_addresses = include_addresses
        self.tracer = trace.get_tracer(
            INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)
        made: dict[str, Any] = {}
        for name, (kind, unit, description) in METRICS.items():
            create = getattr(meter, f"create_{_snake(kind)}")
            made[name] = create(name, unit=unit, description=description)
        self._instruments = made
        self._batches: dict[int, Any] = {}
        self._lock = threading.Lock()
        # RecipientRefused events come just before their message's final event,
        # in the same thread: gathered here and put on that message's span.
        self._refused = threading.local()

    def __call__(self, event: events.Event) -> None:
        """Record one event."""
        if isinstance(event, events.RecipientRefused):
            pending = getattr(self._refused, "events", None)
            if pending is None:
                pending = self._refused.events = []
            pending.append(event)
        elif isinstance(event, (*_FINAL, events.MessageRetried, events.MessageCancelled)):
            self._message(event)
        elif isinstance(event, events.BatchStarted):
            self._batch_started(event)
        elif isinstance(event, events.BatchFinished):
            self._batch_finished(event)
        else:
            self._connection(event)

    # Attributes ---------------------------------------------------------------

    @staticmethod
    def _server(event: events.Event) -> dict[str, Any]:
        attributes: dict[str, Any] = {"server.address": event.host}
        if event.port is not None:
            attributes["server.port"] = event.port
        return attributes

    # Spans ------------------------------------------------------------------------

    def _batch_started(self, event: events.BatchStarted) -> None:
        attributes = {**self._server(event), "smtp.batch.size": event.size}
        span = self.tracer.start_span(
            "smtp batch",
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_ns(event.time),
        )
        if event.batch is not None:
            with self._lock:
                self._batches[event.batch] = span

    def _batch_finished(self, event: events.BatchFinished) -> None:
        with self._lock:
            span = self._batches.pop(event.batch, None) if event.batch is not None else None
        if span is None:
            return
        span.set_attribute("smtp.batch.sent", event.sent)
        span.set_attribute("smtp.batch.failed", event.failed)
        span.end(end_time=_ns(event.time))

    def _message(self, event: events.MessageEvent) -> None:
        refused: list[events.RecipientRefused] = getattr(self._refused, "events", None) or []
        self._refused.events = []
        outcome = _outcome(event)
        server = self._server(event)
        attributes: dict[str, Any] = {
            **server,
            "smtp.outcome": outcome,
            "smtp.message.recipient_count": event.recipient_count,
        }
        if event.message_id is not None:
            attributes["smtp.message.id"] = event.message_id
        if event.size:
            attributes["smtp.message.size"] = event.size
        code = getattr(event, "code", None)
        if code is not None:
            attributes["smtp.response.status_code"] = code
        if refused or isinstance(event, events.MessageSent):
            attributes["smtp.message.refused_count"] = len(refused)
        error = getattr(event, "error", None)
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        if self.include_addresses:
            attributes["smtp.envelope.sender"] = event.sender
            attributes["smtp.envelope.recipients"] = list(event.recipients)

        with self._lock:
            parent = self._batches.get(event.batch) if event.batch is not None else None
        context = trace.set_span_in_context(parent) if parent is not None else None
        start = event.started or event.time
        span = self.tracer.start_span(
            "smtp send",
            context=context if context is not None else otel_context.get_current(),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(start),
        )
        for refusal in refused:
            details: dict[str, Any] = {
                "smtp.response.status_code": refusal.code,
                "smtp.outcome": refusal.verdict.value,
            }
            if self.include_addresses:
                details["smtp.recipient.address"] = refusal.recipient
            span.add_event("smtp.recipient.refused", details)
        if outcome not in (Verdict.SENT.value, Verdict.REFUSED.value, "cancelled"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, _describe(error)))
        span.end(end_time=_ns(start + event.duration))
        self._message_metrics(event, outcome, server, len(refused))

    # Metrics ----------------------------------------------------------------------

    def _message_metrics(
        self, event: events.MessageEvent, outcome: str, server: dict[str, Any], refused: int
    ) -> None:
        get = self._instruments.__getitem__
        if isinstance(event, events.MessageRetried):
            get("smtp.client.message.retries").add(1, server)
            return
        by_outcome = {**server, "smtp.outcome": outcome}
        get("smtp.client.messages").add(1, by_outcome)
        recipients = get("smtp.client.recipients")
        if isinstance(event, events.MessageSent):
            accepted = event.recipient_count - refused
            if accepted:
                recipients.add(accepted, {**server, "smtp.recipient.outcome": "accepted"})
        if refused:
            recipients.add(refused, {**server, "smtp.recipient.outcome": "refused"})
        rest = event.recipient_count - refused
        if rest and not isinstance(event, events.MessageSent):
            kind = "unknown" if isinstance(event, events.OutcomeUnknown) else "failed"
            recipients.add(rest, {**server, "smtp.recipient.outcome": kind})
        if event.size:  # it reached a connection
            get("smtp.client.message.size").record(event.size, by_outcome)
            get("smtp.client.message.duration").record(event.duration, by_outcome)

    def _connection(self, event: events.Event) -> None:
        get = self._instruments.__getitem__
        server = self._server(event)
        count = get("smtp.client.connection.count")
        idle = {**server, "smtp.client.connection.state": "idle"}
        used = {**server, "smtp.client.connection.state": "used"}
        if isinstance(event, events.ConnectionOpened):
            count.add(1, idle)
            get("smtp.client.connection.create_time").record(event.duration, server)
        elif isinstance(event, events.ConnectionClosed):
            count.add(-1, idle)
        elif isinstance(event, events.ConnectionAcquired):
            count.add(-1, idle)
            count.add(1, used)
            get("smtp.client.connection.wait_time").record(event.wait, server)
        elif isinstance(event, events.ConnectionReleased):
            count.add(-1, used)
            count.add(1, idle)
            get("smtp.client.connection.use_time").record(event.held, server)
        elif isinstance(event, events.ConnectionRecycled):
            reason = {**server, "smtp.client.connection.recycle_reason": event.reason}
            get("smtp.client.connection.recycles").add(1, reason)


def _snake(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")


def _outcome(event: events.MessageEvent) -> str:
    if isinstance(event, events.MessageSent):
        return event.verdict.value
    if isinstance(event, events.MessageFailed):
        return event.verdict.value
    if isinstance(event, events.OutcomeUnknown):
        return Verdict.UNKNOWN.value
    if isinstance(event, events.MessageCancelled):
        return "cancelled"
    return "retried"


def _describe(error: object) -> str:
    # The class only: an error's text may quote addresses.
    return type(error).__qualname__ if error is not None else "failed"


_installed: Telemetry | None = None
_install_lock = threading.Lock()


def instrument(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    include_addresses: bool = False,
) -> Telemetry:
    """Start recording spans and metrics (replacing an earlier :func:`instrument`).

    Args:
        tracer_provider / meter_provider: where they go (None: the global
            providers of ``opentelemetry.trace`` and ``opentelemetry.metrics``).
        include_addresses: put envelope addresses on spans (off by default:
            addresses are personal data).

    Returns:
        The subscriber (see :class:`Telemetry`).
    """
    global _installed
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        include_addresses=include_addresses,
    )
    with _install_lock:
        if _installed is not None:
            events.unsubscribe(_installed)
        _installed = telemetry
        events.subscribe(telemetry)
    return telemetry


def uninstrument() -> None:
    """Stop recording (the sending paths are back to checking one attribute)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            events.unsubscribe(_installed)
            _installed = None
