"""SMTPPool against real servers on loopback.

Everything is counted at the server: connections (and the most open at once), EHLO, AUTH,
STARTTLS, NOOP and QUIT commands, and the messages that arrived. The pool's decisions alone
are tested in test_pool_planner.py; here they meet sockets, timeouts and cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from smtp_backends import (
    ConnectionConfig,
    SMTPConnectError,
    SMTPException,
    SMTPPool,
    SMTPPoolClosedError,
    SMTPPoolTimeoutError,
    SMTPRecipientsRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
    local_hostname,
)
from smtp_backends.pool_planner import EntryState
from tests.scripted import CLOSE, Action, GroupServer, Item, then_close
from tests.servers import (
    PASSWORD,
    USERNAME,
    RecordingHandler,
    ScriptedServer,
    SMTPServer,
    free_port,
)

TIMEOUT = 5.0


# --------------------------------------------------------------------------- helpers


class CountingHandler(RecordingHandler):
    """RecordingHandler that also records the most connections open at once, can hold the
    reply to DATA until ``gate`` is set, and can take its time answering QUIT."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.peak = 0
        self.gate = threading.Event()
        self.gate.set()
        #: Set when a DATA is being handled (the client is waiting for its reply).
        self.in_data = threading.Event()
        #: DATA replies being held right now.
        self.holding = 0
        self.quit_delay = 0.0

    def _connection_opened(self) -> int:
        number = super()._connection_opened()
        with self._lock:
            self.peak = max(self.peak, self.open_connections)
        return number

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        self.holding += 1
        try:
            while not self.gate.is_set():  # noqa: ASYNC110 - set from the test's thread
                await asyncio.sleep(0.005)
        finally:
            self.holding -= 1
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        if self.quit_delay:
            await asyncio.sleep(self.quit_delay)
        return await super().handle_QUIT(server, session, envelope)


@pytest.fixture
def server(make_smtpd: Callable[..., SMTPServer]) -> Iterator[SMTPServer]:
    """An aiosmtpd server (PIPELINING advertised) with a :class:`CountingHandler`."""
    handler = CountingHandler()
    smtpd = make_smtpd(handler=handler)
    yield smtpd
    handler.gate.set()  # let a held DATA finish before the server stops


def handler_of(server: SMTPServer) -> CountingHandler:
    handler = server.handler
    assert isinstance(handler, CountingHandler)
    return handler


