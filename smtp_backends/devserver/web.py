"""The web inbox: a small HTTP server (standard library only) over a :class:`Mailbox`.

Routes (anything else is 404; a known path with another method is 405):

=========================================  ======  =====================================
``/``                                      GET     the inbox page
``/clear``                                 POST    forget every message, 303 to ``/``
``/messages/ID``                           GET     one message
``/messages/ID/html``                      GET     its HTML body, under a strict CSP
``/messages/ID/raw``                       GET     the message as received
``/messages/ID/attachments/N``             GET     attachment N (from 0), as a download
``/api/messages``                          GET     every message as JSON, oldest first
``/api/messages``                          DELETE  forget every message (204)
``/api/messages/ID``                       GET     one message as JSON
=========================================  ======  =====================================
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import templates
from .store import Mailbox, StoredMessage

__all__ = ("HTML_BODY_CSP", "InboxServer", "message_json")

#: The Content-Security-Policy of ``/messages/ID/html``: nothing may load or run
#: except inline styles and data: images.
HTML_BODY_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# The inbox pages themselves: no script at all, frames and forms only from here.
_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'"
)

# A request body is read (and dropped) only up to this size, so that a POST's unread
# body cannot make closing the socket reset the connection before the reply is read.
_MAX_BODY = 1024 * 1024

# A media type we are willing to echo back in Content-Type (RFC 6838 4.2 characters).
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")

_ID = r"(?P<id>[0-9]{1,18})"


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


def message_json(message: StoredMessage) -> dict[str, Any]:
    """The JSON form of a message served by ``/api/messages``."""
    return {
        "id": message.id,
        "envelope_from": message.envelope_from,
        "envelope_to": list(message.envelope_to),
        "subject": message.subject,
        "from": message.from_,
        "to": message.to,
        "cc": message.cc,
        "message_id": message.message_id,
        "received_at": message.received_at.isoformat(),
        "text": message.text,
        "html": message.html,
        "attachments": [
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "url": f"/messages/{message.id}/attachments/{number}",
            }
            for number, attachment in enumerate(message.attachments)
        ],
    }


class _Response:
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


def _html(body: str, status: HTTPStatus = HTTPStatus.OK) -> _Response:
    return _Response(
        status,
        body.encode("utf-8"),
        "text/html; charset=utf-8",
        {"Content-Security-Policy": _PAGE_CSP},
    )


def _json(value: Any) -> _Response:
    return _Response(
        HTTPStatus.OK, json.dumps(value, ensure_ascii=False).encode("utf-8"), "application/json"
    )


def _not_found(detail: str = "Not found") -> _Response:
    return _html(templates.not_found_page(detail), HTTPStatus.NOT_FOUND)


Route = Callable[["InboxServer", dict[str, str]], _Response]


def _message_route(
    action: Callable[[InboxServer, StoredMessage, dict[str, str]], _Response],
) -> Route:
    """Wrap a route that needs the message named by the path's id (404 if gone)."""

    def route(server: InboxServer, match: dict[str, str]) -> _Response:
        message = server.mailbox.get(int(match["id"]))
        if message is None:
            return _not_found("No such message")
        return action(server, message, match)

    return route


def _inbox(server: InboxServer, match: dict[str, str]) -> _Response:
    return _html(templates.inbox_page(server.mailbox.messages(), refresh=server.refresh))


def _clear(server: InboxServer, match: dict[str, str]) -> _Response:
    server.mailbox.clear()
    # 303 so that reloading the inbox afterwards does not post again.
    return _Response(HTTPStatus.SEE_OTHER, headers={"Location": "/"})


def _api_clear(server: InboxServer, match: dict[str, str]) -> _Response:
    server.mailbox.clear()
    return _Response(HTTPStatus.NO_CONTENT)


def _api_list(server: InboxServer, match: dict[str, str]) -> _Response:
    return _json([message_json(message) for message in server.mailbox.messages()])


@_message_route
def _api_message(server: InboxServer, message: StoredMessage, match: dict[str, str]) -> _Response:
    return _json(message_json(message))


