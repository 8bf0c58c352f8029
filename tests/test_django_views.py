"""The backend inside a Django project: views (WSGI and ASGI), and what Django itself sends.

Requests go through Django's test client (sync views) and async test client (async
views) to a real server on loopback; connection reuse is counted at the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

from asgiref.sync import sync_to_async
from django.core.mail import EmailMultiAlternatives
from django.core.management import call_command
from django.test import AsyncClient, Client

from smtp_backends import bridge
from smtp_backends.testing import CaptureServer
from tests.django_project.testing import (
    BACKEND,
    HAS_MAILERS,
    admins,
    no_bridge,
    use_smtp,
)
from tests.servers import PASSWORD, USERNAME, RecordingHandler, SMTPServer

__all__ = ("no_bridge", "use_smtp")  # fixtures used by name

pytestmark = pytest.mark.usefixtures("no_bridge")

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class SlowHandler(RecordingHandler):
    """Takes ``delay`` seconds to answer each end of data."""

    delay = 0.3

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(params=["plain", "starttls+auth", "implicit-tls+auth"])
def mail_server(
    request: pytest.FixtureRequest, ca_bundle_path: Path
) -> tuple[SMTPServer, dict[str, Any]]:
    """A server and the options to reach it: plain, STARTTLS + AUTH, implicit TLS + AUTH."""
    if request.param == "plain":
        return request.getfixturevalue("smtpd"), {}
    secure = {"username": USERNAME, "password": PASSWORD, "cert_bundle": str(ca_bundle_path)}
    if request.param == "starttls+auth":
        return request.getfixturevalue("smtpd_starttls"), {"use_tls": True, **secure}
    return request.getfixturevalue("smtpd_tls"), {"use_ssl": True, **secure}


def test_sync_views_reuse_one_connection(
    client: Client,
    mail_server: tuple[SMTPServer, dict[str, Any]],
    use_smtp: Callable[..., None],
) -> None:
    """One mail per request under WSGI: one TCP + TLS + AUTH handshake for all of them."""
    server, options = mail_server
    use_smtp(server, **options)
    for i in range(20):
        response = client.get("/send/", {"to": f"user{i}@example.com"})
        assert response.status_code == 200 and response.content == b"1"
    assert len(server.messages) == 20
    assert server.handler.connections == 1
    assert len(server.handler.logins) == (1 if options else 0)
    assert all(m.tls is bool(options) for m in server.messages)


def test_sync_view_batch(client: Client, smtpd: SMTPServer, use_smtp: Callable[..., None]) -> None:
    use_smtp(smtpd, pool_size=1)
    assert client.get("/send-many/", {"n": 5}).content == b"5"
    assert client.get("/send/").content == b"1"
    assert len(smtpd.messages) == 6
    assert smtpd.handler.connections == 1


async def test_async_views_reuse_one_connection(
    async_client: AsyncClient,
    client: Client,
    mail_server: tuple[SMTPServer, dict[str, Any]],
    use_smtp: Callable[..., None],
) -> None:
    """Async views await the bridge's pool: the connection is shared with sync views."""
    smtpd, options = mail_server
    use_smtp(smtpd, pool_size=1, **options)
    for i in range(20):
        response = await async_client.get("/asend/", {"to": f"user{i}@example.com"})
        assert response.status_code == 200 and response.content == b"1"
    response = await async_client.get("/asend-many/", {"n": 4})
    assert response.content == b"4"
    for _ in range(5):  # a sync view in a worker thread, as under a mixed deployment
        response = await sync_to_async(client.get, thread_sensitive=False)("/send/")
        assert response.content == b"1"
    assert len(smtpd.messages) == 29
    assert smtpd.handler.connections == 1


async def test_async_view_does_not_block_its_loop(
    async_client: AsyncClient, make_smtpd: Callable[..., SMTPServer], use_smtp: Callable[..., None]
) -> None:
    server = make_smtpd(handler=SlowHandler())
    use_smtp(server)
    response = await async_client.get("/asend-timed/")
    result = json.loads(response.content)
    assert result["sent"] == 1
    assert result["elapsed"] >= SlowHandler.delay
    # The view's loop kept running while the mail was in flight (a tick every 10 ms).
    assert result["ticks"] >= 10


