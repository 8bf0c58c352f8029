"""The test kit's Outbox and ReceivedMail (smtp_backends.testkit), with real servers."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
from email.message import EmailMessage

import pytest

from smtp_backends import SMTP
from smtp_backends.asgi import Mail
from smtp_backends.devserver import DevServer
from smtp_backends.testkit import CaptureServer, Outbox, ReceivedMail, use_asgi


def welcome(to: str = "Ada <ada+signup@example.com>", subject: str = "Welcome") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "App <app@example.com>"
    message["To"] = to
    message["Cc"] = "boss@example.com"
    message["Subject"] = subject
    message["X-Campaign"] = "spring"
    message.set_content("Hello, confirm at https://example.com/confirm/1 please")
    message.add_alternative(
        '<p><a href="https://example.com/confirm/1">Confirm</a>'
        '<img src="http://localhost/logo.png"></p>',
        subtype="html",
    )
    message.add_attachment("a,b\n", subtype="csv", filename="report.csv")
    return message


def deliver(outbox: Outbox, *messages: EmailMessage, sender: str = "bounce@example.com") -> None:
    with smtplib.SMTP(outbox.host, outbox.port) as client:
        for message in messages:
            client.send_message(message, from_addr=sender)


@pytest.fixture
def outbox() -> Outbox:
    with CaptureServer().running() as server, Outbox(server) as box:
        yield box  # type: ignore[misc]


def test_parts_and_assertions(outbox: Outbox) -> None:
    deliver(outbox, welcome())
    mail = outbox.wait_for(to="ADA+signup@example.com")
    assert isinstance(mail, ReceivedMail) and mail.id == 1
    assert mail.envelope_from == "bounce@example.com"
    assert mail.recipients == ["ada+signup@example.com", "boss@example.com"]
    assert mail.links == ["https://example.com/confirm/1", "http://localhost/logo.png"]
    assert mail.header("x-campaign") == "spring" and mail.header("X-Missing") is None
    assert mail.header_values("To") == ["Ada <ada+signup@example.com>"]
    assert mail.assert_header("Subject") == "Welcome"
    mail.assert_header("Subject", re.compile("^Wel"))
    mail.assert_no_header("Bcc")
    assert "confirm at" in mail.assert_text("confirm at")
    mail.assert_text(re.compile(r"confirm/\d+"))
    mail.assert_html("<a href=")
    assert mail.assert_link(re.compile(r"logo\.png$")) == "http://localhost/logo.png"
    attachment = mail.assert_attachment("report.csv", content_type="TEXT/CSV", content="a,b\n")
    assert attachment.payload == b"a,b\r\n"  # a text part travels with CRLF
    mail.assert_attachment(re.compile(r"\.csv$"), content=b"a,b\r\n")
    mail.assert_to("boss@example.com", "ada+signup@example.com")
    assert ReceivedMail.of(mail) is mail


def test_failed_assertions_say_what_is_there(outbox: Outbox) -> None:
    deliver(outbox, welcome())
    mail = outbox[0]
    with pytest.raises(AssertionError, match=r"no Reply-To header; the headers are: .*'Subject'"):
        mail.assert_header("Reply-To")
    with pytest.raises(AssertionError, match=r"Subject is 'Welcome', expected 'Bye'"):
        mail.assert_header("Subject", "Bye")
    with pytest.raises(AssertionError, match=r"unexpected X-Campaign header: 'spring'"):
        mail.assert_no_header("X-Campaign")
    with pytest.raises(AssertionError, match=r"the text part does not contain 'farewell'"):
        mail.assert_text("farewell")
    with pytest.raises(AssertionError, match=r"no link with 'logout'; the links are: 'https"):
        mail.assert_link("logout")
    with pytest.raises(AssertionError, match=r"no attachment 'x.pdf'; attachments: 'report.csv"):
        mail.assert_attachment("x.pdf")
    with pytest.raises(AssertionError, match=r"report.csv is text/csv, expected application/pdf"):
        mail.assert_attachment("report.csv", content_type="application/pdf")
    with pytest.raises(AssertionError, match=r"report.csv holds b'a,b"):
        mail.assert_attachment("report.csv", content=b"other")
    with pytest.raises(AssertionError, match=r"not sent to 'eve@example.com'; the recipients"):
        mail.assert_to("eve@example.com")
    plain = EmailMessage()
    plain["Subject"] = "plain"
    plain["To"] = "eve@example.com"
    plain.set_content("just text")
    deliver(outbox, plain)
    with pytest.raises(AssertionError, match=r"the message has no HTML part"):
        outbox.wait_for(subject="plain").assert_html("x")
    with pytest.raises(AssertionError, match=r"no attachment 'x'; attachments: none"):
        outbox[1].assert_attachment("x")


def test_criteria_filter_count_and_clear(outbox: Outbox) -> None:
    deliver(outbox, welcome(subject="Welcome"), welcome(to="bob@example.com", subject="Invoice 7"))
    assert len(outbox) == 2 and [m.subject for m in outbox] == ["Welcome", "Invoice 7"]
    assert outbox.filter(subject=re.compile(r"Invoice \d")) == [outbox[1]]
    assert outbox.filter(from_="APP@example.com") == outbox.messages
    assert outbox.filter(from_="bounce@example.com") == outbox.messages
    assert outbox.filter(from_="eve@example.com") == []
    assert outbox.filter(tag="signup") == [outbox[0]]
    assert outbox.filter(text="confirm at") == outbox.messages
    assert outbox.filter(text="nowhere") == []
    assert outbox.filter(where=lambda m: m.to == "bob@example.com") == [outbox[1]]
    assert outbox.filter(subject="Welcome", to="bob@example.com") == []
    assert outbox.assert_count(1, to="bob@example.com") == [outbox[1]]
    with pytest.raises(AssertionError, match=r"expected 3 message\(s\), got 2; what arrived"):
        outbox.assert_count(3)
    assert len(outbox.wait_for_count(2, timeout=1)) == 2
    outbox.clear()
    assert len(outbox) == 0 and len(outbox.server.messages) == 2  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match=r"within 0\.05 s, got 0; nothing arrived"):
        outbox.wait_for(timeout=0.05)
    deliver(outbox, welcome(subject="Third"))
    assert outbox.wait_for().subject == "Third" and outbox[0].id == 3
    assert repr(outbox).endswith("1 messages>")


async def test_on_the_servers_own_loop() -> None:
    async with CaptureServer() as server:
        assert server.loop is asyncio.get_running_loop()
        async with Outbox(server) as outbox:
            async with SMTP(hostname=outbox.host, port=outbox.port) as client:
                await client.sendmail("a@example.com", ["b@example.com"], "Subject: one\r\n\r\n")
                await client.sendmail("a@example.com", ["c@example.com"], "Subject: two\r\n\r\n")
            assert (await outbox.await_for(to="c@example.com")).subject == "two"
            assert len(await outbox.await_count(2)) == 2
            with pytest.raises(RuntimeError, match=r"await outbox.await_for"):
                outbox.wait_for(timeout=0.01)
            with pytest.raises(RuntimeError, match=r"await outbox.await_for"):
                outbox.close()
            with pytest.raises(AssertionError, match=r"with subject='three' within"):
                await outbox.await_for(subject="three", timeout=0.05)


def test_over_the_development_server() -> None:
    with DevServer(smtp_port=0, http_port=0) as dev, Outbox(dev) as outbox:
        assert (outbox.host, outbox.port) == ("127.0.0.1", dev.smtp_port)
        deliver(outbox, welcome())
        mail = outbox.wait_for(tag="signup")
        assert isinstance(mail, ReceivedMail) and mail.links[0] == "https://example.com/confirm/1"
        outbox.clear()
        assert len(outbox) == 0 and dev.messages == []


async def test_use_asgi_points_a_mail_and_restores_it(outbox: Outbox) -> None:
    mail = Mail(host="smtp.example.com", port=587, use_tls=True, username="u", password="p")
    original = mail.settings
    with use_asgi(mail, outbox.host, outbox.port):
        assert (mail.settings.host, mail.settings.port) == (outbox.host, outbox.port)
        assert not mail.settings.use_tls and mail.settings.username is None
        message = welcome()
        await mail.send_message(message)
        await mail.aclose()
    assert mail.settings is original
    assert (await outbox.await_for()).subject == "Welcome"


def test_capture_server_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = CaptureServer(port=taken.getsockname()[1])
        with pytest.raises(OSError), server.running():
            pass
    assert server.loop is None or server.loop.is_closed()
