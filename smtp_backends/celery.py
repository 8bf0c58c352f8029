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
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hashlib
import logging
import os
import random
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from celery import signals
from celery.utils.dispatch import Signal

from smtp_backends import SMTPPool, outcomes
from smtp_backends.bridge import shutdown
from smtp_backends.mailer import Mailer
from smtp_backends.outcomes import Verdict
from smtp_backends.settings import MailerSettings

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

logger = logging.getLogger("smtp_backends.celery")

#: The task name :func:`register` uses unless told otherwise.
DEFAULT_TASK_NAME = "smtp_backends.send_mail"

#: Sent once per final failure: ``sender`` is the :class:`SMTPQueue`, ``failure``
#: a :class:`Failure`. Receivers run in the worker process.
message_failed = Signal(name="message_failed")

#: ``smtp=`` of :func:`register`: SMTPPool keywords, or a factory called with
#: the message's profile (None unless the producer gave one) in the worker.
SMTPSettings = Union[  # noqa: UP007
    MailerSettings, Mapping[str, Any], Callable[[str | None], SMTPPool]
]

#: What :meth:`SMTPQueue.enqueue_many` takes per message.
EnqueueItem = Union["QueuedMessage", tuple[str, Union[str, Sequence[str]], bytes]]  # noqa: UP007

_PAYLOAD_VERSION = 1

# A queue's messages are independent: a list spreads over every connection.
_SPREAD = MailerSettings(keep_order=False)


# ----------------------------------------------------------------------------- messages


