"""Queued sending on Django's own task framework (``django.tasks``, Django 6.0+): ``TasksBackend``.

Projects without Celery queue mail with what Django ships::

    MAILERS = {  # Django 6.1
        "default": {
            "BACKEND": "smtp_backends.django.tasks.TasksBackend",
            "OPTIONS": {"using": "smtp"},  # the mailer the task sends with
        },
        "smtp": {
            "BACKEND": "smtp_backends.django.AsyncSMTPBackend",
            "OPTIONS": {"host": "smtp.example.com", "use_tls": True},
        },
    }

``send_messages()`` turns the messages into their exact bytes and envelopes
(as the SMTP backend would send them) and enqueues one task with them; the
task (:data:`smtp_backends.django.mail_task.send_queued_mail`) runs on the
task backend's workers and sends through the pooled path of the mailer
``using`` names (a :class:`~smtp_backends.mailer.Mailer`, one pool per
worker process). What crosses the queue is JSON (the bytes in base64), never
a pickle, and never a credential: the worker reads the mailer's settings
from its own Django settings.

Under EMAIL_BACKEND (Django 6.0, or 6.x without MAILERS) the options come
from the ``SMTP_BACKENDS_TASKS`` setting and the task sends with
``AsyncSMTPBackend`` built from its ``smtp`` dict (or the EMAIL_* settings).
"""

from __future__ import annotations

import base64
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend

from smtp_backends.outcomes import Verdict, classify, refusals

from .backend import AsyncSMTPBackend
from .config import HAS_MAILERS, RemovedInDjango2028Warning, mailer_error
from .envelope import Envelope, django_envelope, prep_address
from .queued import _flag_problem, _is_smtp_mailer, _using_problem

__all__ = ("PAYLOAD_VERSION", "TASKS_SETTING", "TasksBackend", "decode", "encode", "run")

#: The setting of :class:`TasksBackend` under EMAIL_BACKEND.
TASKS_SETTING = "SMTP_BACKENDS_TASKS"
#: The version of the task's argument (a dict); a worker refuses others.
PAYLOAD_VERSION = 1
_KEYS = frozenset({"task_backend", "queue_name", "priority", "smtp"})


def encode(envelopes: Sequence[Envelope], using: str | None) -> dict[str, Any]:
    """The task's one argument: JSON (the bytes in base64), never a pickle.

    Args:
        envelopes: ``(sender, recipients, bytes)`` of each message.
        using: the MAILERS alias the worker sends with (None: EMAIL_BACKEND).
    """
    return {
        "v": PAYLOAD_VERSION,
        "using": using,
        "messages": [
            {
                "sender": sender,
                "recipients": list(recipients),
                "data": base64.b64encode(data).decode("ascii"),
            }
            for sender, recipients, data in envelopes
        ],
    }


def decode(payload: Any) -> tuple[str | None, list[Envelope]]:
    """``(using, envelopes)`` from the task's argument.

    Raises:
        ValueError: not a payload of this version.
    """
    if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
        raise ValueError(f"Not a smtp_backends mail payload (version {PAYLOAD_VERSION})")
    using = payload.get("using")
    envelopes: list[Envelope] = []
    for message in payload.get("messages") or []:
        data = base64.b64decode(message["data"].encode("ascii"), validate=True)
        envelopes.append((str(message["sender"]), [str(r) for r in message["recipients"]], data))
    return using, envelopes


def _tasks_settings() -> dict[str, Any]:
    """The SMTP_BACKENDS_TASKS setting (a dict; {} when not set), checked.

    Raises:
        ImproperlyConfigured: not a dict, or unknown keys.
    """
    value: Any = getattr(settings, TASKS_SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"The {TASKS_SETTING} setting must be a dict.")
    unknown = set(value) - _KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown key(s) in the {TASKS_SETTING} setting: {', '.join(sorted(unknown))}"
        )
    return dict(value)


