"""Opening and closing the Django backend's connection, sync and async.

``open()`` either borrows the process's pool (inside ``send_messages()``) or
connects one connection of the backend's own through the Mailer; ``close()``
gives it back. A forked child never touches its parent's connection.
"""

from __future__ import annotations

import contextvars
import os
from typing import Any, Protocol, TypeVar

from smtp_backends import SMTP, SMTPPool
from smtp_backends.mailer import Mailer

__all__ = ("ConnectionLifecycle", "borrowing")

# Set while send_messages()/asend_messages() call open(): an implicit open
# borrows the process's pool instead of opening a connection of its own.
borrowing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "smtp_backends_django_borrowing", default=False
)


class _State(Protocol):
    """What the lifecycle needs of the backend."""

    connection: Any
    _partial_connection: SMTP | None
    _pid: int
    fail_silently: bool
    pool_size: int

    @property
    def mailer(self) -> Mailer:
        """The backend's Mailer."""

    def get_pool(self, *, batch: bool = False) -> SMTPPool:
        """The process's pool for the backend's settings."""

    def _forget_if_forked(self) -> None:
        """See :class:`ConnectionLifecycle`."""

    def _start_open(self) -> bool | None:
        """See :class:`ConnectionLifecycle`."""

    def _open_failed(self, exc: BaseException) -> None:
        """See :class:`ConnectionLifecycle`."""

    def _opened(self, client: SMTP) -> bool:
        """See :class:`ConnectionLifecycle`."""

    def _to_close(self) -> SMTP | None:
        """See :class:`ConnectionLifecycle`."""

    async def aopen(self) -> bool | None:
        """See :class:`ConnectionLifecycle`."""

    async def aclose(self) -> None:
        """See :class:`ConnectionLifecycle`."""


_Backend = TypeVar("_Backend", bound=_State)


class ConnectionLifecycle:
    """``open()``/``close()`` and their async twins for :class:`AsyncSMTPBackend`."""

    connection: Any
    _partial_connection: SMTP | None

    # Fork safety -----------------------------------------------------------

    def _forget_if_forked(self: _Backend) -> None:
        """In a forked child, drop (never use) the parent's connection."""
        if self._pid == os.getpid():
            return
        Mailer.inherited(self.connection, self._partial_connection)
        self.connection = self._partial_connection = None
        self._pid = os.getpid()

    # Sync API --------------------------------------------------------------

    def open(self: _Backend) -> bool | None:
        """Make sure a connection is ready; as the stock backend's ``open()``.

        Called by you (or ``with backend:``): connects, STARTTLS/TLS and AUTH
        as configured, and keeps that connection for this backend until
        :meth:`close`. Called by :meth:`send_messages` without an open
        connection: borrows the process's pool for these settings.

        Returns:
            True if a connection was opened (or borrowed), False if one was
            already open, None if opening failed silently (``fail_silently``).

        Raises:
            OSError: the connection failed (``SMTPConnectError`` and the
                other smtp_backends/smtplib exceptions, ``ssl.SSLError``
                subclasses for TLS failures), unless ``fail_silently``.
        """
        started = self._start_open()
        if started is not None:
            return started
        try:
            client = self.mailer.connect()
        except BaseException as exc:
            self._open_failed(exc)  # raises unless fail_silently covers it
            return None
        return self._opened(client)

    def _start_open(self: _Backend) -> bool | None:
        """False if open, True once the pool is borrowed, else None (connect one)."""
        self._forget_if_forked()
        if self.connection:
            return False
        if borrowing.get() and self.pool_size:
            self.connection = self.get_pool()
            return True
        return None

    def _open_failed(self: _Backend, exc: BaseException) -> None:
        """After a failed connect (already closed): raise, unless fail_silently covers it."""
        self._partial_connection = None
        if not (isinstance(exc, OSError) and self.fail_silently):
            raise exc

    def _opened(self: _Backend, client: SMTP) -> bool:
        # Only now, with TLS and AUTH done, does the connection become usable.
        self._partial_connection = None
        self.connection = client
        return True

    def _to_close(self: _Backend) -> SMTP | None:
        self._forget_if_forked()
        partial, self._partial_connection = self._partial_connection, None
        if partial is not None:
            Mailer.drop(partial)
        connection = self.connection
        return connection if isinstance(connection, SMTP) else None

    def close(self: _Backend) -> None:
        """Close this backend's own connection (QUIT); give back a borrowed pool.

        Pooled connections stay open for the next request.

        Raises:
            smtplib.SMTPResponseException: the reply to QUIT broke the
                protocol (``SMTPProtocolError``), unless ``fail_silently``.
        """
        try:
            own = self._to_close()
            if own is not None:
                Mailer.disconnect(own, strict=not self.fail_silently)
        finally:
            self.connection = None

    # Async API -------------------------------------------------------------

    async def aopen(self: _Backend) -> bool | None:
        """Await :meth:`open` without blocking the event loop. Returns and raises as it."""
        started = self._start_open()
        if started is not None:
            return started
        try:
            client = await self.mailer.aconnect()
        except BaseException as exc:
            self._open_failed(exc)  # raises unless fail_silently covers it
            return None
        return self._opened(client)

    async def aclose(self: _Backend) -> None:
        """Await :meth:`close` without blocking the event loop."""
        try:
            own = self._to_close()
            if own is not None:
                await Mailer.adisconnect(own, strict=not self.fail_silently)
        finally:
            self.connection = None

    async def __aenter__(self: _Backend) -> _Backend:
        try:
            await self.aopen()
        except Exception:
            await self.aclose()
            raise
        return self

    async def __aexit__(self: _Backend, *exc_info: object) -> None:
        await self.aclose()
