"""The fixtures themselves, exercised with the stdlib smtplib (independent of our client)."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import socket
import ssl
from email.message import EmailMessage

import pytest

from tests.servers import (
    DATA_FAIL_MARKER,
    OAUTH_TOKEN,
    PASSWORD,
    USERNAME,
    ScriptedServer,
    ScriptError,
    upgrade_to_tls,
)


def make_message(
    to: str = "bob@example.com", subject: str = "hello", body: str = "Hi Bob.\n"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


# --------------------------------------------------------------------------- recording server


def test_smtpd_records_message(smtpd):
    with smtplib.SMTP(smtpd.host, smtpd.port, timeout=5) as client:
        client.ehlo("client.test")
        assert client.has_extn("pipelining")
        assert client.has_extn("8bitmime")
        assert client.has_extn("smtputf8")
        assert not client.has_extn("auth")
        client.send_message(make_message())

    assert len(smtpd.messages) == 1
    received = smtpd.messages[0]
    assert received.mail_from == "alice@example.com"
    assert received.rcpt_tos == ["bob@example.com"]
    assert received.helo_name == "client.test"
    assert received.message["Subject"] == "hello"
    assert received.original_content.endswith(b"Hi Bob.\r\n")
    assert received.content == received.original_content
    assert not received.tls
    assert received.auth_login is None
    assert received.connection_id == 1
    assert smtpd.handler.connections == 1
    assert smtpd.handler.commands[:4] == ["EHLO", "MAIL", "RCPT", "DATA"]


def test_smtpd_counts_connections(smtpd):
    for _ in range(3):
        with smtplib.SMTP(smtpd.host, smtpd.port, timeout=5) as client:
            client.noop()
    assert smtpd.handler.connections == 3
    assert smtpd.handler.commands.count("QUIT") == 3


def test_smtpd_refusals(smtpd):
    with smtplib.SMTP(smtpd.host, smtpd.port, timeout=5) as client:
        refused = client.sendmail(
            "alice@example.com",
            ["bob@example.com", "refuse-me@example.com", "tempfail@example.com"],
            b"Subject: partial\r\n\r\nbody\r\n",
        )
        assert refused == {
            "refuse-me@example.com": (550, b"5.1.1 no such user"),
            "tempfail@example.com": (450, b"4.2.1 mailbox temporarily unavailable"),
        }
        with pytest.raises(smtplib.SMTPSenderRefused) as sender_refused:
            client.sendmail("refuse@example.com", ["bob@example.com"], b"x\r\n")
        assert sender_refused.value.smtp_code == 553
        client.rset()
        with pytest.raises(smtplib.SMTPDataError) as data_error:
            client.sendmail(
                "alice@example.com", ["bob@example.com"], b"x\r\n" + DATA_FAIL_MARKER + b"\r\n"
            )
        assert data_error.value.smtp_code == 554

    assert [m.rcpt_tos for m in smtpd.messages] == [["bob@example.com"]]


def test_smtpd_nopipelining(smtpd_nopipelining):
    with smtplib.SMTP(smtpd_nopipelining.host, smtpd_nopipelining.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("pipelining")


def test_make_smtpd_options(make_smtpd):
    server = make_smtpd(
        smtputf8=False, ehlo_remove={"8BITMIME"}, ehlo_extra=["DSN"], data_size_limit=1000
    )
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("smtputf8")
        assert not client.has_extn("8bitmime")
        assert client.has_extn("dsn")
        assert client.esmtp_features["size"] == "1000"


def test_smtpd_smtputf8(smtpd):
    with smtplib.SMTP(smtpd.host, smtpd.port, timeout=5) as client:
        client.send_message(make_message(to="bób@exämple.com"), mail_options=["SMTPUTF8"])
    assert smtpd.messages[0].smtp_utf8
    assert smtpd.messages[0].rcpt_tos == ["bób@exämple.com"]


# --------------------------------------------------------------------------- TLS


def test_starttls(smtpd_starttls, client_tls_context):
    with smtplib.SMTP(smtpd_starttls.host, smtpd_starttls.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        client.starttls(context=client_tls_context)
        client.ehlo()
        assert client.has_extn("auth")
        client.login(USERNAME, PASSWORD)
        client.send_message(make_message())

    received = smtpd_starttls.messages[0]
    assert received.tls
    assert received.auth_login == USERNAME
    assert "STARTTLS" in smtpd_starttls.handler.commands


def test_starttls_rejects_auth_before_tls(smtpd_starttls):
    with smtplib.SMTP(smtpd_starttls.host, smtpd_starttls.port, timeout=5) as client:
        client.ehlo()
        code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0s3cret!").decode())
        assert code == 538
    assert smtpd_starttls.handler.logins == []


def test_implicit_tls(smtpd_tls, client_tls_context):
    with smtplib.SMTP_SSL(
        smtpd_tls.host, smtpd_tls.port, context=client_tls_context, timeout=5
    ) as client:
        client.login(USERNAME, PASSWORD)
        client.send_message(make_message())
    assert smtpd_tls.messages[0].tls


def test_ca_bundle_path(smtpd_tls, ca_bundle_path):
    context = ssl.create_default_context(cafile=str(ca_bundle_path))
    with smtplib.SMTP_SSL(smtpd_tls.host, smtpd_tls.port, context=context, timeout=5) as client:
        assert client.noop()[0] == 250


@pytest.mark.parametrize(
    ("context_fixture", "reason"),
    [
        ("untrusted_server_tls_context", "unable to get local issuer certificate"),
        ("expired_server_tls_context", "certificate has expired"),
        ("wrong_host_server_tls_context", "IP address mismatch"),
    ],
)
def test_bad_certificates_fail_verification(
    request, make_smtpd, client_tls_context, context_fixture, reason
):
    server = make_smtpd(tls_mode="implicit", tls_context=request.getfixturevalue(context_fixture))
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        smtplib.SMTP_SSL(server.host, server.port, context=client_tls_context, timeout=5)


def test_client_certificate(
    make_smtpd, client_cert_server_tls_context, client_tls_context, client_cert_paths
):
    server = make_smtpd(tls_mode="implicit", tls_context=client_cert_server_tls_context)
    client_tls_context.load_cert_chain(client_cert_paths.cert, client_cert_paths.key)
    with smtplib.SMTP_SSL(
        server.host, server.port, context=client_tls_context, timeout=5
    ) as client:
        client.send_message(make_message())
    peercert = server.messages[0].peercert
    assert peercert is not None
    assert ("DNS", "client.example.com") in peercert["subjectAltName"]


def test_client_certificate_missing(make_smtpd, client_cert_server_tls_context, client_tls_context):
    server = make_smtpd(tls_mode="implicit", tls_context=client_cert_server_tls_context)
    # TLS 1.3 reports the missing certificate after the handshake, on the first read.
    with (
        pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)),
        smtplib.SMTP_SSL(server.host, server.port, context=client_tls_context, timeout=5) as client,
    ):
        client.noop()
    assert server.messages == []


# --------------------------------------------------------------------------- AUTH


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_mechanisms(smtpd_auth, mechanism):
    with smtplib.SMTP(smtpd_auth.host, smtpd_auth.port, timeout=5) as client:
        client.ehlo()
        assert set(client.esmtp_features["auth"].split()) == {
            "CRAM-MD5",
            "LOGIN",
            "PLAIN",
            "XOAUTH2",
        }
        client.user, client.password = USERNAME, PASSWORD
        method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        code, _ = client.auth(mechanism, method)
        assert code == 235
        client.send_message(make_message())
    [attempt] = smtpd_auth.handler.logins
    assert (attempt.mechanism, attempt.login, attempt.success) == (mechanism, USERNAME, True)
    assert smtpd_auth.messages[0].auth_login == USERNAME


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_wrong_password(smtpd_auth, mechanism):
    with smtplib.SMTP(smtpd_auth.host, smtpd_auth.port, timeout=5) as client:
        client.ehlo()
        client.user, client.password = USERNAME, "wrong"
        method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.auth(mechanism, method)
        assert excinfo.value.smtp_code == 535
    assert [a.success for a in smtpd_auth.handler.logins] == [False]


def xoauth2_blob(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def test_auth_xoauth2(smtpd_auth):
    with smtplib.SMTP(smtpd_auth.host, smtpd_auth.port, timeout=5) as client:
        client.ehlo()
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2_blob(USERNAME, OAUTH_TOKEN))[0] == 235


def test_auth_xoauth2_bad_token(smtpd_auth):
    with smtplib.SMTP(smtpd_auth.host, smtpd_auth.port, timeout=5) as client:
        client.ehlo()
        code, challenge = client.docmd("AUTH", "XOAUTH2 " + xoauth2_blob(USERNAME, "nope"))
        assert code == 334
        assert b'"status": "401"' in base64.b64decode(challenge)
        assert client.docmd("")[0] == 535


# --------------------------------------------------------------------------- scripted server


def test_scripted_conversation(make_scripted_server):
    server = make_scripted_server(
        [
            ("send", b"220 scripted ESMTP\r\n"),
            ("expect", b"EHLO"),
            ("send", b"250-scripted\r\n250 PIPELINING\r\n"),
            ("expect", b"MAIL FROM:<alice@example.com>"),
            ("send", b"250 ok\r\n"),
            ("expect", b"RCPT TO:<bob@example.com>"),
            ("send", b"250 ok\r\n"),
            ("expect", b"DATA"),
            ("send", b"354 go ahead\r\n"),
            ("expect_data",),
            ("send", b"250 queued\r\n"),
            ("expect", b"QUIT"),
            ("send", b"221 bye\r\n"),
            ("expect_close",),
        ]
    )
    with smtplib.SMTP(server.host, server.port, local_hostname="me.test", timeout=5) as client:
        client.sendmail("alice@example.com", ["bob@example.com"], b"Subject: x\r\n\r\n.dot\r\n")
    server.join()
    assert server.connection_count == 1
    # smtplib's spelling varies across versions; `expect` matches case-insensitively.
    assert [line.upper() for line in server.received_lines] == [
        b"EHLO ME.TEST",
        b"MAIL FROM:<ALICE@EXAMPLE.COM>",
        b"RCPT TO:<BOB@EXAMPLE.COM>",
        b"DATA",
        b"QUIT",
    ]
    conn = server.connections[0]
    assert conn.data == [b"Subject: x\r\n\r\n..dot\r\n"]  # as on the wire: dot-stuffed
    assert conn.client_closed
    assert conn.ended_early is None
    assert server.received[0].upper().endswith(b"QUIT\r\n")


def test_scripted_group_reply(make_scripted_server):
    """send_after_group answers only once the whole pipelined group has arrived."""
    server = make_scripted_server(
        [
            ("send", b"220 hi\r\n"),
            ("send_after_group", 3, b"250 ok\r\n250 ok\r\n354 go\r\n"),
            ("send_after_group", 4, b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            ("send_after_group", 1, b"250 queued\r\n"),
        ]
    )
    with socket.create_connection(server.address, timeout=5) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline() == b"220 hi\r\n"
        stream.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        stream.flush()
        assert [stream.readline() for _ in range(3)][-1] == b"354 go\r\n"
        stream.write(b"one\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n")
        stream.flush()
        replies = [stream.readline() for _ in range(4)]
        assert replies[0] == b"250 queued\r\n"
        stream.write(b"two\r\n.\r\n")
        stream.flush()
        assert stream.readline() == b"250 queued\r\n"
        stream.close()
    server.join()
    conn = server.connections[0]
    assert conn.data == [b"one\r\n", b"two\r\n"]
    assert conn.lines == [b"MAIL FROM:<a@x>", b"RCPT TO:<b@x>", b"DATA"] * 1 + [
        b"MAIL FROM:<a@x>",
        b"RCPT TO:<c@x>",
        b"DATA",
    ]


def test_scripted_starttls_step(make_scripted_server, server_tls_context, client_tls_context):
    server = make_scripted_server(
        [
            ("send", b"220 hi\r\n"),
            ("expect", b"EHLO"),
            ("send", b"250-hi\r\n250 STARTTLS\r\n"),
            ("expect", b"STARTTLS"),
            ("send", b"220 go ahead\r\n"),
            ("starttls", server_tls_context),
            ("expect", b"EHLO"),
            ("send", b"250 hi again\r\n"),
            ("expect", b"QUIT"),
            ("send", b"221 bye\r\n"),
        ]
    )
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.starttls(context=client_tls_context)
        client.ehlo()
    server.join()
    conn = server.connections[0]
    assert conn.tls
    assert conn.plaintext_before_tls == b""
    assert [line.split()[0].upper() for line in conn.lines] == [
        b"EHLO",
        b"STARTTLS",
        b"EHLO",
        b"QUIT",
    ]


def starttls_with_injection(address, context):
    with socket.create_connection(address, timeout=5) as sock:
        stream = sock.makefile("rb")
        assert stream.readline() == b"220 hi\r\n"
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        assert stream.readline() == b"220 go ahead\r\n"
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"QUIT\r\n")
            assert tls.makefile("rb").readline() == b"221 bye\r\n"


async def test_scripted_handler_records_plaintext_injection(
    make_scripted_server, server_tls_context, client_tls_context
):
    """A custom handler upgrading with upgrade_to_tls; plaintext pipelined after STARTTLS
    is discarded and recorded, and never read as if it had been encrypted."""
    seen_after_tls: list[bytes] = []

    async def handler(reader, writer):
        await writer.send(b"220 hi\r\n")
        assert (await reader.readline()).startswith(b"STARTTLS")
        await writer.send(b"220 go ahead\r\n")
        await upgrade_to_tls(writer, server_tls_context)
        seen_after_tls.append(await reader.readline())
        await writer.send(b"221 bye\r\n")

    server = make_scripted_server(handler)
    # A blocking client in a thread: asyncio's client-side start_tls needs Python 3.11.
    await asyncio.to_thread(starttls_with_injection, server.address, client_tls_context)
    await server.wait_done()

    conn = server.connections[0]
    assert conn.plaintext_before_tls == b"MAIL FROM:<injected@example.com>\r\n"
    assert seen_after_tls == [b"QUIT\r\n"]
    assert server.received_lines == [b"STARTTLS", b"QUIT"]


def test_scripted_implicit_tls(make_scripted_server, server_tls_context, client_tls_context):
    server = make_scripted_server(
        [("send", b"220 secure\r\n"), ("expect", b"QUIT"), ("send", b"221 bye\r\n")],
        ssl_context=server_tls_context,
    )
    client = smtplib.SMTP_SSL(server.host, server.port, context=client_tls_context, timeout=5)
    client.quit()
    server.join()
    assert server.connections[0].tls


def test_scripted_reset_and_close(make_scripted_server):
    server = make_scripted_server([("send", b"220 hi\r\n"), ("expect", b"EHLO"), ("reset",)])
    with (
        pytest.raises((smtplib.SMTPServerDisconnected, ConnectionResetError)),
        smtplib.SMTP(server.host, server.port, timeout=5) as client,
    ):
        client.ehlo()
    server.join()

    closing = make_scripted_server([("send", b"220 hi\r\n"), ("close",)])
    client = smtplib.SMTP(closing.host, closing.port, timeout=5)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.ehlo()
    client.close()


def test_scripted_records_what_client_sends_after_script(make_scripted_server):
    server = make_scripted_server([("send", b"220 hi\r\n"), ("expect", b"EHLO")])
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.recv(100)
        sock.sendall(b"EHLO x\r\nstray bytes")
    server.join()
    assert server.received == [b"EHLO x\r\nstray bytes"]
    assert server.received_lines == [b"EHLO x"]


def test_scripted_mismatch_is_reported():
    with ScriptedServer([("send", b"220 hi\r\n"), ("expect", b"HELO")]) as server:
        with (
            smtplib.SMTP(server.host, server.port, timeout=5) as client,
            pytest.raises(smtplib.SMTPServerDisconnected),
        ):
            client.ehlo()
        server.join()
    with pytest.raises(ScriptError, match="expected a line starting with b'HELO'"):
        server.check()


def test_scripted_early_close_is_not_an_error(make_scripted_server):
    server = make_scripted_server(
        [("send", b"220 hi\r\n"), ("expect", b"EHLO"), ("send", b"250 ok\r\n"), ("expect", b"X")]
    )
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"EHLO x\r\n")
    server.join()
    assert server.connections[0].ended_early is not None
    # Either the reply to EHLO or the final expect notices the client has gone.
    assert server.connections[0].ended_at_step in (2, 3)
    assert server.errors == []


def test_scripted_steps_are_validated():
    with pytest.raises(ValueError, match="unknown"):
        ScriptedServer([("shout", b"x")])
    with pytest.raises(TypeError, match="bytes"):
        ScriptedServer([("send", "text")])


async def test_servers_from_an_async_test(smtpd):
    """Servers run in their own threads, so a client on the test's loop can use them."""
    reader, writer = await asyncio.open_connection(smtpd.host, smtpd.port)
    assert (await reader.readline()).startswith(b"220 ")
    writer.write(b"EHLO async.test\r\n")
    lines = [await reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(await reader.readline())
    assert b"250-PIPELINING\r\n" in lines
    # A pipelined group, answered in order by aiosmtpd.
    writer.write(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<refuse@example.com>\r\n"
        b"RCPT TO:<b@example.com>\r\nDATA\r\n"
    )
    replies = [await reader.readline() for _ in range(4)]
    assert [reply[:3] for reply in replies] == [b"250", b"550", b"250", b"354"]
    writer.write(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert (await reader.readline()).startswith(b"250 ")
    assert (await reader.readline()).startswith(b"221 ")
    writer.close()
    await writer.wait_closed()
    assert smtpd.messages[0].rcpt_tos == ["b@example.com"]
