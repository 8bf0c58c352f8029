"""Proxies: SMTP through real SOCKS5, SOCKS4/4a and HTTP CONNECT proxies on loopback
(tests/proxies.py), with implicit TLS and STARTTLS verifying the SMTP host's name."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import pytest
import trustme

from smtp_backends import SMTP, SMTPPool
from smtp_backends.errors import (
    SMTPCertificateError,
    SMTPConnectError,
    SMTPInsecureAuthError,
)
from smtp_backends.failover import Failover
from smtp_backends.proxy import SMTPProxy
from tests.proxies import ProxyServer
from tests.servers import PASSWORD, USERNAME, SMTPServer, free_port, server_context_for

SMTP_NAME = "smtp.test"  # only the proxies can resolve it
ITEM = ("sender@example.com", ["rcpt@example.com"], b"Subject: proxied\r\n\r\nbody\r\n")


@pytest.fixture
def smtp_test_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server certificate for smtp.test only (not for 127.0.0.1, the proxy's address)."""
    return server_context_for(tls_ca.issue_cert(SMTP_NAME))


def proxy_for(kind: str, server: SMTPServer, **options: object) -> ProxyServer:
    return ProxyServer(kind, names={SMTP_NAME: server.address}, **options)  # type: ignore[arg-type]


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., ProxyServer]]:
    running: list[ProxyServer] = []

    def factory(kind: str, server: SMTPServer, **options: object) -> ProxyServer:
        proxy = proxy_for(kind, server, **options).__enter__()
        running.append(proxy)
        return proxy

    yield factory
    for proxy in running:
        proxy.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("kind", "scheme", "credentials"),
    [
        ("socks5", "socks5h", None),
        ("socks5", "socks5h", ("user", "p@ss:word")),
        ("socks4", "socks4a", None),
        ("socks4", "socks4a", ("user", "")),
        ("http", "http", None),
        ("http", "http", ("user", "secret")),
    ],
)
async def test_plain_smtp_through_each_proxy(
    make_proxy: Callable[..., ProxyServer],
    smtpd: SMTPServer,
    kind: str,
    scheme: str,
    credentials: tuple[str, str] | None,
) -> None:
    proxy = make_proxy(kind, smtpd, credentials=credentials)
    url = proxy.url(scheme)
    if credentials is not None:
        user, password = credentials
        quoted = password.replace("@", "%40").replace(":", "%3A")
        url = url.replace(f"{user}:{password}@", f"{user}:{quoted}@" if password else f"{user}@")
    async with SMTP(hostname=SMTP_NAME, port=smtpd.port, proxy=SMTPProxy(url)) as client:
        await client.sendmail(*ITEM)
    assert proxy.requests == [(SMTP_NAME, smtpd.port)]
    assert len(smtpd.messages) == 1


async def test_local_resolution_sends_the_address(
    make_proxy: Callable[..., ProxyServer], smtpd: SMTPServer
) -> None:
    for kind, scheme in (("socks5", "socks5"), ("socks4", "socks4")):
        proxy = make_proxy(kind, smtpd)
        async with SMTP(
            hostname="127.0.0.1", port=smtpd.port, proxy=SMTPProxy(proxy.url(scheme))
        ) as client:
            await client.noop()
        assert proxy.requests == [("127.0.0.1", smtpd.port)]


async def test_implicit_tls_through_socks5_verifies_the_smtp_host_name(
    make_smtpd: Callable[..., SMTPServer],
    make_proxy: Callable[..., ProxyServer],
    smtp_test_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
) -> None:
    server = make_smtpd(tls_mode="implicit", tls_context=smtp_test_context, auth=True)
    proxy = make_proxy("socks5", server)
    async with SMTP(
        hostname=SMTP_NAME,
        port=server.port,
        use_tls=True,
        tls_context=client_tls_context,
        username=USERNAME,
        password=PASSWORD,
        proxy=SMTPProxy(proxy.url("socks5h")),
    ) as client:
        assert client.get_transport_info("ssl_object").server_hostname == SMTP_NAME
        await client.sendmail(*ITEM)
    assert server.messages[0].tls
    assert server.messages[0].auth_login == USERNAME


