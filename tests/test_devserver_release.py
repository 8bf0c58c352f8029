"""Release to a real SMTP server (allow-list enforced) and the link check of the dev inbox.

Releases go through our own client to real servers on 127.0.0.1: a second DevServer,
and the recording aiosmtpd servers of tests/servers.py with STARTTLS or implicit TLS
(trustme certificates) and AUTH. Link checks fetch from a real HTTP server on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from smtp_backends.cli import main
from smtp_backends.devserver import ChaosRule, DevServer, LinkCheckConfig, ReleaseConfig
from smtp_backends.devserver.command import parse_size
from smtp_backends.devserver.linkcheck import LinkChecker, extract_links
from smtp_backends.devserver.release import ReleaseFailed, ReleaseRefused
from tests.servers import PASSWORD, USERNAME, SMTPServer
from tests.test_devserver import api, fetch, make_message, page, send


@pytest.fixture
def relay() -> Iterator[DevServer]:
    """A second development server standing in for the real relay."""
    with DevServer(smtp_port=0, http_port=0) as running:
        yield running


def release_config(relay: DevServer, **options: Any) -> ReleaseConfig:
    options.setdefault("allowed", ("qa@example.org", "@team.example", "*+release@example.org"))
    return ReleaseConfig(host="127.0.0.1", port=relay.smtp_port, tls="none", **options)


# --------------------------------------------------------------------------- release


def test_release_sends_the_message_as_received_to_allowed_recipients(relay: DevServer) -> None:
    with DevServer(smtp_port=0, http_port=0, release=release_config(relay)) as server:
        send(server, make_message("Ship it", to="qa@example.org"), to_addrs=["qa@example.org"])
        [stored] = server.wait_for(1)
        result = server.release(stored)
        assert result.recipients == ("qa@example.org",)
        assert result.refused == {}
        [released] = relay.wait_for(1)
        assert released.raw == stored.raw
        assert released.envelope_from == stored.envelope_from
        assert released.envelope_to == ("qa@example.org",)
        # Other allowed recipients, by domain and by pattern; case does not matter.
        server.release(stored.id, ["Dev@Team.Example", "ada+release@example.org"])
        assert relay.wait_for(2)[1].envelope_to == ("Dev@Team.Example", "ada+release@example.org")


def test_a_recipient_off_the_allow_list_stops_the_whole_release(relay: DevServer) -> None:
    with DevServer(smtp_port=0, http_port=0, release=release_config(relay)) as server:
        send(server, make_message("Customers"), to_addrs=["customer@client.example"])
        [stored] = server.wait_for(1)
        with pytest.raises(ReleaseRefused) as refused:
            server.release(stored)  # its own recipients: not allowed
        assert refused.value.refused == ["customer@client.example"]
        with pytest.raises(ReleaseRefused) as refused:
            server.release(stored, ["qa@example.org", "qa@example.org.evil", "x@sub.team.example"])
        assert refused.value.refused == ["qa@example.org.evil", "x@sub.team.example"]
        for bad, message in (([], "at least one"), (["no-at-sign"], "not an address")):
            with pytest.raises(ValueError, match=message):
                server.release(stored, bad)
        status, _, body = fetch(
            server, "/api/messages/1/release", "POST", b'{"to": ["qa@example.org", "x@y.org"]}'
        )
        assert status == 403
        assert json.loads(body) == {
            "error": "not on the release allow-list: x@y.org",
            "refused": ["x@y.org"],
        }
        status, _, body = fetch(server, "/messages/1/release", "POST", b"to=boss%40client.example")
        assert status == 403
        assert b'<p id="release-result" class="broken">Nothing sent: not on the release' in body
        with pytest.raises(LookupError):
            server.release(99)
    time.sleep(0.2)
    assert relay.messages == []


def test_release_over_http(relay: DevServer) -> None:
    with DevServer(smtp_port=0, http_port=0, release=release_config(relay)) as server:
        send(server, make_message("Form"), to_addrs=["qa@example.org"])
        server.wait_for(1)
        assert 'id="release-form"' in page(server, "/messages/1")
        status, _, body = fetch(server, "/messages/1/release", "POST", b"to=qa%40example.org")
        assert status == 200
        assert b'<p id="release-result" class="ok">Released to qa@example.org: ' in body
        status, _, body = fetch(
            server, "/api/messages/1/release", "POST", b'{"to": "dev@team.example"}'
        )
        assert status == 200
        reply = json.loads(body)
        assert (reply["released"], reply["recipients"], reply["refused"]) == (
            True,
            ["dev@team.example"],
            {},
        )
        # No body: the message's own recipients.
        assert fetch(server, "/api/messages/1/release", "POST")[0] == 200
        assert [m.envelope_to for m in relay.wait_for(3)] == [
            ("qa@example.org",),
            ("dev@team.example",),
            ("qa@example.org",),
        ]
        for bad in (b"[1]", b'{"to": [1]}', b"{"):
            assert fetch(server, "/api/messages/1/release", "POST", bad)[0] == 400, bad
        assert fetch(server, "/api/messages/9/release", "POST")[0] == 404
        info: Any = api(server, "/api/info")
        assert info["release"]["host"] == "127.0.0.1"
        assert "password" not in info["release"]


def test_release_is_off_unless_configured() -> None:
    with DevServer(smtp_port=0, http_port=0) as server:
        send(server, make_message("Nowhere"))
        [stored] = server.wait_for(1)
        assert 'id="release-form"' not in page(server, "/messages/1")
        assert fetch(server, "/api/messages/1/release", "POST")[0] == 409
        assert fetch(server, "/messages/1/release", "POST", b"")[0] == 409
        with pytest.raises(RuntimeError, match="not configured"):
            server.release(stored)


def test_release_through_starttls_with_login(
    smtpd_starttls: SMTPServer, ca_bundle_path: Path
) -> None:
    config = ReleaseConfig(
        host="localhost",
        port=smtpd_starttls.port,
        tls="starttls",
        allowed=("@example.org",),
        username=USERNAME,
        password=PASSWORD,
        cafile=str(ca_bundle_path),
        sender="releases@example.org",
    )
    assert PASSWORD not in repr(config)
    assert PASSWORD not in json.dumps(config.to_json())
    with DevServer(smtp_port=0, http_port=0, release=config) as server:
        send(server, make_message("Over TLS"), to_addrs=["qa@example.org"])
        [stored] = server.wait_for(1)
        server.release(stored)
    [received] = smtpd_starttls.messages
    assert received.tls
    assert received.auth_login == USERNAME
    assert received.mail_from == "releases@example.org"
    assert received.original_content == stored.raw


async def test_release_over_implicit_tls_from_async_code(
    smtpd_tls: SMTPServer, ca_bundle_path: Path
) -> None:
    config = ReleaseConfig(
        host="localhost",
        port=smtpd_tls.port,
        tls="tls",
        allowed=("qa@example.org",),
        username=USERNAME,
        password=PASSWORD,
        cafile=str(ca_bundle_path),
    )
    with DevServer(smtp_port=0, http_port=0, release=config) as server:
        send(server, make_message("Implicit"), to_addrs=["qa@example.org"])
        [stored] = server.wait_for(1)
        # A running event loop here: the release runs on a thread of its own.
        server.release(stored)
    [received] = smtpd_tls.messages
    assert received.tls


def test_a_relay_that_fails_is_reported(relay: DevServer) -> None:
    config = release_config(relay)
    relay.stop()
    with DevServer(smtp_port=0, http_port=0, release=config) as server:
        send(server, make_message("Lost"), to_addrs=["qa@example.org"])
        [stored] = server.wait_for(1)
        with pytest.raises(ReleaseFailed, match=r"cannot reach 127\.0\.0\.1"):
            server.release(stored)
        status, _, body = fetch(server, "/api/messages/1/release", "POST")
        assert status == 502
        assert "cannot reach" in json.loads(body)["error"]
        status, _, body = fetch(server, "/messages/1/release", "POST", b"")
        assert status == 502


def test_what_the_relay_refuses_is_reported(relay: DevServer) -> None:
    relay.chaos.configure([ChaosRule.parse("rcpt:match=qa@*,reply=550 5.1.1 Unknown")])
    with DevServer(smtp_port=0, http_port=0, release=release_config(relay)) as server:
        send(server, make_message("Half"), to_addrs=["qa@example.org"])
        [stored] = server.wait_for(1)
        result = server.release(stored, ["qa@example.org", "dev@team.example"])
        assert result.recipients == ("dev@team.example",)
        assert list(result.refused) == ["qa@example.org"]
        assert "5.1.1 Unknown" in result.refused["qa@example.org"]
        with pytest.raises(ReleaseFailed, match=r"the relay 127\.0\.0\.1:[0-9]+ said: "):
            server.release(stored)
        status, _, body = fetch(
            server, "/messages/1/release", "POST", b"to=qa@example.org,dev@team.example"
        )
        assert status == 200
        assert b"(refused by the relay: qa@example.org)" in body


def test_release_config_is_checked() -> None:
    for options, message in (
        ({"allowed": ()}, "allow-list"),
        ({"allowed": ("a@b.c",), "tls": "ssl"}, "tls must be"),
        ({"allowed": ("a@b.c",), "port": 0}, "between 1 and 65535"),
        ({"allowed": ("a@b.c",), "username": "u"}, "needs a password"),
    ):
        with pytest.raises(ValueError, match=message):
            ReleaseConfig(host="127.0.0.1", **options)


def test_release_options_on_the_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTP_BACKENDS_RELEASE_PASSWORD", raising=False)
    for argv, message in (
        (["--release-allow", "a@b.c"], "--release-allow needs --release-host"),
        (["--release-host", "relay.test"], "allow-list"),
        (
            ["--release-host", "relay.test", "--release-allow", "a@b.c", "--release-username", "u"],
            "SMTP_BACKENDS_RELEASE_PASSWORD",
        ),
        (["--allowed-host", "a/b"], "not a host name"),
    ):
        assert main(["devserver", "--smtp-port", "0", "--http-port", "0", *argv]) == 2
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- link check


class _Site(BaseHTTPRequestHandler):
    """/ok: 200; /missing: 404; /no-head: 405 to HEAD, 200 to GET; /moved: 302."""

    seen: list[tuple[str, str]] = []

    def _answer(self, body: bool) -> None:
        _Site.seen.append((self.command, self.path))
        path = self.path.split("?")[0]
        if path == "/no-head" and self.command == "HEAD":
            status = 405
        else:
            status = {"/ok": 200, "/no-head": 200, "/moved": 302}.get(path, 404)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "https://elsewhere.example/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        if body:
            self.wfile.write(b"ok")

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    """A small website on 127.0.0.1; yields its base URL."""
    _Site.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def linked_message(site: str) -> Any:
    message = make_message("Links", f"Text links: {site}/ok and {site}/missing.\n")
    message.add_alternative(
        f'<a href="{site}/ok">ok</a> <a href="{site}/no-head?x=1">head</a> '
        f'<img src="{site}/moved"> <a href="https://example.org/never">remote</a> '
        '<a href="mailto:a@example.org">mail</a> <a href="/relative">rel</a>',
        subtype="html",
    )
    return message


def test_link_check_fetches_loopback_only_head_then_get(
    server_with_mail: DevServer, site: str
) -> None:
    server = server_with_mail
    [stored] = server.messages
    assert extract_links(stored) == [
        f"{site}/ok",
        f"{site}/no-head?x=1",
        f"{site}/moved",
        "https://example.org/never",
        f"{site}/missing",
    ]
    results = {result.url: result for result in server.check_links(stored)}
    assert (results[f"{site}/ok"].status, results[f"{site}/ok"].ok) == (200, True)
    assert results[f"{site}/ok"].method == "HEAD"
    no_head = results[f"{site}/no-head?x=1"]
    assert (no_head.status, no_head.method, no_head.ok) == (200, "GET", True)
    assert (results[f"{site}/moved"].status, results[f"{site}/moved"].ok) == (302, True)
    missing = results[f"{site}/missing"]
    assert (missing.ok, missing.status, missing.error) == (False, 404, "HTTP 404")
    remote = results["https://example.org/never"]
    assert not remote.checked
    assert "not an allowed host" in (remote.error or "")
    # Nothing but our site was asked, redirects were not followed, every path as given.
    assert sorted(_Site.seen) == sorted(
        [
            ("HEAD", "/ok"),
            ("HEAD", "/no-head?x=1"),
            ("GET", "/no-head?x=1"),
            ("HEAD", "/moved"),
            ("HEAD", "/missing"),
            ("GET", "/missing"),
        ]
    )


@pytest.fixture
def server_with_mail(site: str) -> Iterator[DevServer]:
    with DevServer(smtp_port=0, http_port=0) as running:
        send(running, linked_message(site))
        running.wait_for(1)
        yield running


def test_link_check_over_http(server_with_mail: DevServer, site: str) -> None:
    status, _, body = fetch(server_with_mail, "/api/messages/1/link-check", "POST")
    assert status == 200
    report = json.loads(body)
    assert (report["checked"], report["broken"]) == (4, 1)
    assert report["links"][0] == {
        "url": f"{site}/ok",
        "checked": True,
        "status": 200,
        "ok": True,
        "method": "HEAD",
        "error": None,
    }
    status, _, body = fetch(server_with_mail, "/messages/1/link-check", "POST")
    assert status == 200
    html = body.decode()
    assert '<p id="link-summary">5 link(s), 1 broken</p>' in html
    assert '<span class="broken">HTTP 404</span>' in html
    assert html.count('<tr class="link">') == 5
    assert 'id="link-check"' in page(server_with_mail, "/messages/1")
    assert fetch(server_with_mail, "/api/messages/7/link-check", "POST")[0] == 404


def test_link_check_is_bounded(site: str) -> None:
    checker = LinkChecker(LinkCheckConfig(max_links=2))
    urls = [f"{site}/ok", f"{site}/ok?2", f"{site}/ok?3"]
    results = checker.check(urls)
    assert [result.checked for result in results] == [True, True, False]
    assert results[2].error == "not checked: over the cap of 2"
    # A server that accepts and never answers costs one timeout per request.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        checker = LinkChecker(LinkCheckConfig(timeout=0.3))
        started = time.monotonic()
        [result] = checker.check([f"http://localhost:{port}/slow"])
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.checked and not result.ok
    assert "timed out" in (result.error or "")
    assert elapsed < 3
    # Other hosts only when named (or "*"); malformed URLs are reported, not fetched.
    config = LinkCheckConfig(hosts=("Docs.Example",))
    assert config.allows("docs.example") and config.allows("app.localhost")
    assert config.allows("::1") and not config.allows("example.org")
    assert LinkCheckConfig(hosts=("*",)).allows("example.org")
    [bad] = checker.check(["http://[::1/x"])
    assert (bad.checked, bad.error) == (False, "not checked: malformed URL")
    # A loopback *name* is fetched only if it resolves to loopback here.
    # (Resolvers differ on *.localhost: unresolved here, or loopback where nobody listens.)
    [unresolved] = checker.check(["http://no-such-name.invalid.localhost:9/"])
    if unresolved.checked:
        assert "Connection refused" in (unresolved.error or "")
    else:
        assert unresolved.error == (
            "not checked: no-such-name.invalid.localhost is not on loopback here"
        )
    for options in ({"timeout": 0}, {"max_links": 0}, {"workers": 0}):
        with pytest.raises(ValueError):
            LinkCheckConfig(**options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- command line


def test_parse_size() -> None:
    assert [parse_size(text) for text in ("1", "512K", "256M", "1G", "2MiB", " 3 kb ")] == [
        1,
        512 * 1024,
        256 * 1024**2,
        1024**3,
        2 * 1024**2,
        3 * 1024,
    ]
    for bad in ("", "0", "1T", "-1", "M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_every_new_option_reaches_the_running_server() -> None:
    env = {**os.environ, "SMTP_BACKENDS_RELEASE_PASSWORD": "hunter2"}
    command = [sys.executable, "-W", "error", "-m", "smtp_backends", "devserver"]
    command += ["--smtp-port", "0", "--http-port", "0", "--max-bytes", "64K"]
    command += ["--allowed-host", "inbox.test", "--chaos", "rcpt:reply=451,rate=50%"]
    command += ["--chaos", "dot:drop", "--chaos-seed", "5", "--release-host", "relay.test"]
    command += ["--release-allow", "qa@example.org", "--release-username", "me"]
    command += ["--link-check-host", "docs.test", "--link-check-timeout", "2"]
    command += ["--link-check-max-links", "7"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        watchdog = threading.Timer(20, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(4)]
            http_port = int(lines[1].rsplit(":", 1)[1].strip("/\n"))
            assert lines[2] == "Chaos: 2 rule(s), seed 5\n"
            assert lines[3] == "Release to relay.test:587 (starttls) for qa@example.org\n"
            request = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/api/info", headers={"Host": "inbox.test"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                info = json.load(response)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=10)
        finally:
            watchdog.cancel()
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert info["max_bytes"] == 64 * 1024
    assert [rule["stage"] for rule in info["chaos"]["rules"]] == ["rcpt", "dot"]
    assert info["chaos"]["seed"] == 5
    assert info["release"] == {
        "host": "relay.test",
        "port": 587,
        "tls": "starttls",
        "allowed": ["qa@example.org"],
        "username": "me",
        "sender": None,
    }
    assert info["link_check"] == {"hosts": ["docs.test"], "timeout": 2.0, "max_links": 7}
    assert "hunter2" not in json.dumps(info)


def test_bad_option_values_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--max-bytes", "lots"], "not a size"),
        (["--link-check-timeout", "0"], "not a positive number"),
        (["--link-check-max-links", "0"], "--link-check-max-links must be at least 1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["devserver", *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
