"""smtp_backends.django.AsyncSMTPBackend against real servers on loopback.

The stock backend's contract, case by case (configuration, envelope, errors,
fail_silently, TLS, AUTH, open/close), plus pooling, pipelined batches and the
awaitable twins. Django's own SMTP backend tests run against it in
tests/django_upstream.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.generator
import itertools
import smtplib
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("django")
pytest.importorskip("pytest_django")

from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend as StockEmailBackend
from django.core.mail.message import sanitize_address

import smtp_backends
from smtp_backends import (
    SMTP,
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPPool,
    SMTPRecipientsRefused,
    SMTPTimeoutError,
    SMTPTLSError,
    bridge,
)
from smtp_backends import django as adapter
from smtp_backends import mailer as mailer_module
from smtp_backends.django import (
    AsyncSMTPBackend,
    amail_admins,
    amail_managers,
    asend_mail,
    asend_mass_mail,
)
from smtp_backends.django import config as django_config
from smtp_backends.django import envelope as django_envelope
from smtp_backends.mailer import Mailer, addr_spec
from tests.django_project.testing import (
    BACKEND,
    DJANGO_6,
    HAS_MAILERS,
    admins,
    make_backend,
    no_bridge,
    tls_options,
    use_smtp,
)
from tests.servers import PASSWORD, USERNAME, SMTPServer

__all__ = ("no_bridge", "use_smtp")  # fixtures used by name

pytestmark = pytest.mark.usefixtures("no_bridge")

ROOT = Path(__file__).resolve().parent.parent
SENDER = "from@example.com"


def message(to: str = "to@example.com", **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("subject", "Subject")
    kwargs.setdefault("body", "Content")
    kwargs.setdefault("from_email", SENDER)
    return EmailMessage(to=[to], **kwargs)


def stock_backend(server: SMTPServer, **options: Any) -> Any:
    """Django's own SMTP backend for ``server`` (no deprecation warning on 6.1)."""
    if HAS_MAILERS:
        options["alias"] = "stock"
    return StockEmailBackend(host=server.host, port=server.port, **options)


# --------------------------------------------------------------------------- packaging


def test_core_imports_without_django() -> None:
    """smtp_backends imports with Django absent; only the adapter needs it."""
    code = (
        "import sys; sys.modules['django'] = None\n"
        "import smtp_backends, smtp_backends.bridge\n"
        "assert 'django' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "try:\n    import smtp_backends.django\nexcept ImportError: print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --------------------------------------------------------------------------- configuration


@pytest.mark.skipif(HAS_MAILERS, reason="EMAIL_* settings: Django < 6.1 (see the 6.1 test)")
def test_email_settings_are_the_defaults(settings: Any) -> None:
    settings.EMAIL_HOST = "mail.example.com"
    settings.EMAIL_PORT = 2525
    settings.EMAIL_HOST_USER = "user"
    settings.EMAIL_HOST_PASSWORD = "pw"
    settings.EMAIL_USE_TLS = True
    settings.EMAIL_TIMEOUT = 7
    settings.EMAIL_SSL_CERTFILE = "cert.pem"
    settings.EMAIL_SSL_KEYFILE = "key.pem"
    backend = AsyncSMTPBackend()
    assert (backend.host, backend.port, backend.username, backend.password) == (
        "mail.example.com",
        2525,
        "user",
        "pw",
    )
    assert (backend.use_tls, backend.use_ssl, backend.timeout) == (True, False, 7)
    assert (backend.ssl_certfile, backend.ssl_keyfile) == ("cert.pem", "key.pem")
    config = backend.connection_config()
    assert (config.hostname, config.port, config.start_tls, config.use_tls) == (
        "mail.example.com",
        2525,
        True,
        False,
    )
    assert (config.client_cert, config.client_key, config.timeout) == ("cert.pem", "key.pem", 7)
    # Keywords win; empty credentials turn AUTH off, as in Django.
    backend = AsyncSMTPBackend(host="other", port=25, username="", password="", use_tls=False)
    assert (backend.host, backend.port, backend.username, backend.use_tls) == (
        "other",
        25,
        "",
        False,
    )
    assert backend.connection_config().username is None


@pytest.mark.skipif(HAS_MAILERS, reason="EMAIL_* settings: Django < 6.1")
def test_email_use_tls_and_ssl_are_exclusive(settings: Any) -> None:
    message = "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive"
    with pytest.raises(ValueError, match=message):
        AsyncSMTPBackend(use_tls=True, use_ssl=True)
    settings.EMAIL_USE_SSL = True
    settings.EMAIL_USE_TLS = True
    with pytest.raises(ValueError, match=message):
        AsyncSMTPBackend()


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS: Django 6.1+")
def test_mailers_options(settings: Any, smtpd: SMTPServer) -> None:
    """OPTIONS arrive as keywords with the alias; every access builds a new instance."""
    from django.core.mail import InvalidMailer, mailers

    settings.MAILERS = {
        "default": {
            "BACKEND": BACKEND,
            "OPTIONS": {
                "host": smtpd.host,
                "port": smtpd.port,
                "fail_silently": True,
                "pool_size": 2,
                "pipelining": False,
            },
        },
        "implicit": {"BACKEND": BACKEND, "OPTIONS": {"host": "mail.example.com", "use_ssl": True}},
        "starttls": {"BACKEND": BACKEND, "OPTIONS": {"host": "mail.example.com", "use_tls": True}},
    }
    first, second = mailers["default"], mailers["default"]
    assert first is not second
    assert isinstance(first, AsyncSMTPBackend)
    assert (first.alias, first.host, first.port, first.fail_silently) == (
        "default",
        smtpd.host,
        smtpd.port,
        True,
    )
    assert (first.pool_size, first.pipelining, first.username, first.timeout) == (
        2,
        False,
        None,
        None,
    )
    assert mailers["implicit"].port == 465
    assert mailers["starttls"].port == 587
    assert mailers["default"].port == smtpd.port
    # Pooled connections belong to the process, not to the instance.
    assert first.send_messages([message()]) == 1
    assert second.send_messages([message()]) == 1
    assert mailers["default"].send_messages([message()]) == 1
    assert smtpd.handler.connections == 1
    assert [m.rcpt_tos for m in smtpd.messages] == [["to@example.com"]] * 3

    with pytest.raises(InvalidMailer, match=r"MAILERS\['x'\]: OPTIONS must define 'host'"):
        AsyncSMTPBackend(alias="x")
    with pytest.raises(InvalidMailer, match=r"Unknown options 'hots'"):
        AsyncSMTPBackend(alias="x", host="h", hots="typo")
    with pytest.raises(InvalidMailer, match="'use_ssl' and 'use_tls' OPTIONS are incompatible"):
        AsyncSMTPBackend(alias="x", host="h", use_ssl=True, use_tls=True)
    with pytest.raises(InvalidMailer, match="pool_size"):
        AsyncSMTPBackend(alias="x", host="h", pool_size=-1)


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS: Django 6.1+")
def test_mailers_ignore_email_settings(settings: Any) -> None:
    """Under MAILERS no deprecated EMAIL_* setting (nor ours) is read."""
    settings.SMTP_BACKENDS_OPTIONS = {"pool_size": 9}
    settings.MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"host": "h"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = mail.mailers["default"]
    assert (backend.port, backend.username, backend.password, backend.use_tls) == (
        25,
        None,
        None,
        False,
    )
    assert (backend.ssl_certfile, backend.timeout, backend.pool_size) == (None, None, 4)


@pytest.mark.skipif(not HAS_MAILERS, reason="Django 6.1's deprecation of EMAIL_*")
def test_email_backend_setting_still_works_on_django_61(smtpd: SMTPServer) -> None:
    """EMAIL_BACKEND + EMAIL_* (deprecated in 6.1) keep working, with no warning of ours."""
    from django.test.utils import override_settings
    from django.utils.deprecation import RemovedInDjango2028Warning

    override = override_settings(
        EMAIL_BACKEND=BACKEND, EMAIL_HOST=smtpd.host, EMAIL_PORT=smtpd.port
    )
    with warnings.catch_warnings():  # Django warns about defining them, rightly
        warnings.simplefilter("ignore", RemovedInDjango2028Warning)
        override.enable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert mail.send_mail("Subject", "Body", SENDER, ["to@example.com"]) == 1
        assert [str(w.message) for w in caught if "smtp_backends" in w.filename] == []
        assert smtpd.messages[0].rcpt_tos == ["to@example.com"]
        # Direct construction warns as Django 6.1's own backend does.
        with pytest.warns(RemovedInDjango2028Warning, match="Directly creating EmailBackend"):
            backend = AsyncSMTPBackend()
        assert (backend.host, backend.port) == (smtpd.host, smtpd.port)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RemovedInDjango2028Warning)
            override.disable()


