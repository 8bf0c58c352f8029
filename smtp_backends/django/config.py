"""Django's settings -> the sending layer's :class:`~smtp_backends.settings.MailerSettings`.

Two configurations: EMAIL_BACKEND (Django 5.2, or 6.x without ``MAILERS``),
where each stock keyword left as None defaults to its ``EMAIL_*`` setting
and our own options may come from ``SMTP_BACKENDS_OPTIONS``; and Django
6.1's ``MAILERS``, where the OPTIONS arrive as keywords with the ``alias``
and no ``EMAIL_*`` setting is ever read. Errors name the setting the user
wrote (``EMAIL_PORT``, ``OPTIONS['port']``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django.core.mail
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.utils import DNS_NAME

from smtp_backends import ConnectionConfig
from smtp_backends.mailer import Item, Outgoing
from smtp_backends.policies import check_policy
from smtp_backends.settings import OPTIONS, MailerSettings

__all__ = (
    "HAS_MAILERS",
    "OPTIONS_SETTING",
    "POLICY_OPTIONS",
    "delivery_options",
    "has_mailers_setting",
    "mailer_error",
    "mailer_settings",
    "outgoing_items",
    "own_options",
)

# Django 6.1: MAILERS, backends built with an alias, EMAIL_* deprecated.
HAS_MAILERS = hasattr(django.core.mail, "mailers")
InvalidMailer: Any = getattr(django.core.mail, "InvalidMailer", ImproperlyConfigured)
warn_about_external_use: Callable[..., None] | None = None
RemovedInDjango2028Warning: type[Warning] = DeprecationWarning
if HAS_MAILERS:
    import django.utils.deprecation

    warn_about_external_use = django.utils.deprecation.warn_about_external_use
    RemovedInDjango2028Warning = django.utils.deprecation.RemovedInDjango2028Warning

#: The setting that holds this backend's own options when it is configured
#: through EMAIL_BACKEND (Django 5.2, or 6.x without MAILERS).
OPTIONS_SETTING = "SMTP_BACKENDS_OPTIONS"

# Our options and their defaults (none of them needs a setting).
OWN_OPTIONS: dict[str, Any] = {
    "pool_size": 4,
    "idle_timeout": 60.0,
    "validate_certs": True,
    "cert_bundle": None,
    "tls_context": None,
    "allow_insecure_auth": False,
    "pipelining": True,
    "local_hostname": None,
    "keep_order": True,
    "smtputf8": False,
}
#: The policy options (plain data or ready objects, see smtp_backends.policies):
#: OPTIONS keys under MAILERS, SMTP_BACKENDS_OPTIONS keys or backend keywords.
POLICY_OPTIONS: dict[str, Any] = {
    "dkim": None,
    "oauth": None,
    "rate_limit": None,
    "max_messages_per_connection": None,
    "failover": None,
    "proxy": None,
    "dsn": None,
    "requiretls": False,
}
OWN_OPTIONS.update(POLICY_OPTIONS)

#: The backend's attribute for each MailerSettings field it sets.
ATTRIBUTES = {
    **{field: field for field in OPTIONS},
    "ssl_context": "tls_context",
}
# EMAIL_BACKEND configuration: the setting each stock keyword defaults to.
_LEGACY_NAMES = {
    "host": "EMAIL_HOST",
    "port": "EMAIL_PORT",
    "username": "EMAIL_HOST_USER",
    "password": "EMAIL_HOST_PASSWORD",
    "use_tls": "EMAIL_USE_TLS",
    "use_ssl": "EMAIL_USE_SSL",
    "timeout": "EMAIL_TIMEOUT",
    "ssl_certfile": "EMAIL_SSL_CERTFILE",
    "ssl_keyfile": "EMAIL_SSL_KEYFILE",
}


def mailer_error(message: str, alias: str | None) -> Exception:
    """Django 6.1's InvalidMailer (ImproperlyConfigured before), naming the alias."""
    if InvalidMailer is ImproperlyConfigured:
        error: Exception = ImproperlyConfigured(
            f"MAILERS[{alias!r}]: {message}" if alias else message
        )
    else:
        error = InvalidMailer(message, alias=alias)
    return error


def has_mailers_setting() -> bool:
    """Whether the project configures mail with Django 6.1's MAILERS setting."""
    return HAS_MAILERS and hasattr(settings, "MAILERS")


def legacy_setting(name: str) -> Any:
    """Read one of the EMAIL_* settings of the EMAIL_BACKEND configuration.

    Django 6.1 deprecates them and warns when code outside Django reads them;
    the stock backend reads them from inside Django and does not warn, so
    neither do we (Django already warns about the settings themselves).
    """
    if not HAS_MAILERS:
        return getattr(settings, name)
    settings.DEFAULT_CHARSET  # noqa: B018 - loads the settings if needed
    return getattr(settings._wrapped, name)


_hostname_ok: dict[str, bool] = {}


def default_local_hostname() -> str | None:
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


