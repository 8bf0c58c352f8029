"""``AsyncSMTPBackend``: Django's email backend contract over the sending layer.

The backend translates: Django's settings into
:class:`~smtp_backends.settings.MailerSettings` (:mod:`.config`), Django
messages into bytes and envelopes (:mod:`.envelope`), and outcomes into
Django's return values and errors. Pooling, the bridge, fork safety and
the sending itself are the :class:`~smtp_backends.mailer.Mailer`'s.
"""

from __future__ import annotations

import functools
import os
import ssl
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from smtp_backends import SMTP, ConnectionConfig, SMTPNotSupported, SMTPPool
from smtp_backends.mailer import Mailer, get_mailer
from smtp_backends.settings import OPTIONS, MailerSettings, SettingsMemo, check_option

from . import config
from .envelope import Envelope, LazyBatch, django_envelope, prep_address, smtputf8_refusal
from .functions import deferred_sends
from .lifecycle import ConnectionLifecycle, borrowing
from .signals import aapply_pre_send, apply_pre_send

__all__ = ("AsyncSMTPBackend",)

# The settings of a subclass with its own ssl_context, per class and settings:
# a new backend is built for every mailers[alias] access, and equal settings
# must keep sharing their pool (a context per instance would make a pool each).
_own_contexts: dict[tuple[type, MailerSettings], MailerSettings] = {}