def _sending_backend(using: str | None) -> AsyncSMTPBackend:
    """The backend whose Mailer the worker sends with."""
    if using is not None:
        if not _is_smtp_mailer(using):
            raise mailer_error(
                "is not an smtp_backends.django.AsyncSMTPBackend mailer: the mail task "
                "cannot send with it.",
                using,
            )
        from django.core.mail import mailers

        backend: AsyncSMTPBackend = mailers[using]
        return backend
    smtp = _tasks_settings().get("smtp") or {}
    with warnings.catch_warnings():
        # Django 6.1 warns about a backend built without an alias: here that is
        # the EMAIL_BACKEND configuration, read on purpose.
        warnings.filterwarnings("ignore", category=RemovedInDjango2028Warning)
        return AsyncSMTPBackend(**smtp)


def run(payload: Any) -> dict[str, Any]:
    """Send a payload's messages through the pooled path (the mail task's body).

    Returns:
        A JSON report: ``sent`` (how many), ``refused`` (recipient -> reply
        of messages sent to the others) and ``failed`` (index, verdict and
        error of each message not sent).

    Raises:
        ValueError: not a payload.
        Exception: the first failure when a message was not sent (the task
            then fails; its notes list every failure), so that the task
            backend records it.
    """
    using, envelopes = decode(payload)
    backend = _sending_backend(using)
    outcomes = backend.mailer.send(envelopes)
    report: dict[str, Any] = {"sent": 0, "refused": {}, "failed": []}
    first: BaseException | None = None
    for index, outcome in enumerate(outcomes):
        verdict = classify(outcome)
        if verdict in (Verdict.SENT, Verdict.REFUSED):
            report["sent"] += 1
            for recipient, error, _ in refusals(outcome):
                report["refused"][recipient] = f"{error.code} {error.message}"
            continue
        report["failed"].append(
            {
                "index": index,
                "verdict": verdict.value,
                "error": f"{type(outcome).__name__}: {outcome}",
            }
        )
        if first is None and isinstance(outcome, BaseException):
            first = outcome
    if first is not None:
        if sys.version_info >= (3, 11):  # django.tasks needs 3.12+ anyway
            for failure in report["failed"]:
                note = f"message {failure['index']}: {failure['verdict']}: {failure['error']}"
                first.add_note(note)
            first.add_note(f"{report['sent']} of {len(envelopes)} message(s) sent")
        raise first
    return report


