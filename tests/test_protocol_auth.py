"""Exact bytes for SASL mechanisms and the AUTH exchange (smtp_backends.protocol.auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from smtp_backends.errors import SMTPAuthenticationError, SMTPProtocolError
from smtp_backends.protocol.auth import (
    MAX_AUTH_ROUNDS,
    MECHANISMS,
    AuthExchange,
    CramMD5,
    Login,
    Mechanism,
    Plain,
    XOAuth2,
)
from smtp_backends.protocol.replies import SMTPResponse

R = SMTPResponse

USERNAME_PROMPT = "VXNlcm5hbWU6"  # "Username:"
PASSWORD_PROMPT = "UGFzc3dvcmQ6"  # "Password:"

# RFC 2195 section 2 (the host is "mci.net": with "mci.com" the digest differs).
RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_CHALLENGE_B64 = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_RESPONSE = b"tim b913a602c7eda7a495b4e6e7334d3890"
RFC2195_RESPONSE_B64 = b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"

# Google's XOAUTH2 protocol documentation example.
XOAUTH2_USER = "someuser@example.com"
XOAUTH2_TOKEN = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
XOAUTH2_B64 = (
    b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhk"
    b"SFJoZG1semRHRXVZMjl0Q2cBAQ=="
)


# Initial responses and the AUTH line ----------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "initial", "line"),
    [
        (Plain("user", "pass"), b"\x00user\x00pass", b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
        (Plain(b"user", b"pass"), b"\x00user\x00pass", b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
        (
            Plain("ü", "pässwörd"),
            b"\x00\xc3\xbc\x00p\xc3\xa4ssw\xc3\xb6rd",
            b"AUTH PLAIN AMO8AHDDpHNzd8O2cmQ=\r\n",
        ),
        (Plain("", ""), b"\x00\x00", b"AUTH PLAIN AAA=\r\n"),
        (Login("user", "pass"), None, b"AUTH LOGIN\r\n"),
        (CramMD5("tim", "tanstaaftanstaaf"), None, b"AUTH CRAM-MD5\r\n"),
        (
            XOAuth2(XOAUTH2_USER, XOAUTH2_TOKEN),
            b"user=someuser@example.com\x01auth=Bearer " + XOAUTH2_TOKEN.encode() + b"\x01\x01",
            b"AUTH XOAUTH2 " + XOAUTH2_B64 + b"\r\n",
        ),
    ],
    ids=["plain", "plain-bytes", "plain-utf8", "plain-empty", "login", "cram-md5", "xoauth2"],
)
def test_initial_response_and_auth_line(
    mechanism: Mechanism, initial: bytes | None, line: bytes
) -> None:
    assert mechanism.initial_response() == initial
    assert AuthExchange(mechanism).start() == line


def test_empty_initial_response_is_sent_as_equals_sign() -> None:
    # RFC 4954 section 4: a zero-length initial response is sent as "=".
    class Empty(Mechanism):
        name = "X-EMPTY"

        def initial_response(self) -> bytes:
            return b""

    assert AuthExchange(Empty("u", "p")).start() == b"AUTH X-EMPTY =\r\n"


def test_names_and_registry() -> None:
    assert [Plain.name, Login.name, CramMD5.name, XOAuth2.name] == [
        "PLAIN",
        "LOGIN",
        "CRAM-MD5",
        "XOAUTH2",
    ]
    # in the order login() prefers them
    assert list(MECHANISMS.items()) == [("CRAM-MD5", CramMD5), ("PLAIN", Plain), ("LOGIN", Login)]
    assert MAX_AUTH_ROUNDS == 5


# Mechanism steps -----------------------------------------------------------------------


def test_cram_md5_rfc2195_example() -> None:
    assert base64.b64decode(RFC2195_CHALLENGE_B64) == RFC2195_CHALLENGE
    assert CramMD5("tim", "tanstaaftanstaaf").respond(RFC2195_CHALLENGE) == RFC2195_RESPONSE
    exchange = AuthExchange(CramMD5("tim", "tanstaaftanstaaf"))
    assert exchange.start() == b"AUTH CRAM-MD5\r\n"
    assert exchange.on_reply(R(334, RFC2195_CHALLENGE_B64)) == RFC2195_RESPONSE_B64 + b"\r\n"
    assert exchange.on_reply(R(235, "2.7.0 Authentication successful")) is None


@pytest.mark.parametrize(
    ("secret", "challenge", "digest"),
    [
        # RFC 2104 appendix test vector.
        ("Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
        # Computed here with hmac directly, including a UTF-8 secret.
        (
            "pässwörd",
            b"<1.2@host>",
            hmac.new("pässwörd".encode(), b"<1.2@host>", hashlib.md5).hexdigest(),
        ),
        (b"\x00\xff", b"", hmac.new(b"\x00\xff", b"", hashlib.md5).hexdigest()),
    ],
)
def test_cram_md5_digest(secret: str | bytes, challenge: bytes, digest: str) -> None:
    assert CramMD5("u", secret).respond(challenge) == b"u " + digest.encode()


def test_cram_md5_second_challenge_refused() -> None:
    mechanism = CramMD5("tim", "tanstaaftanstaaf")
    mechanism.respond(RFC2195_CHALLENGE)
    with pytest.raises(SMTPAuthenticationError) as info:
        mechanism.respond(RFC2195_CHALLENGE)
    assert info.value.code == -1
    assert info.value.message == "Unexpected CRAM-MD5 challenge"


def test_login_answers_by_position() -> None:
    mechanism = Login("user", "pass")
    # Wording is ignored: the first challenge gets the user name whatever it says.
    assert mechanism.respond(b"Password:") == b"user"
    assert mechanism.respond(b"Username:") == b"pass"
    with pytest.raises(SMTPAuthenticationError) as info:
        mechanism.respond(b"Again:")
    assert (info.value.code, info.value.message) == (-1, "Unexpected LOGIN challenge")
    assert "pass" not in str(info.value)


def test_plain_answers_a_challenge_with_the_credentials() -> None:
    assert Plain("user", "pass").respond(b"") == b"\x00user\x00pass"


def test_xoauth2_answers_the_error_challenge_with_empty() -> None:
    assert XOAuth2("u", "t").respond(b'{"status":"401"}') == b""


def test_base_mechanism() -> None:
    class Bare(Mechanism):
        name = "X-BARE"

    mechanism = Bare("u", "p")
    assert mechanism.initial_response() is None
    assert AuthExchange(mechanism).start() == b"AUTH X-BARE\r\n"
    with pytest.raises(SMTPAuthenticationError) as info:
        mechanism.respond(b"x")
    assert (info.value.code, info.value.message) == (-1, "Unexpected X-BARE challenge")


# AuthExchange --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "replies", "lines"),
    [
        pytest.param(Plain("user", "pass"), [R(235, "2.7.0 ok")], [None], id="plain-235"),
        pytest.param(
            Plain("user", "pass"),
            [R(334, ""), R(235, "ok")],
            [b"AHVzZXIAcGFzcw==\r\n", None],
            id="plain-empty-challenge",
        ),
        pytest.param(
            Login("user", "pass"),
            [R(334, USERNAME_PROMPT), R(334, PASSWORD_PROMPT), R(235, "ok")],
            [b"dXNlcg==\r\n", b"cGFzcw==\r\n", None],
            id="login",
        ),
        pytest.param(
            Login("user", "pass"),
            [R(334, f"  {USERNAME_PROMPT}  "), R(334, f"{PASSWORD_PROMPT}\n"), R(235, "ok")],
            [b"dXNlcg==\r\n", b"cGFzcw==\r\n", None],
            id="login-challenge-whitespace-stripped",
        ),
        pytest.param(
            Login("ü", "ß"),
            [R(334, USERNAME_PROMPT), R(334, PASSWORD_PROMPT)],
            [b"w7w=\r\n", b"w58=\r\n"],
            id="login-utf8",
        ),
        pytest.param(
            XOAuth2(XOAUTH2_USER, XOAUTH2_TOKEN),
            [R(334, "eyJzdGF0dXMiOiI0MDEifQ==")],
            [b"\r\n"],
            id="xoauth2-error-challenge",
        ),
    ],
)
def test_exchange(
    mechanism: Mechanism, replies: list[SMTPResponse], lines: list[bytes | None]
) -> None:
    exchange = AuthExchange(mechanism)
    assert [exchange.on_reply(reply) for reply in replies] == lines
    assert exchange.rounds == sum(1 for reply in replies if reply.code == 334)


@pytest.mark.parametrize(
    "reply",
    [
        R(535, "5.7.8 Authentication credentials invalid"),
        R(454, "4.7.0 Temporary authentication failure"),
        R(504, "5.5.4 Unrecognized authentication type"),
        R(530, "5.7.0 Must issue a STARTTLS command first"),
        R(501, "5.5.2 Cannot decode response"),
        R(534, "5.7.9 Please log in with your web browser"),
        R(250, "ok"),  # a success code other than 235 is not authentication
        R(354, "go ahead"),
    ],
)
def test_exchange_refused(reply: SMTPResponse) -> None:
    exchange = AuthExchange(Plain("user", "pass"))
    with pytest.raises(SMTPAuthenticationError) as info:
        exchange.on_reply(reply)
    assert (info.value.code, info.value.message) == (reply.code, reply.message)
    assert info.value.args == (reply.code, reply.message)


def test_exchange_refused_after_challenges() -> None:
    exchange = AuthExchange(Login("user", "pass"))
    exchange.on_reply(R(334, USERNAME_PROMPT))
    exchange.on_reply(R(334, PASSWORD_PROMPT))
    with pytest.raises(SMTPAuthenticationError) as info:
        exchange.on_reply(R(535, "5.7.8 no"))
    assert info.value.code == 535


def test_login_third_challenge_refused() -> None:
    exchange = AuthExchange(Login("user", "pass"))
    exchange.on_reply(R(334, USERNAME_PROMPT))
    exchange.on_reply(R(334, PASSWORD_PROMPT))
    with pytest.raises(SMTPAuthenticationError) as info:
        exchange.on_reply(R(334, PASSWORD_PROMPT))
    assert (info.value.code, info.value.message) == (-1, "Unexpected LOGIN challenge")


@pytest.mark.parametrize("max_rounds", [MAX_AUTH_ROUNDS, 1, 3])
def test_exchange_caps_challenge_rounds(max_rounds: int) -> None:
    # PLAIN answers every challenge, so only the cap ends this.
    if max_rounds == MAX_AUTH_ROUNDS:
        exchange = AuthExchange(Plain("user", "pass"))
    else:
        exchange = AuthExchange(Plain("user", "pass"), max_rounds=max_rounds)
    assert exchange.max_rounds == max_rounds
    for _ in range(max_rounds):
        assert exchange.on_reply(R(334, "")) == b"AHVzZXIAcGFzcw==\r\n"
    with pytest.raises(SMTPAuthenticationError) as info:
        exchange.on_reply(R(334, ""))
    assert info.value.code == -1
    assert info.value.message == f"Server sent more than {max_rounds} AUTH challenges"
    assert not isinstance(info.value, SMTPProtocolError)


def test_default_cap_is_five_rounds() -> None:
    exchange = AuthExchange(XOAuth2("u", "t"))
    assert [exchange.on_reply(R(334, "")) for _ in range(5)] == [b"\r\n"] * 5
    with pytest.raises(SMTPAuthenticationError, match="more than 5 AUTH challenges"):
        exchange.on_reply(R(334, ""))


@pytest.mark.parametrize(
    "challenge",
    [
        "!!!",
        "abc",  # bad padding
        "YQ",  # missing padding
        "YQ==YQ==",
        "YQ== YQ==",
        "VXNlcm5hbWU6*",
        "Username:",
        "w7w=é",
        "ü",
    ],
)
def test_invalid_base64_challenge(challenge: str) -> None:
    exchange = AuthExchange(Login("user", "pass"))
    with pytest.raises(SMTPProtocolError) as info:
        exchange.on_reply(R(334, challenge))
    assert info.value.code == -1
    assert info.value.message == "AUTH challenge is not valid base64"
    assert info.value.__suppress_context__ is True
    assert not isinstance(info.value, SMTPAuthenticationError)


# Secrets stay out of reprs ---------------------------------------------------------------

SECRET = "s3cr3t-Pa55w0rd"


@pytest.mark.parametrize(
    ("mechanism", "text"),
    [
        (Plain("user", SECRET), "<Plain mechanism>"),
        (Login("user", SECRET), "<Login mechanism>"),
        (CramMD5("user", SECRET), "<CramMD5 mechanism>"),
        (XOAuth2("user", SECRET), "<XOAuth2 mechanism>"),
        (Plain("user", SECRET.encode()), "<Plain mechanism>"),
    ],
)
def test_repr_hides_secret(mechanism: Mechanism, text: str) -> None:
    assert repr(mechanism) == text
    assert str(mechanism) == text
    exchange = AuthExchange(mechanism)
    for shown in (repr(exchange), str(exchange), repr(vars(exchange))):
        assert SECRET not in shown
        assert base64.b64encode(SECRET.encode()).decode()[:12] not in shown
