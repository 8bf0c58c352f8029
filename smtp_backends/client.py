"""The SMTP client: aiosmtplib's public API over the sans-IO core, plus pipelining.

One :class:`SMTP` instance owns at most one connection, used by one
transaction at a time (an :class:`asyncio.Lock` serialises concurrent
callers). Any timeout, cancellation or protocol error closes the connection:
its state is in doubt, so it is never reused.
"""

from __future__ import annotations

import asyncio
import email.message
import enum
import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from . import event_hooks
from . import events as _events
from .config import ConnectionConfig, OAuthTokenGenerator, SocketPath
from .deadline import SendClock
from .delivery import ContentCallback, ResultCallback, deliver
from .errors import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPGreetingLostError,
    SMTPHeloError,
    SMTPInsecureAuthError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .message import envelope_for_data, envelope_for_message, message_bytes
from .protocol import commands
from .protocol.auth import MECHANISMS, AuthExchange, Credentials, Mechanism, XOAuth2
from .protocol.connection import Command, Phase
from .protocol.data import END_OF_DATA, encode_content
from .protocol.dsn import DSN, add_rcpt_parameters, mail_parameters
from .protocol.extensions import Extensions
from .protocol.replies import SMTPResponse
from .protocol.transaction import Envelope, Outcome
from .transport import SMTPTransport, log_reply, log_sent, logger, open_transport

if TYPE_CHECKING:
    from .dkim import DKIMSigner
    from .failover import Failover, Host
    from .proxy import SMTPProxy
    from .ratelimit import RateLimiter

__all__ = ("SMTP", "BatchItem", "Default", "ReadyItem", "send")

#: One ready message of a batch: a message object, or ``(sender, recipients,
#: data)`` as :meth:`SMTP.sendmail` takes them.
ReadyItem = email.message.Message | tuple[str, str | Sequence[str], str | bytes]
#: What :meth:`SMTP.send_messages` takes per message: a :data:`ReadyItem`, or a
#: callable without arguments returning one, called just before that message is
#: sent, while the previous one is on the wire (so that rendering overlaps the
#: network); whatever it raises becomes that message's outcome.
BatchItem = ReadyItem | Callable[[], ReadyItem]

# Above this size a group's pieces are written one by one instead of joined,
# so a large message is not copied just to be sent.
_JOIN_LIMIT = 256 * 1024


class Default(enum.Enum):
    """Marks "use the client's default timeout" in a ``timeout=`` argument."""

    token = 0


_default = Default.token
Timeout = float | None | Literal[Default.token]

_fqdn: str | None = None


async def _default_local_hostname() -> str:
    """This host's FQDN for EHLO, looked up once per process off the event loop."""
    global _fqdn
    if _fqdn is None:
        name = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn)
        try:
            commands.ehlo_name(name)
            name.encode("ascii")
        except (ValueError, UnicodeEncodeError):
            name = "localhost"
        _fqdn = name
    return _fqdn


