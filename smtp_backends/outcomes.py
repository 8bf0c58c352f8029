"""What became of a message: one classifier for the pool, the queue and every adapter.

A send ends in one of:

* :attr:`Verdict.SENT`: the server accepted it for every recipient;
* :attr:`Verdict.REFUSED`: accepted for some recipients, refused for
  others (:func:`refusals` lists them, each with its own verdict);
* :attr:`Verdict.RETRYABLE`: a transient failure (4xx, connection refused,
  lost or timed out before the end of data, no free pooled connection):
  trying again later may succeed, and the server does not have it;
* :attr:`Verdict.PERMANENT`: 5xx, invalid addresses, certificate failures:
  trying again cannot help;
* :attr:`Verdict.UNKNOWN`: the connection ended (or the reply timed out)
  after the end-of-data dot: the server may have it, so it is never resent
  automatically (RFC 5321 4.1.1.4 makes the reply to the dot the only proof).

:func:`resend_now` is the narrower rule of the pool: a message may go out
again at once, on another connection, only when its connection was lost
before its end of data.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from .errors import (
    SMTPCertificateError,
    SMTPConnectError,
    SMTPException,
    SMTPPoolClosedError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPUnknownOutcomeError,
)
from .protocol.transaction import Outcome

__all__ = ("Verdict", "classify", "is_sent", "refusals", "resend_now")


class Verdict(str, enum.Enum):
    """The kind of outcome of one message (see the module's docstring)."""

    SENT = "sent"
    REFUSED = "refused"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    UNKNOWN = "unknown-outcome"


# Members as module globals for the classifier, which judges every failed
# message: on CPython 3.11 looking a member up on its Enum class costs ten
# times as much.
_SENT = Verdict.SENT
_REFUSED = Verdict.REFUSED
_RETRYABLE = Verdict.RETRYABLE
_PERMANENT = Verdict.PERMANENT
_UNKNOWN = Verdict.UNKNOWN


def is_sent(outcome: object) -> bool:
    """Whether the server accepted the message (for at least one recipient)."""
    return isinstance(outcome, tuple)


# Nothing reached the server, or it may come back: refused, lost or timed out
# before the end of data, or no pooled connection free or left.
_TRANSIENT = (SMTPConnectError, SMTPServerDisconnected, SMTPTimeoutError, SMTPPoolClosedError)


def _by_code(code: int) -> Verdict:
    # RFC 5321 4.2.1: 4yz is a transient negative completion, 5yz a permanent one.
    return _RETRYABLE if 400 <= code < 500 else _PERMANENT


def classify(outcome: Outcome | BaseException) -> Verdict:
    """The :class:`Verdict` of one message's outcome.

    Args:
        outcome: ``(refused recipients, reply)`` as a send returns it, or
            the exception the message failed with.
    """
    if isinstance(outcome, tuple):
        return _REFUSED if outcome[0] else _SENT
    if isinstance(outcome, SMTPUnknownOutcomeError):
        return _UNKNOWN
    if isinstance(outcome, SMTPRecipientsRefused):
        codes = [refused.code for refused in outcome.recipients]  # type: ignore[attr-defined]
        transient = any(400 <= code < 500 for code in codes)
        return _RETRYABLE if transient else _PERMANENT
    if isinstance(outcome, SMTPResponseException) and outcome.code >= 0:
        return _by_code(outcome.code)
    if isinstance(outcome, SMTPCertificateError):
        return _PERMANENT  # retrying cannot fix a certificate
    if isinstance(outcome, _TRANSIENT):
        return _RETRYABLE
    if isinstance(outcome, SMTPException):
        return _PERMANENT
    if isinstance(outcome, OSError):  # refused, reset, unreachable: nothing was sent
        return _RETRYABLE
    return _PERMANENT


def resend_now(outcome: object) -> bool:
    """Whether a failed message may go out again at once on another connection.

    Only when the connection was lost before its end-of-data dot: the server
    cannot have accepted it. Never after the dot (the outcome is unknown).
    """
    return isinstance(outcome, SMTPServerDisconnected) and not isinstance(
        outcome, SMTPUnknownOutcomeError
    )


def refusals(outcome: Outcome | BaseException) -> list[tuple[str, SMTPResponseException, Verdict]]:
    """The recipients refused in ``outcome``, each with its error and verdict.

    A partly accepted message lists the refused recipients of its reply
    dictionary; a message refused for every recipient lists those of its
    :class:`SMTPRecipientsRefused`. Anything else refuses no one in particular.
    """
    if isinstance(outcome, tuple):
        return [
            (
                rcpt,
                SMTPResponseException(reply.code, f"{rcpt}: {reply.message}"),
                _by_code(reply.code),
            )
            for rcpt, reply in outcome[0].items()
        ]
    if isinstance(outcome, SMTPRecipientsRefused):
        refused: Sequence[SMTPRecipientRefused] = outcome.recipients  # type: ignore[assignment]
        return [(r.recipient, r, _by_code(r.code)) for r in refused]
    return []
