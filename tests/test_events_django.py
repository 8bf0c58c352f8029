"""Django signals carrying the events, and pre_send, with the real backend and real servers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

from django.core.mail import EmailMessage

from smtp_backends import events
from smtp_backends.django import signals
from tests.django_project.testing import make_backend, no_bridge
from tests.servers import SMTPServer

__all__ = ("no_bridge",)  # the fixture, used by name

pytestmark = pytest.mark.usefixtures("no_bridge")


def message(subject: str, to: str = "to@example.com") -> EmailMessage:
    return EmailMessage(subject, "body", "from@example.com", [to])


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, events.Event]] = []
        self.lock = threading.Lock()

    def __call__(self, sender: Any, event: events.Event, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append((sender, event))


def test_event_signals_relay_only_while_connected(smtpd: SMTPServer) -> None:
    sent, refused, opened = Heard(), Heard(), Heard()
    signals.message_sent.connect(sent)
    signals.recipient_refused.connect(refused)
    signals.connection_opened.connect(opened)
    try:
        assert events.bus.active
        backend = make_backend(smtpd)
        partly = EmailMessage("two", "body", "from@example.com", ["b@x.org", "refuse@example.com"])
        count = backend.send_messages([message("one"), partly, message("three")])
        assert count == 3
    finally:
        signals.message_sent.disconnect(sent)
        signals.recipient_refused.disconnect(refused)
        signals.connection_opened.disconnect(opened)
    assert not events.bus.active
    assert [type(e) for _, e in sent.calls] == [events.MessageSent] * 3
    assert all(sender is events.MessageSent for sender, _ in sent.calls)
    assert all(isinstance(e, events.MessageSent) and e.reply for _, e in sent.calls)
    ((_, refusal),) = refused.calls
    assert isinstance(refusal, events.RecipientRefused)
    assert refusal.recipient == "refuse@example.com" and refusal.code == 550
    assert len(opened.calls) == 1


def test_a_raising_receiver_is_logged_and_the_mail_still_goes(
    smtpd: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, event: events.Event, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.message_sent.connect(broken)
    try:
        assert make_backend(smtpd).send_messages([message("one")]) == 1
    finally:
        signals.message_sent.disconnect(broken)
    assert len(smtpd.messages) == 1
    assert "receiver bug" in caplog.text


def test_weak_receivers_that_died_stop_the_relay(smtpd: SMTPServer) -> None:
    def make() -> Any:
        def receiver(sender: Any, event: events.Event, **kwargs: Any) -> None:
            raise AssertionError("collected: never called")

        return receiver

    signals.message_failed.connect(make())  # weak: collected at once
    assert events.bus.active
    events.emit(events.MessageFailed(host="h", port=25))
    assert not events.bus.active


def test_pre_send_alters_replaces_and_cancels(smtpd: SMTPServer) -> None:
    cancelled = Heard()

    def receiver(sender: Any, message: EmailMessage, backend: Any, **kwargs: Any) -> Any:
        assert sender is type(backend)
        if message.subject == "cancel by exception":
            raise events.CancelSend("opted out")
        if message.subject == "cancel by value":
            return False
        if message.subject == "replace":
            return EmailMessage("replaced", "new body", "from@example.com", ["new@example.com"])
        message.subject = f"[tagged] {message.subject}"
        return None

    signals.pre_send.connect(receiver)
    signals.message_cancelled.connect(cancelled)
    try:
        backend = make_backend(smtpd)
        count = backend.send_messages(
            [
                message("keep"),
                message("cancel by exception"),
                message("replace"),
                message("cancel by value"),
            ]
        )
        single = backend.send_messages([message("cancel by value")])
    finally:
        signals.pre_send.disconnect(receiver)
        signals.message_cancelled.disconnect(cancelled)
    assert count == 2 and single == 0  # a cancelled message is never counted as sent
    subjects = [str(m.message["Subject"]) for m in smtpd.messages]
    assert subjects == ["[tagged] keep", "replaced"]
    assert smtpd.messages[1].rcpt_tos == ["new@example.com"]
    reasons = [e.reason for _, e in cancelled.calls if isinstance(e, events.MessageCancelled)]
    assert reasons[0] == "opted out"
    assert reasons[1].startswith("cancelled by ") and "receiver" in reasons[1]
    assert len(reasons) == 3
    first = cancelled.calls[0][1]
    assert isinstance(first, events.MessageCancelled)
    assert first.recipients == ("to@example.com",) and first.port == smtpd.port


async def test_pre_send_in_async_sends(smtpd: SMTPServer) -> None:
    seen: list[str] = []

    def receiver(sender: Any, message: EmailMessage, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        if message.subject == "raise":
            raise events.CancelSend
        return False if message.subject == "no" else None

    signals.pre_send.connect(receiver)
    try:
        backend = make_backend(smtpd)
        count = await backend.asend_messages([message("yes"), message("no"), message("raise")])
    finally:
        signals.pre_send.disconnect(receiver)
    assert count == 1
    assert [str(m.message["Subject"]) for m in smtpd.messages] == ["yes"]
    # Sync receivers of an async send run off the event loop's thread.
    assert seen and all(name != threading.current_thread().name for name in seen)


def test_no_receivers_no_relay(smtpd: SMTPServer) -> None:
    assert not signals.pre_send.has_listeners()
    assert not events.bus.active
    assert make_backend(smtpd).send_messages([message("one")]) == 1


def test_pre_send_before_queueing_on_celery(smtpd: SMTPServer) -> None:
    pytest.importorskip("celery")
    from django.test import override_settings

    from smtp_backends.django import CeleryBackend
    from tests.test_celery import EAGER_APP

    setting = {
        "app": "tests.test_celery.EAGER_APP",
        "task": "tests.django.events_pre_send",
        "smtp": {"host": "127.0.0.1", "port": smtpd.port, "pool_size": 1},
        "dedupe": False,
    }

    def receiver(sender: Any, message: EmailMessage, **kwargs: Any) -> Any:
        return False if message.subject == "no" else None

    signals.pre_send.connect(receiver)
    try:
        with override_settings(SMTP_BACKENDS_CELERY=setting):
            backend = CeleryBackend(app=EAGER_APP)
            assert backend.send_messages([message("yes"), message("no")]) == 1
    finally:
        signals.pre_send.disconnect(receiver)
    assert [str(m.message["Subject"]) for m in smtpd.messages] == ["yes"]