def message(subject: str, to: str = "bob@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"Body of {subject}.\n")
    return msg


def raw(subject: str) -> bytes:
    return f"Subject: {subject}\r\n\r\nBody of {subject}.\r\n".encode()


def subjects(server: SMTPServer) -> list[str]:
    return [str(m.message["Subject"]) for m in server.messages]


def pool_for(server: SMTPServer | ScriptedServer, **options: Any) -> SMTPPool:
    options.setdefault("timeout", TIMEOUT)
    host, port = server.address
    return SMTPPool(hostname=host, port=port, **options)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def per_connection(
    make_scripted_server: Callable[..., ScriptedServer],
    on_command: Callable[[int, GroupServer, Item], Any],
) -> tuple[ScriptedServer, list[GroupServer]]:
    """A scripted server running a fresh GroupServer for each connection.

    ``on_command(connection_number, group_server, item)`` (1-based connection number)
    chooses replies; None means the default reply. Returns the server and the list of
    GroupServers, one per connection, in order of acceptance.
    """
    groups: list[GroupServer] = []

    async def handler(reader: Any, writer: Any) -> None:
        number = len(groups) + 1
        group = GroupServer(on_command=lambda g, item: on_command(number, g, item))
        groups.append(group)
        await group(reader, writer)

    return make_scripted_server(handler), groups


def data_blocks(groups: list[GroupServer]) -> list[bytes]:
    """Every message data block the scripted server received, on all connections."""
    return [block for group in groups for block in group.data]


@contextlib.asynccontextmanager
async def held(server: SMTPServer) -> AsyncIterator[CountingHandler]:
    """Hold the server's reply to DATA until the block ends."""
    handler = handler_of(server)
    handler.in_data.clear()
    handler.gate.clear()
    try:
        yield handler
    finally:
        handler.gate.set()


# --------------------------------------------------------------------------- construction


def test_constructor_validates_limits_and_connection_options() -> None:
    with pytest.raises(ValueError):
        SMTPPool(hostname="localhost", max_connections=0)
    with pytest.raises(TypeError):
        SMTPPool(hostname="localhost", max_connections="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SMTPPool(hostname="localhost", max_messages_per_connection=0)
    with pytest.raises(ValueError):
        SMTPPool(hostname="localhost", idle_timeout=0)
    with pytest.raises(ValueError, match="start_tls and use_tls"):
        SMTPPool(hostname="localhost", use_tls=True, start_tls=True)
    with pytest.raises(TypeError):
        SMTPPool(hostname="localhost", no_such_option=1)


def test_defaults_and_acquire_timeout() -> None:
    pool = SMTPPool(hostname="mail.example.com", port=2525, timeout=7)
    assert pool.max_connections == 8
    assert pool.acquire_timeout == 7
    assert pool.config.hostname == "mail.example.com"
    assert pool.config.port == 2525
    assert not pool.closed
    assert SMTPPool(hostname="x", timeout=7, acquire_timeout=0.5).acquire_timeout == 0.5
    assert "mail.example.com:2525" in repr(pool)
    assert "max=8" in repr(pool)


def test_from_config_uses_the_validated_config() -> None:
    config = ConnectionConfig(hostname="mail.example.com", port=2525, timeout=3)
    pool = SMTPPool.from_config(config, max_connections=2)
    assert pool.config is config
    assert pool.max_connections == 2
    assert pool.acquire_timeout == 3
    assert SMTPPool.from_config(config, acquire_timeout=1).acquire_timeout == 1


async def test_nothing_connects_until_the_first_send(server: SMTPServer) -> None:
    async with pool_for(server) as pool:
        await asyncio.sleep(0.05)
        assert handler_of(server).connections == 0
        assert pool.connections_opened == 0
        await pool.send_message(message("first"))
        assert handler_of(server).connections == 1
    assert subjects(server) == ["first"]


async def test_connections_opened_together_look_the_host_name_up_once(
    server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh pool opens its connections at once: they share one FQDN lookup
    # (one thread), instead of each starting its own before its EHLO.
    lookups: list[str] = []

    def getfqdn(name: str = "") -> str:
        lookups.append(name)
        time.sleep(0.05)  # a slow resolver: every connection asks while it runs
        return "client.example.com"

    monkeypatch.setattr(local_hostname, "_fqdn", None)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    async with pool_for(server, max_connections=4) as pool:
        outcomes = await pool.send_messages(
            [("alice@example.com", ["bob@example.com"], raw(f"m{n}")) for n in range(8)]
        )
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert pool.connections_opened == 4
    assert lookups == [""]
    assert {m.helo_name for m in server.messages} == {"client.example.com"}


# --------------------------------------------------------------------------- reuse


async def test_sequential_sends_reuse_one_connection(server: SMTPServer) -> None:
    async with pool_for(server) as pool:
        for number in range(5):
            errors, text = await pool.send_message(message(f"m{number}"))
            assert errors == {}
            assert text.startswith("2.0.0 OK")
        errors, _ = await pool.sendmail("alice@example.com", ["carol@example.com"], raw("raw"))
        assert errors == {}
    handler = handler_of(server)
    assert handler.connections == 1
    assert pool.connections_opened == 1
    assert subjects(server) == ["m0", "m1", "m2", "m3", "m4", "raw"]
    assert {m.connection_id for m in server.messages} == {1}
    assert handler.commands.count("EHLO") == 1
    assert handler.commands.count("QUIT") == 1


async def test_ehlo_and_auth_happen_once_per_connection(smtpd_auth: SMTPServer) -> None:
    pool = pool_for(smtpd_auth, username=USERNAME, password=PASSWORD)
    async with pool:
        for number in range(4):
            await pool.send_message(message(f"auth-{number}"))
    commands = smtpd_auth.handler.commands
    assert smtpd_auth.handler.connections == 1
    assert commands.count("EHLO") == 1
    assert commands.count("AUTH") == 1
    assert [m.auth_login for m in smtpd_auth.messages] == [USERNAME] * 4


@pytest.mark.usefixtures("settle_client_sockets")
async def test_starttls_and_auth_happen_once_per_connection(
    smtpd_starttls: SMTPServer, client_tls_context: Any
) -> None:
    pool = pool_for(
        smtpd_starttls, username=USERNAME, password=PASSWORD, tls_context=client_tls_context
    )
    async with pool:
        for number in range(3):
            await pool.send_message(message(f"tls-{number}"))
    commands = smtpd_starttls.handler.commands
    assert smtpd_starttls.handler.connections == 1
    assert commands.count("STARTTLS") == 1
    assert commands.count("EHLO") == 2  # before and after the TLS upgrade
    assert commands.count("AUTH") == 1
    assert all(m.tls for m in smtpd_starttls.messages)
    assert len(smtpd_starttls.messages) == 3


async def test_max_messages_per_connection_reconnects(server: SMTPServer) -> None:
    handler = handler_of(server)
    async with pool_for(server, max_messages_per_connection=2) as pool:
        for number in range(5):
            await pool.send_message(message(f"m{number}"))
        # Connections 1 and 2 carried their two messages and were QUIT.
        assert await wait_until(lambda: handler.commands.count("QUIT") == 2)
    assert handler.connections == 3
    assert [m.connection_id for m in server.messages] == [1, 1, 2, 2, 3]
    assert handler.commands.count("QUIT") == 3


async def test_failed_transactions_do_not_count_towards_the_message_limit(
    server: SMTPServer,
) -> None:
    async with pool_for(server, max_messages_per_connection=2) as pool:
        with pytest.raises(SMTPRecipientsRefused):
            await pool.send_message(message("refused", to="refuse-1@example.com"))
        await pool.send_message(message("a"))
        await pool.send_message(message("b"))
    assert handler_of(server).connections == 1
    assert subjects(server) == ["a", "b"]


async def test_idle_connection_is_quit_after_idle_timeout(server: SMTPServer) -> None:
    handler = handler_of(server)
    # Long enough that a loaded machine's pause between the send and the first check
    # cannot pass for idleness.
    async with pool_for(server, idle_timeout=1.0) as pool:
        await pool.send_message(message("before"))
        assert handler.commands.count("QUIT") == 0
        assert await wait_until(lambda: handler.commands.count("QUIT") == 1, timeout=6)
        assert await wait_until(lambda: handler.open_connections == 0)
        # The server may see the close a moment before the pool's QUIT task ends.
        assert await wait_until(lambda: pool._planner.entries == [])
        await pool.send_message(message("after"))
    assert handler.connections == 2
    assert [m.connection_id for m in server.messages] == [1, 2]


async def test_connection_is_checked_with_noop_after_check_after(server: SMTPServer) -> None:
    handler = handler_of(server)
    async with pool_for(server, check_after=0) as pool:
        for number in range(3):
            await pool.send_message(message(f"m{number}"))
    assert handler.commands.count("NOOP") == 2  # before each reuse, not before the first
    assert handler.connections == 1


async def test_recently_used_connection_is_not_checked(server: SMTPServer) -> None:
    handler = handler_of(server)
    async with pool_for(server, check_after=60) as pool:
        for number in range(3):
            await pool.send_message(message(f"m{number}"))
    assert "NOOP" not in handler.commands
    assert handler.connections == 1


@pytest.mark.parametrize("answer", [CLOSE, then_close(b"421 4.3.2 shutting down\r\n")])
async def test_connection_failing_its_check_is_replaced(
    make_scripted_server: Callable[..., ScriptedServer], answer: Action
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if item.verb == b"NOOP":
            return answer
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=0) as pool:
        await pool.send_message(message("one"))
        await pool.send_message(message("two"))
    assert len(groups) == 2
    assert groups[0].verbs == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"<data>", b"NOOP"]
    assert groups[1].verbs == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"<data>", b"QUIT"]
    assert len(data_blocks(groups)) == 2
    assert pool.connections_opened == 2


async def test_connection_closed_by_the_server_while_idle_is_replaced(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    # aiosmtpd closes a connection that stays silent for `timeout` seconds.
    smtpd = make_smtpd(timeout=0.3)
    async with pool_for(smtpd, check_after=60) as pool:
        await pool.send_message(message("before"))
        assert await wait_until(lambda: smtpd.handler.open_connections == 0, timeout=3)
        await pool.send_message(message("after"))
    assert smtpd.handler.connections == 2
    assert [m.connection_id for m in smtpd.messages] == [1, 2]
    assert [str(m.message["Subject"]) for m in smtpd.messages] == ["before", "after"]


async def test_reused_connection_lost_before_the_message_is_retried_once(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # The first connection carries one message, then the server drops it as the second
    # transaction starts: nothing of the second message was accepted, so the pool sends
    # it again on a new connection.
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.verb == b"MAIL" and group.mails == 2:
            return CLOSE
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=60) as pool:
        await pool.send_message(message("one"))
        errors, _ = await pool.send_message(message("two"))
        assert errors == {}
    assert len(groups) == 2
    delivered = data_blocks(groups)
    assert len(delivered) == 2
    assert b"Subject: two" in delivered[1]
    assert groups[1].verbs[:5] == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"<data>"]


async def test_fresh_connection_lost_before_the_message_is_not_retried(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        return CLOSE if item.verb == b"MAIL" else None

    scripted, groups = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted) as pool:
        with pytest.raises(SMTPServerDisconnected) as caught:
            await pool.send_message(message("lost"))
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert len(groups) == 1
    assert data_blocks(groups) == []


async def test_retry_fails_too_the_error_is_raised(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if item.verb == b"MAIL" and (connection > 1 or group.mails == 2):
            return CLOSE
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=60) as pool:
        await pool.send_message(message("one"))
        with pytest.raises(SMTPServerDisconnected):
            await pool.send_message(message("two"))
    assert len(groups) == 2  # one retry, not more
    assert len(data_blocks(groups)) == 1


async def test_lost_after_the_dot_is_unknown_and_never_resent(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        # The second message's content arrives; the server goes away without a reply.
        if item.kind == "data" and group.mails == 2:
            return CLOSE
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    async with pool_for(scripted, check_after=60) as pool:
        await pool.send_message(message("one"))
        with pytest.raises(SMTPUnknownOutcomeError):
            await pool.send_message(message("two"))
        await pool.send_message(message("three"))
    delivered = data_blocks(groups)
    assert sum(b"Subject: two" in block for block in delivered) == 1
    assert len(delivered) == 3
    assert len(groups) == 2


# --------------------------------------------------------------------------- bounds and order


async def test_concurrent_sends_never_exceed_max_connections(server: SMTPServer) -> None:
    handler = handler_of(server)
    async with pool_for(server, max_connections=3) as pool:
        results = await asyncio.gather(*(pool.send_message(message(f"c{n}")) for n in range(40)))
    assert all(errors == {} for errors, _ in results)
    assert handler.peak == 3
    assert handler.connections == 3
    assert sorted(subjects(server)) == sorted(f"c{n}" for n in range(40))


async def test_waiting_callers_are_served_in_order(server: SMTPServer) -> None:
    finished: list[str] = []

    async def send(name: str) -> None:
        await pool.send_message(message(name))
        finished.append(name)

    async with pool_for(server, max_connections=1) as pool:
        async with held(server) as handler:
            first = asyncio.create_task(send("first"))
            assert await wait_until(handler.in_data.is_set)
            tasks = []
            for name in ["w1", "w2", "w3", "w4", "w5"]:
                tasks.append(asyncio.create_task(send(name)))
                await asyncio.sleep(0.01)
            assert len(pool._planner.waiting) == 5
        await asyncio.wait_for(asyncio.gather(first, *tasks), TIMEOUT)
    assert finished == ["first", "w1", "w2", "w3", "w4", "w5"]
    assert subjects(server) == finished


async def test_bounded_wait_raises_pool_timeout_error(server: SMTPServer) -> None:
    async with pool_for(server, max_connections=1, acquire_timeout=0.1) as pool:
        async with held(server) as handler:
            busy = asyncio.create_task(pool.send_message(message("busy")))
            assert await wait_until(handler.in_data.is_set)
            started = time.monotonic()
            with pytest.raises(SMTPPoolTimeoutError, match="No connection became free") as caught:
                await pool.send_message(message("late"))
            assert time.monotonic() - started < 2
            assert isinstance(caught.value, SMTPTimeoutError)
            assert not pool._planner.waiting
        await asyncio.wait_for(busy, TIMEOUT)
        # The timed-out caller left no trace: the one connection is free again.
        await pool.send_message(message("after"))
    assert subjects(server) == ["busy", "after"]
    assert handler.connections == 1


async def test_cancelled_waiter_leaves_the_queue(server: SMTPServer) -> None:
    async with pool_for(server, max_connections=1) as pool:
        async with held(server) as handler:
            busy = asyncio.create_task(pool.send_message(message("busy")))
            assert await wait_until(handler.in_data.is_set)
            cancelled = asyncio.create_task(pool.send_message(message("cancelled")))
            behind = asyncio.create_task(pool.send_message(message("behind")))
            await asyncio.sleep(0.02)
            assert len(pool._planner.waiting) == 2
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert len(pool._planner.waiting) == 1
        await asyncio.wait_for(asyncio.gather(busy, behind), TIMEOUT)
    assert subjects(server) == ["busy", "behind"]
    assert handler.connections == 1


async def test_waiter_cancelled_after_being_handed_a_connection_gives_it_back(
    server: SMTPServer,
) -> None:
    async with pool_for(server, max_connections=1, acquire_timeout=1) as pool:
        async with held(server) as handler:
            waiter_box: list[asyncio.Task[Any]] = []

            async def busy_then_cancel_the_waiter() -> None:
                await pool.send_message(message("busy"))
                # The release above handed the connection to the waiter, which has not
                # run yet: cancel it now.
                waiter_box[0].cancel()

            busy = asyncio.create_task(busy_then_cancel_the_waiter())
            assert await wait_until(handler.in_data.is_set)
            waiter_box.append(asyncio.create_task(pool.send_message(message("never"))))
            await asyncio.sleep(0.02)
        await asyncio.wait_for(busy, TIMEOUT)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter_box[0], TIMEOUT)
        assert [e.state for e in pool._planner.entries] == [EntryState.IDLE]
        await pool.send_message(message("after"))
    assert subjects(server) == ["busy", "after"]
    assert handler.connections == 1


async def test_cancelled_before_any_io_sends_nothing(server: SMTPServer) -> None:
    # The first caller of an empty pool is handed a (new) connection at once; cancelling
    # it right after it started must end it cancelled, with nothing opened or sent.
    async with pool_for(server) as pool:
        task = asyncio.create_task(pool.send_message(message("cancelled")))
        await asyncio.sleep(0)  # the task asked for a connection and got one
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool._planner.entries == []
        await pool.send_message(message("after"))
    assert subjects(server) == ["after"]


async def test_cancelled_mid_send_the_connection_is_not_reused(server: SMTPServer) -> None:
    async with pool_for(server, max_connections=1) as pool:
        async with held(server) as handler:
            task = asyncio.create_task(pool.send_message(message("in-doubt")))
            assert await wait_until(handler.in_data.is_set)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool._planner.entries == []
        await pool.send_message(message("after"))
    assert handler.connections == 2
    assert pool.connections_opened == 2
    assert subjects(server).count("after") == 1
    assert subjects(server).count("in-doubt") <= 1
    assert server.messages[-1].connection_id == 2


async def test_timeout_mid_send_the_connection_is_not_reused(server: SMTPServer) -> None:
    async with pool_for(server) as pool:
        await pool.send_message(message("before"))
        async with held(server) as handler:
            # The reply to the end of data never comes in time: outcome unknown.
            with pytest.raises(SMTPUnknownOutcomeTimeoutError):
                await pool.send_message(message("slow"), timeout=1.0)
            assert handler.in_data.is_set()
            assert pool._planner.entries == []
        await pool.send_message(message("after"))
    assert handler.connections == 2
    assert [m.connection_id for m in server.messages if m.message["Subject"] != "slow"] == [1, 2]
    assert subjects(server).count("slow") <= 1


async def test_cancelled_while_connecting_frees_the_slot(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    greeted = threading.Event()

    async def slow_greeting(reader: Any, writer: Any) -> None:
        if not greeted.is_set():  # the first connection stalls before its greeting
            greeted.set()
            await reader.read(65536)
            return
        await GroupServer()(reader, writer)

    scripted = make_scripted_server(slow_greeting)
    async with pool_for(scripted, max_connections=1) as pool:
        task = asyncio.create_task(pool.send_message(message("cancelled")))
        assert await wait_until(greeted.is_set)
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool._planner.entries == []
        await asyncio.wait_for(pool.send_message(message("after")), TIMEOUT)
    assert scripted.connection_count == 2
    assert pool.connections_opened == 1


async def test_bound_under_concurrency_and_cancellation(server: SMTPServer) -> None:
    handler = handler_of(server)
    async with pool_for(server, max_connections=3, acquire_timeout=TIMEOUT) as pool:
        async with held(server):
            tasks = [asyncio.create_task(pool.send_message(message(f"s{n}"))) for n in range(30)]
            assert await wait_until(lambda: len(pool._planner.waiting) == 27)
            assert await wait_until(lambda: handler.holding == 3)
            # Two of the three senders mid-send, and every fourth waiter.
            doomed = {0, 1, *range(4, 30, 4)}
            for n in doomed:
                tasks[n].cancel()
            await asyncio.sleep(0.05)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), TIMEOUT * 2
        )
        assert len(pool._planner.entries) <= 3
        assert not pool._planner.waiting
        # Nothing leaked: the pool still serves three callers at once.
        await asyncio.wait_for(
            asyncio.gather(*(pool.send_message(message(f"after{n}")) for n in range(3))),
            TIMEOUT,
        )
    received = subjects(server)
    for n, outcome in enumerate(outcomes):
        if n in doomed and n >= 3:
            assert isinstance(outcome, asyncio.CancelledError), (n, outcome)
            assert f"s{n}" not in received
        elif n in doomed:
            assert isinstance(outcome, asyncio.CancelledError), (n, outcome)
            assert received.count(f"s{n}") <= 1
        else:
            assert not isinstance(outcome, BaseException), (n, outcome)
            assert received.count(f"s{n}") == 1
    assert handler.peak <= 3


