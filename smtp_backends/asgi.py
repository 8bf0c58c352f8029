"""ASGI frameworks (Starlette, FastAPI...): a Mailer opened and closed in the app's lifespan.

::

    from fastapi import Depends, FastAPI
    from smtp_backends.asgi import Mail
    from smtp_backends.mailer import Mailer

    mail = Mail()  # SMTP_BACKENDS_HOST, SMTP_BACKENDS_PORT... or Mail(host=..., port=...)
    app = FastAPI(lifespan=mail.lifespan)

    @app.post("/signup")
    async def signup(mailer: Mailer = Depends(mail)) -> dict[str, int]:
        outcomes = await mailer.asend([message])
        return {"sent": sum(isinstance(outcome, tuple) for outcome in outcomes)}

Starlette: ``Starlette(lifespan=mail.lifespan)``; handlers use
``await mail.send_message(message)`` (or ``request.app.state.mailer``).

Settings come from keyword arguments (the names of
:class:`~smtp_backends.settings.MailerSettings`) and, for what they leave
out, ``SMTP_BACKENDS_*`` environment variables (``SMTP_BACKENDS_HOST``,
``SMTP_BACKENDS_PORT``, ``SMTP_BACKENDS_USE_TLS=true``...), checked once,
when the object is made. The policies are options too: ``Mail(dkim={...},
rate_limit=14, failover=["a:587", "b:587"], proxy="socks5h://...",
dsn={"notify": ["FAILURE"]}, requiretls=True, oauth="pkg.tokens.fetch")``,
or ``SMTP_BACKENDS_RATE_LIMIT=14``, ``SMTP_BACKENDS_FAILOVER=a:587,b:587``,
``SMTP_BACKENDS_DKIM={"domain": ..., "selector": ..., "key_file": ...}``
(JSON for mappings and lists). One message's own DSN or REQUIRETLS: send an
:class:`~smtp_backends.mailer.Outgoing` with ``dsn=`` / ``requiretls=``.

Pooled connections live on the :mod:`smtp_backends.bridge` loop (shared
with any sync code of the process, fork-safe), open lazily, and are closed
(QUIT) when the app shuts down.

This module imports no framework: the lifespan is a plain async context
manager, and the dependency is the object itself (``Depends(mail)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from email.message import Message
from typing import Any

from .delivery import ResultCallback
from .mailer import Item, Mailer, MailerSlot, Result
from .protocol.transaction import Outcome
from .settings import ENV_PREFIX, MailerSettings

__all__ = ("Mail",)


class Mail:
    """One app's mail: settings, a :class:`~smtp_backends.mailer.Mailer`, a lifespan.

    Args:
        settings: ready-made settings (then ``options`` and the environment
            are not read).
        environ: where the ``SMTP_BACKENDS_*`` variables are read (default:
            ``os.environ``); ``{}`` reads none.
        prefix: the variables' prefix.
        **options: :class:`~smtp_backends.settings.MailerSettings` fields
            (``host``, ``port``, ``username``, ``password``, ``use_tls``,
            ``use_ssl``, ``timeout``, ``pool_size``...); they win over the
            environment. None means "not given".

    Raises:
        TypeError / ValueError: an invalid setting, naming the keyword or the
            environment variable.
    """

    def __init__(
        self,
        settings: MailerSettings | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        prefix: str = ENV_PREFIX,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = MailerSettings.from_environ(prefix, environ, **options)
        elif options:
            raise TypeError("give either settings or keyword options, not both")
        self.settings = settings
        self._slot = MailerSlot()

    def __repr__(self) -> str:
        return f"<Mail {self.settings.host}:{self.settings.connection.effective_port}>"

    @property
    def mailer(self) -> Mailer:
        """The app's Mailer (its pools open lazily, on the first message)."""
        return self._slot.get(self.settings)

    def __call__(self) -> Mailer:
        """The FastAPI dependency: ``mailer: Mailer = Depends(mail)``."""
        return self.mailer

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """The app's lifespan: the Mailer for its life, closed (QUIT) at shutdown.

        Pass it as ``lifespan=mail.lifespan``, or enter it from a lifespan of
        your own (``async with mail.lifespan(app): yield``). The Mailer is
        also put at ``app.state.mailer`` when the app has a ``state``.
        """
        mailer = self.mailer
        state = getattr(app, "state", None)
        if state is not None:
            state.mailer = mailer
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections (QUIT); the next send opens new ones."""
        mailer = self._slot.release()
        if mailer is not None:
            await mailer.aclose()

    async def send_messages(
        self, items: Iterable[Item], *, on_result: ResultCallback | None = None
    ) -> list[Result]:
        """Send many messages; one outcome per message, in order (never raises for one).

        Each item is an email message, a ``(sender, recipients, data)`` tuple,
        an :class:`~smtp_backends.mailer.Outgoing`, or a callable returning
        one; the outcome is ``(refused recipients, reply)`` or the exception.
        A list goes out over one connection, in order, unless the settings
        say ``keep_order=False`` (then over up to ``pool_size``).
        """
        return await self.mailer.asend(items, on_result=on_result)

    async def send_message(self, message: Message | Item) -> Outcome:
        """Send one message; returns ``(refused recipients, reply)``.

        Raises:
            smtp_backends.SMTPException: what the server or connection did
                (also :mod:`smtplib`'s exceptions), or ValueError for an
                invalid address.
        """
        (outcome,) = await self.mailer.asend([message])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
