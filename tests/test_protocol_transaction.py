"""Tables for judging one mail transaction (smtp_backends.protocol.transaction)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from smtp_backends.errors import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPUnknownOutcomeError,
)
from smtp_backends.protocol.replies import SMTPResponse
from smtp_backends.protocol.transaction import AfterData, Envelope, Transaction

R = SMTPResponse
SENDER = "s@example.org"
A = "a@example.org"
B = "b@example.org"
CONTENT = b"Subject: x\r\n\r\nbody\r\n"

# Envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "recipients", "mail_options", "rcpt_options", "utf8", "commands"),
    [
        (
            SENDER,
            [A],
            (),
            (),
            False,
            [b"MAIL FROM:<s@example.org>\r\n", b"RCPT TO:<a@example.org>\r\n", b"DATA\r\n"],
        ),
        (
            "",
            (A, B),
            (),
            (),
            False,
            [
                b"MAIL FROM:<>\r\n",
                b"RCPT TO:<a@example.org>\r\n",
                b"RCPT TO:<b@example.org>\r\n",
                b"DATA\r\n",
            ],
        ),
        (
            "Sender <s@example.org>",
            ["Ann <a@example.org>"],
            ["SIZE=20", "BODY=8BITMIME"],
            ["NOTIFY=NEVER"],
            False,
            [
                b"MAIL FROM:<s@example.org> SIZE=20 BODY=8BITMIME\r\n",
                b"RCPT TO:<a@example.org> NOTIFY=NEVER\r\n",
                b"DATA\r\n",
            ],
        ),
        (
            "ß@example.org",
            ["ü@exämple.org"],
            ["SMTPUTF8"],
            (),
            True,
            [
                "MAIL FROM:<ß@example.org> SMTPUTF8\r\n".encode(),
                "RCPT TO:<ü@exämple.org>\r\n".encode(),
                b"DATA\r\n",
            ],
        ),
    ],
)
def test_envelope_commands(
    sender: str,
    recipients: Sequence[str],
    mail_options: Sequence[str],
    rcpt_options: Sequence[str],
    utf8: bool,
    commands: list[bytes],
) -> None:
    envelope = Envelope(sender, recipients, CONTENT, mail_options, rcpt_options, utf8=utf8)
    assert envelope.commands == commands
    assert envelope.sender == sender
    assert envelope.recipients == list(recipients)
    assert envelope.content is CONTENT


def test_envelope_copies_recipients() -> None:
    recipients = [A]
    envelope = Envelope(SENDER, recipients, CONTENT)
    recipients.append(B)
    assert envelope.recipients == [A]


@pytest.mark.parametrize("recipients", [[], ()])
def test_envelope_needs_a_recipient(recipients: Sequence[str]) -> None:
    with pytest.raises(ValueError) as info:
        Envelope(SENDER, recipients, CONTENT)
    assert str(info.value) == "A message needs at least one recipient"


@pytest.mark.parametrize(
    ("sender", "recipients", "mail_options", "rcpt_options", "message"),
    [
        ("s@example.org> SIZE=1", [A], (), (), "not allowed in an SMTP path"),
        ("s@example.org\r\nRSET", [A], (), (), "control character"),
        (SENDER, [A, "b@example.org>\r\nRCPT TO:<c@example.org"], (), (), "control character"),
        (SENDER, [A, ""], (), (), "Empty address"),
        (SENDER, [A, "b c@example.org"], (), (), "not allowed in an SMTP path"),
        (SENDER, ["ü@example.org"], (), (), "cannot be encoded as ascii"),
        ("ß@example.org", [A], (), (), "cannot be encoded as ascii"),
        (SENDER, [A], ["SIZE=1 BODY=8BITMIME"], (), "Malformed ESMTP parameter"),
        (SENDER, [A], (), ["NOTIFY=NEVER\r\n"], "Malformed ESMTP parameter"),
    ],
)
def test_envelope_refuses_bad_arguments(
    sender: str,
    recipients: list[str],
    mail_options: Sequence[str],
    rcpt_options: Sequence[str],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        Envelope(sender, recipients, CONTENT, mail_options, rcpt_options)


def test_envelope_non_str_address() -> None:
    with pytest.raises(TypeError):
        Envelope(SENDER, [b"a@example.org"], CONTENT)  # type: ignore[list-item]


# Transaction: pipelined judgement tables ---------------------------------------------------


def _outcome_repr(outcome: object) -> object:
    """Exceptions compare by type, args and attributes (recursively); other values as they are."""
    if isinstance(outcome, BaseException):
        return (type(outcome), _outcome_repr(outcome.args), _outcome_repr(vars(outcome)))
    if isinstance(outcome, dict):
        return {key: _outcome_repr(value) for key, value in outcome.items()}
    if isinstance(outcome, (list, tuple)) and not isinstance(outcome, SMTPResponse):
        return [_outcome_repr(value) for value in outcome]
    return outcome


def _refused(*items: tuple[int, str, str]) -> SMTPRecipientsRefused:
    return SMTPRecipientsRefused([SMTPRecipientRefused(c, m, a) for c, m, a in items])


# (recipients, MAIL reply, RCPT replies, DATA reply, after DATA, end-of-data reply, outcome)
ROWS = {
    "all-accepted": (
        [A, B],
        R(250, "2.1.0 Ok"),
        [R(250, "2.1.5 Ok"), R(250, "2.1.5 Ok")],
        R(354, "Go ahead"),
        AfterData.CONTENT,
        R(250, "2.0.0 Ok: queued as 12345"),
        ({}, "2.0.0 Ok: queued as 12345"),
    ),
    "251-forwarded-is-accepted": (
        [A],
        R(250, "Ok"),
        [R(251, "User not local; will forward")],
        R(354, "Go"),
        AfterData.CONTENT,
        R(250, "Ok"),
        ({}, "Ok"),
    ),
    "partial-refusal": (
        [A, B],
        R(250, "Ok"),
        [R(550, "5.1.1 No such user"), R(250, "Ok")],
        R(354, "Go"),
        AfterData.CONTENT,
        R(250, "Queued"),
        ({A: R(550, "5.1.1 No such user")}, "Queued"),
    ),
    "partial-refusal-temporary": (
        [A, B, "c@example.org"],
        R(250, "Ok"),
        [R(250, "Ok"), R(452, "4.5.3 Too many"), R(450, "4.2.0 Greylisted")],
        R(354, "Go"),
        AfterData.CONTENT,
        R(250, "Queued"),
        ({B: R(452, "4.5.3 Too many"), "c@example.org": R(450, "4.2.0 Greylisted")}, "Queued"),
    ),
    "all-refused-354-gets-lone-dot": (
        [A, B],
        R(250, "Ok"),
        [R(550, "5.1.1 No"), R(551, "5.1.6 Moved")],
        R(354, "Go"),
        AfterData.EMPTY_DOT,
        R(554, "5.5.1 No valid recipients"),
        _refused((550, "5.1.1 No", A), (551, "5.1.6 Moved", B)),
    ),
    "all-refused-354-then-250-still-refused": (
        [A],
        R(250, "Ok"),
        [R(550, "No")],
        R(354, "Go"),
        AfterData.EMPTY_DOT,
        R(250, "Ok"),
        _refused((550, "No", A)),
    ),
    "all-refused-data-554": (
        [A, B],
        R(250, "Ok"),
        [R(550, "No"), R(450, "Later")],
        R(554, "5.5.1 No valid recipients"),
        AfterData.RSET,
        None,
        _refused((550, "No", A), (450, "Later", B)),
    ),
    "mail-refused": (
        [A, B],
        R(550, "5.7.1 Sender rejected"),
        [R(503, "5.5.1 Need MAIL"), R(503, "5.5.1 Need MAIL")],
        R(503, "5.5.1 Need RCPT"),
        AfterData.RSET,
        None,
        SMTPSenderRefused(550, "5.7.1 Sender rejected", SENDER),
    ),
    "mail-refused-temporarily": (
        [A],
        R(451, "4.3.0 Try later"),
        [R(503, "Need MAIL")],
        R(503, "Need RCPT"),
        AfterData.RSET,
        None,
        SMTPSenderRefused(451, "4.3.0 Try later", SENDER),
    ),
    "mail-refused-but-354": (
        [A],
        R(553, "Bad sender"),
        [R(250, "Ok")],
        R(354, "Go"),
        AfterData.EMPTY_DOT,
        R(250, "Ok"),
        SMTPSenderRefused(553, "Bad sender", SENDER),
    ),
    "data-refused-after-mail-accepted": (
        [A],
        R(250, "Ok"),
        [R(250, "Ok")],
        R(451, "4.3.0 Local error"),
        AfterData.RSET,
        None,
        SMTPDataError(451, "4.3.0 Local error"),
    ),
    "end-of-data-554": (
        [A, B],
        R(250, "Ok"),
        [R(250, "Ok"), R(550, "No")],
        R(354, "Go"),
        AfterData.CONTENT,
        R(554, "5.7.1 Spam"),
        SMTPDataError(554, "5.7.1 Spam"),
    ),
    "end-of-data-452": (
        [A],
        R(250, "Ok"),
        [R(250, "Ok")],
        R(354, "Go"),
        AfterData.CONTENT,
        R(452, "4.3.1 Insufficient storage"),
        SMTPDataError(452, "4.3.1 Insufficient storage"),
    ),
    "duplicate-recipient-all-refused": (
        [A, A],
        R(250, "Ok"),
        [R(550, "No"), R(550, "No")],
        R(354, "Go"),
        AfterData.EMPTY_DOT,
        R(554, "No valid recipients"),
        _refused((550, "No", A)),
    ),
}


@pytest.mark.parametrize(
    ("recipients", "mail", "rcpts", "data", "after", "end", "outcome"),
    ROWS.values(),
    ids=ROWS.keys(),
)
def test_transaction(
    recipients: list[str],
    mail: SMTPResponse,
    rcpts: list[SMTPResponse],
    data: SMTPResponse,
    after: AfterData,
    end: SMTPResponse | None,
    outcome: object,
) -> None:
    transaction = Transaction(Envelope(SENDER, recipients, CONTENT))
    transaction.on_mail(mail)
    for reply in rcpts:
        transaction.on_rcpt(reply)
    assert transaction.on_data(data) is after
    if end is not None:
        transaction.on_end_of_data(end)
    assert transaction.done is True
    assert _outcome_repr(transaction.outcome()) == _outcome_repr(outcome)


def test_all_refused_has_per_recipient_entries() -> None:
    transaction = Transaction(Envelope(SENDER, [A, B], CONTENT))
    transaction.on_mail(R(250, "Ok"))
    transaction.on_rcpt(R(550, "5.1.1 Unknown"))
    assert transaction.done is False
    transaction.on_rcpt(R(553, "5.1.3 Bad syntax"))
    error = transaction.outcome()
    assert isinstance(error, SMTPRecipientsRefused)
    assert [(r.code, r.message, r.recipient) for r in error.recipients] == [
        (550, "5.1.1 Unknown", A),
        (553, "5.1.3 Bad syntax", B),
    ]
    assert all(type(r) is SMTPRecipientRefused for r in error.recipients)
    assert error.message == f"{A}: 550 5.1.1 Unknown; {B}: 553 5.1.3 Bad syntax"
    assert transaction.refused == {A: R(550, "5.1.1 Unknown"), B: R(553, "5.1.3 Bad syntax")}


def test_progress_flags() -> None:
    transaction = Transaction(Envelope(SENDER, [A, B, "c@example.org"], CONTENT))
    assert (transaction.mail_accepted, transaction.any_recipient_accepted) == (False, False)
    assert transaction.done is False
    transaction.on_mail(R(250, "Ok"))
    assert (transaction.mail_accepted, transaction.any_recipient_accepted) == (True, False)
    transaction.on_rcpt(R(550, "No"))
    assert transaction.any_recipient_accepted is False
    transaction.on_rcpt(R(250, "Ok"))
    assert transaction.any_recipient_accepted is True
    transaction.on_rcpt(R(550, "No"))
    assert transaction.any_recipient_accepted is True
    assert transaction.done is False  # a recipient was accepted: go on with DATA
    assert transaction.error is None


def test_success_tuple_is_a_copy_of_refusals() -> None:
    transaction = Transaction(Envelope(SENDER, [A, B], CONTENT))
    transaction.on_mail(R(250, "Ok"))
    transaction.on_rcpt(R(250, "Ok"))
    transaction.on_rcpt(R(550, "No"))
    assert transaction.on_data(R(354, "Go")) is AfterData.CONTENT
    transaction.on_end_of_data(R(250, "Queued"))
    result = transaction.outcome()
    assert result == ({B: R(550, "No")}, "Queued")
    assert isinstance(result, tuple)
    assert result[0] is not transaction.refused
    assert transaction.result is result
    assert transaction.error is None


# Lock-step -----------------------------------------------------------------------------


def test_lock_step_mail_refused_skips_everything() -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    transaction.on_mail(R(550, "No"))
    assert transaction.done is True
    assert transaction.skip_data() is AfterData.RSET  # as smtplib and aiosmtplib
    assert _outcome_repr(transaction.outcome()) == _outcome_repr(
        SMTPSenderRefused(550, "No", SENDER)
    )


def test_lock_step_all_refused_resets() -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    transaction.on_mail(R(250, "Ok"))
    transaction.on_rcpt(R(550, "No"))
    assert transaction.done is True
    assert transaction.skip_data() is AfterData.RSET
    assert _outcome_repr(transaction.outcome()) == _outcome_repr(_refused((550, "No", A)))


# fail() and incomplete transactions -------------------------------------------------------


def test_incomplete_outcome() -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    outcome = transaction.outcome()
    assert type(outcome) is SMTPResponseException
    assert outcome.args == (-1, "Transaction did not complete")
    assert transaction.done is False


def test_fail_before_done_sets_the_error() -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    transaction.on_mail(R(250, "Ok"))
    transaction.on_rcpt(R(250, "Ok"))
    assert transaction.on_data(R(354, "Go")) is AfterData.CONTENT
    error = SMTPUnknownOutcomeError("Connection lost after the end of data")
    transaction.fail(error)
    assert transaction.done is True
    assert transaction.outcome() is error


@pytest.mark.parametrize("end", [R(250, "Queued"), R(554, "Rejected")])
def test_fail_after_done_keeps_the_outcome(end: SMTPResponse) -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    transaction.on_mail(R(250, "Ok"))
    transaction.on_rcpt(R(250, "Ok"))
    transaction.on_data(R(354, "Go"))
    transaction.on_end_of_data(end)
    before = transaction.outcome()
    transaction.fail(SMTPServerDisconnected("Connection lost"))
    assert transaction.outcome() is before
    assert _outcome_repr(before) != _outcome_repr(SMTPServerDisconnected("Connection lost"))


def test_fail_after_envelope_error_keeps_the_first_error() -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    transaction.on_mail(R(550, "No"))
    first = transaction.outcome()
    transaction.fail(SMTPServerDisconnected("gone"))
    assert transaction.outcome() is first
    assert isinstance(first, SMTPSenderRefused)


def test_first_error_wins_over_later_replies() -> None:
    transaction = Transaction(Envelope(SENDER, [A], CONTENT))
    failure = SMTPServerDisconnected("gone")
    transaction.fail(failure)
    transaction.on_mail(R(550, "No"))
    transaction.on_rcpt(R(550, "No"))
    assert transaction.on_data(R(554, "No")) is AfterData.RSET
    transaction.on_end_of_data(R(250, "Ok"))
    assert transaction.outcome() is failure
    assert transaction.result is None


def test_outcome_errors_are_smtp_exceptions() -> None:
    for row in ROWS.values():
        outcome = row[-1]
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, SMTPException)


@pytest.mark.parametrize(
    ("recipients", "mail", "rcpts", "data", "after", "end", "outcome"),
    ROWS.values(),
    ids=ROWS.keys(),
)
def test_a_whole_envelope_is_judged_as_reply_by_reply(
    recipients: list[str],
    mail: SMTPResponse,
    rcpts: list[SMTPResponse],
    data: SMTPResponse,
    after: AfterData,
    end: SMTPResponse | None,
    outcome: object,
) -> None:
    # on_envelope (the pipelined group's replies in one call) against the table above.
    transaction = Transaction(Envelope(SENDER, recipients, CONTENT))
    before = [R(250, "content of the message before")]
    assert transaction.on_envelope([*before, mail, *rcpts, data, R(250, "next")], 1) is after
    if end is not None:
        transaction.on_end_of_data(end)
    assert transaction.done is True
    assert _outcome_repr(transaction.outcome()) == _outcome_repr(outcome)


MAILS = [R(250, "m"), R(550, "no sender"), R(451, "later")]
RCPTS = [R(250, "r"), R(251, "forwarded"), R(550, "no"), R(452, "full")]
DATAS = [R(354, "go"), R(554, "no"), R(451, "later")]


@pytest.mark.parametrize("mail", MAILS, ids=str)
@pytest.mark.parametrize("data", DATAS, ids=str)
def test_on_envelope_keeps_the_state_of_on_mail_on_rcpt_on_data(
    mail: SMTPResponse, data: SMTPResponse
) -> None:
    recipients = [A, B, "c@example.org"]
    for first in RCPTS:
        for second in RCPTS:
            for third in RCPTS:
                rcpts = [first, second, third]
                one = Transaction(Envelope(SENDER, recipients, CONTENT))
                one.on_mail(mail)
                for reply in rcpts:
                    one.on_rcpt(reply)
                one_after = one.on_data(data)
                whole = Transaction(Envelope(SENDER, recipients, CONTENT))
                whole_after = whole.on_envelope([mail, *rcpts, data], 0)
                assert whole_after is one_after
                for name in ("mail_accepted", "any_recipient_accepted", "refused", "result"):
                    assert getattr(whole, name) == getattr(one, name), (name, rcpts)
                assert _outcome_repr(whole.outcome()) == _outcome_repr(one.outcome())