def test_own_options_defaults_and_validation(settings: Any) -> None:
    backend = make_backend(host="h", port=25)
    assert backend.pool_size == 4
    assert backend.idle_timeout == 60.0
    assert (backend.validate_certs, backend.allow_insecure_auth, backend.pipelining) == (
        True,
        False,
        True,
    )
    assert backend.cert_bundle is None and backend.tls_context is None
    config = backend.connection_config()
    assert config.timeout == 60.0  # timeout=None: the core's default, not "wait forever"
    assert config.start_tls is False  # no STARTTLS unless use_tls, as the stock backend
    error = ImproperlyConfigured if HAS_MAILERS else (ValueError, TypeError)
    for bad in ({"pool_size": -1}, {"pool_size": True}, {"idle_timeout": 0}, {"pipelining": 1}):
        with pytest.raises(error):
            make_backend(host="h", **bad)
    with pytest.raises(error):
        make_backend(host="h", port="not a port")
    assert make_backend(host="h", port="2525").connection_config().port == 2525


@pytest.mark.skipif(HAS_MAILERS, reason="the setting applies to EMAIL_BACKEND configurations")
def test_own_options_setting(settings: Any) -> None:
    settings.SMTP_BACKENDS_OPTIONS = {"pool_size": 2, "allow_insecure_auth": True}
    backend = AsyncSMTPBackend()
    assert (backend.pool_size, backend.allow_insecure_auth) == (2, True)
    assert AsyncSMTPBackend(pool_size=3).pool_size == 3  # keywords win
    settings.SMTP_BACKENDS_OPTIONS = {"poolsize": 2}
    with pytest.raises(ImproperlyConfigured, match="poolsize"):
        AsyncSMTPBackend()
    settings.SMTP_BACKENDS_OPTIONS = ["pool_size"]
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        AsyncSMTPBackend()


# --------------------------------------------------------------------------- sending


def test_send_messages_envelope_and_content(smtpd: SMTPServer) -> None:
    email = EmailMessage(
        "Subject",
        "Body",
        '"Sender Name" <sender@example.com>',
        ["To <to@example.com>"],
        cc=["cc@example.com"],
        bcc=["hidden@example.com"],
        reply_to=["reply@example.com"],
    )
    assert make_backend(smtpd).send_messages([email]) == 1
    [received] = smtpd.messages
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == ["to@example.com", "cc@example.com", "hidden@example.com"]
    assert b"hidden@example.com" not in received.original_content  # Bcc is not transmitted
    assert received.message["Reply-To"] == "reply@example.com"
    assert received.message.get_content().rstrip() == "Body"


