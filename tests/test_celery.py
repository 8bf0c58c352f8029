"""smtp_backends.celery and the queued paths of the Django and Flask adapters, in-process.

No Celery worker here: the task body (:meth:`SMTPQueue.deliver`, :meth:`SMTPQueue.run_task`)
runs in this process against aiosmtpd with an in-memory dedupe store; what is published is
read back from Celery's in-memory broker (real JSON serialisation). Eager mode is used only
to check that the adapters hand the right bytes and envelope to the task. Acks, redelivery
and retries through a real broker are in integrations/test_celery.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.test import override_settings

from smtp_backends import (
    SMTPCertificateError,
    SMTPConnectError,
    SMTPDataError,
    SMTPNotSupported,
    SMTPPool,
    SMTPPoolClosedError,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
    bridge,
)
from smtp_backends import celery as queued
from smtp_backends.celery import (
    Failure,
    QueuedMessage,
    RedisDedupe,
    SMTPQueue,
    classify,
    message_id_of,
)
from tests.django_project import setup as setup_django
from tests.servers import SMTPServer

setup_django()

from smtp_backends.django import CeleryBackend, register_celery  # noqa: E402
from smtp_backends.django import queued as django_queued  # noqa: E402

SENDER = "from@example.com"
DATA = b"Message-ID: <one@example.com>\r\nSubject: hi\r\n\r\nBody \xff\r\n"


class MemoryStore:
    """An in-process dedupe store."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.fail_marks = False

    def seen(self, keys: Sequence[str]) -> set[str]:
        return {key for key in keys if key in self.keys}

    def mark(self, key: str) -> None:
        if self.fail_marks:
            raise ConnectionError("store down")
        self.keys.add(key)


class FakeTask:
    """What run_task needs of a bound Celery task."""

    class Retry(Exception):
        pass

    def __init__(self, retries: int = 0) -> None:
        self.request = type("Request", (), {"retries": retries})()
        self.retried: list[dict[str, Any]] = []

    def retry(self, **options: Any) -> Exception:
        self.retried.append(options)
        return self.Retry()


def make_app(**conf: Any) -> Celery:
    app = Celery("smtp_backends_tests", broker="memory://", set_as_current=False)
    app.conf.update(task_default_queue="mail", **conf)
    return app


@pytest.fixture
def no_bridge(make_smtpd: Any) -> Iterator[None]:
    """Pools made by the test close before its servers stop."""
    bridge.shutdown()
    yield
    bridge.shutdown()


def make_queue(server: SMTPServer | None = None, **options: Any) -> SMTPQueue:
    smtp = {"hostname": "127.0.0.1", "port": server.port if server else 9, "timeout": 5}
    options.setdefault("dedupe", MemoryStore())
    return SMTPQueue(make_app(), smtp=smtp, **options)


def payload(queue: SMTPQueue, *messages: QueuedMessage) -> Any:
    """A payload as the worker receives it: through JSON."""
    return json.loads(json.dumps(queue.payload(messages)))


# ----------------------------------------------------------------------------- messages


def test_message_id_is_read_from_the_header_block() -> None:
    assert message_id_of(DATA) == "<one@example.com>"
    assert message_id_of(b"Message-Id:\n <two@x>\nSubject: a\n\nMessage-ID: <no@x>\n") == "<two@x>"
    assert message_id_of(b"Subject: no body") is None
    assert message_id_of(b"Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n") is None


def test_queued_message_round_trips_exact_bytes_through_json() -> None:
    message = QueuedMessage(SENDER, "to@example.com", DATA)
    assert message.message_id == "<one@example.com>"
    assert message.recipients == ("to@example.com",)
    wire = json.loads(json.dumps(message.to_json()))
    assert base64.b64decode(wire["data"]) == DATA
    again = QueuedMessage.from_json(wire)
    assert again == message and again.key == message.key and again.data == DATA


