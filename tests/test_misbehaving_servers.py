"""The client against scripted servers that misbehave: they shut down (421), drop the
connection or stall at every phase, flood, send malformed or unsolicited replies, inject
bytes after STARTTLS, challenge AUTH forever; and the client's own cancellation, command
injection and very large messages.

Every test bounds its wait with :func:`within` so that a hang fails fast instead of
blocking the suite.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPGreetingLostError,
    SMTPHeloError,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)
from tests.scripted import (
    CLOSE,
    STALL,
    Action,
    GroupServer,
    Item,
    delayed,
    then_close,
    then_stall,
)
from tests.servers import ScriptedServer

SENDER = "alice@example.com"
RECIPIENT = "bob@example.com"
BODY = b"Subject: test\r\n\r\nHello.\r\n"
GREETING = b"220 scripted.test ESMTP\r\n"
EHLO_PLAIN = b"250-scripted.test\r\n250 8BITMIME\r\n"
EHLO_PIPELINING = b"250-scripted.test\r\n250 PIPELINING\r\n"
DEADLINE = 5.0
SHORT = 0.3  # the timeout the stall tests give the client

MakeServer = Callable[..., ScriptedServer]


def client_for(server: ScriptedServer, **options: Any) -> SMTP:
    options.setdefault("timeout", DEADLINE)
    options.setdefault("start_tls", None)  # EHLO during connect (nothing offers STARTTLS)
    return SMTP(hostname=server.host, port=server.port, local_hostname="client.test", **options)


async def within(awaitable: Any, seconds: float = DEADLINE) -> Any:
    """Await with a hard deadline (asyncio's TimeoutError is not an SMTPTimeoutError)."""
    return await asyncio.wait_for(awaitable, seconds)


def batch(count: int) -> list[tuple[str, list[str], bytes]]:
    return [
        (SENDER, [f"rcpt{k}@example.com"], b"Subject: m%d\r\n\r\nbody %d\r\n" % (k, k))
        for k in range(count)
    ]


def extensions(pipelining: bool) -> tuple[str, ...]:
    return ("PIPELINING", "8BITMIME") if pipelining else ("8BITMIME",)


def assert_closed(client: SMTP) -> None:
    assert not client.is_connected
    assert "disconnected" in repr(client)


async def assert_not_reusable(client: SMTP, server: GroupServer | None = None) -> None:
    """After a failure the client refuses to send, and nothing more reaches the server."""
    seen = len(server.items) if server is not None else 0
    # The first call may name the protocol error that made the connection unusable.
    with pytest.raises((SMTPServerDisconnected, SMTPProtocolError)):
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    with pytest.raises(SMTPServerDisconnected):
        await within(client.noop())
    if server is not None:
        assert len(server.items) == seen


# =========================================================================== 421


# How the greeting reaches the client. "late": the server waits 50 ms, so the client is
# already waiting for it. "early": it is in the socket before the client starts (a
# pre-connected socket given as sock=), as happens when the server answers at once and the
# client's loop is busy. A correct client reports the same error either way.
ARRIVALS = ["late", "early"]


def greeting_client(scripted: ScriptedServer, arrival: str, **options: Any) -> SMTP:
    """A client for ``scripted`` whose greeting arrives as ``arrival`` says (the script
    must start with ("sleep", 0.05) for "late"; for "early" the sleep is skipped by
    waiting until the greeting is readable)."""
    options.setdefault("timeout", DEADLINE)
    if arrival == "late":
        return client_for(scripted, **options)
    sock = socket.create_connection(scripted.address, timeout=DEADLINE)
    readable, _, _ = select.select([sock], [], [], DEADLINE)
    assert readable, "the scripted server sent no greeting"
    sock.setblocking(False)
    return SMTP(sock=sock, local_hostname="client.test", **options)


@pytest.mark.parametrize("arrival", ARRIVALS)
async def test_421_greeting_is_a_connect_response_error(
    make_scripted_server: MakeServer, arrival: str
) -> None:
    # BUG ("early"): client.py _connect_steps reads the greeting through
    # _require_transport(), which refuses once the 421 has moved the connection to CLOSED:
    # the caller gets SMTPServerDisconnected("Server not connected ...") and loses
    # the server's 421 and its text.
    scripted = make_scripted_server(
        [("sleep", 0.05), ("send", b"421 4.3.2 too busy\r\n"), ("close",)]
    )
    client = greeting_client(scripted, arrival)
    with pytest.raises(SMTPConnectResponseError) as caught:
        await within(client.connect())
    assert caught.value.code == 421
    assert "too busy" in caught.value.message
    assert isinstance(caught.value, SMTPConnectError)
    assert_closed(client)


@pytest.mark.parametrize("arrival", ARRIVALS)
async def test_421_greeting_server_lingering_still_fails_at_once(
    make_scripted_server: MakeServer, arrival: str
) -> None:
    scripted = make_scripted_server(
        [("sleep", 0.05), ("send", b"421 4.3.2 too busy\r\n"), ("expect_close", 3)]
    )
    client = greeting_client(scripted, arrival)
    with pytest.raises(SMTPConnectResponseError):
        await within(client.connect(), 2)
    assert_closed(client)
    await scripted.wait_done()  # the client hung up; it did not wait for the server
    assert scripted.received_lines == []


async def test_421_to_ehlo_raises_and_does_not_fall_back_to_helo(
    make_scripted_server: MakeServer,
) -> None:
    scripted = make_scripted_server(
        [("send", GREETING), ("expect", b"EHLO"), ("send", b"421 4.3.2 bye\r\n"), ("close",)]
    )
    client = client_for(scripted)
    with pytest.raises(SMTPHeloError) as caught:
        await within(client.connect())
    assert caught.value.code == 421
    assert_closed(client)
    await scripted.wait_done()
    assert [line.split()[0] for line in scripted.received_lines] == [b"EHLO"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_421_to_mail_refuses_the_sender_and_closes(
    make_scripted_server: MakeServer, pipelining: bool
) -> None:
    def shut_down(server: GroupServer, item: Item) -> Any:
        if item.verb == b"MAIL":
            return then_close(b"421 4.3.2 shutting down\r\n")
        return None

    server = GroupServer(extensions=extensions(pipelining), on_command=shut_down)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPSenderRefused) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert caught.value.code == 421
    assert_closed(client)
    await assert_not_reusable(client, server)
    if not pipelining:
        assert server.verbs == [b"EHLO", b"MAIL"]


async def test_421_mid_batch_later_messages_not_sent_and_nothing_resent(
    make_scripted_server: MakeServer,
) -> None:
    def shut_down(server: GroupServer, item: Item) -> Any:
        if item.verb == b"MAIL" and server.mails == 2:
            return then_close(b"421 4.3.2 shutting down\r\n")
        return None

    server = GroupServer(hold_groups=True, messages=4, on_command=shut_down)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    outcomes = await within(client.send_messages(batch(4)))
    assert outcomes[0] == ({}, "2.0.0 queued")
    assert isinstance(outcomes[1], SMTPSenderRefused)
    assert outcomes[1].code == 421
    for later in outcomes[2:]:
        assert type(later) is SMTPServerDisconnected
        assert "Not sent" in str(later)
    assert_closed(client)
    await scripted.wait_done()
    assert scripted.connection_count == 1
    assert server.verbs.count(b"MAIL") == 2
    assert server.data == [batch(4)[0][2]]


async def test_421_to_a_dot_mid_batch(make_scripted_server: MakeServer) -> None:
    def shut_down(server: GroupServer, item: Item) -> Any:
        if item.kind == "data" and len(server.data) == 2:
            return then_close(b"421 4.3.2 shutting down\r\n")
        return None

    server = GroupServer(hold_groups=True, messages=4, on_command=shut_down)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    outcomes = await within(client.send_messages(batch(4)))
    assert outcomes[0] == ({}, "2.0.0 queued")
    # Message 2 was refused (421 to its dot): a definite failure, not an unknown outcome.
    assert isinstance(outcomes[1], SMTPResponseException)
    assert not isinstance(outcomes[1], SMTPServerDisconnected)
    assert outcomes[1].code == 421
    # Message 3's envelope was in flight, its content never sent; message 4 never left.
    assert isinstance(outcomes[2], SMTPServerDisconnected)
    assert not isinstance(outcomes[2], SMTPUnknownOutcomeError)
    assert isinstance(outcomes[3], SMTPServerDisconnected)
    assert "Not sent" in str(outcomes[3])
    assert_closed(client)
    assert len(server.data) == 2


async def test_unsolicited_421_while_idle_closes_the_client(
    make_scripted_server: MakeServer,
) -> None:
    scripted = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", EHLO_PIPELINING),
            ("sleep", 0.1),
            ("send", b"421 4.3.2 shutting down\r\n"),
            ("close",),
        ]
    )
    client = client_for(scripted)
    await within(client.connect())
    await within(_until(lambda: not client.is_connected))
    await assert_not_reusable(client)
    await scripted.wait_done()
    assert [line.split()[0] for line in scripted.received_lines] == [b"EHLO"]