class _Boundaries:
    """Deterministic MIME boundaries, so that two serialisations can be compared."""

    def __init__(self) -> None:
        self.counter = itertools.count()

    def __call__(self, text: str | None = None) -> str:
        return f"===============boundary{next(self.counter)}=="


WIRE_CASES: dict[str, Callable[[], EmailMessage]] = {
    "ascii": lambda: message(),
    "unicode": lambda: message(
        "Zoë <zoe@example.com>",
        subject="Chère maman",
        body="Je t'aime très fort\n"
        + "\u0412 \u044e\u0436\u043d\u044b\u0445 \u043c\u043e\u0440\u044f\u0445 " * 80,
        from_email='"Firstname Sürname" <from@example.com>',
    ),
    "idn": lambda: EmailMessage(
        "IDN",
        "body",
        "lists@discussão.example.org",
        ["To Example <to@漢字.example.com>"],
        bcc=["monitor@discussão.example.org"],
    ),
    "idna2008": lambda: EmailMessage(
        "IDNA 2008",
        "body",
        '"βόλος" <from@xn--fa-hia.example.com>',
        ['"faß" <to@xn--10cl1a0b660p.example.com>'],
    ),
    "no domain": lambda: EmailMessage("local", "body", "tester", ["django"]),
    "dots": lambda: message(body=".leading dot\n..two\nFrom the start\r\n.\nlast"),
    "charset": lambda: _with_encoding(message(subject="Grüße", body="Grüße"), "iso-8859-1"),
    "alternatives": lambda: _alternatives(),
    "lazy": lambda: _lazy(),
}


def _with_encoding(email: EmailMessage, encoding: str) -> EmailMessage:
    email.encoding = encoding
    return email


def _alternatives() -> EmailMessage:
    email = EmailMultiAlternatives(
        "Report", "Plain text", SENDER, ["to@example.com"], cc=["cc@example.com"]
    )
    email.attach_alternative("<p>HTML <b>text</b> é</p>", "text/html")
    email.attach("data.bin", bytes(range(256)) * 4, "application/octet-stream")
    email.attach("notes.txt", "line 1\nline 2 é\n", "text/plain")
    return email


def _lazy() -> EmailMessage:
    from django.utils.translation import gettext_lazy

    return EmailMessage(gettext_lazy("Subject"), "body", gettext_lazy("tester"), ["d@x.org"])


