"""Django's own SMTP backend test cases (tests/mail), with the backend swapped for ours.

The installed Django's source distribution is fetched at test time (see ``upstream.py``);
its ``SMTPBackendTests`` and ``SMTPBackendStoppedServerTests`` run here with
``smtp.EmailBackend`` (and ``EMAIL_BACKEND`` / ``backend_class``) pointing at
:class:`smtp_backends.django.AsyncSMTPBackend`. Every test runs, except:

* ``NOT_APPLICABLE``: tests that patch or read smtplib's internals (smtplib.SMTP and its
  methods replaced by mocks, its ``sock`` attribute); each reason names our own test of
  the same behaviour on the wire. ``test_ssl_context_uses_ssl_certfile_and_keyfile``
  runs: the backend's ``ssl_context`` is built as Django's.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import types
import unittest
from collections.abc import Callable
from typing import Any

from integrations.requirements import missing, require_module

for _required in ("django", "pytest_django", "aiosmtpd"):
    require_module(_required, "Django's own mail tests")

from tests.django_project import setup  # noqa: E402

setup()

from smtp_backends.django import AsyncSMTPBackend  # noqa: E402
from tests.django_upstream import upstream  # noqa: E402

try:
    upstream.mail_tests_path()
except upstream.UnavailableError as exc:
    # Under CI the suite must not vanish quietly: fail there, skip elsewhere.
    missing(f"Django's test sources are unavailable: {exc}", module=True)

_NAME = upstream.PACKAGE
if importlib.util.find_spec(f"{_NAME}.test_backends") is not None:
    _module: Any = importlib.import_module(f"{_NAME}.test_backends")  # Django 6.1+
else:
    _module = importlib.import_module(f"{_NAME}.tests")  # Django 5.2, 6.0


class EmailBackend(AsyncSMTPBackend):
    """AsyncSMTPBackend under the class name Django's tests expect in messages."""


# The test cases build backends as ``smtp.EmailBackend(...)``.
_module.smtp = types.SimpleNamespace(EmailBackend=EmailBackend)

_OURS = "tests/test_django_backend.py"
NOT_APPLICABLE = {
    "test_email_msg_uses_crlf": (
        "patches smtplib.SMTP.send to capture the DATA bytes; AsyncSMTPBackend does not use "
        f"smtplib. CRLF-only content is checked in {_OURS}::test_wire_format_matches_django"
    ),
    "test_reopen_replaces_partial_connection": (
        "reads smtplib.SMTP's socket attribute (.sock) on the private _partial_connection and "
        "expects a failed open() to keep that half-open socket until the next open(); "
        "AsyncSMTPBackend does not use smtplib and closes a failed connection at once, a "
        "stricter form of the same fix (a connection is used only after TLS and AUTH "
        f"succeeded): {_OURS}::test_failed_starttls_leaves_no_connection"
    ),
    "test_smtp_connection_uses_host_and_port": (
        "patches smtplib.SMTP to see how the stock backend constructs it; host and port are "
        f"checked on the wire in {_OURS}::test_mailers_options"
    ),
}
_AUTH_MOCKED = (
    "patches smtplib.SMTP.login to see that the stock backend calls it; AUTH is checked "
    f"against a real server in {_OURS}::test_auth"
)
# Django 6.1's test_auth_attempted patches smtplib.SMTP.login; 5.2's runs for real.
AUTH_MOCKED_IN = ("test_auth_attempted",)


def _not_applicable(reason: str) -> Callable[[Any], None]:
    @unittest.skip(f"not applicable: {reason}")
    def test(self: Any) -> None:  # pragma: no cover - skipped
        pass

    return test


def _adapt(cls: type) -> type:
    for name, reason in NOT_APPLICABLE.items():
        if hasattr(cls, name):
            setattr(cls, name, _not_applicable(reason))
    for name in AUTH_MOCKED_IN:
        original = getattr(cls, name, None)
        if original is not None and "smtplib.SMTP.login" in inspect.getsource(original):
            setattr(cls, name, _not_applicable(_AUTH_MOCKED))
    return cls


@_adapt
class TestUpstreamSMTPBackend(_module.SMTPBackendTests):  # type: ignore[misc,name-defined]
    """Django's SMTPBackendTests (and the shared backend tests) against our backend."""

    email_backend = f"{__name__}.EmailBackend"  # Django 5.2: EMAIL_BACKEND, get_connection()
    backend_class = EmailBackend  # Django 6.1: SharedEmailBackendTests.create_backend()


@_adapt
class TestUpstreamSMTPBackendStoppedServer(_module.SMTPBackendStoppedServerTests):  # type: ignore[misc,name-defined]
    """Django's SMTPBackendStoppedServerTests against our backend."""
