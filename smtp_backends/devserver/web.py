"""The web inbox: a small HTTP server (standard library only) over a :class:`Mailbox`.

Routes (anything else is 404; a known path with another method is 405). The JSON API
is documented in ``API.md`` next to this module.

========================================  ======  =======================================
``/``                                     GET     the inbox page (``?q=`` searches)
``/clear``                                POST    forget every message (or those matching
                                                  the form's ``q``), 303 to ``/``
``/live``                                 GET     the inbox page's hidden live-update frame
``/static/live.js``                       GET     its script
``/favicon.ico``                          GET     no icon (204, so browsers stop asking)
``/messages/ID``                          GET     one message
``/messages/ID/html``                     GET     its HTML body, under a strict CSP
``/messages/ID/raw``                      GET     the message as received
``/messages/ID/attachments/N``            GET     attachment N (from 0), as a download
``/messages/ID/link-check``               POST    check its links, show the results
``/messages/ID/release``                  POST    send it to the relay (form field ``to``)
``/api/messages``                         GET     messages as JSON (``q``, ``tag``, ``wait``)
``/api/messages``                         DELETE  forget messages (all, ``q``, ``tag``, ``id``)
``/api/messages/ID``                      GET     one message as JSON
``/api/messages/ID/link-check``           POST    check its links (JSON)
``/api/messages/ID/release``              POST    send it to the relay (JSON)
``/api/events``                           GET     server-sent events of every change
``/api/tags``                             GET     plus-address tags and their counts
``/api/info``                             GET     limits, counts and features
``/api/chaos``                            GET     chaos rules, seed and counts
``/api/chaos``                            PUT     replace the chaos rules
``/api/chaos``                            DELETE  remove every chaos rule
========================================  ======  =======================================

Every request must name a known host (:class:`~.guard.HostPolicy`, against DNS
rebinding), and every request that changes something must not come from another site
(:func:`~.guard.cross_site_reason`); both are refused with 403.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import api, events, pages
from .chaos import Chaos
from .guard import HostPolicy, cross_site_reason
from .linkcheck import LinkChecker
from .release import Releaser
from .responses import (
    HTML_BODY_CSP,
    BadRequest,
    EventStream,
    Request,
    Response,
    Route,
    json_error,
    not_found,
)
from .store import Mailbox, Subscription

__all__ = ("HTML_BODY_CSP", "InboxServer", "message_json")

message_json = api.message_json

# A request body is read up to this size; a larger one is refused (413). Reading it
# also keeps a POST's unread body from making the close reset the connection before
# the reply is read.
_MAX_BODY = 1024 * 1024

_ID = r"(?P<id>[0-9]{1,18})"

_ROUTES: tuple[tuple[re.Pattern[str], dict[str, Route]], ...] = (
    (re.compile(r"/"), {"GET": pages.inbox}),
    (re.compile(r"/clear"), {"POST": pages.clear}),
    (re.compile(r"/live"), {"GET": pages.live}),
    (re.compile(re.escape(events.LIVE_SCRIPT_PATH)), {"GET": pages.live_script}),
    (re.compile(r"/favicon\.ico"), {"GET": pages.favicon}),
    (re.compile(rf"/messages/{_ID}"), {"GET": pages.message}),
    (re.compile(rf"/messages/{_ID}/html"), {"GET": pages.html_body}),
    (re.compile(rf"/messages/{_ID}/raw"), {"GET": pages.raw}),
    (
        re.compile(rf"/messages/{_ID}/attachments/(?P<number>[0-9]{{1,9}})"),
        {"GET": pages.attachment},
    ),
    (re.compile(rf"/messages/{_ID}/link-check"), {"POST": pages.link_check}),
    (re.compile(rf"/messages/{_ID}/release"), {"POST": pages.release}),
    (re.compile(r"/api/messages"), {"GET": api.messages_list, "DELETE": api.messages_delete}),
    (re.compile(rf"/api/messages/{_ID}"), {"GET": api.message}),
    (re.compile(rf"/api/messages/{_ID}/link-check"), {"POST": api.link_check}),
    (re.compile(rf"/api/messages/{_ID}/release"), {"POST": api.release}),
    (re.compile(r"/api/events"), {"GET": api.events}),
    (re.compile(r"/api/tags"), {"GET": api.tags}),
    (re.compile(r"/api/info"), {"GET": api.info}),
    (
        re.compile(r"/api/chaos"),
        {"GET": api.chaos_get, "PUT": api.chaos_put, "DELETE": api.chaos_clear},
    ),
)


def _plain(status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, f"{text}\n".encode(), "text/plain; charset=utf-8", headers)


class _RequestHandler(BaseHTTPRequestHandler):
    """Checks the request, then dispatches every method through :data:`_ROUTES`."""

    server: InboxServer
    server_version = "smtp_backends-devserver"

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server looks up do_<METHOD>; route every method through _dispatch so that
        # unsupported ones get 405 (or 404) rather than 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            self._send(_plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large"))
            return
        host = self.headers.get("Host")
        if not self.server.host_policy.allows(host):
            # DNS rebinding: a foreign name pointed at 127.0.0.1 (see guard.py).
            self._send(
                _plain(
                    HTTPStatus.FORBIDDEN,
                    f"403 Forbidden: this inbox does not answer to the host {host!r}; "
                    "add the name with --allowed-host if it is yours",
                )
            )
            return
        split = urllib.parse.urlsplit(self.path)
        response = not_found()
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(split.path)
            if match is None:
                continue
            route = methods.get(self.command)
            if route is None:
                allowed = ", ".join(methods)
                response = _plain(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"405 Method Not Allowed (allowed: {allowed})",
                    {"Allow": allowed},
                )
                break
            reason = cross_site_reason(self.command, self.headers, host)
            if reason:
                response = _plain(
                    HTTPStatus.FORBIDDEN, f"403 Forbidden: cross-site request refused ({reason})"
                )
                break
            query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
            request = Request(
                self.server, self.command, match.groupdict(), query, self.headers, body
            )
            try:
                response = route(request)
            except BadRequest as error:
                response = json_error(HTTPStatus.BAD_REQUEST, str(error))
            break
        if isinstance(response, EventStream):
            self._stream(response)
        else:
            self._send(response)

    def _read_body(self) -> bytes | None:
        """The request body ('' if none); None when it is larger than we read."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > _MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _headers(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **response.headers,
        }
        if response.status != HTTPStatus.NO_CONTENT and not isinstance(response, EventStream):
            headers["Content-Length"] = str(len(response.body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, response: Response) -> None:
        self._headers(response)
        if response.body:
            self.wfile.write(response.body)

    def _stream(self, response: EventStream) -> None:
        server = self.server
        subscription = server.subscribe(response.since)
        try:
            self._headers(response)
            self.wfile.flush()

            def write(data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()

            events.stream(
                write,
                server.mailbox,
                subscription,
                response.select,
                server.closing,
                server.keepalive,
            )
        finally:
            server.unsubscribe(subscription)
        self.close_connection = True

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
        allowed_hosts: host names answered besides loopback and the bound host
            (``*``: any; see :class:`~.guard.HostPolicy`).
        chaos: the SMTP side's chaos rules, for ``/api/chaos`` (None: no SMTP side).
        link_checker: checks links (default: loopback only, see :mod:`.linkcheck`).
        releaser: sends messages on to a relay (None: release is off).
        keepalive: seconds between keep-alive comments on an idle event stream.

    Raises:
        OSError: the address cannot be bound.
        ValueError: a name in ``allowed_hosts`` is not a host name.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        mailbox: Mailbox,
        *,
        verbose: bool = False,
        refresh: float | None = None,
        allowed_hosts: Iterable[str] = (),
        chaos: Chaos | None = None,
        link_checker: LinkChecker | None = None,
        releaser: Releaser | None = None,
        keepalive: float = events.KEEPALIVE,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.mailbox = mailbox
        self.verbose = verbose
        self.refresh = refresh
        self.host_policy = HostPolicy(address[0], allowed_hosts)
        self.chaos = chaos
        self.link_checker = link_checker or LinkChecker()
        self.releaser = releaser
        self.keepalive = keepalive
        #: Set when the server stops: event streams end.
        self.closing = threading.Event()
        self._subscriptions: set[Subscription] = set()
        self._subscriptions_lock = threading.Lock()
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

    def subscribe(self, since: int | None) -> Subscription:
        """A mailbox subscription for one event stream, closed when the server stops."""
        subscription = self.mailbox.subscribe(since)
        with self._subscriptions_lock:
            self._subscriptions.add(subscription)
        if self.closing.is_set():
            subscription.close()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget (and close) one event stream's subscription."""
        subscription.close()
        with self._subscriptions_lock:
            self._subscriptions.discard(subscription)

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
        """Stop serving, end the event streams, close the listening socket (idempotent)."""
        self.closing.set()
        with self._subscriptions_lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            self.shutdown()
            thread.join()
        self.server_close()
