"""The one address parser (smtp_backends.addresses) and international addresses on the wire.

Every adapter takes its envelope addresses from :func:`smtp_backends.addresses.addr_spec`:
an address that is not exactly one mailbox is an error before anything is sent (Flask
here; Django in tests/test_django_backend.py). A non-ASCII local part goes with SMTPUTF8
when the server offers it and is refused clearly when it does not; a non-ASCII domain
goes as IDNA A-labels to a server without SMTPUTF8. Real aiosmtpd servers on loopback,
with and without SMTPUTF8.
"""

from __future__ import annotations

from typing import Any

import pytest

from smtp_backends import SMTP, SMTPNotSupported, mailer
from smtp_backends.addresses import Mailbox, addr_spec, ascii_fallback, idna_domain, parse_mailbox
from tests.servers import SMTPServer

NOT_ONE = [
    ("not an address", "local-part is not dot-atom"),
    ("a@x.org b@x.org", "it holds 2"),
    ("a@x.org, b@x.org", "it holds 2"),
    ("a@x.org;b@x.org", "it holds 2"),
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("@", "invalid address"),
    ("to@other.com@example.com", "invalid address"),
    ("to\nevil@example.com", "non-printables"),
    ('"evil@example.com\r\nto"@example.com', "non-printables"),
]


@pytest.mark.parametrize(("address", "problem"), NOT_ONE)
def test_not_exactly_one_mailbox_is_an_error_naming_the_problem(address: str, problem: str) -> None:
    with pytest.raises(ValueError, match="not one address") as error:
        addr_spec(address, "recipient")
    assert problem in str(error.value)
    assert repr(address) in str(error.value) and "recipient" in str(error.value)


@pytest.mark.parametrize("address", ["to@", '"a" @', "a@["])
def test_what_the_stdlib_parser_gives_up_on_is_a_value_error(address: str) -> None:
    # The standard library's parser raises IndexError / AttributeError /
    # HeaderParseError on these: callers get the ValueError every bad address gives.
    with pytest.raises(ValueError, match="not one address"):
        addr_spec(address)


def test_one_mailbox_gives_its_addr_spec() -> None:
    assert addr_spec("Ann <ann@example.org>") == "ann@example.org"
    assert addr_spec(("Ann", "ann@example.org")) == "ann@example.org"
    assert addr_spec('"a b"@example.org') == '"a b"@example.org'
    assert addr_spec("webmaster") == "webmaster"  # a local mailbox, as Django allows
    assert addr_spec("<>") == "<>"  # the null reverse-path
    assert addr_spec("nø@bücher.example") == "nø@bücher.example"  # Unicode is kept
    assert parse_mailbox("Zoë <zoe@example.com>") == Mailbox(
        "Zoë", "zoe", "example.com", "zoe@example.com"
    )
    assert not parse_mailbox("nø@example.dk").ascii
    with pytest.raises(TypeError):
        addr_spec(42)
    with pytest.raises(TypeError):
        addr_spec(("only a name",))
    # The sending layer's lenient form leaves what is not one address to the core.
    assert mailer.addr_spec("a@x.org b@x.org") == "a@x.org b@x.org"
    assert mailer.addr_spec("Ann <ann@example.org>") == "ann@example.org"


def test_ascii_forms() -> None:
    assert idna_domain("öäü.com") == "xn--4ca9at.com"
    assert idna_domain("example.org") == "example.org"
    with pytest.raises(ValueError, match="Invalid domain"):
        idna_domain("a..ü")
    assert ascii_fallback("a@öäü.com") == "a@xn--4ca9at.com"
    assert ascii_fallback("a@example.com") == "a@example.com"
    assert ascii_fallback("nø@example.dk") is None  # only SMTPUTF8 can carry it
    assert ascii_fallback("nø") is None
    assert ascii_fallback("a@a..ü") is None


# --------------------------------------------------------------------------- the core client


async def _send(server: SMTPServer, sender: str, recipients: list[str]) -> Any:
    async with SMTP(hostname=server.host, port=server.port) as client:
        return await client.sendmail(sender, recipients, b"Subject: hi\r\n\r\nbody\r\n")


async def test_core_uses_smtputf8_for_a_non_ascii_local_part(make_smtpd: Any) -> None:
    server = make_smtpd(smtputf8=True)
    await _send(server, "from@example.com", ["nø@bücher.example"])
    [received] = server.messages
    assert received.rcpt_tos == ["nø@bücher.example"]
    assert "SMTPUTF8" in received.mail_options


