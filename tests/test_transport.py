"""The asyncio side of a connection, on both loops (asyncio's and uvloop's).

What is tested here: reading into the one reusable buffer (replies split anywhere,
bursts larger than the buffer, the caps), closing on cancellation (a cancelled send and
a cancelled connect leave no socket behind) and the pool counting a connection until its
socket is really gone. Every test runs on each loop (see ``CORE_MODULES`` in conftest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    SMTPPool,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPServerDisconnected,
)
from smtp_backends.protocol.commands import envelope_address
from smtp_backends.protocol.connection import ClientConnection, Command, Phase
from smtp_backends.transport import READ_BUFFER_SIZE, SMTPTransport
from tests.servers import RecordingHandler, ScriptedServer, SMTPServer

TIMEOUT = 5.0
GREETING = b"220 scripted.test ESMTP\r\n"
EHLO = b"250-scripted.test\r\n250 PIPELINING\r\n"


class Lifecycle:
    """Every SMTPTransport's connection_made / connection_lost, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self._ids: dict[int, int] = {}
        # Held so that no id() is reused: a later transport at a freed one's address
        # would otherwise take its number.
        self._seen: list[SMTPTransport] = []

    def number(self, transport: SMTPTransport) -> int:
        if id(transport) not in self._ids:
            self._seen.append(transport)
        return self._ids.setdefault(id(transport), len(self._ids) + 1)

    def made(self) -> list[int]:
        return [n for kind, n in self.events if kind == "made"]

    def lost(self) -> list[int]:
        return [n for kind, n in self.events if kind == "lost"]

    def open_sockets(self) -> list[int]:
        """The transports made, not lost, and not even closing: sockets left open."""
        lost = set(self.lost())
        return [
            n
            for n in self.made()
            if n not in lost
            and (transport := self._seen[n - 1].transport) is not None
            and not transport.is_closing()
        ]


@pytest.fixture
def lifecycle(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lifecycle]:
    """Observes (only) when each client socket is opened and when it is really closed."""
    seen = Lifecycle()
    made, lost = SMTPTransport.connection_made, SMTPTransport.connection_lost

    def connection_made(self: SMTPTransport, transport: Any) -> None:
        seen.events.append(("made", seen.number(self)))
        made(self, transport)

    def connection_lost(self: SMTPTransport, exc: Exception | None) -> None:
        seen.events.append(("lost", seen.number(self)))
        lost(self, exc)

    monkeypatch.setattr(SMTPTransport, "connection_made", connection_made)
    monkeypatch.setattr(SMTPTransport, "connection_lost", connection_lost)
    yield seen


def client_for(server: ScriptedServer | SMTPServer, **options: Any) -> SMTP:
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("start_tls", False)
    return SMTP(hostname=server.host, port=server.port, **options)


# --------------------------------------------------------------------------- reading


async def test_the_loop_hands_its_own_transport_and_reads_into_one_buffer(
    smtpd: SMTPServer, loop_name: str
) -> None:
    async with client_for(smtpd) as client:
        transport = client._transport
        assert transport is not None
        # No assumption on the class (uvloop's TCPTransport is no asyncio.Transport).
        module = type(client.transport).__module__
        assert module.startswith("uvloop" if loop_name == "uvloop" else "asyncio")
        buffer = transport.get_buffer(-1)
        assert len(buffer) == READ_BUFFER_SIZE
        await client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
        await client.noop()
        assert transport.get_buffer(-1) is buffer  # the same buffer for every read
    assert len(smtpd.messages) == 1


