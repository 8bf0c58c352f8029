"""The policies from Django's settings (MAILERS OPTIONS, or SMTP_BACKENDS_OPTIONS), end to end.

Mail goes through Django's own API (``send_mail``, ``mailers`` or ``get_connection``) to recording
servers on loopback; DKIM signatures are checked by dkimpy on the bytes the server
received, the rate by the time a list takes, DSN parameters as the server saw them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")
pytest.importorskip("dkim")

from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from smtp_backends.django import config as django_config
from tests import policy_kit
from tests.django_project.testing import HAS_MAILERS, no_bridge, use_smtp
from tests.servers import ScriptedServer, SMTPServer

__all__ = ("no_bridge", "use_smtp")  # fixtures used by name

pytestmark = pytest.mark.usefixtures("no_bridge")


def backend() -> Any:
    """The default mailer's backend, as the installed Django gives it."""
    if HAS_MAILERS:
        return mail.mailers["default"]  # type: ignore[attr-defined]
    return mail.get_connection()


def test_dkim_from_settings_signs_what_the_server_receives(
    smtpd: SMTPServer, use_smtp: Callable[..., None], tmp_path: Path
) -> None:
    use_smtp(smtpd, dkim=policy_kit.dkim_settings(tmp_path))
    mail.send_mail("Plain", "Hello,\n.dot line\n", policy_kit.SENDER, ["to@example.net"])
    rich = EmailMultiAlternatives(
        "Rich ünïcode", "text " * 200, "News <news@example.org>", ["to@example.net"]
    )
    rich.attach_alternative("<p>" + "html " * 300 + "</p>", "text/html")
    rich.attach("report.bin", bytes(range(256)) * 20, "application/octet-stream")
    rich.send()

    plain, signed_rich = (message.original_content for message in smtpd.messages)
    # Two signatures for example.com (RSA and Ed25519), verified on the received bytes.
    assert policy_kit.signed_by(plain) == [
        (b"example.com", b"s1", True),
        (b"example.com", b"e1", True),
    ]
    # From example.org: that domain's own key (by_domain).
    assert policy_kit.signed_by(signed_rich) == [(b"example.org", b"org", True)]
    assert [ok for _, _, ok in policy_kit.signed_by(policy_kit.tampered(plain))] == [False, False]


def test_rate_limit_from_settings(smtpd: SMTPServer, use_smtp: Callable[..., None]) -> None:
    use_smtp(smtpd, rate_limit={"messages_per_second": policy_kit.RATE})
    messages = [
        EmailMessage(f"n{n}", "body", policy_kit.SENDER, [f"to{n}@example.net"])
        for n in range(policy_kit.COUNT)
    ]
    connection = backend()
    elapsed = policy_kit.timed(lambda: connection.send_messages(messages))
    assert len(smtpd.messages) == policy_kit.COUNT
    rate = (policy_kit.COUNT - 1) / elapsed
    assert policy_kit.MIN_SECONDS <= elapsed <= policy_kit.MAX_SECONDS, (elapsed, rate)


def test_dsn_defaults_from_settings_on_the_wire(
    make_scripted_server: Callable[..., ScriptedServer], use_smtp: Callable[..., None]
) -> None:
    server = make_scripted_server(policy_kit.dsn_script())
    use_smtp(server, dsn={"notify": ["FAILURE", "DELAY"], "ret": "HDRS"}, pool_size=0)
    mail.send_mail("dsn", "body", policy_kit.SENDER, ["to@example.net"])
    assert b"MAIL FROM:<sender@example.com> RET=HDRS" in server.received_lines
    assert b"RCPT TO:<to@example.net> NOTIFY=FAILURE,DELAY" in server.received_lines


def test_a_messages_own_dsn_attribute(
    make_scripted_server: Callable[..., ScriptedServer], use_smtp: Callable[..., None]
) -> None:
    server = make_scripted_server(policy_kit.dsn_script())
    use_smtp(server, dsn="FAILURE", pool_size=0)
    message = EmailMessage("dsn", "body", policy_kit.SENDER, ["to@example.net"])
    message.dsn = {"notify": "SUCCESS,DELAY", "ret": "FULL"}  # type: ignore[attr-defined]
    assert message.send() == 1
    assert b"MAIL FROM:<sender@example.com> RET=FULL" in server.received_lines
    assert b"RCPT TO:<to@example.net> NOTIFY=SUCCESS,DELAY" in server.received_lines
    bad = EmailMessage("dsn", "body", policy_kit.SENDER, ["to@example.net"])
    bad.requiretls = "yes"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"EmailMessage\.requiretls"):
        django_config.delivery_options(bad)


def test_messages_per_connection_from_settings(
    smtpd: SMTPServer, use_smtp: Callable[..., None]
) -> None:
    use_smtp(smtpd, max_messages_per_connection=2, pool_size=1)
    for n in range(4):
        mail.send_mail(f"n{n}", "body", policy_kit.SENDER, [f"to{n}@example.net"])
    # Two messages per connection, then a new one.
    assert [m.connection_id for m in smtpd.messages] == [1, 1, 2, 2]


def test_options_reach_the_backend(smtpd: SMTPServer, use_smtp: Callable[..., None]) -> None:
    use_smtp(smtpd, rate_limit=50, failover=[f"{smtpd.host}:{smtpd.port}"], requiretls=False)
    first = backend()
    settings = first.mailer_settings()
    connection = first.mailer.connection
    assert connection.rate_limit is not None and connection.rate_limit.messages_per_second == 50
    assert connection.failover is not None
    # The same settings in a new backend (Django makes one per call): the same objects.
    assert backend().mailer.connection is connection
    assert settings == backend().mailer_settings()
