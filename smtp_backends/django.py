"""Django email backend: ``smtp_backends.django.AsyncSMTPBackend``.

A drop-in replacement for ``django.core.mail.backends.smtp.EmailBackend``
(Django 5.2 LTS and 6.x) that sends through smtp_backends: pipelined
batches, pooled connections reused across requests, and async twins for
async views and tasks.

Django 5.2 (and 6.x without ``MAILERS``)::

    EMAIL_BACKEND = "smtp_backends.django.AsyncSMTPBackend"
    EMAIL_HOST = "smtp.example.com"  # and the other EMAIL_* settings, as before

Django 6.1 and later::

    MAILERS = {
        "default": {
            "BACKEND": "smtp_backends.django.AsyncSMTPBackend",
            "OPTIONS": {"host": "smtp.example.com", "use_tls": True, "pool_size": 4},
        },
    }

How sending works:

* ``send_messages()`` without an explicit ``open()`` (what ``send_mail()``,
  ``EmailMessage.send()``, ``mail_admins()`` and password reset do) borrows
  the process's pool for the connection settings, which lives on the
  :mod:`smtp_backends.bridge` loop: one TCP + TLS + AUTH handshake serves
  many requests. A list goes out as one pipelined batch, in order, over one
  pooled connection.
* ``open()`` / ``with backend:`` opens a connection for this backend alone,
  as the stock backend does, and holds it until ``close()``.
* ``asend_messages()``, ``aopen()``, ``aclose()`` and ``async with`` await
  the same work from any event loop without blocking it; the module
  functions :func:`asend_mail`, :func:`asend_mass_mail`,
  :func:`amail_admins` and :func:`amail_managers` mirror
  ``django.core.mail``'s.

Errors are smtp_backends' exceptions, which also derive from
:mod:`smtplib`'s (and TLS failures from :class:`ssl.SSLError`), so
``except smtplib.SMTPException`` and ``fail_silently`` keep working.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.policy
import email.utils
import inspect
import os
import re
import ssl
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import django.core.mail
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as _StockSMTPBackend
from django.core.mail.message import sanitize_address
from django.core.mail.utils import DNS_NAME

from smtp_backends import (
    SMTP,
    ConnectionConfig,
    SMTPPool,
    SMTPProtocolError,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from smtp_backends.bridge import run_async, run_sync, shared_pool
from smtp_backends.message import serialize

__all__ = (
    "AsyncSMTPBackend",
    "CeleryBackend",
    "amail_admins",
    "amail_managers",
    "asend_mail",
    "asend_mass_mail",
    "register_celery",
)

# Django 6.0 moved envelope preparation to EmailBackend.prep_address() and
# serialises with the SMTP policy; 5.2 uses sanitize_address() and CRLF.
_PREP_ADDRESS: Callable[..., str] | None = getattr(_StockSMTPBackend, "prep_address", None)
# Django 6.1: MAILERS, backends built with an alias, EMAIL_* deprecated.
_HAS_MAILERS = hasattr(django.core.mail, "mailers")
_InvalidMailer: Any = getattr(django.core.mail, "InvalidMailer", ImproperlyConfigured)
_warn_about_external_use: Callable[..., None] | None = None
_RemovedInDjango2028Warning: type[Warning] = DeprecationWarning
if _HAS_MAILERS:
    import django.utils.deprecation

    _warn_about_external_use = django.utils.deprecation.warn_about_external_use
    _RemovedInDjango2028Warning = django.utils.deprecation.RemovedInDjango2028Warning


def _mailer_error(message: str, alias: str | None) -> Exception:
    """Django 6.1's InvalidMailer (ImproperlyConfigured before), naming the alias."""
    if _InvalidMailer is ImproperlyConfigured:
        error: Exception = ImproperlyConfigured(
            f"MAILERS[{alias!r}]: {message}" if alias else message
        )
    else:
        error = _InvalidMailer(message, alias=alias)
    return error


#: The setting that holds this backend's own options when it is configured
#: through EMAIL_BACKEND (Django 5.2, or 6.x without MAILERS).
OPTIONS_SETTING = "SMTP_BACKENDS_OPTIONS"

# Our options and their defaults (none of them needs a setting).
_OWN_OPTIONS: dict[str, Any] = {
    "pool_size": 4,
    "idle_timeout": 60.0,
    "validate_certs": True,
    "cert_bundle": None,
    "tls_context": None,
    "allow_insecure_auth": False,
    "pipelining": True,
    "local_hostname": None,
    "keep_order": True,
}

# The core's default per-operation timeout, used when EMAIL_TIMEOUT / the
# timeout option is None (the stock backend would then wait forever).
_DEFAULT_TIMEOUT = ConnectionConfig().timeout