async def test_connection_being_quit_counts_against_the_limit(server: SMTPServer) -> None:
    # A connection that reached max_messages_per_connection is QUIT; while the server takes
    # its time answering, that connection is still open and the pool is at its limit.
    handler = handler_of(server)
    handler.quit_delay = 0.3
    async with pool_for(server, max_connections=1, max_messages_per_connection=1) as pool:
        await pool.send_message(message("one"))
        await pool.send_message(message("two"))
    assert subjects(server) == ["one", "two"]
    assert handler.peak == 1


# --------------------------------------------------------------------------- closing


async def test_close_quits_every_connection_and_refuses_later_use(server: SMTPServer) -> None:
    handler = handler_of(server)
    pool = pool_for(server, max_connections=3)
    async with pool:
        await asyncio.gather(*(pool.send_message(message(f"m{n}")) for n in range(6)))
        assert handler.connections == 3
        assert "QUIT" not in handler.commands
    assert pool.closed
    assert handler.commands.count("QUIT") == 3
    assert await wait_until(lambda: handler.open_connections == 0)
    assert "closed" in repr(pool)
    with pytest.raises(SMTPPoolClosedError):
        await pool.send_message(message("late"))
    with pytest.raises(SMTPPoolClosedError):
        await pool.sendmail("alice@example.com", ["bob@example.com"], raw("late"))
    await pool.close()  # again: nothing happens
    assert handler.commands.count("QUIT") == 3
    assert len(server.messages) == 6


