"""smtp_backends.flask in real Flask apps, sending to real SMTP servers on loopback.

Views are called through ``app.test_client()``, commands through
``app.test_cli_runner()``; the servers are the recording aiosmtpd servers of
``tests/servers.py`` (plain, STARTTLS, implicit TLS, AUTH) and scripted raw
servers for misbehaviour. Every test starts and ends without a bridge.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

import click
from flask import Flask
from jinja2 import DictLoader

import smtp_backends
from smtp_backends import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
)
from smtp_backends.bridge import get_bridge
from smtp_backends.flask import (
    AsyncConnection,
    Attachment,
    BadHeaderError,
    Connection,
    IncompleteMessageError,
    Mail,
    MailState,
    Message,
    NoRecipientsError,
    NoSenderError,
    email_dispatched,
)
from tests.flask_app import SENDER, make_app, no_bridge, wait_for
from tests.servers import OAUTH_TOKEN, PASSWORD, USERNAME, ScriptedServer, SMTPServer

__all__ = ("no_bridge",)  # the autouse fixture, imported for its effect


def parsed(server: SMTPServer, index: int = -1) -> EmailMessage:
    return server.messages[index].message


# --------------------------------------------------------------------------- views


def test_sync_view_sends_to_the_server(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)

    @app.post("/welcome")
    def welcome() -> str:
        mail.send(
            Message(
                "Welcome",
                recipients=["Ann <ann@example.com>"],
                cc=["cc@example.com"],
                bcc=["hidden@example.com"],
                reply_to="support@example.com",
                body="Hello Ann",
                html="<p>Hello Ann</p>",
            )
        )
        return "sent"

    response = app.test_client().post("/welcome")
    assert response.status_code == 200
    [received] = smtpd.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ["ann@example.com", "cc@example.com", "hidden@example.com"]
    message = received.message
    assert message["Subject"] == "Welcome"
    assert message["To"] == "Ann <ann@example.com>"
    assert message["Cc"] == "cc@example.com"
    assert message["Reply-To"] == "support@example.com"
    assert "Bcc" not in message
    assert "hidden@example.com" not in received.original_content.decode()
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and plain.get_content() == "Hello Ann"
    assert html is not None and html.get_content() == "<p>Hello Ann</p>"


def test_async_view_asend_and_sync_send_share_one_connection(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    loops: list[asyncio.AbstractEventLoop] = []

    @app.get("/async")
    async def async_view() -> str:
        loops.append(asyncio.get_running_loop())
        await mail.asend(Message("async", recipients=["a@example.com"], body="1"))
        await mail.asend_message("async 2", recipients=["a@example.com"], body="2")
        mail.send(Message("sync inside async", recipients=["a@example.com"], body="3"))
        async with mail.aconnect() as connection:
            await connection.send(Message("aconnect", recipients=["a@example.com"], body="4"))
            await connection.send_message("aconnect 2", recipients=["a@example.com"], body="5")
        return "ok"

    @app.get("/sync")
    def sync_view() -> str:
        mail.send_message("sync", recipients=["a@example.com"], body="6")
        return "ok"

    client = app.test_client()
    for _ in range(3):
        assert client.get("/async").status_code == 200
        assert client.get("/sync").status_code == 200
    # Flask ran each async view on a loop of its own...
    assert len(set(map(id, loops))) >= 2 or all(loop.is_closed() for loop in loops)
    # ...yet every message went over the one pooled connection, which lives on the bridge.
    assert len(smtpd.messages) == 18
    assert smtpd.handler.connections == 1
    assert {m.connection_id for m in smtpd.messages} == {1}
    pool = app.extensions["mail"].pool
    assert pool is not None and pool.connections_opened == 1


def test_connection_reused_across_requests_and_closed_at_shutdown(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)

    @app.get("/<int:number>")
    def view(number: int) -> str:
        mail.send_message(f"request {number}", recipients=["a@example.com"], body="x")
        return "ok"

    client = app.test_client()
    for number in range(20):
        assert client.get(f"/{number}").status_code == 200
    assert len(smtpd.messages) == 20
    assert smtpd.handler.connections == 1  # not one per request
    assert smtpd.handler.open_connections == 1  # still pooled between requests
    assert "QUIT" not in smtpd.handler.commands
    smtp_backends.bridge.shutdown()  # what runs at process exit
    assert wait_for(lambda: smtpd.handler.open_connections == 0)
    assert smtpd.handler.commands[-1] == "QUIT"


def test_state_close_quits_and_the_next_send_reconnects(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send_message("one", recipients=["a@example.com"], body="x")
        mail.close()
        assert smtpd.handler.commands[-1] == "QUIT"
        assert wait_for(lambda: smtpd.handler.open_connections == 0)
        mail.send_message("two", recipients=["a@example.com"], body="x")
    assert smtpd.handler.connections == 2


async def test_aclose_from_async_code(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        await mail.asend_message("one", recipients=["a@example.com"], body="x")
        await mail.aclose()
        await mail.aclose()  # nothing left to close
    assert smtpd.handler.commands[-1] == "QUIT"


def test_app_garbage_collected_closes_its_pool(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    state = weakref.ref(app.extensions["mail"])
    with app.app_context():
        mail.send_message("one", recipients=["a@example.com"], body="x")
    assert smtpd.handler.open_connections == 1
    del app
    gc.collect()
    assert state() is None  # the extension kept neither the app nor its state alive
    assert wait_for(lambda: smtpd.handler.open_connections == 0)
    assert smtpd.handler.commands[-1] == "QUIT"


def test_changed_settings_get_a_new_pool_and_the_old_one_is_closed(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    first, second = make_smtpd(), make_smtpd()
    mail = Mail()
    app = make_app(first, mail=mail)
    with app.app_context():
        mail.send_message("one", recipients=["a@example.com"], body="x")
        mail.state.port = second.port  # type: ignore[union-attr]
        mail.send_message("two", recipients=["a@example.com"], body="x")
    assert [len(first.messages), len(second.messages)] == [1, 1]
    assert wait_for(lambda: first.handler.open_connections == 0)


def test_max_emails_reconnects_after_n_messages(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail, MAIL_MAX_EMAILS=2)
    with app.app_context(), mail.connect() as connection:
        for number in range(5):
            connection.send(Message(f"m{number}", recipients=["a@example.com"], body="x"))
        assert connection.num_emails == 1
    assert [m.connection_id for m in smtpd.messages] == [1, 1, 2, 2, 3]


def test_connect_sends_many_messages_over_one_connection(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    users = [f"user{n}@example.com" for n in range(10)]
    with app.app_context(), mail.connect() as connection:
        assert isinstance(connection, Connection)
        for user in users:
            connection.send(Message(f"hello {user}", recipients=[user], body="..."))
        assert connection.last_response == "2.0.0 OK queued as 10"
    assert [m.rcpt_tos[0] for m in smtpd.messages] == users
    assert smtpd.handler.connections == 1


# --------------------------------------------------------------------------- contexts


def test_send_from_cli_command_thread_and_worker(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail, MAIL_POOL_SIZE=3)

    @app.cli.command("notify")
    @click.argument("address")
    def notify(address: str) -> None:
        mail.send_message("from the CLI", recipients=[address], body="x")
        click.echo("done")

    result = app.test_cli_runner().invoke(args=["notify", "cli@example.com"])
    assert result.exit_code == 0, result.output
    assert "done" in result.output

    def in_thread(number: int) -> None:
        # What a thread or a Celery task does: push an app context, send.
        with app.app_context():
            mail.send_message(f"worker {number}", recipients=["w@example.com"], body="x")

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with ThreadPoolExecutor(8) as executor:
        list(executor.map(in_thread, range(3, 19)))
    assert len(smtpd.messages) == 20
    assert smtpd.messages[0].rcpt_tos == ["cli@example.com"]
    assert 1 <= smtpd.handler.connections <= 3  # bounded by MAIL_POOL_SIZE


def test_state_sends_without_an_app_context(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    state = app.extensions["mail"]
    outbox: list[tuple[Any, Message]] = []

    def record(sender: Any, message: Message) -> None:
        outbox.append((sender, message))

    with email_dispatched.connected_to(record):
        state.send(Message("no context", recipients=["a@example.com"], body="x"))
    assert smtpd.messages[0].mail_from == SENDER  # default sender read at send time
    assert outbox[0][0] is app


def test_mail_app_constructor_works_outside_an_app_context(smtpd: SMTPServer) -> None:
    app = make_app(smtpd)
    mail = Mail(app)
    assert mail.state is app.extensions["mail"]
    mail.send(Message("outside", recipients=["a@example.com"], body="x"))
    assert len(smtpd.messages) == 1


def test_mail_without_app_needs_an_app_context() -> None:
    mail = Mail()
    assert mail.state is None
    with pytest.raises(RuntimeError, match="outside of application context"):
        mail.send(Message("x", recipients=["a@example.com"], sender=SENDER))
    app = Flask("not_configured")
    with app.app_context():
        assert mail.state is None
        with pytest.raises(RuntimeError, match="init_app"):
            mail.connect()
    with pytest.raises(AttributeError):
        mail._private  # noqa: B018


# --------------------------------------------------------------------------- app factory


def test_app_factory_with_two_apps(make_smtpd: Callable[..., SMTPServer]) -> None:
    server_a, server_b = make_smtpd(), make_smtpd()
    mail = Mail()

    def create_app(server: SMTPServer, name: str, sender: str) -> Flask:
        app = Flask(name)
        app.config.update(
            MAIL_SERVER=server.host, MAIL_PORT=server.port, MAIL_DEFAULT_SENDER=sender
        )
        mail.init_app(app)

        @app.get("/")
        def index() -> str:
            mail.send_message(f"from {name}", recipients=["x@example.com"], body="x")
            return mail.default_sender  # type: ignore[no-any-return]

        return app

    app_a = create_app(server_a, "app_a", "a@example.com")
    app_b = create_app(server_b, "app_b", "b@example.com")
    assert vars(mail) == {"_state": None}  # the extension stores no app

    state_a, state_b = app_a.extensions["mail"], app_b.extensions["mail"]
    assert state_a is not state_b
    with state_a.record_messages() as outbox_a, mail.record_messages() as outbox_all:
        assert app_a.test_client().get("/").text == "a@example.com"
        assert app_b.test_client().get("/").text == "b@example.com"
        assert app_a.test_client().get("/").text == "a@example.com"
    assert [m.subject for m in outbox_a] == ["from app_a", "from app_a"]
    assert [m.subject for m in outbox_all] == ["from app_a", "from app_b", "from app_a"]
    assert [m.mail_from for m in server_a.messages] == ["a@example.com"] * 2
    assert [m.mail_from for m in server_b.messages] == ["b@example.com"]
    # One pool per app, each reused.
    assert server_a.handler.connections == server_b.handler.connections == 1
    with app_b.app_context():
        assert mail.state is state_b
        assert mail.server == server_b.host
    state_a.close()
    assert wait_for(lambda: server_a.handler.open_connections == 0)
    assert server_b.handler.open_connections == 1


def test_init_app_twice_replaces_the_state_and_releases_its_pool(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send_message("one", recipients=["a@example.com"], body="x")
    first = app.extensions["mail"]
    mail.init_app(app)
    assert app.extensions["mail"] is not first
    assert wait_for(lambda: smtpd.handler.open_connections == 0)


# --------------------------------------------------------------------------- TLS and auth


def test_starttls_with_login(smtpd_starttls: SMTPServer, ca_bundle_path: Path) -> None:
    mail = Mail()
    app = make_app(
        smtpd_starttls,
        mail=mail,
        MAIL_USE_TLS=True,
        MAIL_USERNAME=USERNAME,
        MAIL_PASSWORD=PASSWORD,
        MAIL_CERT_BUNDLE=str(ca_bundle_path),
    )

    @app.get("/")
    def view() -> str:
        mail.send_message("over STARTTLS", recipients=["a@example.com"], body="x")
        return "ok"

    client = app.test_client()
    assert client.get("/").status_code == client.get("/").status_code == 200
    assert [(m.tls, m.auth_login) for m in smtpd_starttls.messages] == [(True, USERNAME)] * 2
    assert smtpd_starttls.handler.connections == 1
    assert smtpd_starttls.handler.commands.count("AUTH") == 1  # logged in once


def test_implicit_tls_with_tls_context(
    smtpd_tls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    mail = Mail()
    app = make_app(
        smtpd_tls,
        mail=mail,
        MAIL_USE_SSL=True,
        MAIL_USERNAME=USERNAME,
        MAIL_PASSWORD=PASSWORD,
        MAIL_TLS_CONTEXT=client_tls_context,
    )

    @app.get("/")
    async def view() -> str:
        await mail.asend_message("over TLS", recipients=["a@example.com"], body="x")
        return "ok"

    assert app.test_client().get("/").status_code == 200
    [received] = smtpd_tls.messages
    assert received.tls and received.auth_login == USERNAME


def test_certificates_are_verified(smtpd_tls: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd_tls, mail=mail, MAIL_USE_SSL=True)
    with app.app_context(), pytest.raises(SMTPCertificateError):
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert smtpd_tls.messages == []
    app.extensions["mail"].validate_certs = False  # MAIL_VALIDATE_CERTS = False
    with app.app_context():
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert len(smtpd_tls.messages) == 1


def test_use_tls_requires_starttls(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail, MAIL_USE_TLS=True)
    with app.app_context(), pytest.raises(SMTPNotSupported):
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert smtpd.handler.commands == ["EHLO"]  # nothing sent in plaintext


def test_no_starttls_unless_asked(smtpd_starttls: SMTPServer) -> None:
    # As with Flask-Mail, MAIL_USE_TLS = False never upgrades (and so never fails
    # on a server whose certificate the client would not trust).
    mail = Mail()
    app = make_app(smtpd_starttls, mail=mail)
    with app.app_context():
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert smtpd_starttls.messages[0].tls is False


def test_wrong_password(smtpd_auth: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd_auth, mail=mail, MAIL_USERNAME=USERNAME, MAIL_PASSWORD="wrong")
    with app.app_context(), pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert isinstance(caught.value, SMTPAuthenticationError)
    assert "wrong" not in str(caught.value)
    assert smtpd_auth.messages == []


def test_login_on_loopback_without_tls(smtpd_auth: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd_auth, mail=mail, MAIL_USERNAME=USERNAME, MAIL_PASSWORD=PASSWORD)
    with app.app_context():
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert smtpd_auth.messages[0].auth_login == USERNAME
    assert OAUTH_TOKEN  # the server also accepts XOAUTH2; not used by Flask-Mail's config


# --------------------------------------------------------------------------- failures


def test_timeout_when_the_server_never_greets(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server([("sleep", 3)], strict=False)
    mail = Mail()
    app = make_app(mail=mail, MAIL_SERVER=server.host, MAIL_PORT=server.port, MAIL_TIMEOUT=0.3)
    with app.app_context(), pytest.raises(SMTPConnectTimeoutError) as caught:
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert isinstance(caught.value, TimeoutError)


def test_connection_refused_is_an_smtp_and_os_error() -> None:
    mail = Mail()
    app = make_app(mail=mail, MAIL_PORT=1, MAIL_TIMEOUT=5)
    with app.app_context(), pytest.raises(SMTPConnectError) as caught:
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert isinstance(caught.value, (OSError, smtplib.SMTPException))


def test_refused_recipients(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context(), mail.record_messages() as outbox:
        refused = mail.send_message(
            "x", recipients=["ok@example.com", "refuse-me@example.com"], body="x"
        )
        assert list(refused) == ["refuse-me@example.com"]
        assert refused["refuse-me@example.com"].code == 550
        with pytest.raises(SMTPRecipientsRefused):
            mail.send_message("x", recipients=["refuse-1@example.com"], body="x")
    assert len(outbox) == 1  # not dispatched when nothing was sent
    assert smtpd.messages[0].rcpt_tos == ["ok@example.com"]


# --------------------------------------------------------------------------- suppression, signals


def test_testing_suppresses_and_record_messages_records(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = Flask("testing_app")
    app.config.update(
        TESTING=True, MAIL_SERVER=smtpd.host, MAIL_PORT=smtpd.port, MAIL_DEFAULT_SENDER=SENDER
    )
    mail.init_app(app)
    assert app.extensions["mail"].suppress is True

    @app.get("/")
    def view() -> str:
        mail.send_message("testing", recipients=["a@example.com"], body="test")
        return "ok"

    with mail.record_messages() as outbox:
        assert app.test_client().get("/").status_code == 200
        assert len(outbox) == 1
        assert outbox[0].subject == "testing"
        assert outbox[0].date is not None
    assert smtpd.handler.connections == 0
    with app.app_context(), mail.connect() as connection:
        assert connection.host is None
        assert connection.last_response is None

    app.extensions["mail"].suppress = False  # mail.state.suppress, as Flask-Mail
    assert app.test_client().get("/").status_code == 200
    assert len(smtpd.messages) == 1


def test_suppress_send_setting(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail, MAIL_SUPPRESS_SEND=True)
    with app.app_context():
        mail.state.suppress = True  # type: ignore[union-attr]
        mail.send_message("x", recipients=["a@example.com"], body="x")
    assert smtpd.handler.connections == 0


async def test_async_suppressed_and_recorded() -> None:
    mail = Mail()
    app = make_app(mail=mail, MAIL_SUPPRESS_SEND=True)
    with app.app_context(), mail.record_messages() as outbox:
        async with mail.aconnect() as connection:
            assert isinstance(connection, AsyncConnection)
            assert connection.host is None
            await connection.send(Message("a", recipients=["a@example.com"]))
        await mail.asend(Message("b", recipients=["b@example.com"]))
    assert [m.subject for m in outbox] == ["a", "b"]


def test_email_dispatched_signal(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    seen: list[tuple[Any, Message]] = []

    def receiver(sender: Any, message: Message) -> None:
        seen.append((sender, message))

    email_dispatched.connect(receiver)
    try:
        with app.app_context():
            mail.send_message("signalled", recipients=["a@example.com"], body="x")
            app.extensions["mail"].suppress = True
            mail.send_message("also when suppressed", recipients=["a@example.com"], body="x")
    finally:
        email_dispatched.disconnect(receiver)
    assert [(sender, m.subject) for sender, m in seen] == [
        (app, "signalled"),
        (app, "also when suppressed"),
    ]


def test_signal_receivers_in_the_documented_form() -> None:
    # Flask-Mail's documentation shows ``def log_message(message, app)``, which
    # Flask-Mail itself fails to call (blinker passes the app first).
    mail = Mail()
    app = make_app(mail=mail, TESTING=True, MAIL_SUPPRESS_SEND=True)
    calls: list[tuple[str, Any]] = []

    def log_message(message: Message, app: Flask) -> None:
        calls.append(("log_message", (message.subject, app)))

    def message_only(message: Message) -> None:
        calls.append(("message_only", message.subject))

    def message_kwargs(message: Message, **extra: Any) -> None:
        calls.append(("message_kwargs", (message.subject, extra)))

    async def coroutine(sender: Any, message: Message) -> None:  # not called by send()
        raise AssertionError

    for receiver in (log_message, message_only, message_kwargs):
        email_dispatched.connect(receiver)
    try:
        with app.app_context():
            mail.send_message("s", recipients=["a@example.com"])
        email_dispatched.connect(coroutine)
        with app.app_context(), pytest.raises(RuntimeError, match="coroutine"):
            mail.send_message("s", recipients=["a@example.com"])
    finally:
        for receiver in (log_message, message_only, message_kwargs, coroutine):
            email_dispatched.disconnect(receiver)
    assert sorted(calls[:3], key=lambda c: c[0]) == [
        ("log_message", ("s", app)),
        ("message_kwargs", ("s", {"app": app})),
        ("message_only", "s"),
    ]


# --------------------------------------------------------------------------- header injection

INJECTIONS: dict[str, Callable[[Message], None]] = {
    "subject": lambda m: setattr(m, "subject", "Hi\r\nBcc: victim@example.com"),
    "subject bare LF": lambda m: setattr(m, "subject", "Hi\nBcc: victim@example.com"),
    "subject NUL": lambda m: setattr(m, "subject", "Hi\x00"),
    "sender": lambda m: setattr(m, "sender", "a@example.com\r\nBcc: victim@example.com"),
    "sender tuple": lambda m: setattr(m, "sender", ("Ann\r\nBcc: v@example.com", "a@example.com")),
    "recipient": lambda m: m.add_recipient("b@example.com\nBcc: victim@example.com"),
    "recipient tuple": lambda m: m.add_recipient(("B\r\nX-Evil: 1", "b@example.com")),
    "cc": lambda m: m.cc.append("c@example.com\r\nBcc: victim@example.com"),
    "bcc": lambda m: m.bcc.append("c@example.com\r\nRCPT TO:<victim@example.com>"),
    "reply_to": lambda m: setattr(m, "reply_to", "r@example.com\rBcc: victim@example.com"),
    "extra header value": lambda m: setattr(m, "extra_headers", {"X-Tag": "a\r\nBcc: v@x.org"}),
    "extra header name": lambda m: setattr(m, "extra_headers", {"X-Tag\r\nBcc": "v@x.org"}),
    "extra header name colon": lambda m: setattr(m, "extra_headers", {"Bcc: v@x.org\r\nX": "1"}),
    "attachment filename": lambda m: m.attach("a\r\nBcc: v@x.org.txt", "text/plain", b"x"),
    "attachment content type": lambda m: m.attach("a.txt", "text/plain\r\nBcc: v@x.org", b"x"),
    "attachment disposition": lambda m: m.attach("a.txt", "text/plain", b"x", "inline\r\nX: 1"),
    "attachment header value": lambda m: m.attach("a.txt", None, b"x", None, {"X-A": "1\r\nX: 1"}),
    "attachment header name": lambda m: m.attach("a.txt", None, b"x", None, {"X-A\r\nX": "1"}),
    "content id": lambda m: m.attach_inline("a.png", "image/png", b"x", "id\r\nX: 1"),
    "charset": lambda m: setattr(m, "charset", "utf-8\r\nBcc: v@x.org"),
    "alternative subtype": lambda m: m.alts.update({"html\r\nBcc: v@x.org": "<p>"}),
    "message id": lambda m: setattr(m, "msgId", "<id@x>\r\nBcc: v@x.org"),
    "mail option": lambda m: m.mail_options.append("BODY=8BITMIME\r\nRCPT TO:<v@x.org>"),
    "rcpt option": lambda m: m.rcpt_options.append("NOTIFY=NEVER\r\nRCPT TO:<v@x.org>"),
    "option with space": lambda m: m.mail_options.append("SIZE=1 X"),
}


@pytest.mark.parametrize("inject", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_header_injection_is_refused_before_anything_is_sent(
    smtpd: SMTPServer, inject: Callable[[Message], None]
) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context(), mail.record_messages() as outbox:
        message = Message("Hi", recipients=["b@example.com"], body="x")
        inject(message)
        assert message.has_bad_headers()
        with pytest.raises(BadHeaderError):
            mail.send(message)
        with pytest.raises(BadHeaderError):
            asyncio.run(mail.asend(message))
        with mail.connect() as connection, pytest.raises(BadHeaderError):
            connection.send(message)
    assert outbox == []
    assert smtpd.handler.connections == 0  # not even connected


def test_envelope_from_injection(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    message = Message("Hi", recipients=["b@example.com"], body="x", sender=SENDER)
    with app.app_context(), mail.connect() as connection:
        with pytest.raises(BadHeaderError):
            connection.send(message, envelope_from="bounce@example.com\r\nRCPT TO:<v@x.org>")
        connection.send(message, envelope_from=("Bounces", "bounce@example.com"))
    assert smtpd.messages[0].mail_from == "bounce@example.com"
    assert parsed(smtpd)["From"] == SENDER


def test_folded_subject_and_headers_are_allowed(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    message = Message(
        "first\r\n second", recipients=["b@example.com"], extra_headers={"X-A": "1\r\n\t2"}
    )
    assert not message.has_bad_headers()
    with app.app_context():
        mail.send(message)
    assert parsed(smtpd)["Subject"] == "first second"


def test_is_bad_headers_is_deprecated() -> None:
    message = Message("ok", sender=SENDER)
    with pytest.warns(DeprecationWarning):
        assert message.is_bad_headers() is False


# --------------------------------------------------------------------------- incomplete messages


def test_missing_sender_or_recipients_raise_typed_errors(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail, MAIL_DEFAULT_SENDER=None)
    with app.app_context():
        with pytest.raises(NoSenderError, match="MAIL_DEFAULT_SENDER") as no_sender:
            mail.send(Message("x", recipients=["a@example.com"]))
        with pytest.raises(NoRecipientsError) as no_recipients:
            mail.send(Message("x", sender=SENDER))
        with pytest.raises(NoRecipientsError):
            asyncio.run(mail.asend(Message("x", sender=SENDER)))
    for error in (no_sender.value, no_recipients.value):
        assert isinstance(error, IncompleteMessageError)
        assert isinstance(error, AssertionError)  # Flask-Mail raised AssertionError
        assert isinstance(error, ValueError)
    assert smtpd.handler.connections == 0


def test_bcc_only_is_enough(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send(Message("x", bcc=["hidden@example.com"]))
    assert smtpd.messages[0].rcpt_tos == ["hidden@example.com"]
    assert "hidden" not in smtpd.messages[0].original_content.decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recipients", ["a@example.com, b@example.com"]),
        ("recipients", [""]),
        ("cc", ["a@example.com; b@example.com"]),
        ("sender", "a@example.com, b@example.com"),
        ("reply_to", "a@example.com, b@example.com"),
        ("recipients", [("only a name",)]),
    ],
)
def test_a_value_that_is_not_one_address_is_refused(
    smtpd: SMTPServer, field: str, value: Any
) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        message = Message("x", recipients=["ok@example.com"])
        setattr(message, field, value)
        with pytest.raises(ValueError, match=r"not one address|address tuple"):
            mail.send(message)
    assert smtpd.handler.connections == 0


def test_recipients_given_as_a_single_string(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send(Message("x", recipients="one@example.com", cc="two@example.com"))  # type: ignore[arg-type]
    assert smtpd.messages[0].rcpt_tos == ["one@example.com", "two@example.com"]


def test_duplicate_recipients_get_one_rcpt(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send(Message("x", recipients=["a@example.com", "a@example.com"], cc=["a@example.com"]))
    assert smtpd.messages[0].rcpt_tos == ["a@example.com"]
    assert parsed(smtpd)["To"] == "a@example.com"


# --------------------------------------------------------------------------- content


def test_unicode_names_subject_body_and_idn(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail, MAIL_DEFAULT_SENDER=("Zoë Ünïcode", "zoe@example.com"))
    with app.app_context():
        mail.send(
            Message(
                "Grüße → ✓",
                recipients=[("Jürgen", "juergen@bücher.example"), '"Ann, Lee" <ann@example.com>'],
                body="Schöne Grüße",
            )
        )
    received = smtpd.messages[0]
    assert received.rcpt_tos == ["juergen@xn--bcher-kva.example", "ann@example.com"]
    message = received.message
    assert str(message["Subject"]) == "Grüße → ✓"
    assert message["From"].addresses[0].display_name == "Zoë Ünïcode"
    headers = received.original_content.decode().split("\r\n\r\n", 1)[0]
    # Folded between addresses (the line is long), never inside the encoded words, so
    # "Ann, Lee" stays one name (RFC 2047 section 6.2: decoded after parsing).
    assert (
        "To: =?utf-8?q?J=C3=BCrgen?= <juergen@xn--bcher-kva.example>,\r\n"
        + (" =?utf-8?q?Ann=2C_Lee?= <ann@example.com>\r\n")
        in headers + "\r\n"
    )
    assert message.get_content().rstrip() == "Schöne Grüße"
    assert "BODY=8BITMIME" in received.mail_options


def test_tuple_sender_with_a_comma_stays_one_address(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        message = Message("x", recipients=["a@example.com"], sender=("Lee, Ann", "ann@example.com"))
        assert message.sender == '"Lee, Ann" <ann@example.com>'
        assert Message("y", sender=("tester", "t@example.com")).sender == "tester <t@example.com>"
        mail.send(message)
    assert smtpd.messages[0].mail_from == "ann@example.com"


def test_inline_images_make_multipart_related(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    png = b"\x89PNG\r\n\x1a\n fake image"
    with app.app_context():
        message = Message("inline", recipients=["a@example.com"], body="see the logo")
        cid = message.attach_inline("logo.png", "image/png", png, "logo@example.com")
        generated = message.attach_inline("dot.png", "image/png", png)
        message.html = f'<img src="cid:{cid}"><img src="cid:{generated}">'
        message.attach("report.pdf", None, b"%PDF-1.4")
        mail.send(message)
    received = parsed(smtpd)
    assert received.get_content_type() == "multipart/mixed"
    related, pdf = received.get_payload()  # type: ignore[misc]
    assert related.get_content_type() == "multipart/related"
    assert related.get_param("type") == "multipart/alternative"
    alternative, logo, dot = related.get_payload()
    assert [p.get_content_type() for p in alternative.get_payload()] == ["text/plain", "text/html"]
    assert logo["Content-ID"] == "<logo@example.com>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_filename() == "logo.png"
    assert logo.get_content() == png
    assert dot["Content-ID"] == f"<{generated}>"
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content_disposition() == "attachment"


def test_inline_part_without_filename_and_without_other_attachments() -> None:
    message = Message("inline", recipients=["a@example.com"], sender=SENDER, html="<img>")
    message.attachments.append(Attachment(data=b"x", content_type="image/gif", content_id="<g>"))
    mime = message.to_mime()
    [related] = mime.get_payload()  # type: ignore[misc]
    assert related.get_content_type() == "multipart/related"
    part = related.get_payload()[1]
    assert part["Content-Disposition"] == "inline"
    assert part["Content-ID"] == "<g>"


def test_text_attachment_given_as_str_is_utf8() -> None:
    message = Message("x", recipients=["a@example.com"], sender=SENDER, body="b")
    message.attach("notes.txt", None, "naïve € text")
    message.attach("plain.txt", None, "ascii only")
    parsed_message = message_from_bytes(message.as_bytes(), policy=policy.default)
    notes, plain = list(parsed_message.iter_attachments())
    assert notes.get_content() == "naïve € text"  # type: ignore[attr-defined]
    assert notes.get_param("charset") == "utf-8"
    assert plain.get_param("charset") is None  # as Flask-Mail renders ASCII text
    assert Attachment(data="x").content_type == "text/plain"
    assert Attachment(data=b"x").content_type == "application/octet-stream"
    with pytest.raises(ValueError, match="data"):
        Attachment("a.txt")


def test_render_template_into_html_and_body(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    app.jinja_loader = DictLoader(
        {
            "mail/welcome.html": "<h1>Welcome {{ user }}</h1>",
            "mail/welcome.txt": "Welcome {{ user }}",
        }
    )
    with app.app_context():
        message = Message("Welcome", recipients=["a@example.com"]).render_template(
            "mail/welcome.html", "mail/welcome.txt", user="<Ann>"
        )
        assert message.html == "<h1>Welcome &lt;Ann&gt;</h1>"  # autoescaped
        assert message.body == "Welcome <Ann>"
        other = Message("x").render_template(text_template=["missing.txt", "mail/welcome.txt"])
        assert other.body == "Welcome " and other.html is None
        mail.send(message)
    html = parsed(smtpd).get_body(("html",))
    assert html is not None and html.get_content() == "<h1>Welcome &lt;Ann&gt;</h1>"


def test_lazy_strings_are_resolved() -> None:
    class Lazy:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    message = Message(
        Lazy("sübject"),  # type: ignore[arg-type]
        recipients=["a@example.com"],
        sender=SENDER,
        body=Lazy("body"),  # type: ignore[arg-type]
    )
    rendered = message.as_string()
    assert "=?utf-8?q?s=C3=BCbject?=" in rendered
    assert rendered.endswith("body")


def test_esmtp_options_reach_the_server(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send(
            Message(
                "x",
                recipients=["a@example.com"],
                body="x",
                mail_options=["BODY=8BITMIME"],
                rcpt_options=[],
            )
        )
    assert "BODY=8BITMIME" in smtpd.messages[0].mail_options


def test_message_repr_and_state_repr() -> None:
    mail = Mail()
    app = make_app(mail=mail, MAIL_USE_SSL=True, MAIL_SUPPRESS_SEND=True)
    state = app.extensions["mail"]
    assert repr(state) == "<MailState app='flask_test_app' 127.0.0.1:465 SSL, suppressed>"
    assert state.app is app and state.pool is None
    message = Message("s", recipients=["a@example.com"], sender=SENDER)
    assert repr(message) == "<Message 's' from 'sender@example.com' to 1>"
    assert "text/plain" in repr(message.attach("a.txt", data=b"x"))
    assert isinstance(MailState(**vars(state)), MailState)


# --------------------------------------------------------------------------- configuration


def test_defaults_follow_flask_mail() -> None:
    app = Flask("defaults")
    state = Mail().init_app(app)
    assert (state.server, state.port, state.use_tls, state.use_ssl) == ("127.0.0.1", 25, 0, 0)
    assert state.default_sender is None and state.max_emails is None
    assert state.suppress is False and state.ascii_attachments is False and state.debug == 0
    assert state.timeout == 60 and state.validate_certs is True and state.pool_size == 4
    testing = Flask("testing")
    testing.testing = True
    assert Mail().init_app(testing).suppress is True


def test_port_defaults_to_465_with_implicit_tls_and_accepts_digit_strings() -> None:
    assert Mail().init_mail({"MAIL_USE_SSL": True}).port == 465
    assert Mail().init_mail({"MAIL_PORT": "587"}).port == 587


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"MAIL_USE_TLS": True, "MAIL_USE_SSL": True}, ValueError, "cannot both be set"),
        ({"MAIL_USE_TLS": "False"}, TypeError, "MAIL_USE_TLS must be True or False.*environment"),
        ({"MAIL_USE_SSL": 1}, TypeError, "MAIL_USE_SSL"),
        ({"MAIL_PORT": "smtp"}, TypeError, "MAIL_PORT must be an int"),
        ({"MAIL_PORT": 70000}, ValueError, "MAIL_PORT"),
        ({"MAIL_PORT": True}, TypeError, "MAIL_PORT"),
        ({"MAIL_SERVER": ""}, TypeError, "MAIL_SERVER"),
        ({"MAIL_SERVER": None}, TypeError, "MAIL_SERVER"),
        ({"MAIL_MAX_EMAILS": "10"}, TypeError, "MAIL_MAX_EMAILS"),
        ({"MAIL_MAX_EMAILS": 0}, ValueError, "MAIL_MAX_EMAILS"),
        ({"MAIL_TIMEOUT": "30"}, TypeError, "MAIL_TIMEOUT"),
        ({"MAIL_TIMEOUT": 0}, ValueError, "MAIL_TIMEOUT"),
        ({"MAIL_SUPPRESS_SEND": "yes"}, TypeError, "MAIL_SUPPRESS_SEND"),
        ({"MAIL_DEFAULT_SENDER": ["a", "b", "c"]}, TypeError, "MAIL_DEFAULT_SENDER"),
        ({"MAIL_DEFAULT_SENDER": 5}, TypeError, "MAIL_DEFAULT_SENDER"),
        ({"MAIL_DEBUG": "1"}, TypeError, "MAIL_DEBUG"),
        ({"MAIL_POOL_SIZE": 0}, ValueError, "MAIL_POOL_SIZE"),
        ({"MAIL_POOL_IDLE_TIMEOUT": -1}, ValueError, "MAIL_POOL_IDLE_TIMEOUT"),
        ({"MAIL_TLS_CONTEXT": "ctx"}, TypeError, "MAIL_TLS_CONTEXT"),
        ({"MAIL_CERT_BUNDLE": 3}, TypeError, "MAIL_CERT_BUNDLE"),
        ({"MAIL_LOCAL_HOSTNAME": "bad name"}, ValueError, "host name"),
        ({"MAIL_USERNAME": 5}, TypeError, "MAIL_USERNAME"),
    ],
)
def test_init_app_refuses_bad_settings(
    config: dict[str, Any], error: type[Exception], match: str
) -> None:
    app = Flask("bad")
    app.config.update(config)
    with pytest.raises(error, match=match):
        Mail(app)
    assert "mail" not in app.extensions


def test_bad_password_type_does_not_show_the_value() -> None:
    with pytest.raises(TypeError, match="MAIL_PASSWORD must be a str, not int") as caught:
        Mail().init_mail({"MAIL_PASSWORD": 123456})
    assert "123456" not in str(caught.value)


def test_config_maps_to_the_core(ca_bundle_path: Path) -> None:
    state = Mail().init_mail(
        {
            "MAIL_SERVER": "smtp.example.com",
            "MAIL_PORT": 587,
            "MAIL_USE_TLS": True,
            "MAIL_USERNAME": "u",
            "MAIL_PASSWORD": "p",
            "MAIL_TIMEOUT": 5,
            "MAIL_CERT_BUNDLE": ca_bundle_path,
            "MAIL_LOCAL_HOSTNAME": "client.example.com",
            "MAIL_PIPELINING": False,
            "MAIL_DEFAULT_SENDER": ["Name", "n@example.com"],
        }
    )
    config = state.connection_config()
    assert (config.hostname, config.port, config.start_tls, config.use_tls) == (
        "smtp.example.com",
        587,
        True,
        False,
    )
    assert (config.username, config.password, config.timeout) == ("u", "p", 5)
    assert config.cert_bundle == str(ca_bundle_path)
    assert config.local_hostname == "client.example.com" and config.pipelining is False
    assert state.default_sender == ("Name", "n@example.com")
    # Flask-Mail logs in only with both a user name and a password.
    assert Mail().init_mail({"MAIL_USERNAME": "u"}).connection_config().username is None
    ssl_config = Mail().init_mail({"MAIL_USE_SSL": True}).connection_config()
    assert (ssl_config.use_tls, ssl_config.start_tls, ssl_config.port) == (True, False, 465)


@pytest.fixture
def restore_core_logger() -> Iterator[logging.Logger]:
    core = logging.getLogger("smtp_backends")
    level, handlers = core.level, list(core.handlers)
    yield core
    core.setLevel(level)
    core.handlers[:] = handlers


def test_mail_debug_logs_the_exchange_without_credentials(
    smtpd_auth: SMTPServer,
    caplog: pytest.LogCaptureFixture,
    restore_core_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mail = Mail()
    app = make_app(
        smtpd_auth, mail=mail, MAIL_DEBUG=True, MAIL_USERNAME=USERNAME, MAIL_PASSWORD=PASSWORD
    )
    assert restore_core_logger.level == logging.DEBUG
    with app.app_context():
        mail.send_message("debug", recipients=["a@example.com"], body="x")
    text = caplog.text
    assert "EHLO" in text and "DATA" in text
    assert PASSWORD not in text
    # With no handler anywhere, Flask's default handler shows the records.
    monkeypatch.setattr(logging.getLogger("smtp_backends"), "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    restore_core_logger.setLevel(logging.NOTSET)
    make_app(mail=Mail(), MAIL_DEBUG=1)
    from flask.logging import default_handler

    assert default_handler in restore_core_logger.handlers


def test_mail_attributes_are_read_through_the_extension() -> None:
    mail = Mail()
    app = make_app(mail=mail, MAIL_DEFAULT_SENDER="d@example.com")
    with app.app_context():
        assert mail.default_sender == "d@example.com"
        assert mail.suppress is False
        app.extensions["mail"].default_sender = ("Tester", "t@example.com")
        assert Message("x").sender == "Tester <t@example.com>"
        with pytest.raises(AttributeError):
            mail.no_such_setting  # noqa: B018


# --------------------------------------------------------------------------- CLI


def test_cli_send_test(smtpd: SMTPServer) -> None:
    app = make_app(smtpd, mail=Mail())
    result = app.test_cli_runner().invoke(args=["mail", "send-test", "ops@example.com"])
    assert result.exit_code == 0, result.output
    assert f"via {smtpd.host}:{smtpd.port} (no TLS)" in result.output
    assert "The server said: 2.0.0 OK queued as 1" in result.output
    [received] = smtpd.messages
    assert received.rcpt_tos == ["ops@example.com"] and received.mail_from == SENDER
    assert received.message["Subject"] == "Test message from flask_test_app"


def test_cli_send_test_options_and_refusal(smtpd: SMTPServer) -> None:
    app = make_app(smtpd, mail=Mail(), MAIL_USERNAME="u", MAIL_PASSWORD="secret-pw")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["mail", "send-test", "refuse@example.com", "--sender", "me@example.com"]
    )
    assert result.exit_code == 1
    assert "Sending failed: SMTP" in result.output
    assert "login as u" in result.output and "secret-pw" not in result.output


def test_cli_send_test_reports_failures_and_suppression() -> None:
    app = make_app(mail=Mail(), MAIL_PORT=1, MAIL_TIMEOUT=5)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["mail", "send-test", "ops@example.com", "--subject", "S"])
    assert result.exit_code == 1
    assert "Sending failed: SMTPConnectError" in result.output
    app.extensions["mail"].suppress = True
    result = runner.invoke(args=["mail", "send-test", "ops@example.com"])
    assert result.exit_code == 1 and "suppressed" in result.output
    del app.extensions["mail"]
    result = runner.invoke(args=["mail", "send-test", "ops@example.com"])
    assert result.exit_code == 1 and "init_app" in result.output


def test_cli_group_is_added_once_and_never_replaces_an_apps_own() -> None:
    app = Flask("own_mail_group")

    @app.cli.group("mail")
    def own() -> None:
        """The app's own group."""

    Mail(app)
    assert app.cli.commands["mail"] is own


