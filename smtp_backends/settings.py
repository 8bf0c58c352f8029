"""The sending layer's settings: one frozen object, validated once, for every adapter.

:class:`MailerSettings` holds what a :class:`~smtp_backends.mailer.Mailer`
needs, under smtplib-style names (``host``, ``port``, ``username``,
``password``, ``use_tls`` for STARTTLS, ``use_ssl`` for implicit TLS,
``timeout``, ``ssl_certfile``/``ssl_keyfile``...) plus the pool's limits.
Adapters translate their framework's settings into it with
:meth:`MailerSettings.from_options`, passing their own setting names so that
an error names what the user wrote::

    MailerSettings.from_options({"port": "abc"}, names={"port": "EMAIL_PORT"})
    # TypeError: EMAIL_PORT must be an int, not 'abc'

Validation is table driven (:data:`OPTIONS`): a new option (a policy of a
later feature: signing, rate limits, failover) is one field on the class and
one :class:`Option` row; every adapter then accepts and checks it.

Values are never coerced from text silently: ``"False"`` for a flag is an
error, not true. Text from environment variables goes through
:meth:`MailerSettings.from_environ`, which parses it by the option's kind.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from . import policies
from .config import DEFAULT_TIMEOUT, ConnectionConfig

__all__ = (
    "ENV_PREFIX",
    "OPTIONS",
    "MailerSettings",
    "Option",
    "SettingsMemo",
    "check_option",
)

#: The prefix of the environment variables :meth:`MailerSettings.from_environ` reads.
ENV_PREFIX = "SMTP_BACKENDS_"

#: Maps an option to the user's name for it (``"port"`` -> ``"EMAIL_PORT"``).
Names = Mapping[str, str] | Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class Option:
    """How one setting is checked.

    Attributes:
        kind: ``host``, ``port``, ``str``, ``secret``, ``flag``, ``seconds``
            (a number > 0, or None), ``count`` (an int >= ``minimum``, or
            None when ``optional``), ``path`` or ``context``.
        minimum: the smallest value of a ``count``.
        optional: None is allowed.
    """

    kind: str
    minimum: int = 0
    optional: bool = True


#: Every option of :class:`MailerSettings`, by field name.
OPTIONS: dict[str, Option] = {
    "host": Option("host", optional=False),
    "port": Option("port"),
    "username": Option("str"),
    "password": Option("secret"),
    "use_tls": Option("flag", optional=False),
    "use_ssl": Option("flag", optional=False),
    "timeout": Option("seconds"),
    "ssl_certfile": Option("path"),
    "ssl_keyfile": Option("path"),
    "ssl_context": Option("context"),
    "cert_bundle": Option("path"),
    "validate_certs": Option("flag", optional=False),
    "local_hostname": Option("str"),
    "allow_insecure_auth": Option("flag", optional=False),
    "pipelining": Option("flag", optional=False),
    "pool_size": Option("count", minimum=0, optional=False),
    "max_messages_per_connection": Option("count", minimum=1),
    "idle_timeout": Option("seconds"),
    "keep_order": Option("flag", optional=False),
    # The production policies (smtp_backends.policies): plain data or the ready object.
    "dkim": Option("dkim"),
    "oauth": Option("oauth"),
    "rate_limit": Option("rate_limit"),
    "failover": Option("failover"),
    "proxy": Option("proxy"),
    "dsn": Option("dsn"),
    "requiretls": Option("flag", optional=False),
}

_EXPECTED = {
    "host": "a host name",
    "port": "an int",
    "str": "a str",
    "secret": "a str",
    "flag": "True or False",
    "seconds": "a number of seconds",
    "count": "an int",
    "path": "a file path",
    "context": "an ssl.SSLContext",
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _shown(kind: str, value: Any) -> str:
    # A secret's value never appears in an error (it would reach logs).
    return type(value).__name__ if kind == "secret" else repr(value)


def check_option(option: Option, value: Any, name: str, hint: str = "") -> Any:
    """``value`` checked against ``option``; returns it (a port's digits as an int).

    Args:
        option: how to check it.
        value: what the user gave.
        name: the user's name for the setting, used in the error.
        hint: appended to a type error about a str (say, where strings come from).

    Raises:
        TypeError: a value of the wrong type ("EMAIL_PORT must be an int, not 'abc'").
        ValueError: a value out of range.
    """
    kind = option.kind
    if kind in policies.KINDS:
        return policies.check_policy(kind, value, name)
    if value is None:
        if option.optional:
            return None
        raise TypeError(f"{name} must be {_EXPECTED[kind]}, not None.")
    if kind == "port" and isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # smtplib took a numeric str, so Django and Flask-Mail did too
    ok = {
        "host": lambda v: isinstance(v, str) and bool(v),
        "port": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "secret": lambda v: isinstance(v, (str, bytes)),
        "flag": lambda v: isinstance(v, bool),
        "seconds": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "count": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "path": lambda v: isinstance(v, (str, os.PathLike)),
        "context": lambda v: isinstance(v, ssl.SSLContext),
    }[kind](value)
    if not ok:
        extra = hint if isinstance(value, str) else ""
        raise TypeError(f"{name} must be {_EXPECTED[kind]}, not {_shown(kind, value)}.{extra}")
    if kind == "port" and not 0 < value < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, not {value!r}.")
    if kind == "seconds" and not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0 (or None), not {value!r}.")
    if kind == "count" and value < option.minimum:
        raise ValueError(f"{name} must be an int >= {option.minimum}, not {value!r}.")
    if kind == "path":
        value = os.fspath(value)
    return value


def _namer(names: Names | None) -> Callable[[str], str]:
    if names is None:
        return lambda field: field
    if callable(names):
        return names
    return lambda field: names.get(field, field)


@dataclasses.dataclass(frozen=True)
class MailerSettings:
    """What a :class:`~smtp_backends.mailer.Mailer` sends with; frozen and validated.

    Two equal settings share the process's pooled connections; any change
    makes another value (and another pool).

    Attributes:
        host: the server's name (``localhost``).
        port: its port; None: 465 with ``use_ssl``, 587 with ``use_tls``, else 25.
        username / password: log in when both are set (as Django and Flask-Mail).
        use_tls: STARTTLS, required (smtplib's ``starttls()``; Django's EMAIL_USE_TLS).
        use_ssl: TLS from the first byte (smtplib's ``SMTP_SSL``; EMAIL_USE_SSL).
        timeout: seconds for each network operation (None: no limit).
        ssl_certfile / ssl_keyfile: a client certificate and its key.
        ssl_context: an :class:`ssl.SSLContext` used as it is.
        cert_bundle: a PEM file of extra CA certificates to trust.
        validate_certs: verify the server's certificate and host name.
        local_hostname: the EHLO name (None: this host's FQDN).
        allow_insecure_auth: allow AUTH over plain text to a remote host.
        pipelining: use ESMTP PIPELINING when offered (RFC 2920).
        pool_size: most pooled connections per process (0: none, a
            connection per call).
        max_messages_per_connection: reconnect after so many (None: never).
        idle_timeout: close a pooled connection idle this long (None: never).
        keep_order: send a list in order over one connection (False: spread
            it over up to ``pool_size`` connections).
        dkim: DKIM-sign every message: a mapping (``domain``, ``selector``,
            ``key_file`` or ``private_key``; or ``keys``, ``by_domain``,
            ``headers``...) or a :class:`~smtp_backends.dkim.DKIMSigner`.
        oauth: XOAUTH2 with tokens that refresh (``username`` is the
            mailbox): a dotted path to a token function or provider, a
            mapping (``provider``: ``google``, ``microsoft``, ``callable`` or
            a factory's path) or a provider object.
        rate_limit: messages per second (a number), or a mapping
            (``messages_per_second``, ``recipients_per_minute``, ``burst``,
            ``redis_url``, ``key``...), or a :class:`~smtp_backends.ratelimit.RateLimiter`.
        failover: hosts in order (``["smtp1:587", "smtp2:587"]``, or a mapping
            with ``hosts`` and ``cooldown``), or a :class:`~smtp_backends.failover.Failover`;
            ``host`` is then not used for connecting.
        proxy: a proxy URL (``socks5h://...``, ``http://...``) or an
            :class:`~smtp_backends.proxy.SMTPProxy`.
        dsn: the delivery status notifications every message asks for (a
            mapping: ``notify``, ``ret``...; or a :class:`~smtp_backends.protocol.dsn.DSN`).
        requiretls: send every message with REQUIRETLS (RFC 8689).

    Policies given as plain data are checked here; the objects holding state
    (a rate limiter, failover cool-downs, a token cache) are made once per
    process and settings value by the :class:`~smtp_backends.mailer.Mailer`.

    Raises:
        TypeError / ValueError: see :func:`check_option` and :class:`ConnectionConfig`.
    """

    host: str = "localhost"
    port: int | None = None
    username: str | None = None
    password: str | bytes | None = dataclasses.field(default=None, repr=False)
    use_tls: bool = False
    use_ssl: bool = False
    timeout: float | None = DEFAULT_TIMEOUT
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_context: ssl.SSLContext | None = None
    cert_bundle: str | None = None
    validate_certs: bool = True
    local_hostname: str | None = None
    allow_insecure_auth: bool = False
    pipelining: bool = True
    pool_size: int = 4
    max_messages_per_connection: int | None = None
    idle_timeout: float | None = 60.0
    keep_order: bool = True
    dkim: Any = None
    oauth: Any = dataclasses.field(default=None, repr=False)
    rate_limit: Any = None
    failover: Any = None
    proxy: Any = None
    dsn: Any = None
    requiretls: bool = False
    #: The core's connection settings, made once (not part of equality).
    connection: ConnectionConfig = dataclasses.field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        for field, option in OPTIONS.items():
            value = check_option(option, getattr(self, field), field)
            object.__setattr__(self, field, value)
        object.__setattr__(self, "connection", self._make_connection(_namer(None)))

    def _make_connection(self, name: Callable[[str], str]) -> ConnectionConfig:
        if self.use_tls and self.use_ssl:
            raise ValueError(
                f"{name('use_tls')} (STARTTLS) and {name('use_ssl')} (implicit TLS) "
                "cannot both be set."
            )
        login = bool(self.username and self.password)
        if self.oauth is not None:
            if self.password:
                raise ValueError(
                    f"{name('password')} and {name('oauth')} cannot both be set: "
                    "XOAUTH2 logs in with a token instead of a password."
                )
            if not self.username:
                raise ValueError(f"{name('oauth')} needs {name('username')} (the mailbox).")
        ready = policies.ready
        return ConnectionConfig(
            hostname=self.host,
            port=self.port,
            username=self.username if login or self.oauth is not None else None,
            password=self.password if login else None,
            oauth_token_generator=ready(self.oauth),
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            use_tls=self.use_ssl,
            start_tls=self.use_tls,
            validate_certs=self.validate_certs,
            client_cert=self.ssl_certfile,
            client_key=self.ssl_keyfile,
            tls_context=self.ssl_context,
            cert_bundle=self.cert_bundle,
            pipelining=self.pipelining,
            allow_insecure_auth=self.allow_insecure_auth,
            dkim=ready(self.dkim),
            rate_limit=ready(self.rate_limit),
            failover=ready(self.failover),
            proxy=self.proxy,
            dsn=self.dsn,
            requiretls=self.requiretls,
        )

    @property
    def stateful_policies(self) -> dict[str, policies.PolicySpec]:
        """The policies whose objects are made once per process (by the Mailer),
        by :class:`~smtp_backends.ConnectionConfig` keyword."""
        found = {}
        for field, keyword in _STATEFUL.items():
            value = getattr(self, field)
            if isinstance(value, policies.PolicySpec) and value.stateful:
                found[keyword] = value
        return found

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], names: Names | None = None, hint: str = ""
    ) -> MailerSettings:
        """Settings from ``options`` (field names; None or absent: the default).

        Args:
            options: values by field name; an absent field takes its
                default, None is checked like any value.
            names: the user's name of each field, for error messages (a
                mapping or a function; default: the field name).
            hint: appended to a type error about a str.

        Raises:
            TypeError: an unknown option, or a value of the wrong type.
            ValueError: a value out of range, or a contradiction.
        """
        name = _namer(names)
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TypeError(f"Unknown option(s): {', '.join(sorted(map(name, unknown)))}")
        checked = {
            field: check_option(OPTIONS[field], value, name(field), hint)
            for field, value in options.items()
        }
        settings = cls.__new__(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                value = checked.get(field.name, field.default)
                object.__setattr__(settings, field.name, value)
        object.__setattr__(settings, "connection", settings._make_connection(name))
        return settings

    @classmethod
    def from_environ(
        cls,
        prefix: str = ENV_PREFIX,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> MailerSettings:
        """Settings from environment variables (``SMTP_BACKENDS_HOST``, ``..._PORT``...).

        Each variable is parsed by its option's kind: flags take
        ``1/true/yes/on`` and ``0/false/no/off``, numbers their digits, and
        an empty value means "not set". ``overrides`` (field names; None:
        not given) win.

        Raises:
            TypeError / ValueError: a variable that does not parse, named in the error.
        """
        environ = os.environ if environ is None else environ
        options: dict[str, Any] = {}
        for field, option in OPTIONS.items():
            text = environ.get(prefix + field.upper())
            if text is not None and text.strip() and option.kind != "context":
                if option.kind in policies.KINDS:
                    name = prefix + field.upper()
                    options[field] = policies.parse_policy_text(option.kind, text.strip(), name)
                    continue
                options[field] = _parse(option, text.strip(), prefix + field.upper())
        options.update({k: v for k, v in overrides.items() if v is not None})
        names = {field: prefix + field.upper() for field in OPTIONS}
        names.update({field: field for field in overrides})
        return cls.from_options(options, names)

    def replace(self, **changes: Any) -> MailerSettings:
        """A copy with ``changes`` (field names), validated."""
        return dataclasses.replace(self, **changes)

    @property
    def pooled(self) -> bool:
        """Whether sends borrow the process's pooled connections (``pool_size`` > 0)."""
        return self.pool_size > 0


# The policy options whose plain data makes objects with state, by ConnectionConfig keyword.
_STATEFUL = {"oauth": "oauth_token_generator", "rate_limit": "rate_limit", "failover": "failover"}


class SettingsMemo:
    """An adapter's settings, made again only when the values they come from change.

    For adapters whose settings live in mutable attributes (a Django backend,
    a Flask app's state): the check runs once per change, not once per send.
    """

    __slots__ = ("_settings", "_source")

    def __init__(self) -> None:
        self._source: tuple[Any, ...] | None = None
        self._settings: MailerSettings | None = None

    def get(self, source: tuple[Any, ...], make: Callable[[], MailerSettings]) -> MailerSettings:
        """The settings for ``source`` (the values they are made of), made by ``make``."""
        settings = self._settings
        if settings is None or source != self._source:
            settings = make()
            self._source, self._settings = source, settings
        return settings


def _parse(option: Option, text: str, name: str) -> Any:
    """One environment variable's text as the value its option takes."""
    kind = option.kind
    if kind == "flag":
        lowered = text.lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError(f"{name} must be one of 1/true/yes/on or 0/false/no/off, not {text!r}.")
    if kind in {"port", "count"}:
        try:
            return int(text)
        except ValueError:
            raise TypeError(f"{name} must be an int, not {text!r}.") from None
    if kind == "seconds":
        try:
            return float(text)
        except ValueError:
            raise TypeError(f"{name} must be a number of seconds, not {text!r}.") from None
    return text