class AsyncSMTPBackend(ConnectionLifecycle, BaseEmailBackend):  # type: ignore[misc]
    """Django email backend sending through smtp_backends, with pooled connections.

    Takes the stock SMTP backend's keywords; under EMAIL_BACKEND each one
    left as None defaults to its EMAIL_* setting, as in Django. Under
    Django 6.1's MAILERS the OPTIONS arrive here as keywords with the
    ``alias``; the EMAIL_* settings are then not read, ``host`` is required,
    unknown options are an error and ``port`` defaults to 465 with
    ``use_ssl``, 587 with ``use_tls`` and 25 otherwise.

    Args:
        host: server name (EMAIL_HOST).
        port: server port (EMAIL_PORT).
        username: log in as this user (EMAIL_HOST_USER); logging in needs
            both a username and a password, as in Django.
        password: its password (EMAIL_HOST_PASSWORD).
        use_tls: STARTTLS, required (EMAIL_USE_TLS).
        fail_silently: swallow sending errors (``smtplib.SMTPException`` and
            other ``OSError``) and return the number actually sent.
        use_ssl: implicit TLS from the first byte (EMAIL_USE_SSL).
        timeout: seconds for each network operation (EMAIL_TIMEOUT); None
            means 60 s.
        ssl_keyfile: client certificate key (EMAIL_SSL_KEYFILE).
        ssl_certfile: client certificate (EMAIL_SSL_CERTFILE).
        pool_size: most pooled connections per process for these settings
            that send single messages (default 4; lists of messages use one
            more, so that each list stays in order); 0 turns pooling off (a
            connection per ``send_messages()`` call, as the stock backend).
        idle_timeout: close a pooled connection idle this many seconds (60).
        validate_certs: verify the server's certificate and host name (True).
        cert_bundle: a PEM file of extra CA certificates to trust.
        tls_context: an :class:`ssl.SSLContext` to use as is.
        allow_insecure_auth: allow AUTH over an unencrypted connection to a
            host other than this one (False: such a login is refused before
            the credentials are sent).
        pipelining: use ESMTP PIPELINING when the server offers it (True).
        local_hostname: the EHLO name (default: Django's cached FQDN).
        keep_order: send a list of messages in order over one connection, as
            the stock backend does (True). False spreads a list over up to
            ``pool_size`` pooled connections at once: many times faster on a
            distant server, but the messages of one list may arrive in any
            order (SMTP never promised an order across messages anyway).
        smtputf8: send an address with a non-ASCII local part (``nø@example.dk``)
            with SMTPUTF8 (RFC 6531) when the server offers it, its message's
            headers in UTF-8; the server not offering it raises Django's
            ValueError for that address (Django 6.x). False (the default):
            such an address raises that ValueError before anything is sent,
            as Django's stock backend does.
        **kwargs: ``alias`` (Django 6.1) and anything else, handed to
            Django's ``BaseEmailBackend`` (which rejects unknown MAILERS
            options).

    The policies are options too (keywords, OPTIONS keys under MAILERS):
    ``dkim``, ``oauth``, ``rate_limit``, ``max_messages_per_connection``,
    ``failover``, ``proxy``, ``dsn`` and ``requiretls``, as plain data or
    ready objects (see :class:`~smtp_backends.settings.MailerSettings` and
    the README's policy table).

    Under EMAIL_BACKEND the options from ``pool_size`` on may also come from
    the ``SMTP_BACKENDS_OPTIONS`` setting (a dict); keywords win.

    Raises:
        ValueError / TypeError: ``use_tls`` with ``use_ssl`` (EMAIL_BACKEND),
            or an invalid option (the message names the setting).
        django.core.mail.InvalidMailer: the same problems under MAILERS, a
            missing ``host``, or an unknown option.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        pool_size: int | None = None,
        idle_timeout: float | None = None,
        validate_certs: bool | None = None,
        cert_bundle: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        allow_insecure_auth: bool | None = None,
        pipelining: bool | None = None,
        local_hostname: str | None = None,
        keep_order: bool | None = None,
        smtputf8: bool | None = None,
        **kwargs: Any,
    ) -> None:
        alias = kwargs.get("alias")
        if alias is None and config.warn_about_external_use is not None:
            # As Django 6.1's own SMTP backend (and in its words, so that warning
            # filters written for it match): without an alias the backend reads
            # the deprecated EMAIL_* settings. Django's get_connection() and
            # mail.mailers build backends without this warning.
            config.warn_about_external_use(
                "Directly creating EmailBackend instances is deprecated. Use "
                f"mail.mailers instead. ({type(self).__module__}.{type(self).__qualname__}"
                ": configure it in MAILERS.)",
                config.RemovedInDjango2028Warning,
            )
        policies = config.pop_policies(kwargs)
        # Django 6.1's base class validates the remaining keywords (unknown
        # MAILERS options are an error); 5.2's ignores them, as in Django.
        super().__init__(**kwargs)
        self.alias: str | None = alias
        self.fail_silently: bool = fail_silently
        #: The open connection: an :class:`smtp_backends.SMTP` after ``open()``,
        #: the process's :class:`smtp_backends.SMTPPool` while
        #: ``send_messages()`` borrows it, else None.
        self.connection: Any = None
        #: A connection being opened (never kept after a failed open()).
        self._partial_connection: SMTP | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._settings = SettingsMemo()

        legacy = alias is None and not config.has_mailers_setting()
        self._legacy = legacy
        given = {
            "pool_size": pool_size,
            "idle_timeout": idle_timeout,
            "validate_certs": validate_certs,
            "cert_bundle": cert_bundle,
            "tls_context": tls_context,
            "allow_insecure_auth": allow_insecure_auth,
            "pipelining": pipelining,
            "local_hostname": local_hostname,
            "keep_order": keep_order,
            "smtputf8": smtputf8,
            **policies,
        }
        try:
            own = config.own_options(given, legacy)
            stock = config.stock_options(
                alias,
                legacy,
                host=host,
                port=port,
                username=username,
                password=password,
                use_tls=use_tls,
                use_ssl=use_ssl,
                timeout=timeout,
                ssl_keyfile=ssl_keyfile,
                ssl_certfile=ssl_certfile,
            )
            self.host: str | None = stock["host"]
            self.port: int | None = stock["port"]
            self.username: str | None = stock["username"]
            self.password: str | None = stock["password"]
            self.use_tls: bool = stock["use_tls"]
            self.use_ssl: bool = stock["use_ssl"]
            self.timeout: float | None = stock["timeout"]
            self.ssl_keyfile: str | None = stock["ssl_keyfile"]
            self.ssl_certfile: str | None = stock["ssl_certfile"]
            self.pool_size: int = own["pool_size"]
            self.idle_timeout: float | None = own["idle_timeout"]
            self.validate_certs: bool = own["validate_certs"]
            self.cert_bundle: str | None = own["cert_bundle"]
            self.tls_context: ssl.SSLContext | None = own["tls_context"]
            self.allow_insecure_auth: bool = own["allow_insecure_auth"]
            self.pipelining: bool = own["pipelining"]
            self.local_hostname: str | None = own["local_hostname"]
            self.keep_order: bool = own["keep_order"]
            self.fail_silently = check_option(
                OPTIONS["keep_order"],
                fail_silently,
                config.own_option_name("fail_silently", legacy),
            )
            self.smtputf8: bool = check_option(
                OPTIONS["keep_order"], own["smtputf8"], config.own_option_name("smtputf8", legacy)
            )
            for name in config.POLICY_OPTIONS:
                setattr(self, name, own[name])
            self.mailer_settings()  # validate everything now, not at the first send
        except (ValueError, TypeError) as exc:
            if legacy or isinstance(exc, config.InvalidMailer):
                raise
            raise config.mailer_error(str(exc), alias) from exc

    # Configuration ---------------------------------------------------------

    def mailer_settings(self) -> MailerSettings:
        """The sending layer's settings for the current attributes (made once per change).

        A subclass that overrides :attr:`ssl_context` has its context used
        for both implicit TLS and STARTTLS; it is asked for once per class
        and settings, as connections are pooled by settings (not per instance).

        Raises:
            ValueError / TypeError: invalid settings.
        """
        source = tuple(self.__dict__.get(name) for name in config.ATTRIBUTES.values())
        settings = self._settings.get(source, lambda: config.mailer_settings(self, self._legacy))
        if settings.ssl_context is None and type(self).ssl_context is not _SSL_CONTEXT:
            key = (type(self), settings)
            own = _own_contexts.get(key)
            if own is None:
                context = self.ssl_context
                if not isinstance(context, ssl.SSLContext):
                    raise TypeError(
                        f"{type(self).__qualname__}.ssl_context must be an ssl.SSLContext, "
                        f"not {type(context).__name__}."
                    )
                own = _own_contexts.setdefault(key, settings.replace(ssl_context=context))
            settings = own
        return settings

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context, for implicit TLS and STARTTLS alike (as Django's).

        Built from the settings: ``tls_context`` when given; else one that
        verifies the server's certificate and host name (unless
        ``validate_certs`` is False) against the system's CAs or
        ``cert_bundle``, TLS 1.2 or later, with the client certificate of
        ``ssl_certfile``/``ssl_keyfile``. The connections built without an
        override use the very same rules.

        Override it in a subclass to use a context of your own, as with
        Django's stock backend::

            class EmailBackend(AsyncSMTPBackend):
                @cached_property
                def ssl_context(self):
                    context = super().ssl_context
                    context.load_verify_locations("/etc/ssl/internal-ca.pem")
                    return context
        """
        if self.tls_context is not None:
            return self.tls_context
        context = ssl.SSLContext(protocol=ssl.PROTOCOL_TLS_CLIENT)  # verifies by default
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_bundle:
            context.load_verify_locations(cafile=self.cert_bundle)
        else:
            context.load_default_certs()
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def connection_config(self) -> ConnectionConfig:
        """The :class:`smtp_backends.ConnectionConfig` for the current attributes.

        ``use_ssl`` is implicit TLS, ``use_tls`` required STARTTLS and neither
        a plaintext session (no opportunistic upgrade, as the stock backend).

        Raises:
            ValueError / TypeError: invalid settings.
        """
        return self.mailer_settings().connection

    @property
    def mailer(self) -> Mailer:
        """The process's :class:`~smtp_backends.mailer.Mailer` for these settings."""
        return get_mailer(self.mailer_settings())

    def get_pool(self, *, batch: bool = False) -> SMTPPool:
        """The process's pool for these connection settings (created on first use).

        Args:
            batch: the pool for lists of messages: one connection, so that a
                list goes out pipelined and in order, as the stock backend
                sends it. Single messages use up to ``pool_size`` connections.

        It lives on the :mod:`smtp_backends.bridge` loop: use it through
        ``bridge.run_sync`` / ``bridge.run_async``.
        """
        return self.mailer.pool(ordered=batch)

    # Addresses and messages ------------------------------------------------

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """The envelope (addr-spec) form of ``address``, as Django's SMTP backend makes it.

        Django 6.x: its ``EmailBackend.prep_address()`` (IDNA-encoded domain;
        ValueError for invalid addresses, CR/LF injection and, with
        ``force_ascii``, non-ASCII local parts). Django 5.2:
        ``sanitize_address()`` with DEFAULT_CHARSET, then the addr-spec.

        Raises:
            ValueError: an invalid address.
            TypeError: ``force_ascii=False`` on Django 5.2 (which has no such mode).
        """
        return prep_address(self, address, force_ascii)

    def _envelope(self, message: Any) -> Envelope | None:
        """(sender, recipients, bytes) exactly as the stock backend derives them.

        None for a message without recipients (not sent, not counted).
        """
        return django_envelope(message, self.prep_address, self.smtputf8)

    def _items(self, messages: list[Any]) -> tuple[list[Any], Exception | None]:
        """What to send for ``messages``, and the error that stopped preparing them.

        One message is rendered here, at once. A list becomes lazy items
        that the client renders on the bridge, each while the previous one is
        on the wire (in the caller's context: its active language, say);
        messages without recipients are skipped. As in the stock backend, the
        messages before one that cannot be prepared are sent, it raises, and
        the ones after it are not sent.
        """
        if any(hasattr(m, "dsn") or hasattr(m, "requiretls") for m in messages):
            return config.outgoing_items(messages, self._envelope)  # their own DSN/REQUIRETLS
        if len(messages) > 1:
            batch = LazyBatch(self._envelope)
            return [batch.item(message) for message in messages], None
        try:
            return [self._envelope(message) for message in messages], None
        except Exception as exc:
            return [], exc

    def _count(
        self, outcomes: Sequence[Any], error: Exception | None, messages: Sequence[Any] = ()
    ) -> int:
        """The number sent; raises the first failure unless fail_silently covers it.

        A message refused because an address needed SMTPUTF8 and the server
        lacks it raises Django's ValueError for that address (as the stock
        backend does for any non-ASCII local part), whatever fail_silently.
        """
        sent = 0
        first: BaseException | None = None
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, SMTPNotSupported) and index < len(messages):
                refusal = smtputf8_refusal(messages[index], self.prep_address)
                if refusal is not None:
                    raise refusal from outcome
            if not isinstance(outcome, BaseException):
                sent += 1  # (refused recipients, final reply), as sendmail() returns it
            elif self.fail_silently and isinstance(outcome, OSError):
                continue  # smtplib.SMTPException and connection errors, as in Django
            elif first is None:
                first = outcome
        if first is None:
            first = error
        if first is not None:
            raise first
        return sent

    def _via(self) -> Any:
        """The connection of this backend's own, if any (else the Mailer's pool)."""
        connection = self.connection
        return None if isinstance(connection, SMTPPool) else connection

    def send_messages(self, email_messages: Iterable[Any]) -> int:
        """Send Django ``EmailMessage`` objects; return how many were sent.

        Messages without recipients are skipped. The envelope and the bytes
        are those of the stock backend; a list goes out as one pipelined
        batch, in order, over the open connection or one pooled connection.

        Raises:
            ValueError: an invalid address (the messages before it are sent).
            OSError: the first failure (``smtplib.SMTPException`` subclasses,
                connection and TLS errors), unless ``fail_silently``. Unlike
                the stock backend, the messages after a failed one in the
                same call have been sent too.
        """
        if not email_messages:
            return 0
        deferred = deferred_sends.get()
        if deferred is not None:  # inside asend_mail() & co.: the caller awaits the work
            messages = list(email_messages)
            deferred.append((self, messages))
            return sum(1 for message in messages if message.recipients())
        with self._lock:
            token = borrowing.set(True)
            try:
                new_conn_created = self.open()
            finally:
                borrowing.reset(token)
            if not self.connection or new_conn_created is None:
                return 0  # open() failed silently
            try:
                email_messages = apply_pre_send(self, email_messages)  # may cancel some
                messages = [message for message in email_messages if message.recipients()]
                items, error = self._items(messages)
                outcomes: list[Any] = []
                if items:
                    outcomes = self.mailer.send(items, via=self._via())
                return self._count(outcomes, error, messages)
            finally:
                if new_conn_created:
                    self.close()

    # Async API -------------------------------------------------------------

    async def asend_messages(self, email_messages: Iterable[Any]) -> int:
        """Await :meth:`send_messages` without blocking the event loop.

        The SMTP work runs on the bridge loop (pooled connections are shared
        with sync callers); long lists are serialised in a worker thread.
        Returns and raises as :meth:`send_messages`.
        """
        if not email_messages:
            return 0
        messages = list(email_messages)
        token = borrowing.set(True)
        try:
            new_conn_created = await self.aopen()
        finally:
            borrowing.reset(token)
        if not self.connection or new_conn_created is None:
            return 0
        try:
            messages = await aapply_pre_send(self, messages)  # may cancel some
            messages = [message for message in messages if message.recipients()]
            items, error = self._items(messages)  # a list renders on the bridge, lazily
            outcomes: list[Any] = []
            if items:
                outcomes = await self.mailer.asend(items, via=self._via())
            return self._count(outcomes, error, messages)
        finally:
            if new_conn_created:
                await self.aclose()


_SSL_CONTEXT = AsyncSMTPBackend.__dict__["ssl_context"]
