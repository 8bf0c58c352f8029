"""SASL mechanisms for SMTP AUTH (RFC 4954) as pure challenge -> response steps.

A mechanism gives an optional initial response and then answers each
decoded server challenge. :class:`AuthExchange` drives one exchange: it
base64-encodes, decodes, judges replies and caps the number of rounds, so a
server that keeps challenging forever cannot keep the client busy.

Secrets never show: the reprs of :class:`Credentials` and mechanisms leave
them out, the lines of an exchange are :class:`SecretBytes`, and a secret
that cannot be encoded raises an error that names the problem and carries
no trace of the secret (no text, no chained ``UnicodeEncodeError``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TypeVar

from ..errors import SMTPAuthenticationError, SMTPProtocolError
from .replies import SMTPResponse

__all__ = (
    "MECHANISMS",
    "AuthExchange",
    "CramMD5",
    "Credentials",
    "Login",
    "Mechanism",
    "Plain",
    "SecretBytes",
    "XOAuth2",
)

#: Most challenge rounds accepted in one exchange (LOGIN needs 2).
MAX_AUTH_ROUNDS = 5

_M = TypeVar("_M", bound="Mechanism")


class SecretBytes(bytes):
    """Bytes that carry a credential (an AUTH line): their repr and str hide them.

    They are still plain bytes on the wire; only their text forms differ, so
    that a traceback formatter that prints frame locals, or a careless log
    call, shows ``<secret bytes>`` instead of base64 that decodes to the
    password.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<secret bytes>"

    __str__ = __repr__


# What is wrong with a credential, worded by what it is (see _problem()).
_NOT_UTF8 = "not-utf8"


def _encode(value: object) -> tuple[bytes, str | None]:
    """``value`` as UTF-8 bytes, or what stops that; never raises.

    A raised UnicodeEncodeError would carry the whole string in its args and
    its ``object`` attribute, so it is caught here and left behind.
    """
    if isinstance(value, bytes):
        return value, None
    if isinstance(value, str):
        try:
            return value.encode("utf-8"), None
        except UnicodeEncodeError:
            pass  # handled below, once the exception (and the secret it holds) is gone
        return b"", _NOT_UTF8
    return b"", type(value).__name__


def _problem(what: str, kind: str) -> Exception:
    """The error for a credential that cannot be used; it never quotes the credential."""
    if kind == _NOT_UTF8:
        return SMTPAuthenticationError(
            -1,
            f"The {what} cannot be encoded as UTF-8: it holds a lone surrogate, as "
            "os.environ gives for bytes that are not UTF-8 (fix the encoding of the "
            "setting, or pass bytes)",
        )
    return TypeError(f"The {what} must be str or bytes, not {kind}")


class Credentials:
    """A user name and a secret (password or token), encoded once.

    Building one never raises, so that a caller can drop its own reference
    to the secret before anything can fail (a traceback keeps every frame's
    locals, and some loggers print them); :meth:`mechanism` raises instead.
    The repr never shows the secret.

    Args:
        username: the user name.
        secret: the password, or the OAuth 2.0 access token for XOAUTH2.
    """

    __slots__ = ("_secret", "_secret_problem", "_username", "_username_problem")

    def __init__(self, username: object, secret: object) -> None:
        self._username, self._username_problem = _encode(username)
        self._secret, self._secret_problem = _encode(secret)

    def __repr__(self) -> str:
        return "<Credentials>"

    def check(self, secret_name: str = "password") -> None:
        """Raise if the credentials cannot be used.

        Raises:
            SMTPAuthenticationError: the user name or the secret cannot be
                encoded as UTF-8 (a lone surrogate).
            TypeError: one of them is neither str nor bytes.
        """
        if self._username_problem is not None:
            raise _problem("user name", self._username_problem)
        if self._secret_problem is not None:
            raise _problem(secret_name, self._secret_problem)

    def secret_text(self) -> str:
        """The secret as text (empty when it cannot be encoded).

        For a token provider that must be told which token the server refused;
        pass it straight on, so that no local variable holds it.
        """
        return self._secret.decode("utf-8", "replace")

    def mechanism(self, kind: type[_M]) -> _M:
        """A ``kind`` mechanism for these credentials.

        Raises:
            as :meth:`check`.
        """
        self.check(kind.secret_name)
        return kind(self._username, self._secret)


