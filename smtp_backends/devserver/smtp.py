"""The development server's SMTP side: aiosmtpd on an event loop in a thread of its own.

This is the only module that imports aiosmtpd (an optional extra), so the rest of
``smtp_backends`` and the mailbox work without it.

aiosmtpd's own ``Controller`` cannot report the port it bound when asked for port 0,
so :class:`SMTPThread` binds with :meth:`asyncio.AbstractEventLoop.create_server`
itself and reads the port from the listening socket.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult

from .store import Mailbox, StoredMessage

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


def _accept_any(*_args: Any) -> AuthResult:
    """An aiosmtpd authenticator that accepts every user name and password."""
    return AuthResult(success=True)


class _Handler:
    """aiosmtpd hooks: advertise PIPELINING and store every message."""

    def __init__(
        self, mailbox: Mailbox, on_message: Callable[[StoredMessage], None] | None
    ) -> None:
        self._mailbox = mailbox
        self._on_message = on_message

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

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Store the message; any sender and any recipients are accepted."""
        raw = envelope.original_content or envelope.content or b""
        message = self._mailbox.add(envelope.mail_from or "", envelope.rcpt_tos, bytes(raw))
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
    ) -> None:
        self.host = host
        self.port = port
        self._handler = _Handler(mailbox, on_message)
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
