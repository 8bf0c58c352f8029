"""The development mail server (smtp_backends.devserver) and ``python -m smtp_backends devserver``.

Everything here is real: mail goes over SMTP on 127.0.0.1 (smtplib and our own client)
to the server, and the web inbox is fetched over HTTP with urllib.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from smtp_backends import SMTP
from smtp_backends.cli import main
from smtp_backends.devserver import INSTALL_HINT, DevServer, Mailbox, StoredMessage
from smtp_backends.devserver.smtp import SMTPThread
from smtp_backends.devserver.templates import human_size, linkify
from smtp_backends.devserver.web import HTML_BODY_CSP
from tests.servers import free_port

SENDER = "sender@example.org"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer(smtp_port=0, http_port=0) as running:
        yield running


def make_message(
    subject: str = "Hello",
    text: str | None = "Hello there.\n",
    *,
    to: str = "rcpt@example.org",
    sender: str = SENDER,
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    if text is not None:
        message.set_content(text)
    return message


def send(
    server: DevServer,
    *messages: EmailMessage,
    to_addrs: list[str] | None = None,
    from_addr: str | None = None,
) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        for message in messages:
            client.send_message(message, from_addr=from_addr, to_addrs=to_addrs)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def fetch(
    server: DevServer, path: str, method: str = "GET", data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; no redirects followed, errors returned."""
    request = urllib.request.Request(server.inbox_url + path.lstrip("/"), data, method=method)
    try:
        with _opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), error.read()


def page(server: DevServer, path: str) -> str:
    status, headers, body = fetch(server, path)
    assert status == 200, (path, status, body)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    return body.decode("utf-8")


def api(server: DevServer, path: str = "/api/messages") -> object:
    status, headers, body = fetch(server, path)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def rows(inbox: str) -> list[str]:
    return re.findall(r'<tr class="message" data-id="(\d+)">', inbox)


# --------------------------------------------------------------------------- receiving


def test_a_text_message_is_stored_and_parsed(server: DevServer) -> None:
    message_id = make_msgid(domain="example.org")
    send(server, make_message(Cc="Carol <carol@example.org>", Message_ID=message_id))
    [stored] = server.wait_for(1)
    assert stored.id == 1
    assert stored.envelope_from == SENDER
    assert stored.envelope_to == ("rcpt@example.org", "carol@example.org")
    assert stored.received_at.tzinfo == timezone.utc
    assert (datetime.now(timezone.utc) - stored.received_at).total_seconds() < 10
    assert stored.subject == "Hello"
    assert stored.from_ == SENDER
    assert stored.to == "rcpt@example.org"
    assert stored.cc == "Carol <carol@example.org>"
    assert stored.message_id == message_id
    assert stored.text == "Hello there.\n"
    assert stored.html is None
    assert stored.attachments == ()
    assert b"Subject: Hello\r\n" in stored.raw
    assert stored.parsed()["Subject"] == "Hello"
    assert ("Subject", "Hello") in stored.headers
    assert server.messages == [stored]


def test_html_alternative_is_served_sandboxed_under_a_strict_csp(server: DevServer) -> None:
    message = make_message("Both parts", "Plain version\n")
    html = '<p style="color:red">Rich <b>version</b></p><script>alert("x")</script>'
    message.add_alternative(html, subtype="html")
    send(server, message)
    [stored] = server.wait_for(1)
    assert stored.text == "Plain version\n"
    assert stored.html == html + "\n"
    assert stored.attachments == ()

    status, headers, body = fetch(server, "/messages/1/html")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == HTML_BODY_CSP
    assert HTML_BODY_CSP == "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert body.decode() == html + "\n"

    detail = page(server, "/messages/1")
    assert '<iframe id="html-body" sandbox src="/messages/1/html"' in detail
    assert "allow-scripts" not in detail
    assert '<pre id="text-body">Plain version\n</pre>' in detail
    # The HTML part is never inlined in the inbox's own page.
    assert "<script>" not in detail


