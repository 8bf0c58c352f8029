"""The extension: :class:`Mail` and each app's :class:`MailState` (``app.extensions["mail"]``)."""

from __future__ import annotations

import abc
import asyncio
import os
import ssl
import weakref
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

import blinker
from flask import Flask, current_app, has_app_context

from smtp_backends import ConnectionConfig, SMTPPool
from smtp_backends.addresses import addr_spec
from smtp_backends.mailer import Mailer, MailerSlot
from smtp_backends.settings import MailerSettings, SettingsMemo

from .cli import mail_cli
from .config import ATTRIBUTES, enable_debug_logging, mailer_settings, read_settings
from .connection import (
    AsyncConnection,
    Connection,
    Refused,
    _AsyncPooledHost,
    _PooledHost,
    _Prepared,
)
from .context import StateView
from .dispatch import email_dispatched
from .headers import Address
from .message import Message

__all__ = ("Mail", "MailState")


class _MailMixin(abc.ABC):
    """Sending methods shared by :class:`Mail` and :class:`MailState`."""

    __slots__ = ()

    @abc.abstractmethod
    def _resolve_state(self) -> MailState:
        """The state to send with: this one, or the current app's."""

    @contextmanager
    def record_messages(self) -> Iterator[list[Message]]:
        """Record the messages dispatched inside the block (for tests)::

            with mail.record_messages() as outbox:
                client.get("/send")
            assert outbox[0].subject == "testing"

        On :class:`Mail` every app's messages are recorded (as Flask-Mail);
        on an app's state (``app.extensions["mail"]``) only that app's.
        """
        outbox: list[Message] = []

        def record(app: Flask, message: Message) -> None:
            outbox.append(message)

        with email_dispatched.connected_to(record, sender=self._record_sender()):
            yield outbox

    def _record_sender(self) -> Any:
        return blinker.ANY

    def connect(self) -> Connection:
        """A :class:`Connection` for sending several messages (a context manager).

        Raises:
            RuntimeError: no configured app (outside an app context, or the
                current app was not set up with ``init_app``).
        """
        return Connection(self._resolve_state())

    def aconnect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """An :class:`AsyncConnection` for async code: ``async with mail.aconnect() as c:``."""
        return AsyncConnection(self._resolve_state())

    def send(self, message: Message, queue: bool | None = None) -> Refused:
        """Send one message (recorded only, when sending is suppressed).

        Args:
            message: the message.
            queue: hand it to a Celery worker instead (see
                :meth:`Mail.init_celery`); None: the ``MAIL_QUEUE`` setting.

        Returns the refused recipients (always empty when queued); raises as
        :meth:`Connection.send`, and when queued as :meth:`MailState.enqueue`.
        """
        state = self._resolve_state()
        if state._queued(queue):
            return state.enqueue(message)
        with self.connect() as connection:
            return connection.send(message)

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a :class:`Message` from the arguments and send it."""
        return self.send(Message(*args, **kwargs))

    async def asend(self, message: Message, queue: bool | None = None) -> Refused:
        """Send one message from async code; as :meth:`send`."""
        state = self._resolve_state()
        if state._queued(queue):
            # Publishing to the broker blocks: off the event loop (with the app context).
            return await asyncio.to_thread(state.enqueue, message)
        async with self.aconnect() as connection:
            return await connection.send(message)

    async def asend_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a :class:`Message` from the arguments and send it from async code."""
        return await self.asend(Message(*args, **kwargs))


