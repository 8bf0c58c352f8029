"""The development server's SMTP side: aiosmtpd on an event loop in a thread of its own.

This is the only module that imports aiosmtpd (an optional extra), so the rest of
``smtp_backends`` and the mailbox work without it. It also applies the chaos rules
(:mod:`smtp_backends.devserver.chaos`) at each stage of a session.

aiosmtpd's own ``Controller`` cannot report the port it bound when asked for port 0,
so :class:`SMTPThread` binds with :meth:`asyncio.AbstractEventLoop.create_server`
itself and reads the port from the listening socket.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import AuthResult

from .chaos import Chaos
from .store import Mailbox, MessageTooLarge, StoredMessage

__all__ = ("DEFAULT_DATA_SIZE_LIMIT", "SMTPThread")

#: Largest message accepted (advertised with SIZE, RFC 1870): 32 MiB.
DEFAULT_DATA_SIZE_LIMIT = 32 * 1024 * 1024

# The EHLO name aiosmtpd greets with; given explicitly because its default is
# socket.getfqdn() on every connection, a DNS lookup that can take seconds.
_SERVER_NAME = "smtp-backends-devserver"

logger = logging.getLogger("smtp_backends.devserver")


def _drop_login_data_warning(record: logging.LogRecord) -> bool:
    """Filter out aiosmtpd's warning about its own deprecated Session.login_data.

    aiosmtpd 1.4 logs it on every successful AUTH, whichever API the server uses,
    so it says nothing to the developer reading the dev server's output.
    """
    return "login_data is deprecated" not in record.getMessage()


# aiosmtpd logs to "mail.log"; the filter is added once, however often this is imported.
_aiosmtpd_log = logging.getLogger("mail.log")
if _drop_login_data_warning not in _aiosmtpd_log.filters:
    _aiosmtpd_log.addFilter(_drop_login_data_warning)


# The address of "MAIL FROM:<a@b> SIZE=1" or "RCPT TO:<a@b>", for chaos patterns only
# (aiosmtpd parses and checks the command itself afterwards).
_PATH = re.compile(r"^\s*(?:FROM|TO)\s*:\s*<?([^<>\s]*)>?", re.IGNORECASE)


def _path(arg: str | None) -> str:
    matched = _PATH.match(arg or "")
    return matched.group(1) if matched else ""


def _accept_any(*_args: Any) -> AuthResult:
    """An aiosmtpd authenticator that accepts every user name and password."""
    return AuthResult(success=True)


class SMTPProtocol(AiosmtpdSMTP):
    """aiosmtpd's SMTP session with the chaos rules applied before each command."""

    def __init__(self, handler: Any, *, chaos: Chaos, **options: Any) -> None:
        super().__init__(handler, **options)
        self._chaos = chaos
        self._drop_before_reply = False

    async def _apply_chaos(self, stage: str, subjects: Sequence[str]) -> bool:
        """Delay, answer and/or drop by rule; True when the command must not run."""
        if not self._chaos:
            return False
        decision = self._chaos.decide(stage, subjects)
        if decision is None:
            return False
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.reply is None and not decision.drop:
            return False  # a delay only: the command runs as usual
        if decision.reply is not None:
            await self.push(decision.reply)
        if decision.drop and self.transport is not None:
            self.transport.close()
        return True

    def drop_before_reply(self) -> None:
        """Close the connection instead of sending the next reply (a drop after the dot)."""
        self._drop_before_reply = True

    async def push(self, status: AnyStr) -> None:
        """Send a reply, unless a drop was asked for: then close the connection instead."""
        if self._drop_before_reply:
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)

    async def _handle_client(self) -> None:
        # The greeting is sent by aiosmtpd's private _handle_client; a connect rule
        # answers (421) or drops before it.
        if await self._apply_chaos("connect", ()):
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO, after the ``ehlo`` chaos rules."""
        if not await self._apply_chaos("ehlo", (hostname or "",)):
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        """HELO, after the ``ehlo`` chaos rules."""
        if not await self._apply_chaos("ehlo", (hostname or "",)):
            await super().smtp_HELO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        """MAIL, after the ``mail`` chaos rules (matched on the sender)."""
        if not await self._apply_chaos("mail", (_path(arg),)):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT, after the ``rcpt`` chaos rules (matched on the recipient)."""
        if not await self._apply_chaos("rcpt", (_path(arg),)):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        """DATA, after the ``data`` chaos rules (matched on every recipient)."""
        recipients = tuple(self.envelope.rcpt_tos) if self.envelope is not None else ()
        if not await self._apply_chaos("data", recipients):
            await super().smtp_DATA(arg)