@pytest.mark.parametrize("case", list(WIRE_CASES))
@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1"])
def test_wire_format_matches_django(
    case: str,
    charset: str,
    smtpd: SMTPServer,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Envelope and content on the wire are exactly the stock backend's (DEFAULT_CHARSET too)."""
    settings.DEFAULT_CHARSET = charset
    boundaries = _Boundaries()
    monkeypatch.setattr(email.generator.Generator, "_make_boundary", boundaries)
    headers = {"Message-ID": "<fixed@example.com>", "Date": "Tue, 01 Jan 2030 00:00:00 -0000"}

    def build() -> EmailMessage:
        built = WIRE_CASES[case]()
        built.extra_headers.update(headers)
        return built

    boundaries.counter = itertools.count()
    try:
        assert stock_backend(smtpd).send_messages([build()]) == 1
    except Exception as exc:  # Django cannot build it (say, Cyrillic in latin-1): nor do we
        with pytest.raises(type(exc)):
            make_backend(smtpd).send_messages([build()])
        assert smtpd.messages == []
        return
    boundaries.counter = itertools.count()
    assert make_backend(smtpd).send_messages([build()]) == 1
    stock, ours = smtpd.messages
    assert (ours.mail_from, ours.rcpt_tos) == (stock.mail_from, stock.rcpt_tos)
    assert ours.original_content == stock.original_content
    content = ours.original_content.replace(b"\r\n", b"")
    assert b"\r" not in content and b"\n" not in content


def test_non_ascii_local_part_as_django(smtpd: SMTPServer) -> None:
    """Django 5.2 encodes it (and sends); Django 6.x refuses it with ValueError."""
    email = EmailMessage("s", "b", SENDER, ["nø@example.dk"])
    if DJANGO_6:
        with pytest.raises(ValueError, match="Invalid address") as stock_error:
            stock_backend(smtpd).send_messages([email])
        with pytest.raises(ValueError, match="Invalid address") as our_error:
            make_backend(smtpd).send_messages([email])
        assert str(our_error.value) == str(stock_error.value)
        assert smtpd.messages == []
    else:
        assert stock_backend(smtpd).send_messages([email]) == 1
        assert make_backend(smtpd).send_messages([email]) == 1
        assert smtpd.messages[0].rcpt_tos == smtpd.messages[1].rcpt_tos


def test_empty_list_and_no_recipients(smtpd: SMTPServer) -> None:
    backend = make_backend(smtpd)
    assert backend.send_messages([]) == 0
    assert backend.send_messages([EmailMessage("s", "b", SENDER, [])]) == 0
    assert smtpd.handler.commands.count("MAIL") == 0
    mixed = [EmailMessage("s", "b", SENDER, []), message("a@example.com"), message("b@example.com")]
    assert backend.send_messages(mixed) == 2
    assert backend.send_messages(iter([message()])) == 1  # any iterable, as in Django
    assert [m.rcpt_tos for m in smtpd.messages] == [
        ["a@example.com"],
        ["b@example.com"],
        ["to@example.com"],
    ]


def test_invalid_address_raises_after_sending_the_ones_before(smtpd: SMTPServer) -> None:
    """As the stock backend: messages before the bad one are sent, then ValueError."""
    backend = make_backend(smtpd, fail_silently=True)  # fail_silently does not cover it
    batch = [message("one@example.com"), message("to@other.com@example.com"), message()]
    with pytest.raises(ValueError, match="Invalid address"):
        backend.send_messages(batch)
    assert [m.rcpt_tos for m in smtpd.messages] == [["one@example.com"]]
    for bad in ('"evil@example.com\r\nto"@example.com', "to\nevil@example.com", "@"):
        with pytest.raises(ValueError):
            backend.send_messages([EmailMessage(bcc=[bad])])
    assert len(smtpd.messages) == 1


def test_refused_recipients(smtpd: SMTPServer) -> None:
    backend = make_backend(smtpd)
    # Some refused: sent (smtplib and Django count it as sent).
    partial = EmailMessage("s", "b", SENDER, ["ok@example.com", "refuse-me@example.com"])
    assert backend.send_messages([partial]) == 1
    assert smtpd.messages[0].rcpt_tos == ["ok@example.com"]
    # All refused: smtplib's exception class, Django's fail_silently.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        backend.send_messages([message("refuse-all@example.com")])
    assert isinstance(info.value, SMTPRecipientsRefused)
    assert [r.recipient for r in info.value.recipients] == ["refuse-all@example.com"]
    quiet = make_backend(smtpd, fail_silently=True)
    assert quiet.send_messages([message("refuse-all@example.com"), message()]) == 1


def test_batch_failure_sends_the_others(smtpd: SMTPServer) -> None:
    """A refused message in a batch: the rest go out; the error is raised after."""
    batch = [message("a@example.com"), message(body="X-Test-Fail-Data"), message("c@example.com")]
    with pytest.raises(smtplib.SMTPDataError) as info:
        make_backend(smtpd).send_messages(batch)
    assert isinstance(info.value, SMTPDataError) and info.value.smtp_code == 554
    assert make_backend(smtpd, fail_silently=True).send_messages(batch) == 2
    assert len(smtpd.messages) == 4
    assert smtpd.handler.connections <= 4  # the batch is spread over up to pool_size


def test_send_messages_is_one_pipelined_batch(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list goes to SMTPPool.send_messages once, as lazy (sender, recipients, bytes)."""
    calls: list[list[Any]] = []
    original = SMTPPool.send_messages

    async def spy(self: SMTPPool, items: Any, **kwargs: Any) -> Any:
        calls.append(list(items))
        return await original(self, items, **kwargs)

    monkeypatch.setattr(SMTPPool, "send_messages", spy)
    batch = [message(f"user{i}@example.com") for i in range(5)]
    assert make_backend(smtpd, pool_size=1).send_messages(batch) == 5
    [lazy] = calls
    assert all(callable(item) for item in lazy)  # rendered by the client, one by one
    items = [item() for item in lazy]  # each renders once: the same objects again
    assert all(item() is rendered for item, rendered in zip(lazy, items, strict=True))
    assert [(sender, recipients) for sender, recipients, _ in items] == [
        (SENDER, [f"user{i}@example.com"]) for i in range(5)
    ]
    assert all(isinstance(data, bytes) and b"\r\n\r\n" in data for _, _, data in items)
    assert smtpd.handler.connections == 1


def test_lists_keep_their_order(smtpd: SMTPServer) -> None:
    """A list arrives in order over one connection, whatever pool_size (as the stock backend);
    single messages use the pool's other connections."""
    for round_ in range(4):
        batch = [message(f"r{round_}-{i}@example.com") for i in range(6)]
        assert make_backend(smtpd, pool_size=4).send_messages(batch) == 6
    assert [m.rcpt_tos[0] for m in smtpd.messages] == [
        f"r{round_}-{i}@example.com" for round_ in range(4) for i in range(6)
    ]
    assert {m.connection_id for m in smtpd.messages} == {1}
    assert make_backend(smtpd, pool_size=4).send_messages([message()]) == 1
    assert smtpd.handler.connections == 2


def test_keep_order_false_spreads_a_list_over_the_pool(smtpd: SMTPServer) -> None:
    """keep_order=False: one list uses several pooled connections; each message once."""
    batch = [message(f"s{i}@example.com") for i in range(40)]
    backend = make_backend(smtpd, pool_size=4, keep_order=False)
    assert backend.keep_order is False
    assert backend.send_messages(batch) == 40
    assert sorted(m.rcpt_tos[0] for m in smtpd.messages) == sorted(
        f"s{i}@example.com" for i in range(40)
    )
    assert len({m.connection_id for m in smtpd.messages}) == 4
    # TypeError under EMAIL_BACKEND; Django 6.1's InvalidMailer under MAILERS.
    with pytest.raises((TypeError, ImproperlyConfigured), match="keep_order"):
        make_backend(smtpd, keep_order="no")


def test_list_stops_at_a_message_that_cannot_be_prepared(smtpd: SMTPServer) -> None:
    """As the stock backend: the messages before a bad one are sent, it raises, and the
    ones after it are not sent (they are rendered lazily, one by one)."""
    batch = [message("a@example.com"), message("bad\naddress@example.com"), message()]
    with pytest.raises(ValueError):
        make_backend(smtpd, fail_silently=True).send_messages(batch)
    assert [m.rcpt_tos for m in smtpd.messages] == [["a@example.com"]]


_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class _Recording(EmailMessage):
    """Records in which context and on which thread each message was rendered."""

    seen: list[tuple[str, str]] = []

    def message(self, **kwargs: Any) -> Any:
        self.seen.append((_request_id.get(), threading.current_thread().name))
        return super().message(**kwargs)


@pytest.mark.parametrize("run_async", [False, True])
def test_a_list_renders_on_the_bridge_in_the_callers_context(
    smtpd: SMTPServer, run_async: bool
) -> None:
    """Rendering a list overlaps the network on the bridge, yet sees the caller's context
    variables (Django keeps the active language and the like in them)."""
    _Recording.seen = []
    batch = [_Recording(to=[f"l{i}@example.com"], subject="s", from_email=SENDER) for i in range(3)]
    backend = make_backend(smtpd)

    def send() -> int:
        _request_id.set("request-7")
        if run_async:
            return asyncio.run(backend.asend_messages(batch))
        return backend.send_messages(batch)

    assert contextvars.copy_context().run(send) == 3
    assert [value for value, _ in _Recording.seen] == ["request-7"] * 3
    assert {thread for _, thread in _Recording.seen} == {"smtp-backends-bridge"}


# --------------------------------------------------------------------------- failures


def test_server_down(unused_port: int) -> None:
    backend = make_backend(host="127.0.0.1", port=unused_port)
    with pytest.raises(ConnectionError) as info:
        backend.send_messages([message()])
    assert isinstance(info.value, (SMTPConnectError, smtplib.SMTPException))
    with pytest.raises(ConnectionError):
        backend.open()
    assert backend.connection is None and backend._partial_connection is None
    quiet = make_backend(host="127.0.0.1", port=unused_port, fail_silently=True)
    assert quiet.send_messages([message()]) == 0
    assert quiet.open() is None
    assert quiet.connection is None
    with quiet:  # fails silently too
        pass
    quiet.close()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_timeout(make_scripted_server: Callable[..., Any]) -> None:
    """A server that never greets: TimeoutError (and smtplib.SMTPException) after timeout."""
    server = make_scripted_server([("sleep", 5)], strict=False)
    backend = make_backend(host=server.host, port=server.port, timeout=0.2)
    assert backend.timeout == 0.2
    with pytest.raises(TimeoutError) as info:
        backend.send_messages([message()])
    assert isinstance(info.value, (SMTPTimeoutError, smtplib.SMTPException))
    quiet = make_backend(host=server.host, port=server.port, timeout=0.2, fail_silently=True)
    assert quiet.send_messages([message()]) == 0


# --------------------------------------------------------------------------- TLS and AUTH


def test_starttls(smtpd_starttls: SMTPServer, ca_bundle_path: Path) -> None:
    backend = make_backend(
        smtpd_starttls,
        use_tls=True,
        username=USERNAME,
        password=PASSWORD,
        **tls_options(ca_bundle_path),
    )
    assert backend.send_messages([message(), message()]) == 2
    assert all(m.tls and m.auth_login == USERNAME for m in smtpd_starttls.messages)
    assert "STARTTLS" in smtpd_starttls.handler.commands


def test_implicit_tls(smtpd_tls: SMTPServer, client_tls_context: ssl.SSLContext) -> None:
    backend = make_backend(
        smtpd_tls,
        use_ssl=True,
        username=USERNAME,
        password=PASSWORD,
        tls_context=client_tls_context,
    )
    assert backend.send_messages([message()]) == 1
    assert smtpd_tls.messages[0].tls and smtpd_tls.messages[0].auth_login == USERNAME


@pytest.mark.parametrize("mode", ["use_tls", "use_ssl"])
def test_untrusted_certificate(
    mode: str, make_smtpd: Callable[..., SMTPServer], untrusted_server_tls_context: ssl.SSLContext
) -> None:
    """Certificates are verified (as smtplib with Django's default context); ssl errors."""
    server = make_smtpd(
        tls_mode="starttls" if mode == "use_tls" else "implicit",
        tls_context=untrusted_server_tls_context,
    )
    backend = make_backend(server, **{mode: True})
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        backend.send_messages([message()])
    assert isinstance(info.value, (SMTPCertificateError, smtplib.SMTPException))
    with pytest.raises(ssl.SSLError):
        backend.open()
    assert make_backend(server, fail_silently=True, **{mode: True}).send_messages([message()]) == 0
    # validate_certs=False is the explicit opt-out.
    assert (
        make_backend(server, validate_certs=False, **{mode: True}).send_messages([message()]) == 1
    )
    assert "MAIL" in server.handler.commands


def test_use_ssl_against_plaintext_server(smtpd: SMTPServer) -> None:
    backend = make_backend(smtpd, use_ssl=True, timeout=5)
    with pytest.raises(ssl.SSLError) as info:
        backend.open()
    assert isinstance(info.value, SMTPTLSError)
    assert backend.connection is None


def test_failed_starttls_leaves_no_connection(
    make_smtpd: Callable[..., SMTPServer], untrusted_server_tls_context: ssl.SSLContext
) -> None:
    """CVE-2026-7666's case: a failed STARTTLS under fail_silently leaves nothing to reuse.

    Neither the backend (open()) nor the pool (send_messages()) keeps the plaintext
    connection: nothing but EHLO/STARTTLS ever reaches the server, even on a retry.
    """
    server = make_smtpd(tls_mode="starttls", tls_context=untrusted_server_tls_context, auth=True)
    backend = make_backend(
        server, use_tls=True, username=USERNAME, password=PASSWORD, fail_silently=True
    )
    assert backend.open() is None
    assert backend.connection is None and backend._partial_connection is None
    assert backend.send_messages([message()]) == 0
    assert backend.send_messages([message()]) == 0
    with backend:
        assert backend.connection is None
    assert backend.send_messages([message()]) == 0
    assert set(server.handler.commands) <= {"EHLO", "STARTTLS"}
    assert server.handler.logins == [] and server.messages == []


def test_starttls_required_but_not_offered(smtpd: SMTPServer) -> None:
    backend = make_backend(smtpd, use_tls=True, username=USERNAME, password=PASSWORD)
    with pytest.raises(smtplib.SMTPNotSupportedError) as info:
        backend.open()
    assert isinstance(info.value, SMTPNotSupported)
    assert backend.connection is None
    assert smtpd.handler.commands == ["EHLO"]  # no AUTH, no MAIL in plaintext


def test_auth(smtpd_auth: SMTPServer) -> None:
    assert (
        make_backend(smtpd_auth, username=USERNAME, password=PASSWORD).send_messages([message()])
        == 1
    )
    assert smtpd_auth.messages[0].auth_login == USERNAME
    # No username or no password: no AUTH, as in Django.
    assert make_backend(smtpd_auth, username=USERNAME, password="").send_messages([message()]) == 1
    assert smtpd_auth.messages[1].auth_login is None
    bad = make_backend(smtpd_auth, username=USERNAME, password="wrong")
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        bad.open()
    assert isinstance(info.value, SMTPAuthenticationError) and info.value.smtp_code == 535
    with pytest.raises(SMTPAuthenticationError):
        bad.send_messages([message()])
    bad.fail_silently = True
    assert bad.send_messages([message()]) == 0


def test_auth_not_offered(smtpd: SMTPServer) -> None:
    backend = make_backend(smtpd, username=USERNAME, password=PASSWORD)
    with pytest.raises(smtplib.SMTPException), backend:
        pass
    assert backend.connection is None


def test_client_certificate_from_ssl_certfile(
    make_smtpd: Callable[..., SMTPServer],
    client_cert_server_tls_context: ssl.SSLContext,
    client_cert_paths: Any,
    ca_bundle_path: Path,
) -> None:
    server = make_smtpd(tls_mode="implicit", tls_context=client_cert_server_tls_context)
    backend = make_backend(
        server,
        use_ssl=True,
        ssl_certfile=str(client_cert_paths.cert),
        ssl_keyfile=str(client_cert_paths.key),
        **tls_options(ca_bundle_path),
    )
    assert backend.send_messages([message()]) == 1
    assert server.messages[0].peercert is not None


# --------------------------------------------------------------------------- open / close


def test_open_close_own_connection(smtpd: SMTPServer) -> None:
    """open() keeps a connection of its own until close(), as the stock backend."""
    backend = make_backend(smtpd, timeout=10)
    assert backend.connection is None
    assert backend.open() is True
    assert isinstance(backend.connection, SMTP)
    assert backend.connection.timeout == 10
    assert backend._partial_connection is None
    assert backend.open() is False
    assert backend.send_messages([message()]) == 1
    assert backend.send_messages([message(), message()]) == 2
    backend.close()
    assert backend.connection is None
    assert smtpd.handler.connections == 1
    assert smtpd.handler.commands[-1] == "QUIT"
    backend.close()  # closing twice (or never opened) is fine


def test_context_manager(smtpd: SMTPServer) -> None:
    with make_backend(smtpd) as backend:
        connection = backend.connection
        assert isinstance(connection, SMTP) and connection.is_connected
        assert backend.send_messages([message()]) == 1
    assert backend.connection is None and not connection.is_connected


def test_server_went_away_from_an_open_connection(make_smtpd: Callable[..., SMTPServer]) -> None:
    server = make_smtpd()
    backend = make_backend(server)
    backend.open()
    server.stop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        backend.send_messages([message()])
    with pytest.raises(smtplib.SMTPServerDisconnected):
        backend.send_messages([message(), message()])
    backend.fail_silently = True
    assert backend.send_messages([message(), message()]) == 0
    backend.close()  # no error, as Django's test_server_stopped
    assert backend.connection is None


def quit_script(reply: bytes) -> list[tuple[Any, ...]]:
    """A server that greets, then answers QUIT with ``reply``."""
    return [("send", b"220 scripted ESMTP\r\n"), ("expect", b"QUIT"), ("send", reply), ("close",)]


def test_quit_refused_or_garbled(make_scripted_server: Callable[..., Any]) -> None:
    """As the stock backend (smtplib ignores QUIT's reply code): a refusal is no error;
    a reply that breaks the protocol is, unless fail_silently."""
    refused = make_scripted_server(quit_script(b"554 not now\r\n"))
    backend = make_backend(host=refused.host, port=refused.port)
    backend.open()
    backend.close()
    assert backend.connection is None
    garbled = make_scripted_server(quit_script(b"what?\r\n"))
    backend = make_backend(host=garbled.host, port=garbled.port)
    backend.open()
    with pytest.raises(smtplib.SMTPResponseException) as info:
        backend.close()
    assert info.value.smtp_code == -1
    assert backend.connection is None
    quiet = make_backend(host=garbled.host, port=garbled.port, fail_silently=True)
    quiet.open()
    quiet.close()
    assert quiet.connection is None


async def test_quit_garbled_async(make_scripted_server: Callable[..., Any]) -> None:
    server = make_scripted_server(quit_script(b"what?\r\n"))
    backend = make_backend(host=server.host, port=server.port)
    assert await backend.aopen() is True
    with pytest.raises(smtplib.SMTPResponseException):
        await backend.aclose()
    assert backend.connection is None


def test_bridge_failure_is_a_sending_error(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge going away mid-call is an SMTPException like any connection loss."""
    from smtp_backends import SMTPPoolClosedError

    def broken(function: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(function, "__func__", None) is Mailer.deliver:
            raise SMTPPoolClosedError("The mail bridge shut down before the call finished")
        return bridge.run_sync(function, *args, **kwargs)

    monkeypatch.setattr(mailer_module, "run_sync", broken)
    with pytest.raises(SMTPPoolClosedError):
        make_backend(smtpd).send_messages([message()])
    assert make_backend(smtpd, fail_silently=True).send_messages([message(), message()]) == 0


def test_ehlo_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """EHLO uses Django's cached FQDN, as the stock backend, when it is a valid name."""

    class Name:
        def __init__(self, name: str) -> None:
            self.name = name

        def get_fqdn(self) -> str:
            return self.name

    monkeypatch.setattr(django_config, "DNS_NAME", Name("mail.example.org"))
    assert make_backend(host="h").connection_config().local_hostname == "mail.example.org"
    monkeypatch.setattr(django_config, "DNS_NAME", Name("bad name\r\n"))
    assert make_backend(host="h").connection_config().local_hostname is None  # core default
    assert make_backend(host="h", local_hostname="me.example").local_hostname == "me.example"


def test_prep_address() -> None:
    backend = make_backend(host="h")
    assert backend.prep_address("Name <a@example.com>") == "a@example.com"
    assert backend.prep_address("a@öäü.com") == "a@xn--4ca9at.com"
    if DJANGO_6:
        assert backend.prep_address("åh@åh.example.dk", force_ascii=False) == "åh@åh.example.dk"
    else:
        with pytest.raises(TypeError, match=r"needs Django 6\.0"):
            backend.prep_address("åh@example.dk", force_ascii=False)
    assert addr_spec("<>") == "<>"  # what smtplib.quoteaddr keeps as it is


_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9-]{1,63}"


def django_envelope_address(address: str) -> str:
    """What Django's own code makes of an address (the stock backend's path)."""
    if DJANGO_6:
        options = {"alias": "stock"} if HAS_MAILERS else {}
        return str(StockEmailBackend(host="h", **options).prep_address(address))
    return addr_spec(sanitize_address(address, "utf-8"))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.from_regex(rf"\A{_DOT_ATOM}@{_LABEL}(\.{_LABEL})*\Z"),
        st.text(alphabet=st.sampled_from("aZ9.-@_'\" <>()[],;:\\"), max_size=30),
    )
)
def test_plain_address_fast_path_agrees_with_django(address: str) -> None:
    # The fast path may only take what Django's parser returns unchanged.
    try:
        expected = django_envelope_address(address)
    except Exception as exc:  # whatever Django's parser raises, ours raises too
        assert not django_envelope._plain_address(address), (address, exc)
        with pytest.raises(type(exc)):
            make_backend(host="h").prep_address(address)
        return
    if django_envelope._plain_address(address):
        assert expected == address
        if not DJANGO_6:  # the 5.2 path (6.x deprecates sanitize_address)
            assert django_envelope._sanitized_addr_spec(address, "utf-8") == address
    assert make_backend(host="h").prep_address(address) == expected


