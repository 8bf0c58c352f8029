"""Secrets never show: not in errors (text, args, repr, chain), reprs, logs or traceback locals.

A password from ``os.environ`` holds lone surrogates when its bytes are not UTF-8; encoding
it used to raise a raw UnicodeEncodeError carrying the whole password (in ``args`` and
``object``), which Django's ``fail_silently`` does not catch either. Every place a secret
passes is checked here against real servers on loopback: the password and OAuth token
paths of the client, the pool, the Django backend, and what a traceback formatter that
prints every frame's locals (Django's error e-mails, rich, ``capture_locals``) would show.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import ssl
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smtp_backends import SMTP, ConnectionConfig, SMTPPool
from smtp_backends.errors import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPReadTimeoutError,
)
from smtp_backends.protocol.auth import AuthExchange, CramMD5, Login, Plain, XOAuth2
from tests.scripted import STALL, GroupServer, Item
from tests.servers import OAUTH_TOKEN, PASSWORD, USERNAME, ScriptedServer, SMTPServer

ENV = "SMTP_BACKENDS_TEST_SECRET"
# Not UTF-8: os.environ decodes the 0xff as the lone surrogate U+DCFF.
RAW = b"hunter2-\xff-correcthorsebatterystaple"
FRAGMENTS = ("hunter2", "correcthorse", "batterystaple", "\udcff", "\\udcff", "\\xff")
WRONG = "wr0ng-hunter2-correcthorsebatterystaple"
PIN = 918273645
TESTS = os.path.dirname(os.path.abspath(__file__)) + os.sep


@pytest.fixture
def bad_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``os.environ[ENV]`` is a password that cannot be encoded as UTF-8."""
    monkeypatch.setitem(os.environb, ENV.encode(), RAW)
    assert os.environ[ENV] == "hunter2-\udcff-correcthorsebatterystaple"
    yield


def secret_forms(secret: str) -> list[str]:
    """The secret and what it looks like on the wire (base64 of each mechanism's step)."""
    raw = secret.encode("utf-8", "surrogateescape")
    user = USERNAME.encode()
    blobs = [
        raw,
        b"\0" + user + b"\0" + raw,
        b"user=" + user + b"\x01auth=Bearer " + raw + b"\x01\x01",
    ]
    return [secret, *(base64.b64encode(blob).decode() for blob in blobs)]


def assert_hidden(text: str, secret: str | None = None) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, (fragment, text[-2000:])
    for form in secret_forms(secret or os.environ.get(ENV, WRONG)):
        assert form not in text, (form, text[-2000:])


