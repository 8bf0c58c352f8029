"""Awaitable twins of ``django.core.mail``'s functions: ``asend_mail()`` and the others.

Django's own sync function runs in a worker thread (so that its checks and
warnings are Django's); whatever it hands to an ``AsyncSMTPBackend`` there
is recorded (:data:`deferred_sends`) and awaited here instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import django.core.mail
from asgiref.sync import sync_to_async

__all__ = ("amail_admins", "amail_managers", "asend_mail", "asend_mass_mail", "deferred_sends")

# Set by the async module functions while Django's sync function runs in a
# worker thread: the backend's send_messages() records the work instead of doing it.
Deferred = list[tuple[Any, list[Any]]]
deferred_sends: contextvars.ContextVar[Deferred | None] = contextvars.ContextVar(
    "smtp_backends_django_deferred", default=None
)


async def _run_deferred(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run Django's sync mail function, awaiting its sends instead of blocking.

    The function runs in a worker thread (so that everything it does, checks
    and deprecation warnings included, is Django's own); whatever it hands
    to an :class:`AsyncSMTPBackend` is recorded there and sent here, on the
    bridge loop. Other backends (locmem in tests, console...) send in the
    worker thread, off the event loop.
    """
    calls: Deferred = []

    def call() -> Any:
        token = deferred_sends.set(calls)
        try:
            return function(*args, **kwargs)
        finally:
            deferred_sends.reset(token)

    result = await sync_to_async(call, thread_sensitive=False)()
    if not calls:
        return result
    sent = 0
    for backend, messages in calls:
        sent += await backend.asend_messages(messages)
    return sent if isinstance(result, int) else result


async def asend_mail(*args: Any, **kwargs: Any) -> int:
    """Awaitable ``django.core.mail.send_mail()``: the same arguments and result.

    Returns:
        The number of messages sent (0 or 1).
    """
    result: int = await _run_deferred(django.core.mail.send_mail, *args, **kwargs)
    return result


async def asend_mass_mail(*args: Any, **kwargs: Any) -> int:
    """Awaitable ``django.core.mail.send_mass_mail()``: the same arguments and result.

    The messages go out as one pipelined batch.

    Returns:
        The number of messages sent.
    """
    result: int = await _run_deferred(django.core.mail.send_mass_mail, *args, **kwargs)
    return result


async def amail_admins(*args: Any, **kwargs: Any) -> None:
    """Awaitable ``django.core.mail.mail_admins()``: the same arguments (ADMINS)."""
    await _run_deferred(django.core.mail.mail_admins, *args, **kwargs)


async def amail_managers(*args: Any, **kwargs: Any) -> None:
    """Awaitable ``django.core.mail.mail_managers()``: the same arguments (MANAGERS)."""
    await _run_deferred(django.core.mail.mail_managers, *args, **kwargs)
