"""smtp_backends.outcomes: the one classifier of what became of a message."""

from __future__ import annotations

import pytest

from smtp_backends import (
    SMTPCertificateError,
    SMTPConnectError,
    SMTPDataError,
    SMTPNotSupported,
    SMTPPoolClosedError,
    SMTPPoolTimeoutError,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)
from smtp_backends.outcomes import Verdict, classify, is_sent, refusals, resend_now


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (({}, "250 ok"), Verdict.SENT),
        (({"b@x": SMTPResponse(550, "no")}, "250 ok"), Verdict.REFUSED),
        (SMTPSenderRefused(451, "later", "a@x"), Verdict.RETRYABLE),
        (SMTPSenderRefused(550, "no", "a@x"), Verdict.PERMANENT),
        (SMTPDataError(452, "full"), Verdict.RETRYABLE),
        (SMTPDataError(554, "spam"), Verdict.PERMANENT),
        (SMTPRecipientsRefused([SMTPRecipientRefused(450, "busy", "a@x")]), Verdict.RETRYABLE),
        (SMTPRecipientsRefused([SMTPRecipientRefused(550, "no", "a@x")]), Verdict.PERMANENT),
        (SMTPConnectError("refused"), Verdict.RETRYABLE),
        (SMTPServerDisconnected("lost before data"), Verdict.RETRYABLE),
        (SMTPReadTimeoutError("slow"), Verdict.RETRYABLE),
        (SMTPPoolTimeoutError("busy"), Verdict.RETRYABLE),
        (SMTPPoolClosedError("closing"), Verdict.RETRYABLE),
        (ConnectionRefusedError(111, "refused"), Verdict.RETRYABLE),
        (SMTPUnknownOutcomeError("after the dot"), Verdict.UNKNOWN),
        (SMTPUnknownOutcomeTimeoutError("after the dot"), Verdict.UNKNOWN),
        (SMTPCertificateError("bad cert"), Verdict.PERMANENT),
        (SMTPProtocolError("garbage"), Verdict.PERMANENT),
        (SMTPNotSupported("no SMTPUTF8"), Verdict.PERMANENT),
        (ValueError("bad address"), Verdict.PERMANENT),
    ],
    ids=lambda value: type(value).__name__,
)
def test_classify(outcome: object, verdict: Verdict) -> None:
    assert classify(outcome) is verdict  # type: ignore[arg-type]
    assert is_sent(outcome) is (verdict in {Verdict.SENT, Verdict.REFUSED})


def test_resend_now_only_before_the_end_of_data() -> None:
    assert resend_now(SMTPServerDisconnected("lost before data"))
    assert not resend_now(SMTPUnknownOutcomeError("after the dot"))
    assert not resend_now(SMTPDataError(451, "later"))
    assert not resend_now(({}, "250 ok"))


def test_refusals_per_recipient() -> None:
    partial = ({"t@x": SMTPResponse(450, "busy"), "r@x": SMTPResponse(550, "no")}, "250 ok")
    listed = [(rcpt, error.code, verdict) for rcpt, error, verdict in refusals(partial)]
    assert listed == [("t@x", 450, Verdict.RETRYABLE), ("r@x", 550, Verdict.PERMANENT)]
    everyone = SMTPRecipientsRefused([SMTPRecipientRefused(550, "no", "a@x")])
    assert [(r, v) for r, _, v in refusals(everyone)] == [("a@x", Verdict.PERMANENT)]
    assert refusals(SMTPDataError(554, "spam")) == []
    assert refusals(({}, "250 ok")) == []