async def test_421_to_mail_from_a_lingering_server_fails_without_waiting_for_the_timeout(
    make_scripted_server: MakeServer,
) -> None:
    # BUG: the server answers MAIL with 421 and then waits for the client to hang up (it
    # never answers the pipelined RCPT and DATA). The client knows at the 421 that the
    # session is over, but keeps waiting for the two missing replies until its timeout.
    def shut_down(server: GroupServer, item: Item) -> Any:
        if item.verb == b"MAIL":
            return then_stall(b"421 4.3.2 shutting down\r\n")
        return None

    server = GroupServer(on_command=shut_down)
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=3)
    await within(client.connect())
    started = time.monotonic()
    with pytest.raises(SMTPSenderRefused) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    elapsed = time.monotonic() - started
    assert caught.value.code == 421
    assert_closed(client)
    assert elapsed < 1.0, f"waited {elapsed:.1f} s for replies after a 421"


# =========================================================================== disconnects


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_disconnect_before_greeting(make_scripted_server: MakeServer, how: str) -> None:
    scripted = make_scripted_server([(how,)])
    client = client_for(scripted)
    # A connect error, as aiosmtplib says, and a lost connection, as smtplib says (a
    # reset can even fail the TCP connect itself); nothing about a message.
    with pytest.raises(SMTPConnectError) as caught:
        await within(client.connect())
    if how == "close":
        assert isinstance(caught.value, SMTPGreetingLostError)
        assert isinstance(caught.value, SMTPServerDisconnected)
        assert "before its greeting" in str(caught.value)
    assert isinstance(caught.value, ConnectionError)
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_disconnect_after_greeting(make_scripted_server: MakeServer, how: str) -> None:
    scripted = make_scripted_server([("send", GREETING), ("sleep", 0.05), (how,)])
    client = client_for(scripted)
    with pytest.raises(SMTPServerDisconnected):
        await within(client.connect())
    assert_closed(client)


async def test_disconnect_after_partial_greeting(make_scripted_server: MakeServer) -> None:
    scripted = make_scripted_server([("send", b"220-scripted.test\r\n220 hel"), ("close",)])
    client = client_for(scripted)
    with pytest.raises(SMTPServerDisconnected):
        await within(client.connect())
    assert_closed(client)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_disconnect_after_ehlo(make_scripted_server: MakeServer, how: str) -> None:
    scripted = make_scripted_server(
        [("send", GREETING), ("expect", b"EHLO"), ("send", EHLO_PIPELINING), (how,)]
    )
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPServerDisconnected) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)