class _Handler:
    """aiosmtpd hooks: advertise PIPELINING, apply ``dot`` chaos rules, store messages."""

    def __init__(
        self,
        mailbox: Mailbox,
        on_message: Callable[[StoredMessage], None] | None,
        chaos: Chaos,
    ) -> None:
        self._mailbox = mailbox
        self._on_message = on_message
        self._chaos = chaos

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Add PIPELINING (RFC 2920) to the EHLO reply.

        aiosmtpd reads commands one line at a time from a buffered stream, so
        pipelined commands already work; it just never says so.
        """
        # With this hook aiosmtpd leaves recording the EHLO name to us (MAIL needs it).
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: SMTPProtocol, session: Any, envelope: Any) -> str:
        """Store the message; any sender and any recipients are accepted.

        A message larger than the mailbox's whole byte cap is refused with 552
        (RFC 5321 4.5.3.1.10: exceeded storage allocation).
        """
        decision = self._chaos.decide("dot", envelope.rcpt_tos) if self._chaos else None
        if decision is not None and decision.delay:
            await asyncio.sleep(decision.delay)
        if decision is not None and decision.reply is not None:
            # Refused after the data: nothing is stored, as a real server would not.
            if decision.drop:
                # The reply goes out, then the connection closes (a 421, or drop=true).
                await server.push(decision.reply)
                server.drop_before_reply()
            return decision.reply
        raw = envelope.original_content or envelope.content or b""
        try:
            message = self._mailbox.add(envelope.mail_from or "", envelope.rcpt_tos, bytes(raw))
        except MessageTooLarge:
            return (
                f"552 5.3.4 Message too big for the inbox (it keeps at most "
                f"{self._mailbox.max_bytes} bytes)"
            )
        if decision is not None and decision.drop:
            # Stored, but the client never hears so: the outcome it must call unknown.
            server.drop_before_reply()
        if self._on_message is not None:
            try:
                self._on_message(message)
            except Exception:
                # A failing observer must not turn an accepted message into an SMTP error.
                logger.exception("on_message callback failed for message #%d", message.id)
        return f"250 2.0.0 OK: stored as message #{message.id}"


class SMTPThread:
    """An aiosmtpd server running on its own event loop in a daemon thread.

    Args:
        mailbox: where accepted messages go.
        host: address to listen on.
        port: port to listen on (0 picks a free one; see :attr:`port` after start).
        accept_any_auth: advertise AUTH PLAIN/LOGIN without TLS and accept any
            credentials (so applications configured with a user name work).
        data_size_limit: largest message accepted, in bytes.
        on_message: called on the server thread with each stored message.
        chaos: the chaos rules to apply (none by default).
    """

    def __init__(
        self,
        mailbox: Mailbox,
        host: str,
        port: int,
        *,
        accept_any_auth: bool = True,
        data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
        on_message: Callable[[StoredMessage], None] | None = None,
        chaos: Chaos | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.chaos = chaos if chaos is not None else Chaos()
        self._handler = _Handler(mailbox, on_message, self.chaos)
        self._accept_any_auth = accept_any_auth
        self._data_size_limit = data_size_limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Weak, so finished sessions are not kept alive for the server's lifetime.
        self._sessions: weakref.WeakSet[SMTPProtocol] = weakref.WeakSet()
        self._error: BaseException | None = None

    def _protocol(self) -> SMTPProtocol:
        assert self._loop is not None
        options: dict[str, Any] = {}
        if self._accept_any_auth:
            # Loopback development only: credentials are accepted, never checked.
            options = {"auth_require_tls": False, "authenticator": _accept_any}
        session = SMTPProtocol(
            self._handler,
            chaos=self.chaos,
            hostname=_SERVER_NAME,
            data_size_limit=self._data_size_limit,
            enable_SMTPUTF8=True,
            loop=self._loop,
            **options,
        )
        self._sessions.add(session)
        return session

    def start(self) -> None:
        """Bind and serve; returns once the server listens.

        Raises:
            OSError: the address cannot be bound (port in use...).
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("the SMTP server is already running")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="smtp_backends-devserver-smtp", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join()
            self._thread = None
            raise error

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(
                loop.create_server(self._protocol, host=self.host, port=self.port)
            )
        except BaseException as error:
            self._error = error
            loop.close()
            ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shut_down(server))
        loop.close()

    async def _shut_down(self, server: asyncio.AbstractServer) -> None:
        server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        # Let connection_lost run, then collect the cancelled session tasks.
        await asyncio.sleep(0)
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def stop(self) -> None:
        """Close the listener and every open session and end the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join()
        self._sessions.clear()
