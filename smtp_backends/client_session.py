"""Connecting, STARTTLS and AUTH: what makes a connection ready to send.

:class:`ClientSession` adds to :class:`~.client_base.ClientBase` the steps of
:meth:`connect` (greeting, EHLO, STARTTLS, login, with failover), the TLS
upgrade and the SASL mechanisms.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from . import event_hooks
from . import events as _events
from .client_base import ClientBase, Timeout, _default
from .config import ConnectionConfig, OAuthTokenGenerator
from .errors import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPGreetingLostError,
    SMTPInsecureAuthError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from .local_hostname import prefetch_local_hostname
from .protocol.auth import MECHANISMS, AuthExchange, Credentials, Mechanism, XOAuth2
from .protocol.connection import Command
from .protocol.replies import SMTPResponse
from .transport import log_reply, logger, open_transport

__all__ = ("ClientSession",)


class ClientSession(ClientBase):
    """Connecting, TLS and authentication; see :class:`smtp_backends.SMTP`."""

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
        if options:  # (a pool connects without any: nothing to check or copy)
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
        prefetch_local_hostname(config)  # looked up while the connection opens
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
