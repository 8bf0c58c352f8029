"""The policies from Flask's MAIL_* settings, end to end, in a real Flask app.

DKIM signatures are checked by dkimpy on the bytes the loopback server received; the
rate by the time the sends take; failover by the server that got the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flask")
pytest.importorskip("dkim")

from smtp_backends.failover import Failover
from smtp_backends.flask import Mail, Message
from tests import policy_kit
from tests.flask_app import make_app, no_bridge
from tests.servers import SMTPServer, free_port

__all__ = ("no_bridge",)  # autouse fixture


def test_dkim_from_mail_settings(smtpd: SMTPServer, tmp_path: Path) -> None:
    app = make_app(smtpd, MAIL_DKIM=policy_kit.dkim_settings(tmp_path))
    mail = Mail(app)
    message = Message(
        "Grüße",
        recipients=["to@example.net"],
        body="Ünïcode 8-bit body\n" + ("word " * 15 + "\n") * 40,
    )
    message.html = "<p>" + "html " * 100 + "</p>"
    message.attach("data.bin", "application/octet-stream", bytes(range(256)))
    with app.app_context():
        mail.send(message)
        mail.send(Message("other", recipients=["to@example.net"], sender="a@example.org", body="x"))
    first, other = (received.original_content for received in smtpd.messages)
    assert policy_kit.signed_by(first) == [
        (b"example.com", b"s1", True),
        (b"example.com", b"e1", True),
    ]
    assert policy_kit.signed_by(other) == [(b"example.org", b"org", True)]
    assert [ok for _, _, ok in policy_kit.signed_by(policy_kit.tampered(first))] == [False, False]


def test_rate_limit_from_mail_settings(smtpd: SMTPServer) -> None:
    app = make_app(smtpd, MAIL_RATE_LIMIT={"messages_per_second": policy_kit.RATE})
    mail = Mail(app)

    def send_all() -> None:
        with app.app_context():
            for n in range(policy_kit.COUNT):
                mail.send(Message(f"n{n}", recipients=[f"to{n}@example.net"], body="x"))

    elapsed = policy_kit.timed(send_all)
    assert len(smtpd.messages) == policy_kit.COUNT
    assert policy_kit.MIN_SECONDS <= elapsed <= policy_kit.MAX_SECONDS, elapsed


def test_failover_from_mail_settings_goes_to_the_second_host(smtpd: SMTPServer) -> None:
    dead = free_port()  # nothing listens: the connection is refused
    app = make_app(
        smtpd,
        MAIL_SERVER="unused.invalid",
        MAIL_FAILOVER={"hosts": [f"127.0.0.1:{dead}", f"127.0.0.1:{smtpd.port}"], "cooldown": 300},
    )
    mail = Mail(app)
    with app.app_context():
        mail.send(Message("failover", recipients=["to@example.net"], body="x"))
        failover = mail.state.mailer.connection.failover  # type: ignore[union-attr]
    assert [m.rcpt_tos for m in smtpd.messages] == [["to@example.net"]]
    assert isinstance(failover, Failover)
    dead_host, live_host = failover.hosts
    assert failover.cooling_down(dead_host) and not failover.cooling_down(live_host)
