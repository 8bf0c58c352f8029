"""Flask's ``MAIL_*`` settings -> the sending layer's settings, checked once.

The connection and pool settings go through
:class:`~smtp_backends.settings.MailerSettings` (errors name the ``MAIL_*``
key); the extension's own keys (the default sender, suppression, debug
output, queueing) are checked here with the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from smtp_backends.settings import OPTIONS, MailerSettings, Option, check_option

__all__ = ("ATTRIBUTES", "KEYS", "mailer_settings", "read_settings")

#: The state's attribute for each MailerSettings field.
ATTRIBUTES = {
    **{field: field for field in OPTIONS if field != "keep_order"},
    "host": "server",
    "ssl_certfile": "client_cert",
    "ssl_keyfile": "client_key",
    "ssl_context": "tls_context",
    "max_messages_per_connection": "max_emails",
    "idle_timeout": "pool_idle_timeout",
}
#: The MAIL_* key of each state attribute.
KEYS = {
    "server": "MAIL_SERVER",
    "port": "MAIL_PORT",
    "username": "MAIL_USERNAME",
    "password": "MAIL_PASSWORD",
    "use_tls": "MAIL_USE_TLS",
    "use_ssl": "MAIL_USE_SSL",
    "timeout": "MAIL_TIMEOUT",
    "client_cert": "MAIL_CLIENT_CERT",
    "client_key": "MAIL_CLIENT_KEY",
    "tls_context": "MAIL_TLS_CONTEXT",
    "cert_bundle": "MAIL_CERT_BUNDLE",
    "validate_certs": "MAIL_VALIDATE_CERTS",
    "local_hostname": "MAIL_LOCAL_HOSTNAME",
    "allow_insecure_auth": "MAIL_ALLOW_INSECURE_AUTH",
    "pipelining": "MAIL_PIPELINING",
    "pool_size": "MAIL_POOL_SIZE",
    "max_emails": "MAIL_MAX_EMAILS",
    "pool_idle_timeout": "MAIL_POOL_IDLE_TIMEOUT",
    # The policies (plain data or ready objects; see smtp_backends.policies).
    "dkim": "MAIL_DKIM",
    "oauth": "MAIL_OAUTH",
    "rate_limit": "MAIL_RATE_LIMIT",
    "failover": "MAIL_FAILOVER",
    "proxy": "MAIL_PROXY",
    "dsn": "MAIL_DSN",
    "requiretls": "MAIL_REQUIRETLS",
}
# The defaults that differ from the sending layer's (Flask-Mail's, and ours).
_DEFAULTS = {"server": "127.0.0.1", "timeout": 60.0, "pool_size": 4, "pool_idle_timeout": 60.0}

_ENV_HINT = (
    " Values read from environment variables are strings: convert them, or use "
    "app.config.from_prefixed_env(), which parses true/false and numbers."
)
_FLAG = Option("flag", optional=False)


def _name(field: str) -> str:
    return KEYS[ATTRIBUTES[field]]


def mailer_settings(values: Mapping[str, Any]) -> MailerSettings:
    """The sending layer's settings for a state's attributes.

    MAIL_USE_TLS means STARTTLS is required (and never attempted without it,
    as with Flask-Mail); MAIL_USE_SSL means TLS from the first byte. Login
    happens when both MAIL_USERNAME and MAIL_PASSWORD are set.

    Raises:
        TypeError / ValueError: an invalid value, naming its MAIL_* key.
    """
    options = {field: values[attribute] for field, attribute in ATTRIBUTES.items()}
    return MailerSettings.from_options(options, _name, _ENV_HINT)


def read_settings(config: Mapping[str, Any], debug: bool | int, testing: bool) -> dict[str, Any]:
    """The MAIL_* settings of ``config``, checked, as MailState attributes.

    Raises:
        TypeError: a value of the wrong type (the message names the key).
        ValueError: an invalid value, or MAIL_USE_TLS with MAIL_USE_SSL.
    """
    settings: dict[str, Any] = {}
    for field, attribute in ATTRIBUTES.items():
        default = _DEFAULTS.get(attribute, MailerSettings.__dataclass_fields__[field].default)
        if attribute == "port":
            use_ssl = config.get("MAIL_USE_SSL", False)
            default = 465 if use_ssl is True else 25
        value = config.get(KEYS[attribute], default)
        settings[attribute] = check_option(OPTIONS[field], value, KEYS[attribute], _ENV_HINT)
    # One connection at the least: Flask has no "a connection per call" mode.
    check_option(Option("count", minimum=1), settings["pool_size"], "MAIL_POOL_SIZE")
    sender = config.get("MAIL_DEFAULT_SENDER")
    if isinstance(sender, list):
        sender = tuple(sender)
    if sender is not None and not (
        isinstance(sender, str)
        or (
            isinstance(sender, tuple)
            and len(sender) == 2
            and all(isinstance(s, str) for s in sender)
        )
    ):
        raise TypeError(
            f"MAIL_DEFAULT_SENDER must be a str or a (name, address) tuple, not {sender!r}."
        )
    settings["default_sender"] = sender
    mail_debug = config.get("MAIL_DEBUG", debug)
    if not isinstance(mail_debug, int):  # bool is an int
        raise TypeError(f"MAIL_DEBUG must be True, False or an int, not {mail_debug!r}.")
    settings["debug"] = int(mail_debug)
    for attribute, key, default in (
        ("suppress", "MAIL_SUPPRESS_SEND", bool(testing)),
        ("ascii_attachments", "MAIL_ASCII_ATTACHMENTS", False),
        ("queue", "MAIL_QUEUE", False),
    ):
        settings[attribute] = check_option(_FLAG, config.get(key, default), key, _ENV_HINT)
    queue = config.get("MAIL_CELERY_QUEUE")
    settings["celery_queue"] = check_option(Option("str"), queue, "MAIL_CELERY_QUEUE")
    settings["task_queue"] = None
    mailer_settings(settings)  # the combination (TLS modes, EHLO name), checked now
    return settings


def enable_debug_logging() -> None:
    """MAIL_DEBUG: show the SMTP exchange, as smtplib's debug output did.

    The core logs it (credentials redacted) on the ``smtp_backends`` logger at
    DEBUG; this lowers that logger's level and, when no handler would show the
    records, adds Flask's default handler (the WSGI error stream or stderr).
    """
    core = logging.getLogger("smtp_backends")
    if core.level == logging.NOTSET or core.level > logging.DEBUG:
        core.setLevel(logging.DEBUG)
    if not core.hasHandlers():
        from flask.logging import default_handler

        core.addHandler(default_handler)