def test_attachments_binary_and_non_ascii_names(server: DevServer) -> None:
    binary = bytes(range(256)) * 4
    message = make_message("Files", "See attached.\n")
    message.add_attachment(binary, maintype="application", subtype="octet-stream", filename="d.bin")
    message.add_attachment("a,b\n1,2\n", subtype="csv", filename="Résumé €.csv")
    message.add_attachment(b"GIF89a", maintype="image", subtype="gif", filename='we"ird/..\\n.gif')
    send(server, message)
    [stored] = server.wait_for(1)
    assert stored.text == "See attached.\n"
    names = [attachment.filename for attachment in stored.attachments]
    assert names == ["d.bin", "Résumé €.csv", 'we"ird/..\\n.gif']
    first, second, _ = stored.attachments
    assert (first.content_type, first.payload, first.size) == (
        "application/octet-stream",
        binary,
        1024,
    )
    assert second.content_type == "text/csv"
    assert second.payload.replace(b"\r\n", b"\n") == b"a,b\n1,2\n"

    detail = page(server, "/messages/1")
    assert '<ul id="attachments">' in detail
    assert (
        '<li><a class="attachment" href="/messages/1/attachments/0" download="d.bin">d.bin</a>'
        " (application/octet-stream, 1.0 KiB)</li>"
    ) in detail
    assert 'download="Résumé €.csv">Résumé €.csv</a> (text/csv, ' in detail
    assert 'download="we&quot;ird/..\\n.gif"' in detail

    status, headers, body = fetch(server, "/messages/1/attachments/0")
    assert (status, body) == (200, binary)
    assert headers["Content-Type"] == "application/octet-stream"
    assert (
        headers["Content-Disposition"] == "attachment; filename=\"d.bin\"; filename*=UTF-8''d.bin"
    )
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"

    status, headers, _ = fetch(server, "/messages/1/attachments/1")
    assert headers["Content-Type"] == "text/csv"
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"R_sum_ _.csv\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%82%AC.csv"
    )
    _, headers, _ = fetch(server, "/messages/1/attachments/2")
    # No quote, slash or backslash survives into the header.
    assert headers["Content-Disposition"].startswith('attachment; filename="we_ird_.._n.gif";')

    [as_json] = api(server)  # type: ignore[misc]
    assert as_json["attachments"] == [
        {
            "filename": "d.bin",
            "content_type": "application/octet-stream",
            "size": 1024,
            "url": "/messages/1/attachments/0",
        },
        {
            "filename": "Résumé €.csv",
            "content_type": "text/csv",
            "size": second.size,
            "url": "/messages/1/attachments/1",
        },
        {
            "filename": 'we"ird/..\\n.gif',
            "content_type": "image/gif",
            "size": 6,
            "url": "/messages/1/attachments/2",
        },
    ]
    assert fetch(server, "/messages/1/attachments/3")[0] == 404


def test_non_ascii_subject_addresses_and_body(server: DevServer) -> None:
    message = make_message(
        "Grüße aus Köln ✓",
        "Schöne Grüße, ☃\n",
        to="Jörg <jörg@exämple.org>",
        sender="zoë@example.org",
    )
    send(server, message)
    [stored] = server.wait_for(1)
    # smtplib used SMTPUTF8 (RFC 6531), which the server advertises.
    assert stored.envelope_from == "zoë@example.org"
    assert stored.envelope_to == ("jörg@exämple.org",)
    assert stored.subject == "Grüße aus Köln ✓"
    assert stored.to == "Jörg <jörg@exämple.org>"
    assert stored.text == "Schöne Grüße, ☃\n"
    assert "Grüße aus Köln ✓</a>" in page(server, "/")
    detail = page(server, "/messages/1")
    assert '<h1 id="subject">Grüße aus Köln ✓</h1>' in detail
    assert '<dd id="to">Jörg &lt;jörg@exämple.org&gt;</dd>' in detail
    assert "Schöne Grüße, ☃" in detail


