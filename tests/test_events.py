"""Events from the client, the pool and the Mailer, against real servers on loopback.

Each message's final outcome is reported exactly once, by the layer that knows it is final
(retries and unknown outcomes included); connection events follow the sockets; nobody
subscribed, no event is built at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from smtp_backends import SMTP, SMTPPool, bridge, event_hooks, events
from smtp_backends.mailer import Mailer, Outgoing
from smtp_backends.outcomes import Verdict
from smtp_backends.settings import MailerSettings
from tests.scripted import CLOSE, GroupServer, Item, then_close
from tests.servers import ScriptedServer, SMTPServer, free_port
from tests.test_pool import per_connection, pool_for, raw

TIMEOUT = 10.0


class Recorder:
    """A subscriber that keeps every event (thread-safe: the bridge loop emits too)."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: events.Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[events.Event]) -> list[Any]:
        with self._lock:
            return [event for event in self.events if isinstance(event, kind)]

    def finals(self) -> list[events.MessageEvent]:
        kinds = (events.MessageSent, events.MessageFailed, events.OutcomeUnknown)
        with self._lock:
            return [event for event in self.events if isinstance(event, kinds)]  # type: ignore[misc]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    with events.subscribed(recorder):
        yield recorder
    assert not events.bus.active


def message(subject: str, to: str = "bob@example.com", *, msgid: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = msgid or f"<{subject}@test>"
    msg.set_content(f"Body of {subject}.\n")
    return msg


def with_id(n: int) -> bytes:
    return f"Message-ID: <d{n:02}@test>\r\n".encode() + raw(f"d{n:02}")


# --------------------------------------------------------------------------- the registry


def test_subscribe_unsubscribe_and_the_active_flag() -> None:
    assert not events.bus.active
    heard: list[events.Event] = []
    subscriber = events.subscribe(heard.append, events.MessageSent)
    try:
        assert events.bus.active and events.bus.subscribers == [heard.append]
        events.emit(events.ConnectionOpened(host="h", port=25))
        sent = events.MessageSent(host="h", port=25, reply="ok")
        events.emit(sent)
        assert heard == [sent]
        events.subscribe(heard.append)  # again: every kind now, still one entry
        events.emit(events.ConnectionOpened(host="h", port=None))
        assert len(heard) == 2 and len(events.bus.subscribers) == 1
        assert heard[1].server == "h" and sent.server == "h:25"
    finally:
        assert events.unsubscribe(subscriber)
    assert not events.bus.active
    assert not events.unsubscribe(subscriber)
    with pytest.raises(TypeError):
        events.subscribe("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        events.subscribe(print, int)  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    event = events.MessageSent(host="h", port=25, recipients=("a@x",), size=10)
    with pytest.raises(AttributeError):
        event.size = 3  # type: ignore[misc]
    assert event.recipient_count == 1 and event.verdict is Verdict.SENT
    assert events.MessageSent(host="h", port=1, refused=1).verdict is Verdict.REFUSED
    assert events.OutcomeUnknown(host="h", port=1).verdict is Verdict.UNKNOWN


def test_a_raising_subscriber_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[events.Event] = []

    def broken(event: events.Event) -> None:
        raise RuntimeError("subscriber bug")

    with (
        events.subscribed(broken),
        events.subscribed(heard.append),
        caplog.at_level(logging.ERROR, logger="smtp_backends.events"),
    ):
        events.emit(events.ConnectionOpened(host="h", port=25))
    assert len(heard) == 1
    assert "subscriber bug" in caplog.text


async def test_coroutine_subscribers_run_on_the_loop_and_their_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[events.Event] = []

    async def slow(event: events.Event) -> None:
        await asyncio.sleep(0)
        heard.append(event)

    async def broken(event: events.Event) -> None:
        raise RuntimeError("async subscriber bug")

    with (
        events.subscribed(slow),
        events.subscribed(broken),
        caplog.at_level(logging.ERROR, logger="smtp_backends.events"),
    ):
        events.emit(events.ConnectionOpened(host="h", port=25))
        assert heard == []  # scheduled, not awaited by emit()
        await events.bus.drain()
        await asyncio.sleep(0)
    assert len(heard) == 1
    assert "async subscriber bug" in caplog.text


def test_coroutine_subscriber_without_a_running_loop_runs_on_the_bridge() -> None:
    done = threading.Event()
    threads: list[str] = []

    async def subscriber(event: events.Event) -> None:
        threads.append(threading.current_thread().name)
        done.set()

    try:
        with events.subscribed(subscriber):
            events.emit(events.ConnectionOpened(host="h", port=25))
            assert done.wait(TIMEOUT)
        assert threads and threads[0] != threading.current_thread().name
    finally:
        bridge.shutdown()


def test_message_id_of_reads_the_header_section_only() -> None:
    assert event_hooks.message_id_of(b"Subject: x\r\nMessage-Id: <a@b>\r\n\r\nbody") == "<a@b>"
    assert event_hooks.message_id_of(b"Message-ID:\r\n <folded@b>\r\n\r\n") == "<folded@b>"
    assert event_hooks.message_id_of(b"Subject: x\r\n\r\nMessage-ID: <body@b>\r\n") is None
    assert event_hooks.message_id_of("Message-ID: <s@b>\n\nbody") == "<s@b>"


# --------------------------------------------------------------------------- the client


async def test_client_batch_reports_each_outcome_once(
    smtpd: SMTPServer, recorder: Recorder
) -> None:
    batch: list[Any] = [
        message("ok", "a@example.com, refuse1@example.com"),
        message("nobody", "refuse2@example.com"),
        ("alice@example.com", ["c@example.com"], with_id(3)),
        lambda: (_ for _ in ()).throw(ValueError("cannot render")),
    ]
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        outcomes = await client.send_messages(batch)
    assert isinstance(outcomes[0], tuple) and isinstance(outcomes[3], ValueError)

    (started,) = recorder.of(events.BatchStarted)
    (finished,) = recorder.of(events.BatchFinished)
    assert started.size == finished.size == 4 and started.batch == finished.batch
    assert (finished.sent, finished.failed) == (2, 2) and finished.duration >= 0

    sent = recorder.of(events.MessageSent)
    assert [e.message_id for e in sent] == ["<ok@test>", "<d03@test>"]
    first = sent[0]
    assert first.refused == 1 and first.verdict is Verdict.REFUSED and first.code == 250
    assert first.reply and first.recipients == ("a@example.com", "refuse1@example.com")
    assert first.sender == "alice@example.com" and first.size > 100
    assert first.host == smtpd.host and first.port == smtpd.port
    assert first.batch == started.batch and first.duration >= 0 and first.started > 0

    refused = recorder.of(events.RecipientRefused)
    assert [(e.recipient, e.code, e.verdict) for e in refused] == [
        ("refuse1@example.com", 550, Verdict.PERMANENT),
        ("refuse2@example.com", 550, Verdict.PERMANENT),
    ]
    failed = recorder.of(events.MessageFailed)
    assert [(e.message_id, e.verdict) for e in failed] == [
        ("<nobody@test>", Verdict.PERMANENT),
        (None, Verdict.PERMANENT),
    ]
    assert isinstance(failed[1].error, ValueError) and failed[1].code is None
    assert len(recorder.finals()) == 4

    (opened,) = recorder.of(events.ConnectionOpened)
    (closed,) = recorder.of(events.ConnectionClosed)
    assert opened.duration > 0 and not opened.encrypted
    assert closed.clean and closed.lifetime > 0


async def test_client_single_sends_and_their_failures(
    smtpd: SMTPServer, recorder: Recorder
) -> None:
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        await client.send_message(message("one"))
        await client.sendmail("alice@example.com", "b@example.com", with_id(7))
        with pytest.raises(ValueError):
            await client.sendmail("alice@example.com", "not an address", with_id(8))
    assert recorder.of(events.BatchStarted) == []
    assert [e.message_id for e in recorder.of(events.MessageSent)] == ["<one@test>", "<d07@test>"]
    (failed,) = recorder.of(events.MessageFailed)
    assert failed.message_id == "<d08@test>" and failed.recipients == ("not an address",)
    assert failed.batch is None


async def test_tls_connection_is_reported_encrypted(
    smtpd_tls: SMTPServer, client_tls_context: Any, recorder: Recorder
) -> None:
    client = SMTP(
        hostname=smtpd_tls.host, port=smtpd_tls.port, use_tls=True, tls_context=client_tls_context
    )
    async with client:
        pass
    (opened,) = recorder.of(events.ConnectionOpened)
    assert opened.encrypted


# --------------------------------------------------------------------------- the pool


async def test_pool_retry_is_reported_then_the_final_outcome_once(
    make_scripted_server: Callable[..., ScriptedServer], recorder: Recorder
) -> None:
    # The first connection answers its third message, then drops: the messages behind it
    # go out on another connection. Each is reported sent exactly once.
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.kind == "data" and len(group.data) == 3:
            return then_close(b"250 2.0.0 queued\r\n")
        return None

    scripted, _ = per_connection(make_scripted_server, on_command)
    batch = [("alice@example.com", ["bob@example.com"], with_id(n)) for n in range(12)]
    async with pool_for(scripted, max_connections=1) as pool:
        outcomes = await asyncio.wait_for(pool.send_messages(batch), TIMEOUT)
    assert all(isinstance(o, tuple) for o in outcomes)
    sent = recorder.of(events.MessageSent)
    assert sorted(e.message_id for e in sent) == [f"<d{n:02}@test>" for n in range(12)]
    assert recorder.of(events.MessageFailed) == []
    retried = recorder.of(events.MessageRetried)
    assert retried and all(e.message_id is not None for e in retried)
    assert {e.message_id for e in retried} <= {e.message_id for e in sent[3:]}
    (finished,) = recorder.of(events.BatchFinished)
    assert (finished.sent, finished.failed) == (12, 0)
    assert len(recorder.of(events.ConnectionOpened)) == 2
    acquired = recorder.of(events.ConnectionAcquired)
    released = recorder.of(events.ConnectionReleased)
    assert len(acquired) == len(released) == 2
    assert all(e.in_use == 1 for e in acquired) and all(e.in_use == 0 for e in released)


async def test_pool_unknown_outcome_is_reported_once_and_never_retried(
    make_scripted_server: Callable[..., ScriptedServer], recorder: Recorder
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.kind == "data" and len(group.data) == 3:
            return CLOSE  # the third message arrived; its reply never leaves
        return None

    scripted, _ = per_connection(make_scripted_server, on_command)
    batch = [("alice@example.com", ["bob@example.com"], with_id(n)) for n in range(8)]
    async with pool_for(scripted, max_connections=2) as pool:
        await asyncio.wait_for(pool.send_messages(batch), TIMEOUT)
    (unknown,) = recorder.of(events.OutcomeUnknown)
    assert unknown.message_id not in {e.message_id for e in recorder.of(events.MessageRetried)}
    assert unknown.verdict is Verdict.UNKNOWN
    assert len(recorder.finals()) == 8
    assert len({e.message_id for e in recorder.finals()}) == 8


async def test_pool_single_send_retried_on_a_new_connection(
    make_scripted_server: Callable[..., ScriptedServer], recorder: Recorder
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.verb == b"MAIL" and group.mails == 2:
            return CLOSE
        return None

    scripted, _ = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=60) as pool:
        await pool.send_message(message("one"))
        await pool.send_message(message("two"))
    (retried,) = recorder.of(events.MessageRetried)
    assert retried.message_id == "<two@test>" and retried.error is not None
    assert [e.message_id for e in recorder.finals()] == ["<one@test>", "<two@test>"]


async def test_pool_retry_that_fails_too_is_reported_failed(
    make_scripted_server: Callable[..., ScriptedServer], recorder: Recorder
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if item.verb == b"MAIL" and (connection > 1 or group.mails == 2):
            return CLOSE
        return None

    scripted, _ = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=60) as pool:
        await pool.send_message(message("one"))
        with pytest.raises(Exception):  # noqa: B017 - the pool's own test checks the type
            await pool.send_message(message("two"))
    assert len(recorder.of(events.MessageRetried)) == 1
    (failed,) = recorder.of(events.MessageFailed)
    assert failed.message_id == "<two@test>" and failed.verdict is Verdict.RETRYABLE


async def test_pool_without_any_connection_reports_every_message_failed(
    recorder: Recorder,
) -> None:
    pool = SMTPPool(hostname="127.0.0.1", port=free_port(), timeout=2, max_connections=3)
    async with pool:
        await asyncio.wait_for(pool.send_messages([message(f"m{n}") for n in range(5)]), TIMEOUT)
        with pytest.raises(OSError):
            await pool.sendmail("alice@example.com", ["b@example.com"], with_id(1))
    failed = recorder.of(events.MessageFailed)
    assert [e.message_id for e in failed] == [f"<m{n}@test>" for n in range(5)] + ["<d01@test>"]
    assert all(e.verdict is Verdict.RETRYABLE for e in failed)
    assert recorder.of(events.ConnectionOpened) == []


async def test_pool_recycles_after_max_messages_and_when_idle(
    smtpd: SMTPServer, recorder: Recorder
) -> None:
    async with pool_for(smtpd, max_messages_per_connection=2, idle_timeout=0.2) as pool:
        for n in range(3):
            await pool.send_message(message(f"m{n}"))
        await asyncio.sleep(0.6)
    reasons = [(e.reason, e.messages) for e in recorder.of(events.ConnectionRecycled)]
    assert reasons == [("max-messages", 2), ("idle", 1)]
    assert len(recorder.of(events.ConnectionClosed)) == 2


async def test_pool_reports_a_connection_replaced_after_its_check(
    make_scripted_server: Callable[..., ScriptedServer], recorder: Recorder
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        return CLOSE if item.verb == b"NOOP" else None

    scripted, _ = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=0) as pool:
        await pool.send_message(message("one"))
        await pool.send_message(message("two"))
    recycled = recorder.of(events.ConnectionRecycled)
    assert [(e.reason, e.messages) for e in recycled] == [("check-failed", 1)]
    assert len(recorder.of(events.ConnectionOpened)) == 2


# --------------------------------------------------------------------------- the Mailer


def test_mailer_reports_from_the_bridge_in_one_batch(smtpd: SMTPServer, recorder: Recorder) -> None:
    try:
        mailer = Mailer(MailerSettings(host=smtpd.host, port=smtpd.port, timeout=TIMEOUT))
        items: list[Any] = [("alice@example.com", ["a@example.com"], with_id(n)) for n in range(3)]
        outcomes = mailer.send(items)
        assert all(isinstance(o, tuple) for o in outcomes)
        bad = Outgoing("alice@example.com", ["bad address"], with_id(9))
        (outcome,) = mailer.send([bad])
        assert isinstance(outcome, ValueError)
    finally:
        bridge.shutdown()
    batches = recorder.of(events.BatchStarted)
    assert [b.size for b in batches] == [3, 1]
    sent = recorder.of(events.MessageSent)
    assert {e.batch for e in sent} == {batches[0].batch}
    (failed,) = recorder.of(events.MessageFailed)
    assert failed.message_id == "<d09@test>" and failed.batch == batches[1].batch


def test_mailer_whose_server_is_down_reports_each_item() -> None:
    recorder = Recorder()
    settings = MailerSettings(host="127.0.0.1", port=free_port(), timeout=2, pool_size=0)
    try:
        with events.subscribed(recorder):
            Mailer(settings).send(
                [("a@example.com", ["b@example.com"], with_id(n)) for n in (1, 2)]
            )
    finally:
        bridge.shutdown()
    failed = recorder.of(events.MessageFailed)
    assert [e.message_id for e in failed] == ["<d01@test>", "<d02@test>"]
    (finished,) = recorder.of(events.BatchFinished)
    assert finished.failed == 2


async def test_a_raising_subscriber_never_breaks_sending(smtpd: SMTPServer) -> None:
    def broken(event: events.Event) -> None:
        raise RuntimeError("subscriber bug")

    with events.subscribed(broken):
        async with pool_for(smtpd) as pool:
            outcomes = await pool.send_messages([message(f"m{n}") for n in range(3)])
    assert all(isinstance(o, tuple) for o in outcomes)
    assert len(smtpd.messages) == 3


async def test_nobody_subscribed_no_event_is_built(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every builder fails if called: the sending paths must check the flag first.
    def forbidden(*args: object, **kwargs: object) -> Any:
        raise AssertionError("an event was built with nobody subscribed")

    for name in (
        "watch",
        "scoped",
        "report",
        "open_ledger",
        "connection_opened",
        "connection_closed",
        "acquired",
        "recycled",
    ):
        monkeypatch.setattr(event_hooks, name, forbidden)
    assert not events.bus.active
    async with pool_for(smtpd, max_messages_per_connection=1) as pool:
        await pool.send_messages([message(f"m{n}") for n in range(4)])
        await pool.send_message(message("single"))
    async with SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT) as client:
        await client.send_messages([message("direct")])
    assert len(smtpd.messages) == 6


def test_events_are_emitted_in_the_senders_context(smtpd: SMTPServer) -> None:
    # Sync callers send on the bridge loop; subscribers still see the caller's context.
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[tuple[str, str]] = []

    def subscriber(event: events.Event) -> None:
        seen.append((type(event).__name__, request_id.get()))

    request_id.set("req-42")
    try:
        with events.subscribed(subscriber, events.BatchStarted, events.MessageSent):
            mailer = Mailer(MailerSettings(host=smtpd.host, port=smtpd.port, timeout=TIMEOUT))
            mailer.send([message("one"), message("two")])
    finally:
        bridge.shutdown()
    assert seen == [
        ("BatchStarted", "req-42"),
        ("MessageSent", "req-42"),
        ("MessageSent", "req-42"),
    ]


async def test_a_layer_failing_as_a_whole_after_some_outcomes_reports_each_once(
    recorder: Recorder,
) -> None:
    # What the Mailer does when its pool fails mid-batch: one error for every item, although
    # the first item was sent and reported. The sent one stays sent; only the rest fail.
    config = SMTPPool(hostname="127.0.0.1", port=2525).config
    items = [("a@example.com", ["b@example.com"], with_id(n)) for n in range(3)]
    accepted = ({}, "2.0.0 queued")

    async def run(told: Callable[[int, Any], object]) -> list[Any]:
        scope = event_hooks._scope.get()
        event_hooks.report("127.0.0.1", 2525, scope, None, accepted)  # a client reported it
        told(0, accepted)
        raise ConnectionResetError("the pool went away")

    heard: list[int] = []
    with pytest.raises(ConnectionResetError):
        await event_hooks.scoped(
            config, items, run, batch=True, on_result=lambda i, o: heard.append(i)
        )
    assert heard == [0]
    assert len(recorder.of(events.MessageSent)) == 1
    failed = recorder.of(events.MessageFailed)
    assert [e.message_id for e in failed] == ["<d01@test>", "<d02@test>"]
    (finished,) = recorder.of(events.BatchFinished)
    assert (finished.sent, finished.failed) == (1, 2)