def test_errors_mail_the_admins(
    client: Client, smtpd: SMTPServer, use_smtp: Callable[..., None], settings: Any
) -> None:
    """AdminEmailHandler (Django's default logging with DEBUG off) sends through us."""
    use_smtp(smtpd)
    settings.ADMINS = admins("admin@example.com")
    client.raise_request_exception = False
    response = client.get("/boom/")
    assert response.status_code == 500
    [received] = smtpd.messages
    assert received.rcpt_tos == ["admin@example.com"]
    assert received.mail_from == "server@example.com"  # SERVER_EMAIL
    assert received.message["Subject"].startswith("[Django] ERROR")
    assert "Something broke in a view" in received.original_content.decode()


def test_sendtestemail(smtpd: SMTPServer, use_smtp: Callable[..., None], settings: Any) -> None:
    use_smtp(smtpd)
    settings.ADMINS = admins("admin@example.com")
    settings.MANAGERS = admins("manager@example.com")
    call_command("sendtestemail", "someone@example.com")
    call_command("sendtestemail", "--admins", "--managers")
    assert [m.rcpt_tos for m in smtpd.messages] == [
        ["someone@example.com"],
        ["manager@example.com"],
        ["admin@example.com"],
    ] or [m.rcpt_tos for m in smtpd.messages] == [
        ["someone@example.com"],
        ["admin@example.com"],
        ["manager@example.com"],
    ]
    assert "Test email from" in smtpd.messages[0].message["Subject"]


@pytest.mark.django_db
def test_password_reset(
    client: Client,
    smtpd: SMTPServer,
    use_smtp: Callable[..., None],
    django_user_model: Any,
) -> None:
    use_smtp(smtpd)
    django_user_model.objects.create_user("alice", "alice@example.com", "pw")
    response = client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    [received] = smtpd.messages
    assert received.rcpt_tos == ["alice@example.com"]
    assert received.mail_from == "webmaster@example.com"  # DEFAULT_FROM_EMAIL
    body = received.message.get_content()
    assert "/accounts/reset/" in body and "alice" in body


def test_alternatives_and_attachments(smtpd: SMTPServer, use_smtp: Callable[..., None]) -> None:
    use_smtp(smtpd)
    email = EmailMultiAlternatives(
        "Report é", "Plain text body", "Reports <reports@example.com>", ["to@example.com"]
    )
    email.attach_alternative("<h1>HTML body é</h1>", "text/html")
    email.attach("pixel.png", PNG, "image/png")
    email.attach("notes.txt", "first line\nsecond line é\n", "text/plain")
    assert email.send() == 1
    [received] = smtpd.messages
    parsed = received.message
    assert parsed["Subject"] == "Report é"
    assert parsed.get_content_type() == "multipart/mixed"
    attachments = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert attachments["pixel.png"].get_content() == PNG
    notes = attachments["notes.txt"].get_content().replace("\r\n", "\n")
    assert notes == "first line\nsecond line é\n"
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None and "HTML body é" in body.get_content()
    plain = parsed.get_body(preferencelist=("plain",))
    assert plain is not None and plain.get_content().strip() == "Plain text body"


def test_locmem_still_captures_by_default(client: Client, mailoutbox: list[Any]) -> None:
    """What pytest-django does to EMAIL_BACKEND: the real path must be opted into."""
    if HAS_MAILERS:
        pytest.skip("MAILERS is not defined in the test settings; covered on EMAIL_BACKEND")
    assert client.get("/send/").content == b"1"
    assert [m.to for m in mailoutbox] == [["user@example.com"]]


@pytest.fixture
def capture_server(settings: Any) -> Iterator[CaptureServer]:
    """The Django page's recipe for testing the real path (docs/start/django.md, Testing): a
    CaptureServer, settings pointing at it, and the bridge shut down (pooled connections
    QUIT) before the server stops."""
    with CaptureServer().running() as server:
        if HAS_MAILERS:
            options = {"host": server.host, "port": server.port}
            settings.MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
        else:
            settings.EMAIL_BACKEND = BACKEND
            settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
        yield server
        bridge.shutdown()


def test_documented_testing_recipe(client: Client, capture_server: CaptureServer) -> None:
    assert client.get("/send/", {"to": "new@example.com"}).content == b"1"
    assert client.get("/send/", {"to": "other@example.com"}).content == b"1"
    assert [m.rcpt_tos for m in capture_server.messages] == [
        ["new@example.com"],
        ["other@example.com"],
    ]
    assert capture_server.connections == 1