def test_bcc_and_several_recipients_come_from_the_envelope(server: DevServer) -> None:
    message = make_message("Team", to="a@example.org, B <b@example.org>", Cc="c@example.org")
    recipients = ["a@example.org", "b@example.org", "c@example.org", "hidden@example.org"]
    send(server, message, to_addrs=recipients)
    [stored] = server.wait_for(1)
    assert stored.envelope_to == tuple(recipients)
    assert stored.to == "a@example.org, B <b@example.org>"
    assert "hidden" not in stored.raw.decode()
    inbox = page(server, "/")
    assert '<td class="to">' + ", ".join(recipients) + "</td>" in inbox
    detail = page(server, "/messages/1")
    assert '<dd id="envelope-to">' + ", ".join(recipients) + "</dd>" in detail
    assert '<dd id="to">a@example.org, B &lt;b@example.org&gt;</dd>' in detail
    assert '<dd id="cc">c@example.org</dd>' in detail
    assert f'<dd id="envelope-from">{SENDER}</dd>' in detail


async def test_our_client_pipelines_and_logs_in(server: DevServer) -> None:
    batch = [make_message(f"Batch {number}") for number in range(3)]
    async with SMTP(
        hostname="127.0.0.1", port=server.smtp_port, username="dev", password="anything"
    ) as client:
        assert client.supports_extension("pipelining")
        assert client.supports_extension("smtputf8")
        assert client.supports_extension("8bitmime")
        outcomes = await client.send_messages(batch)
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    stored = server.wait_for(3)
    assert [message.subject for message in stored] == ["Batch 0", "Batch 1", "Batch 2"]
    assert [message.id for message in stored] == [1, 2, 3]


def test_auth_can_be_turned_off() -> None:
    with (
        DevServer(smtp_port=0, http_port=0, accept_any_auth=False) as server,
        smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client,
    ):
        client.ehlo()
        assert not client.has_extn("auth")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login("dev", "secret")


