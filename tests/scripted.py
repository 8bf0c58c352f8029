"""A small programmable SMTP server for :class:`tests.servers.ScriptedServer` handlers.

:class:`GroupServer` speaks just enough SMTP to carry mail transactions and records what
arrived, how it arrived (which socket read delivered each command) and when it answered.
Its point is control over *when* replies leave:

* ``hold_groups=True`` models the strictest server RFC 2920 allows: replies to MAIL, RCPT
  and RSET are held until the command that ends the group (DATA) arrives, and the reply to
  a message's terminating dot is held while more transactions are announced (``messages``).
  A client that waited for a reply before sending the rest of its group would hang.
* ``lockstep_check=True`` models a server without PIPELINING that insists on lock-step:
  after each command it waits a moment and records a violation if anything else arrived
  before it answered.

Replies are chosen by :meth:`GroupServer.reply` (override it, or pass ``on_command``).
A reply may be bytes or an :class:`Action` (:data:`CLOSE`, :data:`STALL`, :data:`FREEZE`,
:func:`then_close`, :func:`then_stall`, :func:`delayed`).

Nothing here imports ``smtp_backends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    """What to do instead of (or after) answering one item.

    ``reply`` is queued first (flushed with whatever is held); then ``then`` says what
    follows: ``"close"`` the connection, ``"stall"`` (answer nothing more, keep reading
    and recording until the client goes away), ``"freeze"`` (stop reading too, for
    ``seconds``, then close), or ``"continue"`` (carry on; with ``delay`` seconds of
    silence before the reply).
    """

    reply: bytes = b""
    then: str = "continue"
    delay: float = 0.0
    seconds: float = 10.0


#: Close the connection (after flushing held replies) instead of answering.
CLOSE = Action(then="close")
#: Never answer again; keep reading and recording until the client goes away.
STALL = Action(then="stall")
#: Stop answering and stop reading (the client's sends back up), then close.
FREEZE = Action(then="freeze")


def then_close(reply: bytes) -> Action:
    """Answer with ``reply``, then close the connection."""
    return Action(reply, "close")


def then_stall(reply: bytes) -> Action:
    """Answer with ``reply``, then never answer again (the connection stays open)."""
    return Action(reply, "stall")


def delayed(reply: bytes, seconds: float) -> Action:
    """Answer with ``reply`` after ``seconds`` of silence."""
    return Action(reply, "continue", delay=seconds)


#: Replies to commands that may be held in a group (RFC 2920 3.1).
_GROUPABLE = frozenset({b"MAIL", b"RCPT", b"RSET"})


@dataclass
class Item:
    """One thing the client sent: a command line (CRLF stripped) or a message's data."""

    kind: str  # "command" or "data"
    line: bytes = b""  # the command line
    data: bytes = b""  # the data block as transmitted (still dot-stuffed), without the dot
    read: int = 0  # index of the socket read that completed this item

    @property
    def verb(self) -> bytes:
        return self.line.split(b" ", 1)[0].split(b":", 1)[0].upper() if self.line else b""

    def __repr__(self) -> str:
        if self.kind == "data":
            return f"<data {len(self.data)} bytes, read {self.read}>"
        return f"<{self.line!r}, read {self.read}>"


