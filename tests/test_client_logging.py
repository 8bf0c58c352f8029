"""Debug logging of the SMTP client: what is logged, and that secrets never are.

Secrets checked: the password, the OAuth token, and the base64 forms in which AUTH sends
them (PLAIN's ``\\0user\\0password``, LOGIN's password line, XOAUTH2's whole string).
"""

from __future__ import annotations

import base64
import logging
import traceback
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    SMTPAuthenticationError,
    SMTPInsecureAuthError,
    send,
)
from smtp_backends.transport import SMTPTransport
from tests.servers import OAUTH_TOKEN, PASSWORD, USERNAME, SMTPServer

TIMEOUT = 5.0
LOGGER = "smtp_backends"
WRONG_PASSWORD = "Wr0ng-pa55word"
BODY_SECRET = "the body is confidential"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secrets_for(password: str, token: str = OAUTH_TOKEN) -> list[str]:
    return [
        password,
        token,
        b64(f"\0{USERNAME}\0{password}"),
        b64(password),
        b64(f"user={USERNAME}\x01auth=Bearer {token}\x01\x01"),
    ]


SECRETS = secrets_for(PASSWORD) + secrets_for(WRONG_PASSWORD, "wrong-token")


def client_for(server: SMTPServer, **options: Any) -> SMTP:
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("local_hostname", "client.test")
    return SMTP(hostname=server.host, port=server.port, **options)


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def library_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """All our records, fully formatted (message, arguments, exception text)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for record in caplog.records:
        if record.name.startswith(LOGGER):
            parts.append(formatter.format(record))
            parts.append(repr(record.args))
    return "\n".join(parts)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret {secret!r} found in {text!r}"


async def test_commands_and_replies_logged(smtpd: SMTPServer, debug_log: Any) -> None:
    async with client_for(smtpd) as client:
        await client.sendmail("a@example.com", ["b@example.com"], "Subject: o\n\nx\n")
    lines = library_lines(debug_log)
    assert all(r.levelno == logging.DEBUG for r in debug_log.records if r.name == LOGGER)
    assert lines[0].startswith("server: 220 localhost ")
    assert lines[1] == "client: b'EHLO client.test\\r\\n'"
    assert lines[2].startswith("server: 250 localhost\nSIZE 33554432\n")
    # Pipelined: MAIL, RCPT and DATA go out together, then the three replies come back.
    assert lines[3:] == [
        "client: b'MAIL FROM:<a@example.com> SIZE=17\\r\\n'",
        "client: b'RCPT TO:<b@example.com>\\r\\n'",
        "client: b'DATA\\r\\n'",
        "server: 250 2.1.0 OK",
        "server: 250 2.1.5 OK",
        "server: 354 End data with <CR><LF>.<CR><LF>",
        "client: <message content, 17 bytes>",
        "server: 250 2.0.0 OK queued as 1",
        "client: b'QUIT\\r\\n'",
        "server: 221 2.0.0 Bye",
    ]


async def test_message_content_not_logged(smtpd: SMTPServer, debug_log: Any) -> None:
    async with client_for(smtpd) as client:
        await client.sendmail("a@example.com", ["b@example.com"], f"Subject: s\n\n{BODY_SECRET}\n")
    assert BODY_SECRET not in everything_logged(debug_log)
    assert smtpd.messages[0].original_content.endswith(f"{BODY_SECRET}\r\n".encode())


async def test_nothing_logged_above_debug_by_default(smtpd: SMTPServer, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with client_for(smtpd) as client:
        await client.sendmail("a@example.com", ["b@example.com"], "x")
    assert library_lines(caplog) == []


@pytest.mark.parametrize(
    ("method", "mechanism", "client_auth_lines"),
    [
        ("auth_plain", "PLAIN", 1),
        ("auth_login", "LOGIN", 3),
        ("auth_crammd5", "CRAM-MD5", 2),
        ("login", "CRAM-MD5", 2),
    ],
)
async def test_auth_exchange_redacted(
    smtpd_auth: SMTPServer, debug_log: Any, method: str, mechanism: str, client_auth_lines: int
) -> None:
    async with client_for(smtpd_auth) as client:
        await getattr(client, method)(USERNAME, PASSWORD)
        repr_text = repr(client)
    assert smtpd_auth.handler.logins[0].mechanism == mechanism
    assert smtpd_auth.handler.logins[0].success is True
    lines = library_lines(debug_log)
    assert lines.count("client: <AUTH exchange, redacted>") == client_auth_lines
    assert not any("AUTH" in line and "redacted" not in line for line in lines if "client:" in line)
    assert "server: 235 2.7.0 Authentication successful" in lines
    assert_no_secret(everything_logged(debug_log), repr_text)


async def test_xoauth2_redacted(smtpd_auth: SMTPServer, debug_log: Any) -> None:
    async def token() -> str:
        return OAUTH_TOKEN

    client = client_for(smtpd_auth, username=USERNAME, oauth_token_generator=token)
    async with client:
        texts = [repr(client), repr(client.config)]
    async with client_for(smtpd_auth) as other:
        await other.auth_xoauth2(USERNAME, OAUTH_TOKEN)
    assert [a.success for a in smtpd_auth.handler.logins] == [True, True]
    assert library_lines(debug_log).count("client: <AUTH exchange, redacted>") == 2
    assert_no_secret(everything_logged(debug_log), *texts)


async def test_login_on_connect_redacted(smtpd_auth: SMTPServer, debug_log: Any) -> None:
    client = client_for(smtpd_auth, username=USERNAME, password=PASSWORD)
    texts = [repr(client), str(client), repr(client.config)]
    async with client:
        texts += [repr(client), str(client), repr(client.config)]
    texts.append(repr(client))
    assert smtpd_auth.handler.logins[0].success is True
    assert_no_secret(everything_logged(debug_log), *texts)
    # The config object holds the password, but its repr does not show it.
    assert PASSWORD not in repr(client.config)


@pytest.mark.parametrize("method", ["login", "auth_plain", "auth_login", "auth_crammd5"])
async def test_failed_auth_redacted(smtpd_auth: SMTPServer, debug_log: Any, method: str) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPAuthenticationError) as info:
            await getattr(client, method)(USERNAME, WRONG_PASSWORD)
    assert info.value.code == 535
    exc = info.value
    assert_no_secret(
        everything_logged(debug_log),
        str(exc),
        repr(exc),
        repr(exc.args),
        exc.smtp_error.decode(),
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


async def test_failed_xoauth2_redacted(smtpd_auth: SMTPServer, debug_log: Any) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPAuthenticationError) as info:
            await client.auth_xoauth2(USERNAME, "wrong-token")
    assert_no_secret(everything_logged(debug_log), str(info.value), repr(info.value))


async def test_failed_login_on_connect_redacted(smtpd_auth: SMTPServer, debug_log: Any) -> None:
    with pytest.raises(SMTPAuthenticationError) as info:
        await send(
            "x",
            "a@example.com",
            ["b@example.com"],
            hostname=smtpd_auth.host,
            port=smtpd_auth.port,
            username=USERNAME,
            password=WRONG_PASSWORD,
            timeout=TIMEOUT,
        )
    assert_no_secret(everything_logged(debug_log), str(info.value), repr(info.value))
    assert smtpd_auth.messages == []


async def test_insecure_auth_error_redacted(
    smtpd_auth: SMTPServer, debug_log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No non-loopback address exists in the sandbox: make the peer look remote
    # (see test_client_tls.remote_peer).
    monkeypatch.setattr(SMTPTransport, "local", property(lambda self: False))
    client = client_for(smtpd_auth, username=USERNAME, password=PASSWORD)
    with pytest.raises(SMTPInsecureAuthError) as info:
        await client.connect()
    assert_no_secret(everything_logged(debug_log), str(info.value), repr(info.value), repr(client))
    assert smtpd_auth.handler.logins == []


def test_secrets_list_is_meaningful() -> None:
    """The base64 forms checked are the ones the exchanges really send."""
    plain = b64(f"\0{USERNAME}\0{PASSWORD}")
    assert base64.b64decode(plain).split(b"\0") == [b"", USERNAME.encode(), PASSWORD.encode()]
    assert len(SECRETS) == 10
    assert all(isinstance(secret, str) and secret for secret in SECRETS)