# Set while send_messages()/asend_messages() call open(): an implicit open
# borrows the process's pool instead of opening a connection of its own.
_borrowing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "smtp_backends_django_borrowing", default=False
)
# Set by the async module functions while Django's sync function runs in a
# worker thread: our send_messages() records the work instead of doing it.
_Deferred = list[tuple["AsyncSMTPBackend", list[Any]]]
_deferred_sends: contextvars.ContextVar[_Deferred | None] = contextvars.ContextVar(
    "smtp_backends_django_deferred", default=None
)

# Connections inherited across fork() are kept here, never used and never
# collected (collecting them could disturb sockets the parent still uses).
_inherited: list[object] = []

Envelope = tuple[str, list[str], bytes]


def _legacy_setting(name: str) -> Any:
    """Read one of the EMAIL_* settings of the EMAIL_BACKEND configuration.

    Django 6.1 deprecates them and warns when code outside Django reads them;
    the stock backend reads them from inside Django and does not warn, so
    neither do we (Django already warns about the settings themselves).
    """
    if not _HAS_MAILERS:
        return getattr(settings, name)
    settings.DEFAULT_CHARSET  # noqa: B018 - loads the settings if needed
    return getattr(settings._wrapped, name)


_hostname_ok: dict[str, bool] = {}


def _default_local_hostname() -> str | None:
    """Django's cached FQDN for EHLO (as the stock backend), if the core accepts it."""
    name = str(DNS_NAME.get_fqdn())
    ok = _hostname_ok.get(name)
    if ok is None:
        try:
            ConnectionConfig(local_hostname=name)
        except ValueError:
            ok = False
        else:
            ok = True
        _hostname_ok[name] = ok
    return name if ok else None


# A bare dot-atom address (RFC 5322 3.4.1) with an LDH domain: Django's address
# parsing (sanitize_address(), prep_address()) returns it unchanged, so the
# common case skips the parser (checked against Django in the tests).
_DOT_ATOM_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
).fullmatch


def _plain_address(address: Any) -> bool:
    """Whether ``address`` is a bare ASCII dot-atom address Django leaves as it is."""
    return type(address) is str and _DOT_ATOM_ADDRESS(address) is not None


def _sanitized_addr_spec(address: Any, encoding: str) -> str:
    """Django 5.2's envelope form: sanitize_address(), then the addr-spec."""
    if _plain_address(address):
        return str(address)
    return _addr_spec(sanitize_address(address, encoding))


def _prep_address(backend: Any, address: Any, force_ascii: bool = True) -> str:
    """The envelope form of ``address`` (see :meth:`AsyncSMTPBackend.prep_address`)."""
    if _plain_address(address):
        return str(address)  # what Django's parser returns for it, in a fraction of the time
    if _PREP_ADDRESS is not None:
        return _PREP_ADDRESS(backend, address, force_ascii=force_ascii)
    if not force_ascii:
        raise TypeError("prep_address(force_ascii=False) needs Django 6.0 or later")
    return _addr_spec(sanitize_address(address, settings.DEFAULT_CHARSET))


def _django_envelope(message: Any, prep_address: Callable[[Any], str]) -> Envelope | None:
    """(sender, recipients, bytes) of a Django message, as Django's SMTP backend sends it.

    The sender and recipients go through ``prep_address`` on Django 6.x (the
    backend's method: a subclass may override it), through sanitize_address()
    with the message's encoding on 5.2. None for a message without recipients.

    Raises:
        ValueError: an invalid address.
    """
    if not message.recipients():
        return None
    if _PREP_ADDRESS is not None:  # Django 6.x
        sender = prep_address(message.from_email)
        recipients = [prep_address(address) for address in message.recipients()]
        # serialize() writes as_bytes()'s very bytes, without its slow header folding.
        return sender, recipients, serialize(message.message(policy=email.policy.SMTP))
    encoding = message.encoding or settings.DEFAULT_CHARSET
    sender = _sanitized_addr_spec(message.from_email, encoding)
    recipients = [_sanitized_addr_spec(address, encoding) for address in message.recipients()]
    return sender, recipients, serialize(message.message(), linesep="\r\n")


def _addr_spec(address: str) -> str:
    """The bare address of a sanitised "Name <addr>" string, as smtplib extracts it."""
    name, addr = email.utils.parseaddr(address)
    if (name, addr) == ("", ""):
        return address.strip()
    return addr


class _NotSent(ValueError):
    """A message after one that could not be prepared: not sent, as in the stock backend."""


class _LazyBatch:
    """Django messages rendered one at a time, as the client reaches them.

    Rendering (``message.message()`` and the bytes) costs more than sending
    over a pipelined connection; done lazily on the bridge it overlaps the
    replies of the messages before it. Each item renders once (a pool may
    retry a message on another connection) in a copy of the caller's context.
    """

    def __init__(self, render: Callable[[Any], Envelope | None]) -> None:
        self.render = render
        self.context = contextvars.copy_context()
        self.failed = False

    def item(self, message: Any) -> Callable[[], Envelope]:
        """A zero-argument callable rendering ``message`` (SMTP.send_messages' lazy item)."""
        rendered: list[Envelope] = []

        def render() -> Envelope:
            if rendered:
                return rendered[0]
            if self.failed:
                raise _NotSent("Not sent: an earlier message in the list could not be prepared")
            try:
                envelope = self.context.run(self.render, message)
            except Exception:
                self.failed = True
                raise
            assert envelope is not None  # messages without recipients were left out
            rendered.append(envelope)
            return envelope

        return render


