"""The SMTP client against real aiosmtpd servers on loopback (plaintext).

TLS and AUTH are in test_client_tls.py, logging in test_client_logging.py. Every test asserts
what the server actually received (tests.servers.RecordingHandler records each message, each
command verb and each EHLO name).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import UnixSocketController

import smtp_backends
from smtp_backends import (
    SMTP,
    SMTPDataError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    send,
)
from tests.servers import (
    DATA_FAIL_MARKER,
    PASSWORD,
    USERNAME,
    RecordingHandler,
    RecordingSMTP,
    ScriptedServer,
    SMTPServer,
)

TIMEOUT = 5.0


def make_message(
    *,
    sender: str = "alice@example.com",
    to: str = "bob@example.com",
    subject: str = "hello",
    body: str = "Hi Bob.\n",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def client_for(server: SMTPServer, **options: Any) -> SMTP:
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("local_hostname", "client.test")
    return SMTP(hostname=server.host, port=server.port, **options)


def body_of(content: bytes) -> bytes:
    """What follows the header block of received message bytes."""
    return content.split(b"\r\n\r\n", 1)[1]


def header_block(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[0] + b"\r\n"


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll a condition set by a server thread (aiosmtpd records after replying)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@pytest.fixture(params=["pipelining", "lockstep"])
def server(request: pytest.FixtureRequest, make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """A recording server with and without PIPELINING (both client code paths)."""
    return make_smtpd(pipelining=request.param == "pipelining")


# --------------------------------------------------------------------------- connecting


async def test_connect_reads_greeting_and_sends_ehlo(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    assert client.is_connected is False
    greeting = await client.connect()
    try:
        assert isinstance(greeting, SMTPResponse)
        assert greeting.code == 220
        assert greeting.message.startswith("localhost ")
        assert client.is_connected is True
        assert smtpd.handler.connections == 1
        assert smtpd.handler.commands == ["EHLO"]
        assert smtpd.handler.ehlo_names == ["client.test"]
        assert client.last_ehlo_response is not None
        assert client.last_ehlo_response.code == 250
        assert client.last_ehlo_response.message.splitlines()[0] == "localhost"
        assert client.supports_esmtp is True
        assert client.is_ehlo_or_helo_needed is False
    finally:
        await client.quit()
    assert client.is_connected is False
    assert smtpd.handler.commands == ["EHLO", "QUIT"]


async def test_connect_keywords_override_constructor(smtpd: SMTPServer) -> None:
    client = SMTP(hostname="192.0.2.1", port=1, timeout=TIMEOUT)
    await client.connect(hostname=smtpd.host, port=smtpd.port, local_hostname="other.test")
    try:
        assert client.hostname == smtpd.host
        assert client.port == smtpd.port
        assert smtpd.handler.ehlo_names == ["other.test"]
    finally:
        await client.quit()


async def test_connect_twice_raises(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        with pytest.raises(smtp_backends.SMTPException, match="already connected"):
            await client.connect()
        assert client.is_connected
        assert smtpd.handler.connections == 1


async def test_context_manager_quits(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    async with client as entered:
        assert entered is client
        assert client.is_connected
        await client.noop()
    assert client.is_connected is False
    assert smtpd.handler.commands == ["EHLO", "NOOP", "QUIT"]
    assert await wait_until(lambda: smtpd.handler.open_connections == 0)


async def test_context_manager_quits_after_user_exception(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    with pytest.raises(KeyError):
        async with client:
            raise KeyError("boom")
    assert client.is_connected is False
    assert smtpd.handler.commands == ["EHLO", "QUIT"]


async def test_reconnect_after_quit(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    for _ in range(2):
        async with client:
            await client.sendmail("a@example.com", ["b@example.com"], "Subject: x\n\nx\n")
    assert smtpd.handler.connections == 2
    assert [m.connection_id for m in smtpd.messages] == [1, 2]


async def test_is_connected_lifecycle(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    assert client.is_connected is False
    await client.connect()
    assert client.is_connected is True
    client.close()
    assert client.is_connected is False
    client.close()  # idempotent
    with pytest.raises(SMTPServerDisconnected):
        await client.noop()
    assert await wait_until(lambda: smtpd.handler.open_connections == 0)
    assert smtpd.handler.commands == ["EHLO"]


async def test_commands_need_a_connection() -> None:
    client = SMTP(hostname="127.0.0.1", port=9, timeout=TIMEOUT)
    with pytest.raises(SMTPServerDisconnected):
        await client.noop()
    with pytest.raises(SMTPServerDisconnected):
        await client.sendmail("a@example.com", ["b@example.com"], "x")
    with pytest.raises(SMTPServerDisconnected):
        client.get_transport_info("peername")


# --------------------------------------------------------------------------- properties


async def test_extension_properties(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        assert client.esmtp_extensions == {
            "size": "33554432",
            "8bitmime": "",
            "smtputf8": "",
            "pipelining": "",
            "help": "",
        }
        assert client.supports_extension("PIPELINING") is True
        assert client.supports_extension("8bitmime") is True
        assert client.supports_extension("starttls") is False
        assert client.supports_extension("auth") is False
        assert client.server_auth_methods == []
        assert client.supported_auth_methods == []
        # A copy: changing it does not change what the client knows.
        client.esmtp_extensions["starttls"] = ""
        assert client.supports_extension("starttls") is False


async def test_auth_method_properties(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth) as client:
        assert sorted(client.server_auth_methods) == ["CRAM-MD5", "LOGIN", "PLAIN", "XOAUTH2"]
        # Those login() can use, in its order of preference.
        assert client.supported_auth_methods == ["cram-md5", "plain", "login"]
        assert client.supports_extension("AUTH") is True


async def test_get_transport_info(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        assert client.get_transport_info("peername") == (smtpd.host, smtpd.port)
        local = client.get_transport_info("sockname")
        assert local[0] == "127.0.0.1" and local[1] > 0
        assert client.get_transport_info("sslcontext") is None
        assert client.get_transport_info("ssl_object") is None
        assert client.get_transport_info("no-such-key") is None


async def test_properties_reset_after_close(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    await client.connect()
    client.close()
    assert client.esmtp_extensions == {}
    assert client.last_ehlo_response is None
    assert client.supports_esmtp is False
    assert client.is_ehlo_or_helo_needed is True


async def test_repr_never_shows_password(smtpd_auth: SMTPServer) -> None:
    client = client_for(smtpd_auth, username=USERNAME, password=PASSWORD)
    texts = [repr(client), str(client), repr(client.config)]
    async with client:
        assert smtpd_auth.handler.logins[-1].success is True
        texts += [repr(client), str(client), repr(client.config)]
        assert "plaintext" in repr(client)
    texts.append(repr(client))
    for text in texts:
        assert PASSWORD not in text
    assert f"{smtpd_auth.host}:{smtpd_auth.port}" in texts[0]
    assert "disconnected" in texts[0]


def test_settable_attributes_are_validated() -> None:
    client = SMTP()
    assert client.timeout == 60
    assert client.hostname is None
    client.timeout = 2.5
    client.hostname = "mail.example.com"
    client.port = 2525
    assert (client.timeout, client.hostname, client.port) == (2.5, "mail.example.com", 2525)
    assert client.config.timeout == 2.5
    assert "mail.example.com:2525" in repr(client)
    # 0 is a valid timeout (issue 17: as aiosmtplib); negatives and strings are not.
    for bad in (-0.5, -1, "5"):
        with pytest.raises(ValueError):
            client.timeout = bad
    with pytest.raises(ValueError):
        client.port = 70000
    assert client.timeout == 2.5


def test_attributes_can_be_set_to_none() -> None:
    """None is a meaningful value (no timeout, default host): setting it must not be ignored."""
    client = SMTP(hostname="mail.example.com", timeout=5)
    client.timeout = None
    assert client.timeout is None
    client.hostname = None
    assert client.hostname is None
    assert "localhost:25" in repr(client)


async def test_connect_timeout_applies_to_that_connect_only(smtpd: SMTPServer) -> None:
    """Issue 17: as aiosmtplib, connect(timeout=...) leaves the client's timeout alone."""
    client = client_for(smtpd, timeout=5)
    await client.connect(timeout=None)
    try:
        assert client.timeout == 5
        assert client.config.timeout == 5
    finally:
        await client.quit()