# Replies each phase gets before the server hangs up, and where the client then stands.
_DROPS: dict[str, Callable[[GroupServer, Item], Any]] = {
    "mid-MAIL-reply": lambda s, i: then_close(b"250 2.1.0 Sen") if i.verb == b"MAIL" else None,
    "before-RCPT-reply": lambda s, i: CLOSE if i.verb == b"RCPT" else None,
    "mid-RCPT-reply": lambda s, i: then_close(b"250-2.1.5 o") if i.verb == b"RCPT" else None,
    "before-DATA-reply": lambda s, i: CLOSE if i.verb == b"DATA" else None,
    "mid-DATA-reply": lambda s, i: then_close(b"354 go") if i.verb == b"DATA" else None,
}


@pytest.mark.parametrize("phase", list(_DROPS))
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_disconnect_during_envelope_replies_is_not_an_unknown_outcome(
    make_scripted_server: MakeServer, phase: str, pipelining: bool
) -> None:
    server = GroupServer(extensions=extensions(pipelining), on_command=_DROPS[phase])
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPServerDisconnected) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT, "carol@example.com"], BODY))
    # The content never went out: the message was certainly not accepted.
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)
    await assert_not_reusable(client, server)
    assert server.data == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_disconnect_after_354_before_content(
    make_scripted_server: MakeServer, pipelining: bool
) -> None:
    def drop(server: GroupServer, item: Item) -> Any:
        return then_close(b"354 go ahead\r\n") if item.verb == b"DATA" else None

    server = GroupServer(extensions=extensions(pipelining), on_command=drop)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    # The client may already have written the content when it learns of the drop, so
    # either a plain disconnect or an unknown outcome is right; never a success.
    with pytest.raises(SMTPServerDisconnected):
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert_closed(client)
    await assert_not_reusable(client, server)


@pytest.mark.parametrize("how", [CLOSE, Action(then="reset")], ids=["close", "reset"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_disconnect_after_the_dot_is_an_unknown_outcome(
    make_scripted_server: MakeServer, pipelining: bool, how: Action
) -> None:
    def drop(server: GroupServer, item: Item) -> Any:
        return how if item.kind == "data" else None

    server = GroupServer(extensions=extensions(pipelining), on_command=drop)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPUnknownOutcomeError) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert isinstance(caught.value, SMTPServerDisconnected)
    assert not isinstance(caught.value, SMTPTimeoutError)
    assert server.data == [BODY]  # the dot did arrive
    assert_closed(client)
    await assert_not_reusable(client, server)
    assert scripted.connection_count == 1  # never resent


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_send_messages_disconnect_after_a_dot(
    make_scripted_server: MakeServer, pipelining: bool
) -> None:
    # BUG (lockstep): message 2's content is written at the start of the loop turn for
    # message 3, after message 3's Transaction was put in its slot; the loss then marks only
    # messages after the current index as "Not sent", so message 3, of which nothing was
    # sent, comes back as SMTPResponseException(-1, "Transaction did not complete").
    def drop(server: GroupServer, item: Item) -> Any:
        return CLOSE if item.kind == "data" and len(server.data) == 2 else None

    server = GroupServer(
        extensions=extensions(pipelining), hold_groups=pipelining, messages=4, on_command=drop
    )
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    outcomes = await within(client.send_messages(batch(4)))
    assert outcomes[0] == ({}, "2.0.0 queued")
    assert isinstance(outcomes[1], SMTPUnknownOutcomeError)
    later = outcomes[3] if pipelining else outcomes[2]
    for outcome in outcomes[2:]:
        assert isinstance(outcome, SMTPServerDisconnected)
        assert not isinstance(outcome, SMTPUnknownOutcomeError)
    assert "Not sent" in str(later)
    assert_closed(client)
    await scripted.wait_done()
    assert scripted.connection_count == 1
    assert len(server.data) == 2  # nothing resent


@pytest.mark.parametrize(
    "ending",
    [
        [("close",)],
        [("reset",)],
        [("send", b"221 b"), ("close",)],
        [("send", b"garbage\r\n"), ("close",)],
        [("send", b"421 4.3.2 bye\r\n"), ("close",)],
        [("send", b"500 what\r\n"), ("close",)],
    ],
    ids=["close", "reset", "partial", "garbage", "421", "500"],
)
async def test_trouble_during_quit_does_not_raise_from_the_context_manager(
    make_scripted_server: MakeServer, ending: list[tuple[Any, ...]]
) -> None:
    scripted = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", EHLO_PLAIN),
            ("expect", b"QUIT"),
            *ending,
        ]
    )
    client = client_for(scripted)
    async with client:
        assert client.is_connected
    assert_closed(client)


async def test_stall_during_quit_does_not_raise_from_the_context_manager(
    make_scripted_server: MakeServer,
) -> None:
    scripted = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", EHLO_PLAIN),
            ("expect", b"QUIT"),
            ("expect_close", 3),
        ]
    )
    client = client_for(scripted, timeout=SHORT)

    async def session() -> None:
        async with client:
            pass

    await within(session(), 2)
    assert_closed(client)


# =========================================================================== stalls


async def test_greeting_stall_is_a_connect_timeout(make_scripted_server: MakeServer) -> None:
    scripted = make_scripted_server([("expect_close", 3)])
    client = client_for(scripted, timeout=SHORT)
    started = time.monotonic()
    with pytest.raises(SMTPConnectTimeoutError) as caught:
        await within(client.connect(), 2)
    assert time.monotonic() - started < 1.5
    assert isinstance(caught.value, SMTPTimeoutError)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, SMTPConnectError)
    assert_closed(client)
    await scripted.wait_done()  # expect_close: the client hung up