def _drop(client: SMTP) -> None:
    """Close ``client`` at once (no QUIT); never raises."""
    # RuntimeError: its loop is gone (the bridge was shut down): nothing left to close.
    with contextlib.suppress(RuntimeError):
        client.close()


async def _connect(client: SMTP) -> None:
    """Connect, TLS and AUTH on the bridge; a failed connection is closed at once."""
    try:
        await client.connect()
    except BaseException:
        _drop(client)
        raise


async def _close(partial: SMTP | None, connection: Any, fail_silently: bool) -> None:
    """QUIT the backend's own connection (and drop a half-open one), as the stock backend.

    Whatever the reply to QUIT (smtplib does not check it), a connection
    already lost or a TLS error, the connection is just closed; a reply that
    breaks the protocol is raised unless ``fail_silently``, as smtplib's
    SMTPResponseException for an overlong line is by the stock backend.
    """
    if partial is not None:
        _drop(partial)
    if not isinstance(connection, SMTP):
        return  # a borrowed pool stays open for the next request
    try:
        await connection.quit()
    except SMTPProtocolError:
        _drop(connection)
        if not fail_silently:
            raise
    except (ssl.SSLError, SMTPServerDisconnected, SMTPResponseException, TimeoutError):
        _drop(connection)


async def _deliver(connection: Any, items: list[Any]) -> list[Any]:
    """Send ``items`` over a pool or one connection (a list as one pipelined batch).

    Returns one outcome per item: ``(errors, reply)`` or the exception.
    """
    try:
        if isinstance(connection, SMTPPool):
            return list(await connection.send_messages(items))
        if len(items) == 1:
            # One message: sendmail(), as the stock backend calls it on its connection.
            try:
                result = connection.sendmail(*items[0])
                if inspect.isawaitable(result):
                    result = await result
            except OSError as exc:
                return [exc]
            return [result]
        return list(await connection.send_messages(items))
    except OSError as exc:  # the connection failed as a whole
        return [exc] * len(items)


