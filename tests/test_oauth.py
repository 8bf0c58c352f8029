"""OAuth 2.0 token providers: caching, refresh after a 535, google-auth and msal.

Tokens come from tests/token_server.py on loopback (no internet); the SMTP server is the
recording aiosmtpd server, told to accept only the token issued last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import google.oauth2.credentials
import pytest
import requests
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtp_backends import SMTP, SMTPPool
from smtp_backends.errors import SMTPAuthenticationError
from smtp_backends.oauth import (
    CallableTokenProvider,
    GoogleTokenProvider,
    MicrosoftTokenProvider,
)
from tests.servers import USERNAME, SMTPServer, server_context_for
from tests.token_server import TokenServer


@pytest.fixture
def smtpd_oauth(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """AUTH XOAUTH2 on loopback; accepts only ``handler.oauth_tokens[alice]`` (none yet)."""
    return make_smtpd(auth=True, auth_mechanisms=("XOAUTH2",), oauth_tokens={})


def accept_latest(server: SMTPServer) -> Callable[[str], None]:
    """A token server hook: the SMTP server accepts only the token issued last."""

    def issued(token: str) -> None:
        server.handler.oauth_tokens[USERNAME] = token

    return issued


@pytest.fixture
def token_server(smtpd_oauth: SMTPServer) -> Iterator[TokenServer]:
    with TokenServer(on_issue=accept_latest(smtpd_oauth)) as server:
        yield server


def xoauth2_attempts(server: SMTPServer) -> list[bool]:
    return [attempt.success for attempt in server.handler.logins]


def google_provider(token_server: TokenServer, **options: object) -> GoogleTokenProvider:
    credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token="refresh-me",
        client_id="client",
        client_secret="secret",
        token_uri=f"{token_server.base_url}/token",
    )
    return GoogleTokenProvider(credentials, **options)  # type: ignore[arg-type]


async def connect(server: SMTPServer, provider: object) -> SMTP:
    host, port = server.address
    client = SMTP(hostname=host, port=port, username=USERNAME, oauth_token_generator=provider)  # type: ignore[arg-type]
    await client.connect()
    return client


# --------------------------------------------------------------------------- caching


async def test_token_is_cached_until_shortly_before_expiry() -> None:
    issued: list[int] = []

    def fetch() -> tuple[str, float]:
        issued.append(1)
        return f"tok-{len(issued)}", 3.0

    provider = CallableTokenProvider(fetch, refresh_margin=2.0)
    assert await provider() == "tok-1"
    assert await provider() == "tok-1"  # 3 s valid, refreshed 2 s early: cached for 1 s
    await asyncio.sleep(1.1)
    assert await provider() == "tok-2"
    assert provider.fetches == 2


async def test_concurrent_callers_share_one_fetch() -> None:
    calls = 0

    async def fetch() -> dict[str, object]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"access_token": f"tok-{calls}", "expires_in": 3600}

    provider = CallableTokenProvider(fetch)
    tokens = await asyncio.gather(*(provider() for _ in range(10)))
    assert set(tokens) == {"tok-1"}
    assert calls == 1


async def test_refresh_skips_the_fetch_when_someone_else_already_replaced_the_token() -> None:
    count = 0

    def fetch() -> str:
        nonlocal count
        count += 1
        return f"tok-{count}"

    provider = CallableTokenProvider(fetch)
    assert await provider() == "tok-1"
    assert await provider.refresh("tok-1") == "tok-2"
    assert await provider.refresh("tok-1") == "tok-2"  # tok-1 was already replaced
    assert count == 2
    provider.invalidate()
    assert await provider() == "tok-3"


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"error": "invalid_grant", "error_description": "expired"}, SMTPAuthenticationError),
        ("", SMTPAuthenticationError),
        (42, TypeError),
    ],
)
async def test_bad_token_answers_are_errors(result: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        await CallableTokenProvider(lambda: result)()  # type: ignore[arg-type,return-value]


def test_provider_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        CallableTokenProvider("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CallableTokenProvider(lambda: "t", refresh_margin=-1)
    with pytest.raises(TypeError):
        GoogleTokenProvider(object())
    with pytest.raises(TypeError):
        MicrosoftTokenProvider(object())
    assert "tok" not in repr(CallableTokenProvider(lambda: "tok-secret"))


# --------------------------------------------------------------------------- 535 -> refresh


async def test_535_refreshes_once_and_retries_auth_once(
    smtpd_oauth: SMTPServer, token_server: TokenServer
) -> None:
    provider = google_provider(token_server)
    client = await connect(smtpd_oauth, provider)
    await client.quit()
    assert token_server.issued == ["tok-1"]
    # The server revokes tok-1; the provider still thinks it valid for an hour.
    smtpd_oauth.handler.oauth_tokens[USERNAME] = "revoked"
    client = await connect(smtpd_oauth, provider)
    await client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    await client.quit()
    assert token_server.issued == ["tok-1", "tok-2"]
    assert xoauth2_attempts(smtpd_oauth) == [True, False, True]
    assert len(smtpd_oauth.messages) == 1


async def test_a_second_535_is_final(smtpd_oauth: SMTPServer) -> None:
    count = 0

    def fetch() -> str:
        nonlocal count
        count += 1
        return f"wrong-{count}"

    with pytest.raises(SMTPAuthenticationError) as caught:
        await connect(smtpd_oauth, CallableTokenProvider(fetch))
    assert caught.value.code == 535
    assert count == 2
    assert xoauth2_attempts(smtpd_oauth) == [False, False]


async def test_plain_generators_keep_aiosmtplibs_behaviour(smtpd_oauth: SMTPServer) -> None:
    calls = 0

    async def generator() -> str:
        nonlocal calls
        calls += 1
        return "wrong"

    with pytest.raises(SMTPAuthenticationError):
        await connect(smtpd_oauth, generator)
    assert calls == 1
    assert xoauth2_attempts(smtpd_oauth) == [False]
    smtpd_oauth.handler.oauth_tokens[USERNAME] = "good"

    async def good() -> str:
        return "good"

    client = await connect(smtpd_oauth, good)
    await client.quit()


async def test_a_pool_shares_one_token(smtpd_oauth: SMTPServer, token_server: TokenServer) -> None:
    host, port = smtpd_oauth.address
    provider = google_provider(token_server)
    async with SMTPPool(
        hostname=host,
        port=port,
        username=USERNAME,
        oauth_token_generator=provider,
        max_connections=4,
    ) as pool:
        items = [
            ("a@example.com", [f"r{i}@example.com"], b"Subject: x\r\n\r\nhi\r\n") for i in range(8)
        ]
        outcomes = await pool.send_messages(items)
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert token_server.issued == ["tok-1"]
    assert len(smtpd_oauth.handler.logins) >= 2


# --------------------------------------------------------------------------- google-auth


async def test_google_user_credentials_refresh_against_the_token_endpoint(
    smtpd_oauth: SMTPServer, token_server: TokenServer
) -> None:
    provider = google_provider(token_server)
    client = await connect(smtpd_oauth, provider)
    await client.quit()
    [form] = token_server.token_requests
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == ["refresh-me"]


async def test_google_service_account(smtpd_oauth: SMTPServer, token_server: TokenServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "client_email": "mailer@project.iam.gserviceaccount.com",
        "private_key": pem,
        "private_key_id": "k1",
        "token_uri": f"{token_server.base_url}/token",
    }
    provider = GoogleTokenProvider.from_service_account_info(info, subject="alice@example.com")
    client = await connect(smtpd_oauth, provider)
    await client.quit()
    [form] = token_server.token_requests
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert "assertion" in form


async def test_google_refusal_is_an_authentication_error(smtpd_oauth: SMTPServer) -> None:
    with TokenServer(refuse=True) as refusing:
        provider = google_provider(refusing)
        with pytest.raises(SMTPAuthenticationError, match="Google"):
            await connect(smtpd_oauth, provider)
    assert xoauth2_attempts(smtpd_oauth) == []


# --------------------------------------------------------------------------- msal


@pytest.fixture
def https_token_server(
    smtpd_oauth: SMTPServer, tls_ca: trustme.CA, ca_bundle_path: Path
) -> Iterator[TokenServer]:
    context = server_context_for(tls_ca.issue_cert("127.0.0.1"))
    with TokenServer(ssl_context=context, on_issue=accept_latest(smtpd_oauth)) as server:
        yield server


def msal_provider(server: TokenServer, ca_bundle_path: Path) -> MicrosoftTokenProvider:
    session = requests.Session()
    session.verify = str(ca_bundle_path)
    session.trust_env = False  # never a proxy from the environment: loopback only
    return MicrosoftTokenProvider.for_client_credentials(
        "client-id",
        "client-secret",
        tenant="contoso",
        authority_host=server.base_url,
        msal_options={"http_client": session, "instance_discovery": False},
    )


async def test_msal_client_credentials_and_refresh_after_535(
    smtpd_oauth: SMTPServer, https_token_server: TokenServer, ca_bundle_path: Path
) -> None:
    provider = msal_provider(https_token_server, ca_bundle_path)
    client = await connect(smtpd_oauth, provider)
    await client.quit()
    [form] = https_token_server.token_requests
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == ["https://outlook.office365.com/.default"]
    smtpd_oauth.handler.oauth_tokens[USERNAME] = "revoked"
    # msal would hand back its cached tok-1: the refresh must bypass that cache.
    client = await connect(smtpd_oauth, provider)
    await client.quit()
    assert https_token_server.issued == ["tok-1", "tok-2"]
    assert xoauth2_attempts(smtpd_oauth) == [True, False, True]


def test_msal_talks_https_only(ca_bundle_path: Path) -> None:
    with pytest.raises(ValueError):
        MicrosoftTokenProvider.for_client_credentials(
            "id", "secret", tenant="t", authority_host="http://127.0.0.1:9"
        )
