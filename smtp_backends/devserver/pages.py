"""The web inbox's HTML routes (the JSON API is :mod:`smtp_backends.devserver.api`)."""

from __future__ import annotations

import re
import urllib.parse
from http import HTTPStatus

from . import templates
from .events import LIVE_CSP, LIVE_JS, LIVE_SCRIPT_PATH
from .release import ReleaseFailed, ReleaseRefused
from .responses import (
    HTML_BODY_CSP,
    Request,
    Response,
    html,
    message_route,
    not_found,
)
from .store import StoredMessage

__all__ = (
    "attachment",
    "clear",
    "favicon",
    "html_body",
    "inbox",
    "link_check",
    "live",
    "live_script",
    "message",
    "raw",
    "release",
)

# A media type we are willing to echo back in Content-Type (RFC 6838 4.2 characters).
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def _attachment_disposition(filename: str) -> str:
    """``Content-Disposition: attachment`` with an ASCII fallback and RFC 6266 ``filename*``."""
    # No path separators, quotes, backslashes or controls in either form of the name.
    cleaned = (
        "".join(
            "_" if char in '/\\"' or ord(char) < 32 or ord(char) == 127 else char
            for char in filename
        ).strip()
        or "attachment"
    )
    fallback = "".join(char if char.isascii() else "_" for char in cleaned)
    encoded = urllib.parse.quote(cleaned, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def inbox(request: Request) -> Response:
    """``GET /``: the list, newest first, filtered by ``?q=``; kept live by ``/live``."""
    server = request.server
    query = request.query.get("q", "").strip()
    # The version first: a message arriving while the list is built is then replayed
    # to the live frame rather than missed.
    version = server.mailbox.version
    messages = server.mailbox.messages(query or None)
    return html(
        templates.inbox_page(messages, refresh=server.refresh, query=query, version=version)
    )


def clear(request: Request) -> Response:
    """``POST /clear``: forget every message (or those matching the form's ``q``)."""
    query = request.form().get("q", "").strip()
    request.server.mailbox.clear(query or None)
    # 303 so that reloading the inbox afterwards does not post again.
    location = "/?" + urllib.parse.urlencode({"q": query}) if query else "/"
    return Response(HTTPStatus.SEE_OTHER, headers={"Location": location})


def live(request: Request) -> Response:
    """``GET /live``: the hidden frame whose script keeps the inbox page up to date."""
    return html(templates.live_page(LIVE_SCRIPT_PATH), csp=LIVE_CSP)


def favicon(request: Request) -> Response:
    """``GET /favicon.ico``: no icon, and no 404 in the browser's console either."""
    return Response(HTTPStatus.NO_CONTENT)


def live_script(request: Request) -> Response:
    """``GET /static/live.js``: the live-update script."""
    return Response(HTTPStatus.OK, LIVE_JS.encode("utf-8"), "text/javascript; charset=utf-8")


@message_route
def message(request: Request, stored: StoredMessage) -> Response:
    """``GET /messages/ID``: one message."""
    page = templates.message_page(stored, release=request.server.releaser is not None)
    return html(page)


@message_route
def html_body(request: Request, stored: StoredMessage) -> Response:
    """``GET /messages/ID/html``: the HTML part, for the sandboxed frame."""
    if stored.html is None:
        return not_found("This message has no HTML part")
    return Response(
        HTTPStatus.OK,
        stored.html.encode("utf-8", errors="replace"),
        "text/html; charset=utf-8",
        {"Content-Security-Policy": HTML_BODY_CSP},
    )


@message_route
def raw(request: Request, stored: StoredMessage) -> Response:
    """``GET /messages/ID/raw``: the message as received, as text."""
    text = stored.raw.decode("utf-8", errors="replace")
    return Response(HTTPStatus.OK, text.encode("utf-8"), "text/plain; charset=utf-8")


@message_route
def attachment(request: Request, stored: StoredMessage) -> Response:
    """``GET /messages/ID/attachments/N``: one attachment, as a download."""
    number = int(request.match["number"])
    if number >= len(stored.attachments):
        return not_found("No such attachment")
    part = stored.attachments[number]
    content_type = part.content_type
    if not _MEDIA_TYPE.match(content_type):
        content_type = "application/octet-stream"
    return Response(
        HTTPStatus.OK,
        part.payload,
        content_type,
        {
            "Content-Disposition": _attachment_disposition(part.filename),
            # Should a browser render it after all, it gets no script and no origin.
            "Content-Security-Policy": "sandbox",
        },
    )


@message_route
def link_check(request: Request, stored: StoredMessage) -> Response:
    """``POST /messages/ID/link-check``: check the message's links, show the results."""
    results = request.server.link_checker.check_message(stored)
    return html(templates.link_check_page(stored, results))


@message_route
def release(request: Request, stored: StoredMessage) -> Response:
    """``POST /messages/ID/release``: send it to the relay (form field ``to``)."""
    releaser = request.server.releaser
    if releaser is None:
        outcome = "Release is off: start the server with --release-host and --release-allow."
        return html(templates.release_page(stored, outcome, ok=False), HTTPStatus.CONFLICT)
    to = request.form().get("to")
    recipients = None if to is None else [part for part in re.split(r"[,\s]+", to) if part]
    try:
        result = releaser.release(stored, recipients)
    except ReleaseRefused as error:
        page = templates.release_page(stored, f"Nothing sent: {error}.", ok=False)
        return html(page, HTTPStatus.FORBIDDEN)
    except ValueError as error:
        page = templates.release_page(stored, f"Nothing sent: {error}.", ok=False)
        return html(page, HTTPStatus.BAD_REQUEST)
    except ReleaseFailed as error:
        return html(templates.release_page(stored, str(error), ok=False), HTTPStatus.BAD_GATEWAY)
    outcome = f"Released to {', '.join(result.recipients)}: {result.reply}"
    if result.refused:
        outcome += f" (refused by the relay: {', '.join(result.refused)})"
    return html(templates.release_page(stored, outcome, ok=True))
