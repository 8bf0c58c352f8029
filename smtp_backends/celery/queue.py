"""The queue: :func:`register` puts the sending task on your Celery app; :class:`SMTPQueue`."""

from __future__ import annotations

import os
import random
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from celery import signals
from celery.utils.dispatch import Signal

from smtp_backends import SMTPPool
from smtp_backends.bridge import shutdown
from smtp_backends.mailer import Mailer
from smtp_backends.policies import check_pool_keywords, live_pool_keywords
from smtp_backends.settings import MailerSettings

from .messages import (
    DedupeStore,
    DeliveryReport,
    EnqueueItem,
    Failure,
    QueuedMessage,
    RedisDedupe,
    _as_message,
    _redis_url_of,
    logger,
)

__all__ = ("DEFAULT_TASK_NAME", "SMTPQueue", "get_queue", "message_failed", "register")


#: The task name :func:`register` uses unless told otherwise.
DEFAULT_TASK_NAME = "smtp_backends.send_mail"

#: Sent once per final failure: ``sender`` is the :class:`SMTPQueue`, ``failure``
#: a :class:`Failure`. Receivers run in the worker process.
message_failed = Signal(name="message_failed")

#: ``smtp=`` of :func:`register`: the sending layer's settings, SMTPPool keywords,
#: or a factory called with the message's profile (None unless the producer gave
#: one) in the worker.
SMTPSettings = Union[  # noqa: UP007
    MailerSettings, Mapping[str, Any], Callable[[str | None], SMTPPool]
]

_PAYLOAD_VERSION = 1

# A queue's messages are independent: a list spreads over every connection.
_SPREAD = MailerSettings(keep_order=False)


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
            ``start_tls``, ``username``, ``password``, ``max_connections``...;
            the policies ``dkim``, ``oauth_token_generator``, ``rate_limit``,
            ``failover``, ``proxy`` and ``dsn`` also as plain data, their
            objects made once per worker process), :class:`MailerSettings`,
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
            smtp = check_pool_keywords(smtp, "smtp")
            # Invalid settings fail here, not in the first task (nothing with
            # state is made: a worker makes its own).
            SMTPPool(**live_pool_keywords(smtp, build=False))
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
        # The pool keywords with the policies' objects, made once per process.
        self._live_keywords: tuple[int, dict[str, Any]] | None = None

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
            with self._dedupe_lock:
                live = self._live_keywords
                if live is None or live[0] != os.getpid():
                    live = self._live_keywords = (os.getpid(), live_pool_keywords(self._smtp))
            return SMTPPool(**live[1])
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
            report.judge(message, outcome, attempts)
        return report

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
                report.fail(message, message.recipients, error, "retries-exhausted", retries + 1)
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
