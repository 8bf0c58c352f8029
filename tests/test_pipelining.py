"""PIPELINING (RFC 2920) against scripted servers that control when replies leave.

The servers here are :class:`tests.scripted.GroupServer`: with ``hold_groups`` they answer
nothing until the whole MAIL/RCPT.../DATA group has arrived, so a client that waited for a
reply before sending the rest of its group would hang (and hit the test's deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPUnknownOutcomeError,
)
from tests.scripted import STALL, GroupServer, Item
from tests.servers import ScriptedServer

SENDER = "alice@example.com"
BODY = b"Subject: pipelined\r\n\r\nHello.\r\n"
DEADLINE = 5.0  # no test here comes near it unless the client waits for a reply it never gets

MakeServer = Callable[..., ScriptedServer]


def client_for(server: ScriptedServer, **options: Any) -> SMTP:
    options.setdefault("timeout", DEADLINE)
    return SMTP(
        hostname=server.host,
        port=server.port,
        start_tls=False,
        local_hostname="client.test",
        **options,
    )


async def within(awaitable: Any, seconds: float = DEADLINE) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


def batch(count: int) -> list[tuple[str, list[str], bytes]]:
    return [
        (SENDER, [f"rcpt{k}@example.com"], b"Subject: m%d\r\n\r\nbody %d\r\n" % (k, k))
        for k in range(count)
    ]


def group_reads(group: list[Item]) -> set[int]:
    """Indices of the socket reads that delivered the items of one group."""
    return {item.read for item in group}


# --------------------------------------------------------------------------- pipelined groups


async def test_sendmail_sends_the_whole_group_before_awaiting_a_reply(
    make_scripted_server: MakeServer,
) -> None:
    server = GroupServer(hold_groups=True)
    scripted = make_scripted_server(server)
    recipients = ["bob@example.com", "carol@example.com", "dave@example.com"]
    async with client_for(scripted) as client:
        errors, text = await within(client.sendmail(SENDER, recipients, BODY))
        assert client.supports_extension("pipelining")
    assert errors == {}
    assert text == "2.0.0 queued"
    assert server.transaction_flushes() == [
        [b"MAIL", b"RCPT", b"RCPT", b"RCPT", b"DATA"],
        [b"<data>"],
    ]
    mail_group = server.flushes[1]  # flushes[0] answered EHLO
    assert mail_group[0].verb == b"MAIL"
    # The group left in one write: one socket read delivered all of it.
    assert len(group_reads(mail_group)) == 1
    assert server.lines[1:5] == [
        b"MAIL FROM:<alice@example.com>",
        b"RCPT TO:<bob@example.com>",
        b"RCPT TO:<carol@example.com>",
        b"RCPT TO:<dave@example.com>",
    ]
    assert server.data == [BODY]


@pytest.mark.parametrize("count", [1, 2, 5])
async def test_send_messages_costs_one_round_trip_per_message(
    make_scripted_server: MakeServer, count: int
) -> None:
    server = GroupServer(hold_groups=True, messages=count)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        outcomes = await within(client.send_messages(batch(count)))
    assert outcomes == [({}, "2.0.0 queued")] * count
    flushes = server.transaction_flushes()
    # Message k's content and dot travel with message k+1's MAIL/RCPT/DATA.
    assert flushes == (
        [[b"MAIL", b"RCPT", b"DATA"]]
        + [[b"<data>", b"MAIL", b"RCPT", b"DATA"]] * (count - 1)
        + [[b"<data>"]]
    )
    assert len(flushes) == count + 1
    for group in server.flushes[1:]:
        assert len(group_reads(group)) == 1, group
    assert server.data == [data for _, _, data in batch(count)]


async def test_pipelining_server_that_answers_per_read_sees_n_plus_one_round_trips(
    make_scripted_server: MakeServer,
) -> None:
    # A Postfix-like server: answers whatever one read delivered, in one write. The
    # number of reply writes is the number of round trips the client spent.
    server = GroupServer(batch_replies=True)
    scripted = make_scripted_server(server)
    count = 4
    async with client_for(scripted) as client:
        outcomes = await within(client.send_messages(batch(count)))
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert len(server.transaction_flushes()) == count + 1


async def test_a_failed_message_does_not_break_the_pipelined_batch(
    make_scripted_server: MakeServer,
) -> None:
    def refuse_second(server: GroupServer, item: Item) -> bytes | None:
        if item.verb == b"RCPT" and b"rcpt1@" in item.line:
            return b"550 5.1.1 no such user\r\n"
        if item.verb == b"DATA" and server.mails == 2:
            return b"554 5.5.1 no valid recipients\r\n"
        return None

    server = GroupServer(hold_groups=True, messages=3, on_command=refuse_second)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        outcomes = await within(client.send_messages(batch(3)))
        assert client.is_connected
    assert outcomes[0] == ({}, "2.0.0 queued")
    assert isinstance(outcomes[1], SMTPRecipientsRefused)
    assert outcomes[2] == ({}, "2.0.0 queued")
    # The open transaction of message 2 is reset at the head of message 3's group.
    assert server.transaction_flushes() == [
        [b"MAIL", b"RCPT", b"DATA"],
        [b"<data>", b"MAIL", b"RCPT", b"DATA"],
        [b"RSET", b"MAIL", b"RCPT", b"DATA"],
        [b"<data>"],
    ]
    assert len(server.data) == 2


# --------------------------------------------------------------------------- lock-step


async def test_without_pipelining_the_client_waits_for_every_reply(
    make_scripted_server: MakeServer,
) -> None:
    server = GroupServer(extensions=("8BITMIME",), lockstep_check=True)
    scripted = make_scripted_server(server)
    recipients = ["bob@example.com", "carol@example.com", "dave@example.com"]
    async with client_for(scripted) as client:
        errors, _ = await within(client.sendmail(SENDER, recipients, BODY))
        assert not client.supports_extension("pipelining")
        outcomes = await within(client.send_messages(batch(2)))
    assert errors == {}
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert server.violations == []
    # One reply per command, each command in a read of its own.
    assert all(len(group) == 1 for group in server.flushes)
    reads = [item.read for item in server.items]
    assert len(reads) == len(set(reads))
    assert server.verbs[:7] == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"RCPT", b"DATA", b"<data>"]


async def test_pipelining_false_turns_it_off_even_when_advertised(
    make_scripted_server: MakeServer,
) -> None:
    server = GroupServer(extensions=("PIPELINING",), lockstep_check=True)
    scripted = make_scripted_server(server)
    async with client_for(scripted, pipelining=False) as client:
        errors, _ = await within(
            client.sendmail(SENDER, ["bob@example.com", "carol@example.com"], BODY)
        )
        assert client.supports_extension("pipelining")
        outcomes = await within(client.send_messages(batch(3)))
    assert errors == {}
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert server.violations == []
    assert all(len(group) == 1 for group in server.flushes)
    assert len(server.data) == 4


async def test_pipelining_false_against_a_group_holding_server_times_out(
    make_scripted_server: MakeServer,
) -> None:
    # The converse proof: a lock-step client cannot get past MAIL with a server that
    # holds its replies until DATA. (Shows the holding server really holds.)
    server = GroupServer(hold_groups=True)
    scripted = make_scripted_server(server)
    async with client_for(scripted, pipelining=False, timeout=0.3) as client:
        with pytest.raises(TimeoutError):
            await within(client.sendmail(SENDER, ["bob@example.com"], BODY), 3)
    assert server.verbs == [b"EHLO", b"MAIL"]


# --------------------------------------------------------------------------- refusals in a group


async def test_one_refused_recipient_among_three_is_reported_per_recipient(
    make_scripted_server: MakeServer,
) -> None:
    def refuse_carol(server: GroupServer, item: Item) -> bytes | None:
        if item.verb == b"RCPT" and b"carol" in item.line:
            return b"550 5.1.1 no such user\r\n"
        return None

    server = GroupServer(hold_groups=True, on_command=refuse_carol)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        errors, text = await within(
            client.sendmail(
                SENDER, ["bob@example.com", "carol@example.com", "dave@example.com"], BODY
            )
        )
    assert errors == {"carol@example.com": SMTPResponse(550, "5.1.1 no such user")}
    assert errors["carol@example.com"].enhanced_status == "5.1.1"
    assert text == "2.0.0 queued"
    assert server.data == [BODY]


async def test_all_recipients_refused_and_data_554_then_rset_before_next_mail(
    make_scripted_server: MakeServer,
) -> None:
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if server.mails == 1 and item.verb == b"RCPT":
            return b"550 5.1.1 no such user\r\n"
        if server.mails == 1 and item.verb == b"DATA":
            return b"554 5.5.1 no valid recipients\r\n"
        return None

    server = GroupServer(hold_groups=True, messages=2, on_command=refuse)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        outcomes = await within(
            client.send_messages(
                [
                    (SENDER, ["bob@example.com", "carol@example.com"], BODY),
                    (SENDER, ["dave@example.com"], BODY),
                ]
            )
        )
    refused = outcomes[0]
    assert isinstance(refused, SMTPRecipientsRefused)
    assert sorted(r.recipient for r in refused.recipients) == [
        "bob@example.com",
        "carol@example.com",
    ]
    assert all(r.code == 550 for r in refused.recipients)
    assert outcomes[1] == ({}, "2.0.0 queued")
    verbs = server.verbs
    first_data = verbs.index(b"DATA")
    assert verbs[first_data + 1 : first_data + 3] == [b"RSET", b"MAIL"]
    assert server.data == [BODY]  # only message 2's content was sent


async def test_all_recipients_refused_sendmail_raises_and_resets(
    make_scripted_server: MakeServer,
) -> None:
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if item.verb == b"RCPT":
            return b"550 5.1.1 no such user\r\n"
        if item.verb == b"DATA":
            return b"554 5.5.1 no valid recipients\r\n"
        return None

    server = GroupServer(hold_groups=True, on_command=refuse)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        with pytest.raises(SMTPRecipientsRefused) as caught:
            await within(client.sendmail(SENDER, ["bob@example.com", "carol@example.com"], BODY))
        assert client.is_connected
    assert len(caught.value.recipients) == 2
    assert server.verbs == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"DATA", b"RSET", b"QUIT"]
    assert server.data == []


async def test_all_refused_but_data_354_gets_a_lone_dot_not_the_content(
    make_scripted_server: MakeServer,
) -> None:
    # A broken server accepts DATA although it refused every recipient. RFC 2920 3.1:
    # the client must end the DATA with a lone dot, never send the content.
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if server.mails == 1 and item.verb == b"RCPT":
            return b"550 5.1.1 no such user\r\n"
        if server.mails == 1 and item.kind == "data":
            return b"554 5.5.1 no valid recipients\r\n"
        return None

    server = GroupServer(hold_groups=True, on_command=refuse)
    scripted = make_scripted_server(server)
    secret = b"Subject: secret\r\n\r\nnever transmit me\r\n"
    async with client_for(scripted) as client:
        with pytest.raises(SMTPRecipientsRefused):
            await within(client.sendmail(SENDER, ["bob@example.com"], secret))
        assert client.is_connected
        # The connection is still in step: the lone dot's reply was consumed.
        errors, text = await within(client.sendmail(SENDER, ["carol@example.com"], BODY))
    assert (errors, text) == ({}, "2.0.0 queued")
    assert server.data == [b"", BODY]
    lone_dot = next(item for item in server.items if item.kind == "data")
    assert server.reads[lone_dot.read] == b".\r\n"
    assert b"never transmit me" not in b"".join(server.reads)


async def test_mail_refused_in_a_group_raises_sender_refused(
    make_scripted_server: MakeServer,
) -> None:
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if server.mails == 1 and item.verb == b"MAIL":
            return b"553 5.7.1 sender refused\r\n"
        if server.mails == 1 and item.verb in (b"RCPT", b"DATA"):
            return b"503 5.5.1 need MAIL first\r\n"
        return None

    server = GroupServer(hold_groups=True, on_command=refuse)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        with pytest.raises(SMTPSenderRefused) as caught:
            await within(client.sendmail(SENDER, ["bob@example.com", "carol@example.com"], BODY))
        assert client.is_connected
        assert await within(client.sendmail(SENDER, ["dave@example.com"], BODY)) == (
            {},
            "2.0.0 queued",
        )
    assert caught.value.code == 553
    assert caught.value.sender == SENDER
    # No content went out for it; the session is reset, as smtplib and aiosmtplib do.
    assert server.verbs == [
        *[b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"DATA", b"RSET"],
        *[b"MAIL", b"RCPT", b"DATA", b"<data>", b"QUIT"],
    ]
    assert server.data == [BODY]


async def test_mail_refused_but_data_354_gets_a_lone_dot(
    make_scripted_server: MakeServer,
) -> None:
    # A broken server refuses MAIL, accepts the pipelined RCPT and even DATA: the client
    # must close that DATA with a lone dot, and the connection stays in step.
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if server.mails == 1 and item.verb == b"MAIL":
            return b"553 5.7.1 sender refused\r\n"
        if server.mails == 1 and item.kind == "data":
            return b"503 5.5.1 no transaction\r\n"
        return None

    server = GroupServer(hold_groups=True, on_command=refuse)
    scripted = make_scripted_server(server)
    secret = b"Subject: secret\r\n\r\nnever transmit me\r\n"
    async with client_for(scripted) as client:
        with pytest.raises(SMTPSenderRefused):
            await within(client.sendmail(SENDER, ["bob@example.com"], secret))
        assert client.is_connected
        assert await within(client.sendmail(SENDER, ["carol@example.com"], BODY)) == (
            {},
            "2.0.0 queued",
        )
    assert server.data == [b"", BODY]
    assert b"never transmit me" not in b"".join(server.reads)


# --------------------------------------------------------------------------- lock-step refusals


async def test_lockstep_mail_refused_sends_no_rcpt(make_scripted_server: MakeServer) -> None:
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if item.verb == b"MAIL":
            return b"553 5.7.1 sender refused\r\n"
        return None

    server = GroupServer(extensions=(), lockstep_check=True, on_command=refuse)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        with pytest.raises(SMTPSenderRefused):
            await within(client.sendmail(SENDER, ["bob@example.com"], BODY))
    assert server.verbs == [b"EHLO", b"MAIL", b"RSET", b"QUIT"]
    assert server.violations == []


async def test_lockstep_all_recipients_refused_resets_without_data(
    make_scripted_server: MakeServer,
) -> None:
    def refuse(server: GroupServer, item: Item) -> bytes | None:
        if item.verb == b"RCPT":
            return b"550 5.1.1 no such user\r\n"
        return None

    server = GroupServer(extensions=(), lockstep_check=True, on_command=refuse)
    scripted = make_scripted_server(server)
    async with client_for(scripted) as client:
        with pytest.raises(SMTPRecipientsRefused):
            await within(client.sendmail(SENDER, ["bob@example.com", "carol@example.com"], BODY))
    assert server.verbs == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"RSET", b"QUIT"]
    assert server.violations == []


# --------------------------------------------------------------------------- on_result


async def test_on_result_hears_an_accepted_message_before_the_batch_ends(
    make_scripted_server: MakeServer,
) -> None:
    # The second message's dot is never answered: the batch ends only at the timeout,
    # but the first message's acceptance is told the moment its 250 arrives.
    server = GroupServer(
        on_command=lambda group, item: (
            STALL if item.kind == "data" and len(group.data) == 2 else None
        )
    )
    scripted = make_scripted_server(server)
    loop = asyncio.get_running_loop()
    told: list[tuple[int, Any, float]] = []
    started = loop.time()
    async with client_for(scripted, timeout=1.5) as client:
        outcomes = await within(
            client.send_messages(batch(2), on_result=lambda i, o: told.append((i, o, loop.time())))
        )
    assert [index for index, _, _ in told] == [0, 1]
    assert isinstance(outcomes[0], tuple) and told[0][1] is outcomes[0]
    assert isinstance(outcomes[1], SMTPUnknownOutcomeError) and told[1][1] is outcomes[1]
    assert told[0][2] - started < 1.0 <= told[1][2] - started


async def test_on_result_tells_refusals_and_bad_items_once_each(
    make_scripted_server: MakeServer,
) -> None:
    server = GroupServer(
        on_command=lambda group, item: (
            b"550 5.1.1 no such user\r\n" if b"nobody@" in item.line else None
        )
    )
    scripted = make_scripted_server(server)
    items: list[Any] = [
        (SENDER, ["a@example.com"], BODY),
        (SENDER, ["nobody@example.com"], BODY),
        ("bad\r\nsender@example.com", ["b@example.com"], BODY),
        (SENDER, ["c@example.com"], BODY),
    ]
    told: dict[int, Any] = {}

    def record(index: int, outcome: Any) -> None:
        assert index not in told
        told[index] = outcome

    async with client_for(scripted) as client:
        outcomes = await within(client.send_messages(items, on_result=record))
    assert told == dict(enumerate(outcomes))
    assert isinstance(outcomes[1], SMTPRecipientsRefused)
    assert isinstance(outcomes[2], ValueError)
