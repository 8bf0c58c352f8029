"""The outbox: what a capture server received, waited for and asserted on.

:class:`Outbox` watches a :class:`~smtp_backends.testing.CaptureServer` (standard
library only) or a :class:`~smtp_backends.devserver.DevServer`. A test sends
mail through the real path (its framework's backend pointed at the server
with :meth:`Outbox.use_django`, :meth:`Outbox.use_flask` or
:meth:`Outbox.use_asgi`), then waits for a message by subject, recipient,
sender, tag or text and asserts on it (:class:`~.mail.ReceivedMail`).

:meth:`Outbox.close` shuts the process's pooled connections down (they QUIT
while the server still listens) and undoes what the ``use_*`` methods changed;
the pytest fixtures call it after every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

from smtp_backends import bridge
from smtp_backends.testing import CapturedMessage, CaptureServer

from .frameworks import use_asgi, use_django, use_flask
from .mail import ReceivedMail, Text

if TYPE_CHECKING:
    from smtp_backends.devserver import DevServer

__all__ = ("Outbox",)

#: How long :meth:`Outbox.wait_for` waits unless told otherwise, in seconds.
DEFAULT_TIMEOUT = 5.0


def close_pools() -> None:
    """Close every pooled connection of the process (QUIT) and stop its bridge.

    The next send starts a new bridge and opens new connections.
    """
    bridge.shutdown()


class Outbox:
    """The messages a capture server received since the outbox was made (or cleared).

    Args:
        server: a started :class:`~smtp_backends.testing.CaptureServer` or
            :class:`~smtp_backends.devserver.DevServer`.
        poll_interval: how often a wait looks again, in seconds.

    Use it as a context manager (``with Outbox(server) as outbox:``) or call
    :meth:`close` (:meth:`aclose` from async code) when done.
    """

    def __init__(self, server: CaptureServer | DevServer, *, poll_interval: float = 0.01) -> None:
        self.server = server
        self.poll_interval = poll_interval
        self._start = len(server.messages) if isinstance(server, CaptureServer) else 0
        self._converted: dict[int, ReceivedMail] = {}
        self._undo = contextlib.ExitStack()

    def __repr__(self) -> str:
        return f"<Outbox {self.host}:{self.port} {len(self)} messages>"

    @property
    def host(self) -> str:
        """The server's address, for an application's settings."""
        return self.server.host

    @property
    def port(self) -> int:
        """The server's SMTP port."""
        server = self.server
        return server.port if isinstance(server, CaptureServer) else server.smtp_port

    # Reading -------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        """The messages received so far, oldest first."""
        server = self.server
        if not isinstance(server, CaptureServer):
            return [ReceivedMail.of(message) for message in server.messages]
        captured = server.messages[self._start :]
        return [self._convert(self._start + i, m) for i, m in enumerate(captured)]

    def _convert(self, index: int, captured: CapturedMessage) -> ReceivedMail:
        mail = self._converted.get(index)
        if mail is None:
            mail = ReceivedMail(
                index + 1,
                captured.mail_from,
                tuple(captured.rcpt_tos),
                datetime.now(timezone.utc),
                captured.data,
            )
            self._converted[index] = mail
        return mail

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[ReceivedMail]:
        return iter(self.messages)

    def __getitem__(self, index: int) -> ReceivedMail:
        return self.messages[index]

    def filter(
        self,
        *,
        subject: Text | None = None,
        to: str | None = None,
        from_: str | None = None,
        tag: str | None = None,
        text: Text | None = None,
        where: Callable[[ReceivedMail], bool] | None = None,
    ) -> list[ReceivedMail]:
        """The messages meeting every criterion (see :meth:`ReceivedMail.matches`)."""
        return [
            m
            for m in self.messages
            if m.matches(subject=subject, to=to, from_=from_, tag=tag, text=text, where=where)
        ]

    def clear(self) -> None:
        """Forget the messages received so far (the server's own list is kept)."""
        server = self.server
        if isinstance(server, CaptureServer):
            self._start = len(server.messages)
        else:
            server.clear()

    def assert_count(self, count: int, **criteria: Any) -> list[ReceivedMail]:
        """Assert exactly ``count`` messages (meeting ``criteria``) arrived; returns them."""
        found = self.filter(**criteria)
        if len(found) != count:
            raise AssertionError(
                f"expected {count} message(s){_described(criteria)}, got {len(found)}"
                f"{_summary(self.messages)}"
            )
        return found

    # Waiting -------------------------------------------------------------------------

    def wait_for(self, *, timeout: float = DEFAULT_TIMEOUT, **criteria: Any) -> ReceivedMail:
        """Block until a message meets ``criteria``; returns the oldest that does.

        Args:
            timeout: seconds to wait.
            **criteria: ``subject``, ``to``, ``from_``, ``tag``, ``text``,
                ``where`` (see :meth:`ReceivedMail.matches`).

        Raises:
            AssertionError: none arrived in time (the message lists what did).
            RuntimeError: called on the event loop the server runs on (it could
                never receive): ``await`` :meth:`await_for` there.
        """
        return self.wait_for_count(1, timeout=timeout, **criteria)[0]

    def wait_for_count(
        self, count: int, *, timeout: float = DEFAULT_TIMEOUT, **criteria: Any
    ) -> list[ReceivedMail]:
        """Block until ``count`` messages meet ``criteria``; returns all that do, oldest first.

        Raises:
            AssertionError / RuntimeError: as :meth:`wait_for`.
        """
        self._check_blocking()
        deadline = time.monotonic() + timeout
        while True:
            found = self.filter(**criteria)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise self._timeout(count, timeout, criteria, found)
            time.sleep(self.poll_interval)

    async def await_for(self, *, timeout: float = DEFAULT_TIMEOUT, **criteria: Any) -> ReceivedMail:
        """:meth:`wait_for` for async code: waits without blocking the event loop."""
        return (await self.await_count(1, timeout=timeout, **criteria))[0]

    async def await_count(
        self, count: int, *, timeout: float = DEFAULT_TIMEOUT, **criteria: Any
    ) -> list[ReceivedMail]:
        """:meth:`wait_for_count` for async code."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.filter(**criteria)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise self._timeout(count, timeout, criteria, found)
            await asyncio.sleep(self.poll_interval)

    def _check_blocking(self) -> None:
        server = self.server
        loop = server.loop if isinstance(server, CaptureServer) else None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is not None and running is loop:
            raise RuntimeError(
                "the capture server runs on this event loop: blocking would stop it; "
                "use 'await outbox.await_for(...)'"
            )

    def _timeout(
        self, count: int, timeout: float, criteria: dict[str, Any], found: list[ReceivedMail]
    ) -> AssertionError:
        return AssertionError(
            f"expected {count} message(s){_described(criteria)} within {timeout} s, "
            f"got {len(found)}{_summary(self.messages)}"
        )

    # Pointing applications at the server --------------------------------------------

    def use_django(self, alias: str = "default") -> Outbox:
        """Send Django's mail here until :meth:`close` (see :func:`.use_django`)."""
        self._undo.enter_context(use_django(self.host, self.port, alias=alias))
        return self

    def use_flask(self, app: Any) -> Outbox:
        """Send this Flask app's mail here until :meth:`close` (see :func:`.use_flask`)."""
        self._undo.enter_context(use_flask(app, self.host, self.port))
        return self

    def use_asgi(self, mail: Any) -> Outbox:
        """Send this :class:`smtp_backends.asgi.Mail`'s mail here until :meth:`close`."""
        self._undo.enter_context(use_asgi(mail, self.host, self.port))
        return self

    # Ending ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the process's pooled connections (QUIT), then undo the ``use_*`` changes.

        From a test whose server runs on its own event loop, use :meth:`aclose`.
        """
        self._check_blocking()
        try:
            close_pools()
        finally:
            self._undo.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code (the server may run on this loop)."""
        try:
            # Closing blocks until each connection's QUIT is answered: off this loop,
            # which may be the one the server answers on.
            await asyncio.to_thread(close_pools)
        finally:
            self._undo.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _described(criteria: dict[str, Any]) -> str:
    given = [f"{name}={value!r}" for name, value in criteria.items() if value is not None]
    return f" with {', '.join(given)}" if given else ""


def _summary(messages: list[ReceivedMail]) -> str:
    if not messages:
        return "; nothing arrived"
    lines = [f"  {m.subject!r} to {', '.join(m.envelope_to)}" for m in messages[-10:]]
    return "; what arrived:\n" + "\n".join(lines)