def test_plain_address_fast_path_leaves_other_kinds_to_django() -> None:
    for address in ["Name <a@example.com>", "a@b..c", "a@" + "x" * 64 + ".com", "a@b.com "]:
        assert not django_envelope._plain_address(address)
    if not DJANGO_6:
        assert (
            django_envelope._sanitized_addr_spec("Zoë <z@example.com>", "utf-8") == "z@example.com"
        )


def test_pool_reused_across_instances(smtpd: SMTPServer) -> None:
    """Each send_messages() borrows the process's pool: one handshake for many sends."""
    for _ in range(10):
        backend = make_backend(smtpd)
        assert backend.send_messages([message()]) == 1
        assert backend.connection is None
    assert smtpd.handler.connections == 1
    assert smtpd.handler.commands.count("EHLO") == 1
    bridge.shutdown()  # the process's pools QUIT
    assert smtpd.handler.commands[-1] == "QUIT"


def test_pool_size_zero_is_a_connection_per_call(smtpd: SMTPServer) -> None:
    for _ in range(3):
        assert make_backend(smtpd, pool_size=0).send_messages([message()]) == 1
    assert smtpd.handler.connections == 3
    assert smtpd.handler.commands.count("QUIT") == 3


def test_different_settings_different_pools(smtpd: SMTPServer, smtpd_auth: SMTPServer) -> None:
    make_backend(smtpd).send_messages([message()])
    make_backend(smtpd_auth, username=USERNAME, password=PASSWORD).send_messages([message()])
    make_backend(smtpd_auth).send_messages([message()])
    assert smtpd.handler.connections == 1
    assert smtpd_auth.handler.connections == 2
    assert [m.auth_login for m in smtpd_auth.messages] == [USERNAME, None]


