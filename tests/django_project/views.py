"""Views that send mail the way applications do: sync (WSGI) and async (ASGI)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.core import mail
from django.core.mail import EmailMessage, send_mail
from django.http import HttpRequest, HttpResponse, JsonResponse

from smtp_backends.django import asend_mail

SENDER = "site@example.com"


def default_backend() -> Any:
    """The default backend: ``mailers.default`` on Django 6.1+, else get_connection()."""
    mailers = getattr(mail, "mailers", None)
    return mailers.default if mailers is not None else mail.get_connection()


def send_one(request: HttpRequest) -> HttpResponse:
    """One message per request, through django.core.mail.send_mail()."""
    to = request.GET.get("to", "user@example.com")
    sent = send_mail("Hello", "One message per request.", SENDER, [to])
    return HttpResponse(str(sent))


def send_many(request: HttpRequest) -> HttpResponse:
    """Several messages in one send_messages() call."""
    count = int(request.GET.get("n", "3"))
    messages = [
        EmailMessage(f"Message {i}", "body", SENDER, [f"user{i}@example.com"]) for i in range(count)
    ]
    return HttpResponse(str(default_backend().send_messages(messages)))


async def asend_one(request: HttpRequest) -> HttpResponse:
    """One message per request from an async view."""
    to = request.GET.get("to", "user@example.com")
    sent = await asend_mail("Hello", "Sent from an async view.", SENDER, [to])
    return HttpResponse(str(sent))


async def asend_many(request: HttpRequest) -> HttpResponse:
    """Several messages in one asend_messages() call from an async view."""
    count = int(request.GET.get("n", "3"))
    messages = [
        EmailMessage(f"Message {i}", "body", SENDER, [f"user{i}@example.com"]) for i in range(count)
    ]
    return HttpResponse(str(await default_backend().asend_messages(messages)))


async def asend_timed(request: HttpRequest) -> JsonResponse:
    """Sends one message while a ticker runs on the same loop; reports both.

    If the send blocked the event loop, the ticker could not tick meanwhile.
    """
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(ticker())
    started = time.monotonic()
    sent = await asend_mail("Timed", "body", SENDER, ["user@example.com"])
    elapsed = time.monotonic() - started
    stop.set()
    await task
    return JsonResponse({"sent": sent, "ticks": ticks, "elapsed": elapsed})


def boom(request: HttpRequest) -> HttpResponse:
    """Fails: Django logs the error and AdminEmailHandler mails the ADMINS."""
    raise RuntimeError("Something broke in a view")