class MailState(_MailMixin, StateView):
    """One app's mail settings and connection pool: ``app.extensions["mail"]``.

    The attributes are Flask-Mail's (``server``, ``username``, ``password``,
    ``port``, ``use_tls``, ``use_ssl``, ``default_sender``, ``debug``,
    ``max_emails``, ``suppress``, ``ascii_attachments``) plus ``timeout``,
    ``validate_certs``, ``cert_bundle``, ``client_cert``, ``client_key``,
    ``tls_context``, ``local_hostname``, ``allow_insecure_auth``,
    ``pipelining``, ``pool_size``, ``pool_idle_timeout``, ``queue``
    (``MAIL_QUEUE``), ``celery_queue`` (``MAIL_CELERY_QUEUE``) and
    ``task_queue`` (set by :meth:`init_celery`). They may be
    changed at run time (``state.suppress = True``); the next send uses them,
    over a new pool if a connection setting changed.

    It holds no reference to the app that keeps it alive: when the app is
    garbage collected the pool is closed; :meth:`close` closes it at once.
    """

    __slots__ = ("__dict__", "__weakref__", "_app", "_finalizer", "_memo", "_slot")

    server: str
    username: str | None
    password: str | None
    port: int
    use_tls: bool
    use_ssl: bool
    default_sender: Address | None
    debug: int
    max_emails: int | None
    suppress: bool
    ascii_attachments: bool
    timeout: float | None
    validate_certs: bool
    cert_bundle: str | os.PathLike[str] | None
    client_cert: str | os.PathLike[str] | None
    client_key: str | os.PathLike[str] | None
    tls_context: ssl.SSLContext | None
    local_hostname: str | None
    allow_insecure_auth: bool
    pipelining: bool
    pool_size: int
    pool_idle_timeout: float | None
    queue: bool
    celery_queue: str | None
    task_queue: Any

    def __init__(self, **settings: Any) -> None:
        self.__dict__.update(settings)
        self._app: weakref.ref[Flask] | None = None
        self._memo = SettingsMemo()
        # The app's Mailer: its pools are this state's alone, and are retired
        # when a connection setting changes at run time.
        self._slot = MailerSlot()
        finalizer = weakref.finalize(self, self._slot.close_later)
        finalizer.atexit = False  # at exit the bridge closes every pool itself
        self._finalizer = finalizer

    def __repr__(self) -> str:
        app = self.app
        name = app.name if app is not None else None
        mode = "SSL" if self.use_ssl else "STARTTLS" if self.use_tls else "plain"
        suppressed = ", suppressed" if self.suppress else ""
        return f"<MailState app={name!r} {self.server}:{self.port} {mode}{suppressed}>"

    @property
    def app(self) -> Flask | None:
        """The app this state belongs to (None if it is gone or there is none)."""
        return self._app() if self._app is not None else None

    def _resolve_state(self) -> MailState:
        return self

    def _record_sender(self) -> Any:
        app = self.app
        return app if app is not None else blinker.ANY

    def _signal_sender(self) -> Any:
        """The sender of ``email_dispatched``: the app whose settings sent the message.

        That is the current app in every case Flask-Mail handles; a state made
        with :meth:`Mail.init_mail` (no app) uses the current app, if any.
        """
        app = self.app
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        return app

    # The Mailer ------------------------------------------------------------------

    def mailer_settings(self) -> MailerSettings:
        """The sending layer's settings for the current attributes (made once per change).

        Raises:
            ValueError / TypeError: invalid settings, naming the MAIL_* key.
        """
        source = tuple(self.__dict__[attribute] for attribute in ATTRIBUTES.values())
        return self._memo.get(source, lambda: mailer_settings(self.__dict__))

    def connection_config(self) -> ConnectionConfig:
        """The core's :class:`~smtp_backends.ConnectionConfig` for the current settings.

        Raises:
            ValueError / TypeError: invalid settings.
        """
        return self.mailer_settings().connection

    @property
    def mailer(self) -> Mailer:
        """This app's :class:`~smtp_backends.mailer.Mailer` for the current settings."""
        return self._slot.get(self.mailer_settings())

    def _host(self, *, asynchronous: bool = False) -> Any:
        if self.debug:
            enable_debug_logging()
        return (_AsyncPooledHost if asynchronous else _PooledHost)(self.mailer)

    @property
    def pool(self) -> SMTPPool | None:
        """The pool in use (None before the first send), for monitoring."""
        mailer = self._slot.current
        pools = mailer.pools if mailer is not None else []
        return pools[0] if pools else None

    def close(self) -> None:
        """Close this app's pooled connections now (QUIT); the next send reopens.

        Call it when an app is discarded (tests, app factories); at process
        exit the bridge closes every pool by itself.
        """
        mailer = self._slot.release()
        if mailer is not None:
            mailer.close()

    async def aclose(self) -> None:
        """Close this app's pooled connections from async code; as :meth:`close`."""
        mailer = self._slot.release()
        if mailer is not None:
            await mailer.aclose()

    # Queued sending (Celery) ----------------------------------------------------

    def init_celery(self, celery: Any, **options: Any) -> Any:
        """Send through Celery workers with this state's settings; see :meth:`Mail.init_celery`."""
        # Imported here: Celery is an optional extra, needed only for queued sending.
        from smtp_backends.celery import register

        def worker_pool(profile: str | None) -> SMTPPool:
            # Called in the worker process: the MAIL_* settings it was started with.
            return Mailer(self.mailer_settings()).make_pool()

        options.setdefault("queue", self.celery_queue)
        self.task_queue = register(celery, smtp=worker_pool, **options)
        return self.task_queue

    def _queued(self, queue: bool | None) -> bool:
        """Whether a send goes to the queue (never when sending is suppressed)."""
        return bool(self.queue if queue is None else queue) and not self.suppress

    def enqueue(self, message: Message, envelope_from: Address | None = None) -> Refused:
        """Check a message and queue it for a Celery worker; returns {} (nothing refused yet).

        ``email_dispatched`` is sent once the message is queued.

        Raises:
            RuntimeError: :meth:`init_celery` was not called.
            NoRecipientsError / NoSenderError / BadHeaderError / ValueError:
                as :meth:`Connection.send`, before anything is queued (and
                ValueError for ``mail_options`` / ``rcpt_options``, which
                queued messages do not carry).
            Exception: the broker could not be reached (kombu's errors).
        """
        task_queue = self.__dict__.get("task_queue")
        if task_queue is None:
            raise RuntimeError(
                "Queued sending needs a Celery app: call mail.init_celery(celery_app)"
            )
        prepared = _Prepared(message, self, envelope_from)
        if prepared.mail_options or prepared.rcpt_options:
            raise ValueError("mail_options and rcpt_options cannot be used with queued sending")
        task_queue.enqueue(
            addr_spec(prepared.sender),
            [addr_spec(address) for address in prepared.recipients],
            prepared.data,
            message_id=message.msgId,
        )
        email_dispatched.send(self._signal_sender(), message=message)
        return {}


