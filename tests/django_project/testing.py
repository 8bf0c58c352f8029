"""Helpers and fixtures shared by the Django adapter's tests (tests/test_django*.py).

Import the fixtures you use into the test module (pytest finds fixtures in the module
namespace). Django is configured by :func:`tests.django_project.setup` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.django_project import setup

setup()

import django  # noqa: E402
import django.core.mail  # noqa: E402

from smtp_backends import bridge  # noqa: E402
from smtp_backends.django import AsyncSMTPBackend  # noqa: E402
from tests.servers import SMTPServer  # noqa: E402

#: The dotted path users put in their settings.
BACKEND = "smtp_backends.django.AsyncSMTPBackend"
#: Django 6.1+: MAILERS, backends built by ``mail.mailers[alias]``.
HAS_MAILERS = hasattr(django.core.mail, "mailers")
#: Django 6.0+: the stock backend prepares addresses with prep_address().
DJANGO_6 = django.VERSION >= (6, 0)

# EMAIL_* setting for each stock keyword (EMAIL_BACKEND configuration).
_LEGACY_SETTINGS = {
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


def make_backend(server: SMTPServer | None = None, **options: Any) -> AsyncSMTPBackend:
    """A backend for ``server`` built the way the installed Django builds it.

    Django 6.1+: with an alias (MAILERS semantics: OPTIONS only). Django 5.2: the
    EMAIL_BACKEND way (keywords, other settings from EMAIL_*).
    """
    if server is not None:
        options.setdefault("host", server.host)
        options.setdefault("port", server.port)
    if HAS_MAILERS:
        options.setdefault("alias", "default")
    return AsyncSMTPBackend(**options)


def admins(*addresses: str) -> list[Any]:
    """An ADMINS / MANAGERS value in the installed Django's format."""
    if DJANGO_6:
        return list(addresses)
    return [(address.split("@")[0], address) for address in addresses]


@pytest.fixture
def no_bridge(make_smtpd: Any, make_scripted_server: Any) -> Iterator[None]:
    """No bridge before the test; the test's pools and loop thread shut down after.

    It depends on the server factories so that pooled connections QUIT before the
    test's servers stop.
    """
    bridge.shutdown()
    yield
    bridge.shutdown()


@pytest.fixture
def use_smtp(settings: Any) -> Callable[..., None]:
    """``use_smtp(server, **options)``: route Django's default mail to ``server`` via us.

    Django 6.1+: ``MAILERS["default"]`` with OPTIONS. Django 5.2: ``EMAIL_BACKEND`` and the
    EMAIL_* settings, our own options in ``SMTP_BACKENDS_OPTIONS``.
    """

    def configure(server: SMTPServer, **options: Any) -> None:
        options.setdefault("host", server.host)
        options.setdefault("port", server.port)
        if HAS_MAILERS:
            settings.MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
            return
        settings.EMAIL_BACKEND = BACKEND
        own = {}
        for name, value in options.items():
            if name in _LEGACY_SETTINGS:
                setattr(settings, _LEGACY_SETTINGS[name], value)
            else:
                own[name] = value
        settings.SMTP_BACKENDS_OPTIONS = own

    return configure


def tls_options(ca_bundle_path: Path) -> dict[str, Any]:
    """Options that make the backend trust the test CA."""
    return {"cert_bundle": str(ca_bundle_path)}
