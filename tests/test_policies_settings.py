"""The policy options of the shared settings: checked once, named as the user wrote them.

Each invalid value is tried through every adapter (the sending layer's own names, the
ASGI keywords and environment variables, Flask's MAIL_* keys, Django's OPTIONS /
SMTP_BACKENDS_OPTIONS, Celery's pool keywords); the error must name the user's setting.
Then: equal settings share one Mailer and one set of live objects, every policy off
builds nothing, secrets stay out of reprs.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("celery")

from celery import Celery
from django.core.exceptions import ImproperlyConfigured
from flask import Flask

from smtp_backends import SMTPPool
from smtp_backends.asgi import Mail as AsgiMail
from smtp_backends.celery import SMTPQueue
from smtp_backends.dkim import DKIMSigner
from smtp_backends.failover import Failover
from smtp_backends.flask import Mail as FlaskMail
from smtp_backends.mailer import Mailer, get_mailer, live_connection
from smtp_backends.oauth import CallableTokenProvider, GoogleTokenProvider
from smtp_backends.policies import PolicySpec, check_policy
from smtp_backends.protocol.dsn import DSN
from smtp_backends.proxy import SMTPProxy
from smtp_backends.ratelimit import RateLimiter, RedisRateLimiter
from smtp_backends.settings import MailerSettings
from tests import policy_kit
from tests.django_project.testing import HAS_MAILERS, make_backend

# (option, invalid value, the error's words besides the setting's name)
INVALID: list[tuple[str, Any, str]] = [
    ("dkim", {"domain": "example.com", "selector": "s1"}, "needs one of 'key_file'"),
    ("dkim", {"domain": "example.com", "selector": "s1", "key_file": "/no/such.pem"}, "No such"),
    ("dkim", {"keys": [{"domain": "example.com", "selector": "s", "private_key": "x"}]}, "key"),
    ("dkim", {"domain": "example.com", "selector": "s1", "colour": "red"}, "Unknown key"),
    ("dkim", "example.com", "must be a mapping"),
    ("oauth", "no_such_module_here.fetch_token", "cannot import"),
    ("oauth", {"provider": "google", "subject": "a@example.com"}, "service account"),
    ("oauth", {"provider": "microsoft", "client_id": "x"}, "client_secret"),
    ("oauth", {"provider": "callable"}, "function"),
    ("rate_limit", {"messages_per_second": 0}, "messages_per_second"),
    ("rate_limit", {"messages_per_second": 5, "burst": 0}, "burst"),
    ("rate_limit", {"messages_per_second": 5, "per_hour": 3}, "Unknown key"),
    ("rate_limit", {"messages_per_second": "fast"}, "must be a number"),
    ("rate_limit", {"messages_per_second": 5, "redis_url": "http://x"}, "redis://"),
    ("failover", {"hosts": []}, "at least one host"),
    ("failover", ["smtp1.example.com:99999"], "port"),
    ("failover", {"hosts": ["a"], "cooldown": -1}, "cooldown"),
    ("proxy", "ftp://proxy.example.com", "Unsupported proxy scheme"),
    ("proxy", 1080, "proxy URL"),
    ("dsn", {"notify": ["NEVER", "SUCCESS"]}, "NEVER"),
    ("dsn", {"ret": "ALL"}, "FULL or HDRS"),
    ("dsn", {"notify": "FAILURE", "when": "now"}, "Unknown key"),
    ("requiretls", "yes", "True or False"),
    ("max_messages_per_connection", 0, ">= 1"),
]
IDS = [f"{option}-{index}" for index, (option, _, _) in enumerate(INVALID)]
ERRORS = (ValueError, TypeError, ImportError, ImproperlyConfigured)

FLASK_KEYS = {
    "dkim": "MAIL_DKIM",
    "oauth": "MAIL_OAUTH",
    "rate_limit": "MAIL_RATE_LIMIT",
    "failover": "MAIL_FAILOVER",
    "proxy": "MAIL_PROXY",
    "dsn": "MAIL_DSN",
    "requiretls": "MAIL_REQUIRETLS",
    "max_messages_per_connection": "MAIL_MAX_EMAILS",
}
CELERY_KEYWORDS = {"oauth": "oauth_token_generator"}


def error_of(make: Callable[[], Any]) -> str:
    with pytest.raises(ERRORS) as caught:
        make()
    return str(caught.value)


@pytest.mark.parametrize(("option", "value", "words"), INVALID, ids=IDS)
def test_sending_layer_and_asgi_keywords(option: str, value: Any, words: str) -> None:
    message = error_of(lambda: MailerSettings.from_options({option: value}))
    assert option in message and words in message
    message = error_of(lambda: AsgiMail(environ={}, **{option: value}))
    assert option in message and words in message


@pytest.mark.parametrize(("option", "value", "words"), INVALID, ids=IDS)
def test_flask_mail_keys(option: str, value: Any, words: str) -> None:
    app = Flask("policy_settings")
    app.config.update(MAIL_SUPPRESS_SEND=False, **{FLASK_KEYS[option]: value})
    message = error_of(lambda: FlaskMail(app))
    assert FLASK_KEYS[option] in message and words in message


@pytest.mark.parametrize(("option", "value", "words"), INVALID, ids=IDS)
def test_django_options(option: str, value: Any, words: str) -> None:
    message = error_of(lambda: make_backend(host="127.0.0.1", port=25, **{option: value}))
    # Django 6.1 (MAILERS): OPTIONS['dkim']; EMAIL_BACKEND: SMTP_BACKENDS_OPTIONS['dkim'].
    name = f"OPTIONS[{option!r}]" if HAS_MAILERS else f"SMTP_BACKENDS_OPTIONS[{option!r}]"
    assert name in message and words in message


@pytest.mark.parametrize(("option", "value", "words"), INVALID, ids=IDS)
def test_celery_pool_keywords_and_settings(option: str, value: Any, words: str) -> None:
    app = Celery("policy_settings", broker="memory://", set_as_current=False)
    keyword = CELERY_KEYWORDS.get(option, option)
    smtp = {"hostname": "127.0.0.1", "port": 25, keyword: value}
    message = error_of(lambda: SMTPQueue(app, smtp=smtp, dedupe=False))
    if option != "max_messages_per_connection":  # SMTPPool's own check and words
        assert f"smtp[{keyword!r}]" in message and words in message
    # MailerSettings for Celery: the sending layer's names.
    message = error_of(lambda: SMTPQueue(app, smtp=MailerSettings(**{option: value})))
    assert option in message and words in message


def test_environment_variables_are_parsed_by_kind(tmp_path: Path) -> None:
    dkim = policy_kit.dkim_settings(tmp_path)
    environ = {
        "SMTP_BACKENDS_DKIM": json.dumps(dkim),
        "SMTP_BACKENDS_RATE_LIMIT": "14",
        "SMTP_BACKENDS_FAILOVER": "smtp1.example.com:2525, smtp2.example.com",
        "SMTP_BACKENDS_PROXY": "socks5h://user:secret@127.0.0.1:1080",
        "SMTP_BACKENDS_DSN": "FAILURE,DELAY",
        "SMTP_BACKENDS_REQUIRETLS": "true",
        "SMTP_BACKENDS_MAX_MESSAGES_PER_CONNECTION": "100",
    }
    settings = AsgiMail(environ=environ).settings
    connection = live_connection(settings)
    assert isinstance(connection.dkim, DKIMSigner) and len(connection.dkim.keys) == 2
    assert isinstance(connection.rate_limit, RateLimiter)
    assert connection.rate_limit.messages_per_second == 14
    assert connection.failover is not None
    assert [str(host) for host in connection.failover.hosts] == [
        "smtp1.example.com:2525",
        "smtp2.example.com",
    ]
    assert connection.proxy == SMTPProxy("socks5h://user:secret@127.0.0.1:1080")
    assert connection.dsn == DSN(notify=["FAILURE", "DELAY"])
    assert connection.requiretls is True
    assert settings.max_messages_per_connection == 100
    # The same variables make an equal value: the same Mailer, the same live objects.
    again = AsgiMail(environ=dict(environ)).settings
    assert again == settings and hash(again) == hash(settings)
    assert live_connection(again) is connection

    for variable, text, words in [
        ("SMTP_BACKENDS_DKIM", "{not json", "not valid JSON"),
        ("SMTP_BACKENDS_RATE_LIMIT", "lots", "number of messages per second"),
        ("SMTP_BACKENDS_REQUIRETLS", "maybe", "1/true/yes/on"),
    ]:
        environ = {variable: text}
        message = error_of(lambda environ=environ: AsgiMail(environ=environ))  # type: ignore[misc]
        assert variable in message and words in message


def test_equal_settings_share_one_mailer_and_one_set_of_live_objects() -> None:
    data = {
        "host": "127.0.0.1",
        "rate_limit": {"messages_per_second": 14, "recipients_per_minute": 600, "burst": 2},
        "failover": {"hosts": ["127.0.0.1:2525", "127.0.0.2:2525"], "cooldown": 30},
        "dsn": {"notify": ["FAILURE"], "ret": "HDRS"},
    }
    first = MailerSettings.from_options(data)
    second = MailerSettings.from_options(json.loads(json.dumps(data)))
    assert first == second and hash(first) == hash(second)
    assert get_mailer(first) is get_mailer(second)
    # Mailers of other scopes (a Flask app's, an ASGI app's) share them too.
    a, b = Mailer(first, scope="app-a").connection, Mailer(second, scope="app-b").connection
    assert a is b
    assert isinstance(a.rate_limit, RateLimiter) and a.rate_limit.burst == 2
    assert isinstance(a.failover, Failover) and a.failover.cooldown == 30
    # Other data: other objects.
    other = MailerSettings.from_options({**data, "rate_limit": 15})
    assert other != first
    assert live_connection(other).rate_limit is not a.rate_limit
    assert live_connection(other).failover is not a.failover


def test_every_policy_off_builds_nothing() -> None:
    settings = MailerSettings(host="127.0.0.1")
    assert settings.stateful_policies == {}
    assert live_connection(settings) is settings.connection
    config = settings.connection
    assert (config.dkim, config.rate_limit, config.failover, config.proxy, config.dsn) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert config.oauth_token_generator is None and config.requiretls is False


def test_ready_objects_are_used_as_they_are() -> None:
    limiter = RateLimiter(messages_per_second=3)
    failover = Failover(["127.0.0.1:2525"])
    proxy = SMTPProxy("http://127.0.0.1:3128")

    async def token() -> str:
        return "tok"

    settings = MailerSettings(
        username="me@example.com", rate_limit=limiter, failover=failover, proxy=proxy, oauth=token
    )
    config = live_connection(settings)
    assert config.rate_limit is limiter and config.failover is failover
    assert config.proxy is proxy and config.oauth_token_generator is token
    assert settings == MailerSettings(
        username="me@example.com", rate_limit=limiter, failover=failover, proxy=proxy, oauth=token
    )


def test_dkim_data_is_checked_once_and_makes_one_signer(tmp_path: Path) -> None:
    data = policy_kit.dkim_settings(tmp_path)
    first = check_policy("dkim", data, "dkim")
    assert isinstance(first, PolicySpec) and not first.stateful
    assert check_policy("dkim", json.loads(json.dumps(data)), "dkim") is first
    signer = first.build()
    assert isinstance(signer, DKIMSigner)
    assert [key.selector for key in signer.keys] == ["s1", "e1"]
    assert [key.algorithm for key in signer.keys] == ["rsa-sha256", "ed25519-sha256"]
    assert [key.selector for key in signer.keys_for("mail.example.org")] == ["org"]
    assert signer.headers == ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
    # One key at the top level, as most settings files will have it.
    single = check_policy(
        "dkim",
        {"domain": "example.com", "selector": "s1", "private_key": policy_kit.RSA_PEM},
        "dkim",
    ).build()
    assert [key.selector for key in single.keys] == ["s1"]


def token_function() -> tuple[str, float]:
    """A token function a dotted path names (tests/test_policies_settings.py)."""
    return "tok-from-function", 3600.0


class TokenFactoryProvider(CallableTokenProvider):
    """A provider class a dotted path names: made once per process with no arguments."""

    def __init__(self) -> None:
        super().__init__(token_function)


def test_oauth_shapes_make_providers_once_per_process(tmp_path: Path) -> None:
    path = f"{__name__}.token_function"
    by_path = MailerSettings(username="me@example.com", oauth=path)
    provider = live_connection(by_path).oauth_token_generator
    assert isinstance(provider, CallableTokenProvider)
    assert live_connection(MailerSettings(username="me@example.com", oauth=path)) is (
        live_connection(by_path)
    )
    factory = MailerSettings(username="me@example.com", oauth=f"{__name__}.TokenFactoryProvider")
    assert isinstance(live_connection(factory).oauth_token_generator, TokenFactoryProvider)
    called = MailerSettings(
        username="me@example.com",
        oauth={"provider": "callable", "function": path, "refresh_margin": 5},
    )
    made = live_connection(called).oauth_token_generator
    assert isinstance(made, CallableTokenProvider) and made.refresh_margin == 5
    google = MailerSettings(
        username="me@example.com",
        oauth={
            "provider": "google",
            "client_id": "id",
            "client_secret": "very-secret",
            "refresh_token": "refresh-secret",
        },
    )
    assert isinstance(live_connection(google).oauth_token_generator, GoogleTokenProvider)
    assert "very-secret" not in repr(google) and "refresh-secret" not in repr(google.oauth)
    assert "client_secret=***" in repr(google.oauth)
    with pytest.raises(ValueError, match="password and oauth cannot both be set"):
        MailerSettings(username="me@example.com", password="pw", oauth=path)
    with pytest.raises(ValueError, match="oauth needs username"):
        MailerSettings(oauth=path)


def test_shared_rate_limit_for_celery_workers_and_secrets_hidden() -> None:
    settings = MailerSettings(
        rate_limit={
            "messages_per_second": 14,
            "redis_url": "redis://127.0.0.1:6379/0",
            "key": "mail:ses",
        },
        proxy="socks5://user:hunter2@127.0.0.1:1080",
        dkim={"domain": "example.com", "selector": "s1", "private_key": policy_kit.RSA_PEM},
    )
    limiter = live_connection(settings).rate_limit
    assert isinstance(limiter, RedisRateLimiter) and limiter.key == "mail:ses"
    shown = repr(settings)
    assert "hunter2" not in shown and "PRIVATE" not in shown and "14" in shown


def test_celery_pool_keywords_make_live_objects_once_per_process(tmp_path: Path) -> None:
    app = Celery("policy_settings", broker="memory://", set_as_current=False)
    queue = SMTPQueue(
        app,
        smtp={
            "hostname": "127.0.0.1",
            "port": 25,
            "dkim": policy_kit.dkim_settings(tmp_path),
            "rate_limit": {"messages_per_second": 20},
            "failover": ["127.0.0.1:25", "127.0.0.2:25"],
            "dsn": {"notify": "FAILURE"},
        },
        dedupe=False,
    )
    first, second = queue._make_pool(None), queue._make_pool(None)
    assert isinstance(first, SMTPPool)
    assert first.config.rate_limit is second.config.rate_limit
    assert isinstance(first.config.rate_limit, RateLimiter)
    assert first.config.failover is second.config.failover
    assert isinstance(first.config.dkim, DKIMSigner)
    assert first.config.dsn == DSN(notify="FAILURE")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_forked_child_makes_its_own_live_objects() -> None:
    settings = MailerSettings(rate_limit=7, failover=["127.0.0.1:2525"])
    parent = live_connection(settings)
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() with threads running (another test's bridge).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its own limiter and failover state, made once
        try:
            child = live_connection(settings)
            fresh = child.rate_limit is not parent.rate_limit
            fresh = fresh and child.failover is not parent.failover
            once = live_connection(MailerSettings(rate_limit=7, failover=["127.0.0.1:2525"]))
            os.write(writer, b"ok" if fresh and once is child else b"no")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 2)
    os.close(reader)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert live_connection(settings) is parent