class AsyncSMTPBackend(BaseEmailBackend):  # type: ignore[misc]
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
        **kwargs: ``alias`` (Django 6.1) and anything else, handed to
            Django's ``BaseEmailBackend`` (which rejects unknown MAILERS
            options).

    Under EMAIL_BACKEND the options from ``pool_size`` on may also come from
    the ``SMTP_BACKENDS_OPTIONS`` setting (a dict); keywords win.

    Raises:
        ValueError: ``use_tls`` with ``use_ssl`` (EMAIL_BACKEND), or an
            invalid option.
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
        **kwargs: Any,
    ) -> None:
        alias = kwargs.get("alias")
        if alias is None and _warn_about_external_use is not None:
            # As Django 6.1's own SMTP backend (and in its words, so that warning
            # filters written for it match): without an alias the backend reads
            # the deprecated EMAIL_* settings. Django's get_connection() and
            # mail.mailers build backends without this warning.
            _warn_about_external_use(
                "Directly creating EmailBackend instances is deprecated. Use "
                f"mail.mailers instead. ({type(self).__module__}.{type(self).__qualname__}"
                ": configure it in MAILERS.)",
                _RemovedInDjango2028Warning,
            )
        # Django 6.1's base class validates the remaining keywords (unknown
        # MAILERS options are an error); 5.2's ignores them, as in Django.
        super().__init__(**kwargs)
        self.alias: str | None = alias
        self.fail_silently = fail_silently
        #: The open connection: an :class:`smtp_backends.SMTP` after ``open()``,
        #: the process's :class:`smtp_backends.SMTPPool` while
        #: ``send_messages()`` borrows it, else None.
        self.connection: Any = None
        #: A connection being opened (never kept after a failed open()).
        self._partial_connection: SMTP | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()

        legacy = alias is None and not (_HAS_MAILERS and hasattr(settings, "MAILERS"))
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
        }
        try:
            own = self._own_options(given, legacy)
            if legacy:
                self._init_from_settings(host, port, username, password, use_tls, use_ssl, timeout)
                self.ssl_keyfile = (
                    _legacy_setting("EMAIL_SSL_KEYFILE") if ssl_keyfile is None else ssl_keyfile
                )
                self.ssl_certfile = (
                    _legacy_setting("EMAIL_SSL_CERTFILE") if ssl_certfile is None else ssl_certfile
                )
            else:
                self._init_from_options(host, port, username, password, use_tls, use_ssl, timeout)
                self.ssl_keyfile = ssl_keyfile
                self.ssl_certfile = ssl_certfile
            self.pool_size: int = own["pool_size"]
            self.idle_timeout: float | None = own["idle_timeout"]
            self.validate_certs: bool = own["validate_certs"]
            self.cert_bundle: str | None = own["cert_bundle"]
            self.tls_context: ssl.SSLContext | None = own["tls_context"]
            self.allow_insecure_auth: bool = own["allow_insecure_auth"]
            self.pipelining: bool = own["pipelining"]
            self.local_hostname: str | None = own["local_hostname"]
            self.keep_order: bool = own["keep_order"]
            self.connection_config()  # validate everything now, not at the first send
        except (ValueError, TypeError) as exc:
            if legacy or isinstance(exc, _InvalidMailer):
                raise
            raise _mailer_error(str(exc), alias) from exc

    # Configuration ---------------------------------------------------------

    def _init_from_settings(
        self,
        host: str | None,
        port: int | None,
        username: str | None,
        password: str | None,
        use_tls: bool | None,
        use_ssl: bool | None,
        timeout: float | None,
    ) -> None:
        """EMAIL_BACKEND configuration: the stock backend's defaults from EMAIL_*."""
        self.host = host or _legacy_setting("EMAIL_HOST")
        self.port = port or _legacy_setting("EMAIL_PORT")
        self.username = _legacy_setting("EMAIL_HOST_USER") if username is None else username
        self.password = _legacy_setting("EMAIL_HOST_PASSWORD") if password is None else password
        self.use_tls = _legacy_setting("EMAIL_USE_TLS") if use_tls is None else use_tls
        self.use_ssl = _legacy_setting("EMAIL_USE_SSL") if use_ssl is None else use_ssl
        self.timeout = _legacy_setting("EMAIL_TIMEOUT") if timeout is None else timeout
        if self.use_ssl and self.use_tls:
            raise ValueError(
                "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set "
                "one of those settings to True."
            )

    def _init_from_options(
        self,
        host: str | None,
        port: int | None,
        username: str | None,
        password: str | None,
        use_tls: bool | None,
        use_ssl: bool | None,
        timeout: float | None,
    ) -> None:
        """MAILERS configuration: OPTIONS only, as Django 6.1's SMTP backend."""
        self.host = host
        self.username = username
        self.password = password
        self.use_tls = bool(use_tls)
        self.use_ssl = bool(use_ssl)
        self.timeout = timeout
        if host is None:
            raise _mailer_error("OPTIONS must define 'host'.", self.alias)
        if self.use_ssl and self.use_tls:
            raise _mailer_error(
                "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
                "Set at most one of them to True.",
                self.alias,
            )
        self.port = port if port is not None else 465 if use_ssl else 587 if use_tls else 25

    @staticmethod
    def _own_options(given: dict[str, Any], legacy: bool) -> dict[str, Any]:
        """Our options: keywords, else (EMAIL_BACKEND only) the setting, else defaults."""
        from_setting: Any = getattr(settings, OPTIONS_SETTING, None) if legacy else None
        if from_setting is None:
            from_setting = {}
        if not isinstance(from_setting, dict):
            raise ImproperlyConfigured(f"The {OPTIONS_SETTING} setting must be a dict.")
        unknown = set(from_setting) - set(_OWN_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown key(s) in the {OPTIONS_SETTING} setting: {', '.join(sorted(unknown))}"
            )
        options = {**_OWN_OPTIONS, **from_setting}
        options.update({name: value for name, value in given.items() if value is not None})
        pool_size = options["pool_size"]
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"pool_size must be an int >= 0, not {pool_size!r}")
        idle = options["idle_timeout"]
        if idle is not None and (
            isinstance(idle, bool) or not isinstance(idle, (int, float)) or idle <= 0
        ):
            raise ValueError(f"idle_timeout must be seconds > 0 or None, not {idle!r}")
        for flag in ("validate_certs", "allow_insecure_auth", "pipelining", "keep_order"):
            if not isinstance(options[flag], bool):
                raise TypeError(f"{flag} must be True or False, not {options[flag]!r}")
        return options

    def connection_config(self) -> ConnectionConfig:
        """The :class:`smtp_backends.ConnectionConfig` for the current attributes.

        ``use_ssl`` is implicit TLS, ``use_tls`` required STARTTLS and neither
        a plaintext session (no opportunistic upgrade, as the stock backend).

        Raises:
            ValueError / TypeError: invalid settings.
        """
        port = self.port
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        login = bool(self.username and self.password)
        return ConnectionConfig(
            hostname=self.host or None,
            port=port,
            username=self.username if login else None,
            password=self.password if login else None,
            local_hostname=self.local_hostname or _default_local_hostname(),
            timeout=self.timeout if self.timeout is not None else _DEFAULT_TIMEOUT,
            use_tls=bool(self.use_ssl),
            start_tls=bool(self.use_tls),
            validate_certs=self.validate_certs,
            client_cert=self.ssl_certfile or None,
            client_key=self.ssl_keyfile or None,
            tls_context=self.tls_context,
            cert_bundle=self.cert_bundle,
            pipelining=self.pipelining,
            allow_insecure_auth=self.allow_insecure_auth,
        )

    def get_pool(self, *, batch: bool = False) -> SMTPPool:
        """The process's pool for these connection settings (created on first use).

        Args:
            batch: the pool for lists of messages: one connection, so that a
                list goes out pipelined and in order, as the stock backend
                sends it (SMTPPool.send_messages spreads a list over all of a
                pool's connections, and the messages then arrive in any
                order). Single messages use up to ``pool_size`` connections.

        It lives on the :mod:`smtp_backends.bridge` loop: use it through
        ``bridge.run_sync`` / ``bridge.run_async``.
        """
        config = self.connection_config()
        size, idle = 1 if batch else self.pool_size or 1, self.idle_timeout
        key = ("smtp_backends.django", config, size, idle)
        return shared_pool(
            key, lambda: SMTPPool.from_config(config, max_connections=size, idle_timeout=idle)
        )

    def _route(self, items: list[Any]) -> Any:
        """Where ``items`` go: the open connection, or for a list the batch pool."""
        connection = self.connection
        if isinstance(connection, SMTPPool) and len(items) > 1 and self.keep_order:
            return self.get_pool(batch=True)
        return connection  # the open connection, or the pool that spreads the list

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
        return _prep_address(self, address, force_ascii)

    def _envelope(self, message: Any) -> Envelope | None:
        """(sender, recipients, bytes) exactly as the stock backend derives them.

        None for a message without recipients (not sent, not counted).
        """
        return _django_envelope(message, self.prep_address)

    def _items(self, messages: Iterable[Any]) -> tuple[list[Any], Exception | None]:
        """What to send for ``messages``, and the error that stopped preparing them.

        One message is rendered here, at once. A list becomes lazy items
        that the client renders on the bridge, each while the previous one is
        on the wire (in the caller's context: its active language, say);
        messages without recipients are skipped. As in the stock backend, the
        messages before one that cannot be prepared are sent, it raises, and
        the ones after it are not sent.
        """
        messages = [message for message in messages if message.recipients()]
        if len(messages) > 1:
            batch = _LazyBatch(self._envelope)
            return [batch.item(message) for message in messages], None
        try:
            return [self._envelope(message) for message in messages], None
        except Exception as exc:
            return [], exc

    def _count(self, outcomes: Sequence[Any], error: Exception | None) -> int:
        """The number sent; raises the first failure unless fail_silently covers it."""
        sent = 0
        first: BaseException | None = None
        for outcome in outcomes:
            if not isinstance(outcome, BaseException):
                sent += 1  # (refused recipients, final reply)
            elif self.fail_silently and isinstance(outcome, OSError):
                continue  # smtplib.SMTPException and connection errors, as in Django
            elif first is None:
                first = outcome
        if first is None:
            first = error
        if first is not None:
            raise first
        return sent

    # Fork safety -----------------------------------------------------------

    def _forget_if_forked(self) -> None:
        """In a forked child, drop (never use) the parent's connection."""
        if self._pid == os.getpid():
            return
        _inherited.append((self.connection, self._partial_connection))
        self.connection = self._partial_connection = None
        self._pid = os.getpid()

    # Sync API --------------------------------------------------------------

    def open(self) -> bool | None:
        """Make sure a connection is ready; as the stock backend's ``open()``.

        Called by you (or ``with backend:``): connects, STARTTLS/TLS and AUTH
        as configured, and keeps that connection for this backend until
        :meth:`close`. Called by :meth:`send_messages` without an open
        connection: borrows the process's pool for these settings.

        Returns:
            True if a connection was opened (or borrowed), False if one was
            already open, None if opening failed silently (``fail_silently``).

        Raises:
            OSError: the connection failed (``SMTPConnectError`` and the
                other smtp_backends/smtplib exceptions, ``ssl.SSLError``
                subclasses for TLS failures), unless ``fail_silently``.
        """
        client = self._start_open()
        if not isinstance(client, SMTP):
            return client
        try:
            run_sync(_connect, client)
        except BaseException as exc:
            self._open_failed(exc)  # raises unless fail_silently covers it
            return None
        return self._opened(client)

    def _start_open(self) -> SMTP | bool:
        """False if open, True once the pool is borrowed, else a client to connect."""
        self._forget_if_forked()
        if self.connection:
            return False
        if _borrowing.get() and self.pool_size:
            self.connection = self.get_pool()
            return True
        client = SMTP.from_config(self.connection_config())
        self._partial_connection = client
        return client

    def _open_failed(self, exc: BaseException) -> None:
        """After a failed connect (already closed): raise, unless fail_silently covers it."""
        self._partial_connection = None
        if not (isinstance(exc, OSError) and self.fail_silently):
            raise exc

    def _opened(self, client: SMTP) -> bool:
        # Only now, with TLS and AUTH done, does the connection become usable.
        self._partial_connection = None
        self.connection = client
        return True

    def close(self) -> None:
        """Close this backend's own connection (QUIT); give back a borrowed pool.

        Pooled connections stay open for the next request.

        Raises:
            smtplib.SMTPResponseException: the reply to QUIT broke the
                protocol (``SMTPProtocolError``), unless ``fail_silently``.
        """
        self._forget_if_forked()
        partial, self._partial_connection = self._partial_connection, None
        try:
            if partial is not None or isinstance(self.connection, SMTP):
                run_sync(_close, partial, self.connection, self.fail_silently)
        finally:
            self.connection = None

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
        deferred = _deferred_sends.get()
        if deferred is not None:  # inside asend_mail() & co.: the caller awaits the work
            messages = list(email_messages)
            deferred.append((self, messages))
            return sum(1 for message in messages if message.recipients())
        with self._lock:
            token = _borrowing.set(True)
            try:
                new_conn_created = self.open()
            finally:
                _borrowing.reset(token)
            if not self.connection or new_conn_created is None:
                return 0  # open() failed silently
            try:
                items, error = self._items(email_messages)
                outcomes: list[Any] = []
                if items:
                    try:
                        outcomes = run_sync(_deliver, self._route(items), items)
                    except OSError as exc:  # the bridge itself failed (shut down...)
                        outcomes = [exc] * len(items)
                return self._count(outcomes, error)
            finally:
                if new_conn_created:
                    self.close()

    # Async API -------------------------------------------------------------

    async def aopen(self) -> bool | None:
        """Await :meth:`open` without blocking the event loop. Returns and raises as it."""
        client = self._start_open()
        if not isinstance(client, SMTP):
            return client
        try:
            await run_async(_connect, client)
        except BaseException as exc:
            self._open_failed(exc)  # raises unless fail_silently covers it
            return None
        return self._opened(client)

    async def aclose(self) -> None:
        """Await :meth:`close` without blocking the event loop."""
        self._forget_if_forked()
        partial, self._partial_connection = self._partial_connection, None
        try:
            if partial is not None or isinstance(self.connection, SMTP):
                await run_async(_close, partial, self.connection, self.fail_silently)
        finally:
            self.connection = None

    async def asend_messages(self, email_messages: Iterable[Any]) -> int:
        """Await :meth:`send_messages` without blocking the event loop.

        The SMTP work runs on the bridge loop (pooled connections are shared
        with sync callers); long lists are serialised in a worker thread.
        Returns and raises as :meth:`send_messages`.
        """
        if not email_messages:
            return 0
        messages = list(email_messages)
        token = _borrowing.set(True)
        try:
            new_conn_created = await self.aopen()
        finally:
            _borrowing.reset(token)
        if not self.connection or new_conn_created is None:
            return 0
        try:
            items, error = self._items(messages)  # a list renders on the bridge, lazily
            outcomes: list[Any] = []
            if items:
                try:
                    outcomes = await run_async(_deliver, self._route(items), items)
                except OSError as exc:
                    outcomes = [exc] * len(items)
            return self._count(outcomes, error)
        finally:
            if new_conn_created:
                await self.aclose()

    async def __aenter__(self) -> AsyncSMTPBackend:
        try:
            await self.aopen()
        except Exception:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# Module functions ------------------------------------------------------------


