"""The development mail server's own web inbox in a real browser (Debian's Chromium).

Live updates (server-sent events: new mail appears and cleared mail goes without a
reload), search, and release to a relay with an allow-list. Mail is sent over SMTP on
127.0.0.1 to an in-process DevServer; the relay is a second DevServer.
"""

from __future__ import annotations

import smtplib
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from integrations.browser import screenshot
from smtp_backends.devserver import DevServer, ReleaseConfig

ALLOWED = "qa@example.org"


@pytest.fixture(scope="module")
def relay() -> Iterator[DevServer]:
    """The "real" SMTP server releases go to."""
    with DevServer(smtp_port=0, http_port=0) as server:
        yield server


@pytest.fixture(scope="module")
def dev_server(relay: DevServer) -> Iterator[DevServer]:
    """The development server under test, releasing to :func:`relay` for ALLOWED only."""
    config = ReleaseConfig(host="127.0.0.1", port=relay.smtp_port, tls="none", allowed=(ALLOWED,))
    with DevServer(smtp_port=0, http_port=0, release=config) as server:
        yield server


@pytest.fixture
def inbox(dev_server: DevServer, relay: DevServer) -> DevServer:
    """:func:`dev_server` (and the relay) emptied before the test."""
    dev_server.clear()
    relay.clear()
    return dev_server


@pytest.fixture
def csp_errors(page: Page) -> list[str]:
    """Console errors of the page (a CSP violation would show up here)."""
    errors: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", record)
    return errors


def send(server: DevServer, subject: str, to: str = "someone@example.org") -> None:
    message = EmailMessage()
    message["From"] = "app@example.org"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"Body of {subject}\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.send_message(message)


def open_live_inbox(page: Page, server: DevServer, path: str = "") -> None:
    page.goto(server.inbox_url + path)
    # The hidden frame's EventSource is open.
    expect(page.locator("html")).to_have_attribute("data-live", "connected")
    # A marker that a reload would wipe out.
    page.evaluate("window.notReloaded = true")


def test_new_mail_appears_and_cleared_mail_goes_without_a_reload(
    page: Page, inbox: DevServer, csp_errors: list[str]
) -> None:
    open_live_inbox(page, inbox)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#message-count")).to_have_text("0")

    send(inbox, "First live message", to="ada+live@example.org")
    rows = page.locator("#messages tr.message")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td.subject")).to_have_text("First live message")
    expect(rows.first.locator("td.to")).to_have_text("ada+live@example.org")
    expect(rows.first.locator("td.tags a.tag")).to_have_text("live")
    expect(page.locator("#message-count")).to_have_text("1")
    expect(page.locator("#empty")).to_have_count(0)

    send(inbox, "Second <b>live</b> message")
    expect(rows).to_have_count(2)
    # Newest first, and message text is shown as text, never as markup.
    expect(rows.first.locator("td.subject")).to_have_text("Second <b>live</b> message")
    expect(rows.first.locator("td.subject b")).to_have_count(0)
    screenshot(page, "devserver_live_inbox")

    rows.first.locator("td.subject a").click()
    expect(page.locator("h1#subject")).to_have_text("Second <b>live</b> message")
    page.go_back()
    expect(page.locator("html")).to_have_attribute("data-live", "connected")
    page.evaluate("window.notReloaded = true")

    request = urllib.request.Request(inbox.inbox_url + "api/messages", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    expect(rows).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#message-count")).to_have_text("0")
    assert page.evaluate("window.notReloaded") is True
    assert csp_errors == []


def test_search_filters_the_list_and_live_mail_that_matches(
    page: Page, inbox: DevServer, csp_errors: list[str]
) -> None:
    send(inbox, "Invoice 1001", to="billing@example.org")
    send(inbox, "Welcome aboard", to="ada+signup@example.org")
    send(inbox, "Invoice 1002", to="billing@example.org")
    inbox.wait_for(3)

    page.goto(inbox.inbox_url)
    expect(page.locator("#messages tr.message")).to_have_count(3)
    page.fill("#q", "subject:invoice")
    page.press("#q", "Enter")
    expect(page).to_have_url(inbox.inbox_url + "?q=subject%3Ainvoice")
    rows = page.locator("#messages tr.message")
    expect(rows.locator("td.subject")).to_have_text(["Invoice 1002", "Invoice 1001"])
    expect(page.locator("#message-count")).to_have_text("2")
    expect(page.locator("button#clear")).to_have_text("Clear matching")
    expect(page.locator("html")).to_have_attribute("data-live", "connected")

    # Live mail is filtered by the same search.
    send(inbox, "Newsletter")
    send(inbox, "Invoice 1003", to="billing@example.org")
    expect(rows.locator("td.subject")).to_have_text(
        ["Invoice 1003", "Invoice 1002", "Invoice 1001"]
    )
    screenshot(page, "devserver_search")

    # A tag link searches by tag.
    page.click("#all")
    page.locator("a.tag", has_text="signup").click()
    expect(page).to_have_url(inbox.inbox_url + "?q=tag:signup")
    expect(rows.locator("td.subject")).to_have_text(["Welcome aboard"])
    assert csp_errors == []


def test_release_to_an_allowed_recipient_and_refusal_of_others(
    page: Page, inbox: DevServer, relay: DevServer
) -> None:
    send(inbox, "Release me", to="customer@client.example")
    [stored] = inbox.wait_for(1)
    page.goto(f"{inbox.inbox_url}messages/{stored.id}")
    expect(page.locator("#release-to")).to_have_value("customer@client.example")
    screenshot(page, "devserver_message_actions")

    # The message's own recipient is not on the allow-list: nothing goes out.
    page.click("button#release")
    expect(page.locator("#release-result")).to_contain_text(
        "Nothing sent: not on the release allow-list: customer@client.example"
    )
    assert relay.messages == []

    page.click("a#back")
    page.fill("#release-to", ALLOWED)
    page.click("button#release")
    expect(page.locator("#release-result")).to_contain_text(f"Released to {ALLOWED}: ")
    screenshot(page, "devserver_release")
    [released] = relay.wait_for(1)
    assert released.envelope_to == (ALLOWED,)
    assert released.raw == stored.raw
    assert released.subject == "Release me"