def test_message_id_fallback_and_keys() -> None:
    anonymous = QueuedMessage(SENDER, ["a@x.org"], b"Subject: x\r\n\r\nbody\r\n")
    assert anonymous.message_id.startswith("sha256:")
    assert QueuedMessage(SENDER, ["a@x.org"], DATA, "<given@x>").message_id == "<given@x>"
    message = QueuedMessage(SENDER, ["a@x.org", "b@x.org"], DATA)
    subset = message.with_recipients(["b@x.org"])
    assert subset.message_id == message.message_id and subset.key != message.key


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((SENDER, ["a@x.org"], "text"), TypeError),
        ((SENDER, [1], DATA), TypeError),
        ((SENDER, [], DATA), ValueError),
    ],
)
def test_invalid_messages(args: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        QueuedMessage(*args)


def test_from_json_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a queued message"):
        QueuedMessage.from_json({"id": "x", "from": SENDER, "to": ["a@x"], "data": "%%%"})
    with pytest.raises(ValueError, match="not a queued message"):
        QueuedMessage.from_json({"id": "x"})


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (SMTPSenderRefused(451, "later", SENDER), "transient"),
        (SMTPSenderRefused(550, "no", SENDER), "permanent"),
        (SMTPDataError(452, "full"), "transient"),
        (SMTPDataError(554, "spam"), "permanent"),
        (SMTPRecipientsRefused([SMTPRecipientRefused(450, "busy", "a@x")]), "transient"),
        (SMTPRecipientsRefused([SMTPRecipientRefused(550, "no", "a@x")]), "permanent"),
        (SMTPConnectError("refused"), "transient"),
        (SMTPServerDisconnected("lost before data"), "transient"),
        (SMTPReadTimeoutError("slow"), "transient"),
        (SMTPPoolClosedError("closing"), "transient"),
        (ConnectionRefusedError(111, "refused"), "transient"),
        (SMTPUnknownOutcomeError("after the dot"), "unknown-outcome"),
        (SMTPUnknownOutcomeTimeoutError("after the dot"), "unknown-outcome"),
        (SMTPCertificateError("bad cert"), "permanent"),
        (SMTPProtocolError("garbage"), "permanent"),
        (SMTPNotSupported("no SMTPUTF8"), "permanent"),
        (ValueError("bad address"), "permanent"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value,
)
def test_classify(error: Exception, kind: str) -> None:
    assert classify(error) == kind


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"batch_size": 0}, ValueError),
        ({"batch_size": True}, ValueError),
        ({"max_retries": -1}, ValueError),
        ({"retry_backoff": -1}, ValueError),
        ({"smtp": 42}, TypeError),
        ({"smtp": {"port": "x"}}, (TypeError, ValueError)),
    ],
)
def test_invalid_queue_options(options: dict[str, Any], error: Any) -> None:
    options.setdefault("smtp", {"hostname": "127.0.0.1"})
    with pytest.raises(error):
        SMTPQueue(make_app(), **options)


def test_register_is_per_app_and_per_name() -> None:
    app = make_app()
    first = queued.register(app, smtp={"hostname": "127.0.0.1"})
    assert queued.get_queue(app) is first
    assert first.task.name == queued.DEFAULT_TASK_NAME
    assert app.tasks[queued.DEFAULT_TASK_NAME].acks_late
    assert app.tasks[queued.DEFAULT_TASK_NAME].reject_on_worker_lost
    with pytest.raises(ValueError, match="already registered"):
        queued.register(app, smtp={"hostname": "127.0.0.1"})
    other = queued.register(app, smtp={"hostname": "127.0.0.1"}, name="other")
    assert queued.get_queue(app, "other") is other
    assert queued.get_queue(make_app()) is None
    assert "SMTPQueue" in repr(first)
    # Not registered on apps made afterwards (no shared task).
    assert queued.DEFAULT_TASK_NAME not in make_app().tasks