def test_timeout_keyword() -> None:
    assert SMTP().timeout == 60
    assert SMTP(timeout=1.5).timeout == 1.5
    assert SMTP(timeout=None).timeout is None
    assert SMTP(timeout=0).timeout == 0  # issue 17: accepted, as aiosmtplib
    with pytest.raises(ValueError):
        SMTP(timeout=-1)


def test_contradictory_options_rejected() -> None:
    with pytest.raises(ValueError):
        SMTP(use_tls=True, start_tls=True)
    with pytest.raises(ValueError):
        SMTP(password="x", oauth_token_generator=lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError):
        SMTP(socket_path="/tmp/x", hostname="a", port=25)


# --------------------------------------------------------------------------- send_message


async def test_send_email_message(server: SMTPServer) -> None:
    message = make_message(subject="Greetings", body="Hello there.\nSecond line.\n")
    async with client_for(server) as client:
        errors, text = await client.send_message(message)
    assert errors == {}
    assert text == "2.0.0 OK queued as 1"
    [received] = server.messages
    assert received.mail_from == "alice@example.com"
    assert received.rcpt_tos == ["bob@example.com"]
    assert received.message["Subject"] == "Greetings"
    assert received.message["From"] == "alice@example.com"
    assert body_of(received.original_content) == b"Hello there.\r\nSecond line.\r\n"
    assert received.helo_name == "client.test"
    # The caller's message object is not changed.
    assert message["To"] == "bob@example.com"


async def test_send_mimetext_with_cc(smtpd: SMTPServer) -> None:
    message = MIMEText("plain body", "plain", "utf-8")
    message["From"] = "Alice <alice@example.com>"
    message["To"] = "Bob <bob@example.com>, carol@example.com"
    message["Cc"] = "dave@example.com"
    message["Subject"] = "mime"
    async with client_for(smtpd) as client:
        assert await client.send_message(message) == ({}, "2.0.0 OK queued as 1")
    [received] = smtpd.messages
    assert received.mail_from == "alice@example.com"
    assert received.rcpt_tos == ["bob@example.com", "carol@example.com", "dave@example.com"]
    assert received.message["Cc"] == "dave@example.com"
    assert received.message.get_content() == "plain body"


async def test_send_multipart_alternative(smtpd: SMTPServer) -> None:
    message = MIMEMultipart("alternative")
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.com"
    message["Subject"] = "alt"
    message.attach(MIMEText("plain version", "plain", "utf-8"))
    message.attach(MIMEText("<p>html version</p>", "html", "utf-8"))
    async with client_for(smtpd) as client:
        await client.send_message(message)
    [received] = smtpd.messages
    parsed = received.message
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "plain version"
    assert parts[1].get_content() == "<p>html version</p>"


