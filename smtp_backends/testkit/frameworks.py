"""Point one framework's mail at a local server for the length of a ``with`` block.

Each helper changes only what its framework reads, restores it afterwards,
and sends through the real path (this package's backend, extension or
Mailer), never a framework's in-memory test backend:

* :func:`use_django`: Django's test runner and pytest-django swap every
  mailer for ``locmem`` in tests. On Django 6.1+ the alias of ``MAILERS`` is
  replaced by ``smtp_backends.django.AsyncSMTPBackend`` with the server's
  ``host`` and ``port`` (the other aliases are kept; a project still on
  ``EMAIL_BACKEND`` gets a ``MAILERS`` for the test, as overriding the
  deprecated ``EMAIL_*`` settings would warn); on Django 5.2
  ``EMAIL_BACKEND`` and the ``EMAIL_*`` connection settings are replaced.
* :func:`use_flask`: the app's ``MAIL_*`` state (server, port, no TLS, no
  login, sending not suppressed even under ``TESTING``).
* :func:`use_asgi`: a :class:`smtp_backends.asgi.Mail`'s settings.

The frameworks are imported only when their helper is called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ("DJANGO_BACKEND", "use_asgi", "use_django", "use_flask")

#: The backend :func:`use_django` installs.
DJANGO_BACKEND = "smtp_backends.django.AsyncSMTPBackend"

# What use_flask sets on the app's mail state: a plain local session.
_PLAIN = {"use_tls": False, "use_ssl": False, "username": None, "password": None}


@contextlib.contextmanager
def use_django(host: str, port: int, *, alias: str = "default") -> Iterator[None]:
    """Django's mail (the ``alias`` mailer) goes to ``host:port`` inside the block.

    Raises:
        ValueError: an ``alias`` other than ``"default"`` before Django 6.1.
    """
    from django.conf import settings
    from django.test import override_settings

    from smtp_backends.django.config import HAS_MAILERS

    overrides: dict[str, Any]
    if HAS_MAILERS:
        options = {"host": host, "port": port}
        mailers = dict(getattr(settings, "MAILERS", {}))
        mailers[alias] = {"BACKEND": DJANGO_BACKEND, "OPTIONS": options}
        overrides = {"MAILERS": mailers}
    elif alias != "default":
        raise ValueError(f"mailer alias {alias!r} needs Django 6.1's MAILERS setting")
    else:
        overrides = {
            "EMAIL_BACKEND": DJANGO_BACKEND,
            "EMAIL_HOST": host,
            "EMAIL_PORT": port,
            "EMAIL_HOST_USER": "",
            "EMAIL_HOST_PASSWORD": "",
            "EMAIL_USE_TLS": False,
            "EMAIL_USE_SSL": False,
        }
    with override_settings(**overrides):
        yield


@contextlib.contextmanager
def use_flask(app: Any, host: str, port: int) -> Iterator[None]:
    """The Flask ``app``'s mail goes to ``host:port`` inside the block (really sent).

    Its pooled connections are closed when the block ends.

    Raises:
        RuntimeError: the app was not set up with ``Mail.init_app``.
    """
    from smtp_backends.flask import MailState

    state = app.extensions.get("mail")
    if not isinstance(state, MailState):
        raise RuntimeError(f"{app!r} has no smtp_backends.flask.Mail: call mail.init_app(app)")
    changes = {"server": host, "port": port, "suppress": False, "queue": False, **_PLAIN}
    saved = {name: getattr(state, name) for name in changes}
    for name, value in changes.items():
        setattr(state, name, value)
    try:
        yield
    finally:
        state.close()
        for name, value in saved.items():
            setattr(state, name, value)


@contextlib.contextmanager
def use_asgi(mail: Any, host: str, port: int) -> Iterator[None]:
    """The :class:`smtp_backends.asgi.Mail` ``mail`` sends to ``host:port`` inside the block."""
    saved = mail.settings
    mail.settings = saved.replace(host=host, port=port, **_PLAIN)
    try:
        yield
    finally:
        mail.settings = saved