async def test_core_refuses_a_non_ascii_local_part_without_smtputf8(make_smtpd: Any) -> None:
    server = make_smtpd(smtputf8=False)
    with pytest.raises(SMTPNotSupported, match=r"'nø@example\.dk' has a non-ASCII local part"):
        await _send(server, "from@example.com", ["ok@example.com", "nø@example.dk"])
    assert server.messages == []
    assert "MAIL" not in server.handler.commands  # refused before anything was sent


async def test_core_sends_idn_domains_as_a_labels_without_smtputf8(make_smtpd: Any) -> None:
    server = make_smtpd(smtputf8=False)
    await _send(server, "app@bücher.example", ["a@öäü.com"])
    [received] = server.messages
    assert (received.mail_from, received.rcpt_tos) == (
        "app@xn--bcher-kva.example",
        ["a@xn--4ca9at.com"],
    )
    assert "SMTPUTF8" not in received.mail_options
    with_utf8 = make_smtpd(smtputf8=True)
    await _send(with_utf8, "app@bücher.example", ["a@öäü.com"])
    [received] = with_utf8.messages
    assert received.rcpt_tos == ["a@öäü.com"] and "SMTPUTF8" in received.mail_options


# --------------------------------------------------------------------------- Flask

flask = pytest.importorskip("flask")

from smtp_backends.flask import Mail, Message  # noqa: E402
from tests.flask_app import make_app  # noqa: E402


@pytest.mark.parametrize(("address", "problem"), NOT_ONE[:3])
def test_flask_refuses_what_is_not_one_address_before_sending(
    smtpd: SMTPServer, address: str, problem: str
) -> None:
    mail = Mail()
    app = make_app(smtpd, mail=mail)
    with app.app_context():
        with pytest.raises(ValueError, match=problem):
            mail.send(Message("s", recipients=[address], body="b"))
        with pytest.raises(ValueError, match=problem):
            mail.send(Message("s", recipients=["ok@example.com"], sender=address, body="b"))
    # With sending suppressed too (tests): the message is still checked.
    suppressed = make_app(smtpd, mail=Mail(), MAIL_SUPPRESS_SEND=True, name="suppressed")
    with suppressed.app_context(), pytest.raises(ValueError, match=problem):
        suppressed.extensions["mail"].send(Message("s", recipients=[address], body="b"))
    assert smtpd.messages == []
    assert "MAIL" not in smtpd.handler.commands


def test_flask_send_test_command_refuses_what_is_not_one_address(smtpd: SMTPServer) -> None:
    app = make_app(smtpd, mail=Mail())
    runner = app.test_cli_runner()
    result = runner.invoke(args=["mail", "send-test", "not an address"])
    assert result.exit_code != 0
    assert "not one address" in result.output and "'not an address'" in result.output
    result = runner.invoke(args=["mail", "send-test", "a@x.org b@x.org"])
    assert result.exit_code != 0 and "it holds 2" in result.output
    assert smtpd.messages == []


def test_flask_non_ascii_local_part_with_and_without_smtputf8(make_smtpd: Any) -> None:
    with_utf8 = make_smtpd(smtputf8=True)
    mail = Mail()
    app = make_app(with_utf8, mail=mail)
    with app.app_context():
        mail.send(Message("s", recipients=["Nø <nø@bücher.example>"], body="b"))
    [received] = with_utf8.messages
    assert received.rcpt_tos == ["nø@bücher.example"]
    assert "SMTPUTF8" in received.mail_options
    # Its header carries the address as UTF-8 (RFC 6532), not an encoded word.
    assert " <nø@bücher.example>\r\n" in received.original_content.decode()

    without = make_smtpd(smtputf8=False)
    app = make_app(without, mail=Mail(), name="no_utf8")
    with app.app_context():
        with pytest.raises(SMTPNotSupported, match=r"'nø@example\.dk' has a non-ASCII local part"):
            app.extensions["mail"].send(Message("s", recipients=["nø@example.dk"], body="b"))
        # An IDN domain with an ASCII local part goes everywhere, as A-labels.
        app.extensions["mail"].send(Message("s", recipients=["a@öäü.com"], body="b"))
    assert [m.rcpt_tos for m in without.messages] == [["a@xn--4ca9at.com"]]