def test_dedupe_store_choices() -> None:
    smtp = {"hostname": "127.0.0.1"}
    redis_app = make_app()
    redis_app.conf.broker_url = "redis://127.0.0.1:6390/3"
    store = SMTPQueue(redis_app, smtp=smtp).dedupe_store()
    assert isinstance(store, RedisDedupe) and store.url == "redis://127.0.0.1:6390/3"
    assert "6390" in repr(store)
    assert SMTPQueue(make_app(), smtp=smtp, dedupe=False).dedupe_store() is None
    named = SMTPQueue(make_app(), smtp=smtp, dedupe="redis://h/1", dedupe_ttl=60).dedupe_store()
    assert isinstance(named, RedisDedupe) and named.ttl == 60
    with pytest.raises(ValueError, match="not Redis"):
        SMTPQueue(make_app(), smtp=smtp, dedupe=True).dedupe_store()
    with pytest.raises(ValueError, match="ttl"):
        RedisDedupe("redis://h", ttl=0)


@pytest.mark.parametrize(
    ("broker", "url"),
    [
        ("redis://h:1/0", "redis://h:1/0"),
        (["rediss://h/0", "rediss://g/0"], "rediss://h/0"),
        ("redis://a/0;redis://b/0", "redis://a/0"),
        ("redis+socket:///run/redis.sock", "unix:///run/redis.sock"),
        ("amqp://guest@h//", None),
        ([], None),
        (None, None),
    ],
)
def test_redis_url_of_broker(broker: Any, url: str | None) -> None:
    assert queued._redis_url_of(broker) == url


def test_backoff_grows_and_is_capped() -> None:
    queue = make_queue(retry_backoff=2, retry_backoff_max=10, retry_jitter=False)
    assert [queue.backoff(n) for n in range(5)] == [2, 4, 8, 10, 10]
    jittered = make_queue(retry_backoff=2, retry_backoff_max=10)
    assert all(2 <= jittered.backoff(2) <= 8 for _ in range(20))


# ----------------------------------------------------------------------------- publishing


def published(app: Celery, queue_name: str = "mail") -> list[Any]:
    """The task messages waiting in the in-memory broker, decoded."""
    bodies = []
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue_name)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                assert message.content_type == "application/json"
                bodies.append(json.loads(message.body))
                message.ack()
        finally:
            simple.close()
    return bodies


def test_enqueue_many_splits_into_json_batches() -> None:
    queue = make_queue(batch_size=40)
    items = [(SENDER, [f"u{n}@example.com"], DATA.replace(b"one", b"m%d" % n)) for n in range(100)]
    assert queue.enqueue_many(items, profile="eu") == 100
    assert queue.enqueue_many([]) == 0
    bodies = published(queue.app)
    assert [len(args[0]["messages"]) for args, _kwargs, _embed in bodies] == [40, 40, 20]
    first = bodies[0][0][0]
    assert first["v"] == 1 and first["profile"] == "eu"
    assert base64.b64decode(first["messages"][0]["data"]) == items[0][2]
    assert first["messages"][3]["id"] == "<m3@example.com>"


def test_enqueue_one_and_queue_routing() -> None:
    queue = make_queue(queue="bulk")
    result = queue.enqueue(SENDER, "to@example.com", DATA, message_id="<x@y>")
    assert result.id
    queue.enqueue_many([QueuedMessage(SENDER, ["a@x.org"], DATA)], queue="mail", countdown=0)
    (bulk,) = published(queue.app, "bulk")
    assert bulk[0][0]["messages"][0]["id"] == "<x@y>"
    assert len(published(queue.app, "mail")) == 1


