"""Helpers and fixtures of the browser suites (``test_browser_*.py``).

The suites drive Debian's Chromium (``/usr/bin/chromium``; a browser is never downloaded)
through Playwright's sync API against the example projects, each started as a real
subprocess through its real entry point, sending to an in-process development mail
server (:class:`smtp_backends.devserver.DevServer`).

The fixtures are made visible to the test modules by ``integrations/conftest.py``:

- ``browser`` (module scope): a headless Chromium. Module, not session, scope: a live
  sync Playwright keeps its event loop registered on the main thread, which would break
  asyncio tests that run after it in the same session.
- ``page``: a fresh browser context and page per test; a screenshot of it lands in
  :data:`OUTPUT_DIR` when the test fails.
- ``mail_server`` (module scope) and ``inbox`` (the same server, emptied before each test).

Screenshots and the apps' logs go to ``integrations/output/`` (git-ignored).
Playwright is imported lazily, so that importing this module costs nothing to suites
that do not use the browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

from integrations.requirements import missing
from tests.servers import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from smtp_backends.devserver import DevServer

__all__ = (
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "EXAMPLES_DIR",
    "OUTPUT_DIR",
    "REPO_ROOT",
    "STAFF_ADDRESS",
    "SUBSCRIBERS",
    "AppServer",
    "browser",
    "contact_scenario",
    "follow_link",
    "free_port",
    "get_json",
    "header_value",
    "inbox",
    "mail_server",
    "newsletter_scenario",
    "open_inbox",
    "open_message",
    "page",
    "require_chromium",
    "screenshot",
    "subprocess_env",
    "wait_for_http",
    "wait_until",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "example_projects"
#: Screenshots, failure screenshots and the apps' logs (git-ignored).
OUTPUT_DIR = Path(__file__).resolve().parent / "output"
#: Debian's Chromium, driven as is.
CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a quiet headless Chromium that only talks to 127.0.0.1.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Seconds an app may take to answer HTTP after it was started.
START_TIMEOUT = 30.0
#: Seconds Playwright waits for an element or a navigation.
BROWSER_TIMEOUT_MS = 15_000


def require_chromium() -> Path:
    """The Chromium executable; skips the test (fails it under CI) when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        missing(
            f"{CHROMIUM} not found: install Debian's chromium package "
            "(scripts/test does: apt-get install chromium chromium-driver)"
        )
    return CHROMIUM


