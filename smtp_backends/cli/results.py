"""What happened to each message of ``send``, and the summary and exit status of a batch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .. import SMTPResponse
from ..errors import (
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPUnknownOutcomeError,
)
from .exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNKNOWN
from .output import one_line

__all__ = (
    "STATUSES",
    "MessageResult",
    "NotSent",
    "Outcome",
    "exit_status",
    "print_summary",
    "summarise",
)

#: What the client returns for a sent message: refused recipients, and the final reply.
Outcome = tuple[dict[str, SMTPResponse], str]

#: Problems listed per kind in the text summary (``--json`` has every message).
_LISTED = 10

#: A message's status in a report, in the order the summary lists them.
STATUSES = ("sent", "refused", "failed", "unknown", "not_sent")


class NotSent(Exception):
    """A message the interrupted batch never handed to the server."""


@dataclass
class MessageResult:
    """What happened to one message."""

    label: str
    sender: str
    recipients: list[str]
    size: int
    #: One of :data:`STATUSES`: sent (maybe with some recipients refused),
    #: refused (every recipient refused), failed, unknown outcome, not sent.
    status: str = "not_sent"
    #: The server's reply to the end of data, for a sent message.
    reply: str | None = None
    #: Refused recipients and the server's reply to each.
    refused: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def settle(self, outcome: Outcome | BaseException) -> None:
        """Record ``outcome``: the client's ``(errors, reply)`` or the exception."""
        if isinstance(outcome, tuple):
            errors, reply = outcome
            self.status, self.reply = "sent", one_line(reply)
            self.refused = {rcpt: one_line(str(answer)) for rcpt, answer in errors.items()}
        elif isinstance(outcome, SMTPRecipientsRefused):
            self.status = "refused"
            refusals = cast("list[SMTPRecipientRefused]", outcome.recipients)
            self.refused = {r.recipient: one_line(f"{r.code} {r.message}") for r in refusals}
        elif isinstance(outcome, SMTPUnknownOutcomeError):
            self.status, self.error = "unknown", one_line(str(outcome))
        elif isinstance(outcome, NotSent):
            self.status, self.error = "not_sent", str(outcome)
        elif isinstance(outcome, SMTPResponseException):
            self.status = "failed"
            self.error = one_line(f"{type(outcome).__name__}: {outcome.code} {outcome.message}")
        else:
            self.status = "failed"
            self.error = one_line(f"{type(outcome).__name__}: {outcome}")

    def line(self) -> str:
        """One line for the progress display."""
        refusals = "; ".join(f"{rcpt}: {reply}" for rcpt, reply in self.refused.items())
        if self.status == "sent":
            return f"{self.label}: {self.reply}" + (f"; refused {refusals}" if refusals else "")
        if self.status == "refused":
            return f"{self.label}: {refusals}"
        return f"{self.label}: {self.error}"

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {
            "source": self.label,
            "from": self.sender,
            "to": self.recipients,
            "size": self.size,
            "status": self.status,
            "reply": self.reply,
            "refused": self.refused,
            "error": self.error,
        }


def summarise(results: Sequence[MessageResult]) -> dict[str, int]:
    """Messages per status, and how many recipients were refused."""
    counts = {status: 0 for status in STATUSES}
    for result in results:
        counts[result.status] += 1
    counts["recipients_refused"] = sum(len(result.refused) for result in results)
    return counts


def exit_status(results: Sequence[MessageResult], interrupted: bool) -> int:
    """The documented exit status for these results."""
    counts = summarise(results)
    if interrupted:
        return EXIT_INTERRUPTED
    if counts["unknown"]:
        return EXIT_UNKNOWN
    if counts["failed"] or counts["refused"] or counts["recipients_refused"]:
        return EXIT_FAILED
    return EXIT_OK


def print_summary(
    results: Sequence[MessageResult], where: str, elapsed: float, interrupted: bool
) -> None:
    """Write the text summary of a batch to standard output."""
    counts = summarise(results)
    total = len(results)
    out = sys.stdout
    out.write(f"{counts['sent']} of {total} sent to {where} in {elapsed:.2f} s\n")
    labels = (
        ("sent", "sent"),
        ("refused", "refused (every recipient)"),
        ("failed", "failed"),
        ("unknown", "unknown outcome"),
        ("not_sent", "not sent"),
        ("recipients_refused", "recipients refused"),
    )
    for key, label in labels:
        out.write(f"  {label + ':':<27}{counts[key]:>6}\n")
    for status, title in (
        ("refused", "Refused recipients"),
        ("failed", "Failed"),
        ("unknown", "Unknown outcome (may have been delivered; do not resend blindly)"),
        ("not_sent", "Not sent"),
    ):
        if status == "refused":
            lines = [
                f"  {r.label}: {rcpt}: {reply}"
                for r in results
                for rcpt, reply in r.refused.items()
            ]
        else:
            lines = [f"  {r.label}: {r.error}" for r in results if r.status == status]
        if lines:
            out.write(f"{title}:\n")
            out.write("".join(one_line(line) + "\n" for line in lines[:_LISTED]))
            if len(lines) > _LISTED:
                out.write(f"  ... and {len(lines) - _LISTED} more (--json lists every message)\n")
    if interrupted:
        out.write("Interrupted by Ctrl-C.\n")
    out.flush()