async def _run_deferred(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run Django's sync mail function, awaiting its sends instead of blocking.

    The function runs in a worker thread (so that everything it does, checks
    and deprecation warnings included, is Django's own); whatever it hands
    to an :class:`AsyncSMTPBackend` is recorded there and sent here, on the
    bridge loop. Other backends (locmem in tests, console...) send in the
    worker thread, off the event loop.
    """
    calls: _Deferred = []

    def call() -> Any:
        token = _deferred_sends.set(calls)
        try:
            return function(*args, **kwargs)
        finally:
            _deferred_sends.reset(token)

    result = await sync_to_async(call, thread_sensitive=False)()
    if not calls:
        return result
    sent = 0
    for backend, messages in calls:
        sent += await backend.asend_messages(messages)
    return sent if isinstance(result, int) else result


async def asend_mail(*args: Any, **kwargs: Any) -> int:
    """Awaitable ``django.core.mail.send_mail()``: the same arguments and result.

    Returns:
        The number of messages sent (0 or 1).
    """
    result: int = await _run_deferred(django.core.mail.send_mail, *args, **kwargs)
    return result


async def asend_mass_mail(*args: Any, **kwargs: Any) -> int:
    """Awaitable ``django.core.mail.send_mass_mail()``: the same arguments and result.

    The messages go out as one pipelined batch.

    Returns:
        The number of messages sent.
    """
    result: int = await _run_deferred(django.core.mail.send_mass_mail, *args, **kwargs)
    return result


async def amail_admins(*args: Any, **kwargs: Any) -> None:
    """Awaitable ``django.core.mail.mail_admins()``: the same arguments (ADMINS)."""
    await _run_deferred(django.core.mail.mail_admins, *args, **kwargs)


async def amail_managers(*args: Any, **kwargs: Any) -> None:
    """Awaitable ``django.core.mail.mail_managers()``: the same arguments (MANAGERS)."""
    await _run_deferred(django.core.mail.mail_managers, *args, **kwargs)


# ----------------------------------------------------------------------------- queued sending
#
# CeleryBackend: send_messages() hands the messages to Celery workers
# (smtp_backends.celery), which send them through their own pooled
# connections. Celery is imported only when this part is used.

#: The setting of :class:`CeleryBackend` under EMAIL_BACKEND, and of
#: :func:`register_celery` (the workers' side).
CELERY_SETTING = "SMTP_BACKENDS_CELERY"

# CELERY_SETTING keys read by the backend (the web processes).
_CELERY_BACKEND_KEYS = frozenset({"app", "queue", "batch_size", "task", "smtp"})
# CELERY_SETTING keys read by register_celery() (the workers): smtp_backends.celery.register's.
_CELERY_TASK_KEYS = frozenset(
    {"max_retries", "retry_backoff", "retry_backoff_max", "retry_jitter", "dedupe", "dedupe_ttl"}
)


def _celery_settings() -> dict[str, Any]:
    """The SMTP_BACKENDS_CELERY setting (a dict; {} when not set), checked.

    Raises:
        ImproperlyConfigured: not a dict, or unknown keys.
    """
    value: Any = getattr(settings, CELERY_SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"The {CELERY_SETTING} setting must be a dict.")
    unknown = set(value) - _CELERY_BACKEND_KEYS - _CELERY_TASK_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown key(s) in the {CELERY_SETTING} setting: {', '.join(sorted(unknown))}"
        )
    return dict(value)


def _worker_pool(profile: str | None) -> SMTPPool:
    """The pool a worker sends with, from the Django settings (called once per process).

    ``profile`` None: the ``smtp`` dict of SMTP_BACKENDS_CELERY, as keywords of
    :class:`AsyncSMTPBackend` (EMAIL_* for what it leaves out; all of EMAIL_*
    without it). Else the MAILERS alias of a CeleryBackend: the ``smtp`` dict
    of its OPTIONS (MAILERS semantics: ``host`` required).
    """
    if profile is None:
        smtp = _celery_settings().get("smtp") or {}
        with warnings.catch_warnings():
            # Django 6.1 warns about a backend built without an alias: here that is
            # the EMAIL_BACKEND configuration, read on purpose (once per worker).
            warnings.filterwarnings("ignore", category=_RemovedInDjango2028Warning)
            backend = AsyncSMTPBackend(**smtp)
    else:
        mailers: Any = getattr(settings, "MAILERS", None) or {}
        options = (mailers.get(profile) or {}).get("OPTIONS") or {}
        smtp = options.get("smtp")
        if not isinstance(smtp, dict):
            raise _mailer_error("OPTIONS must define 'smtp' for the Celery workers.", profile)
        backend = AsyncSMTPBackend(alias=profile, **smtp)
    return SMTPPool.from_config(
        backend.connection_config(),
        max_connections=backend.pool_size or 1,
        idle_timeout=backend.idle_timeout,
    )


def register_celery(app: Any, **options: Any) -> Any:
    """Register the mail task on your Celery ``app`` with Django's SMTP settings.

    Call it in the module that makes the Celery app (``proj/celery.py``), so
    that the workers know the task::

        app = Celery("proj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        register_celery(app)

    Workers send with the ``smtp`` settings of SMTP_BACKENDS_CELERY (or of the
    MAILERS alias the message was queued through), defaulting to EMAIL_*.
    Idempotent: a second call returns the queue already registered.

    Args:
        app: the Celery app.
        **options: keywords of :func:`smtp_backends.celery.register` (``name``,
            ``max_retries``, ``retry_backoff``, ``dedupe``, ``on_failure``...);
            the same keys of SMTP_BACKENDS_CELERY are the defaults (and its
            ``task``, ``queue`` and ``batch_size``).

    Returns:
        The :class:`smtp_backends.celery.SMTPQueue`.

    Raises:
        ImproperlyConfigured: a malformed SMTP_BACKENDS_CELERY setting.
    """
    from smtp_backends import celery as queued

    conf = _celery_settings()
    name = options.pop("name", None) or conf.get("task") or queued.DEFAULT_TASK_NAME
    existing = queued.get_queue(app, name)
    if existing is not None:
        return existing
    for key in ("queue", "batch_size", *sorted(_CELERY_TASK_KEYS)):
        if key in conf:
            options.setdefault(key, conf[key])
    try:
        return queued.register(app, smtp=_worker_pool, name=name, **options)
    except ValueError:
        found = queued.get_queue(app, name)  # registered by another thread meanwhile
        if found is None:
            raise
        return found


class CeleryBackend(BaseEmailBackend):  # type: ignore[misc]
    """Django email backend that queues messages for Celery workers.

    ``send_messages()`` turns each message into its exact bytes and envelope
    (as the SMTP backend would send them), queues them in tasks of
    ``batch_size`` messages and returns the number queued; workers send them
    (see :mod:`smtp_backends.celery` for retries and the no-duplicate
    guarantee).

    Under EMAIL_BACKEND the options come from the SMTP_BACKENDS_CELERY
    setting (keywords win); under Django 6.1's MAILERS from OPTIONS, with
    ``alias``; unknown OPTIONS are an error (Django's).

    Args:
        fail_silently: return 0 instead of raising when the broker cannot
            be reached.
        app: the Celery app, or its dotted path ("proj.celery.app").
        queue: the Celery queue (None: the app's routing).
        batch_size: most messages per task (100).
        task: the task name (``smtp_backends.celery.DEFAULT_TASK_NAME``).
        smtp: what the workers send with (keywords of
            :class:`AsyncSMTPBackend`); read by the workers, not here.
        **kwargs: ``alias`` (Django 6.1), handed to Django's base class.

    Raises:
        ImproperlyConfigured: no ``app``, or an invalid option (Django 6.1:
            ``InvalidMailer`` under MAILERS).
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        app: Any = None,
        queue: str | None = None,
        batch_size: int | None = None,
        task: str | None = None,
        smtp: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # As AsyncSMTPBackend: Django 6.1's base class warns about fail_silently.
        super().__init__(**kwargs)
        alias = kwargs.get("alias")
        self.alias: str | None = alias
        self.fail_silently = fail_silently
        # Under MAILERS the workers find the SMTP settings through the alias.
        mailers = alias is not None and _HAS_MAILERS and hasattr(settings, "MAILERS")
        conf = {} if mailers else _celery_settings()
        given = {"app": app, "queue": queue, "batch_size": batch_size, "task": task}
        options = {**conf, **{key: value for key, value in given.items() if value is not None}}
        self.profile: str | None = alias if mailers else None
        self.app: Any = options.get("app")
        self.queue: str | None = options.get("queue")
        self.batch_size: int = options.get("batch_size", 100)
        self.task: str | None = options.get("task")
        self.smtp = smtp if smtp is not None else options.get("smtp")
        problem = None
        if self.app is None:
            problem = f"CeleryBackend needs a Celery app: set 'app' in {CELERY_SETTING} or OPTIONS."
        elif (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            problem = f"batch_size must be an int >= 1, not {self.batch_size!r}."
        elif self.queue is not None and not isinstance(self.queue, str):
            problem = f"queue must be a str, not {self.queue!r}."
        if problem is not None:
            raise _mailer_error(problem, alias) if mailers else ImproperlyConfigured(problem)

    def celery_app(self) -> Any:
        """The Celery app (imported from its dotted path on first use)."""
        if isinstance(self.app, str):
            from django.utils.module_loading import import_string

            self.app = import_string(self.app)
        return self.app

    def get_queue(self) -> Any:
        """The :class:`smtp_backends.celery.SMTPQueue` (registered if the app has none)."""
        options = {"name": self.task} if self.task else {}
        return register_celery(self.celery_app(), **options)

    def envelope(self, message: Any) -> tuple[str, list[str], bytes] | None:
        """(sender, recipients, bytes) of a Django message, as the SMTP backend derives them.

        None for a message without recipients (not queued, not counted).

        Raises:
            ValueError: an invalid address.
        """
        return _django_envelope(message, self.prep_address)

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """The envelope form of ``address``; as :meth:`AsyncSMTPBackend.prep_address`."""
        return _prep_address(self, address, force_ascii)

    def send_messages(self, email_messages: Iterable[Any]) -> int:
        """Queue Django ``EmailMessage`` objects; return how many were queued.

        Messages without recipients are skipped. Every message is serialised
        before the first task is published.

        Raises:
            ValueError: an invalid address (nothing queued).
            Exception: the broker could not be reached (kombu's
                ``OperationalError``...), unless ``fail_silently``.
        """
        if not email_messages:
            return 0
        items = [item for item in map(self.envelope, email_messages) if item is not None]
        if not items:
            return 0
        try:
            queued: int = self.get_queue().enqueue_many(
                items, profile=self.profile, queue=self.queue, batch_size=self.batch_size
            )
        except Exception:
            if self.fail_silently:
                return 0
            raise
        return queued