@_message_route
def _message(server: InboxServer, message: StoredMessage, match: dict[str, str]) -> _Response:
    return _html(templates.message_page(message))


@_message_route
def _html_body(server: InboxServer, message: StoredMessage, match: dict[str, str]) -> _Response:
    if message.html is None:
        return _not_found("This message has no HTML part")
    return _Response(
        HTTPStatus.OK,
        message.html.encode("utf-8", errors="replace"),
        "text/html; charset=utf-8",
        {"Content-Security-Policy": HTML_BODY_CSP},
    )


@_message_route
def _raw(server: InboxServer, message: StoredMessage, match: dict[str, str]) -> _Response:
    text = message.raw.decode("utf-8", errors="replace")
    return _Response(HTTPStatus.OK, text.encode("utf-8"), "text/plain; charset=utf-8")


@_message_route
def _attachment(server: InboxServer, message: StoredMessage, match: dict[str, str]) -> _Response:
    number = int(match["number"])
    if number >= len(message.attachments):
        return _not_found("No such attachment")
    attachment = message.attachments[number]
    content_type = attachment.content_type
    if not _MEDIA_TYPE.match(content_type):
        content_type = "application/octet-stream"
    return _Response(
        HTTPStatus.OK,
        attachment.payload,
        content_type,
        {
            "Content-Disposition": _attachment_disposition(attachment.filename),
            # Should a browser render it after all, it gets no script and no origin.
            "Content-Security-Policy": "sandbox",
        },
    )


_ROUTES: tuple[tuple[re.Pattern[str], dict[str, Route]], ...] = (
    (re.compile(r"/"), {"GET": _inbox}),
    (re.compile(r"/clear"), {"POST": _clear}),
    (re.compile(rf"/messages/{_ID}"), {"GET": _message}),
    (re.compile(rf"/messages/{_ID}/html"), {"GET": _html_body}),
    (re.compile(rf"/messages/{_ID}/raw"), {"GET": _raw}),
    (re.compile(rf"/messages/{_ID}/attachments/(?P<number>[0-9]{{1,9}})"), {"GET": _attachment}),
    (re.compile(r"/api/messages"), {"GET": _api_list, "DELETE": _api_clear}),
    (re.compile(rf"/api/messages/{_ID}"), {"GET": _api_message}),
)


class _RequestHandler(BaseHTTPRequestHandler):
    """Dispatches every method through :data:`_ROUTES`."""

    server: InboxServer
    server_version = "smtp_backends-devserver"

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server looks up do_<METHOD>; route every method through _dispatch so that
        # unsupported ones get 405 (or 404) rather than 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self._drain_body()
        path = urllib.parse.urlsplit(self.path).path
        response = _not_found()
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            route = methods.get(self.command)
            if route is None:
                allowed = ", ".join(methods)
                response = _Response(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"405 Method Not Allowed (allowed: {allowed})\n".encode(),
                    "text/plain; charset=utf-8",
                    {"Allow": allowed},
                )
            else:
                response = route(self.server, match.groupdict())
            break
        self._send(response)

    def _drain_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= _MAX_BODY:
            self.rfile.read(length)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        headers = {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **response.headers,
        }
        if response.status != HTTPStatus.NO_CONTENT:
            headers["Content-Length"] = str(len(response.body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log a request to stderr only when the server is verbose."""
        if self.server.verbose:
            super().log_message(format, *args)


class InboxServer(ThreadingHTTPServer):
    """The web inbox over ``mailbox``, listening on ``(host, port)`` once constructed.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one (see :attr:`port`).
        mailbox: the messages to show.
        verbose: log every request to stderr.
        refresh: make the inbox page reload itself every this many seconds.

    Raises:
        OSError: the address cannot be bound.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        mailbox: Mailbox,
        *,
        verbose: bool = False,
        refresh: float | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.mailbox = mailbox
        self.verbose = verbose
        self.refresh = refresh
        self._thread: threading.Thread | None = None
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (it can take seconds)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server_port

    def start(self) -> None:
        """Serve requests on a daemon thread."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="smtp_backends-devserver-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.shutdown()
            thread.join()
        self.server_close()
