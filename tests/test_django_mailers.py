"""Django parity beyond the stock suite: MAILERS, ``using``, ssl_context, settings errors.

* Under Django 6.1's MAILERS no EMAIL_* setting is read once an alias is set (checked with
  conflicting EMAIL_* values), ``fail_silently`` is the backend's own option,
  ``sendtestemail --using`` works, and the Celery backend wraps the mailer ``using`` names.
* ``ssl_context``: built from the settings as Django's, overridable in a subclass, used for
  implicit TLS and STARTTLS.
* Every setting and OPTIONS key is checked, and its error names it; "False" is no flag.
* International addresses (``smtputf8``) and header names with a line break.

Real aiosmtpd servers on loopback, real TLS (trustme).
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.test.utils import override_settings

from smtp_backends import SMTPCertificateError
from smtp_backends.django import AsyncSMTPBackend, CeleryBackend
from smtp_backends.django import backend as backend_module
from smtp_backends.django.config import RemovedInDjango2028Warning
from smtp_backends.django.envelope import HeaderError
from tests.django_project.testing import BACKEND, DJANGO_6, HAS_MAILERS, make_backend, no_bridge
from tests.servers import SMTPServer

__all__ = ("no_bridge",)

pytestmark = pytest.mark.usefixtures("no_bridge")
needs_mailers = pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS: Django 6.1+")
CONFIG_ERROR = ImproperlyConfigured if HAS_MAILERS else (TypeError, ValueError)


def message(to: str = "to@example.com", **kwargs: Any) -> EmailMessage:
    return EmailMessage("Subject", "Body", "from@example.com", [to], **kwargs)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------- MAILERS

CONFLICTING_EMAIL_SETTINGS = {
    "EMAIL_HOST": "wrong.invalid",
    "EMAIL_PORT": 1,
    "EMAIL_HOST_USER": "wrong-user",
    "EMAIL_HOST_PASSWORD": "wrong-password",
    "EMAIL_USE_TLS": True,
    "EMAIL_USE_SSL": False,
    "EMAIL_TIMEOUT": 0.001,
    "EMAIL_SSL_CERTFILE": "/nonexistent/cert.pem",
    "EMAIL_SSL_KEYFILE": "/nonexistent/key.pem",
    "SMTP_BACKENDS_OPTIONS": {"pool_size": "not even valid"},
    "SMTP_BACKENDS_CELERY": "not even a dict",
    "SMTP_BACKENDS_TASKS": "not even a dict",
}


@needs_mailers
def test_an_alias_never_reads_email_settings(smtpd: SMTPServer) -> None:
    """Conflicting EMAIL_* values (and our own settings) change nothing under MAILERS."""
    override = override_settings(
        **CONFLICTING_EMAIL_SETTINGS,
        MAILERS={
            "default": {"BACKEND": BACKEND, "OPTIONS": {"host": smtpd.host, "port": smtpd.port}},
            "bare": {"BACKEND": BACKEND, "OPTIONS": {"host": "h"}},
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RemovedInDjango2028Warning)  # Django's, about EMAIL_*
        override.enable()
    try:
        _send_with_conflicting_settings(smtpd)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RemovedInDjango2028Warning)
            override.disable()


def _send_with_conflicting_settings(smtpd: SMTPServer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing of ours reads them, even to warn
        assert mail.send_mail("S", "B", "from@example.com", ["to@example.com"]) == 1
        bare = mail.mailers["bare"]
    [received] = smtpd.messages
    assert (received.rcpt_tos, received.tls, received.auth_login) == (
        ["to@example.com"],
        False,
        None,
    )
    assert (bare.host, bare.port, bare.username, bare.password) == ("h", 25, None, None)
    assert (bare.use_tls, bare.use_ssl, bare.timeout) == (False, False, None)
    assert (bare.ssl_certfile, bare.ssl_keyfile, bare.pool_size) == (None, None, 4)
    config = bare.connection_config()
    assert (config.hostname, config.port, config.timeout, config.client_cert) == (
        "h",
        25,
        60.0,
        None,
    )


@needs_mailers
def test_fail_silently_is_the_backends_own_option(settings: Any, unused_port: int) -> None:
    settings.MAILERS = {
        "default": {
            "BACKEND": BACKEND,
            "OPTIONS": {"host": "127.0.0.1", "port": unused_port, "fail_silently": True},
        },
        "loud": {"BACKEND": BACKEND, "OPTIONS": {"host": "127.0.0.1", "port": unused_port}},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django 6.1 deprecates it in BaseEmailBackend: not ours
        backend = mail.mailers["default"]
        assert backend.fail_silently is True
        assert backend.send_messages([message()]) == 0
        assert mail.send_mail("S", "B", "from@example.com", ["to@example.com"]) == 0
        assert mail.mailers["loud"].fail_silently is False
    with pytest.raises(OSError):
        mail.mailers["loud"].send_messages([message()])
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['fail_silently'\]|fail_silently"):
        AsyncSMTPBackend(alias="x", host="h", fail_silently="yes")


@needs_mailers
def test_sendtestemail_using(settings: Any, smtpd: SMTPServer, make_smtpd: Any) -> None:
    other = make_smtpd()
    settings.ADMINS = ["admin@example.com"]
    settings.MAILERS = {
        "default": {"BACKEND": BACKEND, "OPTIONS": {"host": smtpd.host, "port": smtpd.port}},
        "ops": {"BACKEND": BACKEND, "OPTIONS": {"host": other.host, "port": other.port}},
    }
    call_command("sendtestemail", "ops@example.com", using="ops")
    call_command("sendtestemail", "--admins", "--using", "ops")
    call_command("sendtestemail", "dev@example.com")
    assert [m.rcpt_tos for m in other.messages] == [["ops@example.com"], ["admin@example.com"]]
    assert [m.rcpt_tos for m in smtpd.messages] == [["dev@example.com"]]


celery = pytest.importorskip("celery")
EAGER = celery.Celery("mailers_tests", broker="memory://", set_as_current=False)
EAGER.conf.update(task_always_eager=True, task_eager_propagates=True, task_default_queue="mail")


@needs_mailers
def test_celery_backend_wraps_the_mailer_using_names(settings: Any, smtpd: SMTPServer) -> None:
    from django.core.mail import InvalidMailer

    task = f"tests.mailers.{os.urandom(4).hex()}"
    settings.SMTP_BACKENDS_CELERY = {"dedupe": False}  # the workers' side (register_celery)
    celery_options = {"app": f"{__name__}.EAGER", "task": task, "using": "smtp"}
    settings.MAILERS = {
        "default": {"BACKEND": "smtp_backends.django.CeleryBackend", "OPTIONS": celery_options},
        "smtp": {"BACKEND": BACKEND, "OPTIONS": {"host": smtpd.host, "port": smtpd.port}},
        "self": {
            "BACKEND": "smtp_backends.django.CeleryBackend",
            "OPTIONS": {"app": "x", "using": "self"},
        },
        "missing": {
            "BACKEND": "smtp_backends.django.CeleryBackend",
            "OPTIONS": {"app": "x", "using": "no"},
        },
        "console": {"BACKEND": "django.core.mail.backends.console.EmailBackend"},
        "not_smtp": {
            "BACKEND": "smtp_backends.django.CeleryBackend",
            "OPTIONS": {"app": "x", "using": "console"},
        },
        "batch": {
            "BACKEND": "smtp_backends.django.CeleryBackend",
            "OPTIONS": {"app": "x", "using": "smtp", "batch_size": "10"},
        },
        "flag": {
            "BACKEND": "smtp_backends.django.CeleryBackend",
            "OPTIONS": {"app": "x", "using": "smtp", "smtputf8": "yes"},
        },
    }
    backend = mail.mailers["default"]
    assert isinstance(backend, CeleryBackend) and (backend.using, backend.profile) == (
        "smtp",
        "smtp",
    )
    assert mail.send_mail("Queued", "Body", "from@example.com", ["to@example.com"]) == 1
    assert [m.rcpt_tos for m in smtpd.messages] == [["to@example.com"]]
    problems = {
        "self": "another mailer",
        "missing": "not in MAILERS",
        "not_smtp": "is not smtp_backends.django.AsyncSMTPBackend",
        "batch": r"OPTIONS\['batch_size'\] must be an int >= 1, not '10'",
        "flag": r"OPTIONS\['smtputf8'\] must be True or False, not 'yes'",
    }
    for alias, problem in problems.items():
        with pytest.raises(InvalidMailer, match=problem):
            mail.mailers[alias]


def test_celery_setting_errors_name_the_setting(settings: Any) -> None:
    # The test project defines no MAILERS: the EMAIL_BACKEND configuration.
    settings.SMTP_BACKENDS_CELERY = {"app": "x", "batch_size": "10"}
    with pytest.raises(ImproperlyConfigured, match=r"SMTP_BACKENDS_CELERY\['batch_size'\]"):
        CeleryBackend()
    settings.SMTP_BACKENDS_CELERY = {"app": "x", "smtp": ["host"]}
    with pytest.raises(
        ImproperlyConfigured, match=r"SMTP_BACKENDS_CELERY\['smtp'\] must be a dict"
    ):
        CeleryBackend()
    settings.SMTP_BACKENDS_CELERY = {"app": "x", "task": 5}
    with pytest.raises(ImproperlyConfigured, match=r"SMTP_BACKENDS_CELERY\['task'\] must be a str"):
        CeleryBackend()
    settings.SMTP_BACKENDS_CELERY = {"app": "x"}
    with pytest.raises(ImproperlyConfigured, match="queue must be a str, not 5"):
        CeleryBackend(queue=5)  # type: ignore[arg-type]
    with pytest.raises(ImproperlyConfigured, match="MAILERS"):
        CeleryBackend(using="smtp")


# --------------------------------------------------------------------------- settings errors

#: Every option of AsyncSMTPBackend with a value of the wrong type, and the words of its error.
BAD_OPTIONS: dict[str, tuple[Any, str]] = {
    "host": (5, "must be a host name, not 5"),
    "port": ("abc", "must be an int, not 'abc'"),
    "username": (5, "must be a str, not 5"),
    "password": (5, "must be a str, not int"),  # a secret's value is never shown
    "use_tls": ("False", "must be True or False, not 'False'"),
    "use_ssl": ("True", "must be True or False, not 'True'"),
    "timeout": ("5", "must be a number of seconds, not '5'"),
    "ssl_certfile": (5, "must be a file path, not 5"),
    "ssl_keyfile": (5, "must be a file path, not 5"),
    "pool_size": ("4", "must be an int, not '4'"),
    "idle_timeout": ("60", "must be a number of seconds, not '60'"),
    "validate_certs": ("no", "must be True or False, not 'no'"),
    "cert_bundle": (5, "must be a file path, not 5"),
    "tls_context": ("ctx", "must be an ssl.SSLContext, not 'ctx'"),
    "allow_insecure_auth": ("yes", "must be True or False, not 'yes'"),
    "pipelining": ("off", "must be True or False, not 'off'"),
    "local_hostname": (5, "must be a str, not 5"),
    "keep_order": (1, "must be True or False, not 1"),
    "smtputf8": ("true", "must be True or False, not 'true'"),
}
_LEGACY = {
    "host": "EMAIL_HOST",
    "port": "EMAIL_PORT",
    "username": "EMAIL_HOST_USER",
    "password": "EMAIL_HOST_PASSWORD",
    "use_tls": "EMAIL_USE_TLS",
    "use_ssl": "EMAIL_USE_SSL",
    "timeout": "EMAIL_TIMEOUT",
    "ssl_certfile": "EMAIL_SSL_CERTFILE",
    "ssl_keyfile": "EMAIL_SSL_KEYFILE",
}


@pytest.mark.parametrize("option", list(BAD_OPTIONS))
def test_every_option_error_names_the_setting(option: str, settings: Any) -> None:
    value, words = BAD_OPTIONS[option]
    if HAS_MAILERS:
        settings.MAILERS = {"bad": {"BACKEND": BACKEND, "OPTIONS": {"host": "h", option: value}}}
        with pytest.raises(ImproperlyConfigured, match=rf"OPTIONS\['{option}'\] {words}"):
            mail.mailers["bad"]
        return
    if option in _LEGACY:  # EMAIL_BACKEND: the EMAIL_* setting is named
        setattr(settings, _LEGACY[option], value)
        with pytest.raises((TypeError, ValueError), match=f"{_LEGACY[option]} {words}"):
            AsyncSMTPBackend()
    else:  # our options: as a keyword, or in SMTP_BACKENDS_OPTIONS
        with pytest.raises((TypeError, ValueError), match=f"{option} {words}"):
            AsyncSMTPBackend(host="h", **{option: value})
        settings.SMTP_BACKENDS_OPTIONS = {option: value}
        with pytest.raises((TypeError, ValueError), match=f"{option} {words}"):
            AsyncSMTPBackend(host="h")


# --------------------------------------------------------------------------- ssl_context


class TrustingBackend(AsyncSMTPBackend):
    """A subclass with its own ssl_context, as users write for Django's stock backend."""

    ca_file = ""
    built = 0

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        type(self).built += 1
        context = super().ssl_context
        context.load_verify_locations(cafile=self.ca_file)
        return context


