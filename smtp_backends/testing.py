"""Test helpers users can import: an in-process SMTP server that captures mail.

:class:`CaptureServer` speaks enough SMTP for a client (EHLO/HELO, MAIL,
RCPT, DATA, RSET, NOOP, QUIT), advertises PIPELINING, 8BITMIME, SMTPUTF8 and
SIZE, and keeps every accepted message in :attr:`CaptureServer.messages`.
It needs only the standard library, listens on loopback, and runs either on
the caller's event loop (``async with CaptureServer() as server``) or in a
thread of its own (``with CaptureServer().running() as server``) for sync
code and other event loops.

It is a test double, not a mail server: it delivers nothing.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import contextlib
import email
import email.message
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ("CaptureServer", "CapturedMessage")

_MAX_LINE = 4096
_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class CapturedMessage:
    """One message the server accepted.

    Attributes:
        mail_from: the envelope sender (``""`` for the null path).
        rcpt_tos: the accepted envelope recipients.
        data: the message as received, dot-unstuffed, CRLF line endings.
        mail_options: the ESMTP parameters given with MAIL.
        peer: the client's address.
    """

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)
    peer: str = ""

    def parsed(self) -> email.message.EmailMessage:
        """The data parsed as an :class:`email.message.EmailMessage`."""
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        return message

    @property
    def subject(self) -> str:
        """The decoded Subject header ('' if none)."""
        return str(self.parsed()["Subject"] or "")


def _path(argument: str, prefix: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<addr> OPT...`` into the address and the options."""
    if not argument.upper().startswith(prefix):
        return None
    rest = argument[len(prefix) :].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None
    end = rest.index(">")
    return rest[1:end], rest[end + 1 :].split()


class CaptureServer:
    """An SMTP server on loopback that records what it accepts.

    Args:
        host: address to listen on (loopback by default).
        port: port to listen on (0 picks a free one; see :attr:`port`).
        pipelining: advertise PIPELINING (RFC 2920).
        refuse_recipients: addresses answered 550 at RCPT.
        max_size: the SIZE limit advertised and enforced.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        pipelining: bool = True,
        refuse_recipients: frozenset[str] | set[str] = frozenset(),
        max_size: int = 33554432,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.pipelining = pipelining
        self.refuse_recipients = frozenset(refuse_recipients)
        self.max_size = max_size
        #: Every accepted message, in order of acceptance.
        self.messages: list[CapturedMessage] = []
        #: How many connections were accepted so far.
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def __repr__(self) -> str:
        return f"<CaptureServer {self.host}:{self.port} {len(self.messages)} messages>"

    @property
    def port(self) -> int:
        """The port actually listened on (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the server runs on (None before :meth:`start`)."""
        return self._loop

    # Running on the caller's loop ---------------------------------------

    async def start(self) -> None:
        """Start listening on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._handle, self.host, self._requested_port, limit=_MAX_MESSAGE
        )

    async def stop(self) -> None:
        """Stop listening and end every open session."""
        if self._server is not None:
            self._server.close()
            # Closing the sockets ends each session's read loop normally.
            for writer in list(self._sessions.values()):
                writer.transport.abort()
            await asyncio.gather(*self._sessions, return_exceptions=True)
            await self._server.wait_closed()

    async def __aenter__(self) -> CaptureServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # Running in a thread of its own ------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[CaptureServer]:
        """Run the server on its own event loop in a daemon thread, for sync code."""
        started = threading.Event()
        loop = asyncio.new_event_loop()

        failed: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:  # such as the port in use: raised to the caller
                failed.append(error)
                loop.close()
                return
            finally:
                started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="smtp-capture-server", daemon=True)
        thread.start()
        started.wait()
        if failed:
            thread.join()
            raise failed[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    # The protocol ---------------------------------------------------------

    def _ehlo_lines(self, name: str) -> list[str]:
        lines = [f"capture.local greets {name}", "8BITMIME", "SMTPUTF8", f"SIZE {self.max_size}"]
        if self.pipelining:
            lines.append("PIPELINING")
        return lines

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = writer
        task.add_done_callback(self._sessions.pop)
        self.connections += 1
        peer = str(writer.get_extra_info("peername"))
        session: dict[str, object] = {}

        def reply(code: int, *lines: str) -> None:
            text = list(lines) or [""]
            out = [f"{code}-{line}" for line in text[:-1]] + [f"{code} {text[-1]}"]
            writer.write(("\r\n".join(out) + "\r\n").encode("utf-8"))

        reply(220, "capture.local ESMTP smtp_backends capture server")
        try:
            while True:
                if not reader._buffer:  # type: ignore[attr-defined]  # flush per pipelined group
                    await writer.drain()
                raw = await reader.readline()
                if not raw:
                    break
                if len(raw) > _MAX_LINE or not raw.endswith(b"\r\n"):
                    reply(500, "Line too long or not CRLF terminated")
                    continue
                line = raw[:-2].decode("utf-8", "replace")
                verb, _, argument = line.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    session.clear()
                    reply(250, *self._ehlo_lines(argument or "client"))
                elif verb == "HELO":
                    session.clear()
                    reply(250, "capture.local")
                elif verb == "MAIL":
                    path = _path(argument, "FROM:")
                    if path is None:
                        reply(501, "Syntax: MAIL FROM:<address>")
                    else:
                        session.update(mail_from=path[0], options=path[1], rcpt=[])
                        reply(250, "OK")
                elif verb == "RCPT":
                    path = _path(argument, "TO:")
                    recipients = session.get("rcpt")
                    if not isinstance(recipients, list):
                        reply(503, "Need MAIL first")
                    elif path is None or not path[0]:
                        reply(501, "Syntax: RCPT TO:<address>")
                    elif path[0] in self.refuse_recipients:
                        reply(550, "5.1.1 No such user")
                    else:
                        recipients.append(path[0])
                        reply(250, "OK")
                elif verb == "DATA":
                    recipients = session.get("rcpt")
                    if not recipients:
                        reply(554 if isinstance(recipients, list) else 503, "No valid recipients")
                        continue
                    reply(354, "End data with <CR><LF>.<CR><LF>")
                    await writer.drain()
                    data = await self._read_data(reader)
                    options = session.get("options")
                    self.messages.append(
                        CapturedMessage(
                            str(session["mail_from"]),
                            list(recipients),  # type: ignore[call-overload]
                            data,
                            list(options) if isinstance(options, list) else [],
                            peer,
                        )
                    )
                    session.clear()
                    reply(250, f"2.0.0 OK queued as {len(self.messages)}")
                elif verb == "RSET":
                    session.clear()
                    reply(250, "OK")
                elif verb == "NOOP":
                    reply(250, "OK")
                elif verb == "QUIT":
                    reply(221, "Bye")
                    await writer.drain()
                    break
                else:
                    reply(502, "Command not implemented")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        """Read message content up to the terminating dot; undo dot-stuffing."""
        lines: list[bytes] = []
        size = 0
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("Connection closed during DATA")
            if line == b".\r\n":
                return b"".join(lines)
            size += len(line)
            if size > _MAX_MESSAGE:
                raise ConnectionError("Message too large")
            lines.append(line[1:] if line.startswith(b".") else line)
