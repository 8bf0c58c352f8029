"""An SMTP server on loopback that injects faults, and keeps the books of what it stored.

It speaks PIPELINING, answers everything one socket read delivered in one write (as Postfix
does) and, per transaction, may misbehave: reset the connection (TCP RST) on MAIL, RCPT or
DATA (before the dot: nothing stored), store the message and reset instead of answering the
dot (the client cannot know: "unknown outcome"), answer 421 to MAIL and close, or answer 451
to MAIL, RCPT or the dot (nothing stored). A test may also pick ``freeze-data``: answer 354
to DATA, then stop reading (the client's content backs up; nothing is stored).

Each message is known by its envelope sender (``m<N>@...``): a fault is chosen from a hash of
the seed, the sender and how many times the server has seen that sender's MAIL, so a message's
fate on its k-th try is the same in every run whatever the connections' interleaving.

Every fault is one the client can account for exactly: a reset "before the dot" happens while
the server reads a command, when every dot the client has written was already read and stored,
so *sent + unknown = stored* holds to the message.

Used by tests/test_pool_faults.py (in a thread: :class:`FaultServer`) and by the soaks in
benchmarks/ (a process: ``python -m tests.fault_server --port P --stats FILE``; SIGTERM writes
the books as JSON to FILE and exits). Nothing here imports ``smtp_backends``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import signal
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"

#: The faults, with the share of transactions each one hits by default (about 6% in all).
DEFAULT_FAULTS: dict[str, float] = {
    "reset-mail": 0.01,
    "reset-rcpt": 0.005,
    "reset-data": 0.005,
    "reset-after-dot": 0.01,
    "421-mail": 0.01,
    "451-mail": 0.01,
    "451-rcpt": 0.005,
    "451-dot": 0.005,
}

_EHLO = b"250-faults.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10240000\r\n"


@dataclass
class Books:
    """What the server saw and did, per message (its envelope sender)."""

    #: Times each message was stored (a message stored twice shows up as 2).
    stored: collections.Counter[str] = field(default_factory=collections.Counter)
    #: MAIL commands seen per message.
    tries: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Real attempts per message: its data arrived, or a reply refused it.
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Faults injected, by kind.
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "stored": dict(self.stored),
            "tries": dict(self.tries),
            "attempts": dict(self.attempts),
            "faults": dict(self.faults),
            "connections": self.connections,
        }


class _Session(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: FaultServerCore) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None  # None once closed or reset
        self.own: asyncio.Transport | None = None  # kept to the end, for the server's set
        self.buffer = bytearray()
        self.in_data = False
        self.sender: str | None = None
        self.fault: str | None = None
        self.failed = False  # this transaction was refused already
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = self.own = transport
        self.server.sessions.add(transport)
        self.server.books.connections += 1
        transport.write(b"220 faults.test ESMTP\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sessions.discard(self.own)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self._process()
        finally:
            if self.out and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(self.out))
            self.out.clear()

    def _process(self) -> None:
        buffer = self.buffer
        while self.transport is not None:
            if self.in_data:
                if buffer.startswith(b".\r\n"):
                    end, body = 0, b""
                else:
                    found = buffer.find(b"\r\n.\r\n")
                    if found < 0:
                        return
                    end, body = found + 2, bytes(buffer[: found + 2])
                del buffer[: end + 3]
                self.in_data = False
                self._end_of_data(body)
                continue
            found = buffer.find(b"\r\n")
            if found < 0:
                return
            line = bytes(buffer[:found])
            del buffer[: found + 2]
            self._command(line)

    def _reset(self) -> None:
        """Flush what is queued, then abort the connection with a TCP RST."""
        transport, self.transport = self.transport, None
        assert transport is not None
        if self.out:
            transport.write(b"".join(self.out))
            self.out.clear()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _close_after(self, reply: bytes) -> None:
        transport, self.transport = self.transport, None
        assert transport is not None
        self.out.append(reply)
        transport.write(b"".join(self.out))
        self.out.clear()
        transport.close()

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        books = self.server.books
        if verb in (b"EHLO", b"HELO"):
            self.out.append(_EHLO if verb == b"EHLO" else b"250 faults.test\r\n")
        elif verb == b"MAIL":
            start, end = line.find(b"<"), line.find(b">")
            sender = line[start + 1 : end].decode("utf-8", "replace")
            self.sender = sender
            books.tries[sender] += 1
            self.fault = self.server.choose(sender, books.tries[sender])
            self.failed = False
            if self.fault is not None:
                books.faults[self.fault] += 1
            if self.fault == "reset-mail":
                self._reset()
            elif self.fault == "421-mail":
                books.attempts[sender] += 1
                self._close_after(b"421 4.3.2 shutting down\r\n")
            elif self.fault == "451-mail":
                books.attempts[sender] += 1
                self.failed = True
                self.out.append(b"451 4.3.0 try again later\r\n")
            else:
                self.out.append(b"250 2.1.0 ok\r\n")
        elif verb == b"RCPT":
            if self.fault == "reset-rcpt":
                self._reset()
            elif self.failed:
                self.out.append(b"503 5.5.1 no valid sender\r\n")
            elif self.fault == "451-rcpt":
                assert self.sender is not None
                books.attempts[self.sender] += 1
                self.failed = True
                self.out.append(b"451 4.2.0 mailbox busy\r\n")
            else:
                self.out.append(b"250 2.1.5 ok\r\n")
        elif verb == b"DATA":
            if self.fault == "reset-data":
                self._reset()
            elif self.fault == "freeze-data" and self.transport is not None:
                self.out.append(b"354 go ahead\r\n")
                self.transport.pause_reading()
            elif self.failed:
                self.out.append(b"554 5.5.1 no valid recipients\r\n")
            else:
                self.in_data = True
                self.out.append(b"354 go ahead\r\n")
        elif verb == b"RSET":
            self.sender, self.fault, self.failed = None, None, False
            self.out.append(b"250 2.0.0 ok\r\n")
        elif verb == b"NOOP":
            self.out.append(b"250 2.0.0 ok\r\n")
        elif verb == b"QUIT":
            self._close_after(b"221 2.0.0 bye\r\n")
        else:
            self.out.append(b"502 5.5.2 not implemented\r\n")

    def _end_of_data(self, body: bytes) -> None:
        books = self.server.books
        sender = self.sender
        fault, self.fault, self.sender = self.fault, None, None
        if sender is None:  # a lone dot after a refused DATA: nothing to store
            self.out.append(b"503 5.5.1 no transaction\r\n")
            return
        books.attempts[sender] += 1
        if fault == "451-dot":
            self.out.append(b"451 4.3.0 queue full, try again\r\n")
            return
        books.stored[sender] += 1
        self.server.bodies[sender] = body
        if fault == "reset-after-dot":
            self._reset()
        else:
            self.out.append(b"250 2.0.0 queued\r\n")


class FaultServerCore:
    """The server's state and its fault choices (runs on whichever loop starts it)."""

    def __init__(
        self,
        *,
        seed: int = 1,
        faults: dict[str, float] | None = None,
        keep_bodies: bool = True,
        rule: Callable[[str, int], str | None] | None = None,
    ) -> None:
        self.seed = seed
        self.rule = rule
        self.faults = dict(DEFAULT_FAULTS if faults is None else faults)
        self.books = Books()
        # Strong references: a session that stopped reading is referenced by nothing
        # else, and would be collected (its socket closed, with a reset) at random.
        self.sessions: set[asyncio.Transport] = set()
        self.keep_bodies = keep_bodies
        self.bodies: dict[str, bytes] = {} if keep_bodies else _Discard()

    def choose(self, sender: str, attempt: int) -> str | None:
        """The fault for ``sender``'s ``attempt``-th MAIL, or None (the same in every run)."""
        if self.rule is not None:
            return self.rule(sender, attempt)
        draw = random.Random(f"{self.seed}:{sender}:{attempt}").random()
        for kind, share in self.faults.items():
            if draw < share:
                return kind
            draw -= share
        return None

    async def serve(self, port: int = 0) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Session(self), HOST, port)


class _Discard(dict):  # type: ignore[type-arg]
    """A mapping that keeps nothing (the soak does not need the bodies)."""

    def __setitem__(self, key: object, value: object) -> None:
        return None


class FaultServer(FaultServerCore):
    """:class:`FaultServerCore` in a thread of its own, for tests (``with FaultServer() as s``)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def __enter__(self) -> FaultServer:
        self._thread = threading.Thread(target=self._run, name="fault-smtp", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the fault server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = loop.run_until_complete(self.serve())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for transport in list(self.sessions):
                transport.abort()
            loop.run_until_complete(asyncio.sleep(0.01))  # let the aborts finish
            loop.close()


def main() -> None:
    """Serve until SIGTERM, then write the books as JSON to ``--stats``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every fault share")
    args = parser.parse_args()
    faults = {kind: share * args.scale for kind, share in DEFAULT_FAULTS.items()}
    core = FaultServerCore(seed=args.seed, faults=faults, keep_bodies=False)

    async def serve() -> None:
        server = await core.serve(args.port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    asyncio.run(serve())
    with open(args.stats, "w") as out:
        json.dump(core.books.as_json(), out)


if __name__ == "__main__":
    main()
