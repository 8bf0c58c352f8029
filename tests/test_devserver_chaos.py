"""Chaos mode of the dev inbox: the SMTP side answers by rule, deterministically with a seed.

Real SMTP on 127.0.0.1: smtplib for command-by-command control, and our own client to
see the errors an application would see.
"""

from __future__ import annotations

import json
import smtplib
import time
from typing import Any

import pytest

from smtp_backends import SMTP
from smtp_backends.cli import main
from smtp_backends.devserver import Chaos, ChaosRule, DevServer
from smtp_backends.errors import (
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPRecipientsRefused,
    SMTPUnknownOutcomeError,
)
from tests.test_devserver import api, fetch, make_message


def test_rules_from_the_command_line_form() -> None:
    rule = ChaosRule.parse("rcpt:reply=451,rate=10%")
    assert (rule.stage, rule.rate, rule.match, rule.drop, rule.delay) == (
        "rcpt",
        0.1,
        None,
        False,
        0,
    )
    assert rule.reply == "451 4.3.0 Temporary failure (devserver chaos rule)"
    rule = ChaosRule.parse("RCPT: match=*@bounce.test , reply=550 5.1.1 No such user")
    assert (rule.match, rule.reply) == ("*@bounce.test", "550 5.1.1 No such user")
    assert ChaosRule.parse("dot:drop").drop
    assert ChaosRule.parse("connect:reply=421").closes
    assert ChaosRule.parse("mail:delay=2.5,rate=0.5").delay == 2.5
    assert ChaosRule.parse("rcpt:reply=452,text=4.2.2 Mailbox full").reply == (
        "452 4.2.2 Mailbox full"
    )
    for bad, message in (
        ("rcpt", "looks like"),
        ("nowhere:reply=451", "unknown chaos stage"),
        ("rcpt:reply=250", "4xx or 5xx"),
        ("rcpt:reply=4511", "4xx or 5xx"),
        ("rcpt:reply=451,rate=0", "rate"),
        ("rcpt:reply=451,rate=150%", "rate"),
        ("rcpt:reply=451,rate=often", "could not convert|rate"),
        ("connect:match=x,reply=421", "nothing to match"),
        ("mail:delay=601", "delay"),
        ("mail:delay=soon", "delay"),
        ("mail:rate=0.5", "needs a reply, drop or delay"),
        ("rcpt:reply", "key=value"),
        ("rcpt:reply=451,reply=452", "twice"),
        ("rcpt:reply=451,colour=red", "unknown chaos rule key"),
        ("rcpt:text=hi", "text needs a reply code"),
        ("dot:drop=maybe", "drop must be"),
    ):
        with pytest.raises(ValueError, match=message):
            ChaosRule.parse(bad)
    with pytest.raises(ValueError, match="line break"):
        ChaosRule("rcpt", reply="451 a\r\nRSET")
    with pytest.raises(ValueError, match="object or a string"):
        ChaosRule.from_json(42)  # type: ignore[arg-type]
    assert ChaosRule.from_json(rule.to_json()) == rule


def refused_rcpts(server: DevServer, count: int) -> list[int]:
    """Which of ``count`` RCPTs on one connection got a 4xx."""
    refused = []
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("s@example.org")
        for number in range(count):
            code, _ = client.rcpt(f"user{number}@example.org")
            if 400 <= code < 500:
                refused.append(number)
            else:
                assert code == 250
    return refused


def test_a_rate_is_deterministic_with_a_seed() -> None:
    rules = [ChaosRule.parse("rcpt:reply=451,rate=10%")]
    runs = []
    for _ in range(2):
        with DevServer(smtp_port=0, http_port=0, chaos=Chaos(rules, seed=7)) as server:
            runs.append(refused_rcpts(server, 200))
            assert server.chaos.to_json()["rules"][0]["fired"] == len(runs[-1])
    assert runs[0] == runs[1]
    assert 5 <= len(runs[0]) <= 40  # about one in ten
    with DevServer(smtp_port=0, http_port=0, chaos=Chaos(rules, seed=8)) as server:
        assert refused_rcpts(server, 200) != runs[0]


async def test_a_pattern_refuses_some_recipients_and_the_client_reports_each() -> None:
    chaos = Chaos([ChaosRule.parse("rcpt:match=*@BOUNCE.test,reply=550 5.1.1 No such user")])
    with DevServer(smtp_port=0, http_port=0, chaos=chaos) as server:
        async with SMTP(hostname="127.0.0.1", port=server.smtp_port) as client:
            errors, _ = await client.sendmail(
                "s@example.org", ["ok@example.org", "gone@bounce.test"], b"Subject: x\r\n\r\nx\r\n"
            )
            assert {address: reply.code for address, reply in errors.items()} == {
                "gone@bounce.test": 550
            }
            with pytest.raises(SMTPRecipientsRefused):
                await client.sendmail(
                    "s@example.org", ["a@bounce.test"], b"Subject: y\r\n\r\ny\r\n"
                )
        [stored] = server.wait_for(1)
        assert stored.envelope_to == ("ok@example.org",)


