"""DSN (RFC 3461) and REQUIRETLS (RFC 8689): parameter encoding as tables of values, and
the exact command lines a scripted server receives."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest

from smtp_backends import SMTP
from smtp_backends.errors import SMTPNotSupported
from smtp_backends.protocol import commands
from smtp_backends.protocol.dsn import (
    DSN,
    add_rcpt_parameters,
    mail_parameters,
    orcpt_value,
    xtext,
)
from smtp_backends.protocol.extensions import Extensions
from smtp_backends.protocol.transaction import Envelope
from tests.servers import ScriptedServer

# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc-123", "abc-123"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("two words", "two+20words"),
        ("tab\there", "tab+09here"),
        ("crlf\r\nRSET", "crlf+0D+0ARSET"),
        ("é", "+C3+A9"),
        ("<id@host>", "<id@host>"),
    ],
)
def test_xtext(value: str, expected: str) -> None:
    assert xtext(value) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@example.com", "rfc822;user@example.com"),
        ("a+tag@example.com", "rfc822;a+2Btag@example.com"),
        ("ré@exemple.fr", "utf-8;r\\x{E9}@exemple.fr"),
        ("用户@例子.广告", "utf-8;\\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}"),
    ],
)
def test_orcpt_value(address: str, expected: str) -> None:
    assert orcpt_value(address) == expected


def test_dsn_parameters() -> None:
    dsn = DSN(notify=["success", "failure"], ret="hdrs", envid="batch 7+x", orcpt=True)
    assert dsn.mail_options() == ["RET=HDRS", "ENVID=batch+207+2Bx"]
    assert dsn.rcpt_options("b@example.com") == [
        "NOTIFY=SUCCESS,FAILURE",
        "ORCPT=rfc822;b@example.com",
    ]
    assert DSN(notify="NEVER").rcpt_options("x@example.com") == ["NOTIFY=NEVER"]
    mapped = DSN(orcpt={"list@example.com": "original@example.org"})
    assert mapped.rcpt_options("list@example.com") == ["ORCPT=rfc822;original@example.org"]
    assert mapped.rcpt_options("other@example.com") == ["ORCPT=rfc822;other@example.com"]
    assert not DSN(ret="FULL").per_recipient
    assert DSN(ret="FULL").rcpt_options("x@example.com") == []
    for options in (dsn.mail_options(), dsn.rcpt_options("b@example.com")):
        for option in options:
            assert commands.option(option) == option  # the encoder accepts what we build


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"notify": ["NEVER", "SUCCESS"]}, ValueError),
        ({"notify": ["SOMETIMES"]}, ValueError),
        ({"notify": []}, ValueError),
        ({"ret": "BODY"}, ValueError),
        ({"envid": "x" * 101}, ValueError),
        ({"envid": "line\r\nRSET"}, ValueError),
        ({"envid": "é"}, ValueError),
        ({"envid": 7}, TypeError),
        ({"orcpt": {"a@example.com": "b@example.com>\r\nRSET"}}, ValueError),
        ({"orcpt": "yes"}, TypeError),
    ],
)
def test_dsn_refuses_bad_values(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        DSN(**kwargs)  # type: ignore[arg-type]


def test_rcpt_parameters_are_added_per_recipient() -> None:
    envelope = Envelope("a@example.com", ["b@example.com", "c+x@example.com"], b"x\r\n")
    add_rcpt_parameters(envelope, DSN(notify="FAILURE", orcpt=True))
    assert envelope.commands == [
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com> NOTIFY=FAILURE ORCPT=rfc822;b@example.com\r\n",
        b"RCPT TO:<c+x@example.com> NOTIFY=FAILURE ORCPT=rfc822;c+2Bx@example.com\r\n",
        b"DATA\r\n",
    ]


DSN_OFFERED = Extensions.parse("mail.example\nDSN\nREQUIRETLS")
NOTHING_OFFERED = Extensions.parse("mail.example\nPIPELINING")


def test_mail_parameters_check_the_session() -> None:
    dsn = DSN(ret="FULL", envid="e1")
    assert mail_parameters(dsn, False, DSN_OFFERED, encrypted=False) == ["RET=FULL", "ENVID=e1"]
    assert mail_parameters(None, True, DSN_OFFERED, encrypted=True) == ["REQUIRETLS"]
    assert mail_parameters(None, False, NOTHING_OFFERED, encrypted=False) == []
    with pytest.raises(SMTPNotSupported, match="DSN"):
        mail_parameters(dsn, False, NOTHING_OFFERED, encrypted=True)
    with pytest.raises(SMTPNotSupported, match="not encrypted"):
        mail_parameters(None, True, DSN_OFFERED, encrypted=False)
    with pytest.raises(SMTPNotSupported, match="does not offer it"):
        mail_parameters(None, True, NOTHING_OFFERED, encrypted=True)


@pytest.mark.parametrize(
    "argument",
    ["x\r\nRSET", "x\nRSET", "x\x00", "x\x85RSET", "x\u2028RSET", "x\u2029", "x\x9b"],
)
def test_the_command_encoder_refuses_line_breaks_and_friends(argument: str) -> None:
    with pytest.raises(ValueError):
        commands.command("VRFY", argument, encoding="utf-8")
    with pytest.raises(ValueError):
        commands.option(f"ENVID={argument}")


# --------------------------------------------------------------------------- on the wire


def lock_step_server(ehlo: bytes, tail: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [
        ("send", b"220 mail.example ESMTP\r\n"),
        ("expect", b"EHLO"),
        ("send", ehlo),
        *tail,
    ]


ONE_MESSAGE = [
    ("expect", b"MAIL"),
    ("send", b"250 ok\r\n"),
    ("expect", b"RCPT"),
    ("send", b"250 ok\r\n"),
    ("expect", b"RCPT"),
    ("send", b"250 ok\r\n"),
    ("expect", b"DATA"),
    ("send", b"354 go\r\n"),
    ("expect_data",),
    ("send", b"250 queued\r\n"),
    ("expect", b"QUIT"),
    ("send", b"221 bye\r\n"),
    ("close",),
]
RECIPIENTS = ["b@example.com", "c@example.com"]
RAW = b"Subject: dsn\r\n\r\nbody\r\n"


async def test_dsn_parameters_reach_the_server(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server(lock_step_server(b"250-mail.example\r\n250 DSN\r\n", ONE_MESSAGE))
    dsn = DSN(notify=["SUCCESS", "DELAY"], ret="HDRS", envid="id 1", orcpt=True)
    async with SMTP(hostname=server.host, port=server.port) as client:
        await client.sendmail("a@example.com", RECIPIENTS, RAW, dsn=dsn)
    lines = server.received_lines
    assert b"MAIL FROM:<a@example.com> RET=HDRS ENVID=id+201" in lines
    assert b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@example.com" in lines
    assert b"RCPT TO:<c@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c@example.com" in lines


async def test_client_default_dsn_applies_to_batches(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server(lock_step_server(b"250-mail.example\r\n250 DSN\r\n", ONE_MESSAGE))
    async with SMTP(
        hostname=server.host, port=server.port, dsn=DSN(notify="FAILURE", ret="FULL")
    ) as client:
        [outcome] = await client.send_messages([("a@example.com", RECIPIENTS, RAW)])
    assert isinstance(outcome, tuple)
    assert b"MAIL FROM:<a@example.com> RET=FULL" in server.received_lines
    assert b"RCPT TO:<c@example.com> NOTIFY=FAILURE" in server.received_lines


async def test_dsn_without_server_support_is_refused_before_mail(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    tail = [("expect", b"QUIT"), ("send", b"221 bye\r\n"), ("close",)]
    server = make_scripted_server(lock_step_server(b"250 mail.example\r\n", tail))
    async with SMTP(hostname=server.host, port=server.port) as client:
        with pytest.raises(SMTPNotSupported, match="DSN"):
            await client.sendmail("a@example.com", RECIPIENTS, RAW, dsn=DSN(ret="FULL"))
    assert not any(line.startswith(b"MAIL") for line in server.received_lines)


async def test_requiretls_over_starttls(
    make_scripted_server: Callable[..., ScriptedServer],
    server_tls_context: ssl.SSLContext,
    client_tls_context: ssl.SSLContext,
) -> None:
    script = lock_step_server(
        b"250-mail.example\r\n250 STARTTLS\r\n",
        [
            ("expect", b"STARTTLS"),
            ("send", b"220 go ahead\r\n"),
            ("starttls", server_tls_context),
            ("expect", b"EHLO"),
            ("send", b"250-mail.example\r\n250 REQUIRETLS\r\n"),
            *ONE_MESSAGE,
        ],
    )
    server = make_scripted_server(script)
    async with SMTP(
        hostname="127.0.0.1", port=server.port, tls_context=client_tls_context
    ) as client:
        await client.sendmail("a@example.com", RECIPIENTS, RAW, requiretls=True)
    assert b"MAIL FROM:<a@example.com> REQUIRETLS" in server.received_lines


async def test_requiretls_is_refused_locally_without_tls_or_support(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    tail = [("expect", b"QUIT"), ("send", b"221 bye\r\n"), ("close",)]
    server = make_scripted_server(lock_step_server(b"250-mail.example\r\n250 REQUIRETLS\r\n", tail))
    async with SMTP(hostname=server.host, port=server.port, requiretls=True) as client:
        with pytest.raises(SMTPNotSupported, match="not encrypted"):
            await client.sendmail("a@example.com", RECIPIENTS, RAW)
        # Refused before MAIL: the server saw no transaction.
        assert not any(line.startswith(b"MAIL") for line in server.received_lines)


def test_config_checks_the_dsn_type() -> None:
    with pytest.raises(TypeError, match="DSN"):
        SMTP(dsn={"notify": "FAILURE"})  # type: ignore[arg-type]
    assert hash(DSN(orcpt={"a@example.com": "b@example.com"}))
