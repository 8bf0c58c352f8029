"""What the web inbox's routes receive and return: :class:`Request` and :class:`Response`.

Kept apart from the server (:mod:`smtp_backends.devserver.web`) so that the page routes
(:mod:`~smtp_backends.devserver.pages`) and the JSON routes
(:mod:`~smtp_backends.devserver.api`) depend on these two types only.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from . import templates

if TYPE_CHECKING:
    from .store import StoredMessage
    from .web import InboxServer

__all__ = (
    "HTML_BODY_CSP",
    "PAGE_CSP",
    "BadRequest",
    "EventStream",
    "Request",
    "Response",
    "Route",
    "html",
    "json_error",
    "json_response",
    "message_route",
    "not_found",
)

#: The Content-Security-Policy of ``/messages/ID/html``: nothing may load or run
#: except inline styles and data: images.
HTML_BODY_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

#: The inbox pages themselves: no script at all, frames and forms only from here, and
#: never framed by another site.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)


class BadRequest(ValueError):
    """A request the route cannot act on; answered with 400 and this text."""


@dataclass
class Request:
    """One HTTP request as a route sees it.

    Attributes:
        server: the inbox server (its mailbox and options).
        method: the HTTP method, upper case.
        match: the named groups of the route's path pattern.
        query: the query string's parameters (the last value of each name wins).
        headers: the request headers (case-insensitive lookups).
        body: the request body (empty unless sent).
    """

    server: InboxServer
    method: str
    match: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)
    headers: Any = None
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON ('' or no body: None).

        Raises:
            BadRequest: the body is not JSON.
        """
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise BadRequest(f"the body is not JSON: {error}") from None

    def form(self) -> dict[str, str]:
        """The body parsed as ``application/x-www-form-urlencoded``."""
        text = self.body.decode("utf-8", errors="replace")
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))

    def int_param(self, name: str, default: int, *, low: int, high: int) -> int:
        """An integer query parameter, within ``[low, high]``.

        Raises:
            BadRequest: not an integer, or out of range.
        """
        text = self.query.get(name)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise BadRequest(f"{name} must be an integer") from None
        if not low <= value <= high:
            raise BadRequest(f"{name} must be between {low} and {high}")
        return value


class Response:
    """What a route returns: status, body and headers."""

    def __init__(
        self,
        status: HTTPStatus,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        if content_type is not None:
            self.headers["Content-Type"] = content_type


class EventStream(Response):
    """A ``text/event-stream`` response the server keeps writing (see :mod:`.events`).

    Args:
        since: the mailbox version the client has seen (None: only what comes next).
        select: which stored messages the client wants to hear about.
    """

    def __init__(self, since: int | None, select: Callable[[StoredMessage], bool]) -> None:
        super().__init__(HTTPStatus.OK, content_type="text/event-stream; charset=utf-8")
        self.since = since
        self.select = select


Route = Callable[[Request], Response]


def html(body: str, status: HTTPStatus = HTTPStatus.OK, csp: str = PAGE_CSP) -> Response:
    """An HTML page under the inbox's Content-Security-Policy."""
    return Response(
        status, body.encode("utf-8"), "text/html; charset=utf-8", {"Content-Security-Policy": csp}
    )


def json_response(value: Any, status: HTTPStatus = HTTPStatus.OK) -> Response:
    """A JSON document."""
    return Response(
        status, json.dumps(value, ensure_ascii=False).encode("utf-8"), "application/json"
    )


def json_error(status: HTTPStatus, error: str, **details: Any) -> Response:
    """A JSON error: ``{"error": ..., **details}``."""
    return json_response({"error": error, **details}, status)


def not_found(detail: str = "Not found") -> Response:
    """The HTML 404 page."""
    return html(templates.not_found_page(detail), HTTPStatus.NOT_FOUND)


def message_route(action: Callable[[Request, StoredMessage], Response]) -> Route:
    """Wrap a route that needs the message named by the path's id (404 if gone)."""

    def route(request: Request) -> Response:
        message = request.server.mailbox.get(int(request.match["id"]))
        if message is None:
            return not_found("No such message")
        return action(request, message)

    route.__doc__ = action.__doc__
    return route
