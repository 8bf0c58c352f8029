"""What crosses the broker (:class:`QueuedMessage`), the dedupe store, failures and reports."""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from smtp_backends import outcomes
from smtp_backends.outcomes import Verdict

__all__ = (
    "DedupeStore",
    "DeliveryReport",
    "EnqueueItem",
    "Failure",
    "QueuedMessage",
    "RedisDedupe",
    "classify",
    "message_id_of",
)

logger = logging.getLogger("smtp_backends.celery")

#: What :meth:`SMTPQueue.enqueue_many` takes per message.
EnqueueItem = Union["QueuedMessage", tuple[str, Union[str, Sequence[str]], bytes]]  # noqa: UP007


# ----------------------------------------------------------------------------- messages


def message_id_of(data: bytes) -> str | None:
    """The Message-ID header of raw message ``data`` (None if it has none).

    Only the header block is parsed.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 2]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    value = parsed.get("Message-ID")
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


@dataclass(frozen=True)
class QueuedMessage:
    """One message as it crosses the broker: id, envelope and exact bytes.

    Args:
        sender: the envelope sender (MAIL FROM); "" for the null sender.
        recipients: the envelope recipients (RCPT TO).
        data: the message bytes, sent unchanged.
        message_id: its Message-ID; by default read from ``data``, else a
            hash of the envelope and the bytes.

    Raises:
        TypeError: ``data`` is not bytes, or an address is not a str.
        ValueError: no recipients.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str = ""
    #: The dedupe key: the message id and the envelope (a retry to some of the
    #: recipients is another envelope, with a key of its own).
    key: str = field(init=False, repr=False)

    def __init__(
        self,
        sender: str,
        recipients: str | Iterable[str],
        data: bytes,
        message_id: str | None = None,
    ) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"message data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        rcpts = (recipients,) if isinstance(recipients, str) else tuple(recipients)
        if not isinstance(sender, str) or not all(isinstance(r, str) for r in rcpts):
            raise TypeError("the sender and the recipients must be str")
        if not rcpts:
            raise ValueError("a message needs at least one recipient")
        if not message_id:
            message_id = message_id_of(data) or "sha256:" + _digest(sender, rcpts, data)
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "recipients", rcpts)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "message_id", message_id)
        key = _digest(message_id, (sender, *rcpts))
        object.__setattr__(self, "key", key)

    def to_json(self) -> dict[str, Any]:
        """The JSON form sent to the broker (bytes as base64 text)."""
        return {
            "id": self.message_id,
            "from": self.sender,
            "to": list(self.recipients),
            "data": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_json(cls, value: Any) -> QueuedMessage:
        """The message from its JSON form.

        Raises:
            ValueError: not a message produced by :meth:`to_json`.
        """
        try:
            data = base64.b64decode(value["data"], validate=True)
            return cls(value["from"], value["to"], data, value["id"])
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a queued message: {exc!r}") from exc

    def with_recipients(self, recipients: Iterable[str]) -> QueuedMessage:
        """The same id and bytes to other recipients."""
        return QueuedMessage(self.sender, recipients, self.data, self.message_id)


def _digest(*parts: str | bytes | tuple[str, ...]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        items = part if isinstance(part, tuple) else (part,)
        for item in items:
            hasher.update(
                item.encode("utf-8", "surrogateescape") if isinstance(item, str) else item
            )
            hasher.update(b"\0")
    return hasher.hexdigest()


def _as_message(item: EnqueueItem) -> QueuedMessage:
    if isinstance(item, QueuedMessage):
        return item
    if isinstance(item, tuple) and len(item) == 3:
        return QueuedMessage(*item)
    raise TypeError(
        f"expected a QueuedMessage or a (sender, recipients, data) tuple, not {item!r:.80}"
    )


# ----------------------------------------------------------------------------- dedupe store


class DedupeStore(Protocol):
    """Where accepted messages are remembered (see :class:`RedisDedupe`)."""

    def seen(self, keys: Sequence[str]) -> set[str]:
        """The keys of ``keys`` already recorded as accepted."""

    def mark(self, key: str) -> None:
        """Record ``key`` as accepted (called the moment the server accepts it)."""


class RedisDedupe:
    """Accepted-message keys in Redis, each one expiring after ``ttl`` seconds.

    Args:
        url: a Redis URL (``redis://``, ``rediss://``, ``unix://``).
        ttl: seconds a key is kept (7 days): longer than any redelivery.
        prefix: prepended to every key.

    The client is made lazily, once per process (a forked worker gets its own).
    """

    def __init__(
        self, url: str, *, ttl: int = 7 * 24 * 3600, prefix: str = "smtp_backends:sent:"
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be a number of seconds > 0, not {ttl!r}")
        self.url = url
        self.ttl = int(ttl)
        self.prefix = prefix
        self._client: Any = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"<RedisDedupe {self.url.split('@')[-1]!r} ttl={self.ttl}>"

    @property
    def client(self) -> Any:
        """This process's ``redis.Redis`` client."""
        if self._client is None or self._pid != os.getpid():
            import redis  # the celery extra's dependency, only needed in workers

            self._client = redis.Redis.from_url(self.url, socket_timeout=10)
            self._pid = os.getpid()
        return self._client

    def seen(self, keys: Sequence[str]) -> set[str]:
        """The keys already recorded."""
        if not keys:
            return set()
        values = self.client.mget([self.prefix + key for key in keys])
        return {key for key, value in zip(keys, values, strict=True) if value is not None}

    def mark(self, key: str) -> None:
        """Record ``key`` (with the TTL)."""
        self.client.set(self.prefix + key, b"1", ex=self.ttl)


def _redis_url_of(broker: Any) -> str | None:
    """The broker URL if the broker is Redis (the first of a failover list)."""
    if isinstance(broker, (list, tuple)):
        broker = broker[0] if broker else None
    if not isinstance(broker, str):
        return None
    url = broker.split(";")[0].strip()
    if url.startswith(("redis://", "rediss://")):
        return url
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://") :]
    return None


# ----------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Failure:
    """A message (or some of its recipients) that will not be sent.

    Attributes:
        message_id: the message's id.
        sender: the envelope sender.
        recipients: the recipients it failed for.
        error: the exception (or the refusal, as an SMTPResponseException).
        reason: "permanent", "unknown-outcome" or "retries-exhausted".
        attempts: how many times the task ran for it.
    """

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    error: Exception
    reason: str
    attempts: int


@dataclass
class DeliveryReport:
    """What :meth:`SMTPQueue.deliver` did with one payload.

    Attributes:
        sent: messages the server accepted now.
        skipped: messages found already accepted (a redelivered task).
        failed: final failures (already logged, not yet reported).
        retry: messages (or recipient subsets) to try again, each with its error.
    """

    sent: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    retry: list[tuple[QueuedMessage, Exception]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts, as the task returns them."""
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "retrying": len(self.retry),
        }

    def judge(self, message: QueuedMessage, outcome: Any, attempts: int) -> None:
        """Sort one message's outcome into sent, retry and failed."""
        verdict = outcomes.classify(outcome)
        if outcomes.is_sent(outcome):
            self.sent += 1
        elif verdict is Verdict.UNKNOWN or not outcomes.refusals(outcome):
            if verdict is Verdict.RETRYABLE:
                self.retry.append((message, outcome))
            else:
                self.fail(message, message.recipients, outcome, classify(outcome), attempts)
            return
        refusals = outcomes.refusals(outcome)
        again = [rcpt for rcpt, _, kind in refusals if kind is Verdict.RETRYABLE]
        if again:
            first = next(error for rcpt, error, _ in refusals if rcpt in again)
            self.retry.append((message.with_recipients(again), first))
        for recipient, error, kind in refusals:
            if kind is not Verdict.RETRYABLE:
                self.fail(message, (recipient,), error, "permanent", attempts)

    def fail(
        self,
        message: QueuedMessage,
        recipients: tuple[str, ...],
        error: Exception,
        reason: str,
        attempts: int,
    ) -> None:
        """Record a final failure of ``message`` for ``recipients`` (and log it)."""
        logger.error(
            "message %s to %s failed (%s, %d attempt(s)): %s: %s",
            message.message_id,
            ", ".join(recipients),
            reason,
            attempts,
            type(error).__name__,
            error,
        )
        self.failed.append(
            Failure(message.message_id, message.sender, recipients, error, reason, attempts)
        )


# The sending layer's verdicts in this module's words (its public API since 0.1).
_KINDS = {Verdict.RETRYABLE: "transient", Verdict.UNKNOWN: "unknown-outcome"}


def classify(error: BaseException) -> str:
    """How a failed send is treated: "transient", "permanent" or "unknown-outcome".

    :func:`smtp_backends.outcomes.classify` decides: transient (retried) for
    4xx replies, connections refused, lost or timed out before the end of
    data, no free pooled connection, the pool closing; unknown outcome
    (never retried) after the end-of-data dot; permanent for the rest (5xx,
    invalid addresses, certificate failures).
    """
    return _KINDS.get(outcomes.classify(error), "permanent")