async def test_starttls_through_http_connect_verifies_the_smtp_host_name(
    make_smtpd: Callable[..., SMTPServer],
    make_proxy: Callable[..., ProxyServer],
    smtp_test_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
) -> None:
    server = make_smtpd(tls_mode="starttls", tls_context=smtp_test_context)
    proxy = make_proxy("http", server)
    async with SMTP(
        hostname=SMTP_NAME,
        port=server.port,
        start_tls=True,
        tls_context=client_tls_context,
        proxy=SMTPProxy(proxy.url()),
    ) as client:
        await client.sendmail(*ITEM)
    assert server.messages[0].tls


async def test_a_certificate_for_the_proxys_address_is_refused(
    make_smtpd: Callable[..., SMTPServer],
    make_proxy: Callable[..., ProxyServer],
    server_tls_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
) -> None:
    # The server's certificate names 127.0.0.1 and localhost: the proxy's address, not smtp.test.
    server = make_smtpd(tls_mode="starttls", tls_context=server_tls_context)
    proxy = make_proxy("socks5", server)
    with pytest.raises(SMTPCertificateError):
        await SMTP(
            hostname=SMTP_NAME,
            port=server.port,
            start_tls=True,
            tls_context=client_tls_context,
            proxy=SMTPProxy(proxy.url("socks5h")),
        ).connect()
    assert not server.messages


async def test_plaintext_auth_through_a_loopback_proxy_is_not_local(
    make_smtpd: Callable[..., SMTPServer], make_proxy: Callable[..., ProxyServer]
) -> None:
    server = make_smtpd(auth=True)
    proxy = make_proxy("socks5", server)
    options = {"hostname": SMTP_NAME, "port": server.port, "proxy": SMTPProxy(proxy.url("socks5h"))}
    with pytest.raises(SMTPInsecureAuthError):
        await SMTP(username=USERNAME, password=PASSWORD, **options).connect()  # type: ignore[arg-type]
    assert server.handler.logins == []
    async with SMTP(
        username=USERNAME,
        password=PASSWORD,
        allow_insecure_auth=True,
        **options,  # type: ignore[arg-type]
    ) as client:
        await client.sendmail(*ITEM)


async def test_proxy_refusals_are_connect_errors(
    make_proxy: Callable[..., ProxyServer], smtpd: SMTPServer
) -> None:
    socks = make_proxy("socks5", smtpd, credentials=("user", "right"))
    http = make_proxy("http", smtpd, credentials=("user", "right"))
    for url in (
        socks.url("socks5h").replace(":right@", ":wrong@"),
        http.url().replace(":right@", ":wrong@"),
        f"socks5://127.0.0.1:{free_port()}",
    ):
        with pytest.raises(SMTPConnectError, match="proxy"):
            await SMTP(hostname=SMTP_NAME, port=smtpd.port, proxy=SMTPProxy(url)).connect()
    unknown = make_proxy("socks5", smtpd)
    with pytest.raises(SMTPConnectError, match="proxy"):
        await SMTP(
            hostname="nowhere.test", port=25, proxy=SMTPProxy(unknown.url("socks5h"))
        ).connect()
    assert socks.refused == 1 and http.refused == 1


async def test_pool_and_failover_through_a_proxy(
    make_proxy: Callable[..., ProxyServer], smtpd: SMTPServer
) -> None:
    proxy = make_proxy("socks5", smtpd)
    failover = Failover([("dead.test", 25), (SMTP_NAME, smtpd.port)])
    async with SMTPPool(
        failover=failover, proxy=SMTPProxy(proxy.url("socks5h")), max_connections=2
    ) as pool:
        outcomes = await pool.send_messages([ITEM] * 4)
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert ("dead.test", 25) in proxy.requests
    assert len(smtpd.messages) == 4


def test_proxy_urls_are_checked_and_secrets_hidden() -> None:
    proxy = SMTPProxy("socks5h://alice:s3cret@proxy.example:1081")
    assert (proxy.scheme, proxy.host, proxy.port, proxy.username) == (
        "socks5h",
        "proxy.example",
        1081,
        "alice",
    )
    assert proxy.remote_dns
    assert "s3cret" not in repr(proxy) and "s3cret" not in str(proxy)
    assert SMTPProxy("http://proxy.example").port == 8080
    assert not SMTPProxy("socks4://10.0.0.1").remote_dns
    for bad in ("ftp://proxy.example", "socks5://", "socks5://host:99999"):
        with pytest.raises(ValueError):
            SMTPProxy(bad)
    with pytest.raises(ValueError, match="socket_path"):
        SMTP(proxy=proxy, socket_path="/tmp/x")
    with pytest.raises(TypeError):
        SMTP(proxy="socks5://x")  # type: ignore[arg-type]
