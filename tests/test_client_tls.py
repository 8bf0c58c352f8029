"""The SMTP client with TLS (implicit and STARTTLS, real trustme certificates) and AUTH."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPException,
    SMTPInsecureAuthError,
    SMTPNotSupported,
    SMTPTLSError,
    send,
)
from smtp_backends.transport import SMTPTransport
from tests.conftest import ClientCertPaths
from tests.servers import OAUTH_TOKEN, PASSWORD, USERNAME, ScriptedServer, SMTPServer

# TLS connections finish closing on the loop after quit(): wait for them (see conftest).
pytestmark = pytest.mark.usefixtures("settle_client_sockets")

TIMEOUT = 5.0
RAW = "Subject: tls test\n\nbody\n"


def client_for(server: SMTPServer | ScriptedServer, **options: Any) -> SMTP:
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("local_hostname", "client.test")
    options.setdefault("hostname", server.host)
    return SMTP(port=server.port, **options)


async def wait_for_command(server: SMTPServer, command: str, timeout: float = 2.0) -> None:
    """aiosmtpd records STARTTLS from a callback that may run after the client's handshake."""
    deadline = time.monotonic() + timeout
    while command not in server.handler.commands:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- implicit TLS


async def test_implicit_tls_with_context(
    smtpd_tls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    async with client_for(smtpd_tls, use_tls=True, tls_context=client_tls_context) as client:
        assert client.get_transport_info("sslcontext") is client_tls_context
        ssl_object = client.get_transport_info("ssl_object")
        assert ssl_object is not None
        assert ssl_object.getpeercert()["subjectAltName"] == (
            ("DNS", "localhost"),
            ("IP Address", "127.0.0.1"),
        )
        assert "TLS" in repr(client)
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    [received] = smtpd_tls.messages
    assert received.tls is True
    assert received.original_content == b"Subject: tls test\r\n\r\nbody\r\n"
    # No STARTTLS on an implicit-TLS connection.
    assert smtpd_tls.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
async def test_implicit_tls_with_cert_bundle(
    smtpd_tls: SMTPServer, ca_bundle_path: Path, hostname: str
) -> None:
    client = client_for(smtpd_tls, hostname=hostname, use_tls=True, cert_bundle=str(ca_bundle_path))
    async with client:
        context = client.get_transport_info("sslcontext")
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert smtpd_tls.messages[0].tls is True


async def test_module_send_implicit_tls(smtpd_tls: SMTPServer, ca_bundle_path: Path) -> None:
    result = await send(
        RAW,
        "a@example.com",
        ["b@example.com"],
        hostname="localhost",
        port=smtpd_tls.port,
        use_tls=True,
        cert_bundle=str(ca_bundle_path),
        username=USERNAME,
        password=PASSWORD,
        timeout=TIMEOUT,
    )
    assert result == ({}, "2.0.0 OK queued as 1")
    [received] = smtpd_tls.messages
    assert received.tls is True
    assert received.auth_login == USERNAME


async def test_implicit_tls_against_plaintext_server(
    smtpd: SMTPServer, ca_bundle_path: Path
) -> None:
    client = client_for(smtpd, use_tls=True, cert_bundle=str(ca_bundle_path))
    started = time.monotonic()
    with pytest.raises(SMTPTLSError) as info:
        await client.connect()
    assert time.monotonic() - started < 2  # a handshake error, not the 5 s timeout
    assert isinstance(info.value, SMTPConnectError)
    assert isinstance(info.value, ssl.SSLError)
    assert client.is_connected is False
    assert smtpd.handler.commands == []


# --------------------------------------------------------------------------- STARTTLS


async def test_starttls_automatic_when_offered(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    client = client_for(smtpd_starttls, tls_context=client_tls_context)
    async with client:
        await wait_for_command(smtpd_starttls, "STARTTLS")
        assert smtpd_starttls.handler.commands == ["EHLO", "STARTTLS"]
        assert client.get_transport_info("sslcontext") is client_tls_context
        assert client.get_transport_info("ssl_object") is not None
        # What was learned in plaintext is gone (RFC 3207 4.2).
        assert client.last_ehlo_response is None
        assert client.is_ehlo_or_helo_needed is True
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
        # EHLO was sent again over TLS: AUTH (offered only over TLS) is now known,
        # STARTTLS no longer is.
        assert client.supports_extension("auth") is True
        assert client.supports_extension("starttls") is False
    assert smtpd_starttls.handler.commands == [
        "EHLO",
        "STARTTLS",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "QUIT",
    ]
    assert smtpd_starttls.handler.ehlo_names == ["client.test", "client.test"]
    assert smtpd_starttls.messages[0].tls is True


async def test_starttls_required_and_offered(
    smtpd_starttls: SMTPServer, ca_bundle_path: Path
) -> None:
    client = client_for(
        smtpd_starttls, hostname="localhost", start_tls=True, cert_bundle=str(ca_bundle_path)
    )
    async with client:
        assert client.get_transport_info("ssl_object") is not None
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert smtpd_starttls.messages[0].tls is True


async def test_starttls_required_but_not_offered(smtpd: SMTPServer, ca_bundle_path: Path) -> None:
    client = client_for(smtpd, start_tls=True, cert_bundle=str(ca_bundle_path))
    with pytest.raises(SMTPNotSupported):
        await client.connect()
    assert client.is_connected is False
    await asyncio.sleep(0.05)
    # Only EHLO went out in plaintext: no QUIT, nothing else.
    assert smtpd.handler.commands == ["EHLO"]
    assert smtpd.handler.connections == 1


async def test_starttls_required_not_offered_wire(
    make_scripted_server: Callable[..., ScriptedServer], ca_bundle_path: Path
) -> None:
    server = make_scripted_server(
        [
            ("send", b"220 scripted ESMTP\r\n"),
            ("expect", b"EHLO"),
            ("send", b"250-scripted\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"),
            ("drain", 5),
        ]
    )
    client = client_for(
        server,
        start_tls=True,
        cert_bundle=str(ca_bundle_path),
        username=USERNAME,
        password=PASSWORD,
    )
    with pytest.raises(SMTPNotSupported):
        await client.connect()
    await server.wait_done()
    # Exactly one line reached the wire; no credentials, no QUIT.
    assert server.received == [b"EHLO client.test\r\n"]


async def test_start_tls_false_then_manual_starttls(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    client = client_for(smtpd_starttls, start_tls=False)
    async with client:
        # start_tls=False: connect says nothing (as aiosmtplib); starttls() sends EHLO first.
        assert smtpd_starttls.handler.commands == []
        assert client.get_transport_info("ssl_object") is None
        assert "plaintext" in repr(client)
        reply = await client.starttls(tls_context=client_tls_context)
        assert reply.code == 220
        assert client.get_transport_info("ssl_object") is not None
        assert client.get_transport_info("sslcontext") is client_tls_context
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    await wait_for_command(smtpd_starttls, "STARTTLS")
    assert smtpd_starttls.handler.commands == [
        "EHLO",
        "STARTTLS",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "QUIT",
    ]
    assert smtpd_starttls.messages[0].tls is True


async def test_start_tls_false_stays_plaintext(smtpd_starttls: SMTPServer) -> None:
    async with client_for(smtpd_starttls, start_tls=False) as client:
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
        assert client.get_transport_info("ssl_object") is None
    assert smtpd_starttls.messages[0].tls is False
    assert "STARTTLS" not in smtpd_starttls.handler.commands


async def test_manual_starttls_not_offered(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        with pytest.raises(SMTPNotSupported):
            await client.starttls()
        assert client.is_connected
        assert smtpd.handler.commands == ["EHLO"]


async def test_starttls_twice_refused(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    async with client_for(smtpd_starttls, tls_context=client_tls_context) as client:
        # Already encrypted: refused locally (as aiosmtplib), nothing sent.
        with pytest.raises(SMTPException, match="already using TLS") as caught:
            await client.starttls()
        assert not isinstance(caught.value, SMTPNotSupported)
        assert client.get_transport_info("ssl_object") is not None
        assert client.is_connected
    await wait_for_command(smtpd_starttls, "STARTTLS")
    assert smtpd_starttls.handler.commands == ["EHLO", "STARTTLS", "QUIT"]


# --------------------------------------------------------------------------- client certificates


async def test_client_certificate_implicit_tls(
    make_smtpd: Callable[..., SMTPServer],
    client_cert_server_tls_context: ssl.SSLContext,
    client_cert_paths: ClientCertPaths,
    ca_bundle_path: Path,
) -> None:
    server = make_smtpd(tls_mode="implicit", tls_context=client_cert_server_tls_context)
    client = client_for(
        server,
        use_tls=True,
        cert_bundle=str(ca_bundle_path),
        client_cert=str(client_cert_paths.cert),
        client_key=str(client_cert_paths.key),
    )
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    [received] = server.messages
    assert received.tls is True
    assert received.peercert is not None
    subject = dict(item for rdn in received.peercert["subject"] for item in rdn)
    assert subject["commonName"] == "smtp-backends test client"
    assert ("DNS", "client.example.com") in received.peercert["subjectAltName"]


async def test_client_certificate_combined_file_over_starttls(
    make_smtpd: Callable[..., SMTPServer],
    client_cert_server_tls_context: ssl.SSLContext,
    client_cert_paths: ClientCertPaths,
    ca_bundle_path: Path,
) -> None:
    server = make_smtpd(tls_mode="starttls", tls_context=client_cert_server_tls_context)
    client = client_for(
        server,
        start_tls=True,
        cert_bundle=str(ca_bundle_path),
        client_cert=str(client_cert_paths.combined),
    )
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    [received] = server.messages
    assert received.tls is True
    assert received.peercert is not None
    assert ("DNS", "client.example.com") in received.peercert["subjectAltName"]


def test_tls_context_and_client_cert_conflict(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SMTP(tls_context=ssl.create_default_context(), client_cert=str(tmp_path / "c.pem"))


# --------------------------------------------------------------------------- verification


def check_certificate_error(exc: BaseException) -> None:
    assert isinstance(exc, SMTPCertificateError)
    assert isinstance(exc, ssl.SSLCertVerificationError)
    assert isinstance(exc, ssl.SSLError)
    assert isinstance(exc, SMTPTLSError)
    assert isinstance(exc, SMTPConnectError)
    assert isinstance(exc, ConnectionError)


@pytest.mark.parametrize("tls_mode", ["implicit", "starttls"])
async def test_untrusted_certificate(
    make_smtpd: Callable[..., SMTPServer],
    untrusted_server_tls_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
    tls_mode: str,
) -> None:
    server = make_smtpd(tls_mode=tls_mode, tls_context=untrusted_server_tls_context)
    client = client_for(server, use_tls=tls_mode == "implicit", tls_context=client_tls_context)
    with pytest.raises(SMTPCertificateError) as info:
        await client.connect()
    check_certificate_error(info.value)
    assert "certificate verify failed" in str(info.value)
    assert client.is_connected is False
    await asyncio.sleep(0.05)
    assert "MAIL" not in server.handler.commands
    assert server.messages == []


async def test_untrusted_certificate_by_default(
    make_smtpd: Callable[..., SMTPServer], untrusted_server_tls_context: ssl.SSLContext
) -> None:
    """Without any trust configured, the system store does not trust a private CA."""
    server = make_smtpd(tls_mode="implicit", tls_context=untrusted_server_tls_context)
    with pytest.raises(SMTPCertificateError):
        await client_for(server, use_tls=True).connect()


@pytest.mark.parametrize("tls_mode", ["implicit", "starttls"])
async def test_hostname_mismatch(
    make_smtpd: Callable[..., SMTPServer],
    wrong_host_server_tls_context: ssl.SSLContext,
    ca_bundle_path: Path,
    tls_mode: str,
) -> None:
    server = make_smtpd(tls_mode=tls_mode, tls_context=wrong_host_server_tls_context)
    client = client_for(
        server,
        hostname="localhost",
        use_tls=tls_mode == "implicit",
        start_tls=None if tls_mode == "implicit" else True,
        cert_bundle=str(ca_bundle_path),
    )
    with pytest.raises(SMTPCertificateError) as info:
        await client.connect()
    check_certificate_error(info.value)
    assert "localhost" in str(info.value)
    assert client.is_connected is False


async def test_manual_starttls_server_hostname(
    make_smtpd: Callable[..., SMTPServer],
    wrong_host_server_tls_context: ssl.SSLContext,
    ca_bundle_path: Path,
) -> None:
    """starttls(server_hostname=...) verifies against the given name."""
    server = make_smtpd(tls_mode="starttls", tls_context=wrong_host_server_tls_context)
    async with client_for(server, start_tls=False, cert_bundle=str(ca_bundle_path)) as client:
        await client.starttls(server_hostname="mail.example.org")
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert server.messages[0].tls is True


async def test_expired_certificate(
    make_smtpd: Callable[..., SMTPServer],
    expired_server_tls_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
) -> None:
    server = make_smtpd(tls_mode="implicit", tls_context=expired_server_tls_context)
    with pytest.raises(SMTPCertificateError) as info:
        await client_for(server, use_tls=True, tls_context=client_tls_context).connect()
    assert "expired" in str(info.value)


@pytest.mark.parametrize("tls_mode", ["implicit", "starttls"])
async def test_validate_certs_false(
    make_smtpd: Callable[..., SMTPServer],
    untrusted_server_tls_context: ssl.SSLContext,
    tls_mode: str,
) -> None:
    server = make_smtpd(tls_mode=tls_mode, tls_context=untrusted_server_tls_context)
    client = client_for(server, use_tls=tls_mode == "implicit", validate_certs=False)
    async with client:
        assert client.get_transport_info("ssl_object") is not None
        context = client.get_transport_info("sslcontext")
        assert context.verify_mode == ssl.CERT_NONE
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert server.messages[0].tls is True


async def test_manual_starttls_validate_certs_false(
    make_smtpd: Callable[..., SMTPServer], untrusted_server_tls_context: ssl.SSLContext
) -> None:
    server = make_smtpd(tls_mode="starttls", tls_context=untrusted_server_tls_context)
    async with client_for(server, start_tls=False) as client:
        with pytest.raises(SMTPCertificateError):
            await client.starttls()
        assert client.is_connected is False
    async with client_for(server, start_tls=False) as client:
        await client.starttls(validate_certs=False)
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert [m.tls for m in server.messages] == [True]


# --------------------------------------------------------------------------- AUTH


@pytest.mark.parametrize(
    ("method", "mechanism"),
    [("auth_plain", "PLAIN"), ("auth_login", "LOGIN"), ("auth_crammd5", "CRAM-MD5")],
)
async def test_auth_mechanisms_over_loopback(
    smtpd_auth: SMTPServer, method: str, mechanism: str
) -> None:
    async with client_for(smtpd_auth) as client:
        assert client.get_transport_info("ssl_object") is None  # plaintext, but loopback
        reply = await getattr(client, method)(USERNAME, PASSWORD)
        assert reply.code == 235
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert [(a.mechanism, a.login, a.success) for a in smtpd_auth.handler.logins] == [
        (mechanism, USERNAME, True)
    ]
    assert smtpd_auth.messages[0].auth_login == USERNAME


async def test_auth_with_bytes_credentials(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth) as client:
        assert (await client.auth_plain(USERNAME.encode(), PASSWORD.encode())).code == 235
    assert smtpd_auth.handler.logins[0].success is True


async def test_login_prefers_cram_md5(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth) as client:
        reply = await client.login(USERNAME, PASSWORD)
        assert reply.code == 235
    assert [(a.mechanism, a.success) for a in smtpd_auth.handler.logins] == [("CRAM-MD5", True)]


@pytest.mark.parametrize(
    ("mechanisms", "expected"),
    [(("LOGIN", "PLAIN"), "PLAIN"), (("LOGIN",), "LOGIN"), (("PLAIN", "XOAUTH2"), "PLAIN")],
)
async def test_login_picks_offered_mechanism(
    make_smtpd: Callable[..., SMTPServer], mechanisms: tuple[str, ...], expected: str
) -> None:
    server = make_smtpd(auth=True, auth_mechanisms=mechanisms)
    async with client_for(server) as client:
        await client.login(USERNAME, PASSWORD)
    assert [(a.mechanism, a.success) for a in server.handler.logins] == [(expected, True)]


async def test_login_without_usable_mechanism(make_smtpd: Callable[..., SMTPServer]) -> None:
    server = make_smtpd(auth=True, auth_mechanisms=("XOAUTH2",))
    async with client_for(server) as client:
        with pytest.raises(SMTPNotSupported):
            await client.login(USERNAME, PASSWORD)
        assert "AUTH" not in server.handler.commands


async def test_login_without_auth_extension(smtpd: SMTPServer) -> None:
    async with client_for(smtpd) as client:
        with pytest.raises(SMTPNotSupported):
            await client.login(USERNAME, PASSWORD)
        assert smtpd.handler.commands == ["EHLO"]


@pytest.mark.parametrize("method", ["login", "auth_plain", "auth_login", "auth_crammd5"])
async def test_wrong_password(smtpd_auth: SMTPServer, method: str) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPAuthenticationError) as info:
            await getattr(client, method)(USERNAME, "wrong-password")
        assert info.value.code == 535
        assert "wrong-password" not in str(info.value)
        # 535 is final: login() does not try the next mechanism.
        assert len(smtpd_auth.handler.logins) == 1
        assert smtpd_auth.handler.logins[0].success is False
        # The session goes on: the right password works.
        assert (await client.login(USERNAME, PASSWORD)).code == 235


async def test_auth_xoauth2(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth) as client:
        reply = await client.auth_xoauth2(USERNAME, OAUTH_TOKEN)
        assert reply.code == 235
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert [(a.mechanism, a.login, a.success) for a in smtpd_auth.handler.logins] == [
        ("XOAUTH2", USERNAME, True)
    ]
    assert smtpd_auth.messages[0].auth_login == USERNAME


async def test_auth_xoauth2_bad_token(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPAuthenticationError) as info:
            await client.auth_xoauth2(USERNAME, "bad-token")
        assert info.value.code == 535
        assert "bad-token" not in str(info.value)
        assert smtpd_auth.handler.logins[0].success is False


async def test_oauth_token_generator_on_connect(smtpd_auth: SMTPServer) -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return OAUTH_TOKEN

    async with client_for(smtpd_auth, username=USERNAME, oauth_token_generator=token) as client:
        assert [(a.mechanism, a.success) for a in smtpd_auth.handler.logins] == [("XOAUTH2", True)]
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert calls == [1]
    assert smtpd_auth.messages[0].auth_login == USERNAME
    assert smtpd_auth.handler.commands[:2] == ["EHLO", "AUTH"]


async def test_username_password_login_on_connect(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth, username=USERNAME, password=PASSWORD) as client:
        assert smtpd_auth.handler.commands == ["EHLO", "AUTH"]
        assert smtpd_auth.handler.logins[0].success is True
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert smtpd_auth.messages[0].auth_login == USERNAME


async def test_login_on_connect_wrong_password(smtpd_auth: SMTPServer) -> None:
    client = client_for(smtpd_auth, username=USERNAME, password="nope")
    with pytest.raises(SMTPAuthenticationError) as info:
        await client.connect()
    assert info.value.code == 535
    assert client.is_connected is False


async def test_login_on_connect_after_starttls(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    """AUTH is offered only over TLS here: the login must use the post-STARTTLS EHLO."""
    client = client_for(
        smtpd_starttls, tls_context=client_tls_context, username=USERNAME, password=PASSWORD
    )
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert smtpd_starttls.handler.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    [received] = smtpd_starttls.messages
    assert received.tls is True
    assert received.auth_login == USERNAME


async def test_login_over_implicit_tls(
    smtpd_tls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    client = client_for(
        smtpd_tls,
        use_tls=True,
        tls_context=client_tls_context,
        username=USERNAME,
        password=PASSWORD,
    )
    async with client:
        pass
    assert smtpd_tls.handler.commands == ["EHLO", "AUTH", "QUIT"]
    assert smtpd_tls.handler.logins[0].success is True


# --------------------------------------------------------------------------- insecure AUTH


@pytest.fixture
def remote_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every connection look like it goes to another host.

    The sandbox has no non-loopback address to bind a server to, so the only way to reach
    the "plaintext to a remote host" branch with a real server is to override the one
    predicate that classifies the peer (SMTPTransport.local). Everything else (sockets,
    server, AUTH exchange) is real.
    """
    monkeypatch.setattr(SMTPTransport, "local", property(lambda self: False))


@pytest.mark.usefixtures("remote_peer")
@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.login(USERNAME, PASSWORD),
        lambda c: c.auth_plain(USERNAME, PASSWORD),
        lambda c: c.auth_login(USERNAME, PASSWORD),
        lambda c: c.auth_crammd5(USERNAME, PASSWORD),
        lambda c: c.auth_xoauth2(USERNAME, OAUTH_TOKEN),
    ],
    ids=["login", "plain", "login-mech", "cram-md5", "xoauth2"],
)
async def test_insecure_auth_refused(smtpd_auth: SMTPServer, call: Callable[[SMTP], Any]) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPInsecureAuthError):
            await call(client)
        assert client.is_connected
        await client.noop()
    # Nothing was written: the server saw no AUTH at all.
    assert smtpd_auth.handler.commands == ["EHLO", "NOOP", "QUIT"]
    assert smtpd_auth.handler.logins == []


@pytest.mark.usefixtures("remote_peer")
async def test_insecure_auth_refused_on_connect(smtpd_auth: SMTPServer) -> None:
    client = client_for(smtpd_auth, username=USERNAME, password=PASSWORD)
    with pytest.raises(SMTPInsecureAuthError) as info:
        await client.connect()
    assert PASSWORD not in str(info.value)
    assert client.is_connected is False
    await asyncio.sleep(0.05)
    assert smtpd_auth.handler.commands == ["EHLO"]


@pytest.mark.usefixtures("remote_peer")
async def test_allow_insecure_auth(smtpd_auth: SMTPServer) -> None:
    client = client_for(smtpd_auth, username=USERNAME, password=PASSWORD, allow_insecure_auth=True)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
    assert smtpd_auth.handler.commands[:2] == ["EHLO", "AUTH"]
    assert smtpd_auth.handler.logins[0].success is True


@pytest.mark.usefixtures("remote_peer")
async def test_remote_auth_allowed_over_tls(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    client = client_for(
        smtpd_starttls, tls_context=client_tls_context, username=USERNAME, password=PASSWORD
    )
    async with client:
        pass
    assert smtpd_starttls.handler.logins[0].success is True


# --------------------------------------------------------------------------- closing TLS


@pytest.fixture
def silent_tls_server(server_tls_context: ssl.SSLContext) -> Iterator[tuple[str, int]]:
    """Implicit-TLS server (stdlib ssl, one thread) that answers QUIT with 221 and then
    neither reads nor closes: it never answers the client's TLS close_notify, as many
    real servers do not."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with server_tls_context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"220 silent ESMTP\r\n")
                tls.makefile("rb").readline()  # QUIT
                tls.sendall(b"221 bye\r\n")
                release.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    release.set()
    listener.close()
    thread.join(5)


def test_quit_over_tls_releases_socket_when_loop_closes(
    silent_tls_server: tuple[str, int], client_tls_context: ssl.SSLContext
) -> None:
    """After ``await quit()`` the socket must not outlive the event loop.

    quit() returns once 221 arrived; if the application then closes its loop (asyncio.run
    ending, a worker thread finishing), the connection must still be released rather than
    left waiting for a TLS close_notify that will not come.
    """
    host, port = silent_tls_server

    async def main() -> None:
        client = SMTP(
            hostname=host, port=port, use_tls=True, tls_context=client_tls_context, timeout=2
        )
        await client.connect()
        assert (await client.quit()).code == 221
        assert client.is_connected is False

    loop = asyncio.new_event_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


# --------------------------------------------------------------------------- aiosmtplib parity


async def test_transport_is_the_asyncio_transport(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    client = client_for(smtpd_starttls, tls_context=client_tls_context)
    assert client.transport is None
    async with client:
        assert "SSL" in type(client.transport).__name__  # upgraded by STARTTLS
        assert client.transport is not None and not client.transport.is_closing()
    assert client.transport is None


async def test_starttls_options_stay_with_the_client(
    smtpd_starttls: SMTPServer, client_tls_context: ssl.SSLContext
) -> None:
    client = client_for(smtpd_starttls, start_tls=False)
    async with client:
        assert client.tls_context is None
        await client.starttls(tls_context=client_tls_context)
        assert client.tls_context is client_tls_context


async def test_oauth_without_username_is_refused_before_any_auth(smtpd_auth: SMTPServer) -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return OAUTH_TOKEN

    client = client_for(smtpd_auth, oauth_token_generator=token)
    with pytest.raises(SMTPException, match="username is required"):
        await client.connect()
    assert calls == [] and not client.is_connected
    assert smtpd_auth.handler.logins == []


async def test_oauth_to_a_server_without_xoauth2_sends_no_token(smtpd: SMTPServer) -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return OAUTH_TOKEN

    client = client_for(smtpd, username=USERNAME, oauth_token_generator=token)
    with pytest.raises(SMTPNotSupported, match="does not support XOAUTH2"):
        await client.connect()
    assert calls == [] and not client.is_connected
    assert "AUTH" not in smtpd.handler.commands


def test_password_and_oauth_are_mutually_exclusive() -> None:
    async def token() -> str:
        return OAUTH_TOKEN

    with pytest.raises(ValueError, match="mutually exclusive"):
        SMTP(username=USERNAME, password=PASSWORD, oauth_token_generator=token)


def test_sync_methods_connect_send_and_quit(smtpd: SMTPServer) -> None:
    """sendmail_sync / send_message_sync, as aiosmtplib's: a loop of their own each time."""
    client = client_for(smtpd)
    errors, reply = client.sendmail_sync("a@example.com", ["b@example.com"], RAW)
    assert errors == {} and reply
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "c@example.com", "s"
    message.set_content("body")
    assert client.send_message_sync(message)[0] == {}
    assert not client.is_connected
    assert [m.rcpt_tos for m in smtpd.messages] == [["b@example.com"], ["c@example.com"]]
    assert smtpd.handler.commands.count("QUIT") == 2


async def test_sync_methods_refuse_a_running_loop(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    with pytest.raises(RuntimeError, match="await sendmail"):
        client.sendmail_sync("a@example.com", ["b@example.com"], RAW)
    with pytest.raises(RuntimeError, match="await send_message"):
        client.send_message_sync(EmailMessage())
    assert smtpd.handler.connections == 0