async def test_connect_timeout_argument_overrides_the_default(
    make_scripted_server: MakeServer,
) -> None:
    scripted = make_scripted_server([("expect_close", 3)])
    client = client_for(scripted, timeout=30)
    with pytest.raises(SMTPConnectTimeoutError):
        await within(client.connect(timeout=SHORT), 2)
    assert_closed(client)


async def test_ehlo_stall_during_connect_is_a_timeout(make_scripted_server: MakeServer) -> None:
    scripted = make_scripted_server([("send", GREETING), ("expect", b"EHLO"), ("expect_close", 3)])
    client = client_for(scripted, timeout=SHORT)
    with pytest.raises(SMTPTimeoutError) as caught:
        await within(client.connect(), 2)
    # What the code does today: a reply timeout (it is not a greeting timeout).
    assert isinstance(caught.value, (SMTPReadTimeoutError, SMTPConnectTimeoutError))
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)
    await scripted.wait_done()


@pytest.mark.parametrize("verb", [b"MAIL", b"RCPT", b"DATA"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_envelope_stall_is_a_read_timeout(
    make_scripted_server: MakeServer, verb: bytes, pipelining: bool
) -> None:
    def stall(server: GroupServer, item: Item) -> Any:
        return STALL if item.verb == verb else None

    server = GroupServer(extensions=extensions(pipelining), on_command=stall)
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=SHORT)
    await within(client.connect())
    started = time.monotonic()
    with pytest.raises(SMTPReadTimeoutError) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY), 2)
    assert time.monotonic() - started < 1.5
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)
    await assert_not_reusable(client, server)
    await scripted.wait_done()
    assert scripted.connections[0].client_closed


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_stall_after_the_dot_is_an_unknown_outcome_timeout(
    make_scripted_server: MakeServer, pipelining: bool
) -> None:
    def stall(server: GroupServer, item: Item) -> Any:
        return STALL if item.kind == "data" else None

    server = GroupServer(extensions=extensions(pipelining), on_command=stall)
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=SHORT)
    await within(client.connect())
    with pytest.raises(SMTPUnknownOutcomeTimeoutError) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY), 2)
    assert isinstance(caught.value, SMTPUnknownOutcomeError)
    assert isinstance(caught.value, SMTPReadTimeoutError)
    assert isinstance(caught.value, SMTPServerDisconnected)
    assert isinstance(caught.value, TimeoutError)
    assert server.data == [BODY]
    assert_closed(client)
    await assert_not_reusable(client, server)


async def test_send_messages_stall_after_a_dot(make_scripted_server: MakeServer) -> None:
    def stall(server: GroupServer, item: Item) -> Any:
        return STALL if item.kind == "data" and len(server.data) == 2 else None

    server = GroupServer(hold_groups=True, messages=4, on_command=stall)
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=SHORT)
    await within(client.connect())
    outcomes = await within(client.send_messages(batch(4)), 2)
    assert outcomes[0] == ({}, "2.0.0 queued")
    assert isinstance(outcomes[1], SMTPUnknownOutcomeTimeoutError)
    assert isinstance(outcomes[2], SMTPReadTimeoutError)  # its envelope was in flight
    assert not isinstance(outcomes[2], SMTPUnknownOutcomeError)
    assert isinstance(outcomes[3], SMTPServerDisconnected)
    assert "Not sent" in str(outcomes[3])
    assert_closed(client)


async def test_command_timeout_argument_overrides_the_default(
    make_scripted_server: MakeServer,
) -> None:
    def stall(server: GroupServer, item: Item) -> Any:
        return STALL if item.verb == b"MAIL" else None

    server = GroupServer(on_command=stall)
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=30)
    await within(client.connect())
    started = time.monotonic()
    with pytest.raises(SMTPReadTimeoutError):
        await within(client.sendmail(SENDER, [RECIPIENT], BODY, timeout=SHORT), 2)
    assert time.monotonic() - started < 1.5
    assert_closed(client)


async def test_longer_command_timeout_outlasts_a_slow_server(
    make_scripted_server: MakeServer,
) -> None:
    def slow(server: GroupServer, item: Item) -> Any:
        return delayed(b"250 2.1.0 ok\r\n", 0.5) if item.verb == b"MAIL" else None

    server = GroupServer(on_command=slow)
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=0.2)
    await within(client.connect())
    assert await within(client.sendmail(SENDER, [RECIPIENT], BODY, timeout=3)) == (
        {},
        "2.0.0 queued",
    )
    assert client.is_connected
    # ...while the default (0.2 s) still applies to calls without timeout=.
    with pytest.raises(SMTPReadTimeoutError):
        await within(client.sendmail(SENDER, [RECIPIENT], BODY), 2)
    assert_closed(client)


async def test_noop_stall_is_a_read_timeout_and_closes(make_scripted_server: MakeServer) -> None:
    server = GroupServer(on_command=lambda s, i: STALL if i.verb == b"NOOP" else None)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPReadTimeoutError):
        await within(client.noop(timeout=SHORT), 2)
    assert_closed(client)
    await assert_not_reusable(client, server)


# =========================================================================== floods


