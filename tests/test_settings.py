"""smtp_backends.settings: one frozen, validated settings object for every adapter."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any

import pytest

from smtp_backends.settings import OPTIONS, MailerSettings, Option, check_option


def test_defaults_and_the_connection_config() -> None:
    settings = MailerSettings()
    config = settings.connection
    assert (config.hostname, config.effective_port, config.start_tls, config.use_tls) == (
        "localhost",
        25,
        False,
        False,
    )
    assert (settings.pool_size, settings.idle_timeout, settings.keep_order) == (4, 60.0, True)
    assert MailerSettings(use_ssl=True).connection.effective_port == 465
    assert MailerSettings(use_tls=True).connection.effective_port == 587


def test_frozen_hashable_and_equal_by_value() -> None:
    first, second = MailerSettings(host="h", port=2525), MailerSettings(host="h", port=2525)
    assert first == second and hash(first) == hash(second)
    assert first != first.replace(pool_size=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.port = 25  # type: ignore[misc]


def test_login_only_with_both_username_and_password() -> None:
    assert MailerSettings(username="u").connection.username is None
    assert MailerSettings(username="u", password="").connection.username is None
    config = MailerSettings(username="u", password="p").connection
    assert (config.username, config.password) == ("u", "p")


def test_password_never_in_repr_nor_errors() -> None:
    assert "hunter2" not in repr(MailerSettings(username="u", password="hunter2"))
    with pytest.raises(TypeError, match="MAIL_PASSWORD must be a str, not int") as caught:
        MailerSettings.from_options({"password": 123456}, {"password": "MAIL_PASSWORD"})
    assert "123456" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"port": "abc"}, TypeError, "EMAIL_PORT must be an int, not 'abc'"),
        ({"port": 70000}, ValueError, "EMAIL_PORT must be between 1 and 65535"),
        ({"port": True}, TypeError, "EMAIL_PORT must be an int"),
        ({"use_tls": "False"}, TypeError, "EMAIL_USE_TLS must be True or False, not 'False'"),
        ({"use_ssl": 1}, TypeError, "EMAIL_USE_SSL must be True or False"),
        ({"timeout": 0}, ValueError, "EMAIL_TIMEOUT must be a number of seconds > 0"),
        ({"timeout": "30"}, TypeError, "EMAIL_TIMEOUT must be a number of seconds"),
        ({"pool_size": -1}, ValueError, "pool_size must be an int >= 0"),
        ({"max_messages_per_connection": 0}, ValueError, r"max_messages_per_connection .* >= 1"),
        ({"host": ""}, TypeError, "EMAIL_HOST must be a host name"),
        ({"ssl_context": "ctx"}, TypeError, "ssl_context must be an ssl.SSLContext"),
        ({"use_tls": True, "use_ssl": True}, ValueError, "EMAIL_USE_TLS .* EMAIL_USE_SSL"),
        ({"colour": "red"}, TypeError, "Unknown option.*colour"),
        ({"local_hostname": "bad name"}, ValueError, "host name"),
    ],
)
def test_errors_name_the_users_setting(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    names = {
        "port": "EMAIL_PORT",
        "use_tls": "EMAIL_USE_TLS",
        "use_ssl": "EMAIL_USE_SSL",
        "timeout": "EMAIL_TIMEOUT",
        "host": "EMAIL_HOST",
    }
    with pytest.raises(error, match=message):
        MailerSettings.from_options(options, names)


def test_names_may_be_a_function_and_a_hint_follows_str_values() -> None:
    with pytest.raises(TypeError, match=r"OPTIONS\['pipelining'\] must be True or False.*env"):
        MailerSettings.from_options(
            {"pipelining": "yes"}, lambda field: f"OPTIONS[{field!r}]", hint=" (env)"
        )


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(TypeError, match="use_tls must be True or False"):
        MailerSettings(use_tls="False")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"use_tls .* use_ssl"):
        MailerSettings(use_tls=True, use_ssl=True)


def test_values_are_normalised(tmp_path: Path) -> None:
    settings = MailerSettings.from_options(
        {"port": " 2525 ", "cert_bundle": tmp_path / "ca.pem", "timeout": None}
    )
    assert settings.port == 2525
    assert settings.cert_bundle == str(tmp_path / "ca.pem")
    assert settings.timeout is None  # None is a value (no limit); absent is the default
    assert MailerSettings.from_options({}).timeout == 60.0
    context = ssl.create_default_context()
    assert MailerSettings(ssl_context=context).connection.tls_context is context


def test_from_environ_parses_by_kind() -> None:
    environ = {
        "SMTP_BACKENDS_HOST": "mail.example.com",
        "SMTP_BACKENDS_PORT": "587",
        "SMTP_BACKENDS_USE_TLS": "true",
        "SMTP_BACKENDS_TIMEOUT": "2.5",
        "SMTP_BACKENDS_PIPELINING": "0",
        "SMTP_BACKENDS_USERNAME": "",
    }
    settings = MailerSettings.from_environ(environ=environ, pool_size=2)
    assert (settings.host, settings.port, settings.use_tls, settings.timeout) == (
        "mail.example.com",
        587,
        True,
        2.5,
    )
    assert (settings.pipelining, settings.username, settings.pool_size) == (False, None, 2)
    with pytest.raises(ValueError, match="SMTP_BACKENDS_USE_SSL must be one of"):
        MailerSettings.from_environ(environ={"SMTP_BACKENDS_USE_SSL": "maybe"})
    with pytest.raises(TypeError, match="SMTP_BACKENDS_PORT must be an int, not 'smtp'"):
        MailerSettings.from_environ(environ={"SMTP_BACKENDS_PORT": "smtp"})
    with pytest.raises(TypeError, match="SMTP_BACKENDS_TIMEOUT must be a number"):
        MailerSettings.from_environ(environ={"SMTP_BACKENDS_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="pool_size must be"):
        MailerSettings.from_environ(environ={}, pool_size=-1)


def test_every_field_has_an_option_row() -> None:
    fields = {f.name for f in dataclasses.fields(MailerSettings) if f.init}
    assert fields == set(OPTIONS)
    assert check_option(Option("count", minimum=1), None, "n") is None
    with pytest.raises(TypeError, match="n must be an int, not None"):
        check_option(Option("count", optional=False), None, "n")