class _ConfigOption:
    """Exposes one :class:`ConnectionConfig` field as an SMTP attribute (as aiosmtplib)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, client: SMTP | None, owner: type) -> Any:
        if client is None:
            return self
        return getattr(client._config, self.name)

    def __set__(self, client: SMTP, value: Any) -> None:
        client._config = client._config.replace(**{self.name: value})


class SMTP:
    """An asyncio SMTP client, compatible with aiosmtplib's ``SMTP``.

    Constructing it never connects: await :meth:`connect`, or use
    ``async with SMTP(...) as client:``. Every keyword may also be given to
    :meth:`connect`.

    Args:
        hostname: server name or address (default ``"localhost"``).
        port: server port (default 465 with ``use_tls``, 587 with
            ``start_tls=True``, else 25).
        username: log in as this user after connecting.
        password: password for ``username``.
        oauth_token_generator: async callable giving an OAuth 2.0 access token
            (XOAUTH2), instead of ``password``.
        local_hostname: name sent with EHLO/HELO (default: this host's FQDN).
        source_address: ``(host, port)`` to bind before connecting.
        timeout: default seconds for every operation (60); None waits forever.
        send_timeout: most seconds for one whole send on top of ``timeout``
            (None, the default: no bound); see :meth:`send_message`.
        use_tls: implicit TLS from the first byte (port 465).
        start_tls: None upgrades when the server offers STARTTLS; True
            requires it (the connection fails if not offered); False never
            upgrades on connect (call :meth:`starttls` yourself).
        validate_certs: verify the server's certificate and host name.
        client_cert: path of a client certificate (PEM).
        client_key: path of its private key.
        tls_context: an :class:`ssl.SSLContext` to use as is.
        cert_bundle: path of extra trusted CA certificates.
        socket_path: connect to a Unix domain socket instead.
        sock: an already connected socket to use instead.
        pipelining: use ESMTP PIPELINING (RFC 2920) when the server offers it.
        allow_insecure_auth: allow AUTH over an unencrypted connection to a
            host other than this one.
        dkim: a :class:`~smtp_backends.dkim.DKIMSigner`: every message sent
            is DKIM-signed (its final bytes, before dot-stuffing).
        rate_limit: a :class:`~smtp_backends.ratelimit.RateLimiter`: each
            message waits for its turn (shared with everyone holding it).
        failover: a :class:`~smtp_backends.failover.Failover`: hosts to try
            in order instead of ``hostname``/``port``.
        proxy: a :class:`~smtp_backends.proxy.SMTPProxy` (SOCKS5, SOCKS4 or
            HTTP CONNECT) to reach the server through.
        dsn: a :class:`~smtp_backends.protocol.dsn.DSN`: delivery status
            notifications every message asks for (RFC 3461).
        requiretls: send every message with REQUIRETLS (RFC 8689).

    Raises:
        ValueError: contradictory options (``use_tls`` with ``start_tls=True``...).
    """

    hostname = _ConfigOption()
    port = _ConfigOption()
    local_hostname = _ConfigOption()
    source_address = _ConfigOption()
    timeout = _ConfigOption()
    send_timeout = _ConfigOption()
    use_tls = _ConfigOption()
    validate_certs = _ConfigOption()
    client_cert = _ConfigOption()
    client_key = _ConfigOption()
    tls_context = _ConfigOption()
    cert_bundle = _ConfigOption()
    socket_path = _ConfigOption()
    sock = _ConfigOption()
    pipelining = _ConfigOption()
    allow_insecure_auth = _ConfigOption()

    def __init__(
        self,
        *,
        hostname: str | None = None,
        port: int | None = None,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        oauth_token_generator: OAuthTokenGenerator | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = 60,
        use_tls: bool = False,
        start_tls: bool | None = None,
        validate_certs: bool = True,
        client_cert: str | None = None,
        client_key: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        cert_bundle: str | None = None,
        socket_path: SocketPath | None = None,
        sock: socket.socket | None = None,
        pipelining: bool = True,
        allow_insecure_auth: bool = False,
        send_timeout: float | None = None,
        dkim: DKIMSigner | None = None,
        rate_limit: RateLimiter | None = None,
        failover: Failover | None = None,
        proxy: SMTPProxy | None = None,
        dsn: DSN | None = None,
        requiretls: bool = False,
    ) -> None:
        self._config = ConnectionConfig(
            hostname=hostname,
            port=port,
            username=username,
            password=password,
            oauth_token_generator=oauth_token_generator,
            local_hostname=local_hostname,
            source_address=source_address,
            timeout=timeout,
            use_tls=use_tls,
            start_tls=start_tls,
            validate_certs=validate_certs,
            client_cert=client_cert,
            client_key=client_key,
            tls_context=tls_context,
            cert_bundle=cert_bundle,
            socket_path=socket_path,
            sock=sock,
            pipelining=pipelining,
            allow_insecure_auth=allow_insecure_auth,
            send_timeout=send_timeout,
            dkim=dkim,
            rate_limit=rate_limit,
            failover=failover,
            proxy=proxy,
            dsn=dsn,
            requiretls=requiretls,
        )
        self._start_disconnected()

    def _start_disconnected(self) -> None:
        self._transport: SMTPTransport | None = None
        # The last transport closed, until its socket is gone (see wait_closed).
        self._closing: SMTPTransport | None = None
        self._lock: asyncio.Lock | None = None
        self._failover_host: Host | None = None  # with failover: the host connected to
        self._forget_server()

    def _forget_server(self) -> None:
        """Drop what EHLO/HELO told us (on close, and after STARTTLS: RFC 3207 4.2)."""
        self._extensions = Extensions()
        self._ehlo_response: SMTPResponse | None = None
        #: The reply to the last HELO, if HELO was used.
        self.last_helo_response: SMTPResponse | None = None

    @classmethod
    def from_config(cls, config: ConnectionConfig) -> SMTP:
        """A client for an already validated :class:`ConnectionConfig` (no second validation)."""
        client = cls.__new__(cls)
        client._config = config
        client._start_disconnected()
        return client

    @property
    def config(self) -> ConnectionConfig:
        """The connection settings in force."""
        return self._config

    def __repr__(self) -> str:
        config = self._config
        where = (
            f"socket {config.socket_path!r}"
            if config.socket_path is not None
            else f"{config.effective_hostname}:{config.effective_port}"
        )
        if self._transport is None or not self._transport.is_open:
            return f"<SMTP {where} disconnected>"
        tls = "TLS" if self._transport.encrypted else "plaintext"
        return f"<SMTP {where} {self._transport.connection.phase.value}, {tls}>"

    # Context manager -----------------------------------------------------

    async def __aenter__(self) -> SMTP:
        if not self.is_connected:
            await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, (ConnectionError, TimeoutError)) or not self.is_connected:
            transport = self._transport
            self.close()
            if transport is not None:
                await transport.wait_closed(grace=1.0)
            return
        try:
            await self.quit()
        except (SMTPServerDisconnected, SMTPResponseException, SMTPTimeoutError):
            pass
        finally:
            self.close()

    # State -----------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether a usable connection is open."""
        transport = self._transport
        return (
            transport is not None
            and transport.is_open
            and not transport.loop.is_closed()
            and transport.connection.phase not in (Phase.CLOSED, Phase.ERROR)
        )

    @property
    def last_ehlo_response(self) -> SMTPResponse | None:
        """The reply to the last EHLO (None before one, and after STARTTLS)."""
        return self._ehlo_response

    @property
    def is_ehlo_or_helo_needed(self) -> bool:
        """Whether EHLO/HELO must be sent before a transaction."""
        transport = self._transport
        return transport is None or transport.connection.phase is not Phase.READY

    @property
    def supports_esmtp(self) -> bool:
        """Whether the server answered EHLO (rather than only HELO)."""
        return self._ehlo_response is not None

    @property
    def esmtp_extensions(self) -> dict[str, str]:
        """Extensions from the last EHLO: lower-case keyword -> parameters."""
        return dict(self._extensions.keywords)

    @property
    def server_auth_methods(self) -> list[str]:
        """AUTH mechanisms the server offered, upper case."""
        return list(self._extensions.auth_mechanisms)

    @property
    def supported_auth_methods(self) -> list[str]:
        """Mechanisms both the server and :meth:`login` support, in preference order."""
        offered = self._extensions.auth_mechanisms
        return [name.lower() for name in MECHANISMS if name in offered]

    def supports_extension(self, extension: str, /) -> bool:
        """Whether the server advertised ``extension`` in its last EHLO reply."""
        return self._extensions.supports(extension)

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """The connection's asyncio transport (an SSL one after TLS), or None."""
        transport = self._transport
        return None if transport is None else transport.transport

    @property
    def protocol(self) -> asyncio.BaseProtocol | None:
        """The connection's asyncio protocol object, or None when not connected.

        As aiosmtplib's attribute of that name, for code that checks it against
        None; its methods are smtp_backends' internals.
        """
        return self._transport

    def get_transport_info(self, key: str) -> Any:
        """Information about the transport (``peername``, ``sslcontext``, ...).

        Raises:
            SMTPServerDisconnected: not connected.
        """
        return self._require_transport().extra(key)

    def _require_transport(self) -> SMTPTransport:
        transport = self._transport
        if transport is not None and transport.connection.error is not None:
            # Say why the connection is unusable (say, garbage after a good reply).
            error = transport.connection.error
            self.close()
            raise SMTPProtocolError(f"Connection unusable after an earlier error: {error.message}")
        if transport is None or not self.is_connected:
            raise SMTPServerDisconnected("Server not connected (call connect() first)")
        return transport

    def _timeout(self, timeout: Timeout) -> float | None:
        return self._config.timeout if timeout is _default else timeout

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # Connecting ------------------------------------------------------------

    async def connect(self, *, timeout: Timeout = _default, **options: Any) -> SMTPResponse:
        """Connect, read the greeting, upgrade with STARTTLS and log in as configured.

        Takes the constructor's keywords; they replace the client's settings,
        except ``timeout``, which bounds this connect only (each step of it:
        connecting, the greeting, EHLO, STARTTLS and the login), as in
        aiosmtplib: the client's :attr:`timeout` stays as it was.
        Returns the server's greeting.

        Raises:
            ValueError: contradictory options.
            SMTPConnectError: the connection failed (SMTPTLSError for a TLS
                failure, SMTPConnectResponseError for a greeting other than 220).
            SMTPConnectTimeoutError: connecting or the greeting took too long.
            SMTPNotSupported: ``start_tls=True`` and the server offers no STARTTLS.
            SMTPAuthenticationError: the login failed.
        """
        # As aiosmtplib: None for these two means "not given"; for the others it
        # is a value (hostname=None means localhost, timeout=None no timeout).
        for flag in ("use_tls", "validate_certs", "pipelining", "allow_insecure_auth"):
            if options.get(flag, 0) is None:
                del options[flag]
        self._config = self._config.replace(**options)
        if self.is_connected:
            raise SMTPException("This client is already connected")
        self.close()
        config = self._config
        if timeout is not _default:
            # Validated as the constructor's, and used for this connect only.
            config = config.replace(timeout=timeout)
        self._lock = None  # a new connection may live on another event loop
        started = time.perf_counter()
        async with self._get_lock():
            if config.failover is None:
                greeting = await self._connect_to(config)
            else:
                host, self._config, greeting = await config.failover.connect(
                    self._connect_to, config
                )
                self._failover_host = host
        self._opened_at = time.perf_counter()
        if _events.bus.active:
            encrypted = self._require_transport().encrypted
            event_hooks.connection_opened(self._config, started, encrypted)
        return greeting

    async def _connect_to(self, config: ConnectionConfig) -> SMTPResponse:
        self._transport = await open_transport(config, config.timeout)
        try:
            return await self._connect_steps(config)
        except BaseException:
            self.close()
            raise

    async def _connect_steps(self, config: ConnectionConfig) -> SMTPResponse:
        timeout = config.timeout
        try:
            # Not _require_transport(): a 421 greeting already closed the session,
            # and its reply must still be read and reported.
            assert self._transport is not None
            [(_, greeting)] = await self._transport.read_events(1, timeout)
        except SMTPReadTimeoutError:
            raise SMTPConnectTimeoutError(
                f"Timed out waiting for the server's greeting ({timeout} s)"
            ) from None
        except SMTPProtocolError as exc:
            raise SMTPConnectResponseError(-1, f"Malformed greeting: {exc.message}") from None
        except SMTPServerDisconnected as exc:
            raise SMTPGreetingLostError(
                f"The server closed the connection before its greeting ({exc})"
            ) from None
        log_reply(greeting)
        if greeting.code != 220:
            raise SMTPConnectResponseError(greeting.code, greeting.message)
        encrypted = config.use_tls
        if not encrypted and config.start_tls is not False:
            await self._ehlo_or_helo_if_needed(timeout)
            if self.supports_extension("starttls"):
                await self._starttls(config, None, timeout)
            elif config.start_tls:
                # Required but not offered: say nothing more over plaintext.
                self.close()
                raise SMTPNotSupported("STARTTLS extension not supported by server.")
        if config.oauth_token_generator is not None and config.username is None:
            # Never go on without the login the caller asked for.
            self.close()
            raise SMTPException("XOAUTH2 needs a username: username is required")
        if config.username is not None and (
            config.password is not None or config.oauth_token_generator is not None
        ):
            await self._ehlo_or_helo_if_needed(timeout)
            if config.oauth_token_generator is not None:
                if "XOAUTH2" not in self.server_auth_methods:
                    # Checked before the token is fetched or anything is sent.
                    self.close()
                    raise SMTPNotSupported("The server does not support XOAUTH2 authentication")
                await self._xoauth2(config.oauth_token_generator, config.username, timeout)
            else:
                assert config.password is not None
                await self._login(Credentials(config.username, config.password), timeout)
        return greeting

    async def _xoauth2(
        self, generator: OAuthTokenGenerator, username: str | bytes, timeout: float | None
    ) -> None:
        """AUTH XOAUTH2; a 535 with a refreshing provider gets one fresh token and one retry."""
        # Each token goes straight into Credentials: no local of this frame holds
        # it for a traceback to show.
        credentials = Credentials(username, await generator())
        try:
            await self._authenticate(credentials.mechanism(XOAuth2), timeout)
        except SMTPAuthenticationError as exc:
            # smtp_backends.oauth providers have refresh(); plain generators keep
            # aiosmtplib's behaviour (no retry).
            refresh = getattr(generator, "refresh", None)
            if exc.code != 535 or refresh is None or not self.is_connected:
                raise
            logger.debug("XOAUTH2 refused (535): refreshing the token and retrying once")
            credentials = Credentials(username, await refresh(credentials.secret_text()))
            await self._authenticate(credentials.mechanism(XOAuth2), timeout)

    def close(self) -> None:
        """Close the connection at once, without QUIT. Safe to call at any time."""
        transport, self._transport = self._transport, None
        if transport is not None:
            clean = transport.connection.phase is Phase.CLOSED
            if clean:
                transport.close()
            else:
                transport.abort()
            self._closing = transport
            if _events.bus.active:
                event_hooks.connection_closed(
                    self._config, clean, getattr(self, "_opened_at", None)
                )
        self._forget_server()

    async def wait_closed(self, grace: float = 1.0) -> None:
        """After :meth:`close`, wait until the socket is really closed.

        Closing is completed by the event loop (and a TLS close waits for the
        peer's close_notify); past ``grace`` seconds the socket is aborted.
        A pool counts a connection against its limit until this returns.
        """
        transport = self._closing
        if transport is not None:
            await transport.wait_closed(grace)
            if self._closing is transport:
                self._closing = None

    # Commands ----------------------------------------------------------------

    async def _exchange(self, command: Command, data: bytes, timeout: float | None) -> SMTPResponse:
        """Send one command and return its reply; close the connection if in doubt."""
        transport = self._require_transport()
        try:
            transport.write(transport.connection.send(command, data))
            if logger.isEnabledFor(logging.DEBUG):
                log_sent(command, data)
            [(_, reply)] = await transport.read_events(1, timeout)
        except BaseException:
            self.close()
            raise
        if logger.isEnabledFor(logging.DEBUG):
            log_reply(reply)
        if reply.code == 421 and command is not Command.QUIT:
            self.close()  # RFC 5321 3.8: the server is closing the channel
        return reply

    async def execute_command(self, *args: bytes, timeout: Timeout = _default) -> SMTPResponse:
        """Send a raw command (its words as bytes) and return the reply.

        Raises:
            ValueError: CR, LF or another control byte in an argument.
            SMTPServerDisconnected: not connected.
        """
        for arg in args:
            if any(b < 0x20 or b == 0x7F for b in arg):
                raise ValueError(f"Control character in command argument: {arg!r}")
        async with self._get_lock():
            return await self._exchange(
                Command.OTHER, b" ".join(args) + b"\r\n", self._timeout(timeout)
            )

    async def _simple(
        self, command: Command, line: str, timeout: Timeout, accept: tuple[int, ...]
    ) -> SMTPResponse:
        """Send one command line; raise SMTPResponseException unless the code is accepted."""
        async with self._get_lock():
            reply = await self._exchange(command, commands.command(line), self._timeout(timeout))
        if reply.code not in accept:
            raise SMTPResponseException(reply.code, reply.message)
        return reply

    async def ehlo(self, hostname: str | None = None, timeout: Timeout = _default) -> SMTPResponse:
        """Send EHLO and record the server's extensions.

        Args:
            hostname: the name to send (surrounding whitespace is dropped);
                default :attr:`local_hostname`, else this host's FQDN.

        Raises:
            ValueError: an empty ``hostname``, or one with spaces or controls inside.
            SMTPHeloError: the server refused EHLO.
        """
        async with self._get_lock():
            return await self._ehlo(hostname, self._timeout(timeout))

    async def _greet(
        self, command: Command, hostname: str | None, timeout: float | None
    ) -> SMTPResponse:
        """Send EHLO or HELO with our name; raise SMTPHeloError unless 250."""
        if hostname is None:
            name = self._config.local_hostname or await _default_local_hostname()
        else:
            # As aiosmtplib: a given name is stripped, and "" is an error (not the default).
            name = commands.ehlo_name(hostname.strip())
        reply = await self._exchange(command, commands.command(command.value, name), timeout)
        if reply.code != 250:
            raise SMTPHeloError(reply.code, reply.message)
        return reply

    async def _ehlo(self, hostname: str | None, timeout: float | None) -> SMTPResponse:
        reply = await self._greet(Command.EHLO, hostname, timeout)
        self._ehlo_response = reply
        self._extensions = Extensions.parse(reply.message)
        transport = self._require_transport()
        transport.connection.pipelining = self._config.pipelining and self._extensions.supports(
            "pipelining"
        )
        return reply

    async def helo(self, hostname: str | None = None, timeout: Timeout = _default) -> SMTPResponse:
        """Send HELO (no extensions).

        Args:
            hostname: as for :meth:`ehlo`.

        Raises:
            ValueError: an empty ``hostname``, or one with spaces or controls inside.
            SMTPHeloError: the server refused HELO.
        """
        async with self._get_lock():
            return await self._helo(hostname, self._timeout(timeout))

    async def _helo(self, hostname: str | None, timeout: float | None) -> SMTPResponse:
        reply = await self._greet(Command.HELO, hostname, timeout)
        self.last_helo_response = reply
        self._extensions = Extensions()
        self._ehlo_response = None
        return reply

    async def _ehlo_or_helo_if_needed(self, timeout: Timeout = _default) -> None:
        """EHLO (falling back to HELO when EHLO is refused) unless already done."""
        if not self.is_ehlo_or_helo_needed:
            return
        timeout = self._timeout(timeout)
        try:
            await self._ehlo(None, timeout)
        except SMTPHeloError as exc:
            if exc.code == 421 or not self.is_connected:
                raise
            await self._helo(None, timeout)

    async def help(self, timeout: Timeout = _default) -> str:
        """Send HELP and return the text of the reply.

        Raises:
            SMTPResponseException: a reply other than 211 or 214.
        """
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            await self._ehlo_or_helo_if_needed(timeout_value)
            reply = await self._exchange(Command.OTHER, b"HELP\r\n", timeout_value)
        if reply.code not in (211, 214, 250):
            raise SMTPResponseException(reply.code, reply.message)
        return reply.message

    async def rset(self, timeout: Timeout = _default) -> SMTPResponse:
        """Send RSET (abandon the current transaction).

        Raises:
            SMTPResponseException: a reply other than 250.
        """
        return await self._simple(Command.RSET, "RSET", timeout, (250,))

    async def noop(self, timeout: Timeout = _default) -> SMTPResponse:
        """Send NOOP (checks that the connection is alive).

        Raises:
            SMTPResponseException: a reply other than 250.
        """
        return await self._simple(Command.NOOP, "NOOP", timeout, (250,))

    async def vrfy(
        self,
        address: str,
        /,
        *,
        options: Iterable[str] | None = None,
        timeout: Timeout = _default,
    ) -> SMTPResponse:
        """Send VRFY for ``address`` (a mailbox or a user's name).

        Args:
            options: ESMTP parameters; ``SMTPUTF8`` (RFC 6531) sends a
                non-ASCII ``address`` as UTF-8.

        Raises:
            ValueError: an unsafe address or option, or a non-ASCII address
                without ``SMTPUTF8``.
            SMTPNotSupported: ``SMTPUTF8`` given and the server does not offer it.
            SMTPResponseException: a reply other than 250, 251 or 252.
        """
        return await self._query("VRFY", address, options, timeout, (250, 251, 252))

    async def expn(
        self,
        address: str,
        /,
        *,
        options: Iterable[str] | None = None,
        timeout: Timeout = _default,
    ) -> SMTPResponse:
        """Send EXPN for a mailing list.

        Args:
            options: as for :meth:`vrfy`.

        Raises:
            ValueError: an unsafe argument or option.
            SMTPNotSupported: ``SMTPUTF8`` given and the server does not offer it.
            SMTPResponseException: a reply other than 250, 251 or 252.
        """
        return await self._query("EXPN", address, options, timeout, (250, 251, 252))

    async def _query(
        self,
        verb: str,
        address: str,
        options: Iterable[str] | None,
        timeout: Timeout,
        accept: tuple[int, ...],
    ) -> SMTPResponse:
        """VRFY or EXPN: EHLO first if needed (SMTPUTF8 must be offered), then the command."""
        # An empty argument is the server's to refuse (501), as in aiosmtplib.
        argument = commands.envelope_address(address, allow_empty=True)
        parameters = [commands.option(value) for value in options or ()]
        utf8 = any(value.upper() == "SMTPUTF8" for value in parameters)
        line_parts = [argument, *parameters] if argument else parameters
        # Encoded before anything is sent: a non-ASCII address needs SMTPUTF8.
        line = commands.command(verb, *line_parts, encoding="utf-8" if utf8 else "ascii")
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            await self._ehlo_or_helo_if_needed(timeout_value)
            if utf8 and not self.supports_extension("smtputf8"):
                raise SMTPNotSupported("SMTPUTF8 is not supported by this server")
            reply = await self._exchange(Command.OTHER, line, timeout_value)
        if reply.code not in accept:
            raise SMTPResponseException(reply.code, reply.message)
        return reply

    async def quit(self, timeout: Timeout = _default) -> SMTPResponse:
        """Send QUIT and close the connection.

        Raises:
            SMTPResponseException: a reply other than 221 (the connection is
                closed all the same).
        """
        transport = self._transport
        try:
            return await self._simple(Command.QUIT, "QUIT", timeout, (221,))
        finally:
            self.close()
            if transport is not None:
                await transport.wait_closed(grace=1.0)

    async def mail(
        self,
        sender: str,
        /,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Timeout = _default,
    ) -> SMTPResponse:
        """Send MAIL FROM (start a transaction).

        Raises:
            ValueError: an unsafe address or option (UnicodeEncodeError for an
                address that ``encoding`` cannot represent, as in aiosmtplib).
            SMTPSenderRefused: a reply other than 250.
        """
        if isinstance(sender, str):
            sender.encode(encoding)
        data = commands.mail_from(sender, options or (), utf8=encoding.lower() != "ascii")
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            await self._ehlo_or_helo_if_needed(timeout_value)
            reply = await self._exchange(Command.MAIL, data, timeout_value)
        if reply.code != 250:
            raise SMTPSenderRefused(reply.code, reply.message, sender)
        return reply

    async def rcpt(
        self,
        recipient: str,
        /,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Timeout = _default,
    ) -> SMTPResponse:
        """Send RCPT TO (add a recipient).

        Raises:
            ValueError: an unsafe address or option (UnicodeEncodeError for an
                address that ``encoding`` cannot represent, as in aiosmtplib).
            SMTPRecipientRefused: a reply other than 250 or 251.
        """
        if isinstance(recipient, str):
            recipient.encode(encoding)
        data = commands.rcpt_to(recipient, options or (), utf8=encoding.lower() != "ascii")
        async with self._get_lock():
            reply = await self._exchange(Command.RCPT, data, self._timeout(timeout))
        if reply.code not in (250, 251):
            raise SMTPRecipientRefused(reply.code, reply.message, recipient)
        return reply

    async def data(self, message: str | bytes, /, timeout: Timeout = _default) -> SMTPResponse:
        """Send DATA and then the message (normalised and dot-stuffed).

        Raises:
            SMTPDataError: DATA or the content refused.
        """
        content = encode_content(message_bytes(message))
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            reply = await self._exchange(Command.DATA, b"DATA\r\n", timeout_value)
            if reply.code != 354:
                raise SMTPDataError(reply.code, reply.message)
            reply = await self._exchange(Command.CONTENT, content + END_OF_DATA, timeout_value)
        if reply.code != 250:
            raise SMTPDataError(reply.code, reply.message)
        return reply

    # TLS -------------------------------------------------------------------

    async def starttls(
        self,
        server_hostname: str | None = None,
        validate_certs: bool | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        cert_bundle: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        timeout: Timeout = _default,
    ) -> SMTPResponse:
        """Upgrade the connection with STARTTLS (RFC 3207).

        Everything learned before the handshake (extensions, buffered bytes)
        is discarded; EHLO is sent again before the next transaction.

        Raises:
            SMTPException: the connection already uses TLS.
            SMTPNotSupported: the server does not offer STARTTLS.
            SMTPResponseException: the server refused STARTTLS.
            SMTPTLSError: the handshake failed.
        """
        config = self._config.replace(
            skip_none=True,
            validate_certs=validate_certs,
            client_cert=client_cert,
            client_key=client_key,
            cert_bundle=cert_bundle,
            tls_context=tls_context,
        )
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            if self._require_transport().encrypted:
                raise SMTPException("Connection already using TLS")
            await self._ehlo_or_helo_if_needed(timeout_value)
            if not self.supports_extension("starttls"):
                raise SMTPNotSupported("STARTTLS extension not supported by server.")
            response = await self._starttls(config, server_hostname, timeout_value)
            # As aiosmtplib: the TLS options given here are the client's from now on.
            self._config = config
            return response

    async def _starttls(
        self, config: ConnectionConfig, server_hostname: str | None, timeout: float | None
    ) -> SMTPResponse:
        transport = self._require_transport()
        if transport.encrypted:
            raise SMTPException("Connection already using TLS")
        context = config.build_tls_context()
        reply = await self._exchange(Command.STARTTLS, b"STARTTLS\r\n", timeout)
        if reply.code != 220:
            raise SMTPResponseException(reply.code, reply.message)
        try:
            await transport.start_tls(
                context, server_hostname or config.effective_hostname, timeout
            )
            transport.connection.tls_established()
        except BaseException:
            self.close()
            raise
        self._forget_server()
        return reply

    # Authentication --------------------------------------------------------

    def _check_auth_allowed(self) -> None:
        transport = self._require_transport()
        if transport.encrypted or transport.local or self._config.allow_insecure_auth:
            return
        raise SMTPInsecureAuthError(
            "Refusing to send credentials over an unencrypted connection to a remote "
            "host: use TLS or STARTTLS, or pass allow_insecure_auth=True"
        )

    async def login(
        self, username: str | bytes, password: str | bytes, /, timeout: Timeout = _default
    ) -> SMTPResponse:
        """Authenticate with the best mechanism both sides support.

        Tries CRAM-MD5, PLAIN, then LOGIN; a refusal of the credentials
        themselves (535) is final, other refusals move to the next mechanism.

        Raises:
            SMTPNotSupported: the server offers no AUTH, or no usable mechanism.
            SMTPInsecureAuthError: the connection is unencrypted and not local.
            SMTPAuthenticationError: the server refused, or the user name or
                password cannot be encoded as UTF-8 (raised before anything is
                sent; the error never quotes them).
        """
        credentials = Credentials(username, password)
        del password  # a traceback keeps this frame's locals: some loggers print them
        async with self._get_lock():
            return await self._login(credentials, self._timeout(timeout))

    async def _login(self, credentials: Credentials, timeout: float | None) -> SMTPResponse:
        credentials.check()  # before anything is sent
        await self._ehlo_or_helo_if_needed(timeout)
        if not self.supports_extension("auth"):
            message = "SMTP AUTH extension not supported by server."
            transport = self._transport
            if transport is not None and not transport.encrypted:
                # Servers commonly offer AUTH only once the connection is encrypted.
                message += " Try connecting via TLS (or STARTTLS)."
            raise SMTPNotSupported(message)
        names = [name for name in MECHANISMS if name in self._extensions.auth_mechanisms]
        if not names:
            raise SMTPNotSupported(
                f"No supported AUTH mechanism among {list(self._extensions.auth_mechanisms)}"
            )
        error: SMTPAuthenticationError | None = None
        for name in names:
            try:
                return await self._authenticate(credentials.mechanism(MECHANISMS[name]), timeout)
            except SMTPAuthenticationError as exc:
                error = exc
                if exc.code in (535, 454, -1) or not self.is_connected:
                    break
        assert error is not None
        raise error

    async def _auth_method(
        self, kind: type[Mechanism], credentials: Credentials, timeout: Timeout
    ) -> SMTPResponse:
        mechanism = credentials.mechanism(kind)  # raises before anything is sent
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            await self._ehlo_or_helo_if_needed(timeout_value)
            return await self._authenticate(mechanism, timeout_value)

    async def auth_plain(
        self, username: str | bytes, password: str | bytes, /, timeout: Timeout = _default
    ) -> SMTPResponse:
        """Authenticate with PLAIN (RFC 4616). Raises as :meth:`login`."""
        credentials = Credentials(username, password)
        del password  # as in login()
        return await self._auth_method(MECHANISMS["PLAIN"], credentials, timeout)

    async def auth_login(
        self, username: str | bytes, password: str | bytes, /, timeout: Timeout = _default
    ) -> SMTPResponse:
        """Authenticate with LOGIN. Raises as :meth:`login`."""
        credentials = Credentials(username, password)
        del password  # as in login()
        return await self._auth_method(MECHANISMS["LOGIN"], credentials, timeout)

    async def auth_crammd5(
        self, username: str | bytes, password: str | bytes, /, timeout: Timeout = _default
    ) -> SMTPResponse:
        """Authenticate with CRAM-MD5 (RFC 2195). Raises as :meth:`login`."""
        credentials = Credentials(username, password)
        del password  # as in login()
        return await self._auth_method(MECHANISMS["CRAM-MD5"], credentials, timeout)

    async def auth_xoauth2(
        self, username: str | bytes, access_token: str | bytes, /, timeout: Timeout = _default
    ) -> SMTPResponse:
        """Authenticate with an OAuth 2.0 access token (XOAUTH2). Raises as :meth:`login`."""
        credentials = Credentials(username, access_token)
        del access_token  # as in login()
        return await self._auth_method(XOAuth2, credentials, timeout)

    async def _authenticate(self, mechanism: Mechanism, timeout: float | None) -> SMTPResponse:
        self._check_auth_allowed()
        exchange = AuthExchange(mechanism)
        line: bytes | None = exchange.start()
        while line is not None:
            reply = await self._exchange(Command.AUTH, line, timeout)
            try:
                line = exchange.on_reply(reply)
            except SMTPAuthenticationError as exc:
                if exc.code == -1 or reply.code == 334:
                    self.close()  # abandoned mid-exchange: the server still waits for us
                raise
            except SMTPProtocolError:
                self.close()
                raise
            if line is None:
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    # Sending ---------------------------------------------------------------

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: Timeout = _default,
        send_timeout: Timeout = _default,
        dsn: DSN | None = None,
        requiretls: bool | None = None,
    ) -> Outcome:
        """Send raw message data: one whole mail transaction.

        ``message`` goes out as given, after line endings are normalised to
        CRLF and lines starting with a dot are stuffed. With PIPELINING, MAIL,
        every RCPT and DATA leave as one group.

        ``dsn`` (a :class:`~smtp_backends.protocol.dsn.DSN`) asks for delivery
        status notifications (RFC 3461) and ``requiretls`` for REQUIRETLS
        (RFC 8689), instead of the client's defaults.

        Returns:
            ``(errors, response_text)``: each refused recipient mapped to the
            server's reply, and the text of the final reply.

        Raises:
            ValueError / TypeError: a bad address, option or message, before
                anything is written.
            SMTPNotSupported: DSN or REQUIRETLS asked for and not possible
                here (not offered; REQUIRETLS without TLS), before MAIL.
            SMTPSenderRefused: MAIL refused.
            SMTPRecipientsRefused: every recipient refused.
            SMTPDataError: DATA or the content refused.
            SMTPUnknownOutcomeError: the connection ended after the content
                was sent and before the reply; the message may have been
                accepted: do not resend blindly.
            SMTPTimeoutError: an operation took longer than ``timeout``, or the
                whole call longer than ``send_timeout`` (the client's by
                default), before the end-of-data dot left: not sent. After it:
                SMTPUnknownOutcomeTimeoutError.
        """
        if _events.bus.active and not event_hooks.in_scope():
            item = (sender, recipients, message)
            return await event_hooks.scoped(
                self._config,
                [item],
                lambda _: self.sendmail(
                    sender,
                    recipients,
                    message,
                    mail_options=mail_options,
                    rcpt_options=rcpt_options,
                    timeout=timeout,
                    send_timeout=send_timeout,
                    dsn=dsn,
                    requiretls=requiretls,
                ),
                batch=False,
            )
        clock = self._clock(send_timeout)
        async with self._locked(clock):
            timeout_value = await self._ready_to_send(timeout, clock)
            dsn, extra = self._delivery_options(dsn, requiretls)
            if extra:
                mail_options = [*(mail_options or ()), *extra]
            envelope = envelope_for_data(
                sender,
                recipients,
                message,
                mail_options,
                rcpt_options,
                self._extensions,
                self._signer(),
            )
            if dsn is not None:
                add_rcpt_parameters(envelope, dsn)
            [outcome] = await self._run((envelope,), _same, timeout_value, clock=clock)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def send_message(
        self,
        message: email.message.Message,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: Timeout = _default,
        send_timeout: Timeout = _default,
        dsn: DSN | None = None,
        requiretls: bool | None = None,
    ) -> Outcome:
        """Send an :class:`email.message.EmailMessage` (or an ``email.mime`` object).

        The sender comes from Sender or From, the recipients from To, Cc and
        Bcc (the Resent-* headers for a resent message), unless given. Bcc
        headers are not transmitted. SMTPUTF8 is used when an address needs
        it; 8BITMIME when the content has 8-bit data and the server offers it.

        ``dsn`` and ``requiretls`` as :meth:`sendmail`.

        Returns and raises as :meth:`sendmail`; also ValueError when the
        message has no sender or no recipients, and SMTPNotSupported when it
        needs SMTPUTF8 and the server lacks it.
        """
        if _events.bus.active and not event_hooks.in_scope():
            return await event_hooks.scoped(
                self._config,
                [message],
                lambda _: self.send_message(
                    message,
                    sender=sender,
                    recipients=recipients,
                    mail_options=mail_options,
                    rcpt_options=rcpt_options,
                    timeout=timeout,
                    send_timeout=send_timeout,
                    dsn=dsn,
                    requiretls=requiretls,
                ),
                batch=False,
            )
        clock = self._clock(send_timeout)
        async with self._locked(clock):
            timeout_value = await self._ready_to_send(timeout, clock)
            dsn, extra = self._delivery_options(dsn, requiretls)
            if extra:
                mail_options = [*(mail_options or ()), *extra]
            envelope = envelope_for_message(
                message,
                sender,
                recipients,
                mail_options,
                rcpt_options,
                self._extensions,
                self._signer(),
            )
            if dsn is not None:
                add_rcpt_parameters(envelope, dsn)
            [outcome] = await self._run((envelope,), _same, timeout_value, clock=clock)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def sendmail_sync(self, *args: Any, **kwargs: Any) -> Outcome:
        """Blocking :meth:`sendmail`: connect, send, QUIT on a new event loop (as aiosmtplib's).

        For scripts; web apps want :mod:`smtp_backends.bridge` and a pool,
        which keep connections open across calls.

        Raises:
            RuntimeError: called while an event loop runs in this thread.
            SMTPException: as :meth:`connect` and :meth:`sendmail`.
        """

        async def connect_and_send() -> Outcome:
            async with self:
                return await self.sendmail(*args, **kwargs)

        return _run_blocking("sendmail", connect_and_send)

    def send_message_sync(self, *args: Any, **kwargs: Any) -> Outcome:
        """Blocking :meth:`send_message`; as :meth:`sendmail_sync`."""

        async def connect_and_send() -> Outcome:
            async with self:
                return await self.send_message(*args, **kwargs)

        return _run_blocking("send_message", connect_and_send)

    async def send_messages(
        self,
        messages: Iterable[BatchItem],
        /,
        *,
        timeout: Timeout = _default,
        send_timeout: Timeout = _default,
        on_result: ResultCallback | None = None,
    ) -> list[Outcome | Exception]:
        """Send many messages over this connection, pipelined when possible.

        Each item is a message object (as :meth:`send_message` takes), a
        ``(sender, recipients, data)`` tuple (as :meth:`sendmail` takes), or
        a callable without arguments returning one of those: it is called
        when its turn comes, while the previous message is on the wire, so
        that rendering a large batch overlaps the network (anything it raises
        becomes that message's outcome).
        With PIPELINING, message k's content and dot and message k+1's MAIL,
        RCPT and DATA leave as one group: one round trip per message.

        Returns:
            One outcome per message, in order: ``(errors, response_text)``,
            or the exception that message failed with. A failing message never
            stops the others; if the connection is lost, the message in flight
            gets SMTPUnknownOutcomeError (when its content was sent) or the
            connection error, and later ones an SMTPServerDisconnected saying
            they were not sent. ``send_timeout`` (the client's by default)
            bounds each message's transaction, from its first command to the
            reply to its dot; when it runs out the connection is closed, as
            for any timeout.

        Raises:
            SMTPServerDisconnected: not connected.
        """
        items = list(messages)
        if _events.bus.active and not event_hooks.in_scope():
            return await event_hooks.scoped(
                self._config,
                items,
                lambda told: self.send_messages(
                    items, timeout=timeout, send_timeout=send_timeout, on_result=told
                ),
                batch=True,
                on_result=on_result,
            )
        return await self._send_batch(items, timeout, send_timeout, on_result)

    async def _send_batch(
        self,
        items: Sequence[BatchItem],
        timeout: Timeout,
        send_timeout: Timeout,
        on_result: ResultCallback | None,
        on_content: ContentCallback | None = None,
    ) -> list[Outcome | Exception]:
        """:meth:`send_messages`; the pool also hears when content leaves before a dot."""
        limit = self._send_limit(send_timeout)
        async with self._get_lock():
            timeout_value = self._timeout(timeout)
            await self._ehlo_or_helo_if_needed(timeout_value)
            clock = SendClock(asyncio.get_running_loop(), limit) if limit is not None else None
            # One preparing function for the whole batch, called when each
            # item's turn comes: nothing per item is built or held in advance.
            return await self._run(
                items,
                self._item_preparer(),
                timeout_value,
                on_result,
                clock,
                on_content,
            )

    def _send_limit(self, send_timeout: Timeout) -> float | None:
        """The send_timeout in force: the call's, else the client's (checked)."""
        limit = self._config.send_timeout if send_timeout is _default else send_timeout
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 0
        ):
            raise ValueError(f"Invalid send_timeout: {limit!r} (seconds >= 0, or None)")
        return limit

    def _clock(self, send_timeout: Timeout) -> SendClock | None:
        """The clock of one whole send starting now (None: no send_timeout)."""
        return SendClock.starting_now(self._send_limit(send_timeout))

    def _locked(self, clock: SendClock | None) -> AbstractAsyncContextManager[Any]:
        """This connection's lock; its wait counts against ``clock``."""
        return self._get_lock() if clock is None else clock.holding(self._get_lock())

    async def _ready_to_send(self, timeout: Timeout, clock: SendClock | None) -> float | None:
        """EHLO if needed, within the time left; the per-operation timeout to use.

        Raises:
            SMTPTimeoutError: ``clock`` ran out first (nothing of the message was sent).
        """
        timeout_value = self._timeout(timeout)
        if clock is None:
            await self._ehlo_or_helo_if_needed(timeout_value)
            return timeout_value
        if self.is_ehlo_or_helo_needed:
            await clock.bound(self._ehlo_or_helo_if_needed(clock.cap(timeout_value)))
        if clock.expired():
            raise clock.not_sent()
        return timeout_value

    async def _run(
        self,
        items: Sequence[Any],
        prepare: Callable[[Any], Envelope],
        timeout: float | None,
        on_result: ResultCallback | None = None,
        clock: SendClock | None = None,
        on_content: ContentCallback | None = None,
    ) -> list[Outcome | Exception]:
        """Send ``items`` (``prepare(item)`` makes each envelope in its turn); their outcomes."""
        if _events.bus.active:  # report each message's outcome (nobody listening: no cost)
            items, prepare, on_result = event_hooks.watch(self._config, items, prepare, on_result)
        config = self._config
        if config.rate_limit is None and config.failover is None:
            return await deliver(
                self._require_transport(),
                items,
                prepare,
                timeout,
                self.close,
                on_result,
                clock,
                on_content,
            )
        return await self._run_with_policies(config, items, prepare, timeout, on_result, clock)

    async def _run_with_policies(
        self,
        config: ConnectionConfig,
        items: Sequence[Any],
        prepare: Callable[[Any], Envelope],
        timeout: float | None,
        on_result: ResultCallback | None,
        clock: SendClock | None = None,
    ) -> list[Outcome | Exception]:
        """Deliver with a rate limiter (one message per turn, see RateLimiter.send)
        and/or failover (a 421 cools the host down and leaves the message unsent)."""
        failover, host = config.failover, self._failover_host

        def judge(outcome: Outcome | Exception) -> Outcome | Exception:
            return outcome if failover is None else failover.judge(host, outcome)

        async def send_all(
            batch: Sequence[Any], make: Callable[[Any], Envelope], told: ResultCallback | None
        ) -> list[Outcome | Exception]:
            tell = None if told is None else (lambda i, outcome: told(i, judge(outcome)))
            outcomes = await deliver(
                self._require_transport(), batch, make, timeout, self.close, tell, clock
            )
            return [judge(outcome) for outcome in outcomes]

        limiter = config.rate_limit
        if limiter is None:
            return await send_all(items, prepare, on_result)

        async def send_one(envelope: Envelope) -> Outcome | Exception:
            [outcome] = await send_all((envelope,), _same, None)
            return outcome

        preparers = [functools.partial(prepare, item) for item in items]
        return await limiter.send(preparers, send_one, lambda: self.is_connected, on_result)

    def _signer(self) -> Callable[[bytes], bytes] | None:
        """What signs each message's final bytes (DKIM), or None."""
        dkim = self._config.dkim
        return None if dkim is None else dkim.sign

    def _delivery_options(
        self, dsn: DSN | None, requiretls: bool | None
    ) -> tuple[DSN | None, list[str]]:
        """The DSN request and the MAIL parameters (DSN, REQUIRETLS) for one message.

        Raises:
            SMTPNotSupported: as :func:`~smtp_backends.protocol.dsn.mail_parameters`.
        """
        config = self._config
        if dsn is None:
            dsn = config.dsn
        if requiretls is None:
            requiretls = config.requiretls
        if dsn is None and not requiretls:
            return None, []
        encrypted = self._require_transport().encrypted
        return dsn, mail_parameters(dsn, requiretls, self._extensions, encrypted)

    def _item_preparer(self) -> Callable[[BatchItem], Envelope]:
        """The preparing function of one batch (the policies are looked up once per batch)."""
        sign = self._signer()
        config = self._config
        policies = config.dsn is not None or bool(config.requiretls)
        if sign is None and not policies:
            return self._prepare_item
        return functools.partial(self._prepare_item, sign=sign, policies=policies)

    def _prepare_item(
        self,
        item: BatchItem,
        sign: Callable[[bytes], bytes] | None = None,
        policies: bool = False,
    ) -> Envelope:
        """The envelope of one batch item (a lazy item is called now).

        ``sign`` signs its bytes (DKIM); with ``policies`` the client's DSN /
        REQUIRETLS defaults apply.
        """
        ready = item() if callable(item) else item
        dsn: DSN | None = None
        extra: list[str] | None = None
        if policies:
            dsn, extra = self._delivery_options(None, None)
        extensions = self._extensions
        if isinstance(ready, tuple) and len(ready) == 3:
            envelope = envelope_for_data(
                ready[0], ready[1], ready[2], extra, None, extensions, sign
            )
        elif isinstance(ready, email.message.Message):
            envelope = envelope_for_message(ready, None, None, extra, None, extensions, sign)
        else:
            raise TypeError(
                "Expected an email message, a (sender, recipients, data) tuple or a "
                f"callable returning one, not {type(ready).__name__}"
            )
        if dsn is not None:
            add_rcpt_parameters(envelope, dsn)
        return envelope


