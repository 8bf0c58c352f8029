"""OpenTelemetry spans and metrics, read back with the SDK's in-memory exporter and reader.

Real sends to loopback servers; the SDK's providers are given to instrument() (never set
globally, so tests do not leak into each other).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from smtp_backends import SMTP, bridge, events, telemetry
from smtp_backends.mailer import Mailer
from smtp_backends.settings import MailerSettings
from tests.scripted import CLOSE, GroupServer, Item
from tests.servers import ScriptedServer, SMTPServer, free_port
from tests.test_pool import per_connection, pool_for

TIMEOUT = 10.0


class Otel:
    """An SDK tracer and meter provider whose output the test reads."""

    def __init__(self) -> None:
        self.spans_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.spans_exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) of every data point of ``metric``."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found += [(dict(p.attributes or {}), p) for p in m.data.data_points]
        return found

    def total(self, metric: str, where: dict[str, Any] | None = None, **dotted: Any) -> float:
        """The sum of ``metric``'s points whose attributes match (``a_b=`` means ``a.b``)."""
        wanted = {**(where or {}), **{k.replace("_", "."): v for k, v in dotted.items()}}
        return sum(
            p.value
            for attrs, p in self.points(metric)
            if all(attrs.get(k) == v for k, v in wanted.items())
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    otel = Otel()
    telemetry.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    yield otel
    telemetry.uninstrument()
    assert not events.bus.active
    otel.meter_provider.shutdown()
    otel.tracer_provider.shutdown()


def message(subject: str, to: str = "bob@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject}@test>"
    msg.set_content(f"Body of {subject}.\n")
    return msg


async def test_a_batch_span_with_a_span_per_message(smtpd: SMTPServer, otel: Otel) -> None:
    batch = [
        message("one", "a@example.com, refuse1@example.com"),
        message("two", "refuse2@example.com"),
        message("three"),
    ]
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        await client.send_messages(batch)

    (parent,) = otel.spans("smtp batch")
    assert parent.kind is SpanKind.INTERNAL
    assert parent.attributes is not None
    assert dict(parent.attributes) == {
        "server.address": smtpd.host,
        "server.port": smtpd.port,
        "smtp.batch.size": 3,
        "smtp.batch.sent": 2,
        "smtp.batch.failed": 1,
    }
    sends = otel.spans("smtp send")
    assert len(sends) == 3
    by_id = {s.attributes["smtp.message.id"]: s for s in sends if s.attributes}
    assert set(by_id) == {"<one@test>", "<two@test>", "<three@test>"}
    for span in sends:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == parent.context.span_id
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    one = by_id["<one@test>"]
    assert one.attributes is not None
    assert one.attributes["smtp.outcome"] == "refused"
    assert one.attributes["smtp.response.status_code"] == 250
    assert one.attributes["smtp.message.recipient_count"] == 2
    assert one.attributes["smtp.message.refused_count"] == 1
    assert one.attributes["smtp.message.size"] > 100  # type: ignore[operator]
    assert [e.name for e in one.events] == ["smtp.recipient.refused"]
    assert one.status.status_code is StatusCode.UNSET
    two = by_id["<two@test>"]
    assert two.attributes is not None
    assert two.attributes["smtp.outcome"] == "permanent"
    assert two.attributes["error.type"] == "SMTPRecipientsRefused"
    assert two.status.status_code is StatusCode.ERROR
    assert two.status.description == "SMTPRecipientsRefused"

    # Never an address unless asked.
    for span in otel.spans():
        text = repr(dict(span.attributes or {})) + repr(
            [dict(e.attributes or {}) for e in span.events]
        )
        assert "@example.com" not in text
        assert "alice" not in text


async def test_addresses_only_when_asked(smtpd: SMTPServer, otel: Otel) -> None:
    telemetry.instrument(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        include_addresses=True,
    )
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        await client.send_message(message("one", "a@example.com, refuse1@example.com"))
    assert len(events.bus.subscribers) == 1  # the second instrument() replaced the first
    (span,) = otel.spans("smtp send")
    assert span.attributes is not None
    assert span.attributes["smtp.envelope.sender"] == "alice@example.com"
    assert tuple(span.attributes["smtp.envelope.recipients"]) == (  # type: ignore[arg-type]
        "a@example.com",
        "refuse1@example.com",
    )
    (refused,) = span.events
    assert refused.attributes is not None
    assert refused.attributes["smtp.recipient.address"] == "refuse1@example.com"
    assert refused.attributes["smtp.response.status_code"] == 550
    assert otel.spans("smtp batch") == []  # a single send is no batch


async def test_message_and_recipient_counters_size_and_latency(
    smtpd: SMTPServer, otel: Otel
) -> None:
    async with pool_for(smtpd, max_connections=2) as pool:
        await pool.send_messages(
            [
                message("one", "a@example.com, refuse1@example.com"),
                message("two", "refuse2@example.com"),
                message("three", "b@example.com, c@example.com"),
            ]
        )
    server = {"server_address": smtpd.host}
    assert otel.total("smtp.client.messages", smtp_outcome="sent", **server) == 1
    assert otel.total("smtp.client.messages", smtp_outcome="refused", **server) == 1
    assert otel.total("smtp.client.messages", smtp_outcome="permanent", **server) == 1
    assert otel.total("smtp.client.recipients", smtp_recipient_outcome="accepted") == 3
    assert otel.total("smtp.client.recipients", smtp_recipient_outcome="refused") == 2
    sizes = otel.points("smtp.client.message.size")
    assert sum(p.count for _, p in sizes) == 3 and sum(p.sum for _, p in sizes) > 300
    latency = otel.points("smtp.client.message.duration")
    assert sum(p.count for _, p in latency) == 3 and all(p.min >= 0 for _, p in latency)

    waits = otel.points("smtp.client.connection.wait_time")
    assert sum(p.count for _, p in waits) >= 1
    assert sum(p.count for _, p in otel.points("smtp.client.connection.create_time")) >= 1
    assert sum(p.count for _, p in otel.points("smtp.client.connection.use_time")) >= 1
    # Every connection is closed now: nothing counted open, used or idle.
    assert otel.total("smtp.client.connection.count", smtp_client_connection_state="used") == 0
    assert otel.total("smtp.client.connection.count", smtp_client_connection_state="idle") == 0


async def test_connections_in_use_while_a_send_holds_one(smtpd: SMTPServer, otel: Otel) -> None:
    async with pool_for(smtpd) as pool:
        await pool.send_message(message("warm"))
        assert otel.total("smtp.client.connection.count", smtp_client_connection_state="idle") == 1
        entry_used: list[float] = []

        async def hold() -> None:
            async def operation(client: SMTP, send_timeout: object) -> None:
                entry_used.append(
                    otel.total("smtp.client.connection.count", smtp_client_connection_state="used")
                )

            await pool._with_client(operation, None)

        await hold()
        assert entry_used == [1]
    assert otel.total("smtp.client.connection.count", smtp_client_connection_state="used") == 0


async def test_unknown_outcome_and_retries(
    make_scripted_server: Callable[..., ScriptedServer], otel: Otel
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.verb == b"MAIL" and group.mails == 2:
            return CLOSE  # lost before the second message: retried elsewhere
        if connection == 2 and item.kind == "data" and len(group.data) == 2:
            return CLOSE  # lost after the dot: unknown
        return None

    scripted, _ = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=60) as pool:
        await pool.send_message(message("one"))
        await pool.send_message(message("two"))
        with pytest.raises(Exception):  # noqa: B017 - SMTPUnknownOutcomeError, tested elsewhere
            await pool.send_message(message("three"))
    assert otel.total("smtp.client.message.retries") == 1
    assert otel.total("smtp.client.messages", smtp_outcome="unknown-outcome") == 1
    assert otel.total("smtp.client.recipients", smtp_recipient_outcome="unknown") == 1
    outcomes = sorted(str((s.attributes or {})["smtp.outcome"]) for s in otel.spans("smtp send"))
    assert outcomes == ["retried", "sent", "sent", "unknown-outcome"]


def test_mailer_batches_from_sync_code_and_failures_without_a_connection(
    smtpd: SMTPServer, otel: Otel
) -> None:
    try:
        mailer = Mailer(MailerSettings(host=smtpd.host, port=smtpd.port, timeout=TIMEOUT))
        mailer.send([message("a"), message("b")])
        down = Mailer(MailerSettings(host="127.0.0.1", port=free_port(), timeout=2, pool_size=0))
        down.send([message("c")])
    finally:
        bridge.shutdown()
    batches = otel.spans("smtp batch")
    assert len(batches) == 2
    assert otel.total("smtp.client.messages", smtp_outcome="retryable") == 1
    assert otel.total("smtp.client.recipients", smtp_recipient_outcome="failed") == 0
    # A message that never reached a connection has no size or latency recorded.
    assert sum(p.count for _, p in otel.points("smtp.client.message.size")) == 2
    recycles = otel.points("smtp.client.connection.recycles")
    assert recycles == []


async def test_idle_recycling_is_counted(smtpd: SMTPServer, otel: Otel) -> None:
    async with pool_for(smtpd, idle_timeout=0.1) as pool:
        await pool.send_message(message("one"))
        await asyncio.sleep(0.4)
    assert (
        otel.total(
            "smtp.client.connection.recycles", {"smtp.client.connection.recycle_reason": "idle"}
        )
        == 1
    )


def test_metric_and_attribute_tables_match_the_docs() -> None:
    """The observability page (docs/guide/observability.md) names every metric and attribute."""
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "guide" / "observability.md").read_text()
    section = page[page.index("## OpenTelemetry") :]
    for name, (kind, unit, _) in telemetry.METRICS.items():
        assert f"`{name}`" in section and kind in section and f"`{unit}`" in section, name
    for name in telemetry.ATTRIBUTES:
        assert f"`{name}`" in section, name


def test_uninstrument_stops_recording(smtpd: SMTPServer) -> None:
    otel = Otel()
    telemetry.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    telemetry.uninstrument()
    telemetry.uninstrument()  # twice: nothing to do
    assert not events.bus.active
    asyncio.run(_send_one(smtpd))
    assert otel.spans() == []


async def _send_one(smtpd: SMTPServer) -> None:
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        await client.send_message(message("one"))


def test_spans_are_children_of_the_callers_span(smtpd: SMTPServer, otel: Otel) -> None:
    # A sync caller (a WSGI view): the batch runs on the bridge loop, its span under the view's.
    tracer = otel.tracer_provider.get_tracer("test")
    try:
        mailer = Mailer(MailerSettings(host=smtpd.host, port=smtpd.port, timeout=TIMEOUT))
        with tracer.start_as_current_span("view") as view:
            mailer.send([message("a"), message("b")])
    finally:
        bridge.shutdown()
    (batch,) = otel.spans("smtp batch")
    assert batch.parent is not None
    assert batch.parent.span_id == view.get_span_context().span_id
    assert batch.context.trace_id == view.get_span_context().trace_id
    assert all(
        s.parent is not None and s.parent.span_id == batch.context.span_id
        for s in otel.spans("smtp send")
    )


async def test_a_single_send_span_is_a_child_of_the_current_span(
    smtpd: SMTPServer, otel: Otel
) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        with tracer.start_as_current_span("task") as task:
            await client.send_message(message("one"))
    (send,) = otel.spans("smtp send")
    assert send.parent is not None and send.parent.span_id == task.get_span_context().span_id