def _flooder(prefix: bytes, unit: bytes, cap: int = 64 << 20) -> Any:
    """A handler that greets, reads EHLO, and answers with ``prefix`` + ``unit`` forever
    (up to ``cap`` bytes, then stalls); ``sent[0]`` counts what it managed to write."""
    sent = [0]

    async def handler(reader: Any, writer: Any) -> None:
        await writer.send(GREETING)
        await reader.readline()
        stream = writer.stream  # unrecorded: do not keep megabytes around
        stream.write(prefix)
        chunk = unit * max(1, 65536 // len(unit))
        try:
            while sent[0] < cap:
                stream.write(chunk)
                sent[0] += len(chunk)
                await stream.drain()
        except ConnectionError:
            return
        await asyncio.sleep(10)

    handler.sent = sent  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize(
    ("prefix", "unit"),
    [
        (b"", b"250-" + b"x" * 70 + b"\r\n"),  # endless multiline reply
        (b"250 ", b"x" * 4096),  # endless line, no newline
        (b"250-ok\r\n", b"250-" + b"y" * 8000 + b"\r\n"),  # long lines, endless reply
    ],
    ids=["multiline", "no-newline", "long-lines"],
)
async def test_reply_flood_is_a_protocol_error_quickly(
    make_scripted_server: MakeServer, prefix: bytes, unit: bytes
) -> None:
    handler = _flooder(prefix, unit)
    scripted = make_scripted_server(handler)
    client = client_for(scripted)
    started = time.monotonic()
    with pytest.raises(SMTPProtocolError) as caught:
        await within(client.connect(), 3)
    assert time.monotonic() - started < 2
    assert "too long" in caught.value.message
    assert caught.value.code == -1
    assert_closed(client)
    await scripted.wait_done()
    # The client gave up after a bounded amount (64 KiB caps plus what the kernel
    # buffered), long before the server's own 64 MiB cap.
    assert handler.sent[0] < 48 << 20


async def test_huge_single_reply_line_is_a_protocol_error(
    make_scripted_server: MakeServer,
) -> None:
    huge = b"250 " + b"x" * 200_000 + b"\r\n"
    server = GroupServer(on_command=lambda s, i: huge if i.verb == b"MAIL" else None)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPProtocolError) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert "too long" in caught.value.message
    assert_closed(client)
    await assert_not_reusable(client, server)


@pytest.mark.parametrize(("length", "ok"), [(8192, True), (8193, False)])
async def test_reply_line_length_cap_boundary(
    make_scripted_server: MakeServer, length: int, ok: bool
) -> None:
    line = b"220 " + b"z" * (length - 6) + b"\r\n"
    assert len(line) == length  # the cap counts the line with its CRLF
    scripted = make_scripted_server([("sleep", 0.05), ("send", line), ("expect_close", 3)])
    client = client_for(scripted, start_tls=False)
    if ok:
        greeting = await within(client.connect())
        assert greeting.code == 220
        assert len(greeting.message) == length - 6
        client.close()
    else:
        with pytest.raises(SMTPConnectError) as caught:
            await within(client.connect())
        assert caught.value.code == -1  # type: ignore[attr-defined]
        assert "too long" in str(caught.value)
        assert_closed(client)


async def test_reply_line_at_the_cap_is_accepted(make_scripted_server: MakeServer) -> None:
    line = b"250 " + b"z" * (8192 - 6) + b"\r\n"
    server = GroupServer(on_command=lambda s, i: line if i.verb == b"MAIL" else None)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        assert await within(client.sendmail(SENDER, [RECIPIENT], BODY)) == ({}, "2.0.0 queued")


# =========================================================================== malformed replies


@pytest.mark.parametrize(
    "greeting",
    [
        b"hello there\r\n",
        b"22\r\n",
        b"2x0 hi\r\n",
        b"220-multi\r\n221 changed code\r\n",
        b"\x00\x01\x02\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
    ],
)
@pytest.mark.parametrize("arrival", ARRIVALS)
async def test_garbage_greeting(
    make_scripted_server: MakeServer, greeting: bytes, arrival: str
) -> None:
    # BUG ("early"): as for the 421 greeting, the parser's error has already closed the
    # transport and _connect_steps raises SMTPServerDisconnected("Not connected...").
    scripted = make_scripted_server([("sleep", 0.05), ("send", greeting), ("expect_close", 3)])
    client = greeting_client(scripted, arrival)
    with pytest.raises(SMTPConnectError) as caught:
        await within(client.connect())
    # The code turns the parser's SMTPProtocolError into a connect response error.
    assert isinstance(caught.value, (SMTPConnectResponseError, SMTPProtocolError))
    assert caught.value.code == -1  # type: ignore[attr-defined]
    assert_closed(client)
    await scripted.wait_done()
    assert scripted.received_lines == []  # not even EHLO


@pytest.mark.parametrize(
    "reply",
    [
        b"2x0 ok\r\n",
        b"abc ok\r\n",
        b"650 ok\r\n",
        b"25\r\n",
        b"250xok\r\n",
        b"250-first\r\n251 changed code\r\n",
        b"250-first\r\n354 changed code\r\n",
    ],
)
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_malformed_reply_to_mail_is_a_protocol_error(
    make_scripted_server: MakeServer, reply: bytes, pipelining: bool
) -> None:
    server = GroupServer(
        extensions=extensions(pipelining),
        on_command=lambda s, i: then_stall(reply) if i.verb == b"MAIL" else None,
    )
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPProtocolError):
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert_closed(client)
    await assert_not_reusable(client, server)
    assert server.data == []


async def test_malformed_ehlo_reply_is_a_protocol_error(make_scripted_server: MakeServer) -> None:
    scripted = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", b"250-scripted.test\r\n251 PIPELINING\r\n"),
            ("expect_close", 3),
        ]
    )
    client = client_for(scripted)
    with pytest.raises(SMTPProtocolError):
        await within(client.connect())
    assert_closed(client)
    await scripted.wait_done()


async def test_unsolicited_reply_with_the_ehlo_reply_is_a_protocol_error(
    make_scripted_server: MakeServer,
) -> None:
    scripted = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", EHLO_PIPELINING + b"250 2.1.0 sender ok\r\n"),
            ("expect_close", 3),
        ]
    )
    client = client_for(scripted)
    with pytest.raises(SMTPProtocolError):
        await within(client.connect())
    assert_closed(client)
    await scripted.wait_done()
    assert [line.split()[0] for line in scripted.received_lines] == [b"EHLO"]


