"""Helpers for the Flask adapter's tests: app factory, bridge isolation, server checks.

Imported by ``tests/test_flask*.py`` only (they skip when Flask is not installed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from smtp_backends.bridge import shutdown
from smtp_backends.flask import Mail
from tests.servers import SMTPServer

SENDER = "sender@example.com"


@pytest.fixture(autouse=True)
def no_bridge(make_smtpd: object, make_scripted_server: object) -> Iterator[None]:
    """No bridge before the test; its pools and loop thread shut down after it.

    Depends on the server factories so that it is torn down first: pooled
    connections QUIT while their servers still run, and the servers then close
    every socket cleanly (no ResourceWarning).
    """
    shutdown()
    yield
    shutdown()


def make_app(
    server: SMTPServer | None = None,
    *,
    mail: Mail | None = None,
    name: str = "flask_test_app",
    **config: Any,
) -> Flask:
    """A Flask app whose mail settings point at ``server`` (sending not suppressed).

    ``config`` overrides any setting; the app is set up with ``mail.init_app``
    when ``mail`` is given.
    """
    app = Flask(name)
    settings: dict[str, Any] = {"MAIL_DEFAULT_SENDER": SENDER, "MAIL_SUPPRESS_SEND": False}
    if server is not None:
        settings.update(MAIL_SERVER=server.host, MAIL_PORT=server.port)
    settings.update(config)
    app.config.update(settings)
    if mail is not None:
        mail.init_app(app)
    return app


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
