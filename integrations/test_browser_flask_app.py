"""The example Flask app (example_projects/flask_app) in a real browser.

The app runs as ``flask --app flask_demo run`` on a free port, sending through
``smtp_backends.flask.Mail`` to an in-process development mail server; Chromium drives the
app and reads the mail in the server's web inbox.
"""

from __future__ import annotations

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

APP_DIR = EXAMPLES_DIR / "flask_app"
SENDER = "noreply@example.com"  # MAIL_DEFAULT_SENDER


@pytest.fixture(scope="module")
def app(mail_server: DevServer) -> Iterator[AppServer]:
    """The app, served by ``flask run`` on a free port."""
    port = free_port()
    env = subprocess_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(mail_server.smtp_port))
    command = [sys.executable, "-m", "flask", "--app", "flask_demo", "run"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with AppServer("flask_app", command, cwd=APP_DIR, env=env, port=port) as server:
        yield server


def test_contact_form(page: Page, inbox: DevServer, app: AppServer) -> None:
    contact_scenario(page, inbox, app.url, app="flask", sender=SENDER)


def test_newsletter_batch(page: Page, inbox: DevServer, app: AppServer) -> None:
    newsletter_scenario(page, inbox, app.url, app="flask")