# --------------------------------------------------------------------------- bridge


def test_pool_lives_on_the_bridge_loop(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)

    @app.get("/")
    async def view() -> str:
        await mail.asend_message("x", recipients=["a@example.com"], body="x")
        return "ok"

    app.test_client().get("/")
    pool = app.extensions["mail"].pool
    assert pool is not None
    loop = get_bridge().loop

    async def bound() -> bool:
        return asyncio.get_running_loop() is loop

    assert get_bridge().run(bound())
    assert pool.closed is False


# --------------------------------------------------------------------------- fork, odds and ends


def test_forked_worker_opens_its_own_connection(smtpd: SMTPServer) -> None:
    # A Celery prefork worker: the app (and maybe a pooled connection) exists in the
    # parent, the child sends. The child never touches the parent's socket.
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        mail.send_message("parent before", recipients=["a@example.com"], body="x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        status = 1
        try:
            with app.app_context():
                mail.send_message("child", recipients=["a@example.com"], body="x")
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with app.app_context():
        mail.send_message("parent after", recipients=["a@example.com"], body="x")
    subjects = {m.message["Subject"]: m.connection_id for m in smtpd.messages}
    assert subjects["parent before"] == subjects["parent after"] == 1
    assert subjects["child"] == 2


def test_message_send_bytes_and_configure_host(smtpd: SMTPServer) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        message = Message("m", recipients=["a@example.com"], body="x")
        assert bytes(message) == message.as_bytes()
        with mail.connect() as connection:
            assert message.send(connection) == {}
            host = connection.configure_host()
            refused = host.sendmail(SENDER, "b@example.com", b"Subject: raw\r\n\r\nraw\r\n")
            assert refused == {}
            # Not one address: handed to the core as it is, which refuses it.
            with pytest.raises(ValueError):
                host.sendmail(SENDER, ["a@example.com, b@example.com"], b"x")
            host.quit()
    assert [m.rcpt_tos for m in smtpd.messages] == [["a@example.com"], ["b@example.com"]]


def test_cli_send_test_lists_refused_recipients(smtpd: SMTPServer) -> None:
    app = make_app(smtpd, mail=Mail())
    from smtp_backends.flask import cli as adapter

    # The command sends to one address; give its message a Cc the server refuses.
    original = adapter.Message

    def with_cc(*args: Any, **kwargs: Any) -> Message:
        message = original(*args, **kwargs)
        message.cc = ["refuse-cc@example.com"]
        return message

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adapter, "Message", with_cc)
        result = app.test_cli_runner().invoke(args=["mail", "send-test", "ops@example.com"])
    assert result.exit_code == 0, result.output
    assert "Refused refuse-cc@example.com: 550 5.1.1 no such user" in result.output