def everything_shown(exc: BaseException) -> str:
    """All the text an error can end up as: str, repr, args, its chain, its traceback,
    a logging record of it, and the locals of every frame it passed through outside the
    tests themselves (a test's own frame holds what the test chose to hold), formatted as
    ``capture_locals`` does."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    chain: list[BaseException] = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        parts += [str(current), repr(current), repr(current.args)]
        parts += [f"{name}={value!r}" for name, value in vars(current).items()]
        current = current.__cause__ or current.__context__
    parts += traceback.format_exception(exc)
    for link in chain:
        summary = traceback.StackSummary.extract(
            traceback.walk_tb(link.__traceback__), capture_locals=True
        )
        for frame in summary:
            if not frame.filename.startswith(TESTS):
                parts += [
                    f"{frame.name}: {name}={value}" for name, value in (frame.locals or {}).items()
                ]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.secrets")
    log.addHandler(handler)
    try:
        log.error("sending failed: %s", exc, exc_info=exc)
    finally:
        log.removeHandler(handler)
    parts.append(stream.getvalue())
    return "\n".join(parts)


def client_for(server: SMTPServer | ScriptedServer, **options: Any) -> SMTP:
    options.setdefault("timeout", 5)
    return SMTP(hostname=server.host, port=server.port, start_tls=False, **options)


def assert_no_auth_sent(server: SMTPServer) -> None:
    assert server.handler.logins == []
    assert "AUTH" not in server.handler.commands


# --------------------------------------------------------------------------- unencodable


LOGINS: dict[str, Callable[[SMTP], Any]] = {
    "login": lambda client: client.login(USERNAME, os.environ[ENV]),
    "auth_plain": lambda client: client.auth_plain(USERNAME, os.environ[ENV]),
    "auth_login": lambda client: client.auth_login(USERNAME, os.environ[ENV]),
    "auth_crammd5": lambda client: client.auth_crammd5(USERNAME, os.environ[ENV]),
    "auth_xoauth2": lambda client: client.auth_xoauth2(USERNAME, os.environ[ENV]),
}


@pytest.mark.usefixtures("bad_secret")
@pytest.mark.parametrize("method", LOGINS.values(), ids=LOGINS.keys())
async def test_an_unencodable_password_is_an_authentication_error_without_the_secret(
    smtpd_auth: SMTPServer, method: Callable[[SMTP], Any]
) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPAuthenticationError) as caught:
            await method(client)
        assert client.is_connected  # nothing was sent: the session is still good
        await client.login(USERNAME, PASSWORD)
    error = caught.value
    assert error.code == -1
    assert "cannot be encoded as UTF-8" in error.message
    assert error.__cause__ is None and error.__context__ is None
    assert_hidden(everything_shown(error))
    assert [attempt.success for attempt in smtpd_auth.handler.logins] == [True]


@pytest.mark.usefixtures("bad_secret")
async def test_an_unencodable_password_in_the_settings_fails_connect(
    smtpd_auth: SMTPServer,
) -> None:
    client = client_for(smtpd_auth, username=USERNAME, password=os.environ[ENV])
    assert_hidden(repr(client) + repr(client.config))
    with pytest.raises(SMTPAuthenticationError) as caught:
        await client.connect()
    assert not client.is_connected
    assert "password cannot be encoded" in caught.value.message
    assert_hidden(everything_shown(caught.value))
    assert_no_auth_sent(smtpd_auth)


@pytest.mark.usefixtures("bad_secret")
async def test_an_unencodable_user_name_is_named_as_such(smtpd_auth: SMTPServer) -> None:
    async with client_for(smtpd_auth) as client:
        with pytest.raises(SMTPAuthenticationError, match="user name cannot be encoded"):
            await client.login(os.environ[ENV], PASSWORD)
    assert_no_auth_sent(smtpd_auth)


@pytest.mark.usefixtures("bad_secret")
async def test_an_unencodable_oauth_token_fails_connect(smtpd_auth: SMTPServer) -> None:
    async def token() -> str:
        return os.environ[ENV]

    client = client_for(smtpd_auth, username=USERNAME, oauth_token_generator=token)
    with pytest.raises(SMTPAuthenticationError) as caught:
        await client.connect()
    assert "OAuth token cannot be encoded" in caught.value.message
    assert_hidden(everything_shown(caught.value))
    assert_no_auth_sent(smtpd_auth)


async def test_a_token_of_the_wrong_type_is_a_type_error_that_does_not_quote_it(
    smtpd_auth: SMTPServer,
) -> None:
    async def token() -> Any:
        return PIN  # a number: not echoed either

    client = client_for(smtpd_auth, username=USERNAME, oauth_token_generator=token)
    with pytest.raises(TypeError, match="The OAuth token must be str or bytes, not int") as caught:
        await client.connect()
    shown = everything_shown(caught.value)  # before any local holds the number's text
    assert str(PIN) not in shown
    assert_no_auth_sent(smtpd_auth)


@pytest.mark.usefixtures("bad_secret")
async def test_the_pool_reports_an_unencodable_password_without_it(
    smtpd_auth: SMTPServer,
) -> None:
    pool = SMTPPool(
        hostname=smtpd_auth.host,
        port=smtpd_auth.port,
        start_tls=False,
        timeout=5,
        username=USERNAME,
        password=os.environ[ENV],
    )
    assert_hidden(repr(pool) + repr(pool.config))
    try:
        with pytest.raises(SMTPAuthenticationError) as caught:
            await pool.send_message(_message())
    finally:
        await pool.close()
    assert_hidden(everything_shown(caught.value) + repr(pool))
    assert_no_auth_sent(smtpd_auth)


def test_mechanisms_refuse_unencodable_secrets_without_a_trace() -> None:
    from smtp_backends.protocol.auth import Credentials

    for kind in (Plain, Login, CramMD5, XOAuth2):
        with pytest.raises(SMTPAuthenticationError) as caught:
            kind(USERNAME, RAW.decode("utf-8", "surrogateescape"))
        assert caught.value.__context__ is None
        assert_hidden(everything_shown(caught.value), RAW.decode("utf-8", "surrogateescape"))
        with pytest.raises(TypeError, match="must be str or bytes, not NoneType"):
            kind(USERNAME, None)  # type: ignore[arg-type]
    credentials = Credentials(
        USERNAME, RAW.decode("utf-8", "surrogateescape")
    )  # never raises: the caller drops the secret
    assert repr(credentials) == "<Credentials>"
    with pytest.raises(SMTPAuthenticationError, match="OAuth token cannot be encoded"):
        credentials.mechanism(XOAuth2)


# --------------------------------------------------------------------------- refused or lost


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_a_refused_password_leaves_no_trace_in_the_error_or_its_frames(
    smtpd_auth: SMTPServer, mechanism: str
) -> None:
    async with client_for(smtpd_auth) as client:
        method = {
            "PLAIN": client.auth_plain,
            "LOGIN": client.auth_login,
            "CRAM-MD5": client.auth_crammd5,
        }[mechanism]
        with pytest.raises(SMTPAuthenticationError) as caught:
            await method(USERNAME, WRONG)
    assert caught.value.code == 535
    assert_hidden(everything_shown(caught.value), WRONG)


async def test_a_refused_oauth_token_leaves_no_trace(smtpd_auth: SMTPServer) -> None:
    async def token() -> str:
        return WRONG

    client = client_for(smtpd_auth, username=USERNAME, oauth_token_generator=token)
    with pytest.raises(SMTPAuthenticationError) as caught:
        await client.connect()
    assert_hidden(everything_shown(caught.value), WRONG)
    assert OAUTH_TOKEN != WRONG


@pytest.mark.parametrize("verb", ["login", "auth_login", "auth_plain", "auth_xoauth2"])
async def test_a_timeout_in_the_middle_of_auth_leaves_no_trace(
    make_scripted_server: Callable[..., ScriptedServer], verb: str
) -> None:
    def on_command(server: GroupServer, item: Item) -> Any:
        if item.verb == b"AUTH" and item.line != b"AUTH LOGIN":
            return STALL  # the line carrying the secret arrived: never answer it
        if item.verb == b"AUTH":
            return b"334 VXNlcm5hbWU6\r\n"
        if item.line.startswith(b"YWxpY2U"):  # the user name for LOGIN
            return b"334 UGFzc3dvcmQ6\r\n"
        if item.kind == "command" and item.verb not in (b"EHLO", b"QUIT"):
            return STALL  # the LOGIN password line
        return None

    server = GroupServer(extensions=("AUTH PLAIN LOGIN XOAUTH2",), on_command=on_command)
    scripted = make_scripted_server(server, strict=False)
    async with client_for(scripted) as client:  # connect and EHLO within the usual 5 s
        with pytest.raises(SMTPReadTimeoutError) as caught:
            await getattr(client, verb)(USERNAME, WRONG, timeout=0.5)
    assert_hidden(everything_shown(caught.value), WRONG)
    sent = b"".join(scripted.received)
    assert any(form.encode() in sent for form in secret_forms(WRONG))  # it did go out


# --------------------------------------------------------------------------- reprs and logs


def test_reprs_never_show_secrets() -> None:
    from smtp_backends.protocol.auth import SecretBytes

    options: dict[str, Any] = {"hostname": "127.0.0.1", "port": 2525, "username": USERNAME}
    client = SMTP(password=WRONG, **options)
    config = ConnectionConfig(password=WRONG, **options)
    pool = SMTPPool(password=WRONG, **options)

    async def token() -> str:
        return WRONG

    oauth = SMTP(oauth_token_generator=token, **options)
    texts = [repr(client), repr(client.config), repr(config), str(config), repr(pool)]
    texts += [repr(pool.config), repr(oauth), repr(oauth.config)]
    texts += [repr(kind(USERNAME, WRONG)) for kind in (Plain, Login, CramMD5, XOAuth2)]
    line = AuthExchange(Plain(USERNAME, WRONG)).start()
    assert isinstance(line, SecretBytes) and line.startswith(b"AUTH PLAIN ")
    texts += [repr(line), str(line), f"{line}", "%s %r" % (line, line)]  # noqa: UP031
    assert_hidden("\n".join(texts), WRONG)
    assert "token" not in repr(oauth.config)


def test_adapter_reprs_never_show_secrets() -> None:
    # Flask's per-app state and Celery's Redis dedupe (whose URL may carry a password).
    from flask import Flask

    from smtp_backends.celery import RedisDedupe
    from smtp_backends.flask import Mail

    app = Flask("secrets")
    app.config.update(MAIL_USERNAME=USERNAME, MAIL_PASSWORD=WRONG, MAIL_SERVER="127.0.0.1")
    mail = Mail(app)
    dedupe = RedisDedupe(f"redis://{USERNAME}:{WRONG}@127.0.0.1:6379/0")
    assert_hidden(f"{app.extensions['mail']!r} {mail.state!r} {dedupe!r}", WRONG)


async def test_debug_logs_of_a_whole_session_never_show_secrets(
    smtpd_auth: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for kind in ("auth_plain", "auth_login"):
        async with client_for(smtpd_auth) as client:
            await getattr(client, kind)(USERNAME, PASSWORD)
            await client.send_message(_message())
        async with client_for(smtpd_auth) as client:
            with pytest.raises(SMTPAuthenticationError):
                await getattr(client, kind)(USERNAME, WRONG)
    assert any("AUTH" in record.getMessage() for record in caplog.records)
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert_hidden(text, WRONG)
    assert_hidden(text, PASSWORD)


# --------------------------------------------------------------------------- Django


@pytest.mark.usefixtures("bad_secret")
@pytest.mark.parametrize("fail_silently", [True, False])
def test_django_backend_with_an_unencodable_password(
    smtpd_auth: SMTPServer, fail_silently: bool
) -> None:
    from tests.django_project import setup

    setup()
    import django.core.mail

    from smtp_backends import bridge
    from tests.django_project.testing import make_backend

    message = django.core.mail.EmailMessage("Hi", "Body", "a@example.org", ["b@example.org"])
    backend = make_backend(
        smtpd_auth, username=USERNAME, password=os.environ[ENV], fail_silently=fail_silently
    )
    try:
        if fail_silently:  # SMTPAuthenticationError is an smtplib.SMTPException: silenced
            assert backend.send_messages([message]) == 0
            return
        with pytest.raises(SMTPAuthenticationError) as caught:
            backend.send_messages([message])
    finally:
        backend.close()
        bridge.shutdown()
        assert_no_auth_sent(smtpd_auth)
    assert isinstance(caught.value, SMTPException)
    error = caught.value
    assert_hidden(everything_shown(error))


def _message() -> Any:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message["Subject"] = "secrets"
    message.set_content("body\n")
    return message


# --------------------------------------------------------------------------- client key


def test_an_encrypted_client_key_is_refused_without_a_terminal_prompt(
    client_cert_paths: Any, tmp_path: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    # There is no option for a client key's password (as in aiosmtplib): such a key is
    # loaded by the caller into a tls_context. Left to itself OpenSSL would prompt for the
    # pass phrase on the terminal and block a server process there.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(client_cert_paths.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(WRONG.encode()),
        )
    )
    config = ConnectionConfig(client_cert=str(client_cert_paths.cert), client_key=str(encrypted))
    with pytest.raises(ValueError, match="client_key is encrypted") as caught:
        config.build_tls_context()
    assert "pass phrase" not in capfd.readouterr().err
    assert_hidden(everything_shown(caught.value), WRONG)
    # The documented way: the caller's context, loaded with the password.
    context = ssl.create_default_context()
    context.load_cert_chain(str(client_cert_paths.cert), str(encrypted), password=WRONG)
    assert ConnectionConfig(tls_context=context).build_tls_context() is context
    plain = ConnectionConfig(
        client_cert=str(client_cert_paths.cert), client_key=str(client_cert_paths.key)
    )
    assert isinstance(plain.build_tls_context(), ssl.SSLContext)
