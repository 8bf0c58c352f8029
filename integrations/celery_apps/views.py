"""A Django view that queues ``n`` messages through the CeleryBackend."""

from __future__ import annotations

from django.core.mail import EmailMessage
from django.http import HttpRequest, HttpResponse, JsonResponse

from smtp_backends.django import CeleryBackend


def send_bulk(request: HttpRequest) -> HttpResponse:
    """POST ?n=&tag=&mode=: queue n messages tagged ``tag``; returns the count queued."""
    count = int(request.GET.get("n", "1"))
    tag = request.GET.get("tag", "django")
    headers = {"X-Test-Tag": tag}
    mode = request.GET.get("mode")
    if mode:
        headers["X-Test-Mode"] = mode
    messages = [
        EmailMessage(
            subject=f"{tag} {number}",
            body=f"Message {number} of {count}.\n",
            from_email="web@example.com",
            to=[f"user{number}@example.com"],
            headers=headers,
        )
        for number in range(count)
    ]
    queued = CeleryBackend().send_messages(messages)
    return JsonResponse({"queued": queued})