async def test_send_with_attachments(smtpd: SMTPServer) -> None:
    payload = bytes(range(256)) * 40
    message = make_message(body="see attached\n")
    message.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="a.bin"
    )
    message.add_attachment("col1,col2\n1,2\n", subtype="csv", filename="table.csv")
    async with client_for(smtpd) as client:
        await client.send_message(message)
    [received] = smtpd.messages
    parsed = received.message
    attachments = list(parsed.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["a.bin", "table.csv"]
    assert attachments[0].get_content() == payload
    assert attachments[1].get_content().replace("\r\n", "\n") == "col1,col2\n1,2\n"
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "see attached\n"


async def test_sender_header_preferred_over_from(smtpd: SMTPServer) -> None:
    message = make_message(sender="Author <author@example.com>")
    message["Sender"] = "Secretary <secretary@example.com>"
    async with client_for(smtpd) as client:
        await client.send_message(message)
    [received] = smtpd.messages
    assert received.mail_from == "secretary@example.com"
    assert received.message["From"] == "Author <author@example.com>"


async def test_bcc_in_envelope_not_in_data(server: SMTPServer) -> None:
    message = make_message(to="to@example.com")
    message["Cc"] = "cc@example.com"
    message["Bcc"] = "hidden1@example.com, Hidden Two <hidden2@example.com>"
    async with client_for(server) as client:
        await client.send_message(message)
    [received] = server.messages
    assert received.rcpt_tos == [
        "to@example.com",
        "cc@example.com",
        "hidden1@example.com",
        "hidden2@example.com",
    ]
    assert b"bcc" not in received.original_content.lower()
    assert b"hidden" not in received.original_content
    # The caller's object keeps its Bcc header.
    assert message["Bcc"] == "hidden1@example.com, Hidden Two <hidden2@example.com>"


async def test_resent_headers_used_when_resent_date_present(smtpd: SMTPServer) -> None:
    message = make_message(sender="original@example.com", to="first@example.com")
    message["Bcc"] = "original-bcc@example.com"
    message["Resent-Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    message["Resent-From"] = "resender@example.com"
    message["Resent-To"] = "second@example.com"
    message["Resent-Cc"] = "third@example.com"
    message["Resent-Bcc"] = "secret@example.com"
    async with client_for(smtpd) as client:
        await client.send_message(message)
    [received] = smtpd.messages
    assert received.mail_from == "resender@example.com"
    assert received.rcpt_tos == ["second@example.com", "third@example.com", "secret@example.com"]
    headers = header_block(received.original_content)
    assert b"Resent-To: second@example.com\r\n" in headers
    assert b"Resent-Bcc" not in headers
    assert b"secret@example.com" not in received.original_content
    assert b"original-bcc@example.com" not in received.original_content


async def test_resent_sender_preferred(smtpd: SMTPServer) -> None:
    message = make_message()
    message["Resent-Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    message["Resent-From"] = "resender@example.com"
    message["Resent-Sender"] = "resent-agent@example.com"
    message["Resent-To"] = "second@example.com"
    async with client_for(smtpd) as client:
        await client.send_message(message)
    assert smtpd.messages[0].mail_from == "resent-agent@example.com"
    assert smtpd.messages[0].rcpt_tos == ["second@example.com"]


async def test_two_resent_blocks_rejected(smtpd: SMTPServer) -> None:
    message = make_message()
    for day in ("01", "02"):
        message["Resent-Date"] = f"Mon, {day} Jan 2024 10:00:00 +0000"
        message["Resent-From"] = f"resender{day}@example.com"
        message["Resent-To"] = f"to{day}@example.com"
    async with client_for(smtpd) as client:
        with pytest.raises(ValueError, match="Resent"):
            await client.send_message(message)
        assert client.is_connected
        assert smtpd.handler.commands == ["EHLO"]


async def test_explicit_sender_and_recipients_override(smtpd: SMTPServer) -> None:
    message = make_message(sender="header@example.com", to="header-to@example.com")
    message["Bcc"] = "header-bcc@example.com"
    async with client_for(smtpd) as client:
        await client.send_message(
            message, sender="envelope@example.com", recipients=["x@example.com", "y@example.com"]
        )
        await client.send_message(message, recipients="single@example.com")
    first, second = smtpd.messages
    assert first.mail_from == "envelope@example.com"
    assert first.rcpt_tos == ["x@example.com", "y@example.com"]
    assert first.message["From"] == "header@example.com"
    assert b"header-bcc" not in first.original_content
    assert second.mail_from == "header@example.com"
    assert second.rcpt_tos == ["single@example.com"]


async def test_message_without_from_rejected(smtpd: SMTPServer) -> None:
    message = EmailMessage()
    message["To"] = "bob@example.com"
    message.set_content("x")
    async with client_for(smtpd) as client:
        with pytest.raises(ValueError, match="From"):
            await client.send_message(message)
        assert smtpd.handler.commands == ["EHLO"]
        # With an explicit sender it goes.
        await client.send_message(message, sender="alice@example.com")
    assert smtpd.messages[0].mail_from == "alice@example.com"


async def test_message_without_recipients_rejected(smtpd: SMTPServer) -> None:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message.set_content("x")
    async with client_for(smtpd) as client:
        with pytest.raises(ValueError, match="recipient"):
            await client.send_message(message)
        with pytest.raises(ValueError):
            await client.send_message(message, recipients=[])
        assert smtpd.handler.commands == ["EHLO"]
        assert client.is_connected


async def test_send_message_type_error(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        with pytest.raises(TypeError):
            await client.send_message(b"not a message")  # type: ignore[arg-type]
        assert smtpd.handler.commands == ["EHLO"]


# ------------------------------------------------------------------ SMTPUTF8, 8BITMIME, SIZE


async def test_non_ascii_address_uses_smtputf8(smtpd: SMTPServer) -> None:
    message = make_message(sender="jörg@example.com", to="Zoë <zoë@exämple.com>")
    async with client_for(smtpd) as client:
        assert await client.send_message(message) == ({}, "2.0.0 OK queued as 1")
    [received] = smtpd.messages
    assert received.mail_from == "jörg@example.com"
    assert received.rcpt_tos == ["zoë@exämple.com"]
    assert "SMTPUTF8" in received.mail_options
    assert received.smtp_utf8 is True
    # The headers carry the addresses as raw UTF-8 (RFC 6532), not encoded words.
    assert "From: jörg@example.com\r\n".encode() in received.original_content
    assert "To: Zoë <zoë@exämple.com>\r\n".encode() in received.original_content


async def test_non_ascii_address_with_sendmail(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        await client.sendmail("jörg@example.com", ["zoë@example.com"], b"Subject: u\r\n\r\nx\r\n")
    [received] = smtpd.messages
    assert received.mail_from == "jörg@example.com"
    assert received.rcpt_tos == ["zoë@example.com"]
    assert "SMTPUTF8" in received.mail_options


async def test_non_ascii_address_without_smtputf8(make_smtpd: Callable[..., SMTPServer]) -> None:
    server = make_smtpd(smtputf8=False)
    message = make_message(to="zoë@example.com")
    async with client_for(server) as client:
        assert client.supports_extension("smtputf8") is False
        with pytest.raises(SMTPNotSupported):
            await client.send_message(message)
        with pytest.raises(SMTPNotSupported):
            await client.sendmail("jörg@example.com", ["bob@example.com"], "x")
        assert server.handler.commands == ["EHLO"]
        assert client.is_connected
        await client.send_message(make_message())
    assert [m.rcpt_tos for m in server.messages] == [["bob@example.com"]]


async def test_eight_bit_body_sends_body_8bitmime(server: SMTPServer) -> None:
    message = make_message(body="Grüße aus Köln\n")
    assert message["Content-Transfer-Encoding"] == "8bit"
    async with client_for(server) as client:
        await client.send_message(message)
        await client.sendmail("a@example.com", ["b@example.com"], "Subject: é\n\ncafé\n")
        await client.sendmail("a@example.com", ["b@example.com"], "Subject: plain\n\nascii\n")
    first, second, third = server.messages
    assert "BODY=8BITMIME" in first.mail_options
    assert body_of(first.original_content) == "Grüße aus Köln\r\n".encode()
    assert "BODY=8BITMIME" in second.mail_options
    assert second.original_content == "Subject: é\r\n\r\ncafé\r\n".encode()
    assert not any(o.startswith("BODY") for o in third.mail_options)


async def test_eight_bit_body_reencoded_without_8bitmime(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    server = make_smtpd(ehlo_remove={"8BITMIME"})
    message = make_message(body="Grüße aus Köln\n")
    async with client_for(server) as client:
        assert client.supports_extension("8bitmime") is False
        await client.send_message(message)
    [received] = server.messages
    assert not any(o.startswith("BODY") for o in received.mail_options)
    assert received.original_content.isascii()
    assert received.message.get_content() == "Grüße aus Köln\n"


async def test_size_parameter_leaves_out_quoting_dots(server: SMTPServer) -> None:
    """RFC 1870 4: SIZE counts the content with its CRLFs, "but not the SMTP DATA
    command's terminating dot or doubled quoting dots": what the server stores."""
    message = make_message(body="first line\n.dot line\n..two dots\nlast\n")
    async with client_for(server) as client:
        await client.send_message(message)
        await client.sendmail("a@example.com", ["b@example.com"], b"Subject: s\n\n.\nbare\rcr\n")
    for received in server.messages:
        sizes = [o for o in received.mail_options if o.startswith("SIZE=")]
        assert sizes == [f"SIZE={len(received.original_content)}"]  # dot-stuffing undone
    stored = b"Subject: s\r\n\r\n.\r\nbare\r\ncr\r\n"
    assert server.messages[1].mail_options == [f"SIZE={len(stored)}"]


async def test_no_size_parameter_when_not_offered(make_smtpd: Callable[..., SMTPServer]) -> None:
    server = make_smtpd(ehlo_remove={"SIZE"})
    async with client_for(server) as client:
        await client.sendmail("a@example.com", ["b@example.com"], "x")
    assert server.messages[0].mail_options == []


async def test_explicit_mail_and_rcpt_options(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        await client.sendmail(
            "a@example.com",
            ["b@example.com"],
            "Subject: o\n\nx\n",
            mail_options=["BODY=7BIT"],
            rcpt_options=[],
        )
    [received] = smtpd.messages
    assert "BODY=7BIT" in received.mail_options
    assert [o for o in received.mail_options if o.startswith("SIZE=")] == ["SIZE=17"]


# --------------------------------------------------------------------------- sendmail


async def test_sendmail_str_and_bytes(server: SMTPServer) -> None:
    async with client_for(server) as client:
        r1 = await client.sendmail("a@example.com", ["b@example.com"], "Subject: str\n\nbody\n")
        r2 = await client.sendmail("a@example.com", "c@example.com", b"Subject: bytes\r\n\r\nb\r\n")
    assert r1 == ({}, "2.0.0 OK queued as 1")
    assert r2 == ({}, "2.0.0 OK queued as 2")
    first, second = server.messages
    assert first.original_content == b"Subject: str\r\n\r\nbody\r\n"
    assert second.original_content == b"Subject: bytes\r\n\r\nb\r\n"
    assert second.rcpt_tos == ["c@example.com"]


async def test_line_endings_normalised(server: SMTPServer) -> None:
    raw = b"Subject: eol\n\nlf line\ncr line\rcrlf line\r\nmixed\n\rend"
    async with client_for(server) as client:
        await client.sendmail("a@example.com", ["b@example.com"], raw)
    assert server.messages[0].original_content == (
        b"Subject: eol\r\n\r\nlf line\r\ncr line\r\ncrlf line\r\nmixed\r\n\r\nend\r\n"
    )


async def test_dot_stuffing(server: SMTPServer) -> None:
    raw = b".leading\r\nSubject: dots\r\n\r\n.\r\n.foo\r\n..bar\r\nend.\r\n.\r\n..\r\n"
    async with client_for(server) as client:
        await client.sendmail("a@example.com", ["b@example.com"], raw)
        await client.send_message(make_message(body=".\n.foo\nx\n"))
    assert server.messages[0].original_content == raw
    assert body_of(server.messages[1].original_content) == b".\r\n.foo\r\nx\r\n"


async def test_empty_message(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        await client.sendmail("a@example.com", ["b@example.com"], b"")
    assert smtpd.messages[0].original_content == b""


async def test_null_reverse_path(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        await client.sendmail("", ["b@example.com"], "Subject: bounce\n\nx\n")
    assert smtpd.messages[0].mail_from == "<>"


# --------------------------------------------------------------------------- refusals


async def test_partial_recipient_refusal(server: SMTPServer) -> None:
    async with client_for(server) as client:
        errors, text = await client.sendmail(
            "a@example.com",
            ["ok1@example.com", "refuse-me@example.com", "tempfail@example.com", "ok2@example.com"],
            "Subject: partial\n\nx\n",
        )
    assert errors == {
        "refuse-me@example.com": SMTPResponse(550, "5.1.1 no such user"),
        "tempfail@example.com": SMTPResponse(450, "4.2.1 mailbox temporarily unavailable"),
    }
    assert text == "2.0.0 OK queued as 1"
    [received] = server.messages
    assert received.rcpt_tos == ["ok1@example.com", "ok2@example.com"]


async def test_partial_refusal_send_message(smtpd: SMTPServer) -> None:
    message = make_message(to="bob@example.com, refuse@example.com")
    async with client_for(smtpd) as client:
        errors, _ = await client.send_message(message)
    assert list(errors) == ["refuse@example.com"]
    assert errors["refuse@example.com"].code == 550
    assert smtpd.messages[0].rcpt_tos == ["bob@example.com"]


async def check_still_usable(client: SMTP, server: SMTPServer) -> None:
    before = len(server.messages)
    assert client.is_connected
    result = await client.sendmail("after@example.com", ["ok@example.com"], "Subject: after\n\nx\n")
    assert result == ({}, f"2.0.0 OK queued as {before + 1}")
    assert server.messages[-1].mail_from == "after@example.com"
    assert len(server.messages) == before + 1


async def test_all_recipients_refused(server: SMTPServer) -> None:
    async with client_for(server) as client:
        with pytest.raises(SMTPRecipientsRefused) as info:
            await client.sendmail(
                "a@example.com",
                ["refuse1@example.com", "tempfail2@example.com"],
                "Subject: nobody\n\nx\n",
            )
        refused = info.value.recipients
        assert [(r.recipient, r.code, r.message) for r in refused] == [
            ("refuse1@example.com", 550, "5.1.1 no such user"),
            ("tempfail2@example.com", 450, "4.2.1 mailbox temporarily unavailable"),
        ]
        assert all(isinstance(r, SMTPRecipientRefused) for r in refused)
        assert server.messages == []
        # No content went out; the open transaction was reset.
        assert server.handler.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "RSET"]
        await check_still_usable(client, server)
    assert len(server.messages) == 1


async def test_sender_refused(server: SMTPServer) -> None:
    async with client_for(server) as client:
        with pytest.raises(SMTPSenderRefused) as info:
            await client.sendmail("refuse@example.com", ["b@example.com"], "Subject: s\n\nx\n")
        assert info.value.code == 553
        assert info.value.message == "5.7.1 sender refused"
        assert info.value.sender == "refuse@example.com"
        assert server.messages == []
        assert "DATA" not in server.handler.commands
        await check_still_usable(client, server)


async def test_data_refused(server: SMTPServer) -> None:
    data = b"Subject: d\r\n" + DATA_FAIL_MARKER + b": yes\r\n\r\nx\r\n"
    async with client_for(server) as client:
        with pytest.raises(SMTPDataError) as info:
            await client.sendmail("a@example.com", ["b@example.com"], data)
        assert info.value.code == 554
        assert info.value.message == "5.6.0 message refused"
        assert server.messages == []
        await check_still_usable(client, server)


async def test_data_refused_send_message(smtpd: SMTPServer) -> None:
    message = make_message(body=f"contains {DATA_FAIL_MARKER.decode()}\n")
    async with client_for(smtpd) as client:
        with pytest.raises(SMTPDataError):
            await client.send_message(message)
        await check_still_usable(client, smtpd)


async def test_exceptions_compatible_with_smtplib(smtpd: SMTPServer) -> None:
    import smtplib

    async with client_for(smtpd) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            await client.sendmail("refuse@example.com", ["b@example.com"], "x")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await client.sendmail("a@example.com", ["refuse@example.com"], "x")
        with pytest.raises(smtplib.SMTPDataError):
            await client.sendmail("a@example.com", ["b@example.com"], DATA_FAIL_MARKER)


# --------------------------------------------------------------------------- batches


def batch_items() -> list[Any]:
    good = make_message(to="good1@example.com", subject="good one")
    data_fail = make_message(to="df@example.com", body=f"{DATA_FAIL_MARKER.decode()}\n")
    return [
        good,
        ("refuse-sender@example.com", ["x@example.com"], "Subject: s\n\nx\n"),
        ("a@example.com", ["refuse-1@example.com"], "Subject: r\n\nx\n"),
        ("a@example.com\r\nRSET", ["x@example.com"], "Subject: bad\n\nx\n"),
        data_fail,
        ("partial@example.com", ["good2@example.com", "refuse-2@example.com"], "Subject: p\n\n"),
        make_message(to="good3@example.com", subject="good three"),
        42,
        ("last@example.com", "good4@example.com", b"Subject: last\r\n\r\nend\r\n"),
    ]


@pytest.mark.parametrize(
    ("server_pipelining", "client_pipelining"),
    [(True, True), (True, False), (False, True)],
    ids=["pipelined", "client-lockstep", "server-lockstep"],
)
async def test_send_messages_mixed_batch(
    make_smtpd: Callable[..., SMTPServer], server_pipelining: bool, client_pipelining: bool
) -> None:
    server = make_smtpd(pipelining=server_pipelining)
    async with client_for(server, pipelining=client_pipelining) as client:
        outcomes = await client.send_messages(batch_items())
        assert client.is_connected
    assert len(outcomes) == 9
    assert outcomes[0] == ({}, "2.0.0 OK queued as 1")
    assert isinstance(outcomes[1], SMTPSenderRefused)
    assert (outcomes[1].code, outcomes[1].sender) == (553, "refuse-sender@example.com")
    assert isinstance(outcomes[2], SMTPRecipientsRefused)
    assert [r.recipient for r in outcomes[2].recipients] == ["refuse-1@example.com"]
    assert isinstance(outcomes[3], ValueError)
    assert isinstance(outcomes[4], SMTPDataError)
    assert outcomes[4].code == 554
    assert outcomes[5] == (
        {"refuse-2@example.com": SMTPResponse(550, "5.1.1 no such user")},
        "2.0.0 OK queued as 2",
    )
    assert outcomes[6] == ({}, "2.0.0 OK queued as 3")
    assert isinstance(outcomes[7], TypeError)
    assert outcomes[8] == ({}, "2.0.0 OK queued as 4")
    # Exactly the good messages arrived, once each, in order.
    assert [(m.mail_from, m.rcpt_tos) for m in server.messages] == [
        ("alice@example.com", ["good1@example.com"]),
        ("partial@example.com", ["good2@example.com"]),
        ("alice@example.com", ["good3@example.com"]),
        ("last@example.com", ["good4@example.com"]),
    ]
    assert server.messages[0].message["Subject"] == "good one"
    assert server.messages[3].original_content == b"Subject: last\r\n\r\nend\r\n"
    assert server.handler.connections == 1
    # The bad-address item never reached the wire.
    assert server.handler.commands.count("MAIL") == 7


async def test_send_messages_empty_and_all_good(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        assert await client.send_messages([]) == []
        outcomes = await client.send_messages(
            make_message(to=f"r{i}@example.com", subject=f"n{i}") for i in range(20)
        )
    assert outcomes == [({}, f"2.0.0 OK queued as {i + 1}") for i in range(20)]
    assert [m.message["Subject"] for m in smtpd.messages] == [f"n{i}" for i in range(20)]
    assert [m.rcpt_tos for m in smtpd.messages] == [[f"r{i}@example.com"] for i in range(20)]


async def test_concurrent_send_message_serialised(server: SMTPServer) -> None:
    messages = [make_message(to=f"c{i}@example.com", subject=f"c{i}") for i in range(8)]
    async with client_for(server) as client:
        results = await asyncio.gather(*(client.send_message(m) for m in messages))
        assert client.is_connected
    assert sorted(text for _, text in results) == sorted(
        f"2.0.0 OK queued as {i}" for i in range(1, 9)
    )
    assert all(errors == {} for errors, _ in results)
    assert sorted(m.message["Subject"] for m in server.messages) == sorted(
        f"c{i}" for i in range(8)
    )
    for received in server.messages:
        assert received.rcpt_tos == [f"{received.message['Subject']}@example.com"]
    # One transaction after another, never interleaved.
    assert server.handler.commands == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 8 + ["QUIT"]


async def test_concurrent_mixed_commands(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        results = await asyncio.gather(
            client.noop(),
            client.sendmail("a@example.com", ["b@example.com"], "x"),
            client.rset(),
            client.send_message(make_message()),
        )
    assert results[0].code == 250 and results[2].code == 250
    assert results[1] == ({}, "2.0.0 OK queued as 1")
    assert results[3] == ({}, "2.0.0 OK queued as 2")
    # asyncio.Lock is fair: the calls ran one after another, in the order they were made.
    assert smtpd.handler.commands == [
        "EHLO",
        "NOOP",
        "MAIL",
        "RCPT",
        "DATA",
        "RSET",
        "MAIL",
        "RCPT",
        "DATA",
        "QUIT",
    ]


# --------------------------------------------------------------------------- module send()


async def test_module_send_email_message(smtpd: SMTPServer) -> None:
    result = await send(
        make_message(subject="one-shot"),
        hostname=smtpd.host,
        port=smtpd.port,
        timeout=TIMEOUT,
        local_hostname="oneshot.test",
    )
    assert result == ({}, "2.0.0 OK queued as 1")
    [received] = smtpd.messages
    assert received.message["Subject"] == "one-shot"
    assert received.helo_name == "oneshot.test"
    assert smtpd.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert await wait_until(lambda: smtpd.handler.open_connections == 0)


async def test_module_send_with_overrides(smtpd: SMTPServer) -> None:
    await send(
        make_message(),
        sender="env@example.com",
        recipients=["x@example.com", "y@example.com"],
        hostname=smtpd.host,
        port=smtpd.port,
        timeout=TIMEOUT,
    )
    assert smtpd.messages[0].mail_from == "env@example.com"
    assert smtpd.messages[0].rcpt_tos == ["x@example.com", "y@example.com"]


@pytest.mark.parametrize("raw", [b"Subject: raw\r\n\r\nbytes\r\n", "Subject: raw\n\nbytes\n"])
async def test_module_send_raw(smtpd: SMTPServer, raw: str | bytes) -> None:
    result = await send(
        raw, "a@example.com", ["b@example.com"], hostname=smtpd.host, port=smtpd.port
    )
    assert result == ({}, "2.0.0 OK queued as 1")
    assert smtpd.messages[0].original_content == b"Subject: raw\r\n\r\nbytes\r\n"
    assert smtpd.messages[0].rcpt_tos == ["b@example.com"]


async def test_module_send_raw_needs_envelope(smtpd: SMTPServer) -> None:
    with pytest.raises(ValueError, match="sender"):
        await send(b"x", recipients=["b@example.com"], hostname=smtpd.host, port=smtpd.port)
    with pytest.raises(ValueError, match="recipients"):
        await send("x", "a@example.com", hostname=smtpd.host, port=smtpd.port)
    await asyncio.sleep(0.05)
    assert smtpd.handler.connections == 0


async def test_module_send_raises_refusals(smtpd: SMTPServer) -> None:
    with pytest.raises(SMTPRecipientsRefused):
        await send(
            "x", "a@example.com", ["refuse@example.com"], hostname=smtpd.host, port=smtpd.port
        )
    assert smtpd.handler.commands[-1] == "QUIT"


# --------------------------------------------------------------------------- injection


INJECTED = "\r\nRCPT TO:<evil@example.com>"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda c: c.sendmail("a@example.com" + INJECTED, ["b@example.com"], "x"), id="sender"
        ),
        pytest.param(
            lambda c: c.sendmail("a@example.com", ["b@example.com" + INJECTED], "x"),
            id="recipient",
        ),
        pytest.param(
            lambda c: c.sendmail("a@example.com", ["b@example.com\n"], "x"), id="recipient-lf"
        ),
        pytest.param(
            lambda c: c.sendmail("a@example.com", ["b@example.com"], "x", mail_options=[INJECTED]),
            id="mail-option",
        ),
        pytest.param(
            lambda c: c.sendmail(
                "a@example.com", ["b@example.com"], "x", mail_options=["BODY=8BITMIME" + INJECTED]
            ),
            id="mail-option-suffix",
        ),
        pytest.param(
            lambda c: c.sendmail("a@example.com", ["b@example.com"], "x", rcpt_options=["A\rB"]),
            id="rcpt-option",
        ),
        pytest.param(
            lambda c: c.send_message(make_message(), sender="a@example.com" + INJECTED),
            id="send_message-sender",
        ),
        pytest.param(
            lambda c: c.send_message(make_message(), recipients=["b@example.com\x00"]),
            id="send_message-nul",
        ),
        pytest.param(lambda c: c.mail("a@example.com" + INJECTED), id="mail"),
        pytest.param(lambda c: c.rcpt("b@example.com" + INJECTED), id="rcpt"),
        pytest.param(lambda c: c.vrfy("b@example.com" + INJECTED), id="vrfy"),
        pytest.param(lambda c: c.ehlo("name" + INJECTED), id="ehlo"),
        pytest.param(lambda c: c.helo("name\r\nMAIL FROM:<a@b>"), id="helo"),
        pytest.param(lambda c: c.execute_command(b"NOOP\r\nMAIL FROM:<a@b>"), id="execute"),
    ],
)
async def test_injection_rejected_before_writing(
    smtpd: SMTPServer, call: Callable[[SMTP], Any]
) -> None:
    async with client_for(smtpd) as client:
        with pytest.raises(ValueError):
            await call(client)
        assert client.is_connected
        await client.noop()  # the reply to NOOP proves nothing else was sent before it
        assert smtpd.handler.commands == ["EHLO", "NOOP"]
        await check_still_usable(client, smtpd)
    assert [m.rcpt_tos for m in smtpd.messages] == [["ok@example.com"]]


def test_local_hostname_injection_rejected_by_constructor() -> None:
    with pytest.raises(ValueError):
        SMTP(local_hostname="client.test\r\nMAIL FROM:<a@example.com>")
    with pytest.raises(ValueError):
        SMTP(local_hostname="two words")


async def test_local_hostname_injection_rejected_by_connect(smtpd: SMTPServer) -> None:
    client = SMTP(hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT)
    with pytest.raises(ValueError):
        await client.connect(local_hostname="x\r\nMAIL FROM:<a@example.com>")
    await asyncio.sleep(0.05)
    assert smtpd.handler.connections == 0
    assert client.is_connected is False
    with pytest.raises(ValueError):
        client.local_hostname = "x\nRSET"


async def test_module_send_injection_before_connecting(smtpd: SMTPServer) -> None:
    with pytest.raises(ValueError):
        await send(
            "x",
            "a@example.com",
            ["b@example.com"],
            hostname=smtpd.host,
            port=smtpd.port,
            local_hostname="bad\r\nname",
        )
    await asyncio.sleep(0.05)
    assert smtpd.handler.connections == 0


# --------------------------------------------------------------------------- timeouts


async def test_command_timeout(make_scripted_server: Callable[..., ScriptedServer]) -> None:
    server = make_scripted_server(
        [
            ("send", b"220 scripted\r\n"),
            ("expect", b"EHLO"),
            ("send", b"250 scripted\r\n"),
            ("expect", b"NOOP"),
            ("drain", 10),
        ]
    )
    client = SMTP(hostname=server.host, port=server.port, timeout=TIMEOUT)
    await client.connect()
    started = time.monotonic()
    with pytest.raises(SMTPReadTimeoutError) as info:
        await client.noop(timeout=0.2)
    assert time.monotonic() - started < 2
    assert isinstance(info.value, SMTPTimeoutError)
    assert isinstance(info.value, TimeoutError)
    assert client.is_connected is False
    await server.wait_done()


async def test_default_timeout_used_by_commands(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server(
        [
            ("send", b"220 scripted\r\n"),
            ("expect", b"EHLO"),
            ("send", b"250 scripted\r\n"),
            ("expect", b"RSET"),
            ("drain", 10),
        ]
    )
    client = SMTP(hostname=server.host, port=server.port, timeout=0.2)
    await client.connect()
    started = time.monotonic()
    with pytest.raises(SMTPReadTimeoutError):
        await client.rset()
    assert time.monotonic() - started < 2
    assert client.is_connected is False
    await server.wait_done()


async def test_connect_timeout_waiting_for_greeting(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server([("drain", 10)])
    client = SMTP(hostname=server.host, port=server.port, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(smtp_backends.SMTPConnectTimeoutError):
        await client.connect()
    assert time.monotonic() - started < 2
    assert client.is_connected is False
    await server.wait_done()
    assert server.received == [b""]


# --------------------------------------------------------------------------- basic commands


async def test_ehlo_helo_and_friends(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        reply = await client.ehlo("again.test")
        assert reply.code == 250
        assert reply == client.last_ehlo_response
        assert smtpd.handler.ehlo_names == ["client.test", "again.test"]

        helo = await client.helo("helo.test")
        assert helo.code == 250
        assert client.last_helo_response == helo
        assert client.supports_esmtp is False
        assert client.esmtp_extensions == {}

        assert (await client.noop()) == SMTPResponse(250, "2.0.0 OK")
        assert (await client.rset()) == SMTPResponse(250, "2.0.0 OK")
        vrfy = await client.vrfy("someone@example.com")
        assert vrfy.code == 252
        raw = await client.execute_command(b"NOOP")
        assert raw == SMTPResponse(250, "2.0.0 OK")
        unknown = await client.execute_command(b"FOO", b"bar")
        assert unknown.code == 500
        assert client.is_connected
    assert smtpd.handler.commands == ["EHLO", "EHLO", "NOOP", "RSET", "NOOP", "QUIT"]


async def test_help(smtpd: SMTPServer) -> None:
    """aiosmtpd answers HELP with 250; aiosmtplib accepts 211, 214 and 250."""
    async with client_for(smtpd) as client:
        text = await client.help()
    assert text.startswith("Supported commands:")
    assert "EHLO" in text.split()


async def test_lowlevel_transaction(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        assert (await client.mail("a@example.com")).code == 250
        assert (await client.rcpt("b@example.com")).code == 250
        with pytest.raises(SMTPRecipientRefused) as info:
            await client.rcpt("refuse@example.com")
        assert info.value.code == 550
        assert (await client.data("Subject: low\n\n.dot\n")).code == 250
        with pytest.raises(SMTPSenderRefused):
            await client.mail("refuse@example.com")
    [received] = smtpd.messages
    assert received.rcpt_tos == ["b@example.com"]
    assert received.original_content == b"Subject: low\r\n\r\n.dot\r\n"


async def test_noop_failure_raises(make_scripted_server: Callable[..., ScriptedServer]) -> None:
    server = make_scripted_server(
        [
            ("send", b"220 scripted\r\n"),
            ("expect", b"EHLO"),
            ("send", b"250 scripted\r\n"),
            ("expect", b"NOOP"),
            ("send", b"502 5.5.1 not today\r\n"),
            ("expect", b"QUIT"),
            ("send", b"221 bye\r\n"),
        ]
    )
    async with SMTP(hostname=server.host, port=server.port, timeout=TIMEOUT) as client:
        with pytest.raises(SMTPResponseException) as info:
            await client.noop()
        assert (info.value.code, info.value.message) == (502, "5.5.1 not today")
        assert client.is_connected
    await server.wait_done()


# --------------------------------------------------------------------------- other transports


@pytest.fixture
def unix_smtpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SMTPServer, Path]]:
    """A recording aiosmtpd server on a Unix socket."""
    path = tmp_path_factory.mktemp("unix") / "smtp.sock"

    class Controller(UnixSocketController):  # type: ignore[misc]
        def factory(self) -> RecordingSMTP:
            return RecordingSMTP(self.handler, **self.SMTP_kwargs)

    handler = RecordingHandler()
    controller = Controller(handler, unix_socket=str(path), server_hostname="localhost")
    controller.start()
    deadline = time.monotonic() + 5
    while handler.open_connections and time.monotonic() < deadline:
        time.sleep(0.005)
    handler.reset()
    server = SMTPServer("", 0, handler, controller, "none")
    yield server, path
    server.stop()


async def test_unix_socket_path(unix_smtpd: tuple[SMTPServer, Path]) -> None:
    server, path = unix_smtpd
    client = SMTP(socket_path=str(path), timeout=TIMEOUT, local_hostname="unix.test")
    assert str(path) in repr(client)
    async with client:
        assert client.is_connected
        assert client.get_transport_info("peername") == str(path)
        await client.send_message(make_message(subject="over unix"))
    [received] = server.messages
    assert received.message["Subject"] == "over unix"
    assert received.helo_name == "unix.test"
    assert server.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


async def test_unix_socket_path_pathlike(unix_smtpd: tuple[SMTPServer, Path]) -> None:
    server, path = unix_smtpd
    async with SMTP(socket_path=path, timeout=TIMEOUT) as client:
        await client.sendmail("a@example.com", ["b@example.com"], "x")
    assert len(server.messages) == 1


async def test_connected_socket(smtpd: SMTPServer) -> None:
    sock = socket.create_connection((smtpd.host, smtpd.port), timeout=TIMEOUT)
    sock.setblocking(False)
    client = SMTP(sock=sock, timeout=TIMEOUT, local_hostname="sock.test")
    async with client:
        assert client.get_transport_info("peername") == (smtpd.host, smtpd.port)
        await client.send_message(make_message(subject="over sock"))
    assert await wait_until(lambda: sock.fileno() == -1)  # the client owned and closed it
    [received] = smtpd.messages
    assert received.message["Subject"] == "over sock"
    assert received.helo_name == "sock.test"
    assert smtpd.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