def stock_options(alias: str | None, legacy: bool, **given: Any) -> dict[str, Any]:
    """The stock backend's options: from keywords, else (EMAIL_BACKEND only) EMAIL_*.

    Under MAILERS only the keywords count, ``host`` is required and ``port``
    defaults to 465 with ``use_ssl``, 587 with ``use_tls``, else 25.

    Raises:
        ValueError: ``use_tls`` with ``use_ssl`` (EMAIL_BACKEND), in Django's words.
        InvalidMailer: a missing host, or both TLS modes (MAILERS).
    """
    options = dict(given)
    if legacy:
        for name, setting in _LEGACY_NAMES.items():
            if options[name] is None or (name in {"host", "port"} and not options[name]):
                options[name] = legacy_setting(setting)
        if options["use_ssl"] is True and options["use_tls"] is True:
            raise ValueError(
                "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set "
                "one of those settings to True."
            )
        return options
    use_tls, use_ssl = options["use_tls"], options["use_ssl"]
    options["use_tls"] = False if use_tls is None else use_tls
    options["use_ssl"] = False if use_ssl is None else use_ssl
    if options["host"] is None:
        raise mailer_error("OPTIONS must define 'host'.", alias)
    if options["use_ssl"] is True and options["use_tls"] is True:
        raise mailer_error(
            "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
            "Set at most one of them to True.",
            alias,
        )
    if options["port"] is None:
        options["port"] = 465 if use_ssl else 587 if use_tls else 25
    return options


def own_options(given: dict[str, Any], legacy: bool) -> dict[str, Any]:
    """Our options: keywords, else (EMAIL_BACKEND only) the setting, else defaults.

    Raises:
        ImproperlyConfigured: the setting is not a dict, or has unknown keys.
    """
    from_setting: Any = getattr(settings, OPTIONS_SETTING, None) if legacy else None
    if from_setting is None:
        from_setting = {}
    if not isinstance(from_setting, dict):
        raise ImproperlyConfigured(f"The {OPTIONS_SETTING} setting must be a dict.")
    unknown = set(from_setting) - set(OWN_OPTIONS)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown key(s) in the {OPTIONS_SETTING} setting: {', '.join(sorted(unknown))}"
        )
    options = {**OWN_OPTIONS, **from_setting}
    options.update({name: value for name, value in given.items() if value is not None})
    return options


def mailer_settings(backend: Any, legacy: bool) -> MailerSettings:
    """The sending layer's settings for a backend's current attributes.

    ``use_ssl`` is implicit TLS, ``use_tls`` required STARTTLS and neither a
    plaintext session (no opportunistic upgrade, as the stock backend); a
    timeout of None is the core's 60 s (the stock backend would wait forever).

    Raises:
        ValueError / TypeError: invalid settings, naming the user's setting.
    """
    options = {field: getattr(backend, attribute) for field, attribute in ATTRIBUTES.items()}
    options["host"] = options["host"] or None
    for empty_means_none in ("ssl_certfile", "ssl_keyfile", "local_hostname"):
        options[empty_means_none] = options[empty_means_none] or None
    if options["local_hostname"] is None:
        options["local_hostname"] = default_local_hostname()
    options = {field: value for field, value in options.items() if value is not None}
    return MailerSettings.from_options(options, _legacy_name if legacy else _option_name)


def own_option_name(option: str, legacy: bool) -> str:
    """The user's name of one of our options, for an error."""
    return option if legacy else f"OPTIONS[{option!r}]"


def _legacy_name(field: str) -> str:
    if field in POLICY_OPTIONS:
        return f"{OPTIONS_SETTING}[{field!r}]"
    return _LEGACY_NAMES.get(field, ATTRIBUTES[field])


def pop_policies(keywords: dict[str, Any]) -> dict[str, Any]:
    """The policy options among a backend's keywords, taken out of them."""
    return {name: keywords.pop(name) for name in POLICY_OPTIONS if name in keywords}


def _option_name(field: str) -> str:
    return f"OPTIONS[{ATTRIBUTES[field]!r}]"


def delivery_options(message: Any) -> dict[str, Any]:
    """A Django message's own DSN and REQUIRETLS: its ``dsn`` / ``requiretls`` attributes.

    ``message.dsn`` takes what the ``dsn`` option takes (``{"notify": ["FAILURE"],
    "ret": "HDRS"}``, ``"FAILURE,DELAY"`` or a DSN) and replaces it for that
    message; ``message.requiretls = True`` asks for REQUIRETLS (RFC 8689).

    Raises:
        TypeError / ValueError: an invalid value, naming the attribute.
    """
    options: dict[str, Any] = {}
    dsn = getattr(message, "dsn", None)
    if dsn is not None:
        options["dsn"] = check_policy("dsn", dsn, "EmailMessage.dsn")
    requiretls = getattr(message, "requiretls", None)
    if requiretls is not None:
        if not isinstance(requiretls, bool):
            raise TypeError(f"EmailMessage.requiretls must be True or False, not {requiretls!r}.")
        options["requiretls"] = requiretls
    return options


def outgoing_items(
    messages: list[Any], envelope: Callable[[Any], Any]
) -> tuple[list[Item], Exception | None]:
    """Messages with their own DSN/REQUIRETLS, each rendered now as an :class:`Outgoing`.

    As for any list: the messages before one that cannot be prepared are sent,
    its error is returned, and the ones after it are not sent.
    """
    items: list[Item] = []
    try:
        for message in messages:
            sender, recipients, data = envelope(message)
            items.append(Outgoing(sender, recipients, data, **delivery_options(message)))
    except Exception as exc:
        return items, exc
    return items, None
