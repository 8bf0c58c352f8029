"""The client's state, its settings and the SMTP commands one at a time.

:class:`ClientBase` is the lowest layer of :class:`smtp_backends.SMTP`: one
connection (or none), what EHLO said, and every command of RFC 5321 as a
method. Connecting, TLS and AUTH are :mod:`.client_session`'s; sending whole
messages is :mod:`.client`'s.
"""

from __future__ import annotations

import asyncio
import email.message
import enum
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from . import event_hooks
from . import events as _events
from .config import ConnectionConfig, OAuthTokenGenerator, SocketPath
from .errors import (
    SMTPDataError,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from .local_hostname import default_local_hostname
from .message import message_bytes
from .protocol import commands
from .protocol.auth import MECHANISMS
from .protocol.connection import Command, Phase
from .protocol.data import END_OF_DATA, encode_content
from .protocol.dsn import DSN
from .protocol.extensions import Extensions
from .protocol.replies import SMTPResponse
from .transport import SMTPTransport, log_reply, log_sent, logger

if TYPE_CHECKING:
    from .dkim import DKIMSigner
    from .failover import Failover, Host
    from .proxy import SMTPProxy
    from .ratelimit import RateLimiter


__all__ = ("BatchItem", "ClientBase", "Default", "ReadyItem", "Timeout")

#: One ready message of a batch: a message object, or ``(sender, recipients,
#: data)`` as :meth:`SMTP.sendmail` takes them.
ReadyItem = email.message.Message | tuple[str, str | Sequence[str], str | bytes]
#: What :meth:`SMTP.send_messages` takes per message: a :data:`ReadyItem`, or a
#: callable without arguments returning one, called just before that message is
#: sent, while the previous one is on the wire (so that rendering overlaps the
#: network); whatever it raises becomes that message's outcome.
BatchItem = ReadyItem | Callable[[], ReadyItem]


class Default(enum.Enum):
    """Marks "use the client's default timeout" in a ``timeout=`` argument."""

    token = 0


_default = Default.token
Timeout = float | None | Literal[Default.token]

# What a client knows of a server before (or without) EHLO. One shared value:
# Extensions is frozen, and the client only reads it (esmtp_extensions copies).
_NOTHING_ADVERTISED = Extensions()


class _ConfigOption:
    """Exposes one :class:`ConnectionConfig` field as an SMTP attribute (as aiosmtplib)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, client: ClientBase | None, owner: type) -> Any:
        if client is None:
            return self
        return getattr(client._config, self.name)

    def __set__(self, client: ClientBase, value: Any) -> None:
        client._config = client._config.replace(**{self.name: value})


_Client = TypeVar("_Client", bound="ClientBase")


class ClientBase:
    """One connection's state and commands; see :class:`smtp_backends.SMTP`."""

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
        self._extensions = _NOTHING_ADVERTISED
        self._ehlo_response: SMTPResponse | None = None
        #: The reply to the last HELO, if HELO was used.
        self.last_helo_response: SMTPResponse | None = None

    @classmethod
    def from_config(cls: type[_Client], config: ConnectionConfig) -> _Client:
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
        self, command: Command, line: bytes, timeout: Timeout, accept: tuple[int, ...]
    ) -> SMTPResponse:
        """Send one fixed command line (with its CRLF); raise SMTPResponseException
        unless the reply's code is accepted."""
        async with self._get_lock():
            reply = await self._exchange(command, line, self._timeout(timeout))
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
            name = self._config.local_hostname or await default_local_hostname()
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
        self._extensions = _NOTHING_ADVERTISED
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
        return await self._simple(Command.RSET, b"RSET\r\n", timeout, (250,))

    async def noop(self, timeout: Timeout = _default) -> SMTPResponse:
        """Send NOOP (checks that the connection is alive).

        Raises:
            SMTPResponseException: a reply other than 250.
        """
        return await self._simple(Command.NOOP, b"NOOP\r\n", timeout, (250,))

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
            return await self._simple(Command.QUIT, b"QUIT\r\n", timeout, (221,))
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