def test_ssl_context_is_built_from_the_settings(tmp_path: Path, tls_ca: Any) -> None:
    backend = make_backend(host="h")
    context = backend.ssl_context
    assert backend.ssl_context is context  # cached, as Django's
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert make_backend(host="h", validate_certs=False).ssl_context.verify_mode == ssl.CERT_NONE
    own = ssl.create_default_context()
    assert make_backend(host="h", tls_context=own).ssl_context is own
    leaf = tls_ca.issue_cert("client.example")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    loaded = make_backend(host="h", ssl_certfile=str(cert), ssl_keyfile=str(key)).ssl_context
    assert isinstance(loaded, ssl.SSLContext)
    with pytest.raises(OSError):
        assert make_backend(host="h", ssl_certfile=str(tmp_path / "missing.pem")).ssl_context


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_a_subclass_ssl_context_is_used_for_both_tls_modes(
    mode: str, make_smtpd: Any, ca_bundle_path: Path
) -> None:
    server = make_smtpd(tls_mode=mode)
    tls = {"use_tls": True} if mode == "starttls" else {"use_ssl": True}
    # Without it the test CA is not trusted: the certificate is refused.
    with pytest.raises(SMTPCertificateError):
        make_backend(server, **tls).send_messages([message()])
    before = server.handler.connections
    TrustingBackend.ca_file, TrustingBackend.built = str(ca_bundle_path), 0
    options = {"host": server.host, "port": server.port, **tls}
    if HAS_MAILERS:
        options["alias"] = "trusting"
    for _ in range(3):  # new instances, as mailers[alias] makes: one pool, one context
        assert TrustingBackend(**options).send_messages([message()]) == 1
    assert [m.tls for m in server.messages] == [True] * 3
    assert server.handler.connections == before + 1  # one pooled connection
    assert TrustingBackend.built == 1
    with TrustingBackend(**options) as own:  # open(): a connection of its own, same context
        assert own.send_messages([message()]) == 1
    assert len(server.messages) == 4


