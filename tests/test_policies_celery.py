"""The policies from Celery's ``smtp=`` settings (pool keywords as plain data, or
MailerSettings), end to end: the task body runs in this process against loopback servers
(as in tests/test_celery.py), its payload through JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery")
pytest.importorskip("dkim")
pytest.importorskip("python_socks")

from celery import Celery

from smtp_backends import bridge
from smtp_backends.celery import QueuedMessage, SMTPQueue
from smtp_backends.settings import MailerSettings
from tests import policy_kit
from tests.proxies import ProxyServer
from tests.servers import SMTPServer


@pytest.fixture(autouse=True)
def no_bridge(make_smtpd: Any) -> Iterator[None]:
    """Pools made by the test close before its servers stop."""
    bridge.shutdown()
    yield
    bridge.shutdown()


def make_queue(smtp: Any) -> SMTPQueue:
    app = Celery("policy_tests", broker="memory://", set_as_current=False)
    return SMTPQueue(app, smtp=smtp, dedupe=False)


def deliver(queue: SMTPQueue, *messages: QueuedMessage) -> Any:
    """Run the task body on ``messages``, their payload through JSON."""
    return queue.deliver(json.loads(json.dumps(queue.payload(messages))))


def data(n: int, sender: str = policy_kit.SENDER) -> bytes:
    return (
        f"From: {sender}\r\nTo: to@example.net\r\nSubject: n{n}\r\n"
        f"Message-ID: <n{n}@example.com>\r\n\r\nbody {n}\r\n.dot line\r\n"
    ).encode()


def test_dkim_from_pool_keywords(smtpd: SMTPServer, tmp_path: Path) -> None:
    queue = make_queue(
        {
            "hostname": smtpd.host,
            "port": smtpd.port,
            "dkim": policy_kit.dkim_settings(tmp_path),
        }
    )
    report = deliver(
        queue,
        QueuedMessage(policy_kit.SENDER, ["to@example.net"], data(1)),
        QueuedMessage("a@example.org", ["to@example.net"], data(2, "a@example.org")),
    )
    assert report.sent == 2
    by_subject = {m.message["Subject"]: m.original_content for m in smtpd.messages}
    assert policy_kit.signed_by(by_subject["n1"]) == [
        (b"example.com", b"s1", True),
        (b"example.com", b"e1", True),
    ]
    assert policy_kit.signed_by(by_subject["n2"]) == [(b"example.org", b"org", True)]


def test_dkim_from_mailer_settings(smtpd: SMTPServer, tmp_path: Path) -> None:
    settings = MailerSettings(
        host=smtpd.host, port=smtpd.port, dkim=policy_kit.dkim_settings(tmp_path)
    )
    report = deliver(
        make_queue(settings), QueuedMessage(policy_kit.SENDER, ["to@example.net"], data(1))
    )
    assert report.sent == 1
    signed = smtpd.messages[0].original_content
    assert [ok for _, _, ok in policy_kit.signed_by(signed)] == [True, True]


@pytest.mark.parametrize("form", ["pool keywords", "settings"])
def test_rate_limit(smtpd: SMTPServer, form: str) -> None:
    limit = {"messages_per_second": policy_kit.RATE}
    smtp: Any = (
        {"hostname": smtpd.host, "port": smtpd.port, "max_connections": 4, "rate_limit": limit}
        if form == "pool keywords"
        else MailerSettings(host=smtpd.host, port=smtpd.port, rate_limit=limit)
    )
    queue = make_queue(smtp)
    messages = [
        QueuedMessage(policy_kit.SENDER, [f"to{n}@example.net"], data(n))
        for n in range(policy_kit.COUNT)
    ]
    elapsed = policy_kit.timed(lambda: deliver(queue, *messages))
    assert len(smtpd.messages) == policy_kit.COUNT
    assert policy_kit.MIN_SECONDS <= elapsed <= policy_kit.MAX_SECONDS, elapsed


def test_proxy_from_pool_keywords(smtpd: SMTPServer) -> None:
    with ProxyServer("socks5") as proxy:
        queue = make_queue({"hostname": smtpd.host, "port": smtpd.port, "proxy": proxy.url()})
        report = deliver(queue, QueuedMessage(policy_kit.SENDER, ["to@example.net"], data(1)))
        assert report.sent == 1
        assert proxy.requests == [(smtpd.host, smtpd.port)]
    assert len(smtpd.messages) == 1