async def test_unsolicited_reply_while_idle_closes_and_is_never_matched_to_a_command(
    make_scripted_server: MakeServer,
) -> None:
    scripted = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", EHLO_PIPELINING),
            ("sleep", 0.1),
            ("send", b"250 2.1.0 ok (premature)\r\n"),
            ("expect_close", 3),
        ]
    )
    client = client_for(scripted)
    await within(client.connect())
    await within(_until(lambda: not client.is_connected))
    await assert_not_reusable(client)
    await scripted.wait_done()
    assert [line.split()[0] for line in scripted.received_lines] == [b"EHLO"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_extra_reply_after_data_354_is_a_protocol_error(
    make_scripted_server: MakeServer, pipelining: bool
) -> None:
    # BUG (pipelined): the three replies to MAIL/RCPT/DATA arrive with a fourth nobody
    # asked for, in one packet. The parser fails the connection, but the transaction has
    # already been judged to its 354 and is then left undecided, so sendmail raises a bare
    # SMTPResponseException(-1, "Transaction did not complete") instead of the
    # SMTPProtocolError.
    def extra(server: GroupServer, item: Item) -> Any:
        return then_stall(b"354 go\r\n250 2.0.0 surprise\r\n") if item.verb == b"DATA" else None

    server = GroupServer(extensions=extensions(pipelining), on_command=extra)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPProtocolError):
        await within(client.sendmail(SENDER, [RECIPIENT], BODY))
    assert_closed(client)
    assert server.data == []


async def test_valid_reply_before_garbage_in_one_packet_is_still_judged(
    make_scripted_server: MakeServer,
) -> None:
    # BUG (minor): message 1's dot is answered "250" and the same packet continues with a
    # malformed line. ReplyParser.feed raises before returning the replies it already
    # completed, so the 250 is lost and message 1, which the server accepted, is reported
    # as an unknown outcome.
    def garbage(server: GroupServer, item: Item) -> Any:
        if item.verb == b"MAIL" and server.mails == 2:
            return then_stall(b"2x0 garbage\r\n")
        return None

    server = GroupServer(hold_groups=True, messages=3, on_command=garbage)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    outcomes = await within(client.send_messages(batch(3)))
    assert outcomes[0] == ({}, "2.0.0 queued")
    assert isinstance(outcomes[1], SMTPProtocolError)
    assert isinstance(outcomes[2], SMTPServerDisconnected)
    assert "Not sent" in str(outcomes[2])
    assert_closed(client)


# =========================================================================== STARTTLS


def _starttls_prologue(offer_auth: bool = True) -> list[tuple[Any, ...]]:
    ehlo = b"250-scripted.test\r\n250-STARTTLS\r\n"
    ehlo += b"250 AUTH PLAIN LOGIN\r\n" if offer_auth else b"250 8BITMIME\r\n"
    return [("send", GREETING), ("expect", b"EHLO"), ("send", ehlo), ("expect", b"STARTTLS")]


async def test_real_starttls_upgrade_control(
    make_scripted_server: MakeServer,
    server_tls_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
) -> None:
    # The same script as the injection tests, but honest: the client upgrades, says EHLO
    # again, logs in over TLS and sends.
    scripted = make_scripted_server(
        [
            *_starttls_prologue(),
            ("send", b"220 2.0.0 go ahead\r\n"),
            ("starttls", server_tls_context),
            ("expect", b"EHLO"),
            ("send", b"250-scripted.test\r\n250 AUTH PLAIN\r\n"),
            ("expect", b"AUTH PLAIN "),
            ("send", b"235 2.7.0 ok\r\n"),
            ("expect", b"MAIL FROM:<alice@example.com>"),
            ("send", b"250 ok\r\n"),
            ("expect", b"RCPT TO:<bob@example.com>"),
            ("send", b"250 ok\r\n"),
            ("expect", b"DATA"),
            ("send", b"354 go\r\n"),
            ("expect_data",),
            ("send", b"250 2.0.0 queued\r\n"),
            ("expect", b"QUIT"),
            ("send", b"221 bye\r\n"),
            ("close",),
        ]
    )
    client = client_for(
        scripted, username="alice", password="secret", tls_context=client_tls_context
    )
    async with client:
        assert client.get_transport_info("ssl_object") is not None
        assert await within(client.sendmail(SENDER, [RECIPIENT], BODY)) == (
            {},
            "2.0.0 queued",
        )
    await scripted.wait_done()
    conn = scripted.connections[0]
    assert conn.tls
    assert conn.plaintext_before_tls == b""
    assert conn.data == [BODY]


_INJECTIONS = {
    "one-packet-250": [("send", b"220 2.0.0 go ahead\r\n250 injected\r\n")],
    # BUG: an injected 421 is taken as an unsolicited shutdown notice (connection.py
    # _on_reply checks for 421 before checking the TLS_HANDSHAKE phase) and the client goes
    # on with the handshake instead of failing at once.
    "one-packet-421": [("send", b"220 2.0.0 go ahead\r\n421 injected\r\n")],
    "one-packet-partial": [("send", b"220 2.0.0 go ahead\r\n25")],
    "one-packet-multiline": [("send", b"220 2.0.0 go ahead\r\n250-AUTH PLAIN\r\n250 x\r\n")],
    "second-packet": [("send", b"220 2.0.0 go ahead\r\n"), ("send", b"250 injected\r\n")],
    "second-packet-later": [
        ("send", b"220 2.0.0 go ahead\r\n"),
        ("sleep", 0.05),
        ("send", b"250-scripted.test\r\n250 AUTH PLAIN\r\n"),
    ],
}


