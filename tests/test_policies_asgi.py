"""The policies from the ASGI adapter's keywords and SMTP_BACKENDS_* variables, end to end.

A :class:`smtp_backends.asgi.Mail` in its lifespan sends to loopback servers: DKIM
checked by dkimpy on the received bytes, a measured rate, XOAUTH2 with tokens from the
local token endpoint, and one message's own DSN on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

pytest.importorskip("dkim")
pytest.importorskip("google.oauth2")
pytest.importorskip("msal")

import requests
import trustme

from smtp_backends import bridge
from smtp_backends.asgi import Mail
from smtp_backends.mailer import Outgoing
from smtp_backends.protocol.dsn import DSN
from tests import policy_kit
from tests.servers import USERNAME, ScriptedServer, SMTPServer, server_context_for
from tests.token_server import TokenServer


@pytest.fixture(autouse=True)
def fresh_bridge(make_smtpd: object, make_scripted_server: object) -> Iterator[None]:
    """Pools made by a test close (QUIT) before its servers stop."""
    bridge.shutdown()
    yield
    bridge.shutdown()


def message(n: int, sender: str = policy_kit.SENDER) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = f"to{n}@example.net"
    email["Subject"] = f"n{n}"
    email["Message-ID"] = f"<n{n}@example.com>"
    email.set_content("Grüße\n.dot line\n" + "word " * 30 + "\n")
    return email


async def test_dkim_from_environment_variables(smtpd: SMTPServer, tmp_path: Path) -> None:
    environ = {
        "SMTP_BACKENDS_HOST": smtpd.host,
        "SMTP_BACKENDS_PORT": str(smtpd.port),
        "SMTP_BACKENDS_DKIM": json.dumps(policy_kit.dkim_settings(tmp_path)),
    }
    mail = Mail(environ=environ)
    async with mail.lifespan():
        outcomes = await mail.send_messages([message(1), message(2, "a@example.org")])
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    first, second = (received.original_content for received in smtpd.messages)
    assert policy_kit.signed_by(first) == [
        (b"example.com", b"s1", True),
        (b"example.com", b"e1", True),
    ]
    assert policy_kit.signed_by(second) == [(b"example.org", b"org", True)]


async def test_dkim_and_rate_limit_from_keywords(smtpd: SMTPServer, tmp_path: Path) -> None:
    mail = Mail(
        environ={},
        host=smtpd.host,
        port=smtpd.port,
        dkim=policy_kit.dkim_settings(tmp_path),
        rate_limit={"messages_per_second": policy_kit.RATE},
        keep_order=False,
    )
    messages = [message(n) for n in range(policy_kit.COUNT)]
    async with mail.lifespan():
        start = policy_kit.time.monotonic()
        outcomes = await mail.send_messages(messages)
        elapsed = policy_kit.time.monotonic() - start
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert len(smtpd.messages) == policy_kit.COUNT
    assert policy_kit.MIN_SECONDS <= elapsed <= policy_kit.MAX_SECONDS, elapsed
    assert all(
        [ok for _, _, ok in policy_kit.signed_by(m.original_content)] == [True, True]
        for m in smtpd.messages
    )


async def test_oauth_from_keywords_fetches_and_refreshes_tokens(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    server = make_smtpd(auth=True, auth_mechanisms=("XOAUTH2",), oauth_tokens={})

    def accept(token: str) -> None:  # the SMTP server takes only the latest token
        server.handler.oauth_tokens[USERNAME] = token

    with TokenServer(on_issue=accept) as tokens:
        mail = Mail(
            environ={},
            host=server.host,
            port=server.port,
            username=USERNAME,
            pool_size=0,  # a connection (and a login) per send
            oauth={
                "provider": "google",
                "client_id": "client",
                "client_secret": "secret",
                "refresh_token": "refresh-me",
                "token_uri": f"{tokens.base_url}/token",
            },
        )
        async with mail.lifespan():
            await mail.send_message(message(1))
            await mail.send_message(message(2))  # the cached token
            server.handler.oauth_tokens[USERNAME] = "revoked elsewhere"
            await mail.send_message(message(3))  # 535: one fresh token, AUTH again
        forms = tokens.token_requests
    assert [form["grant_type"] for form in forms] == [["refresh_token"]] * 2
    assert [attempt.success for attempt in server.handler.logins] == [True, True, False, True]
    assert [m.auth_login for m in server.messages] == [USERNAME] * 3


async def test_a_messages_own_dsn_replaces_the_settings_default(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server(policy_kit.dsn_script())
    mail = Mail(
        environ={"SMTP_BACKENDS_DSN": "FAILURE"}, host=server.host, port=server.port, pool_size=0
    )
    data = b"From: sender@example.com\r\nSubject: dsn\r\n\r\nbody\r\n"
    own = DSN(notify=["SUCCESS", "FAILURE"], ret="HDRS", envid="env-1")
    async with mail.lifespan():
        await mail.send_message(Outgoing(policy_kit.SENDER, ["to@example.net"], data, dsn=own))
    lines = server.received_lines
    assert b"MAIL FROM:<sender@example.com> RET=HDRS ENVID=env-1" in lines
    assert b"RCPT TO:<to@example.net> NOTIFY=SUCCESS,FAILURE" in lines


async def test_oauth_google_service_account_file(
    make_smtpd: Callable[..., SMTPServer], tmp_path: Path
) -> None:
    server = make_smtpd(auth=True, auth_mechanisms=("XOAUTH2",), oauth_tokens={})

    def accept(token: str) -> None:
        server.handler.oauth_tokens[USERNAME] = token

    with TokenServer(on_issue=accept) as tokens:
        key_file = tmp_path / "service-account.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "mailer@project.iam.gserviceaccount.com",
                    "private_key": policy_kit.ORG_PEM.decode(),
                    "private_key_id": "k1",
                    "token_uri": f"{tokens.base_url}/token",
                }
            )
        )
        mail = Mail(
            environ={
                "SMTP_BACKENDS_OAUTH": json.dumps(
                    {
                        "provider": "google",
                        "service_account_file": str(key_file),
                        "subject": USERNAME,
                    }
                )
            },
            host=server.host,
            port=server.port,
            username=USERNAME,
        )
        async with mail.lifespan():
            await mail.send_message(message(1))
        [form] = tokens.token_requests
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert [m.auth_login for m in server.messages] == [USERNAME]


async def test_oauth_microsoft_client_credentials(
    make_smtpd: Callable[..., SMTPServer], tls_ca: trustme.CA, ca_bundle_path: Path
) -> None:
    server = make_smtpd(auth=True, auth_mechanisms=("XOAUTH2",), oauth_tokens={})

    def accept(token: str) -> None:
        server.handler.oauth_tokens[USERNAME] = token

    session = requests.Session()
    session.verify = str(ca_bundle_path)
    session.trust_env = False  # never a proxy from the environment: loopback only
    context = server_context_for(tls_ca.issue_cert("127.0.0.1"))
    with TokenServer(ssl_context=context, on_issue=accept) as tokens:
        mail = Mail(
            environ={},
            host=server.host,
            port=server.port,
            username=USERNAME,
            oauth={
                "provider": "microsoft",
                "client_id": "client-id",
                "client_secret": "client-secret",
                "tenant": "contoso",
                "authority_host": tokens.base_url,
                "msal_options": {"http_client": session, "instance_discovery": False},
            },
        )
        async with mail.lifespan():
            await mail.send_message(message(1))
        [form] = tokens.token_requests
    assert form["grant_type"] == ["client_credentials"]
    assert [m.auth_login for m in server.messages] == [USERNAME]
