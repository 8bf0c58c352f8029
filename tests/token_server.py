"""A small OAuth 2.0 token endpoint on loopback, for the token provider tests.

It answers what google-auth and msal ask for: ``POST .../token`` (any grant) with a new
access token ``tok-1``, ``tok-2``... and ``GET <tenant>/v2.0/.well-known/openid-configuration``
(msal's tenant discovery). Plain HTTP, or HTTPS with a trustme certificate (msal only
talks to https authorities). Every request is recorded. Nothing here imports
``smtp_backends``.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TokenServer:
    """The endpoint, running in a thread; ``on_issue(token)`` hears of every token issued.

    Args:
        expires_in: lifetime announced for each token, in seconds.
        ssl_context: serve HTTPS with this server context.
        refuse: answer every token request with 400 ``invalid_client``.
    """

    def __init__(
        self,
        *,
        expires_in: int = 3600,
        ssl_context: ssl.SSLContext | None = None,
        on_issue: Callable[[str], None] | None = None,
        refuse: bool = False,
    ) -> None:
        self.expires_in = expires_in
        self.on_issue = on_issue
        self.refuse = refuse
        self.issued: list[str] = []
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, {}))
                if self.path.endswith("/v2.0/.well-known/openid-configuration"):
                    tenant = self.path.split("/")[1]
                    base = f"{server.base_url}/{tenant}"
                    self._json(
                        200,
                        {
                            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                            "token_endpoint": f"{base}/oauth2/v2.0/token",
                            "issuer": f"{base}/v2.0",
                        },
                    )
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                server.requests.append(("POST", self.path, form))
                if not self.path.endswith("/token"):
                    self._json(404, {"error": "not_found"})
                    return
                if server.refuse:
                    self._json(400, {"error": "invalid_client", "error_description": "no"})
                    return
                with server._lock:
                    token = f"tok-{len(server.issued) + 1}"
                    server.issued.append(token)
                if server.on_issue is not None:
                    server.on_issue(token)
                self._json(
                    200,
                    {
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": server.expires_in,
                    },
                )

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        scheme = "http"
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
            scheme = "https"
        self.base_url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def token_requests(self) -> list[dict[str, list[str]]]:
        """The form of every token request, in order."""
        return [form for method, _, form in self.requests if method == "POST"]

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
