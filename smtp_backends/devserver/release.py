"""Release: send a captured message on to a real SMTP server, to allowed recipients only.

A message caught by the development server can be delivered for real, for instance to
look at it in an actual mail client. The relay is given once (command line or
:class:`ReleaseConfig`); every release names its recipients (by default the message's
own envelope recipients), and **each one must match the allow-list** or nothing is
sent: a release can never reach a customer by mistake.

The message goes out byte for byte as it was received, through this package's own
client (:class:`smtp_backends.SMTP`), with the TLS mode asked for.
"""

from __future__ import annotations

import asyncio
import fnmatch
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..client import SMTP
from ..errors import SMTPConnectError, SMTPException
from .message import StoredMessage

__all__ = (
    "TLS_MODES",
    "ReleaseConfig",
    "ReleaseFailed",
    "ReleaseRefused",
    "ReleaseResult",
    "Releaser",
)

#: How the relay is reached: ``none`` (plain), ``starttls`` (required) or ``tls`` (implicit).
TLS_MODES = ("none", "starttls", "tls")


class ReleaseRefused(ValueError):
    """Some recipients are not on the allow-list (nothing was sent).

    Attributes:
        refused: the recipients that are not allowed.
    """

    def __init__(self, refused: Sequence[str]) -> None:
        super().__init__(f"not on the release allow-list: {', '.join(refused)}")
        self.refused = list(refused)


class ReleaseFailed(RuntimeError):
    """The relay could not be reached or did not accept the message."""


@dataclass(frozen=True)
class ReleaseConfig:
    """Where and to whom messages may be released.

    Attributes:
        host: the relay's host name.
        port: its port.
        tls: one of :data:`TLS_MODES`.
        allowed: recipient patterns, ignoring case: an address (``qa@example.com``),
            a domain (``@example.com``), or a shell-style pattern (``*@*.example.com``).
        username: log in with this user name (and ``password``).
        password: the password (never shown in reprs or in the JSON API).
        sender: the envelope sender to use instead of the message's own.
        cafile: a CA bundle to verify the relay's certificate with.
        timeout: seconds for each SMTP operation.

    Raises:
        ValueError: an empty allow-list, an unknown TLS mode, a port outside
            1-65535, or a username without a password.
    """

    host: str
    port: int = 25
    tls: str = "starttls"
    allowed: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str | None = None
    cafile: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allowed", tuple(p.strip().lower() for p in self.allowed if p.strip())
        )
        if not self.allowed:
            raise ValueError("a release needs an allow-list of recipients (--release-allow)")
        if self.tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}, not {self.tls!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"the release port must be between 1 and 65535, not {self.port}")
        if self.username is not None and self.password is None:
            raise ValueError("a release username needs a password")

    def allows(self, address: str) -> bool:
        """Whether ``address`` matches one of the :attr:`allowed` patterns."""
        address = address.strip().lower()
        domain = address.rpartition("@")[2]
        for pattern in self.allowed:
            if pattern.startswith("@"):
                if "@" in address and domain == pattern[1:]:
                    return True
            elif fnmatch.fnmatchcase(address, pattern):
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        """The configuration without the password (``GET /api/info``)."""
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "allowed": list(self.allowed),
            "username": self.username,
            "sender": self.sender,
        }


@dataclass(frozen=True)
class ReleaseResult:
    """A release the relay accepted.

    Attributes:
        recipients: who it went to.
        refused: recipients the relay refused (the others got it), with its replies.
        reply: the relay's final reply text.
    """

    recipients: tuple[str, ...]
    refused: dict[str, str]
    reply: str

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {"recipients": list(self.recipients), "refused": self.refused, "reply": self.reply}


class Releaser:
    """Sends stored messages to the relay of a :class:`ReleaseConfig`."""

    def __init__(self, config: ReleaseConfig) -> None:
        self.config = config

    def check(self, recipients: Iterable[str]) -> tuple[str, ...]:
        """The recipients, checked against the allow-list.

        Raises:
            ValueError: no recipient, or one that is not an address.
            ReleaseRefused: some are not allowed.
        """
        cleaned = tuple(dict.fromkeys(r.strip() for r in recipients if r.strip()))
        if not cleaned:
            raise ValueError("a release needs at least one recipient")
        for recipient in cleaned:
            if "@" not in recipient or any(c.isspace() or c in "<>,;" for c in recipient):
                raise ValueError(f"not an address: {recipient!r}")
        refused = [recipient for recipient in cleaned if not self.config.allows(recipient)]
        if refused:
            raise ReleaseRefused(refused)
        return cleaned

    def release(
        self, message: StoredMessage, recipients: Iterable[str] | None = None
    ) -> ReleaseResult:
        """Send ``message`` to ``recipients`` (default: its envelope recipients).

        Blocks until the relay answered; works from any thread (with or without a
        running event loop: the send then runs on a thread of its own).

        Raises:
            ValueError: a bad recipient list.
            ReleaseRefused: a recipient not on the allow-list (nothing sent).
            ReleaseFailed: the relay could not be reached or refused the message.
        """
        allowed = self.check(message.envelope_to if recipients is None else recipients)
        sender = self.config.sender if self.config.sender is not None else message.envelope_from
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._send(sender, allowed, message.raw))
        outcome: list[ReleaseResult | BaseException] = []

        def run() -> None:
            try:
                outcome.append(asyncio.run(self._send(sender, allowed, message.raw)))
            except BaseException as error:
                outcome.append(error)

        worker = threading.Thread(target=run, name="smtp_backends-devserver-release")
        worker.start()
        worker.join()
        [result] = outcome
        if isinstance(result, BaseException):
            raise result
        return result

    async def _send(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> ReleaseResult:
        config = self.config
        client = SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.tls == "tls",
            start_tls=config.tls == "starttls",
            username=config.username,
            password=config.password,
            cert_bundle=config.cafile,
            timeout=config.timeout,
        )
        try:
            async with client:
                errors, reply = await client.sendmail(sender, list(recipients), raw)
        except SMTPConnectError as error:
            raise ReleaseFailed(f"cannot reach {config.host}:{config.port}: {error}") from None
        except SMTPException as error:
            raise ReleaseFailed(f"the relay {config.host}:{config.port} said: {error}") from None
        except OSError as error:
            raise ReleaseFailed(f"cannot reach {config.host}:{config.port}: {error}") from None
        refused = {address: str(reply_) for address, reply_ in errors.items()}
        sent = tuple(address for address in recipients if address not in refused)
        return ReleaseResult(sent, refused, str(reply))
