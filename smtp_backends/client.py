"""The SMTP client: aiosmtplib's public API over the sans-IO core, plus pipelining.

One :class:`SMTP` instance owns at most one connection, used by one
transaction at a time (an :class:`asyncio.Lock` serialises concurrent
callers). Any timeout, cancellation or protocol error closes the connection:
its state is in doubt, so it is never reused.
"""

from __future__ import annotations

import asyncio
import email.message
import functools
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from . import event_hooks
from . import events as _events
from .client_base import BatchItem, Default, ReadyItem, Timeout, _default
from .client_session import ClientSession
from .config import ConnectionConfig
from .deadline import SendClock
from .delivery import ContentCallback, ResultCallback, deliver
from .errors import (
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .message import batch_preparer, envelope_for_data, envelope_for_message
from .protocol.dsn import DSN, add_rcpt_parameters, mail_parameters
from .protocol.transaction import Envelope, Outcome

__all__ = ("SMTP", "BatchItem", "Default", "ReadyItem", "send")


class SMTP(ClientSession):
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
        """The preparing function of one batch.

        The policies, the signer and the server's extensions are looked up once
        per batch; plain data items take :func:`batch_preparer`'s fast path.
        """
        sign = self._signer()
        config = self._config
        if config.dsn is not None or config.requiretls:
            return functools.partial(self._prepare_item, sign=sign, policies=True)
        general = (
            self._prepare_item if sign is None else functools.partial(self._prepare_item, sign=sign)
        )
        return batch_preparer(self._extensions, sign, general)

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
