"""Flask integration: Flask-Mail's API on the smtp_backends core.

Switching from Flask-Mail is a change of import::

    from smtp_backends.flask import Mail, Message

    mail = Mail()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_prefixed_env()
        mail.init_app(app)
        return app

Everything Flask-Mail offers keeps its name and behaviour: :class:`Mail`
(``init_app``, ``send``, ``send_message``, ``connect``, ``record_messages``,
``state``), the per-application state at ``app.extensions["mail"]``,
:class:`Message`, :class:`Attachment`, :class:`Connection`,
:class:`BadHeaderError`, :data:`email_dispatched`, :func:`sanitize_address`,
the ``MAIL_*`` configuration keys, and the rendered MIME structure.

What changes underneath, and what is added:

* Connections come from the app's :class:`~smtp_backends.mailer.Mailer`, whose
  pool lives on the process's bridge loop (:mod:`smtp_backends.bridge`): sequential requests
  reuse one connection instead of opening one per message, every network
  operation has a timeout (``MAIL_TIMEOUT``, 60 s), certificates are
  verified, and pools are closed at process exit (or with
  :meth:`MailState.close`).
* Async views get awaitable twins (``asend``, ``asend_message``,
  ``aconnect``); the sync ones also work inside async views, because no
  pooled connection ever belongs to the view's short-lived event loop.
* Header injection through any header, address or ESMTP option raises
  :class:`BadHeaderError` before anything is sent; a missing sender or
  recipient raises :class:`NoSenderError` / :class:`NoRecipientsError`
  (both still :class:`AssertionError`, as Flask-Mail's asserts were).
* Inline images (``Content-ID`` parts in ``multipart/related``) with
  :meth:`Message.attach_inline`, and Jinja templates rendered into the body
  and HTML with :meth:`Message.render_template`.
* A ``flask mail send-test ADDRESS`` command.
* Queued sending on Celery: after ``mail.init_celery(celery_app)``,
  ``mail.send(msg, queue=True)`` (or every send, with ``MAIL_QUEUE = True``)
  hands the message to a Celery worker instead of sending it in the request
  (see :meth:`Mail.init_celery` and :mod:`smtp_backends.celery`).

The package: :mod:`.headers` (text and address helpers, errors, header
checks), :mod:`.context` (how a message reaches the app's state),
:mod:`.message`, :mod:`.dispatch` (the signal), :mod:`.connection`, :mod:`.config`
(``MAIL_*`` -> the sending layer's settings), :mod:`.extension` and
:mod:`.cli`. Only this package (and the other adapters) imports Flask; it
sends through :class:`smtp_backends.mailer.Mailer` and uses nothing else
but the public API of :mod:`smtp_backends` (and, for queued sending,
:mod:`smtp_backends.celery`).
"""

from __future__ import annotations

from email.header import Header

from .cli import mail_cli as mail_cli
from .connection import AsyncConnection, Connection
from .connection import Refused as Refused
from .dispatch import email_dispatched, signals
from .extension import Mail, MailState
from .extension import _Mail as _Mail
from .headers import Address as Address
from .headers import (
    BadHeaderError,
    FlaskMailUnicodeDecodeError,
    IncompleteMessageError,
    NoRecipientsError,
    NoSenderError,
    force_text,
    sanitize_address,
    sanitize_addresses,
    sanitize_subject,
)
from .message import Attachment, Message

__all__ = (
    "AsyncConnection",
    "Attachment",
    "BadHeaderError",
    "Connection",
    "FlaskMailUnicodeDecodeError",
    "Header",
    "IncompleteMessageError",
    "Mail",
    "MailState",
    "Message",
    "NoRecipientsError",
    "NoSenderError",
    "email_dispatched",
    "force_text",
    "sanitize_address",
    "sanitize_addresses",
    "sanitize_subject",
    "signals",
)