def test_a_subclass_ssl_context_must_be_a_context() -> None:
    class Broken(AsyncSMTPBackend):
        @property
        def ssl_context(self) -> Any:  # type: ignore[override]
            return "not a context"

    options = {"alias": "broken"} if HAS_MAILERS else {}
    with pytest.raises((TypeError, ImproperlyConfigured), match=r"must be an ssl\.SSLContext"):
        Broken(host="h", **options)
    assert backend_module._SSL_CONTEXT is AsyncSMTPBackend.__dict__["ssl_context"]


# --------------------------------------------------------------------------- addresses, headers


@pytest.mark.skipif(not DJANGO_6, reason="Django 5.2 encodes a non-ASCII local part itself")
def test_smtputf8_option_sends_non_ascii_local_parts(make_smtpd: Any) -> None:
    with_utf8, without = make_smtpd(smtputf8=True), make_smtpd(smtputf8=False)
    email = EmailMessage("Hej", "Body", "Zoë <zoë@example.org>", ["Nø <nø@bücher.example>"])
    assert make_backend(with_utf8, smtputf8=True).send_messages([email]) == 1
    [received] = with_utf8.messages
    assert (received.mail_from, received.rcpt_tos) == ("zoë@example.org", ["nø@bücher.example"])
    assert "SMTPUTF8" in received.mail_options
    assert "nø@bücher.example>" in received.original_content.decode()  # UTF-8 header
    # A server without SMTPUTF8: Django's own error for the address, nothing sent.
    plain = EmailMessage("Hej", "Body", "from@example.org", ["nø@example.dk"])
    for fail_silently in (False, True):
        backend = make_backend(without, smtputf8=True, fail_silently=fail_silently)
        with pytest.raises(
            ValueError, match=r"Invalid address 'nø@example\.dk': local-part contains non-ASCII"
        ):
            backend.send_messages([plain])
    assert without.messages == []
    # Without the option: refused before anything is sent, as Django's stock backend.
    with pytest.raises(ValueError, match="local-part contains non-ASCII"):
        make_backend(with_utf8).send_messages([plain])
    assert len(with_utf8.messages) == 1
    # An IDN domain with an ASCII local part goes as A-labels, as Django sends it.
    assert make_backend(without, smtputf8=True).send_messages([message("a@öäü.com")]) == 1
    assert without.messages[0].rcpt_tos == ["a@xn--4ca9at.com"]


