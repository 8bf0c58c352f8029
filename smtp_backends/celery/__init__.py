"""Queued sending on Celery: ``smtp_backends.celery``.

When sending mail inside the web process is no longer good enough, the web
process hands each message to Celery and worker processes send it through a
pooled, pipelined :class:`~smtp_backends.SMTPPool`. Register the task on
*your* Celery app (nothing is registered globally)::

    from celery import Celery
    from smtp_backends.celery import register

    app = Celery("proj", broker="redis://localhost:6379/0")
    mail = register(app, smtp={"hostname": "smtp.example.com", "port": 587,
                               "start_tls": True, "username": "u", "password": "p"})

    # in the web process (the same module is imported by the workers):
    mail.enqueue("from@example.com", ["to@example.com"], message_bytes)
    mail.enqueue_many([(sender, recipients, data), ...])   # split into tasks of batch_size

Run workers with ``celery -A proj worker -Q <queue>``. The Django backend
(:class:`smtp_backends.django.CeleryBackend`) and the Flask extension
(``MAIL_QUEUE``, :meth:`smtp_backends.flask.Mail.init_celery`) build on this.

What crosses the broker is JSON (Celery's json serializer): per message its
id, the envelope (sender, recipients) and its exact bytes as base64 text.
Workers send those bytes unchanged; nothing is ever pickled.

Guarantees and behaviour:

* **One pool per worker process**, created on the first task (through
  :func:`smtp_backends.bridge.shared_pool`, on the bridge's event loop) and
  reused by every later task; closed at ``worker_process_shutdown`` /
  ``worker_shutdown``.
* **Late acknowledgement** (``acks_late``, ``reject_on_worker_lost``): a task
  whose worker dies before finishing is delivered again.
* **No double sending after a redelivery**: the moment the server accepts a
  message (its 2xx to the end of data, through ``on_result``), a key derived
  from its Message-ID and envelope is written to Redis with a TTL (7 days by
  default; the broker's Redis unless ``dedupe`` names another); a task skips
  the messages whose key exists. The remaining window is a crash between the
  server's reply and that write (a few microseconds on loopback).
* **Retries with exponential backoff** for transient failures: 4xx replies
  (to MAIL, RCPT, DATA or the greeting), connection refused or lost before
  the end of data, timeouts before the end of data, no free connection. The
  retry carries only the messages that need it.
* **No retry** for permanent failures (5xx, invalid addresses, certificate
  errors) nor when the outcome is unknown (the connection ended after the
  end-of-data dot, :class:`~smtp_backends.SMTPUnknownOutcomeError`): resending
  could deliver twice.
* **Partial refusal**: a message accepted for some recipients is recorded as
  sent and never resent to them; recipients refused with 4xx are retried as a
  new envelope (same bytes, only those recipients, its own dedupe key);
  recipients refused with 5xx are final failures.
* Every final failure is logged (logger ``smtp_backends.celery``, with the
  message id) and reported through the :data:`message_failed` signal
  (``sender`` is the :class:`SMTPQueue`, ``failure`` a :class:`Failure`) and
  the ``on_failure`` hook given to :func:`register`.

With Redis as the broker, keep ``retry_backoff_max`` below the transport's
``visibility_timeout`` (one hour by default): a retry waiting longer than
that in a worker is delivered a second time.

The package: :mod:`.messages` (what crosses the broker, the dedupe store,
failures and reports) and :mod:`.queue` (the task, the queue, the worker's
Mailer).
"""

from __future__ import annotations

from .messages import (
    DedupeStore,
    DeliveryReport,
    Failure,
    QueuedMessage,
    RedisDedupe,
    classify,
    message_id_of,
)
from .messages import _redis_url_of as _redis_url_of
from .queue import DEFAULT_TASK_NAME, SMTPQueue, get_queue, message_failed, register
from .queue import _close_pools as _close_pools

__all__ = (
    "DEFAULT_TASK_NAME",
    "DedupeStore",
    "DeliveryReport",
    "Failure",
    "QueuedMessage",
    "RedisDedupe",
    "SMTPQueue",
    "classify",
    "get_queue",
    "message_failed",
    "message_id_of",
    "register",
)
