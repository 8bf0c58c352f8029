"""Queued sending from Django: ``CeleryBackend`` and ``register_celery()``.

``CeleryBackend.send_messages()`` hands the messages to Celery workers
(:mod:`smtp_backends.celery`), which send them through their own pooled
connections with the Django SMTP settings. Celery is imported only when a
queue is registered.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend

from smtp_backends import SMTPPool
from smtp_backends.mailer import Mailer

from .backend import AsyncSMTPBackend
from .config import HAS_MAILERS, RemovedInDjango2028Warning, mailer_error
from .envelope import django_envelope, prep_address
from .signals import apply_pre_send

__all__ = ("CELERY_SETTING", "CeleryBackend", "register_celery")

#: The setting of :class:`CeleryBackend` under EMAIL_BACKEND, and of
#: :func:`register_celery` (the workers' side).
CELERY_SETTING = "SMTP_BACKENDS_CELERY"

# CELERY_SETTING keys read by the backend (the web processes).
_CELERY_BACKEND_KEYS = frozenset({"app", "queue", "batch_size", "task", "smtp"})
# CELERY_SETTING keys read by register_celery() (the workers): smtp_backends.celery.register's.
_CELERY_TASK_KEYS = frozenset(
    {"max_retries", "retry_backoff", "retry_backoff_max", "retry_jitter", "dedupe", "dedupe_ttl"}
)


def _celery_settings() -> dict[str, Any]:
    """The SMTP_BACKENDS_CELERY setting (a dict; {} when not set), checked.

    Raises:
        ImproperlyConfigured: not a dict, or unknown keys.
    """
    value: Any = getattr(settings, CELERY_SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"The {CELERY_SETTING} setting must be a dict.")
    unknown = set(value) - _CELERY_BACKEND_KEYS - _CELERY_TASK_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown key(s) in the {CELERY_SETTING} setting: {', '.join(sorted(unknown))}"
        )
    return dict(value)


def _worker_pool(profile: str | None) -> SMTPPool:
    """The pool a worker sends with, from the Django settings (called once per process).

    ``profile`` None: the ``smtp`` dict of SMTP_BACKENDS_CELERY, as keywords of
    :class:`AsyncSMTPBackend` (EMAIL_* for what it leaves out; all of EMAIL_*
    without it). Else the MAILERS alias of a CeleryBackend: the ``smtp`` dict
    of its OPTIONS (MAILERS semantics: ``host`` required).
    """
    if profile is None:
        smtp = _celery_settings().get("smtp") or {}
        with warnings.catch_warnings():
            # Django 6.1 warns about a backend built without an alias: here that is
            # the EMAIL_BACKEND configuration, read on purpose (once per worker).
            warnings.filterwarnings("ignore", category=RemovedInDjango2028Warning)
            backend = AsyncSMTPBackend(**smtp)
    elif _is_smtp_mailer(profile):
        # The MAILERS alias a CeleryBackend's ``using`` names: that very mailer.
        from django.core.mail import mailers as django_mailers

        backend = django_mailers[profile]
    else:
        mailers: Any = getattr(settings, "MAILERS", None) or {}
        options = (mailers.get(profile) or {}).get("OPTIONS") or {}
        smtp = options.get("smtp")
        if not isinstance(smtp, dict):
            raise mailer_error(
                "OPTIONS must define 'using' (or 'smtp') for the Celery workers.", profile
            )
        backend = AsyncSMTPBackend(alias=profile, **smtp)
    worker = backend.mailer_settings().replace(pool_size=backend.pool_size or 1, keep_order=False)
    return Mailer(worker).make_pool()


def _is_smtp_mailer(alias: str) -> bool:
    """Whether MAILERS[alias] is configured with AsyncSMTPBackend (or a subclass)."""
    from django.utils.module_loading import import_string

    mailers: Any = getattr(settings, "MAILERS", None) or {}
    path = (mailers.get(alias) or {}).get("BACKEND")
    if not isinstance(path, str):
        return False
    try:
        backend_class = import_string(path)
    except ImportError:
        return False
    return isinstance(backend_class, type) and issubclass(backend_class, AsyncSMTPBackend)


def register_celery(app: Any, **options: Any) -> Any:
    """Register the mail task on your Celery ``app`` with Django's SMTP settings.

    Call it in the module that makes the Celery app (``proj/celery.py``), so
    that the workers know the task::

        app = Celery("proj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        register_celery(app)

    Workers send with the ``smtp`` settings of SMTP_BACKENDS_CELERY (or of the
    MAILERS alias the message was queued through), defaulting to EMAIL_*.
    Idempotent: a second call returns the queue already registered.

    Args:
        app: the Celery app.
        **options: keywords of :func:`smtp_backends.celery.register` (``name``,
            ``max_retries``, ``retry_backoff``, ``dedupe``, ``on_failure``...);
            the same keys of SMTP_BACKENDS_CELERY are the defaults (and its
            ``task``, ``queue`` and ``batch_size``).

    Returns:
        The :class:`smtp_backends.celery.SMTPQueue`.

    Raises:
        ImproperlyConfigured: a malformed SMTP_BACKENDS_CELERY setting.
    """
    from smtp_backends import celery as queued

    conf = _celery_settings()
    name = options.pop("name", None) or conf.get("task") or queued.DEFAULT_TASK_NAME
    existing = queued.get_queue(app, name)
    if existing is not None:
        return existing
    for key in ("queue", "batch_size", *sorted(_CELERY_TASK_KEYS)):
        if key in conf:
            options.setdefault(key, conf[key])
    try:
        return queued.register(app, smtp=_worker_pool, name=name, **options)
    except ValueError:
        found = queued.get_queue(app, name)  # registered by another thread meanwhile
        if found is None:
            raise
        return found


def _flag_problem(value: object, name: str) -> str | None:
    """Why ``value`` is not a flag (a str such as "False" is none), or None."""
    return None if isinstance(value, bool) else f"{name} must be True or False, not {value!r}."


def _using_problem(using: Any, alias: str | None, mailers: bool, what: str) -> str | None:
    """Why the ``using`` option of a wrapper backend is wrong, or None.

    Django 6.1's convention for a backend that wraps another: ``using``
    names the MAILERS alias of the mailer it sends with; here that mailer
    must be an AsyncSMTPBackend (pooled sending when the work runs).
    """
    if not mailers:
        return f"{what}'s 'using' option names a MAILERS alias: it needs Django 6.1's MAILERS."
    if not isinstance(using, str):
        return f"OPTIONS['using'] must be a str (a MAILERS alias), not {using!r}."
    if using == alias:
        return f"OPTIONS['using'] must name another mailer, not {what}'s own alias {alias!r}."
    if using not in (getattr(settings, "MAILERS", None) or {}):
        return f"OPTIONS['using'] names {using!r}, which is not in MAILERS."
    if not _is_smtp_mailer(using):
        return (
            f"OPTIONS['using'] names {using!r}, whose BACKEND is not "
            "smtp_backends.django.AsyncSMTPBackend (or a subclass)."
        )
    return None


class CeleryBackend(BaseEmailBackend):  # type: ignore[misc]
    """Django email backend that queues messages for Celery workers.

    ``send_messages()`` turns each message into its exact bytes and envelope
    (as the SMTP backend would send them), queues them in tasks of
    ``batch_size`` messages and returns the number queued; workers send them
    (see :mod:`smtp_backends.celery` for retries and the no-duplicate
    guarantee).

    Under EMAIL_BACKEND the options come from the SMTP_BACKENDS_CELERY
    setting (keywords win); under Django 6.1's MAILERS from OPTIONS, with
    ``alias``; unknown OPTIONS are an error (Django's).

    Args:
        fail_silently: return 0 instead of raising when the broker cannot
            be reached.
        app: the Celery app, or its dotted path ("proj.celery.app").
        queue: the Celery queue (None: the app's routing).
        batch_size: most messages per task (100).
        task: the task name (``smtp_backends.celery.DEFAULT_TASK_NAME``).
        smtp: what the workers send with (keywords of
            :class:`AsyncSMTPBackend`); read by the workers, not here.
        using: Django 6.1's MAILERS: the alias of the AsyncSMTPBackend
            mailer the workers send with (Django's convention for a backend
            that wraps another); instead of ``smtp``.
        smtputf8: keep an address with a non-ASCII local part for SMTPUTF8
            (Django 6.x; see :class:`AsyncSMTPBackend`); the worker's server
            not offering it fails that message. False: refused, as Django.
        **kwargs: ``alias`` (Django 6.1), handed to Django's base class.

    Raises:
        ImproperlyConfigured: no ``app``, or an invalid option (Django 6.1:
            ``InvalidMailer`` under MAILERS).
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        app: Any = None,
        queue: str | None = None,
        batch_size: int | None = None,
        task: str | None = None,
        smtp: dict[str, Any] | None = None,
        using: str | None = None,
        smtputf8: bool = False,
        **kwargs: Any,
    ) -> None:
        # As AsyncSMTPBackend: Django 6.1's base class warns about fail_silently,
        # so it is handled here and never handed to it.
        super().__init__(**kwargs)
        alias = kwargs.get("alias")
        self.alias: str | None = alias
        self.fail_silently = fail_silently
        # Under MAILERS the workers find the SMTP settings through the alias
        # (or the mailer ``using`` names); no SMTP_BACKENDS_CELERY is read.
        mailers = alias is not None and HAS_MAILERS and hasattr(settings, "MAILERS")
        conf = {} if mailers else _celery_settings()
        given = {"app": app, "queue": queue, "batch_size": batch_size, "task": task}
        options = {**conf, **{key: value for key, value in given.items() if value is not None}}
        self.using: str | None = using
        self.profile: str | None = (using or alias) if mailers else None
        self.app: Any = options.get("app")
        self.queue: str | None = options.get("queue")
        self.batch_size: int = options.get("batch_size", 100)
        self.task: str | None = options.get("task")
        self.smtp = smtp if smtp is not None else options.get("smtp")

        def name(option: str) -> str:
            if mailers:
                return f"OPTIONS[{option!r}]"
            return f"{CELERY_SETTING}[{option!r}]" if option in conf else option

        problem = None
        if self.app is None:
            problem = f"CeleryBackend needs a Celery app: set 'app' in {CELERY_SETTING} or OPTIONS."
        elif (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            problem = f"{name('batch_size')} must be an int >= 1, not {self.batch_size!r}."
        elif self.queue is not None and not isinstance(self.queue, str):
            problem = f"{name('queue')} must be a str, not {self.queue!r}."
        elif self.task is not None and not isinstance(self.task, str):
            problem = f"{name('task')} must be a str, not {self.task!r}."
        elif self.smtp is not None and not isinstance(self.smtp, dict):
            problem = f"{name('smtp')} must be a dict, not {type(self.smtp).__name__}."
        elif using is not None:
            problem = _using_problem(using, alias, mailers, "CeleryBackend")
        problem = problem or _flag_problem(smtputf8, name("smtputf8"))
        if problem is not None:
            raise mailer_error(problem, alias) if mailers else ImproperlyConfigured(problem)
        self.smtputf8: bool = smtputf8

    def celery_app(self) -> Any:
        """The Celery app (imported from its dotted path on first use)."""
        if isinstance(self.app, str):
            from django.utils.module_loading import import_string

            self.app = import_string(self.app)
        return self.app

    def get_queue(self) -> Any:
        """The :class:`smtp_backends.celery.SMTPQueue` (registered if the app has none)."""
        options = {"name": self.task} if self.task else {}
        return register_celery(self.celery_app(), **options)

    def envelope(self, message: Any) -> tuple[str, list[str], bytes] | None:
        """(sender, recipients, bytes) of a Django message, as the SMTP backend derives them.

        None for a message without recipients (not queued, not counted).

        Raises:
            ValueError: an invalid address.
        """
        return django_envelope(message, self.prep_address, self.smtputf8)

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """The envelope form of ``address``; as :meth:`AsyncSMTPBackend.prep_address`."""
        return prep_address(self, address, force_ascii)

    def send_messages(self, email_messages: Iterable[Any]) -> int:
        """Queue Django ``EmailMessage`` objects; return how many were queued.

        Messages without recipients are skipped. Every message is serialised
        before the first task is published.

        Raises:
            ValueError: an invalid address (nothing queued).
            Exception: the broker could not be reached (kombu's
                ``OperationalError``...), unless ``fail_silently``.
        """
        if not email_messages:
            return 0
        email_messages = apply_pre_send(self, email_messages)  # may cancel some
        items = [item for item in map(self.envelope, email_messages) if item is not None]
        if not items:
            return 0
        try:
            queued: int = self.get_queue().enqueue_many(
                items, profile=self.profile, queue=self.queue, batch_size=self.batch_size
            )
        except Exception:
            if self.fail_silently:
                return 0
            raise
        return queued
