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

The package: :mod:`.config` (Django settings -> the sending layer's
settings), :mod:`.envelope` (messages -> bytes and envelopes),
:mod:`.backend` (the backend), :mod:`.functions` (the async module
functions), :mod:`.queued` (Celery) and :mod:`.tasks` (Django 6's
``django.tasks``: ``smtp_backends.django.tasks.TasksBackend``, its task in
:mod:`.mail_task`). The sending itself is the
:class:`smtp_backends.mailer.Mailer`'s.
"""

from __future__ import annotations

from .backend import AsyncSMTPBackend
from .functions import amail_admins, amail_managers, asend_mail, asend_mass_mail
from .queued import CeleryBackend, register_celery

__all__ = (
    "AsyncSMTPBackend",
    "CeleryBackend",
    "amail_admins",
    "amail_managers",
    "asend_mail",
    "asend_mass_mail",
    "register_celery",
)