@dataclass
class GroupServer:
    """A handler for :class:`tests.servers.ScriptedServer` (``make_scripted_server(server)``).

    Args:
        extensions: EHLO keywords advertised after the first line.
        hold_groups: hold replies until a group ends (see the module docstring).
        messages: transactions announced on each connection (for ``hold_groups``): the reply
            to a dot or RSET is held while fewer MAIL commands than this have arrived.
        lockstep_check: record a violation when a command arrives before the previous
            one was answered (waits ``lockstep_wait`` seconds before each reply).
        batch_replies: answer everything one socket read delivered in one write (as a
            pipelining server such as Postfix does), instead of command by command.
        on_command: ``f(server, item) -> bytes | Action | None``; None falls back to
            :meth:`reply`.
        greeting: the first thing sent.
    """

    extensions: Sequence[str] = ("PIPELINING",)
    hold_groups: bool = False
    messages: int = 1
    lockstep_check: bool = False
    lockstep_wait: float = 0.02
    batch_replies: bool = False
    on_command: Callable[[GroupServer, Item], Any] | None = None
    greeting: bytes = b"220 scripted.test ESMTP\r\n"

    #: Every item received, in order, on all connections.
    items: list[Item] = field(default_factory=list)
    #: One entry per reply write: the items answered by it.
    flushes: list[list[Item]] = field(default_factory=list)
    #: The raw reply bytes of each flush (parallel to ``flushes``).
    flushed: list[bytes] = field(default_factory=list)
    #: Raw bytes of every socket read, in order.
    reads: list[bytes] = field(default_factory=list)
    #: Lock-step violations seen (descriptions).
    violations: list[str] = field(default_factory=list)
    #: MAIL commands seen on the current connection.
    mails: int = 0
    #: Connections served so far (1 during the first).
    connection: int = 0

    # -- what tests read

    @property
    def lines(self) -> list[bytes]:
        """Command lines received (data blocks left out)."""
        return [item.line for item in self.items if item.kind == "command"]

    @property
    def verbs(self) -> list[bytes]:
        """Command verbs and ``b"<data>"`` for each data block, in order."""
        return [item.verb if item.kind == "command" else b"<data>" for item in self.items]

    @property
    def data(self) -> list[bytes]:
        """Data blocks received, as transmitted (dot-stuffed)."""
        return [item.data for item in self.items if item.kind == "data"]

    def transaction_flushes(self) -> list[list[bytes]]:
        """Verbs answered by each flush that answered part of a mail transaction."""
        groups = [[i.verb if i.kind == "command" else b"<data>" for i in f] for f in self.flushes]
        return [g for g in groups if set(g) & {b"MAIL", b"RCPT", b"DATA", b"<data>", b"RSET"}]

    # -- replies

    def reply(self, item: Item) -> Any:
        """The default reply to ``item``."""
        if item.kind == "data":
            return b"250 2.0.0 queued\r\n"
        verb = item.verb
        if verb in (b"EHLO",):
            lines = ["scripted.test", *self.extensions]
            out = [f"250-{line}\r\n" for line in lines[:-1]] + [f"250 {lines[-1]}\r\n"]
            return "".join(out).encode()
        if verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            return b"250 2.0.0 ok\r\n"
        if verb == b"DATA":
            return b"354 go ahead\r\n"
        if verb == b"QUIT":
            return b"221 bye\r\n"
        return b"502 5.5.2 not implemented\r\n"

    def _choose(self, item: Item) -> Any:
        if self.on_command is not None:
            chosen = self.on_command(self, item)
            if chosen is not None:
                return chosen
        return self.reply(item)

    # -- the connection

    async def __call__(self, reader: Any, writer: Any) -> None:
        self.connection += 1
        self.mails = 0
        stream: asyncio.StreamReader = reader.stream
        held: list[Item] = []
        out: list[bytes] = []
        buffer = bytearray()
        in_data = False
        data_search = 0
        last: Item | None = None
        await writer.send(self.greeting)

        async def flush() -> None:
            if out:
                self.flushes.append(list(held))
                self.flushed.append(b"".join(out))
                await writer.send(b"".join(out))
            held.clear()
            out.clear()

        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            self.reads.append(chunk)
            read_index = len(self.reads) - 1
            buffer += chunk
            while buffer:
                if in_data:
                    if buffer.startswith(b".\r\n"):
                        block, end = b"", 0
                    else:
                        found = buffer.find(b"\r\n.\r\n", data_search)
                        if found < 0:
                            data_search = max(0, len(buffer) - 4)
                            break
                        block, end = bytes(buffer[: found + 2]), found + 2
                    del buffer[: end + 3]
                    in_data, data_search = False, 0
                    item = Item("data", data=block, read=read_index)
                else:
                    found = buffer.find(b"\n")
                    if found < 0:
                        break
                    line = bytes(buffer[: found + 1]).rstrip(b"\r\n")
                    del buffer[: found + 1]
                    item = Item("command", line=line, read=read_index)
                self.items.append(item)
                last = item
                if item.verb == b"MAIL":
                    self.mails += 1
                chosen = self._choose(item)
                action = chosen if isinstance(chosen, Action) else Action(chosen)
                if action.delay:
                    await asyncio.sleep(action.delay)
                if action.reply:
                    held.append(item)
                    out.append(action.reply)
                if action.then == "close":
                    await flush()
                    return
                if action.then == "stall":
                    await flush()
                    await read_until_closed(reader)
                    return
                if action.then == "reset":
                    await flush()
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            linger = struct.pack("ii", 1, 0)
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    writer.transport.abort()
                    return
                if action.then == "freeze":
                    await flush()
                    await asyncio.sleep(action.seconds)
                    return
                if item.kind == "command" and item.verb == b"DATA":
                    in_data = action.reply.startswith(b"354")
                if self.lockstep_check:
                    await asyncio.sleep(self.lockstep_wait)
                    if buffer or stream._buffer:  # type: ignore[attr-defined]
                        self.violations.append(f"more input before the reply to {item!r}")
                if not self.batch_replies and not self._hold(item):
                    await flush()
            if self.batch_replies and last is not None and not self._hold(last):
                await flush()

    def _hold(self, item: Item) -> bool:
        if not self.hold_groups:
            return False
        if item.kind == "command" and item.verb in (b"MAIL", b"RCPT"):
            return True
        if item.kind == "data" or item.verb == b"RSET":
            return self.mails < self.messages
        return False


async def read_until_closed(reader: Any, limit: float = 10.0) -> None:
    """Read (and so record) everything until the client closes, at most ``limit`` seconds."""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        await asyncio.wait_for(_read_all(reader), limit)


async def _read_all(reader: Any) -> None:
    while await reader.read(65536):
        pass