async def test_send_messages_on_a_closed_pool_raises(server: SMTPServer) -> None:
    pool = pool_for(server)
    await pool.close()
    with pytest.raises(SMTPPoolClosedError):
        await pool.send_messages([message("late")])
    assert handler_of(server).connections == 0


async def test_close_fails_waiters_and_quits_the_busy_connection_when_released(
    server: SMTPServer,
) -> None:
    pool = pool_for(server, max_connections=1)
    async with held(server) as handler:
        busy = asyncio.create_task(pool.send_message(message("busy")))
        assert await wait_until(handler.in_data.is_set)
        waiters = [asyncio.create_task(pool.send_message(message(f"w{n}"))) for n in range(2)]
        await asyncio.sleep(0.02)
        assert "2 waiting" in repr(pool)
        closing = asyncio.create_task(pool.close())
        for waiter in waiters:
            with pytest.raises(SMTPPoolClosedError):
                await asyncio.wait_for(waiter, 1)
        await asyncio.sleep(0.05)
        assert not closing.done()  # close() waits for the send in progress
    errors, _ = await asyncio.wait_for(busy, TIMEOUT)  # the send in progress completes...
    assert errors == {}
    await asyncio.wait_for(closing, TIMEOUT)  # ...and its connection is QUIT once released
    assert handler.commands.count("QUIT") == 1
    assert subjects(server) == ["busy"]