def test_send_messages_goes_through_open(smtpd: SMTPServer) -> None:
    """send_messages() calls self.open(), so subclasses and mocks see it (as in Django)."""

    class Counting(AsyncSMTPBackend):
        opened = 0

        def open(self) -> bool | None:
            Counting.opened += 1
            return super().open()

    backend = Counting(host=smtpd.host, port=smtpd.port, **({"alias": "x"} if HAS_MAILERS else {}))
    assert backend.send_messages([message()]) == 1
    assert Counting.opened == 1
    backend.open = lambda: None  # type: ignore[method-assign]  # open() failed silently
    backend.connection = object()
    assert backend.send_messages([message()]) == 0
    backend.connection = None


def test_connection_not_used_in_forked_child(
    smtpd: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After fork() the child drops (never uses) the parent's connection."""
    backend = make_backend(smtpd)
    backend.open()
    parent_connection = backend.connection
    monkeypatch.setattr(backend, "_pid", -1)  # as if this process were a forked child
    assert backend.open() is True
    assert backend.connection is not parent_connection
    assert parent_connection in mailer_module._inherited[-1]
    backend.close()
    mailer_module._inherited.clear()
    bridge.run_sync(parent_connection.quit)
    assert smtpd.handler.connections == 2


# --------------------------------------------------------------------------- async


async def test_async_backend(smtpd: SMTPServer) -> None:
    backend = make_backend(smtpd, pool_size=1)
    assert await backend.asend_messages([]) == 0
    assert await backend.asend_messages([message(), message()]) == 2
    async with make_backend(smtpd) as session:
        assert isinstance(session.connection, SMTP)
        assert await session.aopen() is False
        assert await session.asend_messages([message()]) == 1
        assert session.send_messages([message()]) == 1  # same connection, sync or async
    assert session.connection is None
    many = [message(f"u{i}@example.com") for i in range(15)]  # serialised in a thread
    assert await backend.asend_messages(many) == 15
    assert len(smtpd.messages) == 19
    assert smtpd.handler.connections == 2  # the pool's, and the session's own


async def test_async_errors_and_fail_silently(smtpd: SMTPServer, unused_port: int) -> None:
    with pytest.raises(SMTPRecipientsRefused):
        await make_backend(smtpd).asend_messages([message("refuse@example.com")])
    down = make_backend(host="127.0.0.1", port=unused_port)
    with pytest.raises(ConnectionError):
        await down.asend_messages([message()])
    with pytest.raises(ConnectionError):
        async with down:
            pass
    quiet = make_backend(host="127.0.0.1", port=unused_port, fail_silently=True)
    assert await quiet.asend_messages([message()]) == 0
    assert await quiet.aopen() is None
    unpooled = make_backend(host="127.0.0.1", port=unused_port, fail_silently=True, pool_size=0)
    assert await unpooled.asend_messages([message()]) == 0
    with pytest.raises(ValueError, match="Invalid address"):
        await make_backend(smtpd).asend_messages([EmailMessage(bcc=["@"])])


async def test_module_functions(
    smtpd: SMTPServer, use_smtp: Callable[..., None], settings: Any
) -> None:
    use_smtp(smtpd, pool_size=1)
    settings.ADMINS = admins("admin@example.com")
    settings.MANAGERS = admins("manager@example.com")
    assert await asend_mail("Hi", "Body", SENDER, ["to@example.com"], html_message="<p>Hi</p>") == 1
    datatuple = [("S1", "B1", SENDER, ["a@example.com"]), ("S2", "B2", SENDER, ["b@example.com"])]
    assert await asend_mass_mail(datatuple) == 2
    await amail_admins("Admins", "Body")
    await amail_managers("Managers", "Body")
    assert [m.rcpt_tos for m in smtpd.messages] == [
        ["to@example.com"],
        ["a@example.com"],
        ["b@example.com"],
        ["admin@example.com"],
        ["manager@example.com"],
    ]
    assert smtpd.messages[3].message["Subject"] == "[Django] Admins"
    assert smtpd.messages[0].message.get_content_type() == "multipart/alternative"
    assert smtpd.handler.connections == 1
    with pytest.raises(SMTPRecipientsRefused):
        await asend_mail("S", "B", SENDER, ["refuse@example.com"])
    # Another mailer: using= on Django 6.1, connection= before.
    quiet = make_backend(smtpd, fail_silently=True)
    if HAS_MAILERS:
        options = {"host": smtpd.host, "port": smtpd.port, "fail_silently": True}
        settings.MAILERS = {**settings.MAILERS, "quiet": {"BACKEND": BACKEND, "OPTIONS": options}}
        chosen: dict[str, Any] = {"using": "quiet"}
    else:
        chosen = {"connection": quiet}
    assert await asend_mail("S", "B", SENDER, ["refuse@example.com"], **chosen) == 0
    assert await asend_mass_mail([("S", "B", SENDER, ["c@example.com"])], **chosen) == 1
    assert smtpd.messages[-1].rcpt_tos == ["c@example.com"]


async def test_module_functions_with_other_backends(settings: Any, mailoutbox: list[Any]) -> None:
    """With Django's locmem backend (pytest-django's default) they still work."""
    if HAS_MAILERS:
        settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    settings.ADMINS = admins("admin@example.com")
    assert await asend_mail("Hi", "Body", SENDER, ["to@example.com"]) == 1
    await amail_admins("Admins", "Body")
    assert [m.to for m in mailoutbox] == [["to@example.com"], ["admin@example.com"]]


async def test_module_functions_check_settings_as_django(settings: Any) -> None:
    settings.ADMINS = "admin@example.com"  # not a list
    with pytest.raises((ValueError, ImproperlyConfigured)):
        await amail_admins("s", "m")
    settings.ADMINS = []
    await amail_admins("s", "m")  # nobody to mail: nothing happens


def test_exceptions_are_smtplib_and_core_classes() -> None:
    """What existing code catches keeps catching what the backend raises."""
    assert issubclass(SMTPException, smtplib.SMTPException)
    assert issubclass(SMTPRecipientsRefused, smtplib.SMTPRecipientsRefused)
    assert issubclass(SMTPTLSError, ssl.SSLError)
    assert issubclass(SMTPCertificateError, ssl.SSLCertVerificationError)
    assert issubclass(SMTPConnectError, OSError)
    assert adapter.__all__ == (
        "AsyncSMTPBackend",
        "CeleryBackend",
        "amail_admins",
        "amail_managers",
        "asend_mail",
        "asend_mass_mail",
        "register_celery",
    )
    assert smtp_backends.django is adapter


def test_setting_errors_name_the_users_setting() -> None:
    """Errors name EMAIL_* under EMAIL_BACKEND, OPTIONS[...] under MAILERS; "False" is no flag."""
    error = ImproperlyConfigured if HAS_MAILERS else TypeError
    port = r"OPTIONS\['port'\]" if HAS_MAILERS else "EMAIL_PORT"
    with pytest.raises(error, match=rf"{port} must be an int, not 'abc'"):
        make_backend(host="h", port="abc")
    use_tls = r"OPTIONS\['use_tls'\]" if HAS_MAILERS else "EMAIL_USE_TLS"
    with pytest.raises(error, match=rf"{use_tls} must be True or False, not 'False'"):
        make_backend(host="h", use_tls="False")
    with pytest.raises(error, match=r"OPTIONS\['tls_context'\]|tls_context must be an ssl"):
        make_backend(host="h", tls_context="ctx")