def test_concurrent_connections_store_every_message_once(server: DevServer) -> None:
    def sender(worker: int) -> None:
        send(server, *(make_message(f"w{worker} m{number}") for number in range(10)))

    threads = [threading.Thread(target=sender, args=(worker,)) for worker in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    stored = server.wait_for(50, timeout=5)
    assert len(stored) == 50
    assert [message.id for message in stored] == list(range(1, 51))
    assert {message.subject for message in stored} == {
        f"w{worker} m{number}" for worker in range(5) for number in range(10)
    }
    assert len(api(server)) == 50  # type: ignore[arg-type]


def test_on_message_is_called_and_a_failing_callback_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[StoredMessage] = []

    def callback(message: StoredMessage) -> None:
        seen.append(message)
        raise RuntimeError("observer bug")

    with (
        caplog.at_level(logging.ERROR, logger="smtp_backends.devserver"),
        DevServer(smtp_port=0, http_port=0, on_message=callback) as server,
    ):
        send(server, make_message("Watched"))
        assert [message.subject for message in server.wait_for(1)] == ["Watched"]
    assert [message.subject for message in seen] == ["Watched"]
    assert "on_message callback failed for message #1" in caplog.text


# --------------------------------------------------------------------------- the web inbox


def test_inbox_empty_then_newest_first(server: DevServer) -> None:
    inbox = page(server, "/")
    assert "<title>smtp_backends inbox</title>" in inbox
    assert "<h1>Inbox</h1>" in inbox
    assert '<span id="message-count">0</span>' in inbox
    assert '<p id="empty">No messages yet.</p>' in inbox
    assert '<table id="messages">' not in inbox
    assert '<form method="post" action="/clear"><button id="clear">Clear</button></form>' in inbox
    assert 'http-equiv="refresh"' not in inbox

    send(server, make_message("First"), make_message("Second", sender="Bob <bob@example.org>"))
    server.wait_for(2)
    inbox = page(server, "/")
    assert '<span id="message-count">2</span>' in inbox
    assert 'id="empty"' not in inbox
    assert '<table id="messages">' in inbox
    assert rows(inbox) == ["2", "1"]
    assert '<td class="subject"><a href="/messages/2">Second</a></td>' in inbox
    assert '<td class="from">Bob &lt;bob@example.org&gt;</td>' in inbox
    assert '<td class="to">rcpt@example.org</td>' in inbox
    assert re.search(r'<td class="date"><time datetime="[^"]+">\d{4}-\d\d-\d\d ', inbox)
    # No external resources: every style is inline and nothing is fetched from elsewhere.
    assert "<link" not in inbox
    assert "<script" not in inbox


def test_message_page_shows_every_field(server: DevServer) -> None:
    message = make_message(
        "Details",
        "Body\n",
        Cc="cc@example.org",
        Message_ID="<abc@example.org>",
        Date="Tue, 01 Oct 2024 10:00:00 +0000",
        X_Custom="custom value",
    )
    send(server, message)
    server.wait_for(1)
    detail = page(server, "/messages/1")
    assert "<title>Details - smtp_backends inbox</title>" in detail
    assert '<h1 id="subject">Details</h1>' in detail
    assert f'<dd id="from">{SENDER}</dd>' in detail
    assert '<dd id="to">rcpt@example.org</dd>' in detail
    assert '<dd id="envelope-to">rcpt@example.org, cc@example.org</dd>' in detail
    assert '<dd id="cc">cc@example.org</dd>' in detail
    assert '<dd id="date">Tue, 01 Oct 2024 10:00:00 +0000</dd>' in detail
    assert '<dd id="message-id">&lt;abc@example.org&gt;</dd>' in detail
    assert '<table id="headers">' in detail
    assert "<tr><th>X-Custom</th><td>custom value</td></tr>" in detail
    assert '<a id="raw" href="/messages/1/raw">raw</a>' in detail
    assert '<a id="back" href="/">' in detail
    assert '<pre id="text-body">Body\n</pre>' in detail
    assert 'id="html-body"' not in detail
    assert 'id="attachments"' not in detail


def test_message_without_subject_date_or_text() -> None:
    mailbox = Mailbox()
    stored = mailbox.add("", ["x@example.org"], b"From: a@example.org\r\n\r\n")
    assert (stored.subject, stored.date, stored.envelope_from) == ("", "", "")
    with DevServer(smtp_port=0, http_port=0) as server:
        server.mailbox.add("", ["x@example.org"], b"From: a@example.org\r\n\r\n")
        assert '<span class="muted">(no subject)</span></a>' in page(server, "/")
        detail = page(server, "/messages/1")
        assert "<title>(no subject) - smtp_backends inbox</title>" in detail
        # Without a Date header the arrival time stands in.
        assert re.search(r'<dd id="date"><time datetime="', detail)


def test_everything_from_a_message_is_escaped(server: DevServer) -> None:
    evil = "<script>alert(1)</script>"
    message = make_message(
        evil, f"Text {evil} & more\n", to='"<img src=x onerror=alert(2)>" <victim@example.org>'
    )
    message["X-Evil"] = '"><script>alert(3)</script>'
    message.add_attachment(b"x", maintype="text", subtype="plain", filename=f"{evil}.txt")
    send(server, message)
    server.wait_for(1)
    inbox = page(server, "/")
    detail = page(server, "/messages/1")
    for html in (inbox, detail):
        assert "<script" not in html
        assert "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<h1 id="subject">&lt;script&gt;alert(1)&lt;/script&gt;</h1>' in detail
    assert "Text &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in detail
    assert "&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in detail
    assert 'download="&lt;script&gt;alert(1)&lt;/script&gt;.txt"' in detail
    _, headers, _ = fetch(server, "/")
    assert "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_links_in_the_text_part_are_clickable(server: DevServer) -> None:
    text = (
        "Reset your password: http://127.0.0.1:8000/reset/MQ/abc-123/?next=/a&b=c.\n"
        "Also (https://example.org/path) and javascript:alert(1) and ftp://example.org.\n"
    )
    send(server, make_message("Password reset", text))
    server.wait_for(1)
    detail = page(server, "/messages/1")
    reset = "http://127.0.0.1:8000/reset/MQ/abc-123/?next=/a&amp;b=c"
    assert f'<a href="{reset}">{reset}</a>.' in detail
    assert '(<a href="https://example.org/path">https://example.org/path</a>)' in detail
    assert 'href="javascript' not in detail
    assert 'href="ftp' not in detail


def test_linkify_and_human_size() -> None:
    assert linkify("a <b> http://x.org/?a=1&b=\"2\" 'https://y.org'") == (
        "a &lt;b&gt; "
        '<a href="http://x.org/?a=1&amp;b=">http://x.org/?a=1&amp;b=</a>&quot;2&quot; '
        '&#x27;<a href="https://y.org">https://y.org</a>&#x27;'
    )
    assert linkify("no links: http:// here") == "no links: http:// here"
    assert [human_size(size) for size in (0, 1, 1023, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "0 bytes",
        "1 byte",
        "1023 bytes",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_raw_message_is_plain_text_with_bad_bytes_replaced(server: DevServer) -> None:
    raw = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: Raw\r\n\r\nLatin-1: caf\xe9\r\n"
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.org"], raw)
    [stored] = server.wait_for(1)
    assert stored.raw.endswith(b"caf\xe9\r\n")
    status, headers, body = fetch(server, "/messages/1/raw")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode("utf-8") == raw.decode("utf-8", errors="replace")
    assert "caf\ufffd" in body.decode("utf-8")


def test_json_api(server: DevServer) -> None:
    assert api(server) == []
    message = make_message("API", "text part\n", Cc="cc@example.org", Message_ID="<m@example.org>")
    message.add_alternative("<p>html part</p>", subtype="html")
    send(server, message, to_addrs=["rcpt@example.org", "bcc@example.org"])
    [stored] = server.wait_for(1)
    expected = {
        "id": 1,
        "envelope_from": SENDER,
        "envelope_to": ["rcpt@example.org", "bcc@example.org"],
        "subject": "API",
        "from": SENDER,
        "to": "rcpt@example.org",
        "cc": "cc@example.org",
        "message_id": "<m@example.org>",
        "received_at": stored.received_at.isoformat(),
        "text": "text part\n",
        "html": "<p>html part</p>\n",
        "attachments": [],
    }
    assert api(server) == [expected]
    assert api(server, "/api/messages/1") == expected
    assert datetime.fromisoformat(expected["received_at"]).tzinfo is not None  # type: ignore[arg-type]
    assert fetch(server, "/api/messages/2")[0] == 404

    status, _, body = fetch(server, "/api/messages", method="DELETE")
    assert (status, body) == (204, b"")
    assert server.messages == []
    assert api(server) == []


def test_clear_button_redirects_and_ids_keep_counting(server: DevServer) -> None:
    send(server, make_message("Before"))
    server.wait_for(1)
    status, headers, _ = fetch(server, "/clear", method="POST", data=b"")
    assert status == 303
    assert headers["Location"] == "/"
    assert server.messages == []
    assert '<p id="empty">No messages yet.</p>' in page(server, "/")
    send(server, make_message("After"))
    [after] = server.wait_for(1)
    assert after.id == 2
    assert fetch(server, "/messages/1")[0] == 404
    server.clear()
    assert server.messages == []


def test_unknown_paths_and_ids_are_404(server: DevServer) -> None:
    send(server, make_message("Text only"))
    server.wait_for(1)
    for path in (
        "/nope",
        "/messages",
        "/messages/",
        "/messages/2",
        "/messages/abc",
        "/messages/-1",
        "/messages/99999999999999999999999",
        "/messages/1/html",
        "/messages/1/attachments/0",
        "/messages/1/attachments/x",
        "/messages/2/raw",
        "/api/messages/abc",
        "/api/messages/9",
        "/static/style.css",
    ):
        status, headers, body = fetch(server, path)
        assert status == 404, path
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'<a id="back" href="/">' in body
    # A query string does not change the route.
    assert fetch(server, "/messages/1?x=1")[0] == 200


def test_other_methods_are_405(server: DevServer) -> None:
    for method, path, allowed in (
        ("POST", "/", "GET"),
        ("PUT", "/", "GET"),
        ("HEAD", "/", "GET"),
        ("DELETE", "/", "GET"),
        ("GET", "/clear", "POST"),
        ("POST", "/messages/1", "GET"),
        ("PATCH", "/api/messages", "GET, DELETE"),
        ("DELETE", "/api/messages/1", "GET"),
        ("OPTIONS", "/messages/1/raw", "GET"),
        ("BREW", "/", "GET"),
    ):
        status, headers, _ = fetch(server, path, method=method)
        assert (status, headers["Allow"]) == (405, allowed), (method, path)
    assert fetch(server, "/nope", method="PUT")[0] == 404


def test_request_bodies_are_read_and_ignored(server: DevServer) -> None:
    status, _, _ = fetch(server, "/clear", method="POST", data=b"x" * 100_000)
    assert status == 303
    request = urllib.request.Request(
        server.inbox_url + "clear", b"", method="POST", headers={"Content-Length": "nonsense"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        _opener.open(request, timeout=10)
    assert error.value.code == 303
    error.value.close()


def test_attachment_with_an_odd_media_type_is_served_as_octet_stream(server: DevServer) -> None:
    raw = (
        b"From: a@example.org\r\nSubject: Odd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b'--b\r\nContent-Type: text/<b>; name="odd.txt"\r\n'
        b"Content-Disposition: attachment\r\n\r\nodd\r\n--b--\r\n"
    )
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.org"], raw)
    [stored] = server.wait_for(1)
    assert stored.attachments[0].content_type == "text/<b>"
    _, headers, body = fetch(server, "/messages/1/attachments/0")
    assert headers["Content-Type"] == "application/octet-stream"
    assert body == b"odd"
    assert "(text/&lt;b&gt;, 3 bytes)" in page(server, "/messages/1")


def test_verbose_logs_requests_and_refresh_reloads_the_inbox(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with DevServer(smtp_port=0, http_port=0, verbose=True, refresh=5) as server:
        assert '<meta http-equiv="refresh" content="5">' in page(server, "/")
    assert '"GET / HTTP/1.1" 200' in capsys.readouterr().err
    with DevServer(smtp_port=0, http_port=0) as server:
        page(server, "/")
    assert capsys.readouterr().err == ""


def test_stop_closes_open_smtp_sessions(server: DevServer) -> None:
    client = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10)
    try:
        client.ehlo()
        client.mail(SENDER)
        server.stop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.rcpt("rcpt@example.org")
    finally:
        client.close()


def test_smtp_thread_guards_its_lifecycle() -> None:
    thread = SMTPThread(Mailbox(), "127.0.0.1", 0)
    thread.start()
    try:
        assert thread.port > 0
        with pytest.raises(RuntimeError, match="already running"):
            thread.start()
    finally:
        thread.stop()
    thread.stop()


def test_ipv6_loopback() -> None:
    try:
        server = DevServer("::1", smtp_port=0, http_port=0)
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert server.inbox_url == f"http://[::1]:{server.http_port}/"
        with smtplib.SMTP("::1", server.smtp_port, timeout=10) as client:
            client.send_message(make_message("Over IPv6"))
        server.wait_for(1)
        with urllib.request.urlopen(server.inbox_url, timeout=10) as response:
            assert b"Over IPv6" in response.read()
    finally:
        server.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2 is loopback on Linux")
def test_servers_bind_only_the_given_host(server: DevServer) -> None:
    for port in (server.smtp_port, server.http_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()


# --------------------------------------------------------------------------- parsing edge cases


def test_malformed_headers_and_parts_are_shown_not_fatal() -> None:
    raw = (
        b"From: a@example.org\r\nTo: a@[\r\nMessage-ID: <<<>>>\r\nSubject: Odd parts\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nunknown caf\xc3\xa9\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nsecond inline text\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nnamed?\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
        b"--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=x.html\r\n"
        b"\r\n<p>attached html</p>\r\n--b--\r\n"
    )
    stored = Mailbox().add("a@example.org", ["b@example.org"], raw)
    # Headers the parser chokes on are shown undecoded.
    assert stored.to == "a@["
    assert stored.message_id == "<<<>>>"
    assert ("Message-ID", "<<<>>>") in stored.headers
    assert stored.subject == "Odd parts"
    # An unknown charset falls back to lenient UTF-8.
    assert stored.text == "unknown café"
    assert stored.html is None
    assert [(a.filename, a.content_type) for a in stored.attachments] == [
        ("attachment-1.txt", "text/plain"),
        ("attachment-2.txt", "text/plain"),
        ("attachment-3.pdf", "application/pdf"),
        ("attachment-4.eml", "message/rfc822"),
        ("x.html", "text/html"),
    ]
    assert stored.attachments[0].payload == b"second inline text"
    assert stored.attachments[3].payload.startswith(b"Subject: inner")


def test_mime_parameters_the_default_parser_rejects_fall_back_to_compat32() -> None:
    raw = (
        b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.org>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
        b"To: =?x-unknown?q?abc?= <to@example.org>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9\r\n"
        b"--b\r\nContent-Type: text/html; charset=x-unknown\r\n\r\n<p>caf\xc3\xa9</p>\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: x;name*\r\n\r\n%PDF\r\n"
        b"--b--\r\n"
    )
    stored = Mailbox().add("a@example.org", ["b@example.org"], raw)
    assert stored.subject == "café"
    assert stored.from_ == "Zoë <zoe@example.org>"
    # An encoded word in an unknown charset stays as it was sent.
    assert stored.to == "=?x-unknown?q?abc?= <to@example.org>"
    assert (stored.text, stored.html) == ("café", "<p>café</p>")
    assert [(a.filename, a.payload) for a in stored.attachments] == [("attachment-1.pdf", b"%PDF")]
    # The default policy itself chokes on the last part's parameters.
    with pytest.raises(IndexError):
        for part in stored.parsed().walk():
            part.get_content_disposition()


def test_a_non_multipart_non_text_message_is_one_attachment() -> None:
    raw = (
        b"Subject: blob\r\nContent-Type: application/zip\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nUEsD\r\n"
    )
    stored = Mailbox().add("a@example.org", ["b@example.org"], raw)
    assert stored.text is None
    assert [(a.filename, a.payload) for a in stored.attachments] == [
        ("attachment-1.zip", b"PK\x03")
    ]


# --------------------------------------------------------------------------- mailbox, lifecycle


def test_max_messages_drops_the_oldest() -> None:
    with DevServer(smtp_port=0, http_port=0, max_messages=3) as server:
        send(server, *(make_message(f"M{number}") for number in range(1, 6)))
        deadline = time.monotonic() + 10
        while server.messages[-1:] == [] or server.messages[-1].subject != "M5":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [(m.id, m.subject) for m in server.messages] == [(3, "M3"), (4, "M4"), (5, "M5")]
        assert fetch(server, "/messages/1")[0] == 404
        assert fetch(server, "/messages/3")[0] == 200
        assert '<span id="message-count">3</span>' in page(server, "/")


def test_wait_for_times_out_and_wakes_up(server: DevServer) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="expected 1 message"):
        server.wait_for(1, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2

    timer = threading.Timer(0.1, send, args=(server, make_message("Late")))
    timer.start()
    try:
        [late] = server.wait_for(1, timeout=10)
    finally:
        timer.join()
    assert late.subject == "Late"
    assert server.wait_for(0, timeout=0) == [late]


def test_lifecycle_ports_and_validation() -> None:
    server = DevServer(smtp_port=0, http_port=0)
    assert not server.running
    assert (server.smtp_port, server.http_port) == (0, 0)
    assert "stopped" in repr(server)
    server.start()
    try:
        assert server.running
        assert server.smtp_port > 0 and server.http_port > 0
        assert server.inbox_url == f"http://127.0.0.1:{server.http_port}/"
        assert f"running smtp=127.0.0.1:{server.smtp_port}" in repr(server)
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        bound = (server.smtp_port, server.http_port)
    finally:
        server.stop()
    server.stop()
    assert not server.running
    assert (server.smtp_port, server.http_port) == bound
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", bound[0]), timeout=2).close()

    assert DevServer("::1", http_port=8025).inbox_url == "http://[::1]:8025/"
    assert DevServer().inbox_url == "http://127.0.0.1:8025/"
    for bad in ({"smtp_port": -1}, {"http_port": 65536}):
        with pytest.raises(ValueError, match="between 0 and 65535"):
            DevServer(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_messages"):
        DevServer(max_messages=0)


def test_busy_ports_fail_start_cleanly() -> None:
    with DevServer(smtp_port=0, http_port=0) as first:
        with pytest.raises(OSError):
            DevServer(smtp_port=first.smtp_port, http_port=0).start()
        smtp_port = free_port()
        second = DevServer(smtp_port=smtp_port, http_port=first.http_port)
        with pytest.raises(OSError):
            second.start()
        assert not second.running
        # The SMTP side of the failed start was stopped again: its port is free.
        with DevServer(smtp_port=smtp_port, http_port=0) as third:
            assert third.smtp_port == smtp_port


# --------------------------------------------------------------------------- the command line


def test_cli_subprocess_prints_ports_and_messages_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-W", "error", "-m", "smtp_backends", "devserver"]
    command += ["--smtp-port", "0", "--http-port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        _drive_the_cli(process)


def _drive_the_cli(process: subprocess.Popen[str]) -> None:
    watchdog = threading.Timer(20, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        smtp_line = process.stdout.readline()
        http_line = process.stdout.readline()
        smtp_match = re.fullmatch(r"SMTP server listening on 127\.0\.0\.1:(\d+)\n", smtp_line)
        http_match = re.fullmatch(r"Web inbox at http://127\.0\.0\.1:(\d+)/\n", http_line)
        assert smtp_match and http_match, (smtp_line, http_line)
        smtp_port, http_port = int(smtp_match[1]), int(http_match[1])
        assert smtp_port > 0 and http_port > 0

        # An encoded newline in the subject must not break the one-line report.
        raw = f"From: {SENDER}\r\nSubject: =?utf-8?q?Hi=0Athere?=\r\n\r\nbody\r\n"
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail(SENDER, ["a@example.org", "b@example.org"], raw)
        received = process.stdout.readline()
        assert received == f"received #1 from {SENDER} to a@example.org, b@example.org: Hi there\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/messages", timeout=10) as r:
            assert [m["subject"] for m in json.load(r)] == ["Hi\nthere"]

        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert err == ""


def test_cli_in_process_stops_on_sigint(capsys: pytest.CaptureFixture[str]) -> None:
    smtp_port, http_port = free_port(), free_port()
    failures: list[BaseException] = []

    def client() -> None:
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    connection = smtplib.SMTP("127.0.0.1", smtp_port, timeout=10)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            with connection:
                connection.send_message(make_message("In process"))
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=10) as page:
                assert b"In process" in page.read()
        except BaseException as error:
            failures.append(error)
            return
        finally:
            # The handler was installed before the server started, so SIGINT is safe now.
            if not failures:
                os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    helper = threading.Thread(target=client)
    helper.start()
    ports = ["--smtp-port", str(smtp_port), "--http-port", str(http_port)]
    status = main(["devserver", *ports, "--max-messages", "5"])
    helper.join(10)
    assert not failures, failures
    assert status == 0
    assert signal.getsignal(signal.SIGINT) is previous
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"SMTP server listening on 127.0.0.1:{smtp_port}",
        f"Web inbox at http://127.0.0.1:{http_port}/",
    ]
    assert out[2] == f"received #1 from {SENDER} to rcpt@example.org: In process"


def test_cli_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with DevServer(smtp_port=0, http_port=0) as busy:
        assert main(["devserver", "--smtp-port", str(busy.smtp_port), "--http-port", "0"]) == 1
    assert "error: cannot start the development server" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["devserver", "--max-messages", "0"], "--max-messages must be at least 1"),
        (["devserver", "--smtp-port", "70000"], "70000 is not a port"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_without_aiosmtpd_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes "import aiosmtpd" fail exactly as if it were absent.
    monkeypatch.setitem(sys.modules, "aiosmtpd", None)
    monkeypatch.setitem(sys.modules, "aiosmtpd.smtp", None)
    monkeypatch.delitem(sys.modules, "smtp_backends.devserver.smtp", raising=False)
    assert main(["devserver", "--smtp-port", "0", "--http-port", "0"]) == 1
    err = capsys.readouterr().err
    # Not on PyPI yet: the commands that work today (a clone, the README's git URL), then
    # the one for after the release.
    assert "pip install '.[devserver]' in a clone" in err
    assert INSTALL_HINT == (
        "pip install '.[devserver]' in a clone of smtp_backends, or pip install "
        "'smtp-backends[devserver] @ git+https://<host>/<owner>/smtp_backends.git' "
        "(once released on PyPI: pip install 'smtp-backends[devserver]')"
    )


def test_the_package_imports_without_aiosmtpd() -> None:
    code = (
        "import sys; sys.modules['aiosmtpd'] = None\n"
        "import smtp_backends, smtp_backends.cli, smtp_backends.devserver\n"
        "from smtp_backends.devserver import DevServer, StoredMessage\n"
        "assert 'smtp_backends.devserver.smtp' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