class Mechanism:
    """A SASL mechanism. Subclasses set ``name`` and override the two steps.

    Args:
        username: the user name.
        secret: the password (the access token for XOAUTH2).

    Raises:
        SMTPAuthenticationError: the user name or the secret cannot be
            encoded as UTF-8; the error never quotes them.
        TypeError: one of them is neither str nor bytes.
    """

    name = ""
    #: What the secret is called in error messages.
    secret_name = "password"

    def __init__(self, username: str | bytes, secret: str | bytes) -> None:
        credentials = Credentials(username, secret)
        del username, secret  # not left in this frame's locals for a traceback to show
        credentials.check(self.secret_name)
        self._username = credentials._username
        self._secret = credentials._secret
        self.round = 0

    def __repr__(self) -> str:
        # Never show the secret; the user name is not secret but keep reprs lean.
        return f"<{type(self).__name__} mechanism>"

    def initial_response(self) -> bytes | None:
        """The response sent with the AUTH command itself, if any."""
        return None

    def respond(self, challenge: bytes) -> bytes:
        """Answer one decoded challenge."""
        raise SMTPAuthenticationError(-1, f"Unexpected {self.name} challenge")


class Plain(Mechanism):
    """PLAIN (RFC 4616): ``\\0user\\0password`` in one step."""

    name = "PLAIN"

    def initial_response(self) -> bytes:
        """Send the credentials with the command."""
        return b"\0" + self._username + b"\0" + self._secret

    def respond(self, challenge: bytes) -> bytes:
        """Some servers send an empty challenge first; answer it the same."""
        return self.initial_response()


class Login(Mechanism):
    """LOGIN (draft-murchison-sasl-login): the user name, then the password."""

    name = "LOGIN"

    def respond(self, challenge: bytes) -> bytes:
        """Answer "Username:" then "Password:" by position, not by wording."""
        self.round += 1
        if self.round == 1:
            return self._username
        if self.round == 2:
            return self._secret
        return super().respond(challenge)


class CramMD5(Mechanism):
    """CRAM-MD5 (RFC 2195): ``user HMAC-MD5(password, challenge)``."""

    name = "CRAM-MD5"

    def respond(self, challenge: bytes) -> bytes:
        """Answer the one challenge."""
        self.round += 1
        if self.round > 1:
            return super().respond(challenge)
        digest = hmac.new(self._secret, challenge, hashlib.md5).hexdigest()
        return self._username + b" " + digest.encode("ascii")


class XOAuth2(Mechanism):
    """XOAUTH2 (Google/Microsoft OAuth 2.0 bearer tokens); the secret is the token."""

    name = "XOAUTH2"
    secret_name = "OAuth token"

    def initial_response(self) -> bytes:
        """``user=...^Aauth=Bearer ...^A^A``."""
        return b"user=" + self._username + b"\x01auth=Bearer " + self._secret + b"\x01\x01"

    def respond(self, challenge: bytes) -> bytes:
        """A challenge carries the server's JSON error: answer empty to get the final reply."""
        return b""


#: Mechanisms by name, in the order :meth:`SMTP.login` prefers them.
MECHANISMS: dict[str, type[Mechanism]] = {
    "CRAM-MD5": CramMD5,
    "PLAIN": Plain,
    "LOGIN": Login,
}


class AuthExchange:
    """One AUTH exchange over a mechanism.

    Usage: send :meth:`start`; feed each reply to :meth:`on_reply`; it returns
    the next line to send, or None once the server accepted (235). A refusal
    raises :class:`SMTPAuthenticationError`.
    """

    def __init__(self, mechanism: Mechanism, max_rounds: int = MAX_AUTH_ROUNDS) -> None:
        self.mechanism = mechanism
        self.max_rounds = max_rounds
        self.rounds = 0

    def start(self) -> bytes:
        """The AUTH command line."""
        initial = self.mechanism.initial_response()
        if initial is None:
            return f"AUTH {self.mechanism.name}\r\n".encode("ascii")
        # RFC 4954 4: an empty initial response is sent as "=".
        encoded = base64.b64encode(initial) if initial else b"="
        return SecretBytes(
            b"AUTH " + self.mechanism.name.encode("ascii") + b" " + encoded + b"\r\n"
        )

    def on_reply(self, reply: SMTPResponse) -> bytes | None:
        """Judge a reply: None when authenticated, else the next response line.

        Raises:
            SMTPAuthenticationError: the server refused, or challenged too often.
            SMTPProtocolError: a challenge that is not valid base64.
        """
        if reply.code == 235:
            return None
        if reply.code != 334:
            raise SMTPAuthenticationError(reply.code, reply.message)
        self.rounds += 1
        if self.rounds > self.max_rounds:
            raise SMTPAuthenticationError(
                -1, f"Server sent more than {self.max_rounds} AUTH challenges"
            )
        try:
            challenge = base64.b64decode(reply.message.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SMTPProtocolError("AUTH challenge is not valid base64") from None
        return SecretBytes(base64.b64encode(self.mechanism.respond(challenge)) + b"\r\n")