@pytest.mark.parametrize("injection", list(_INJECTIONS))
async def test_starttls_response_injection_fails_and_sends_nothing_more(
    make_scripted_server: MakeServer, client_tls_context: ssl.SSLContext, injection: str
) -> None:
    scripted = make_scripted_server(
        _starttls_prologue() + _INJECTIONS[injection] + [("expect_close", 3)]
    )
    client = client_for(
        scripted, username="alice", password="secret", tls_context=client_tls_context, timeout=1
    )
    with pytest.raises((SMTPProtocolError, SMTPTLSError)):
        await within(client.connect())
    assert_closed(client)
    await scripted.wait_done()
    raw = scripted.received[0]
    assert [line.split()[0] for line in scripted.received_lines] == [b"EHLO", b"STARTTLS"]
    assert b"AUTH" not in raw
    assert b"MAIL" not in raw
    # Nothing after STARTTLS but (at most) a TLS ClientHello: no plaintext command.
    after = raw.split(b"STARTTLS\r\n", 1)[1]
    assert after == b"" or after[:1] == b"\x16"  # TLS handshake record


async def test_starttls_injection_with_explicit_starttls_call(
    make_scripted_server: MakeServer, client_tls_context: ssl.SSLContext
) -> None:
    scripted = make_scripted_server(
        [
            *_starttls_prologue(offer_auth=False),
            ("send", b"220 2.0.0 go ahead\r\n250 injected\r\n"),
            ("expect_close", 3),
        ]
    )
    client = client_for(scripted, start_tls=False, tls_context=client_tls_context)
    await within(client.connect())
    await within(client.ehlo())
    with pytest.raises((SMTPProtocolError, SMTPTLSError)):
        await within(client.starttls())
    assert_closed(client)
    await assert_not_reusable(client)
    await scripted.wait_done()
    assert b"MAIL" not in scripted.received[0]


# =========================================================================== AUTH


def _auth_server(challenge: bytes, mechanisms: bytes = b"PLAIN LOGIN XOAUTH2") -> Any:
    async def handler(reader: Any, writer: Any) -> None:
        await writer.send(GREETING)
        await reader.readline()
        await writer.send(b"250-scripted.test\r\n250 AUTH " + mechanisms + b"\r\n")
        while await reader.readline():
            await writer.send(challenge)

    return handler


@pytest.mark.parametrize(
    ("method", "most_lines"),
    [("login", 6), ("auth_plain", 6), ("auth_login", 3), ("auth_xoauth2", 6)],
)
async def test_endless_auth_challenges_are_capped(
    make_scripted_server: MakeServer, method: str, most_lines: int
) -> None:
    scripted = make_scripted_server(_auth_server(b"334 bW9yZQ==\r\n"))  # "more"
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPAuthenticationError) as caught:
        await within(getattr(client, method)("alice", "secret"))
    assert caught.value.code == -1
    assert_closed(client)
    await scripted.wait_done()
    auth_lines = scripted.received_lines[1:]
    assert auth_lines[0].startswith(b"AUTH ")
    assert 1 < len(auth_lines) <= most_lines


async def test_endless_auth_challenges_during_connect(make_scripted_server: MakeServer) -> None:
    scripted = make_scripted_server(_auth_server(b"334 \r\n", b"PLAIN"))
    client = client_for(scripted, username="alice", password="secret")
    with pytest.raises(SMTPAuthenticationError):
        await within(client.connect())
    assert_closed(client)
    await scripted.wait_done()
    assert len(scripted.received_lines) <= 1 + 6


@pytest.mark.parametrize("challenge", [b"334 !!!not base64!!!\r\n", b"334 abc\r\n"])
async def test_invalid_base64_challenge_is_a_protocol_error(
    make_scripted_server: MakeServer, challenge: bytes
) -> None:
    scripted = make_scripted_server(_auth_server(challenge, b"LOGIN"))
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPProtocolError):
        await within(client.auth_login("alice", "secret"))
    assert_closed(client)
    await scripted.wait_done()
    assert len(scripted.received_lines) == 2  # EHLO, AUTH LOGIN: no credentials sent


# =========================================================================== cancellation


