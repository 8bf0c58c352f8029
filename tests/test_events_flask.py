"""Blinker signals carrying the events, and pre_send, in real Flask apps with real servers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask

from smtp_backends import events
from smtp_backends.flask import Mail, Message, email_dispatched, event_signals, signals
from tests.flask_app import make_app, no_bridge
from tests.servers import SMTPServer

__all__ = ("no_bridge",)  # the autouse fixture, imported for its effect


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, events.Event]] = []
        self.lock = threading.Lock()

    def __call__(self, sender: Any, event: events.Event, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append((sender, event))


def test_signals_are_in_the_extensions_namespace() -> None:
    assert signals.signal("message-sent") is event_signals.message_sent
    assert signals.signal("pre-send") is event_signals.pre_send
    assert signals.signal("email-dispatched") is email_dispatched


def test_event_signals_carry_the_events_of_a_send(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    sent, failed, closed = Heard(), Heard(), Heard()
    with (
        event_signals.message_sent.connected_to(sent),
        event_signals.message_failed.connected_to(failed),
        event_signals.connection_closed.connected_to(closed),
        app.app_context(),
    ):
        assert events.bus.active
        mail.send(Message("one", recipients=["a@example.com"], body="1"))
        with pytest.raises(Exception):  # noqa: B017 - the adapter's tests check the type
            mail.send(Message("two", recipients=["refuse@example.com"], body="2"))
        mail.state.close()  # type: ignore[union-attr]
    assert not events.bus.active
    ((sender, event),) = sent.calls
    assert sender is events.MessageSent and isinstance(event, events.MessageSent)
    assert event.message_id is not None and event.message_id.startswith("<")
    ((_, failure),) = failed.calls
    assert isinstance(failure, events.MessageFailed) and failure.code is None
    assert failure.recipients == ("refuse@example.com",)
    assert closed.calls


def test_pre_send_alters_replaces_and_cancels_and_dispatch_still_works(
    smtpd: SMTPServer,
) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    dispatched: list[str] = []
    cancelled = Heard()

    def on_dispatched(app: Flask, message: Message) -> None:
        dispatched.append(message.subject or "")

    def receiver(sender: Flask, message: Message, **kwargs: Any) -> Any:
        assert sender is app
        if message.subject == "raise":
            raise events.CancelSend("unsubscribed")
        if message.subject == "false":
            return False
        if message.subject == "replace":
            return Message("replaced", recipients=["new@example.com"], body="new")
        message.subject = f"[tagged] {message.subject}"
        return None

    with (
        event_signals.pre_send.connected_to(receiver),
        event_signals.message_cancelled.connected_to(cancelled),
        email_dispatched.connected_to(on_dispatched),
        app.app_context(),
    ):
        mail.send(Message("keep", recipients=["a@example.com"], body="1"))
        mail.send(Message("replace", recipients=["a@example.com"], body="2"))
        with pytest.raises(events.CancelSend, match="unsubscribed"):
            mail.send(Message("raise", recipients=["a@example.com"], body="3"))
        with pytest.raises(events.CancelSend, match=r"cancelled by .*receiver"):
            mail.send(Message("false", recipients=["a@example.com"], body="4"))
    assert [str(m.message["Subject"]) for m in smtpd.messages] == ["[tagged] keep", "replaced"]
    assert smtpd.messages[1].rcpt_tos == ["new@example.com"]
    assert dispatched == ["[tagged] keep", "replaced"]  # cancelled: never dispatched
    reasons = [e.reason for _, e in cancelled.calls if isinstance(e, events.MessageCancelled)]
    assert reasons[0] == "unsubscribed" and len(reasons) == 2
    first = cancelled.calls[0][1]
    assert isinstance(first, events.MessageCancelled)
    assert first.recipients == ("a@example.com",) and first.message_id is not None


def test_pre_send_in_async_views_and_record_messages(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)

    def receiver(sender: Flask, message: Message, **kwargs: Any) -> Any:
        return False if message.subject == "no" else None

    @app.get("/send")
    async def send() -> str:
        await mail.asend(Message("yes", recipients=["a@example.com"], body="1"))
        try:
            await mail.asend(Message("no", recipients=["a@example.com"], body="2"))
        except events.CancelSend:
            return "cancelled"
        return "sent"

    with event_signals.pre_send.connected_to(receiver), mail.record_messages() as outbox:
        response = app.test_client().get("/send")
    assert response.text == "cancelled"
    assert [m.subject for m in outbox] == ["yes"]
    assert [str(m.message["Subject"]) for m in smtpd.messages] == ["yes"]


def test_without_receivers_nothing_is_relayed(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    assert not events.bus.active and not event_signals.pre_send.receivers
    with app.app_context():
        mail.send(Message("one", recipients=["a@example.com"], body="1"))
    assert len(smtpd.messages) == 1


def test_a_raising_receiver_is_logged_and_the_mail_still_goes(
    smtpd: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)

    def broken(sender: Any, event: events.Event, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    with event_signals.message_sent.connected_to(broken), app.app_context():
        mail.send(Message("one", recipients=["a@example.com"], body="1"))
    assert len(smtpd.messages) == 1
    assert "receiver bug" in caplog.text
    assert not events.bus.active


def test_weak_receivers_that_died_stop_the_relay() -> None:
    def make() -> Any:
        def receiver(sender: Any, event: events.Event, **kwargs: Any) -> None:
            raise AssertionError("collected: never called")

        return receiver

    event_signals.outcome_unknown.connect(make())  # weak: collected at once
    assert events.bus.active
    events.emit(events.OutcomeUnknown(host="h", port=25))
    assert not events.bus.active
