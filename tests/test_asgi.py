"""smtp_backends.asgi: a Mailer in an ASGI app's lifespan, with real Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from smtp_backends import SMTPRecipientsRefused, bridge
from smtp_backends.asgi import Mail
from smtp_backends.mailer import Mailer
from smtp_backends.settings import MailerSettings
from tests.servers import SMTPServer, free_port

SENDER = "app@example.com"


@pytest.fixture(autouse=True)
def fresh_bridge(make_smtpd: object) -> Iterator[None]:
    """Pools made by a test close (QUIT) before its servers stop."""
    bridge.shutdown()
    yield
    bridge.shutdown()


def message(to: str, subject: str = "hi") -> EmailMessage:
    email = EmailMessage()
    email["From"] = SENDER
    email["To"] = to
    email["Subject"] = subject
    email.set_content("body")
    return email


@contextlib.contextmanager
def serve(app: Any) -> Iterator[httpx.Client]:
    """``app`` served by uvicorn on loopback (lifespan on); a client for it.

    Leaving the block shuts the server down as a signal would: the lifespan exits.
    """
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "uvicorn did not stop"


def mail_for(server: SMTPServer, **options: Any) -> Mail:
    return Mail(environ={}, host=server.host, port=server.port, timeout=10, **options)


def test_starlette_app_sends_over_one_pooled_connection_closed_at_shutdown(
    smtpd: SMTPServer,
) -> None:
    mail = mail_for(smtpd)

    async def one(request: Request) -> JSONResponse:
        errors, reply = await mail.send_message(message(request.query_params["to"]))
        return JSONResponse({"refused": list(errors), "reply": reply})

    async def many(request: Request) -> JSONResponse:
        mailer: Mailer = request.app.state.mailer
        outcomes = await mailer.asend([message(f"n{i}@example.com") for i in range(5)])
        return JSONResponse({"sent": sum(isinstance(o, tuple) for o in outcomes)})

    app = Starlette(routes=[Route("/one", one), Route("/many", many)], lifespan=mail.lifespan)
    with serve(app) as client:
        for n in range(3):
            response = client.get("/one", params={"to": f"r{n}@example.com"})
            assert response.status_code == 200 and response.json()["refused"] == []
        assert smtpd.handler.connections == 1  # one pooled connection for every request
        assert client.get("/many").json() == {"sent": 5}
        # A list keeps its order over a connection of its own (keep_order).
        assert smtpd.handler.connections == 2
        assert {m.connection_id for m in smtpd.messages[3:]} == {2}
        assert "QUIT" not in smtpd.handler.commands
    # The lifespan's exit closed the pools.
    assert smtpd.handler.commands.count("QUIT") == 2
    assert [m.rcpt_tos[0] for m in smtpd.messages][:3] == [f"r{n}@example.com" for n in range(3)]


def test_fastapi_dependency(smtpd: SMTPServer) -> None:
    fastapi = pytest.importorskip("fastapi")
    mail = mail_for(smtpd)
    app = fastapi.FastAPI(lifespan=mail.lifespan)

    @app.post("/signup")
    async def signup(to: str, mailer: Mailer = fastapi.Depends(mail)) -> dict[str, Any]:  # noqa: B008
        outcomes = await mailer.asend([message(to, "welcome")])
        return {"sent": isinstance(outcomes[0], tuple)}

    with serve(app) as client:
        assert client.post("/signup", params={"to": "new@example.com"}).json() == {"sent": True}
        assert client.post("/signup", params={"to": "refuse@example.com"}).json() == {"sent": False}
    assert smtpd.messages[0].rcpt_tos == ["new@example.com"]
    assert smtpd.handler.connections == 1 and smtpd.handler.commands[-1] == "QUIT"


def test_settings_from_keywords_and_environment() -> None:
    environ = {"SMTP_BACKENDS_HOST": "mail.example.com", "SMTP_BACKENDS_USE_TLS": "yes"}
    mail = Mail(environ=environ, port=2525)
    assert (mail.settings.host, mail.settings.port, mail.settings.use_tls) == (
        "mail.example.com",
        2525,
        True,
    )
    assert repr(mail) == "<Mail mail.example.com:2525>"
    assert Mail(environ=environ, host="other").settings.host == "other"  # keywords win
    with pytest.raises(ValueError, match="SMTP_BACKENDS_USE_SSL"):
        Mail(environ={"SMTP_BACKENDS_USE_SSL": "False?"})
    with pytest.raises(TypeError, match="port must be an int, not 'x'"):
        Mail(environ={}, port="x")
    settings = MailerSettings(host="h")
    assert Mail(settings).settings is settings
    with pytest.raises(TypeError, match="either settings or keyword"):
        Mail(settings, port=25)


def test_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_BACKENDS_HOST", "env.example.com")
    monkeypatch.setenv("SMTP_BACKENDS_PORT", "1025")
    assert (Mail().settings.host, Mail().settings.port) == ("env.example.com", 1025)


def test_send_helpers_outside_an_app(smtpd: SMTPServer) -> None:
    mail = mail_for(smtpd, keep_order=False, pool_size=2)

    async def main() -> None:
        async with mail.lifespan():
            assert mail() is mail.mailer
            outcomes = await mail.send_messages([message(f"s{i}@example.com") for i in range(8)])
            assert all(isinstance(o, tuple) for o in outcomes)
            with pytest.raises(SMTPRecipientsRefused):
                await mail.send_message(message("refuse@example.com"))
        await mail.aclose()  # nothing open: a no-op

    asyncio.run(main())
    assert len(smtpd.messages) == 8
    assert smtpd.handler.connections == 2


def test_the_documented_example(smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ASGI page's example (also the README's), settings from the environment.

    tests/test_docs_pages.py runs it as written (``Mail(host=..., port=...)``); here it runs
    as its comment offers, ``Mail()``, with the settings in the environment.
    """
    pytest.importorskip("fastapi")
    page = (Path(__file__).parent.parent / "docs" / "start" / "asgi.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S)
    assert code
    written = 'Mail(host="127.0.0.1", port=1025)'
    assert written in code.group(1), "docs/start/asgi.md: the example no longer names its server"
    example = code.group(1).replace(written, "Mail()")
    monkeypatch.setenv("SMTP_BACKENDS_HOST", smtpd.host)
    monkeypatch.setenv("SMTP_BACKENDS_PORT", str(smtpd.port))
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(example, "docs/start/asgi.md", "exec"), namespace)
    with serve(namespace["app"]) as client:
        response = client.post("/signup", params={"address": "reader@example.com"})
        assert response.json() == {"sent": True}
    assert smtpd.messages[0].rcpt_tos == ["reader@example.com"]
    assert smtpd.messages[0].message["Subject"] == "Welcome"
