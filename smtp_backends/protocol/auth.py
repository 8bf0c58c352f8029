"""SASL mechanisms for SMTP AUTH (RFC 4954) as pure challenge -> response steps.

A mechanism gives an optional initial response and then answers each
decoded server challenge. :class:`AuthExchange` drives one exchange: it
base64-encodes, decodes, judges replies and caps the number of rounds, so a
server that keeps challenging forever cannot keep the client busy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from ..errors import SMTPAuthenticationError, SMTPProtocolError
from .replies import SMTPResponse

__all__ = (
    "MECHANISMS",
    "AuthExchange",
    "CramMD5",
    "Login",
    "Mechanism",
    "Plain",
    "XOAuth2",
)

#: Most challenge rounds accepted in one exchange (LOGIN needs 2).
MAX_AUTH_ROUNDS = 5


def _utf8(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


class Mechanism:
    """A SASL mechanism. Subclasses set ``name`` and override the two steps."""

    name = ""

    def __init__(self, username: str | bytes, secret: str | bytes) -> None:
        self._username = _utf8(username)
        self._secret = _utf8(secret)
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
        return b"AUTH " + self.mechanism.name.encode("ascii") + b" " + encoded + b"\r\n"

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
        return base64.b64encode(self.mechanism.respond(challenge)) + b"\r\n"
