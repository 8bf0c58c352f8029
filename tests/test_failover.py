"""Failover between hosts: refusals at every connection step, 421 mid-session, cool-downs,
and the promise that a message whose data already left never goes to a second host."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest

from smtp_backends import SMTP, SMTPPool
from smtp_backends.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPUnknownOutcomeError,
)
from smtp_backends.failover import Failover, Host
from tests.servers import PASSWORD, USERNAME, ScriptedServer, SMTPServer, free_port

RAW = b"Subject: failover\r\n\r\nbody\r\n"
ITEM = ("sender@example.com", ["rcpt@example.com"], RAW)

GREETING_REFUSED = [("send", b"554 5.3.2 no service here\r\n"), ("expect_close", 5)]
GREETING_421 = [("send", b"421 4.3.2 too busy, try later\r\n"), ("expect_close", 5)]
# No PIPELINING: lock-step, so the server sees MAIL alone and refuses it with 421.
MAIL_421 = [
    ("send", b"220 a.example ESMTP\r\n"),
    ("expect", b"EHLO"),
    ("send", b"250 a.example\r\n"),
    ("expect", b"MAIL"),
    ("send", b"421 4.7.0 too many messages, closing\r\n"),
    ("expect_close", 5),
]
# Takes the whole message, then drops the connection instead of answering the dot.
DROP_AFTER_DOT = [
    ("send", b"220 a.example ESMTP\r\n"),
    ("expect", b"EHLO"),
    ("send", b"250 a.example\r\n"),
    ("expect", b"MAIL"),
    ("send", b"250 ok\r\n"),
    ("expect", b"RCPT"),
    ("send", b"250 ok\r\n"),
    ("expect", b"DATA"),
    ("send", b"354 go ahead\r\n"),
    ("expect_data",),
    ("close",),
]


def hosts(*servers: ScriptedServer | SMTPServer | int) -> list[tuple[str, int]]:
    """(host, port) of each server; an int is a port where nothing listens."""
    return [("127.0.0.1", s) if isinstance(s, int) else s.address for s in servers]


async def test_refused_connection_goes_to_the_next_host_and_cools_down(
    smtpd: SMTPServer,
) -> None:
    dead = free_port()
    failover = Failover(hosts(dead, smtpd), cooldown=60)
    async with SMTP(failover=failover) as client:
        await client.sendmail(*ITEM)
        assert (client.hostname, client.port) == smtpd.address
    assert failover.cooling_down(Host("127.0.0.1", dead))
    assert failover.candidates() == [Host(*smtpd.address)]
    assert len(smtpd.messages) == 1


async def test_refused_greeting_and_421_greeting(
    make_scripted_server: Callable[..., ScriptedServer], smtpd: SMTPServer
) -> None:
    refusing = make_scripted_server(GREETING_REFUSED)
    busy = make_scripted_server(GREETING_421)
    failover = Failover(hosts(refusing, busy, smtpd))
    async with SMTPPool(failover=failover, max_connections=2) as pool:
        await pool.sendmail(*ITEM)
        outcomes = await pool.send_messages([ITEM] * 4)
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert len(smtpd.messages) == 5
    assert pool.connections_opened == 2
    # Each refusing host was tried once: the pool's second connection skipped them.
    assert refusing.connection_count == 1
    assert busy.connection_count == 1


async def test_refused_tls_goes_to_the_next_host(
    make_smtpd: Callable[..., SMTPServer], client_tls_context: ssl.SSLContext
) -> None:
    plaintext_only = make_smtpd()
    with_tls = make_smtpd(tls_mode="starttls")
    failover = Failover(hosts(plaintext_only, with_tls))
    async with SMTP(failover=failover, start_tls=True, tls_context=client_tls_context) as client:
        await client.sendmail(*ITEM)
        assert client.get_transport_info("ssl_object") is not None
    assert not plaintext_only.messages
    assert with_tls.messages[0].tls


async def test_refused_auth_goes_to_the_next_host(make_smtpd: Callable[..., SMTPServer]) -> None:
    wrong_users = make_smtpd(auth=True, users={USERNAME: "another password"})
    right_users = make_smtpd(auth=True)
    failover = Failover(hosts(wrong_users, right_users))
    async with SMTP(failover=failover, username=USERNAME, password=PASSWORD) as client:
        await client.sendmail(*ITEM)
    assert [a.success for a in wrong_users.handler.logins] == [False]
    assert right_users.messages[0].auth_login == USERNAME


async def test_when_every_host_fails_the_last_error_is_raised(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    first = make_smtpd(auth=True, users={USERNAME: "x"})
    second = make_smtpd(auth=True, users={USERNAME: "y"})
    failover = Failover(hosts(first, second))
    with pytest.raises(SMTPAuthenticationError):
        await SMTP(failover=failover, username=USERNAME, password=PASSWORD).connect()
    # Everything is cooling down: the next attempt still tries them all.
    assert failover.candidates() == [Host(*first.address), Host(*second.address)]
    with pytest.raises(SMTPConnectError):
        await SMTP(failover=Failover(hosts(free_port(), free_port()))).connect()


async def test_a_421_mid_session_sends_the_refused_message_to_the_next_host(
    make_scripted_server: Callable[..., ScriptedServer], smtpd: SMTPServer
) -> None:
    busy = make_scripted_server(MAIL_421)
    failover = Failover(hosts(busy, smtpd))
    async with SMTPPool(failover=failover, max_connections=1) as pool:
        outcomes = await pool.send_messages([ITEM] * 3)
        assert all(isinstance(outcome, tuple) for outcome in outcomes), outcomes
        assert await pool.sendmail(*ITEM)
    assert len(smtpd.messages) == 4  # the one refused with 421 included
    assert busy.connection_count == 1  # then skipped: cooling down
    assert failover.cooling_down(Host(*busy.address))


async def test_a_421_to_a_single_send_is_retried_on_the_next_host(
    make_scripted_server: Callable[..., ScriptedServer], smtpd: SMTPServer
) -> None:
    busy = make_scripted_server(MAIL_421)
    async with SMTPPool(failover=Failover(hosts(busy, smtpd)), max_connections=1) as pool:
        await pool.sendmail(*ITEM)  # refused by `busy` with 421 on a fresh connection
        await pool.sendmail(*ITEM)
    assert len(smtpd.messages) == 2
    assert busy.connection_count == 1


async def test_a_message_whose_data_left_is_never_sent_to_a_second_host(
    make_scripted_server: Callable[..., ScriptedServer], smtpd: SMTPServer
) -> None:
    dropping = make_scripted_server(DROP_AFTER_DOT)
    failover = Failover(hosts(dropping, smtpd))
    async with SMTPPool(failover=failover, max_connections=1) as pool:
        with pytest.raises(SMTPUnknownOutcomeError):
            await pool.sendmail(*ITEM)
        [outcome] = await pool.send_messages([ITEM])
    assert isinstance(outcome, SMTPUnknownOutcomeError)
    # Both messages reached the first host's end of data; neither went anywhere else.
    assert dropping.connection_count == 2
    assert smtpd.messages == []
    assert not failover.cooling_down(Host(*dropping.address))


async def test_cool_down_ends(
    make_scripted_server: Callable[..., ScriptedServer], smtpd: SMTPServer
) -> None:
    refusing = make_scripted_server(GREETING_REFUSED)
    failover = Failover(hosts(refusing, smtpd), cooldown=1.0)
    for _ in range(2):
        async with SMTP(failover=failover) as client:
            await client.noop()
    assert refusing.connection_count == 1
    await asyncio.sleep(1.05)
    async with SMTP(failover=failover) as client:
        await client.noop()
    assert refusing.connection_count == 2


def test_hosts_are_parsed_and_checked() -> None:
    failover = Failover(["a.example", "b.example:2525", ("c.example", 25), "[::1]:587", "[::1]"])
    assert failover.hosts == (
        Host("a.example"),
        Host("b.example", 2525),
        Host("c.example", 25),
        Host("::1", 587),
        Host("::1"),
    )
    assert "b.example:2525" in repr(failover)
    for bad in ([], [""], [("a", 0)], [("a", 70000)]):
        with pytest.raises(ValueError):
            Failover(bad)
    with pytest.raises(ValueError):
        Failover(["a"], cooldown=-1)
    with pytest.raises(TypeError):
        Failover([42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="socket_path"):
        SMTP(failover=failover, socket_path="/tmp/x")
    with pytest.raises(TypeError):
        SMTP(failover=["a"])  # type: ignore[arg-type]


async def test_host_port_defaults_to_the_connection_port(smtpd: SMTPServer) -> None:
    host, port = smtpd.address
    async with SMTP(failover=Failover([host]), port=port) as client:
        assert client.port == port
        await client.sendmail(*ITEM)
    assert len(smtpd.messages) == 1


async def test_greeting_refusal_is_reported_with_its_code(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    refusing = make_scripted_server(GREETING_REFUSED)
    with pytest.raises(SMTPConnectResponseError) as caught:
        await SMTP(failover=Failover(hosts(refusing))).connect()
    assert caught.value.code == 554