def message_id_of(data: bytes) -> str | None:
    """The Message-ID header of raw message ``data`` (None if it has none).

    Only the header block is parsed.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 2]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    value = parsed.get("Message-ID")
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


@dataclass(frozen=True)
class QueuedMessage:
    """One message as it crosses the broker: id, envelope and exact bytes.

    Args:
        sender: the envelope sender (MAIL FROM); "" for the null sender.
        recipients: the envelope recipients (RCPT TO).
        data: the message bytes, sent unchanged.
        message_id: its Message-ID; by default read from ``data``, else a
            hash of the envelope and the bytes.

    Raises:
        TypeError: ``data`` is not bytes, or an address is not a str.
        ValueError: no recipients.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str = ""
    #: The dedupe key: the message id and the envelope (a retry to some of the
    #: recipients is another envelope, with a key of its own).
    key: str = field(init=False, repr=False)

    def __init__(
        self,
        sender: str,
        recipients: str | Iterable[str],
        data: bytes,
        message_id: str | None = None,
    ) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"message data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        rcpts = (recipients,) if isinstance(recipients, str) else tuple(recipients)
        if not isinstance(sender, str) or not all(isinstance(r, str) for r in rcpts):
            raise TypeError("the sender and the recipients must be str")
        if not rcpts:
            raise ValueError("a message needs at least one recipient")
        if not message_id:
            message_id = message_id_of(data) or "sha256:" + _digest(sender, rcpts, data)
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "recipients", rcpts)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "message_id", message_id)
        key = _digest(message_id, (sender, *rcpts))
        object.__setattr__(self, "key", key)

    def to_json(self) -> dict[str, Any]:
        """The JSON form sent to the broker (bytes as base64 text)."""
        return {
            "id": self.message_id,
            "from": self.sender,
            "to": list(self.recipients),
            "data": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_json(cls, value: Any) -> QueuedMessage:
        """The message from its JSON form.

        Raises:
            ValueError: not a message produced by :meth:`to_json`.
        """
        try:
            data = base64.b64decode(value["data"], validate=True)
            return cls(value["from"], value["to"], data, value["id"])
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a queued message: {exc!r}") from exc

    def with_recipients(self, recipients: Iterable[str]) -> QueuedMessage:
        """The same id and bytes to other recipients."""
        return QueuedMessage(self.sender, recipients, self.data, self.message_id)


def _digest(*parts: str | bytes | tuple[str, ...]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        items = part if isinstance(part, tuple) else (part,)
        for item in items:
            hasher.update(
                item.encode("utf-8", "surrogateescape") if isinstance(item, str) else item
            )
            hasher.update(b"\0")
    return hasher.hexdigest()


def _as_message(item: EnqueueItem) -> QueuedMessage:
    if isinstance(item, QueuedMessage):
        return item
    if isinstance(item, tuple) and len(item) == 3:
        return QueuedMessage(*item)
    raise TypeError(
        f"expected a QueuedMessage or a (sender, recipients, data) tuple, not {item!r:.80}"
    )


# ----------------------------------------------------------------------------- dedupe store


class DedupeStore(Protocol):
    """Where accepted messages are remembered (see :class:`RedisDedupe`)."""

    def seen(self, keys: Sequence[str]) -> set[str]:
        """The keys of ``keys`` already recorded as accepted."""

    def mark(self, key: str) -> None:
        """Record ``key`` as accepted (called the moment the server accepts it)."""


class RedisDedupe:
    """Accepted-message keys in Redis, each one expiring after ``ttl`` seconds.

    Args:
        url: a Redis URL (``redis://``, ``rediss://``, ``unix://``).
        ttl: seconds a key is kept (7 days): longer than any redelivery.
        prefix: prepended to every key.

    The client is made lazily, once per process (a forked worker gets its own).
    """

    def __init__(
        self, url: str, *, ttl: int = 7 * 24 * 3600, prefix: str = "smtp_backends:sent:"
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be a number of seconds > 0, not {ttl!r}")
        self.url = url
        self.ttl = int(ttl)
        self.prefix = prefix
        self._client: Any = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"<RedisDedupe {self.url.split('@')[-1]!r} ttl={self.ttl}>"

    @property
    def client(self) -> Any:
        """This process's ``redis.Redis`` client."""
        if self._client is None or self._pid != os.getpid():
            import redis  # the celery extra's dependency, only needed in workers

            self._client = redis.Redis.from_url(self.url, socket_timeout=10)
            self._pid = os.getpid()
        return self._client

    def seen(self, keys: Sequence[str]) -> set[str]:
        """The keys already recorded."""
        if not keys:
            return set()
        values = self.client.mget([self.prefix + key for key in keys])
        return {key for key, value in zip(keys, values, strict=True) if value is not None}

    def mark(self, key: str) -> None:
        """Record ``key`` (with the TTL)."""
        self.client.set(self.prefix + key, b"1", ex=self.ttl)


def _redis_url_of(broker: Any) -> str | None:
    """The broker URL if the broker is Redis (the first of a failover list)."""
    if isinstance(broker, (list, tuple)):
        broker = broker[0] if broker else None
    if not isinstance(broker, str):
        return None
    url = broker.split(";")[0].strip()
    if url.startswith(("redis://", "rediss://")):
        return url
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://") :]
    return None


# ----------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Failure:
    """A message (or some of its recipients) that will not be sent.

    Attributes:
        message_id: the message's id.
        sender: the envelope sender.
        recipients: the recipients it failed for.
        error: the exception (or the refusal, as an SMTPResponseException).
        reason: "permanent", "unknown-outcome" or "retries-exhausted".
        attempts: how many times the task ran for it.
    """

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    error: Exception
    reason: str
    attempts: int


@dataclass
class DeliveryReport:
    """What :meth:`SMTPQueue.deliver` did with one payload.

    Attributes:
        sent: messages the server accepted now.
        skipped: messages found already accepted (a redelivered task).
        failed: final failures (already logged, not yet reported).
        retry: messages (or recipient subsets) to try again, each with its error.
    """

    sent: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    retry: list[tuple[QueuedMessage, Exception]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts, as the task returns them."""
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "retrying": len(self.retry),
        }


# The sending layer's verdicts in this module's words (its public API since 0.1).
_KINDS = {Verdict.RETRYABLE: "transient", Verdict.UNKNOWN: "unknown-outcome"}


def classify(error: BaseException) -> str:
    """How a failed send is treated: "transient", "permanent" or "unknown-outcome".

    :func:`smtp_backends.outcomes.classify` decides: transient (retried) for
    4xx replies, connections refused, lost or timed out before the end of
    data, no free pooled connection, the pool closing; unknown outcome
    (never retried) after the end-of-data dot; permanent for the rest (5xx,
    invalid addresses, certificate failures).
    """
    return _KINDS.get(outcomes.classify(error), "permanent")


# ----------------------------------------------------------------------------- the queue

# SMTPQueue objects registered on each Celery app, by task name.
_registry: weakref.WeakKeyDictionary[Any, dict[str, SMTPQueue]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()
# Whether this process created a pool (its pid): closed at worker shutdown.
_pools_in: set[int] = set()


class SMTPQueue:
    """Queued sending through one Celery app; made by :func:`register`.

    Attributes:
        app: the Celery app.
        name: the task name.
        task: the registered Celery task (takes one JSON payload).
        queue: the Celery queue messages go to by default (None: the app's routing).
        batch_size: most messages per task in :meth:`enqueue_many`.

    Args:
        app: your Celery app.
        smtp: :class:`~smtp_backends.SMTPPool` keywords (``hostname``, ``port``,
            ``start_tls``, ``username``, ``password``, ``max_connections``...),
            or a callable ``(profile) -> SMTPPool`` called once per worker
            process and profile.
        name: the task name (one app may have several queues under other names).
        batch_size: most messages per task in :meth:`enqueue_many`.
        queue: the Celery queue to publish to (None: the app's routing).
        max_retries: retries of transient failures before giving up.
        retry_backoff: seconds before the first retry; doubled each time.
        retry_backoff_max: the most seconds between retries.
        retry_jitter: wait a random time between half and all of the backoff.
        dedupe: where accepted messages are recorded: None for the broker's
            Redis, a Redis URL, a :class:`DedupeStore`, or False for nowhere.
        dedupe_ttl: seconds each record is kept (7 days).
        on_failure: called with each final :class:`Failure` (in the worker).
        task_options: more options for ``app.task`` (``rate_limit``...).
    """

    def __init__(
        self,
        app: Any,
        *,
        smtp: SMTPSettings,
        name: str = DEFAULT_TASK_NAME,
        batch_size: int = 100,
        queue: str | None = None,
        max_retries: int = 6,
        retry_backoff: float = 5.0,
        retry_backoff_max: float = 600.0,
        retry_jitter: bool = True,
        dedupe: str | DedupeStore | bool | None = None,
        dedupe_ttl: int = 7 * 24 * 3600,
        on_failure: Callable[[Failure], object] | None = None,
        task_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, not {max_retries!r}")
        if retry_backoff < 0 or retry_backoff_max < 0:
            raise ValueError("retry_backoff and retry_backoff_max must be >= 0")
        if isinstance(smtp, Mapping):
            SMTPPool(**smtp)  # invalid settings fail here, not in the first task
        elif not (isinstance(smtp, MailerSettings) or callable(smtp)):
            raise TypeError(
                "smtp must be MailerSettings, a mapping of SMTPPool keywords or a callable"
            )
        if dedupe is True:
            dedupe = None
        if isinstance(dedupe, str):
            dedupe = RedisDedupe(dedupe, ttl=dedupe_ttl)
        self.app = app
        self.name = name
        self.batch_size = batch_size
        self.queue = queue
        self.max_retries = max_retries
        self.retry_backoff = float(retry_backoff)
        self.retry_backoff_max = float(retry_backoff_max)
        self.retry_jitter = retry_jitter
        self.dedupe_ttl = dedupe_ttl
        self.on_failure = on_failure
        self._smtp = smtp
        self._dedupe: DedupeStore | bool | None = dedupe
        self._dedupe_lock = threading.Lock()
        self._mailers: dict[str | None, Mailer] = {}

        queue_object = self

        def send_mail(task: Any, payload: Any) -> dict[str, int]:
            return queue_object.run_task(task, payload)

        send_mail.__doc__ = "Send a payload of queued messages (smtp_backends.celery)."
        options: dict[str, Any] = {
            "acks_late": True,
            "reject_on_worker_lost": True,
            "serializer": "json",
            "max_retries": max_retries,
            **(task_options or {}),
        }
        # shared=False: on this app only, never on every app made later.
        self.task = app.task(bind=True, name=name, shared=False, **options)(send_mail)

    def __repr__(self) -> str:
        return f"<SMTPQueue {self.name!r} queue={self.queue!r} batch_size={self.batch_size}>"

    # Producer side -------------------------------------------------------

    def payload(
        self, messages: Iterable[QueuedMessage], *, profile: str | None = None
    ) -> dict[str, Any]:
        """The JSON payload of one task for ``messages``."""
        return {
            "v": _PAYLOAD_VERSION,
            "profile": profile,
            "messages": [message.to_json() for message in messages],
        }

    def enqueue(
        self,
        sender: str,
        recipients: str | Iterable[str],
        data: bytes,
        *,
        message_id: str | None = None,
        profile: str | None = None,
        queue: str | None = None,
        **options: Any,
    ) -> Any:
        """Queue one message; returns the task's ``AsyncResult``.

        Args:
            sender / recipients / data: the envelope and the exact bytes.
            message_id: see :class:`QueuedMessage`.
            profile: handed to a callable ``smtp`` in the worker (which
                server settings to use).
            queue: the Celery queue (default: this object's ``queue``).
            **options: more ``apply_async`` options (``countdown``, ``priority``...).

        Raises:
            TypeError / ValueError: an invalid message, before anything is queued.
            kombu's errors: the broker could not be reached.
        """
        message = QueuedMessage(sender, recipients, data, message_id)
        return self._publish([message], profile, queue, options)

    def enqueue_many(
        self,
        items: Iterable[EnqueueItem],
        *,
        profile: str | None = None,
        queue: str | None = None,
        batch_size: int | None = None,
        **options: Any,
    ) -> int:
        """Queue many messages as tasks of up to ``batch_size`` messages each.

        Every message is checked before the first task is published.

        Args:
            items: :class:`QueuedMessage` objects or ``(sender, recipients, data)``.
            profile / queue / options: as for :meth:`enqueue`.
            batch_size: messages per task (default: this object's).

        Returns:
            The number of messages queued.

        Raises:
            TypeError / ValueError: an invalid message (nothing queued).
            kombu's errors: the broker could not be reached (the tasks before
                the failure are queued).
        """
        size = batch_size or self.batch_size
        messages = [_as_message(item) for item in items]
        if not messages:
            return 0
        with self.app.producer_or_acquire() as producer:
            for start in range(0, len(messages), size):
                chunk = messages[start : start + size]
                self._publish(chunk, profile, queue, {**options, "producer": producer})
        return len(messages)

    def _publish(
        self,
        messages: list[QueuedMessage],
        profile: str | None,
        queue: str | None,
        options: dict[str, Any],
    ) -> Any:
        queue = queue if queue is not None else self.queue
        if queue is not None:
            options["queue"] = queue
        return self.task.apply_async(
            args=[self.payload(messages, profile=profile)], serializer="json", **options
        )

    # Worker side ---------------------------------------------------------

    def mailer(self, profile: str | None = None) -> Mailer:
        """This process's :class:`~smtp_backends.mailer.Mailer` for ``profile``.

        Its pool is made on first use (once per worker process and profile),
        on the bridge loop; a list is spread over all its connections.
        """
        _pools_in.add(os.getpid())
        with self._dedupe_lock:
            mailer = self._mailers.get(profile)
            if mailer is None:
                mailer = self._mailers[profile] = Mailer(
                    _SPREAD,
                    scope=(__name__, id(self), profile),
                    pool_factory=self._factory(profile),
                )
            return mailer

    def pool(self, profile: str | None = None) -> SMTPPool:
        """This process's pool for ``profile`` (created on first use, on the bridge loop)."""
        return self.mailer(profile).pool()

    def _factory(self, profile: str | None) -> Callable[[], SMTPPool]:
        return lambda: self._make_pool(profile)

    def _make_pool(self, profile: str | None) -> SMTPPool:
        if isinstance(self._smtp, MailerSettings):
            return Mailer(self._smtp).make_pool()
        if isinstance(self._smtp, Mapping):
            return SMTPPool(**self._smtp)
        pool = self._smtp(profile)
        if not isinstance(pool, SMTPPool):
            raise TypeError(f"the smtp factory returned {type(pool).__name__}, not an SMTPPool")
        return pool

    def dedupe_store(self) -> DedupeStore | None:
        """The store of accepted messages (None when turned off with ``dedupe=False``).

        Raises:
            ValueError: no ``dedupe`` URL and the broker is not Redis.
        """
        with self._dedupe_lock:
            if self._dedupe is False:
                return None
            if self._dedupe is None:
                url = _redis_url_of(self.app.conf.broker_url)
                if url is None:
                    raise ValueError(
                        "smtp_backends.celery needs a Redis URL for its record of sent "
                        "messages: the broker is not Redis, so pass dedupe='redis://...' "
                        "(or dedupe=False to accept duplicates after a redelivery)"
                    )
                self._dedupe = RedisDedupe(url, ttl=self.dedupe_ttl)
            assert not isinstance(self._dedupe, bool)
            return self._dedupe

    def deliver(self, payload: Any, *, attempts: int = 1) -> DeliveryReport:
        """Send one payload's messages now, in this process (what the task does).

        Messages already recorded as accepted are skipped; each accepted
        message is recorded the moment the server accepts it. Final failures
        are logged and listed in the report (not yet reported to hooks).

        Args:
            payload: a payload from :meth:`payload` (its JSON form).
            attempts: how many times the task has run (for the failures).

        Raises:
            ValueError: a malformed payload, or no dedupe store can be made.
        """
        if not isinstance(payload, Mapping) or payload.get("v") != _PAYLOAD_VERSION:
            raise ValueError(f"not a smtp_backends.celery payload: {payload!r:.200}")
        raw = payload.get("messages")
        if not isinstance(raw, list):
            raise ValueError("the payload has no list of messages")
        profile = payload.get("profile")
        messages = [QueuedMessage.from_json(item) for item in raw]
        report = DeliveryReport()
        store = self.dedupe_store()
        done = store.seen([m.key for m in messages]) if store is not None else set()
        todo = [m for m in messages if m.key not in done]
        report.skipped = len(messages) - len(todo)
        for message in messages:
            if message.key in done:
                logger.info("message %s was already sent; not sending again", message.message_id)
        if not todo:
            return report

        def accepted(index: int, outcome: object) -> None:
            # Runs on the bridge loop as the 2xx to the end of data arrives:
            # recorded before anything else can crash, and before the ack.
            if isinstance(outcome, tuple) and store is not None:
                try:
                    store.mark(todo[index].key)
                except Exception:
                    logger.exception("could not record message %s as sent", todo[index].message_id)

        items = [(m.sender, list(m.recipients), m.data) for m in todo]
        mailer = self.mailer(profile if isinstance(profile, str) else None)
        results = mailer.send(items, on_result=accepted)  # failures come back as outcomes
        for message, outcome in zip(todo, results, strict=True):
            self._judge(message, outcome, report, attempts)
        return report

    def _judge(
        self, message: QueuedMessage, outcome: Any, report: DeliveryReport, attempts: int
    ) -> None:
        """Sort one message's outcome into sent, retry and failed."""
        verdict = outcomes.classify(outcome)
        if outcomes.is_sent(outcome):
            report.sent += 1
        elif verdict is Verdict.UNKNOWN or not outcomes.refusals(outcome):
            if verdict is Verdict.RETRYABLE:
                report.retry.append((message, outcome))
            else:
                self._failed(
                    report, message, message.recipients, outcome, classify(outcome), attempts
                )
            return
        refusals = outcomes.refusals(outcome)
        again = [rcpt for rcpt, _, kind in refusals if kind is Verdict.RETRYABLE]
        if again:
            first = next(error for rcpt, error, _ in refusals if rcpt in again)
            report.retry.append((message.with_recipients(again), first))
        for recipient, error, kind in refusals:
            if kind is not Verdict.RETRYABLE:
                self._failed(report, message, (recipient,), error, "permanent", attempts)

    def _failed(
        self,
        report: DeliveryReport,
        message: QueuedMessage,
        recipients: tuple[str, ...],
        error: Exception,
        reason: str,
        attempts: int,
    ) -> None:
        logger.error(
            "message %s to %s failed (%s, %d attempt(s)): %s: %s",
            message.message_id,
            ", ".join(recipients),
            reason,
            attempts,
            type(error).__name__,
            error,
        )
        report.failed.append(
            Failure(message.message_id, message.sender, recipients, error, reason, attempts)
        )

    def report_failure(self, failure: Failure) -> None:
        """Tell :data:`message_failed` receivers and the ``on_failure`` hook (never raises)."""
        # Celery's Signal logs (and swallows) the errors of its receivers itself.
        message_failed.send(sender=self, failure=failure)
        if self.on_failure is not None:
            try:
                self.on_failure(failure)
            except Exception:
                logger.exception("the on_failure hook failed")

    def backoff(self, retries: int) -> float:
        """Seconds before retry number ``retries + 1``: exponential, capped, jittered."""
        delay = min(self.retry_backoff_max, self.retry_backoff * 2.0 ** max(0, retries))
        if self.retry_jitter:
            delay = random.uniform(delay / 2, delay)
        return delay

    def run_task(self, task: Any, payload: Any) -> dict[str, int]:
        """The task body: deliver, report failures, retry what is transient.

        Args:
            task: the bound Celery task (``task.request.retries``, ``task.retry``).
            payload: the task's payload.

        Returns:
            The :meth:`DeliveryReport.summary` counts.

        Raises:
            celery.exceptions.Retry: some messages are retried later.
        """
        retries = int(getattr(task.request, "retries", 0) or 0)
        report = self.deliver(payload, attempts=retries + 1)
        if report.retry and retries >= self.max_retries:
            for message, error in report.retry:
                self._failed(
                    report, message, message.recipients, error, "retries-exhausted", retries + 1
                )
            report.retry = []
        for failure in report.failed:
            self.report_failure(failure)
        if report.retry:
            for message, error in report.retry:
                logger.warning(
                    "message %s to %s will be retried: %s: %s",
                    message.message_id,
                    ", ".join(message.recipients),
                    type(error).__name__,
                    error,
                )
            again = self.payload(
                [message for message, _ in report.retry], profile=payload.get("profile")
            )
            raise task.retry(args=[again], kwargs={}, countdown=self.backoff(retries))
        return report.summary()


def register(app: Any, *, name: str = DEFAULT_TASK_NAME, **options: Any) -> SMTPQueue:
    """Register the sending task on ``app`` and return its :class:`SMTPQueue`.

    Call it where both the web processes and the workers import it (the
    module that makes the Celery app).

    Args:
        app: your Celery app.
        name: the task name (one app may have several queues under other names).
        **options: the keywords of :class:`SMTPQueue` (``smtp`` is required).

    Raises:
        ValueError / TypeError: invalid options or SMTP settings; another
            SMTPQueue is already registered under ``name`` on ``app``.
    """
    with _registry_lock:
        queues = _registry.setdefault(app, {})
        if name in queues:
            raise ValueError(f"a queue named {name!r} is already registered on {app!r}")
        queue_object = SMTPQueue(app, name=name, **options)
        queues[name] = queue_object
    _connect_shutdown()
    return queue_object


def get_queue(app: Any, name: str = DEFAULT_TASK_NAME) -> SMTPQueue | None:
    """The :class:`SMTPQueue` registered on ``app`` under ``name``, if any."""
    with _registry_lock:
        return _registry.get(app, {}).get(name)


def _close_pools(**_: Any) -> None:
    """Worker (process) shutdown: close this process's pools (QUIT) and its bridge."""
    pid = os.getpid()
    if pid in _pools_in:
        _pools_in.discard(pid)
        shutdown(timeout=10.0)


_connected = False


def _connect_shutdown() -> None:
    global _connected
    if not _connected:
        _connected = True
        # weak=False: the handler is a module function, kept alive anyway.
        signals.worker_process_shutdown.connect(
            _close_pools, weak=False, dispatch_uid="smtp_backends.celery.process"
        )
        signals.worker_shutdown.connect(
            _close_pools, weak=False, dispatch_uid="smtp_backends.celery.worker"
        )