def _same(envelope: Envelope) -> Envelope:
    """The identity, as the preparing function of an envelope already prepared."""
    return envelope


def _run_blocking(name: str, run: Callable[[], Coroutine[Any, Any, Outcome]]) -> Outcome:
    """Run ``run()`` on a new event loop; refuse (before creating it) inside a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    raise RuntimeError(f"{name}_sync() cannot run inside a running event loop: await {name}()")


async def send(
    message: email.message.Message | str | bytes,
    /,
    sender: str | None = None,
    recipients: str | Sequence[str] | None = None,
    *,
    mail_options: Iterable[str] | None = None,
    rcpt_options: Iterable[str] | None = None,
    hostname: str | None = "localhost",
    port: int | None = None,
    timeout: float | None = 60,
    **options: Any,
) -> Outcome:
    """Connect, send one message, and QUIT: the one-shot helper.

    ``message`` is an email message object (sender and recipients taken from
    its headers unless given) or raw ``str``/``bytes`` (then ``sender`` and
    ``recipients`` are required). The other keywords are :class:`SMTP`'s;
    ``send_timeout`` bounds connecting and the send together (not the QUIT
    after it, which has its own ``timeout``).

    Returns and raises as :meth:`SMTP.send_message` / :meth:`SMTP.sendmail`,
    plus the connection errors of :meth:`SMTP.connect`.
    """
    if not isinstance(message, email.message.Message):
        if sender is None:
            raise ValueError("sender is required when sending a raw message")
        if recipients is None:
            raise ValueError("recipients are required when sending a raw message")
    client = SMTP(hostname=hostname, port=port, timeout=timeout, **options)
    clock = client._clock(_default)
    left: Timeout = _default
    if clock is not None:
        await clock.bound(client.connect(), connecting=True)
        left = clock.remaining()
    async with client:
        if isinstance(message, email.message.Message):
            return await client.send_message(
                message,
                sender=sender,
                recipients=recipients,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
                send_timeout=left,
            )
        assert sender is not None and recipients is not None
        return await client.sendmail(
            sender,
            recipients,
            message,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
            send_timeout=left,
        )
