"""The example ASGI app (example_projects/asgi_app) in a real browser.

The app runs as ``uvicorn asgi_demo.app:app`` on a free port; its handlers send through
``smtp_backends.asgi.Mail``, whose Mailer lives for the app's lifespan, to an in-process
development mail server. Chromium drives the app
and reads the mail in the server's web inbox.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from integrations.browser import (
    EXAMPLES_DIR,
    AppServer,
    contact_scenario,
    free_port,
    newsletter_scenario,
    subprocess_env,
)
from smtp_backends.devserver import DevServer

APP_DIR = EXAMPLES_DIR / "asgi_app"
SENDER = "noreply@example.com"


@pytest.fixture(scope="module")
def app(mail_server: DevServer) -> Iterator[AppServer]:
    """The app, served by uvicorn on a free port."""
    port = free_port()
    env = subprocess_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(mail_server.smtp_port))
    command = [sys.executable, "-m", "uvicorn", "asgi_demo.app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with AppServer("asgi_app", command, cwd=APP_DIR, env=env, port=port) as server:
        yield server


def test_contact_form(page: Page, inbox: DevServer, app: AppServer) -> None:
    contact_scenario(page, inbox, app.url, app="asgi", sender=SENDER)


def test_newsletter_batch(page: Page, inbox: DevServer, app: AppServer) -> None:
    newsletter_scenario(page, inbox, app.url, app="asgi")


def test_pool_closes_at_shutdown(inbox: DevServer, app: AppServer) -> None:
    """Stopping uvicorn (SIGTERM) runs the lifespan's exit, closing the Mailer cleanly."""
    process = app.process
    assert process is not None
    app.stop()
    log = app.log_tail(200)
    # uvicorn exits through the signal it handled (-15) after a graceful shutdown.
    assert process.returncode in {0, -signal.SIGTERM}, log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