async def test_replies_split_at_every_byte_and_bursts_over_the_buffer_size(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # 4,000 RCPT replies (about 120 KiB, more than the read buffer) answer one pipelined
    # group; the greeting and EHLO reply arrive one byte per write.
    count = 4000
    burst = b"".join(b"250 2.1.5 recipient %d ok\r\n" % n for n in range(count))
    assert len(burst) > READ_BUFFER_SIZE

    async def handler(reader: Any, writer: Any) -> None:
        for byte in GREETING:
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.readline()
        for byte in EHLO:
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.readline()  # MAIL
        for _ in range(count):
            await reader.readline()
        await reader.readline()  # DATA
        writer.write(b"250 sender ok\r\n" + burst + b"554 no data today\r\n")
        await writer.drain()
        await reader.readline()  # RSET
        writer.write(b"250 reset\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        await writer.drain()

    scripted = make_scripted_server(handler)
    recipients = [f"r{n}@example.com" for n in range(count)]
    async with client_for(scripted) as client:
        [outcome] = await client.send_messages([("a@example.com", recipients, b"x\r\n")])
    assert not isinstance(outcome, SMTPRecipientsRefused)
    assert "no data today" in str(outcome)


async def test_bytes_handed_to_data_received_parse_as_if_read_into_the_buffer() -> None:
    # The loops read into the buffer (buffer_updated); data_received takes bytes from a
    # loop or caller without buffered reads, a buffer's worth at a time: a reply larger
    # than the buffer, handed over at once, comes out whole.
    connection = ClientConnection(max_reply_size=4 * READ_BUFFER_SIZE)
    transport = SMTPTransport(connection)
    transport.data_received(GREETING)
    assert connection.ready_events == 1
    connection.send(Command.EHLO, b"EHLO client.test\r\n")
    lines = [b"250-extension-%05d" % n + b"x" * 40 for n in range(3000)]
    reply = b"\r\n".join(lines) + b"\r\n250 PIPELINING\r\n"
    assert READ_BUFFER_SIZE < len(reply) < 4 * READ_BUFFER_SIZE
    transport.data_received(reply)
    assert connection.ready_events == 2
    assert connection.next_event() == (Command.GREETING, (220, "scripted.test ESMTP"))
    event = connection.next_event()
    assert event is not None
    command, ehlo = event
    assert command is Command.EHLO and ehlo.code == 250
    assert ehlo.message.split("\n")[-1] == "PIPELINING"
    assert len(ehlo.message.split("\n")) == 3001
    assert connection.phase is Phase.READY
    transport.data_received(b"")  # nothing to parse
    assert connection.ready_events == 0


async def test_a_reply_line_over_the_cap_fails_the_connection(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted = make_scripted_server(
        [("send", GREETING), ("expect", b"EHLO"), ("send", b"250-" + b"x" * 9000 + b"\r\n")],
        strict=False,
    )
    client = client_for(scripted)
    await client.connect()
    with pytest.raises(SMTPProtocolError, match="too long"):
        await client.ehlo()
    assert not client.is_connected


# --------------------------------------------------------------------------- cancellation


async def test_a_cancelled_send_closes_its_socket_before_the_caller_hears_of_it(
    smtpd: SMTPServer, lifecycle: Lifecycle
) -> None:
    handler = smtpd.handler
    assert isinstance(handler, RecordingHandler)
    client = client_for(smtpd)
    await client.connect()
    gate = asyncio.Event()

    def render() -> tuple[str, list[str], bytes]:
        gate.set()
        return ("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")

    task = asyncio.create_task(client.send_messages([render, render]))
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not client.is_connected
    await client.wait_closed(grace=TIMEOUT)
    assert lifecycle.lost() == [1]
    await client.wait_closed()  # twice: nothing left to wait for


async def test_a_connect_cancelled_at_any_point_leaves_no_socket_open(
    make_scripted_server: Callable[..., ScriptedServer], lifecycle: Lifecycle, loop_name: str
) -> None:
    scripted = make_scripted_server([("sleep", 0.2), ("send", GREETING)], strict=False)
    for delay in (0.0, 0.001, 0.01, 0.05):
        client = client_for(scripted)
        task = asyncio.create_task(client.connect())
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.wait_closed(grace=TIMEOUT)
    for _ in range(500):  # connection_lost runs on the loop, soon after the abort
        if sorted(lifecycle.lost()) == sorted(lifecycle.made()):
            break
        await asyncio.sleep(0.01)
    if loop_name == "uvloop":
        # uvloop may close a transport cancelled as it connects and then still call
        # connection_made, never connection_lost: its socket is closed all the same.
        assert lifecycle.open_sockets() == []
    else:
        assert sorted(lifecycle.lost()) == sorted(lifecycle.made())


async def test_a_pool_counts_a_cancelled_connection_until_its_socket_is_gone(
    smtpd: SMTPServer, lifecycle: Lifecycle
) -> None:
    handler = smtpd.handler
    assert isinstance(handler, RecordingHandler)
    async with SMTPPool(
        max_connections=1, hostname=smtpd.host, port=smtpd.port, timeout=TIMEOUT
    ) as pool:
        await pool.sendmail("a@example.com", ["b@example.com"], b"Subject: 1\r\n\r\n1\r\n")
        sending = asyncio.create_task(
            pool.sendmail("a@example.com", ["b@example.com"], b"Subject: 2\r\n\r\n2\r\n")
        )
        waiting = asyncio.create_task(
            pool.sendmail("a@example.com", ["b@example.com"], b"Subject: 3\r\n\r\n3\r\n")
        )
        await asyncio.sleep(0)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        # The cancelled caller hears of it only once its socket is closed, and the waiter's
        # new connection opens only after that: never two sockets for one slot.
        assert lifecycle.lost() == [1]
        await asyncio.wait_for(waiting, TIMEOUT)
    assert lifecycle.events[:3] == [("made", 1), ("lost", 1), ("made", 2)]


async def test_a_dead_connection_is_counted_until_closed_then_replaced(
    make_scripted_server: Callable[..., ScriptedServer], lifecycle: Lifecycle
) -> None:
    # The server drops each connection after EHLO: every send fails before its data, and
    # the pool never holds more sockets than its limit while replacing them.
    scripted = make_scripted_server(
        [("send", GREETING), ("expect", b"EHLO"), ("send", EHLO), ("close",)], strict=False
    )
    async with SMTPPool(
        max_connections=1,
        hostname=scripted.host,
        port=scripted.port,
        timeout=TIMEOUT,
        start_tls=False,
    ) as pool:
        outcomes = await asyncio.gather(
            *(pool.sendmail("a@example.com", ["b@example.com"], b"x\r\n") for _ in range(3)),
            return_exceptions=True,
        )
    assert all(isinstance(o, SMTPServerDisconnected) for o in outcomes), outcomes
    open_now = 0
    for kind, _ in lifecycle.events:
        open_now += 1 if kind == "made" else -1
        assert open_now <= 1, lifecycle.events


# --------------------------------------------------------------------------- memory

# A pipelining sink in a process of its own, so that tracemalloc counts the client alone.
_SINK = r"""
import asyncio, sys

async def serve(reader, writer):
    writer.write(b"220 sink\r\n")
    data = False
    while line := await reader.readline():
        if data:
            if line == b".\r\n":
                data = False
                writer.write(b"250 2.0.0 queued\r\n")
            continue
        verb = line[:4].upper()
        if verb == b"DATA":
            data = True
            writer.write(b"354 go\r\n")
        elif verb == b"EHLO":
            writer.write(b"250-sink\r\n250 PIPELINING\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            await writer.drain()
            break
        else:
            writer.write(b"250 2.1.0 ok\r\n")
        if not reader._buffer:
            await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@pytest.fixture
def sink_port() -> Iterator[int]:
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", _SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        process.stdout.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck sink
            process.kill()
            process.wait()


@pytest.mark.parametrize("lazy", [False, True], ids=["prebuilt", "lazy"])
async def test_a_batch_holds_little_per_message_beyond_its_outcome(
    sink_port: int, lazy: bool
) -> None:
    # What a message needed (envelope, content, command bytes, its preparing) is let go
    # once its outcome is final: the peak above the items stays under 300 bytes per
    # message (the outcomes themselves included), at any batch size.
    import tracemalloc

    count = 4000
    template = b"Subject: memory\r\n\r\n" + b"x" * 1000 + b"\r\n"

    def build(index: int) -> tuple[str, list[str], bytes]:
        return ("a@example.com", [f"r{index}@example.com"], template + b"%d\r\n" % index)

    def later(index: int) -> Callable[[], tuple[str, list[str], bytes]]:
        return lambda: build(index)

    client = SMTP(hostname="127.0.0.1", port=sink_port, timeout=TIMEOUT, start_tls=False)
    await client.connect()
    await client.send_messages([build(0)])  # warm up: EHLO, buffers
    # Each distinct address is validated once and kept in a cache bounded at 4,096
    # entries: bounded memory, not memory per message. Filled before measuring.
    for index in range(count):
        envelope_address(f"r{index}@example.com")
    tracemalloc.start()
    try:
        items: list[Any] = [later(i) if lazy else build(i) for i in range(count)]
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        outcomes = await client.send_messages(items)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await client.quit()
    assert all(isinstance(o, tuple) and o[1] == "2.0.0 queued" for o in outcomes)
    per_message = (peak - before) / count
    assert per_message < 300, per_message


# --------------------------------------------------------------------------- under uvicorn

_ASGI_APP = """
import asyncio

from smtp_backends import SMTP


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    port = int(scope["query_string"].decode())
    loop = type(asyncio.get_running_loop()).__module__
    # A direct await in a view, as a FastAPI or Starlette user writes it.
    async with SMTP(hostname="127.0.0.1", port=port, timeout=5, start_tls=False) as client:
        data = b"Subject: asgi\\r\\n\\r\\nx\\r\\n"
        await client.sendmail("a@example.com", ["b@example.com"], data)
    body = loop.encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_a_view_under_uvicorn_with_uvloop_sends_at_once(smtpd: SMTPServer, tmp_path: Any) -> None:
    # uvicorn[standard] runs on uvloop: a view awaiting the client must not hang (uvloop's
    # transports are no asyncio.Transport subclasses).
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.servers import free_port

    (tmp_path / "asgi_app.py").write_text(_ASGI_APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "asgi_app:app", "--loop", "uvloop", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/?{smtpd.port}", timeout=10
                ) as response:
                    body = response.read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=10)
    assert body == b"uvloop", errors
    assert [m.message["Subject"] for m in smtpd.messages] == ["asgi"]
