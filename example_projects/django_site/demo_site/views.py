"""The site's views: one sync and one async way to send mail, and a deliberate error."""

from __future__ import annotations

import django.core.mail
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from smtp_backends.django import AsyncSMTPBackend

from .forms import ContactForm, NewsletterForm
from .subscribers import SUBSCRIBERS


def home(request: HttpRequest) -> HttpResponse:
    """The start page: links to everything the site does."""
    return render(request, "home.html", {"subscriber_count": len(SUBSCRIBERS)})


def contact(request: HttpRequest) -> HttpResponse:
    """A sync view: the contact form sends one message to the staff.

    The visitor's address goes into Reply-To (not From: the site may only send as
    itself), so that the staff can simply answer the mail.
    """
    form = ContactForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        message = EmailMessage(
            subject=f"[Contact] {data['subject']}",
            body=f"From: {data['name']} <{data['email']}>\n\n{data['message']}\n",
            to=[settings.CONTACT_EMAIL],
            reply_to=[f"{data['name']} <{data['email']}>"],
        )
        message.send()  # through smtp_backends.django.AsyncSMTPBackend (see settings.py)
        return render(request, "contact_thanks.html", {"name": data["name"]})
    return render(request, "contact.html", {"form": form})


def mail_backend() -> AsyncSMTPBackend:
    """The configured mail backend: Django 6.1's ``mailers["default"]``, else EMAIL_BACKEND's."""
    if hasattr(settings, "MAILERS"):
        backend = django.core.mail.mailers["default"]
    else:
        backend = get_connection()
    assert isinstance(backend, AsyncSMTPBackend), "settings.py configures smtp_backends"
    return backend


def _newsletter_message(subject: str, body: str, recipient: str) -> EmailMultiAlternatives:
    context = {"subject": subject, "paragraphs": body.split("\n\n"), "recipient": recipient}
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("mail/newsletter.txt", context),
        to=[recipient],
    )
    message.attach_alternative(render_to_string("mail/newsletter.html", context), "text/html")
    return message


async def newsletter(request: HttpRequest) -> HttpResponse:
    """An async view: one message per subscriber, sent as one pipelined batch.

    ``asend_messages`` awaits without blocking this event loop; the batch goes out over
    the process's pooled connection (one round trip per message when the server
    offers PIPELINING).
    """
    form = NewsletterForm(request.POST or None)
    sent: int | None = None
    if request.method == "POST" and form.is_valid():
        subject, body = form.cleaned_data["subject"], form.cleaned_data["body"]
        messages = [_newsletter_message(subject, body, address) for address in SUBSCRIBERS]
        sent = await mail_backend().asend_messages(messages)
    # The template must not touch `user` or `messages`: they would hit the database,
    # which async code may not do directly.
    return render(
        request,
        "newsletter.html",
        {"form": form, "sent": sent, "subscriber_count": len(SUBSCRIBERS)},
    )


def boom(request: HttpRequest) -> HttpResponse:
    """Raise on purpose: with DEBUG off Django answers 500 and mails ADMINS the traceback."""
    raise RuntimeError("Boom! This error was raised on purpose by /boom/.")


@login_required
def me(request: HttpRequest) -> HttpResponse:
    """Where logging in leads: who is logged in."""
    return render(request, "me.html")
