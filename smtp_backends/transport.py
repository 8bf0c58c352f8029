"""The asyncio side of one connection: sockets, TLS, timeouts, error translation.

:class:`SMTPTransport` is an :class:`asyncio.BufferedProtocol` that reads into
one reusable buffer, feeds what arrived straight into the sans-IO
:class:`~smtp_backends.protocol.connection.ClientConnection` and wakes the one
waiting reader once enough replies are parsed: no stream reader, no per-line
task. Foreign exceptions (OSError, ssl errors, asyncio timeouts) are
translated here into :mod:`smtp_backends.errors` and never leak.

It makes no assumption about the class of the transport the loop hands it:
uvloop's transports, for one, are not subclasses of :class:`asyncio.Transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from .config import ConnectionConfig
from .errors import (
    SMTPCertificateError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .protocol.connection import ClientConnection, Command, Phase
from .protocol.replies import SMTPResponse
from .timeouts import wait_for

__all__ = (
    "SMTPTransport",
    "log_reply",
    "log_sent",
    "logger",
    "open_transport",
    "translate_tls_error",
)

logger = logging.getLogger("smtp_backends")

Event = tuple[Command, SMTPResponse]

#: Size of the one buffer each connection reads into. asyncio's plain
#: ``Protocol`` path allocates a fresh 256 KiB object for every read (served
#: by mmap, then shrunk and unmapped: three syscalls and a page fault per
#: reply); one reused buffer costs nothing per read. 64 KiB holds a whole
#: reply at its cap, or a burst of a thousand pipelined RCPT replies.
READ_BUFFER_SIZE = 64 * 1024


def log_sent(command: Command, data: bytes) -> None:
    """Log what the client sent at DEBUG, without secrets or message content."""
    if command is Command.CONTENT:
        logger.debug("client: <message content, %d bytes>", len(data))
    elif command is Command.AUTH:
        logger.debug("client: <AUTH exchange, redacted>")
    else:
        logger.debug("client: %r", data)


def log_reply(reply: SMTPResponse) -> None:
    """Log a server reply at DEBUG."""
    logger.debug("server: %d %s", reply.code, reply.message)


def translate_tls_error(exc: ssl.SSLError, where: str) -> SMTPTLSError:
    """An :class:`SMTPTLSError` (or :class:`SMTPCertificateError`) for an ssl error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SMTPCertificateError(f"{where}: certificate verification failed: {exc}")
    return SMTPTLSError(f"{where}: TLS handshake failed: {exc}")