def test_small_helpers() -> None:
    from smtp_backends import flask as adapter
    from smtp_backends.flask import dispatch as flask_signals
    from smtp_backends.flask import headers
    from smtp_backends.mailer import addr_spec

    # A subject the message's charset cannot encode falls back to UTF-8.
    assert adapter.sanitize_subject("Grüße", "shift_jis") == "=?utf-8?b?R3LDvMOfZQ==?="
    assert headers._format_pair("", "a@example.com") == "a@example.com"
    with pytest.raises(ValueError, match="name, address"):
        Message("x", sender=("a", "b", "c"))  # type: ignore[arg-type]
    # Receivers whose signature cannot be read are called the usual way.
    assert flask_signals._takes_message_first(max) is False
    assert addr_spec("Ann <ann@example.com>") == "ann@example.com"


# --------------------------------------------------------------------------- the Flask page


def flask_page_section() -> str:
    """The Flask page's "## A complete app" section (docs/start/flask.md)."""
    page = (Path(__file__).parent.parent / "docs" / "start" / "flask.md").read_text()
    match = re.search(r"^## A complete app\n.*?(?=^## |\Z)", page, re.M | re.S)
    assert match, "docs/start/flask.md has no '## A complete app' section"
    return match.group(0)


def test_flask_page_section_examples(
    smtpd_starttls: SMTPServer,
    ca_bundle_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", flask_page_section(), re.S)
    assert len(blocks) == 2
    # The placeholders name a STARTTLS server with a login: ours, trusted through the
    # default trust store (SSL_CERT_FILE), as a real server's certificate would be.
    setup = (
        blocks[0]
        .replace('"smtp.example.com"', repr(smtpd_starttls.host))
        .replace("MAIL_PORT=587", f"MAIL_PORT={smtpd_starttls.port}")
        .replace('MAIL_USERNAME="app"', f"MAIL_USERNAME={USERNAME!r}")
        .replace('MAIL_PASSWORD="secret"', f"MAIL_PASSWORD={PASSWORD!r}")
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle_path))
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "logo.png").write_bytes(b"\x89PNG logo")
    (tmp_path / "templates" / "mail").mkdir(parents=True)
    (tmp_path / "templates" / "mail" / "welcome.html").write_text("<h1>Hi {{ address }}</h1>")
    (tmp_path / "templates" / "mail" / "welcome.txt").write_text("Hi {{ address }}")
    monkeypatch.chdir(tmp_path)  # the app's root: Flask(__name__) of a script
    namespace: dict[str, Any] = {"__name__": "flask_page"}
    exec(compile(setup, "docs/start/flask.md", "exec"), namespace)
    app = namespace["create_app"]()
    assert app.root_path == str(tmp_path)
    client = app.test_client()
    assert client.post("/welcome/ann@example.com").text == "sent"
    assert client.post("/report/bob@example.com").text == "sent"
    welcome, report = smtpd_starttls.messages
    assert (welcome.tls, welcome.auth_login, welcome.mail_from) == (
        True,
        USERNAME,
        "noreply@example.com",
    )
    html = welcome.message.get_body(("html",))
    assert html is not None and html.get_content().strip() == "<h1>Hi ann@example.com</h1>"
    kinds = [part.get_content_type() for part in report.message.walk()]
    assert kinds == [
        "multipart/mixed",
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
        "text/csv",
    ]
    assert smtpd_starttls.handler.connections == 1

    result = app.test_cli_runner().invoke(args=["mail", "send-test", "ops@example.com"])
    assert result.exit_code == 0, result.output
    assert "STARTTLS" in result.output and "The server said:" in result.output

    exec(compile(blocks[1], "docs/start/flask.md", "exec"), namespace)  # a new app, suppressed
    assert len(smtpd_starttls.messages) == 3  # the recorded message was not sent


def test_default_date_is_fixed_by_the_first_rendering() -> None:
    """Rendered twice across a second's boundary, a message keeps one Date (Flask-Mail's
    ``msg.as_string() == str(msg)`` holds whatever the clock does)."""
    msg = Message("dated", sender="a@example.com", recipients=["b@example.com"], body="x")
    first = msg.as_string()
    time.sleep(1.05)
    assert msg.as_string() == first
    assert msg.date is None  # the caller's attribute is left as given