def subprocess_env(**overrides: str) -> dict[str, str]:
    """This process's environment for an app subprocess, with ``overrides``.

    DJANGO_SETTINGS_MODULE and the Flask variables are removed: each app sets its own.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "FLASK_APP", "FLASK_DEBUG"}
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def get_json(url: str, timeout: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_for_http(
    url: str, timeout: float = START_TIMEOUT, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once ``url`` answers HTTP (any status).

    Raises:
        RuntimeError: ``process`` exited first.
        TimeoutError: no answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered, if not with 200
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.1)


class AppServer:
    """An example app run as a subprocess, through its real entry point.

    Args:
        name: names the log file (``integrations/output/NAME.log``).
        args: the command.
        cwd: where it runs.
        env: its environment (see :func:`subprocess_env`).
        port: the HTTP port it listens on (127.0.0.1).

    Use as a context manager: entering starts the process and waits (up to
    :data:`START_TIMEOUT`) until ``url`` answers; leaving stops it (SIGTERM, then
    SIGKILL after 10 s).
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        port: int,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.cwd = cwd
        self.env = dict(env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = OUTPUT_DIR / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the app wrote (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the process and wait until it answers HTTP.

        Raises:
            RuntimeError: it exited or did not answer in time (with its log's tail).
        """
        OUTPUT_DIR.mkdir(exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_http(self.url, process=self.process)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after 10 s) and close its log (idempotent)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``integrations/output/NAME.png``; returns its path."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    path = OUTPUT_DIR / f"{_safe_name(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Debian Chromium, shared by one test module's tests."""
    executable = require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed (pip install --group dev -e .)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh browser context; screenshotted into OUTPUT_DIR if the test fails."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    new_page = context.new_page()
    try:
        yield new_page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):  # a screenshot is a bonus, never an error
                screenshot(new_page, f"{request.node.name}-failure")
        context.close()


@pytest.fixture(scope="module")
def mail_server() -> Iterator[DevServer]:
    """The development mail server, in this process, on free ports, for one module."""
    try:
        from smtp_backends.devserver import DevServer
    except ImportError as exc:
        pytest.fail(f"smtp_backends.devserver cannot be imported: {exc}", pytrace=False)
    with DevServer(host="127.0.0.1", smtp_port=0, http_port=0) as server:
        yield server


@pytest.fixture
def inbox(mail_server: DevServer) -> DevServer:
    """:func:`mail_server`, emptied before the test."""
    mail_server.clear()
    return mail_server


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate()`` every 50 ms until it is true.

    Raises:
        TimeoutError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still not true after {timeout} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- scenarios
# The contact form and the newsletter are the same in the three example apps (same
# element ids, same addresses): each suite runs these with its app's URL and sender.

#: Where every example's contact form sends to.
STAFF_ADDRESS = "staff@example.com"
#: Every example's newsletter subscribers.
SUBSCRIBERS = tuple(f"subscriber{n:02d}@example.com" for n in range(1, 26))


def open_inbox(page: Page, server: DevServer, count: int) -> None:
    """Open the web inbox and check that it lists ``count`` messages."""
    from playwright.sync_api import expect

    page.goto(server.inbox_url)
    expect(page.locator("#message-count")).to_have_text(str(count))
    expect(page.locator("#messages tr.message")).to_have_count(count)


def open_message(page: Page, row: int = 0) -> None:
    """From the inbox page, click the subject of row ``row`` (0: the newest)."""
    from playwright.sync_api import expect

    page.locator("#messages tr.message").nth(row).locator("td.subject a").click()
    expect(page.locator("h1#subject")).to_be_visible()


def header_value(page: Page, name: str) -> str:
    """A header of the open message, from its headers table, else from its raw source."""
    rows = page.locator("#headers tr", has=page.locator("th", has_text=re.compile(f"^{name}$")))
    if rows.count():
        return rows.first.locator("td").inner_text()
    raw_url = page.locator("a#raw").evaluate("link => link.href")
    raw = page.request.get(raw_url).text()
    found = re.search(rf"^{name}:[ \t]*(.*(?:\r?\n[ \t].*)*)", raw, re.MULTILINE | re.IGNORECASE)
    return re.sub(r"\s+", " ", found.group(1)).strip() if found else ""


def follow_link(page: Page, link: Any) -> Page:
    """Click ``link`` (a locator); the page it opens, whether in this tab or a new one."""
    if link.get_attribute("target") in {"_blank", "_new"}:
        with page.context.expect_page() as opened:
            link.click()
        new_page = opened.value
        new_page.wait_for_load_state()
        return new_page
    link.click()
    page.wait_for_load_state()
    return page


def contact_scenario(
    page: Page, server: DevServer, site_url: str, *, app: str, sender: str
) -> None:
    """Send the contact form in the browser, then read the mail in the web inbox.

    Checks the thanks page, that exactly one mail arrived, its subject, From, To,
    envelope recipient, Reply-To (the visitor) and that the body holds what was typed.
    Screenshots: ``{app}_contact_inbox.png`` and ``{app}_contact_message.png``.
    """
    from playwright.sync_api import expect

    subject = f"Question about the {app} example"
    lines = ["Hello staff,", "does the contact form really send mail?", "Thanks, Ada"]
    page.goto(site_url + "contact/")
    page.fill("#id_name", "Ada Lovelace")
    page.fill("#id_email", "ada@example.com")
    page.fill("#id_subject", subject)
    page.fill("#id_message", "\n".join(lines))
    page.click("button#send")
    expect(page.locator("#thanks")).to_be_visible()
    expect(page.locator("#thanks")).to_contain_text("Ada Lovelace")

    [message] = server.wait_for(1)
    assert message.envelope_to == (STAFF_ADDRESS,)
    open_inbox(page, server, 1)
    row = page.locator("#messages tr.message").first
    expect(row.locator("td.subject")).to_have_text(f"[Contact] {subject}")
    expect(row.locator("td.to")).to_have_text(STAFF_ADDRESS)
    screenshot(page, f"{app}_contact_inbox")

    open_message(page)
    expect(page.locator("h1#subject")).to_have_text(f"[Contact] {subject}")
    expect(page.locator("dd#from")).to_contain_text(sender)
    expect(page.locator("dd#to")).to_contain_text(STAFF_ADDRESS)
    expect(page.locator("dd#envelope-to")).to_have_text(STAFF_ADDRESS)
    reply_to = header_value(page, "Reply-To")
    assert "ada@example.com" in reply_to, reply_to
    assert "Ada Lovelace" in reply_to, reply_to
    body = page.locator("pre#text-body")
    expect(body).to_contain_text("ada@example.com")
    for line in lines:
        expect(body).to_contain_text(line)
    screenshot(page, f"{app}_contact_message")
    assert len(server.messages) == 1  # nothing sent twice


def newsletter_scenario(page: Page, server: DevServer, site_url: str, *, app: str) -> None:
    """Send the newsletter in the browser: 25 messages, one per subscriber, with HTML.

    Checks "Sent 25 messages", the inbox's count, that every subscriber got exactly one
    (via ``/api/messages``), and that the HTML part renders in the message page's iframe.
    Screenshots: ``{app}_newsletter_inbox.png`` and ``{app}_newsletter_message.png``.
    """
    from playwright.sync_api import expect

    subject = f"The {app} example's spring news"
    page.goto(site_url + "newsletter/")
    page.fill("#id_subject", subject)
    page.fill("#id_body", "Hello subscribers!\n\nThe garden is in bloom.")
    page.click("button#send-newsletter")
    expect(page.locator("#result")).to_have_text("Sent 25 messages")

    server.wait_for(len(SUBSCRIBERS))
    messages = get_json(server.inbox_url + "api/messages")
    recipients = sorted(address for message in messages for address in message["envelope_to"])
    assert recipients == sorted(SUBSCRIBERS)  # each subscriber once, nobody else
    for message in messages:
        [to] = message["envelope_to"]
        assert message["subject"] == subject
        assert to in message["to"]
        assert "The garden is in bloom." in message["text"]
        assert f"as {to}" in message["text"]
        assert message["html"] is not None
        assert "The garden is in bloom." in message["html"]

    open_inbox(page, server, len(SUBSCRIBERS))
    screenshot(page, f"{app}_newsletter_inbox")
    open_message(page)
    recipient = page.locator("dd#envelope-to").inner_text().strip()
    assert recipient in SUBSCRIBERS
    html = page.frame_locator("iframe#html-body")
    expect(html.locator("h1")).to_have_text(subject)
    expect(html.locator("body")).to_contain_text("The garden is in bloom.")
    expect(html.locator("body")).to_contain_text(f"You receive this newsletter as {recipient}")
    screenshot(page, f"{app}_newsletter_message")