async def test_close_before_any_use_and_close_twice() -> None:
    pool = SMTPPool(hostname="127.0.0.1", port=free_port())
    await pool.close()
    await pool.close()
    assert pool.closed


async def test_failed_quit_still_closes_the_connection(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        return b"500 5.5.1 no quitting\r\n" if item.verb == b"QUIT" else None

    scripted, groups = per_connection(make_scripted_server, on_command)
    pool = pool_for(scripted)
    async with pool:
        await pool.send_message(message("one"))
    await scripted.wait_done()
    assert groups[0].verbs[-1] == b"QUIT"


async def test_repr_shows_connections_and_their_states(server: SMTPServer) -> None:
    async with pool_for(server, max_connections=2) as pool:
        assert "[]" in repr(pool)
        await pool.send_message(message("one"))
        assert "<#1 idle, 1 sent>" in repr(pool)
        assert "0 waiting" in repr(pool)
        async with held(server) as handler:
            task = asyncio.create_task(pool.send_message(message("two")))
            assert await wait_until(handler.in_data.is_set)
            assert "<#1 active, 1 sent>" in repr(pool)
        await asyncio.wait_for(task, TIMEOUT)
        assert "<#1 idle, 2 sent>" in repr(pool)
    assert "closed" in repr(pool)


async def test_pool_belongs_to_one_event_loop(server: SMTPServer) -> None:
    pool = pool_for(server)
    await pool.send_message(message("here"))

    def use_from_another_loop() -> None:
        asyncio.run(pool.send_message(message("elsewhere")))

    with pytest.raises(RuntimeError, match="another event loop"):
        await asyncio.get_running_loop().run_in_executor(None, use_from_another_loop)
    await pool.close()
    assert subjects(server) == ["here"]


# --------------------------------------------------------------------------- send_messages


async def test_send_messages_spreads_a_batch_over_the_pool(server: SMTPServer) -> None:
    handler = handler_of(server)
    progress: list[tuple[int, int]] = []
    batch = [message(f"b{n:03}") for n in range(200)]
    async with pool_for(server, max_connections=4) as pool:
        outcomes = await asyncio.wait_for(
            pool.send_messages(
                batch, on_progress=lambda done, total: progress.append((done, total))
            ),
            15,
        )
    assert len(outcomes) == 200
    assert all(isinstance(outcome, tuple) and outcome[0] == {} for outcome in outcomes)
    assert sorted(subjects(server)) == [f"b{n:03}" for n in range(200)]
    assert progress == [(done, 200) for done in range(1, 201)]
    assert handler.peak <= 4
    assert handler.connections == 4
    assert len({m.connection_id for m in server.messages}) == 4


async def test_send_messages_reports_each_item_in_input_order(server: SMTPServer) -> None:
    items: list[Any] = []
    for n in range(40):
        if n % 10 == 3:
            items.append(("bad\r\nsender@example.com", ["bob@example.com"], raw(f"bad{n}")))
        elif n % 10 == 7:
            items.append(message(f"refused{n}", to=f"refuse-{n}@example.com"))
        elif n == 20:
            items.append(42)
        else:
            items.append(message(f"ok{n}"))
    async with pool_for(server, max_connections=3) as pool:
        outcomes = await pool.send_messages(items)
    assert len(outcomes) == 40
    for n, outcome in enumerate(outcomes):
        if n % 10 == 3:
            assert isinstance(outcome, ValueError), (n, outcome)
        elif n % 10 == 7:
            assert isinstance(outcome, SMTPRecipientsRefused), (n, outcome)
        elif n == 20:
            assert isinstance(outcome, TypeError), (n, outcome)
        else:
            assert isinstance(outcome, tuple) and outcome[0] == {}, (n, outcome)
    expected = [f"ok{n}" for n in range(40) if n % 10 not in (3, 7) and n != 20]
    assert sorted(subjects(server)) == sorted(expected)


async def test_send_messages_empty_batch() -> None:
    pool = SMTPPool(hostname="127.0.0.1", port=free_port())
    assert await pool.send_messages([]) == []
    await pool.close()


async def test_send_messages_retries_what_a_dropped_connection_did_not_send(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # The first connection answers its third message, then drops: the messages behind it
    # were not sent and go out on another connection; nothing arrives twice.
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.kind == "data" and len(group.data) == 3:
            return then_close(b"250 2.0.0 queued\r\n")
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    batch = [("alice@example.com", ["bob@example.com"], raw(f"d{n:02}")) for n in range(12)]
    async with pool_for(scripted, max_connections=1) as pool:
        outcomes = await asyncio.wait_for(pool.send_messages(batch), TIMEOUT)
    assert all(isinstance(o, tuple) and o[0] == {} for o in outcomes), outcomes
    delivered = data_blocks(groups)
    assert len(groups) == 2
    assert len(groups[0].data) == 3
    assert sorted(delivered) == sorted(raw(f"d{n:02}") for n in range(12))


async def test_send_messages_never_resends_a_message_whose_outcome_is_unknown(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.kind == "data" and len(group.data) == 3:
            return CLOSE  # the third message arrived; its reply never leaves
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    batch = [("alice@example.com", ["bob@example.com"], raw(f"d{n:02}")) for n in range(8)]
    async with pool_for(scripted, max_connections=2) as pool:
        outcomes = await asyncio.wait_for(pool.send_messages(batch), TIMEOUT)
    delivered = data_blocks(groups)
    unknown = [n for n, o in enumerate(outcomes) if isinstance(o, SMTPUnknownOutcomeError)]
    assert len(unknown) == 1
    assert all(isinstance(o, tuple) for n, o in enumerate(outcomes) if n not in unknown)
    assert sorted(delivered) == sorted(raw(f"d{n:02}") for n in range(8))


async def test_send_messages_to_an_unreachable_server_fails_every_item() -> None:
    progress: list[tuple[int, int]] = []
    pool = SMTPPool(hostname="127.0.0.1", port=free_port(), timeout=2, max_connections=3)
    async with pool:
        outcomes = await asyncio.wait_for(
            pool.send_messages(
                [message(f"m{n}") for n in range(20)],
                on_progress=lambda done, total: progress.append((done, total)),
            ),
            TIMEOUT,
        )
    assert len(outcomes) == 20
    assert all(isinstance(outcome, SMTPConnectError) for outcome in outcomes)
    assert progress[-1] == (20, 20)
    assert len(progress) == 20
    assert pool._planner.entries == []


async def test_sendmail_to_an_unreachable_server_raises_connect_error() -> None:
    async with SMTPPool(hostname="127.0.0.1", port=free_port(), timeout=2) as pool:
        with pytest.raises(SMTPConnectError):
            await pool.sendmail("alice@example.com", ["bob@example.com"], raw("x"))
        assert pool._planner.entries == []
        with pytest.raises(SMTPConnectError):
            await pool.send_message(message("y"))


async def test_send_messages_when_the_server_drops_every_connection_after_the_greeting(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # start_tls=False: connecting reads only the greeting; the batch's EHLO finds the
    # connection gone. Nothing of any message ever leaves, so no attempt is charged: the
    # batch opens a new connection max_reconnects (3) times, then reports; nothing hangs.
    scripted = make_scripted_server([("send", b"220 hi\r\n"), ("close",)])
    pool = pool_for(scripted, start_tls=False, max_connections=1)
    async with pool:
        outcomes = await asyncio.wait_for(
            pool.send_messages([message(f"m{n}") for n in range(3)]), TIMEOUT
        )
    assert all(isinstance(o, SMTPServerDisconnected) for o in outcomes), outcomes
    # The three messages go as one chunk: one connection, then three reconnects.
    assert scripted.connection_count == 4


async def test_send_messages_goes_on_when_only_some_connections_can_be_opened(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # Like an MTA limiting connections per client ("421 too many connections"): only one
    # connection at a time is accepted. The batch must still go out over that one; a
    # second worker failing to connect is no reason to fail messages the first can send.
    open_now = [0]

    async def one_at_a_time(reader: Any, writer: Any) -> None:
        if open_now[0]:
            await writer.send(b"421 4.7.0 too many connections from your host\r\n")
            return
        open_now[0] += 1
        try:
            await GroupServer()(reader, writer)
        finally:
            open_now[0] -= 1

    scripted = make_scripted_server(one_at_a_time)
    batch = [("alice@example.com", ["bob@example.com"], raw(f"d{n:02}")) for n in range(30)]
    async with pool_for(scripted, max_connections=3) as pool:
        outcomes = await asyncio.wait_for(pool.send_messages(batch), TIMEOUT)
    failed = [(n, o) for n, o in enumerate(outcomes) if not isinstance(o, tuple)]
    assert failed == []


async def test_bad_arguments_leave_the_connection_in_the_pool(server: SMTPServer) -> None:
    async with pool_for(server) as pool:
        await pool.send_message(message("one"))
        with pytest.raises(ValueError):
            await pool.sendmail("bad\r\nRCPT TO:<x@example.com>", ["bob@example.com"], b"x")
        with pytest.raises(ValueError):
            await pool.send_message(EmailMessage())  # no sender, no recipients
        await pool.send_message(message("two"))
    assert handler_of(server).connections == 1
    assert subjects(server) == ["one", "two"]


async def test_send_messages_shares_the_pool_with_single_sends(server: SMTPServer) -> None:
    handler = handler_of(server)
    async with pool_for(server, max_connections=2) as pool:
        batch_task = pool.send_messages([message(f"b{n}") for n in range(30)])
        singles = [pool.send_message(message(f"s{n}")) for n in range(5)]
        outcomes, *single_results = await asyncio.wait_for(
            asyncio.gather(batch_task, *singles), TIMEOUT
        )
    assert all(isinstance(o, tuple) for o in outcomes)
    assert all(errors == {} for errors, _ in single_results)
    assert len(server.messages) == 35
    assert handler.peak <= 2
    assert handler.connections == 2


def test_errors_are_smtp_exceptions() -> None:
    assert issubclass(SMTPPoolClosedError, SMTPException)
    assert issubclass(SMTPPoolTimeoutError, SMTPTimeoutError)
    assert issubclass(SMTPPoolTimeoutError, TimeoutError)


# --------------------------------------------------------------------------- on_result


async def test_send_messages_on_result_hears_each_final_outcome_once(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # A retried message is told once, with its final outcome; the unknown one once too.
    def on_command(connection: int, group: GroupServer, item: Item) -> Any:
        if connection == 1 and item.kind == "data" and len(group.data) == 2:
            return then_close(b"250 2.0.0 queued\r\n")
        if connection == 2 and item.kind == "data" and len(group.data) == 3:
            return CLOSE
        return None

    scripted, groups = per_connection(make_scripted_server, on_command)
    batch = [("alice@example.com", ["bob@example.com"], raw(f"d{n:02}")) for n in range(9)]
    told: list[tuple[int, Any]] = []
    async with pool_for(scripted, max_connections=1) as pool:
        outcomes = await asyncio.wait_for(
            pool.send_messages(batch, on_result=lambda i, o: told.append((i, o))), TIMEOUT
        )
    assert sorted(index for index, _ in told) == list(range(9))
    assert dict(told) == dict(enumerate(outcomes))
    assert sum(isinstance(o, SMTPUnknownOutcomeError) for o in outcomes) == 1
    # d05.. waited behind a failure twice; never charged an attempt, they go out on a
    # third connection (issue 12): each is told its final outcome, once.
    assert all(isinstance(outcomes[n], tuple) for n in range(5, 9))
    assert sorted(data_blocks(groups)) == [raw(f"d{n:02}") for n in range(9)]
    assert len(groups) == 3


async def test_send_messages_on_result_errors_are_logged_not_fatal(
    server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(index: int, outcome: Any) -> None:
        raise RuntimeError("bookkeeping failed")

    async with pool_for(server, max_connections=2) as pool:
        outcomes = await pool.send_messages([message(f"m{n}") for n in range(4)], on_result=broken)
    assert all(isinstance(o, tuple) for o in outcomes)
    assert "on_result callback failed" in caplog.text