async def test_drop_after_the_dot_stores_the_message_and_the_outcome_is_unknown() -> None:
    with DevServer(smtp_port=0, http_port=0, chaos=Chaos([ChaosRule.parse("dot:drop")])) as server:
        async with SMTP(hostname="127.0.0.1", port=server.smtp_port) as client:
            with pytest.raises(SMTPUnknownOutcomeError):
                await client.send_message(make_message("Maybe"))
        # The server has it: a client that resent it would deliver it twice.
        [stored] = server.wait_for(1)
        assert stored.subject == "Maybe"


async def test_a_refusal_after_the_dot_keeps_nothing() -> None:
    rules = [ChaosRule.parse("dot:reply=451")]
    with DevServer(smtp_port=0, http_port=0, chaos=Chaos(rules)) as server:
        async with SMTP(hostname="127.0.0.1", port=server.smtp_port) as client:
            with pytest.raises(SMTPDataError) as refused:
                await client.send_message(make_message("Later"))
            assert refused.value.code == 451
            # The connection is still good: the rule is lifted and the next one goes.
            server.chaos.configure([])
            await client.send_message(make_message("Now"))
        [stored] = server.wait_for(1)
        assert stored.subject == "Now"


async def test_a_421_after_the_dot_closes_the_connection() -> None:
    rules = [ChaosRule.parse("dot:reply=421")]
    with DevServer(smtp_port=0, http_port=0, chaos=Chaos(rules)) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("s@example.org")
            client.rcpt("r@example.org")
            code, _ = client.data(b"Subject: x\r\n\r\nx\r\n")
            assert code == 421
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
        assert server.messages == []


async def test_connect_data_and_ehlo_stages() -> None:
    chaos = Chaos([ChaosRule.parse("connect:reply=421")])
    with DevServer(smtp_port=0, http_port=0, chaos=chaos) as server:
        with pytest.raises(SMTPConnectResponseError) as greeting:
            async with SMTP(hostname="127.0.0.1", port=server.smtp_port):
                pass
        assert greeting.value.code == 421
        server.chaos.configure([ChaosRule.parse("data:reply=554 5.3.0 No data today")])
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("s@example.org")
            client.rcpt("r@example.org")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.data(b"x\r\n")
            assert refused.value.args == (554, b"5.3.0 No data today")
        server.chaos.configure([ChaosRule.parse("ehlo:match=bad*,reply=550")])
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            assert client.ehlo("bad.example")[0] == 550
            assert client.ehlo("good.example")[0] == 250
        server.chaos.configure([ChaosRule.parse("rcpt:drop")])
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("s@example.org")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.rcpt("r@example.org")
        assert server.messages == []


def test_a_delay() -> None:
    chaos = Chaos([ChaosRule.parse("mail:delay=0.3")])
    with (
        DevServer(smtp_port=0, http_port=0, chaos=chaos) as server,
        smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client,
    ):
        client.ehlo()
        started = time.monotonic()
        assert client.mail("s@example.org")[0] == 250  # delayed, then answered as usual
        assert time.monotonic() - started >= 0.3


def test_the_json_api_reads_and_replaces_the_rules() -> None:
    with DevServer(smtp_port=0, http_port=0) as server:
        state: Any = api(server, "/api/chaos")
        assert state["rules"] == []
        body = {
            "seed": 3,
            "rules": [
                "rcpt:match=*@bounce.test,reply=550",
                {"stage": "dot", "reply": 451, "text": "4.7.1 Try later", "rate": 0.5},
            ],
        }
        status, _, reply = fetch(server, "/api/chaos", "PUT", json.dumps(body).encode())
        assert status == 200
        state = json.loads(reply)
        assert state["seed"] == 3
        assert state["rules"] == [
            {
                "stage": "rcpt",
                "reply": "550 5.7.1 Refused (devserver chaos rule)",
                "rate": 1.0,
                "match": "*@bounce.test",
                "drop": False,
                "delay": 0.0,
                "fired": 0,
            },
            {
                "stage": "dot",
                "reply": "451 4.7.1 Try later",
                "rate": 0.5,
                "match": None,
                "drop": False,
                "delay": 0.0,
                "fired": 0,
            },
        ]
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("s@example.org")
            assert client.rcpt("x@bounce.test")[0] == 550
        assert [rule["fired"] for rule in api(server, "/api/chaos")["rules"]] == [1, 0]  # type: ignore[index]
        for bad in (b"[]", b"{", b'{"rules": ["nowhere:drop"]}', b'{"rules": [], "seed": "x"}'):
            status, _, reply = fetch(server, "/api/chaos", "PUT", bad)
            assert status == 400, bad
            assert "error" in json.loads(reply)
        assert fetch(server, "/api/chaos", "DELETE")[0] == 204
        assert not server.chaos
        assert api(server, "/api/chaos")["seed"] == 3  # type: ignore[index]


def test_the_command_line_takes_rules_and_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["devserver", "--chaos", "rcpt:reply=200"])
    assert exit_info.value.code == 2
    assert "4xx or 5xx" in capsys.readouterr().err