class TasksBackend(BaseEmailBackend):  # type: ignore[misc]
    """Django email backend that queues messages on ``django.tasks`` (Django 6.0+).

    ``send_messages()`` serialises the messages (bytes and envelopes, as
    the SMTP backend would send them) and enqueues one task with all of
    them; it returns the number queued. With Django's ImmediateBackend the
    task runs at once (its failures are recorded in the task result, as
    that backend does); with a worker backend (``django-tasks-db``'s
    DatabaseBackend and its ``db_worker``...) it runs there.

    Args:
        fail_silently: return 0 instead of raising when the task cannot be
            enqueued.
        using: Django 6.1's MAILERS: the alias of the AsyncSMTPBackend
            mailer the task sends with (Django's convention for a backend
            that wraps another). Required under MAILERS.
        task_backend: the ``TASKS`` alias to enqueue on ("default").
        queue_name: the task queue (the task backend's default queue).
        priority: the task priority (when the task backend supports it).
        smtputf8: keep an address with a non-ASCII local part for SMTPUTF8
            (Django 6.x; see :class:`AsyncSMTPBackend`); the worker's server
            not offering it fails that message. False: refused, as Django.
        **kwargs: ``alias`` (Django 6.1), handed to Django's base class
            (which rejects unknown MAILERS options).

    Under EMAIL_BACKEND the options come from the SMTP_BACKENDS_TASKS
    setting (keywords win), whose ``smtp`` dict holds the keywords of
    :class:`AsyncSMTPBackend` the task sends with (EMAIL_* for the rest).

    Raises:
        ImproperlyConfigured: Django older than 6.0, or an invalid option
            (Django 6.1: ``InvalidMailer`` under MAILERS), naming it.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        using: str | None = None,
        task_backend: str | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        smtputf8: bool = False,
        **kwargs: Any,
    ) -> None:
        # fail_silently is handled here and never handed to Django's base class
        # (Django 6.1 deprecates it there).
        super().__init__(**kwargs)
        alias = kwargs.get("alias")
        self.alias: str | None = alias
        self.fail_silently = fail_silently
        mailers = alias is not None and HAS_MAILERS and hasattr(settings, "MAILERS")
        conf = {} if mailers else _tasks_settings()
        given = {"task_backend": task_backend, "queue_name": queue_name, "priority": priority}
        options = {**conf, **{key: value for key, value in given.items() if value is not None}}
        self.using: str | None = using
        self.task_backend: str = options.get("task_backend", "default")
        self.queue_name: str | None = options.get("queue_name")
        self.priority: int | None = options.get("priority")

        def name(option: str) -> str:
            if mailers:
                return f"OPTIONS[{option!r}]"
            return f"{TASKS_SETTING}[{option!r}]" if option in conf else option

        problem = None
        if django.VERSION < (6, 0):
            problem = "TasksBackend needs Django 6.0 or later (django.tasks)."
        elif not isinstance(self.task_backend, str):
            problem = f"{name('task_backend')} must be a str, not {self.task_backend!r}."
        elif self.queue_name is not None and not isinstance(self.queue_name, str):
            problem = f"{name('queue_name')} must be a str, not {self.queue_name!r}."
        elif self.priority is not None and (
            isinstance(self.priority, bool) or not isinstance(self.priority, int)
        ):
            problem = f"{name('priority')} must be an int, not {self.priority!r}."
        elif "smtp" in conf and not isinstance(conf["smtp"], dict):
            problem = f"{name('smtp')} must be a dict, not {type(conf['smtp']).__name__}."
        elif mailers and using is None:
            problem = (
                "OPTIONS must define 'using': the AsyncSMTPBackend mailer the task sends with."
            )
        elif using is not None:
            problem = _using_problem(using, alias, mailers, "TasksBackend")
        problem = problem or _flag_problem(smtputf8, name("smtputf8"))
        if problem is not None:
            raise mailer_error(problem, alias) if mailers else ImproperlyConfigured(problem)
        self.smtputf8: bool = smtputf8
        #: The task result of the last ``send_messages()`` (a ``django.tasks.TaskResult``).
        self.last_result: Any = None

    def task(self) -> Any:
        """The mail task, bound to this backend's task backend, queue and priority."""
        from .mail_task import send_queued_mail

        changes: dict[str, Any] = {"backend": self.task_backend}
        if self.queue_name is not None:
            changes["queue_name"] = self.queue_name
        if self.priority is not None:
            changes["priority"] = self.priority
        return send_queued_mail.using(**changes)

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """The envelope form of ``address``; as :meth:`AsyncSMTPBackend.prep_address`."""
        return prep_address(self, address, force_ascii)

    def send_messages(self, email_messages: Iterable[Any]) -> int:
        """Enqueue Django ``EmailMessage`` objects in one task; return how many were queued.

        Messages without recipients are skipped; every message is serialised
        before the task is enqueued.

        Raises:
            ValueError: an invalid address (nothing queued).
            Exception: the task could not be enqueued (an invalid task
                backend, a database error...), unless ``fail_silently``.
        """
        if not email_messages:
            return 0
        envelopes = [
            envelope
            for envelope in (
                django_envelope(m, self.prep_address, self.smtputf8) for m in email_messages
            )
            if envelope is not None
        ]
        if not envelopes:
            return 0
        payload = encode(envelopes, self.using)
        try:
            self.last_result = self.task().enqueue(payload)
        except Exception:
            if self.fail_silently:
                return 0
            raise
        return len(envelopes)