async def _until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (set from the client's callbacks or the server's thread)."""
    while not condition():  # noqa: ASYNC110 - nothing to wait on across threads
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("where", ["MAIL", "dot"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_cancelling_sendmail_closes_and_a_new_connect_works(
    make_scripted_server: MakeServer, where: str, pipelining: bool
) -> None:
    def stall_first(server: GroupServer, item: Item) -> Any:
        if server.connection != 1:
            return None
        if (where == "MAIL" and item.verb == b"MAIL") or (where == "dot" and item.kind == "data"):
            return STALL
        return None

    server = GroupServer(extensions=extensions(pipelining), on_command=stall_first)
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    task = asyncio.create_task(client.sendmail(SENDER, [RECIPIENT], BODY))
    stalled_at = b"MAIL" if where == "MAIL" else b"<data>"
    await within(_until(lambda: stalled_at in server.verbs))
    await asyncio.sleep(0.02)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    assert_closed(client)
    await scripted.wait_done(connections=1)  # the client hung up
    await within(client.connect())
    assert await within(client.sendmail(SENDER, [RECIPIENT], BODY)) == ({}, "2.0.0 queued")
    await within(client.quit())
    assert scripted.connection_count == 2


async def test_cancelling_send_messages_closes(make_scripted_server: MakeServer) -> None:
    server = GroupServer(
        hold_groups=True,
        messages=3,
        on_command=lambda s, i: STALL if i.kind == "data" and len(s.data) == 2 else None,
    )
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    task = asyncio.create_task(client.send_messages(batch(3)))
    await within(_until(lambda: len(server.data) == 2))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    assert_closed(client)
    await scripted.wait_done()


async def test_cancelling_connect_closes(make_scripted_server: MakeServer) -> None:
    scripted = make_scripted_server([("expect_close", 3)])
    client = client_for(scripted)
    task = asyncio.create_task(client.connect())
    await within(_until(lambda: scripted.connection_count == 1))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    assert_closed(client)
    await scripted.wait_done()


# =========================================================================== command injection


_INJECTED = [
    ("sender", "alice@example.com>\r\nRCPT TO:<evil@example.com"),
    ("sender", "alice@example.com\nRCPT TO:<evil@example.com>"),
    ("sender", "alice@example.com\rRCPT TO:<evil@example.com>"),
    ("recipient", "bob@example.com>\r\nRCPT TO:<evil@example.com"),
    ("recipient", "bob@example.com\r\nDATA\r\nevil"),
    ("recipient", "bob@example.com\x00evil"),
    ("mail_option", "SIZE=10\r\nRCPT TO:<evil@example.com>"),
    ("rcpt_option", "NOTIFY=NEVER\r\nRSET\r\nMAIL FROM:<evil@example.com>"),
]


@pytest.mark.parametrize(("field", "value"), _INJECTED)
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_crlf_injection_never_reaches_the_wire(
    make_scripted_server: MakeServer, field: str, value: str, pipelining: bool
) -> None:
    server = GroupServer(extensions=extensions(pipelining))
    scripted = make_scripted_server(server)
    sender, recipients = SENDER, [RECIPIENT]
    options: dict[str, list[str]] = {}
    if field == "sender":
        sender = value
    elif field == "recipient":
        recipients = [RECIPIENT, value]
    elif field == "mail_option":
        options["mail_options"] = [value]
    else:
        options["rcpt_options"] = [value]
    async with client_for(scripted) as client:
        with pytest.raises(ValueError):
            await within(client.sendmail(sender, recipients, BODY, **options))
        assert client.is_connected  # refused before anything was written
        outcomes = await within(
            client.send_messages([(SENDER, [RECIPIENT], BODY), (sender, recipients, BODY)])
        )
        assert outcomes[0] == ({}, "2.0.0 queued")
        if options:  # the batch items carry no options: the second message is fine
            assert outcomes[1] == ({}, "2.0.0 queued")
        else:
            assert isinstance(outcomes[1], ValueError)
    await scripted.wait_done()
    raw = scripted.received[0]
    assert b"evil" not in raw
    assert b"\x00" not in raw
    assert server.verbs.count(b"MAIL") == (1 if not options else 2)


# =========================================================================== big messages


def _big_message(size: int) -> tuple[bytes, int]:
    """About ``size`` bytes of CRLF text where every 50th line starts with a dot (and
    some lines are a lone dot); returns it and the number of lines needing a stuffed dot."""
    lines = []
    stuffed = 0
    total = 0
    number = 0
    while total < size:
        if number % 500 == 0:
            line = b"."
            stuffed += 1
        elif number % 50 == 0:
            line = b".dotted line %d " % number + b"d" * 50
            stuffed += 1
        else:
            line = b"line %07d " % number + b"x" * 64
        lines.append(line)
        total += len(line) + 2
        number += 1
    return b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n", stuffed


def _unstuff(data: bytes) -> bytes:
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in data.split(b"\r\n"))


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_ten_megabyte_message_arrives_intact_and_dot_stuffed(
    make_scripted_server: MakeServer, pipelining: bool
) -> None:
    message, stuffed = _big_message(10 << 20)
    server = GroupServer(extensions=extensions(pipelining))
    scripted = make_scripted_server(server)
    async with client_for(scripted, timeout=20) as client:
        assert await within(client.sendmail(SENDER, [RECIPIENT], message), 20) == (
            {},
            "2.0.0 queued",
        )
    [received] = server.data
    assert len(received) == len(message) + stuffed
    assert received.count(b"\r\n") == message.count(b"\r\n")
    assert received.count(b"\r\n..") == stuffed
    assert _unstuff(received) == message


async def test_big_message_server_closing_after_354_is_not_an_unknown_outcome(
    make_scripted_server: MakeServer,
) -> None:
    # BUG: the server answers DATA with 354 and hangs up without reading. Most of the
    # 16 MB content (and so the terminating dot) is still in the client's send buffer when
    # the connection dies, so the server certainly did not accept the message; the client
    # nevertheless reports SMTPUnknownOutcomeError ("may or may not have been accepted").
    message, _ = _big_message(16 << 20)
    server = GroupServer(
        on_command=lambda s, i: then_close(b"354 go ahead\r\n") if i.verb == b"DATA" else None
    )
    scripted = make_scripted_server(server)
    client = client_for(scripted)
    await within(client.connect())
    with pytest.raises(SMTPServerDisconnected) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], message))
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)


async def test_big_message_server_stops_reading_is_not_an_unknown_outcome(
    make_scripted_server: MakeServer,
) -> None:
    # BUG: same with a server that stops reading after 354: the send buffer never drains,
    # the dot never leaves the client, yet the timeout is reported as
    # SMTPUnknownOutcomeTimeoutError.
    message, _ = _big_message(16 << 20)
    server = GroupServer(
        on_command=lambda s, i: (
            Action(b"354 go ahead\r\n", "freeze", seconds=5) if i.verb == b"DATA" else None
        )
    )
    scripted = make_scripted_server(server)
    client = client_for(scripted, timeout=SHORT)
    await within(client.connect())
    with pytest.raises(SMTPTimeoutError) as caught:
        await within(client.sendmail(SENDER, [RECIPIENT], message), 3)
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert_closed(client)
