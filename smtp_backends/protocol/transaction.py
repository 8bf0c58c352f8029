"""Judging one mail transaction (MAIL, RCPT..., DATA, content) from its replies.

A :class:`Transaction` is pure: it encodes its commands and, fed the reply
to each, decides what comes next and what the outcome is. The client drives
it in lock-step or pipelined (RFC 2920); the judgement is the same.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ..errors import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)
from . import commands
from .replies import SMTPResponse

__all__ = ("AfterData", "Envelope", "Outcome", "Transaction")

#: What a message send returns: refused recipients and the final reply text.
Outcome = tuple[dict[str, SMTPResponse], str]


class Envelope:
    """A message ready for the wire: sender, recipients, options and content.

    The constructor validates and encodes everything, so a bad address or
    option raises :class:`ValueError` before a byte is written.

    Args:
        sender: envelope sender (``""`` for the null reverse-path).
        recipients: envelope recipients (at least one).
        content: message bytes already passed through
            :func:`~smtp_backends.protocol.data.encode_content`.
        mail_options: ESMTP parameters for MAIL.
        rcpt_options: ESMTP parameters for every RCPT.
        utf8: encode addresses as UTF-8 (SMTPUTF8).
    """

    __slots__ = ("commands", "content", "recipients", "sender")

    def __init__(
        self,
        sender: str,
        recipients: Sequence[str],
        content: bytes,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
        *,
        utf8: bool = False,
    ) -> None:
        if not recipients:
            raise ValueError("A message needs at least one recipient")
        self.sender = sender
        self.recipients = list(recipients)
        self.content = content
        mail = commands.mail_from(sender, mail_options, utf8=utf8)
        rcpts = [commands.rcpt_to(r, rcpt_options, utf8=utf8) for r in self.recipients]
        #: MAIL, every RCPT and DATA, encoded.
        self.commands = [mail, *rcpts, b"DATA\r\n"]

    @classmethod
    def encoded(
        cls, sender: str, recipients: list[str], content: bytes, commands: list[bytes]
    ) -> Envelope:
        """An envelope whose commands the caller has already checked and encoded.

        For a preparing function that builds many envelopes (a batch): it
        validates each address as the constructor does (with
        :func:`~smtp_backends.protocol.commands.envelope_address`, refusing
        every control character) and encodes the same bytes as
        :func:`~smtp_backends.protocol.commands.mail_from` and
        :func:`~smtp_backends.protocol.commands.rcpt_to`, without a second
        pass over them here. The lists are kept, not copied.

        Args:
            sender: envelope sender, as given.
            recipients: envelope recipients, as given (at least one), in the
                order of their RCPT commands.
            content: message bytes already passed through
                :func:`~smtp_backends.protocol.data.encode_content`.
            commands: MAIL, one RCPT per recipient and DATA, each with its CRLF.
        """
        envelope = cls.__new__(cls)
        envelope.sender = sender
        envelope.recipients = recipients
        envelope.content = content
        envelope.commands = commands
        return envelope


class AfterData(enum.Enum):
    """What to send once the reply to DATA is known."""

    CONTENT = "send the content and the terminating dot"
    EMPTY_DOT = "send a lone dot to close a DATA accepted for nobody (RFC 2920 3.1)"
    # After any failed transaction, even one whose MAIL was refused (nothing
    # to undo, RFC 5321 4.1.1.5), as smtplib and aiosmtplib do: the next one
    # starts from a known state whatever the server made of the failure.
    RSET = "reset the session: the transaction failed"


# Members as module globals for on_data, which every message takes: on CPython
# 3.11 looking a member up on its Enum class costs ten times as much.
_CONTENT = AfterData.CONTENT
_EMPTY_DOT = AfterData.EMPTY_DOT
_RSET = AfterData.RSET


class Transaction:
    """The replies of one message's transaction and the verdict on them."""

    __slots__ = (
        "_accepted",
        "_rcpt_index",
        "dot_sent",
        "envelope",
        "error",
        "index",
        "mail_accepted",
        "refused",
        "result",
    )

    def __init__(self, envelope: Envelope, index: int = 0) -> None:
        self.envelope = envelope
        #: The message's position in its batch.
        self.index = index
        #: Whether the terminating dot was handed to the transport (from then
        #: on, a lost connection leaves the outcome unknown).
        self.dot_sent = False
        self.mail_accepted = False
        self.refused: dict[str, SMTPResponse] = {}
        self._rcpt_index = 0
        self._accepted = 0
        #: The failure, once known.
        self.error: SMTPException | None = None
        #: The success, once known.
        self.result: Outcome | None = None

    @property
    def done(self) -> bool:
        """Whether the outcome (success or failure) is known."""
        return self.error is not None or self.result is not None

    @property
    def any_recipient_accepted(self) -> bool:
        """Whether at least one RCPT so far got a 2xx."""
        return self._accepted > 0

    def on_mail(self, reply: SMTPResponse) -> None:
        """Judge the reply to MAIL."""
        if reply.code == 250:
            self.mail_accepted = True
        elif self.error is None:
            self.error = SMTPSenderRefused(reply.code, reply.message, self.envelope.sender)

    def on_rcpt(self, reply: SMTPResponse) -> None:
        """Judge the reply to the next RCPT (in the order sent)."""
        index = self._rcpt_index
        self._rcpt_index = index + 1
        if reply[0] == 250 or reply[0] == 251:
            self._accepted += 1
            return  # nothing more to decide: a recipient is accepted
        self.refused[self.envelope.recipients[index]] = reply
        finished = index + 1 == len(self.envelope.recipients)
        if finished and not self._accepted and self.error is None:
            self.error = SMTPRecipientsRefused(
                [SMTPRecipientRefused(r.code, r.message, a) for a, r in self.refused.items()]
            )

    def on_envelope(self, replies: Sequence[SMTPResponse], start: int) -> AfterData:
        """Judge the replies to a whole pipelined envelope and say what must follow.

        ``replies[start]`` answers MAIL, the next ones each RCPT in the
        order sent, the one after them DATA: the same judgement as
        :meth:`on_mail`, :meth:`on_rcpt` for each and :meth:`on_data`, with
        the accepting replies decided here (one call for the envelope, not
        one per reply) and every other one passed to those methods.
        """
        mail = replies[start]
        if mail[0] == 250:
            self.mail_accepted = True
        else:
            self.on_mail(mail)
        end = start + 1 + len(self.envelope.recipients)
        for reply in replies[start + 1 : end]:
            if reply[0] == 250 or reply[0] == 251:
                self._rcpt_index += 1
                self._accepted += 1
            else:
                self.on_rcpt(reply)
        data = replies[end]
        if data[0] == 354 and self.error is None:
            return _CONTENT
        return self.on_data(data)

    def on_data(self, reply: SMTPResponse) -> AfterData:
        """Judge the reply to DATA and say what must follow."""
        if reply.code == 354:
            # RFC 2920 3.1: a DATA accepted although the transaction already
            # failed is closed with a lone dot, never with the content.
            return _CONTENT if self.error is None else _EMPTY_DOT
        if self.error is None:
            self.error = SMTPDataError(reply.code, reply.message)
        return _RSET

    def skip_data(self) -> AfterData:
        """Lock-step: DATA will not be sent (the envelope already failed)."""
        return AfterData.RSET

    def on_end_of_data(self, reply: SMTPResponse) -> Outcome | SMTPException:
        """Judge the reply to the terminating dot; return the outcome (now final)."""
        error = self.error
        if error is not None:
            return error  # the lone dot after a failed envelope: its reply changes nothing
        if reply[0] == 250:
            refused = self.refused
            # A copy; a literal for the common case, nobody refused (cheaper than a call).
            result = self.result = (dict(refused) if refused else {}, reply[1])
            return result
        error = self.error = SMTPDataError(reply.code, reply.message)
        return error

    def fail(self, error: SMTPException) -> None:
        """Record a failure from outside the replies (disconnect, timeout)."""
        if not self.done:
            self.error = error

    def outcome(self) -> Outcome | SMTPException:
        """The verdict: the success tuple or the exception."""
        if self.result is not None:
            return self.result
        return self.error or SMTPResponseException(-1, "Transaction did not complete")