def test_enqueue_refuses_bad_items_before_publishing() -> None:
    queue = make_queue()
    with pytest.raises(TypeError):
        queue.enqueue_many([(SENDER, ["a@x.org"], DATA), "not a message"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        queue.enqueue(SENDER, ["a@x.org"], "text")  # type: ignore[arg-type]
    assert published(queue.app) == []


# ----------------------------------------------------------------------------- delivering


@pytest.mark.usefixtures("no_bridge")
def test_deliver_sends_exact_bytes_records_and_skips_on_redelivery(smtpd: SMTPServer) -> None:
    store = MemoryStore()
    queue = make_queue(smtpd, dedupe=store)
    messages = [
        QueuedMessage(SENDER, [f"u{n}@example.com"], DATA.replace(b"one", b"d%d" % n))
        for n in range(5)
    ]
    report = queue.deliver(payload(queue, *messages))
    assert report.summary() == {"sent": 5, "skipped": 0, "failed": 0, "retrying": 0}
    assert sorted(m.original_content for m in smtpd.messages) == sorted(m.data for m in messages)
    assert store.keys == {m.key for m in messages}
    # The same task delivered again (a worker died before acknowledging it): nothing resent.
    again = queue.deliver(payload(queue, *messages))
    assert again.summary() == {"sent": 0, "skipped": 5, "failed": 0, "retrying": 0}
    assert len(smtpd.messages) == 5
    assert isinstance(queue.pool(), SMTPPool) and queue.pool() is queue.pool()


@pytest.mark.usefixtures("no_bridge")
def test_partial_refusal_retries_only_the_4xx_recipients(smtpd: SMTPServer) -> None:
    store = MemoryStore()
    queue = make_queue(smtpd, dedupe=store)
    message = QueuedMessage(
        SENDER, ["ok@example.com", "tempfail@example.com", "refuse@x.org"], DATA
    )
    report = queue.deliver(payload(queue, message))
    assert report.sent == 1 and message.key in store.keys
    assert smtpd.messages[0].rcpt_tos == ["ok@example.com"]
    ((again, error),) = report.retry
    assert again.recipients == ("tempfail@example.com",) and again.data == DATA
    assert again.message_id == message.message_id and again.key not in store.keys
    assert getattr(error, "code", None) == 450
    (failure,) = report.failed
    assert failure.recipients == ("refuse@x.org",) and failure.reason == "permanent"


@pytest.mark.usefixtures("no_bridge")
def test_all_refused_data_refused_and_connection_refused(smtpd: SMTPServer) -> None:
    queue = make_queue(smtpd)
    everyone = QueuedMessage(SENDER, ["tempfail@example.com", "refuse@example.com"], DATA)
    refused_data = QueuedMessage(SENDER, ["a@example.com"], b"X-Test-Fail-Data: 1\r\n\r\nx\r\n")
    report = queue.deliver(payload(queue, everyone, refused_data))
    assert report.sent == 0
    assert [m.recipients for m, _ in report.retry] == [("tempfail@example.com",)]
    assert {f.recipients for f in report.failed} == {("refuse@example.com",), ("a@example.com",)}
    assert all(f.reason == "permanent" for f in report.failed)

    nobody_listens = make_queue(None)
    report = nobody_listens.deliver(payload(nobody_listens, everyone))
    assert [m for m, _ in report.retry] == [everyone] and not report.failed


@pytest.mark.usefixtures("no_bridge")
def test_a_store_that_cannot_record_is_logged_not_fatal(
    smtpd: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    store.fail_marks = True
    queue = make_queue(smtpd, dedupe=store)
    with caplog.at_level(logging.ERROR, "smtp_backends"):
        report = queue.deliver(payload(queue, QueuedMessage(SENDER, ["a@example.com"], DATA)))
    assert report.sent == 1
    assert "could not record message <one@example.com>" in caplog.text


@pytest.mark.usefixtures("no_bridge")
def test_no_dedupe_store_and_a_pool_factory(smtpd: SMTPServer) -> None:
    profiles: list[str | None] = []

    def factory(profile: str | None) -> SMTPPool:
        profiles.append(profile)
        return SMTPPool(hostname="127.0.0.1", port=smtpd.port)

    queue = SMTPQueue(make_app(), smtp=factory, dedupe=False)
    message = QueuedMessage(SENDER, ["a@example.com"], DATA)
    wire = json.loads(json.dumps(queue.payload([message], profile="eu")))
    assert queue.deliver(wire).sent == 1
    assert queue.deliver(wire).sent == 1  # nothing recorded: sent again
    assert profiles == ["eu"]

    broken = SMTPQueue(make_app(), smtp=lambda profile: "nope", dedupe=False)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not an SMTPPool"):
        broken.pool()


@pytest.mark.parametrize(
    "bad", [None, {"v": 2, "messages": []}, {"v": 1}, {"v": 1, "messages": [{"id": "x"}]}]
)
def test_deliver_refuses_malformed_payloads(bad: Any) -> None:
    with pytest.raises(ValueError):
        make_queue().deliver(bad)


def test_deliver_nothing_left_to_send() -> None:
    store = MemoryStore()
    queue = make_queue(dedupe=store)
    message = QueuedMessage(SENDER, ["a@example.com"], DATA)
    store.keys.add(message.key)
    assert queue.deliver(payload(queue, message)).summary()["skipped"] == 1


# ----------------------------------------------------------------------------- the task body


@pytest.mark.usefixtures("no_bridge")
def test_run_task_retries_transient_failures_only(smtpd: SMTPServer) -> None:
    failures: list[Failure] = []
    queue = make_queue(smtpd, on_failure=failures.append, retry_jitter=False, retry_backoff=3)
    ok = QueuedMessage(SENDER, ["a@example.com"], DATA)
    later = QueuedMessage(SENDER, ["tempfail@example.com"], DATA)
    never = QueuedMessage(SENDER, ["refuse@example.com"], DATA)
    task = FakeTask(retries=1)
    with pytest.raises(FakeTask.Retry):
        queue.run_task(task, payload(queue, ok, later, never))
    (options,) = task.retried
    assert options["countdown"] == 6
    (retry_payload,) = options["args"]
    assert [m["to"] for m in retry_payload["messages"]] == [["tempfail@example.com"]]
    assert [f.recipients for f in failures] == [("refuse@example.com",)]
    assert failures[0].attempts == 2


@pytest.mark.usefixtures("no_bridge")
def test_run_task_gives_up_after_max_retries_and_reports(
    smtpd: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[tuple[Any, Failure]] = []

    def receiver(sender: Any, failure: Failure, **_: Any) -> None:
        received.append((sender, failure))

    def broken_hook(failure: Failure) -> None:
        raise RuntimeError("hook bug")

    queue = make_queue(smtpd, max_retries=2, on_failure=broken_hook)
    queued.message_failed.connect(receiver, weak=False)
    try:
        with caplog.at_level(logging.ERROR, "smtp_backends"):
            summary = queue.run_task(
                FakeTask(retries=2),
                payload(queue, QueuedMessage(SENDER, ["tempfail@example.com"], DATA)),
            )
    finally:
        queued.message_failed.disconnect(receiver)
    assert summary == {"sent": 0, "skipped": 0, "failed": 1, "retrying": 0}
    ((sender, failure),) = received
    assert sender is queue and failure.reason == "retries-exhausted" and failure.attempts == 3
    assert "<one@example.com>" in caplog.text and "the on_failure hook failed" in caplog.text


def test_a_failing_signal_receiver_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def receiver(sender: Any, **_: Any) -> None:
        raise RuntimeError("receiver bug")

    hooked: list[Failure] = []
    failure = Failure("<x@y>", SENDER, ("a@x",), SMTPDataError(554, "no"), "permanent", 1)
    queued.message_failed.connect(receiver, weak=False)
    try:
        with caplog.at_level(logging.ERROR):
            make_queue(on_failure=hooked.append).report_failure(failure)
    finally:
        queued.message_failed.disconnect(receiver)
    assert "receiver bug" in caplog.text and hooked == [failure]


@pytest.mark.usefixtures("no_bridge")
def test_worker_shutdown_closes_this_process_pools(smtpd: SMTPServer) -> None:
    queue = make_queue(smtpd)
    queue.deliver(payload(queue, QueuedMessage(SENDER, ["a@example.com"], DATA)))
    pool = queue.pool()
    queued._close_pools()
    assert pool.closed
    queued._close_pools()  # nothing left: a no-op


# ----------------------------------------------------------------------------- Redis store


def test_redis_dedupe_against_a_real_server() -> None:
    support = pytest.importorskip("integrations.celery_support")
    reason = support.missing_requirements()
    if reason is not None:
        from integrations.requirements import missing

        missing(reason)  # fails under CI, where redis-server is installed
    server = support.start_redis()
    try:
        store = RedisDedupe(server.url, ttl=30, prefix="t:")
        assert store.seen([]) == set()
        assert store.seen(["a", "b"]) == set()
        store.mark("a")
        assert store.seen(["a", "b"]) == {"a"}
        assert 0 < store.client.ttl("t:a") <= 30
        store.client.close()
    finally:
        server.stop()


# ----------------------------------------------------------------------------- Django


EAGER_APP = make_app(task_always_eager=True, task_eager_propagates=True)


def django_message(n: int = 0, **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("to", [f"user{n}@example.com"])
    return EmailMessage(
        subject=f"S{n}", body="Body\n", from_email="Web <web@example.com>", **kwargs
    )


@pytest.fixture
def django_queue(smtpd: SMTPServer, no_bridge: None) -> Iterator[dict[str, Any]]:
    setting = {
        "app": "tests.test_celery.EAGER_APP",
        "task": f"tests.django.{os.urandom(4).hex()}",
        "batch_size": 2,
        "smtp": {"host": "127.0.0.1", "port": smtpd.port, "pool_size": 1},
        "dedupe": False,
    }
    with override_settings(SMTP_BACKENDS_CELERY=setting):
        yield setting


def test_celery_backend_queues_the_stock_bytes_and_envelope(
    smtpd: SMTPServer, django_queue: dict[str, Any]
) -> None:
    backend = CeleryBackend()
    messages = [django_message(n, bcc=["hidden@example.com"]) for n in range(3)]
    messages.append(EmailMessage(subject="nobody", body="x", from_email="a@example.com"))
    assert backend.send_messages(messages) == 3
    assert backend.send_messages([]) == 0
    assert backend.send_messages([messages[-1]]) == 0
    assert len(smtpd.messages) == 3
    first = next(m for m in smtpd.messages if m.rcpt_tos[0] == "user0@example.com")
    assert first.mail_from == "web@example.com"
    assert first.rcpt_tos == ["user0@example.com", "hidden@example.com"]
    assert b"hidden@example.com" not in first.original_content
    assert b"Message-ID: " in first.original_content and b"\r\n" in first.original_content
    queue = backend.get_queue()
    assert queue.name == django_queue["task"] and queue is register_celery(EAGER_APP)
    assert backend.batch_size == 2


def test_celery_backend_options_and_errors(django_queue: dict[str, Any]) -> None:
    backend = CeleryBackend(app=EAGER_APP, queue="bulk", batch_size=7, fail_silently=True)
    assert (backend.celery_app(), backend.queue, backend.batch_size) == (EAGER_APP, "bulk", 7)
    assert backend.smtp == django_queue["smtp"]
    with override_settings(SMTP_BACKENDS_CELERY=None):
        with pytest.raises(ImproperlyConfigured, match="needs a Celery app"):
            CeleryBackend()
        with pytest.raises(ImproperlyConfigured, match="batch_size"):
            CeleryBackend(app=EAGER_APP, batch_size=0)
        with pytest.raises(ImproperlyConfigured, match="queue"):
            CeleryBackend(app=EAGER_APP, queue=5)  # type: ignore[arg-type]
    with (
        override_settings(SMTP_BACKENDS_CELERY={"app": "x", "colour": 1}),
        pytest.raises(ImproperlyConfigured, match="colour"),
    ):
        CeleryBackend()
    with (
        override_settings(SMTP_BACKENDS_CELERY=["app"]),
        pytest.raises(ImproperlyConfigured, match="must be a dict"),
    ):
        CeleryBackend()
    with pytest.raises(ValueError):
        CeleryBackend().send_messages([django_message(to=["bad\naddress@example.com"])])


def test_celery_backend_fail_silently_covers_the_broker(
    django_queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> int:
        raise ConnectionRefusedError(111, "broker down")

    monkeypatch.setattr(SMTPQueue, "enqueue_many", broker_down)
    assert CeleryBackend(fail_silently=True).send_messages([django_message()]) == 0
    with pytest.raises(ConnectionRefusedError):
        CeleryBackend().send_messages([django_message()])


def test_worker_pool_from_django_settings(smtpd: SMTPServer, django_queue: dict[str, Any]) -> None:
    pool = django_queued._worker_pool(None)
    assert (pool.config.hostname, pool.config.port, pool.max_connections) == (
        "127.0.0.1",
        smtpd.port,
        1,
    )
    with (
        override_settings(MAILERS={"queued": {"OPTIONS": {}}}),
        pytest.raises(ImproperlyConfigured, match="smtp"),
    ):
        django_queued._worker_pool("queued")


# ----------------------------------------------------------------------------- Flask


@pytest.fixture
def flask_mail(smtpd: SMTPServer, no_bridge: None) -> Iterator[Any]:
    from flask import Flask

    from smtp_backends.flask import Mail

    app = Flask("queued")
    app.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtpd.port,
        MAIL_DEFAULT_SENDER="flask@example.com",
        MAIL_SUPPRESS_SEND=False,
    )
    mail = Mail(app)
    with app.app_context():
        yield mail


def test_flask_send_queue_true(smtpd: SMTPServer, flask_mail: Any) -> None:
    from smtp_backends.flask import Message

    celery_app = make_app(task_always_eager=True, task_eager_propagates=True)
    queue = flask_mail.init_celery(celery_app, dedupe=False)
    assert flask_mail.state.task_queue is queue
    message = Message("hi", recipients=["to@example.com"], body="Body")
    with flask_mail.record_messages() as outbox:
        assert flask_mail.send(message, queue=True) == {}
    assert outbox == [message]
    (received,) = smtpd.messages
    assert received.mail_from == "flask@example.com"
    assert f"Message-ID: {message.msgId}".encode() in received.original_content
    with pytest.raises(ValueError, match="mail_options"):
        flask_mail.send(Message("x", recipients=["a@x.org"], mail_options=["SMTPUTF8"]), True)


async def test_flask_mail_queue_setting_and_asend(smtpd: SMTPServer, flask_mail: Any) -> None:
    from smtp_backends.flask import Message

    flask_mail.init_celery(make_app(task_always_eager=True), dedupe=False)
    flask_mail.state.queue = True  # MAIL_QUEUE
    assert await flask_mail.asend(Message("a", recipients=["to@example.com"], body="x")) == {}
    assert flask_mail.send(Message("b", recipients=["to@example.com"], body="x")) == {}
    assert len(smtpd.messages) == 2
    # Suppressed (testing): recorded only, never queued.
    flask_mail.state.suppress = True
    with flask_mail.record_messages() as outbox:
        flask_mail.send(Message("c", recipients=["to@example.com"], body="x"))
    assert len(outbox) == 1 and len(smtpd.messages) == 2


def test_flask_queue_needs_init_celery(flask_mail: Any) -> None:
    from flask import Flask

    from smtp_backends.flask import Mail, Message

    with pytest.raises(RuntimeError, match="init_celery"):
        flask_mail.send(Message("x", recipients=["a@example.com"], body="x"), queue=True)
    with pytest.raises(RuntimeError, match="init_app"):
        Mail().init_celery(make_app(), Flask("bare"))


def test_a_bridge_that_fails_as_a_whole_means_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    def bridge_down(*args: Any, **kwargs: Any) -> Any:
        raise SMTPPoolClosedError("The mail bridge shut down before the call finished")

    from smtp_backends import mailer

    monkeypatch.setattr(mailer, "run_sync", bridge_down)
    queue = make_queue()
    message = QueuedMessage(SENDER, ["a@example.com"], DATA)
    report = queue.deliver(payload(queue, message))
    assert [m for m, _ in report.retry] == [message]