def test_a_line_break_in_a_header_raises_what_django_raises(smtpd: SMTPServer) -> None:
    """ValueError on Django 6.x, BadHeaderError (a ValueError) on 5.2; nothing is sent."""
    expected = ValueError if DJANGO_6 else mail.BadHeaderError
    assert HeaderError is expected
    backend = make_backend(smtpd)
    for headers in ({"X-Evil\r\nBcc": "victim@example.com"}, {"X-A\nB": "v"}, {"X:Y": "v"}):
        with pytest.raises(expected, match="Header names may not contain"):
            backend.send_messages([message(headers=headers)])
    with pytest.raises(expected):  # a value: Django's own check
        backend.send_messages([message(headers={"X-A": "a\r\nBcc: victim@example.com"})])
    with pytest.raises(expected):
        backend.send_messages([EmailMessage("a\nb", "Body", "from@example.com", ["to@x.org"])])
    assert smtpd.messages == []
    assert backend.send_messages([message(headers={"X-Fine": "v"})]) == 1


def test_an_address_that_is_not_one_mailbox_is_refused(smtpd: SMTPServer) -> None:
    for address in ("not an address", "a@x.org b@x.org", "a@x.org, b@x.org"):
        with pytest.raises(ValueError):
            make_backend(smtpd).send_messages([message(address)])
    assert smtpd.messages == []


# --------------------------------------------------------------------------- one set of rules

from hypothesis import given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from smtp_backends.addresses import addr_spec  # noqa: E402


@pytest.mark.skipif(not DJANGO_6, reason="Django 6's prep_address(): Django 6.0+")
@hypothesis_settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=st.sampled_from("aZ9.-@_'\" <>()[],;:\\ø"), max_size=30),
        st.from_regex(r"\A[a-zø.]{1,8}@[a-zü.-]{1,12}\Z"),
    )
)
def test_the_shared_parser_has_django_6s_rules(address: str) -> None:
    """smtp_backends.addresses (Flask, Django 5.2) accepts what Django 6 accepts, the same way."""
    options = {"alias": "stock"} if HAS_MAILERS else {}
    from django.core.mail.backends.smtp import EmailBackend as StockEmailBackend

    stock = StockEmailBackend(host="h", **options)
    try:
        expected = stock.prep_address(address, force_ascii=False)
    except ValueError:
        if address.strip() != "<>":  # the null reverse-path, which only a sender may be
            with pytest.raises(ValueError):
                addr_spec(address)
        return
    assert addr_spec(address) == expected
