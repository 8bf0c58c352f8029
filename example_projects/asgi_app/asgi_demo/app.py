"""The example ASGI app: run with ``uvicorn asgi_demo.app:app`` from ``example_projects/asgi_app``.

It sends through :class:`smtp_backends.asgi.Mail`, whose Mailer lives for the app's
lifespan (``Starlette(lifespan=mail.lifespan)``): pooled connections are reused across
requests and closed (QUIT) when the server stops.

- ``/contact/``: ``await mail.send_message(message)``: one message.
- ``/newsletter/``: ``await mail.send_messages(messages)``: every subscriber's copy in
  one call, pipelined over the pool.

Settings: ``SMTP_HOST`` / ``SMTP_PORT`` (127.0.0.1:1025) as keywords; anything else
from ``SMTP_BACKENDS_*`` environment variables (``SMTP_BACKENDS_USE_TLS=true``...).
Forms are ``application/x-www-form-urlencoded`` and parsed with :mod:`urllib.parse`, so
the app needs nothing beyond Starlette (no python-multipart).
"""

from __future__ import annotations

import os
from email.message import EmailMessage
from email.utils import formataddr
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from smtp_backends import SMTPException
from smtp_backends.asgi import Mail

from . import pages

SMTP_HOST = os.environ.get("SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("SMTP_PORT", "1025"))
SENDER = "Example ASGI App <noreply@example.com>"
CONTACT_EMAIL = "staff@example.com"
SUBSCRIBERS: tuple[str, ...] = tuple(f"subscriber{n:02d}@example.com" for n in range(1, 26))
#: Seconds allowed for each network operation.
SMTP_TIMEOUT = 10.0
#: The largest form body accepted (bytes).
MAX_FORM_BYTES = 64 * 1024

#: The app's mail: a Mailer opened and closed with the app (see ``lifespan=`` below).
mail = Mail(host=SMTP_HOST, port=SMTP_PORT, timeout=SMTP_TIMEOUT, pool_size=4, keep_order=False)


class FormTooLarge(ValueError):
    """The request body is larger than :data:`MAX_FORM_BYTES`."""


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form in the request body, one value per field.

    Raises:
        FormTooLarge: the body is larger than :data:`MAX_FORM_BYTES`.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise FormTooLarge(f"form larger than {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    parsed = parse_qs(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def form_errors(form: dict[str, str], required: tuple[str, ...]) -> dict[str, str]:
    """Which fields are missing or malformed (field name -> message)."""
    errors = {name: "This field is required." for name in required if not form.get(name)}
    email = form.get("email")
    if email is not None and "email" not in errors:
        local, _, domain = email.partition("@")
        if not local or "." not in domain or any(c in email for c in " \r\n<>,\"'"):
            errors["email"] = "Enter a valid email address."
    return errors


def _html(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code)


async def home(request: Request) -> HTMLResponse:
    """The start page."""
    return _html(pages.home(len(SUBSCRIBERS)))


async def contact(request: Request) -> HTMLResponse:
    """One message to the staff with ``mail.send_message``; the visitor in Reply-To."""
    if request.method != "POST":
        return _html(pages.contact({}, {}))
    try:
        raw = await read_form(request)
    except FormTooLarge:
        return _html(pages.page("Too large", "<h1>Form too large</h1>"), 413)
    form = {name: raw.get(name, "").strip() for name in ("name", "email", "subject")}
    form["message"] = raw.get("message", "")
    errors = form_errors(form, ("name", "email", "subject", "message"))
    if errors:
        return _html(pages.contact(form, errors), 400)

    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = CONTACT_EMAIL
    message["Reply-To"] = formataddr((form["name"], form["email"]))
    message["Subject"] = f"[Contact] {form['subject']}"
    message.set_content(f"From: {form['name']} <{form['email']}>\n\n{form['message']}\n")
    try:
        await mail.send_message(message)
    except (SMTPException, ValueError) as exc:
        failure = f'<p id="error" class="box error">Sending failed: {exc.__class__.__name__}</p>'
        return _html(pages.page("Not sent", failure), 502)
    return _html(pages.contact_thanks(form["name"]))


def newsletter_message(subject: str, paragraphs: list[str], recipient: str) -> EmailMessage:
    """One subscriber's copy: plain text with an HTML alternative."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(pages.newsletter_text(subject, paragraphs, recipient))
    message.add_alternative(pages.newsletter_html(subject, paragraphs, recipient), subtype="html")
    return message


async def newsletter(request: Request) -> HTMLResponse:
    """Every subscriber's copy in one ``send_messages`` call on the app's Mailer."""
    count = len(SUBSCRIBERS)
    if request.method != "POST":
        return _html(pages.newsletter({}, {}, None, count))
    try:
        raw = await read_form(request)
    except FormTooLarge:
        return _html(pages.page("Too large", "<h1>Form too large</h1>"), 413)
    form = {"subject": raw.get("subject", "").strip(), "body": raw.get("body", "")}
    errors = form_errors(form, ("subject", "body"))
    if errors:
        return _html(pages.newsletter(form, errors, None, count), 400)

    paragraphs = [part.strip() for part in form["body"].replace("\r\n", "\n").split("\n\n")]
    paragraphs = [part for part in paragraphs if part]
    try:
        messages = [newsletter_message(form["subject"], paragraphs, to) for to in SUBSCRIBERS]
    except ValueError as exc:  # e.g. a line break in the subject
        return _html(pages.newsletter(form, {"subject": str(exc)}, None, count), 400)
    # One outcome per message, in order: a reply tuple, or the exception it failed with.
    outcomes = await mail.send_messages(messages)
    sent = sum(1 for outcome in outcomes if not isinstance(outcome, BaseException))
    return _html(pages.newsletter(form, {}, sent, count))


app = Starlette(
    routes=[
        Route("/", home),
        Route("/contact/", contact, methods=["GET", "POST"]),
        Route("/newsletter/", newsletter, methods=["GET", "POST"]),
    ],
    lifespan=mail.lifespan,
)