class SMTPTransport(asyncio.BufferedProtocol):
    """Byte transport of one SMTP connection, bound to the loop that opened it.

    Args:
        connection: the protocol state machine that parses what arrives.
    """

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._error: SMTPException | None = None  # why reading can no longer succeed
        self._paused = False
        # One consumer waits at a time, for `_wanted` replies (or, with
        # `_wanted == 0`, for the send buffer to drain), with callbacks rather
        # than futures: the transaction engine runs straight from
        # buffer_updated, without a task wake-up per reply group.
        self._wanted = 0
        self._draining = False
        self._on_ready: Callable[[], None] | None = None
        self._on_error: Callable[[SMTPException], None] | None = None
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._deadline: float | None = None
        self._timeout_value = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0  # when the timer fires (TimerHandle.when(), without a call)
        #: Connected through a proxy: the peer address is the proxy's, never "local".
        self.proxied = False
        self._read_buffer = memoryview(bytearray(READ_BUFFER_SIZE))

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<SMTPTransport {state} {self.connection!r}>"

    # asyncio.BufferedProtocol callbacks ----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (the loop calls this once connected).

        Any loop's transport is taken as it comes (uvloop's are not
        :class:`asyncio.Transport` subclasses; a check of the class would
        raise inside the loop, which swallows it, and connect() would hang).
        """
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        """The reusable buffer the loop reads into."""
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` arrived in the buffer: parse a copy of them at once; tell the
        waiting consumer once the replies it wants are in.

        Only a copy leaves the buffer, and parsing happens before the next
        read, so nothing lingers in it (after STARTTLS, nothing read before
        the handshake can be taken for a reply: RFC 3207 4.2). The work is
        done here, not in :meth:`data_received`, so that a read costs one
        Python frame on the buffered path every loop takes.
        """
        connection = self.connection
        error: SMTPException | None = None
        try:
            ready = connection.receive_data(bytes(self._read_buffer[:nbytes]))
        except SMTPException as exc:
            error = exc
            ready = connection.ready_events
        on_ready = self._on_ready
        if on_ready is not None and not self._draining:
            if ready >= self._wanted:
                # Replies that arrived before an error still count.
                # _notify_ready(), inline: this runs once per reply group.
                self._on_ready = self._on_error = None
                self._deadline = None
                on_ready()
            elif error is None and connection.phase is Phase.CLOSED:
                # A 421 ended the session: the replies still awaited will never come.
                error = SMTPServerDisconnected("The server closed the session (421)")
        if error is not None:
            self._set_error(error)
            self.abort()

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` (a loop without buffered reads, or a caller feeding bytes).

        The bytes go through the read buffer, a buffer's worth at a time, and
        :meth:`buffer_updated` takes each part as if the loop had read it:
        the parser is incremental, so the parts give the same replies.
        """
        buffer = self._read_buffer
        for start in range(0, len(data), READ_BUFFER_SIZE):
            part = data[start : start + READ_BUFFER_SIZE]
            buffer[: len(part)] = part
            self.buffer_updated(len(part))

    def eof_received(self) -> bool | None:
        """Let the transport close itself; connection_lost reports it."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the waiting consumer; the connection cannot be used again."""
        self.connection.connection_lost()
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed.done():
            self._closed.set_result(None)
        detail = f": {exc}" if exc else ""
        self._set_error(SMTPServerDisconnected(f"Connection lost{detail}"))

    def pause_writing(self) -> None:
        """The send buffer is full (flow control)."""
        self._paused = True

    def resume_writing(self) -> None:
        """The send buffer drained."""
        self._paused = False
        if self._draining and self._on_ready is not None:
            self._notify_ready()

    def _set_error(self, error: SMTPException) -> None:
        if self._error is None:
            self._error = error
        if self._on_error is not None:
            self._notify_error(self._error)

    def _notify_ready(self) -> None:
        callback = self._on_ready
        self.stop_waiting()
        assert callback is not None
        callback()

    def _notify_error(self, error: SMTPException) -> None:
        callback = self._on_error
        self.stop_waiting()
        assert callback is not None
        callback(error)

    # Operations ------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the socket is open and no error ended the connection."""
        return self.transport is not None and self._error is None

    def write(self, data: bytes) -> None:
        """Queue bytes for sending.

        Raises:
            SMTPServerDisconnected: the connection is closed.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise self._error or SMTPServerDisconnected("Connection closed")
        transport.write(data)

    def wait_for_replies(
        self,
        count: int,
        timeout: float | None,
        on_ready: Callable[[], None],
        on_error: Callable[[SMTPException], None],
    ) -> bool:
        """Arrange for ``on_ready()`` once ``count`` replies are parsed.

        Returns False, arranging nothing, when they are already there. The
        callbacks are never called from inside this method. ``on_error``
        gets the reason if the connection fails or ``timeout`` passes first
        (SMTPReadTimeoutError).

        Raises:
            SMTPServerDisconnected / SMTPProtocolError: the connection failed already.
        """
        if self.connection.ready_events >= count:
            return False
        if self._error is not None:
            raise self._error
        # _subscribe(), inline: a batch waits once per reply group.
        self._wanted, self._draining = count, False
        self._on_ready, self._on_error = on_ready, on_error
        if timeout is not None:
            deadline = self._deadline = self.loop.time() + timeout
            self._timeout_value = timeout
            if self._timer is None or self._timer_when > deadline:
                self._arm_timer(deadline)
        return True

    def wait_for_drain(
        self,
        timeout: float | None,
        on_ready: Callable[[], None],
        on_error: Callable[[SMTPException], None],
    ) -> bool:
        """Arrange for ``on_ready()`` once the send buffer has room again.

        Returns False, arranging nothing, when it has room now. ``on_error``
        gets SMTPTimeoutError if it does not drain within ``timeout``, or the
        reason the connection failed.
        """
        if not self._paused:
            return False
        if self._error is not None:
            raise self._error
        self._subscribe(0, True, timeout, on_ready, on_error)
        return True

    def _subscribe(
        self,
        count: int,
        draining: bool,
        timeout: float | None,
        on_ready: Callable[[], None],
        on_error: Callable[[SMTPException], None],
    ) -> None:
        self._wanted, self._draining = count, draining
        self._on_ready, self._on_error = on_ready, on_error
        if timeout is not None:
            self._arm_deadline(timeout)

    def stop_waiting(self) -> None:
        """Forget the waiting consumer (it was served, failed or gave up)."""
        self._on_ready = self._on_error = None
        self._deadline = None

    async def read_events(self, count: int, timeout: float | None) -> list[Event]:
        """Wait for ``count`` more replies; return them with their commands.

        Raises:
            SMTPReadTimeoutError: they did not all arrive within ``timeout``.
            SMTPServerDisconnected: the connection ended first.
            SMTPProtocolError: the server broke the protocol.
        """
        connection = self.connection
        if connection.ready_events < count:
            await self._wait(lambda ready, fail: self.wait_for_replies(count, timeout, ready, fail))
        events = []
        for _ in range(count):
            event = connection.next_event()
            assert event is not None
            events.append(event)
        return events

    async def drain(self, timeout: float | None) -> None:
        """Wait until the send buffer has room again (after a large write).

        Raises:
            SMTPTimeoutError: it did not drain within ``timeout``.
            SMTPServerDisconnected: the connection ended.
        """
        await self._wait(lambda ready, fail: self.wait_for_drain(timeout, ready, fail))

    async def _wait(
        self,
        subscribe: Callable[[Callable[[], None], Callable[[SMTPException], None]], bool],
    ) -> None:
        future: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        def fail(error: SMTPException) -> None:
            if not future.done():
                future.set_exception(error)

        if not subscribe(ready, fail):
            return
        try:
            await future
        finally:
            if self._on_ready is ready:
                self.stop_waiting()

    # One lazily re-armed timer serves every wait: most waits end long before
    # their deadline, and scheduling and cancelling a timer per reply would
    # cost more than the rest of the reply's handling.

    def _arm_deadline(self, timeout: float) -> None:
        deadline = self._deadline = self.loop.time() + timeout
        self._timeout_value = timeout
        # The timer stays when it fires no later than the new deadline: it
        # then finds the deadline moved on and re-arms itself for it.
        if self._timer is None or self._timer_when > deadline:
            self._arm_timer(deadline)

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._on_error is None:
            return
        if deadline - self.loop.time() > 0.001:  # a later wait moved the deadline on
            self._arm_timer(deadline)
            return
        timeout = self._timeout_value
        error: SMTPException = (
            SMTPTimeoutError(f"Timed out sending data ({timeout} s)")
            if self._draining
            else SMTPReadTimeoutError(f"Timed out waiting for a reply ({timeout} s)")
        )
        self._notify_error(error)

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None:
        """Upgrade this connection to TLS in place (after a 220 to STARTTLS).

        Raises:
            SMTPTLSError: the handshake failed (SMTPCertificateError when the
                certificate or host name did not verify).
            SMTPConnectTimeoutError: the handshake took longer than ``timeout``.
        """
        transport = self.transport
        if transport is None or self._error is not None or transport.is_closing():
            # e.g. bytes injected after the 220 already failed the connection
            raise self._error or SMTPServerDisconnected("Connection closed")
        try:
            new_transport = await wait_for(
                self.loop.start_tls(
                    transport,
                    self,
                    context,
                    server_side=False,
                    server_hostname=server_hostname,
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            self.abort()
            raise SMTPConnectTimeoutError(f"TLS handshake timed out ({timeout} s)") from None
        except ssl.SSLError as exc:
            self.abort()
            raise translate_tls_error(exc, "STARTTLS") from None
        except OSError as exc:
            self.abort()
            raise SMTPServerDisconnected(f"Connection lost during STARTTLS: {exc}") from None
        if new_transport is None:  # pragma: no cover - only without a running transport
            raise SMTPServerDisconnected("Connection lost during STARTTLS")
        if self._error is not None or self.transport is None:
            # uvloop may complete start_tls() for a socket the server closed
            # meanwhile (asyncio raises instead): the connection is gone all the same.
            new_transport.abort()
            raise SMTPServerDisconnected(f"Connection lost during STARTTLS ({self._error})")
        self.transport = new_transport

    def extra(self, name: str, default: Any = None) -> Any:
        """Transport information (``peername``, ``sslcontext``, ``ssl_object``...)."""
        transport = self.transport
        return default if transport is None else transport.get_extra_info(name, default)

    @property
    def encrypted(self) -> bool:
        """Whether TLS protects the connection."""
        return self.extra("ssl_object") is not None

    @property
    def local(self) -> bool:
        """Whether the peer is on this host (a Unix socket or a loopback address)."""
        if self.proxied:
            return False
        sock = self.extra("socket")
        if sock is not None and getattr(sock, "family", None) == getattr(socket, "AF_UNIX", -1):
            return True
        peer = self.extra("peername")
        if isinstance(peer, tuple) and peer:
            try:
                return ipaddress.ip_address(str(peer[0]).split("%")[0]).is_loopback
            except ValueError:
                return False
        return False

    def close(self) -> None:
        """Close after flushing what is queued (TLS: after close_notify)."""
        self._shut(abort=False)

    def abort(self) -> None:
        """Close at once, dropping anything queued (the state is in doubt)."""
        self._shut(abort=True)

    def _shut(self, *, abort: bool) -> None:
        transport = self.transport
        if transport is not None:
            if self.loop.is_closed():
                _release_without_loop(transport)
                self.transport = None
            elif abort:
                transport.abort()
            else:
                transport.close()
        self._set_error(SMTPServerDisconnected("Connection closed"))

    async def wait_closed(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the socket to close, then force it.

        A TLS close waits for the peer's close_notify; a loop that ends right
        after would leave the socket open.
        """
        if self._closed.done():
            return
        try:
            await wait_for(asyncio.shield(self._closed), grace)
        except asyncio.TimeoutError:
            self.abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(asyncio.shield(self._closed), 1.0)


def _release_without_loop(transport: asyncio.BaseTransport) -> None:
    """Close the socket of a transport whose event loop is already closed.

    asyncio can no longer close it (that needs the loop), and its finaliser
    would warn about a leaked socket. This happens when a client connected
    inside ``asyncio.run(...)`` is closed after that call returned. Uses
    asyncio's private attributes, guarded: at worst the socket is left to
    the garbage collector, as before.
    """
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    layers: tuple[Any, ...] = (transport, inner)
    for layer in layers:
        if layer is None:
            continue
        sock = getattr(layer, "_sock", None)
        if sock is not None:
            sock.close()
            layer._sock = None
        if getattr(layer, "_closed", None) is False:
            layer._closed = True


async def open_transport(config: ConnectionConfig, timeout: float | None) -> SMTPTransport:
    """Connect as ``config`` says (TCP, Unix socket or given socket; implicit TLS).

    Raises:
        SMTPConnectTimeoutError: connecting (and the TLS handshake) took too long.
        SMTPTLSError: the implicit TLS handshake failed.
        SMTPConnectError: the connection could not be made.
    """
    loop = asyncio.get_running_loop()
    host, port = config.effective_hostname, config.effective_port
    context = config.build_tls_context() if config.use_tls else None
    # The name the certificate must match: the host we dial, or for a given
    # socket the hostname the caller named (if any).
    server_hostname = None
    if context is not None:
        server_hostname = config.hostname if config.sock is not None else host
    made: list[SMTPTransport] = []

    def factory() -> SMTPTransport:
        protocol = SMTPTransport(ClientConnection())
        made.append(protocol)
        return protocol

    # Worded as aiosmtplib's errors, which name the port tried (the default one too).
    where = f"{host} on port {port}"
    try:
        if config.sock is not None:
            where = "the given socket"
            connecting = loop.create_connection(
                factory, sock=config.sock, ssl=context, server_hostname=server_hostname
            )
        elif config.socket_path is not None:
            where = f"Unix socket {config.socket_path!r}"
            connecting = loop.create_unix_connection(
                factory,
                path=config.socket_path,  # type: ignore[arg-type]
                ssl=context,
                server_hostname=server_hostname,
            )
        elif config.proxy is not None:
            where = f"{host}:{port} through the proxy {config.proxy}"
            connecting = _through_proxy(config, factory, context, server_hostname, timeout)
        else:
            connecting = loop.create_connection(
                factory,
                host=host,
                port=port,
                ssl=context,
                server_hostname=server_hostname,
                local_addr=config.source_address,
            )
        try:
            _, protocol = await wait_for(connecting, timeout)
        except BaseException:
            # Cancelled (or timed out) just as the connection was made: the
            # loop may have handed a transport to nobody. Close it, never leak it.
            for orphan in made:
                orphan.abort()
            raise
        protocol.proxied = config.proxy is not None
    except SMTPException:
        raise  # already ours (the proxy's errors)
    except asyncio.TimeoutError:
        raise SMTPConnectTimeoutError(f"Timed out connecting to {where}") from None
    except ssl.SSLError as exc:
        raise translate_tls_error(exc, f"Connecting to {where}") from None
    except OSError as exc:
        raise SMTPConnectError(f"Error connecting to {where}: {exc}") from None
    return protocol


async def _through_proxy(
    config: ConnectionConfig,
    factory: Callable[[], SMTPTransport],
    context: ssl.SSLContext | None,
    server_hostname: str | None,
    timeout: float | None,
) -> tuple[asyncio.Transport, SMTPTransport]:
    """Tunnel to the server through ``config.proxy``; TLS (if any) runs end to end and
    verifies the SMTP server's name."""
    assert config.proxy is not None
    sock = await config.proxy.open(
        config.effective_hostname,
        config.effective_port,
        timeout=timeout,
        local_addr=config.source_address,
    )
    try:
        return await asyncio.get_running_loop().create_connection(
            factory, sock=sock, ssl=context, server_hostname=server_hostname
        )
    except BaseException:
        sock.close()
        raise