#: Flask-Mail's name for the per-app state class.
_Mail = MailState


class Mail(_MailMixin):
    """The extension: ``Mail(app)`` or ``mail = Mail()`` then ``mail.init_app(app)``.

    One instance serves any number of apps: every call works on the current
    app's state (``app.extensions["mail"]``). The instance never stores an
    app; ``Mail(app)`` keeps that app's state so ``mail.state`` and sending
    outside an application context keep working, as in Flask-Mail.
    Attributes of the state can be read through the instance
    (``mail.default_sender``, ``mail.suppress``...).
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._state: MailState | None = None
        if app is not None:
            self._state = self.init_app(app)

    def init_mail(
        self, config: Mapping[str, Any], debug: bool | int = False, testing: bool = False
    ) -> MailState:
        """A :class:`MailState` from a config mapping (not attached to any app).

        Raises:
            TypeError / ValueError: a MAIL_* setting has the wrong type or value.
        """
        return MailState(**read_settings(config, debug, testing))

    def init_app(self, app: Flask) -> MailState:
        """Read the app's MAIL_* settings and register the state and the CLI.

        Raises:
            TypeError / ValueError: a MAIL_* setting has the wrong type or
                value, or MAIL_USE_TLS and MAIL_USE_SSL are both set.
        """
        state = self.init_mail(app.config, app.debug, app.testing)
        state._app = weakref.ref(app)
        previous = app.extensions.get("mail")
        if isinstance(previous, MailState):
            previous._slot.close_later()
        app.extensions["mail"] = state
        if state.debug:
            enable_debug_logging()
        if "mail" not in app.cli.commands:
            app.cli.add_command(mail_cli)
        return state

    @property
    def state(self) -> MailState | None:
        """The current app's state, else the one of the app given to ``Mail(app)``."""
        if has_app_context():
            state = current_app.extensions.get("mail")
            if isinstance(state, MailState):
                return state
        return self._state

    def _resolve_state(self) -> MailState:
        state = self.state
        if state is None:
            if has_app_context():
                raise RuntimeError(
                    "The current application was not configured with smtp_backends.flask: "
                    "call mail.init_app(app)"
                )
            raise RuntimeError(
                "Working outside of application context: push one (with app.app_context():) "
                "or use app.extensions['mail'] directly"
            )
        return state

    def close(self) -> None:
        """Close the current app's pooled connections; see :meth:`MailState.close`."""
        self._resolve_state().close()

    def init_celery(self, celery: Any, app: Flask | None = None, **options: Any) -> Any:
        """Queue mail on ``celery`` (a Celery app) for ``app`` (default: the current one).

        Registers the sending task on ``celery`` (call it where the workers
        run it too, e.g. in the app factory after :meth:`init_app`); workers
        send with this app's MAIL_* settings. Then ``send(msg, queue=True)``,
        or every send when ``MAIL_QUEUE`` is true, queues instead of sending;
        ``MAIL_CELERY_QUEUE`` names the Celery queue.

        Args:
            celery: the Celery app.
            app: the Flask app (after ``init_app``).
            **options: keywords of :func:`smtp_backends.celery.register`
                (``name``, ``batch_size``, ``max_retries``, ``dedupe``...).

        Returns:
            The :class:`smtp_backends.celery.SMTPQueue`.

        Raises:
            RuntimeError: the app is not set up with :meth:`init_app`.
            ValueError: a queue of that name is already registered on ``celery``.
        """
        state = app.extensions.get("mail") if app is not None else self._resolve_state()
        if not isinstance(state, MailState):
            raise RuntimeError("Call mail.init_app(app) before mail.init_celery()")
        return state.init_celery(celery, **options)

    async def aclose(self) -> None:
        """Close the current app's pooled connections from async code."""
        await self._resolve_state().aclose()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._resolve_state(), name)
