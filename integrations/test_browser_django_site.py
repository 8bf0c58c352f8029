"""The example Django site (example_projects/django_site) in a real browser.

The site runs as ``manage.py runserver --noreload`` (after ``manage.py migrate``, which
creates the demo user alice) on a free port, with DEBUG off, sending through
``smtp_backends.django.AsyncSMTPBackend`` to an in-process development mail server; Chromium
drives the site and reads the mail in the server's web inbox.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from integrations.browser import (
    EXAMPLES_DIR,
    AppServer,
    contact_scenario,
    follow_link,
    free_port,
    newsletter_scenario,
    open_inbox,
    open_message,
    screenshot,
    subprocess_env,
)
from smtp_backends.devserver import DevServer

SITE_DIR = EXAMPLES_DIR / "django_site"
SENDER = "noreply@example.com"  # DEFAULT_FROM_EMAIL
ADMIN = "admin@example.com"  # ADMINS
NEW_PASSWORD = "Looking-glass-1871"


@pytest.fixture(scope="module")
def site_env(mail_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The site's environment: the mail server, DEBUG off, a fresh migrated database."""
    database = tmp_path_factory.mktemp("django_site") / "db.sqlite3"
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        DJANGO_DEBUG="0",
        DJANGO_DB_PATH=str(database),
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(mail_server.smtp_port),
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=SITE_DIR,
        env=env,
        check=True,
        timeout=60,
    )
    return env


@pytest.fixture(scope="module")
def site(site_env: dict[str, str]) -> Iterator[AppServer]:
    """The site, served by ``manage.py runserver`` on a free port."""
    port = free_port()
    command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    with AppServer("django_site", command, cwd=SITE_DIR, env=site_env, port=port) as server:
        yield server


def test_contact_form(page: Page, inbox: DevServer, site: AppServer) -> None:
    contact_scenario(page, inbox, site.url, app="django", sender=SENDER)


def test_newsletter_batch(page: Page, inbox: DevServer, site: AppServer) -> None:
    newsletter_scenario(page, inbox, site.url, app="django")


def test_password_reset(page: Page, inbox: DevServer, site: AppServer) -> None:
    page.goto(site.url + "accounts/password_reset/")
    page.fill("#id_email", "alice@example.com")
    page.click("button#reset")
    expect(page.locator("#reset-sent")).to_be_visible()

    [message] = inbox.wait_for(1)
    assert message.envelope_to == ("alice@example.com",)
    open_inbox(page, inbox, 1)
    open_message(page)
    expect(page.locator("h1#subject")).to_contain_text("Password reset")
    expect(page.locator("dd#to")).to_contain_text("alice@example.com")
    link = page.locator("pre#text-body a", has_text="/accounts/reset/")
    expect(link).to_have_count(1)
    assert (link.get_attribute("href") or "").startswith(site.url + "accounts/reset/")
    screenshot(page, "django_password_reset_message")

    page = follow_link(page, link)
    page.fill("#id_new_password1", NEW_PASSWORD)
    page.fill("#id_new_password2", NEW_PASSWORD)
    page.click("button#set-password")
    expect(page.locator("#reset-complete")).to_be_visible()

    page.click("#login-link")
    page.fill("#id_username", "alice")
    page.fill("#id_password", NEW_PASSWORD)
    page.click("button#login")
    expect(page.locator("#logged-in")).to_have_text("Logged in as alice")
    screenshot(page, "django_password_reset_logged_in")


def test_server_error_mails_admins(page: Page, inbox: DevServer, site: AppServer) -> None:
    response = page.goto(site.url + "boom/")
    assert response is not None
    assert response.status == 500
    expect(page.locator("#server-error")).to_be_visible()

    [message] = inbox.wait_for(1)
    assert "ERROR" in message.subject
    assert "/boom/" in message.subject
    assert message.envelope_to == (ADMIN,)
    assert "Boom! This error was raised on purpose" in (message.text or "")
    open_inbox(page, inbox, 1)
    expect(page.locator("#messages tr.message td.subject")).to_contain_text("ERROR")
    expect(page.locator("#messages tr.message td.to")).to_have_text(ADMIN)
    screenshot(page, "django_server_error_inbox")


def test_sendtestemail(inbox: DevServer, site_env: dict[str, str], tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "sendtestemail", "x@example.com"],
        cwd=SITE_DIR,
        env=site_env,
        check=True,
        timeout=60,
    )
    [message] = inbox.wait_for(1)
    assert message.envelope_to == ("x@example.com",)
    assert message.subject.startswith("Test email from")
    assert len(inbox.messages) == 1
