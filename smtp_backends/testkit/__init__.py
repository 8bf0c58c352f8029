"""The test kit: a capture server, an outbox to wait for mail and assert on it.

Most projects use it through the pytest plugin (module ``pytest_smtp_backends``,
fixtures ``smtp_outbox``, ``async_smtp_outbox``, ``django_smtp_outbox``...), which
pytest loads by itself once this package is installed. Without pytest::

    from smtp_backends.testkit import CaptureServer, Outbox

    with CaptureServer().running() as server, Outbox(server) as outbox:
        ...  # send mail to server.host:server.port
        mail = outbox.wait_for(subject="Welcome", to="ada@example.com")
        mail.assert_link("/confirm/")

Everything here needs only the standard library (and the framework a
``use_*`` helper points at).
"""

from __future__ import annotations

from smtp_backends.testing import CapturedMessage, CaptureServer

from .frameworks import use_asgi, use_django, use_flask
from .mail import Attachment, ReceivedMail
from .outbox import Outbox, close_pools

__all__ = (
    "Attachment",
    "CaptureServer",
    "CapturedMessage",
    "Outbox",
    "ReceivedMail",
    "close_pools",
    "use_asgi",
    "use_django",
    "use_flask",
)
