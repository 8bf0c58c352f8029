"""Tables for command encoding and argument validation (smtp_backends.protocol.commands)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from smtp_backends.protocol.commands import (
    command,
    ehlo_name,
    envelope_address,
    mail_from,
    option,
    rcpt_to,
)

# envelope_address --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@example.org", "user@example.org"),
        ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
        ("  user@example.org  ", "user@example.org"),
        ("<user@example.org>", "user@example.org"),
        ("< user@example.org >", "user@example.org"),
        ("Jane Doe <jane@example.org>", "jane@example.org"),
        ('"Doe, Jane" <jane@example.org>', "jane@example.org"),
        ('"a<b" <x@example.com>', "x@example.com"),
        ('"Doe, <Jane>" <jane@example.org>', "jane@example.org"),
        ("Jane<jane@example.org>", "jane@example.org"),
        ('"john doe"@example.org', '"john doe"@example.org'),
        ('John <"john doe"@example.org>', '"john doe"@example.org'),
        ('"a\\"b"@example.org', '"a\\"b"@example.org'),
        ('"a@b"@example.org', '"a@b"@example.org'),
        ('"a<b>c"@example.org', '"a<b>c"@example.org'),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]"),
        ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        ("postmaster", "postmaster"),
        ("üser@exämple.org", "üser@exämple.org"),  # SMTPUTF8 is decided by the encoder
    ],
)
def test_envelope_address_accepts(address: str, expected: str) -> None:
    assert envelope_address(address) == expected
    assert envelope_address(address, allow_empty=True) == expected


@pytest.mark.parametrize("address", ["", "<>", "   ", "< >", "Bounce <>", "Mailer Daemon < >"])
def test_envelope_address_empty_allowed(address: str) -> None:
    assert envelope_address(address, allow_empty=True) == ""


@pytest.mark.parametrize("address", ["", "<>", "   ", "Bounce <>"])
def test_envelope_address_empty_refused(address: str) -> None:
    with pytest.raises(ValueError, match=r"^Empty address: "):
        envelope_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "a\r@example.org",
        "a@example.org\r",
        "a@example.org\n",
        "a@example.org\r\n",
        "a@example.org>\r\nRCPT TO:<c@example.org",
        "a@example.org\r\nRSET",
        "\na@example.org",
        "a\x00@example.org",
        "a@example.org\x00",
        "a\t@example.org",
        "a@example.org\t",
        "a\x01@example.org",
        "a\x08@example.org",
        "a\x0b@example.org",
        "a\x0c@example.org",
        "a\x1b@example.org",
        "a\x1f@example.org",
        "a\x7f@example.org",
        "Na\x00me <a@example.org>",
        "Name\r\n <a@example.org>",
        '"a\r\nb"@example.org',
    ],
)
def test_envelope_address_rejects_controls(address: str) -> None:
    with pytest.raises(ValueError, match=r"^Address contains a control character: "):
        envelope_address(address)
    with pytest.raises(ValueError, match="control character"):
        envelope_address(address, allow_empty=True)


@pytest.mark.parametrize(
    "address",
    [
        # spaces
        "a b@example.org",
        "a@example .org",
        "a@ example.org",
        "a @example.org",
        "a\u00a0b@example.org",  # non-breaking space
        "a@exam\u2028ple.org",  # line separator
        "a\x85b@example.org",  # NEL
        # angle brackets smuggling parameters or commands
        "a@example.org> SIZE=1",
        "a@example.org> NOTIFY=NEVER",
        "<a@example.org> SIZE=1",
        "a@example.org>x",
        "a@example.org> <b@example.org",
        "a>@example.org",
        "a@b<c>d",
        # unbalanced brackets
        "<a@example.org",
        "a@example.org<",
        "<<a@example.org>>",
        "<a@example.org>>",
        "Name <a@example.org",
        # characters that end the path or start a source route
        "a,b@example.org",
        "a;b@example.org",
        "a:b@example.org",
        "a(b)@example.org",
        "a\\b@example.org",
        'a"b@example.org',
        "a[b]@example.org",
        "a@example.org,b@example.org",
        "a@example.org;",
        "a@exa:mple.org",
        "a@exa(mple).org",
        'a@exa"mple.org',
        "a@[192.0.2.1",
        "a@192.0.2.1]",
        "a@",
        "a@b@",
        "@",
        # unbalanced or broken quoting
        '"a b@example.org',
        '"a"b c"@example.org',
        '"a\\"@example.org',
    ],
)
def test_envelope_address_rejects_unsafe(address: str) -> None:
    with pytest.raises(
        ValueError,
        match=r"^(Address has characters not allowed in an SMTP path|Unbalanced angle brackets"
        r" in address|Empty local part in address): ",
    ):
        envelope_address(address)


@pytest.mark.parametrize("address", ["a@example.org>", "Name a@example.org>", "a>"])
def test_envelope_address_rejects_closing_bracket_without_opening(address: str) -> None:
    with pytest.raises(ValueError, match=r"^Unbalanced angle brackets in address: "):
        envelope_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "a@[192.0.2.1 ]",
        "a@[192.0.2.1\u00a0]",
        "a@[1[2]",
        "a@[1]2]",
        "a@[1\\2]",
        "a@[<1>]",
    ],
)
def test_envelope_address_rejects_malformed_address_literal(address: str) -> None:
    with pytest.raises(ValueError, match=r"^Malformed address literal: "):
        envelope_address(address)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(b"a@example.org", "bytes"), (None, "NoneType"), (42, "int"), (["a@example.org"], "list")],
)
def test_envelope_address_rejects_non_str(value: object, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        envelope_address(value)  # type: ignore[arg-type]
    assert str(info.value) == f"An address must be a str, not {type_name}"


def test_envelope_address_error_shows_the_input() -> None:
    with pytest.raises(ValueError) as info:
        envelope_address("a@example.org> SIZE=1")
    assert str(info.value) == (
        "Address has characters not allowed in an SMTP path: 'a@example.org> SIZE=1'"
    )


# option ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "SIZE=1024",
        "BODY=8BITMIME",
        "BODY=7BIT",
        "SMTPUTF8",
        "NOTIFY=SUCCESS,FAILURE",
        "RET=HDRS",
        "ENVID=QQ314159",
        "ORCPT=rfc822;a+2Bb@example.org",
        "X-EXTENSION",
        "x-lower=v",
        "8BITMIME",
        "X=<v>",  # '<' and '>' are esmtp-value characters (RFC 5321 4.1.2)
        "X=!~",
        "X=ü",  # RFC 6531 allows UTF-8 values
    ],
)
def test_option_accepts(value: str) -> None:
    assert option(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "=1",
        "SIZE=",
        "-X",
        "_X",
        "X_Y",
        "SIZE 1",
        " SIZE=1",
        "SIZE=1 ",
        "SIZE=1 BODY=8BITMIME",
        "SIZE=1\r\nRSET",
        "SIZE=1\r\n",
        "SIZE=1\r",
        "SIZE=a=b",
        "SIZE=1\x00",
        "SIZE\t1",
        "SIZE=1\x7f",
        "SIZE=1\t",
        "SÍZE=1",
    ],
)
def test_option_rejects(value: str) -> None:
    with pytest.raises(ValueError) as info:
        option(value)
    assert str(info.value) == f"Malformed ESMTP parameter: {value!r}"


@pytest.mark.parametrize("value", ["SIZE=1\n", "SMTPUTF8\n"])
def test_option_rejects_trailing_newline(value: str) -> None:
    # ``$`` in a Python regular expression also matches before a final "\n".
    with pytest.raises(ValueError, match="Malformed ESMTP parameter"):
        option(value)


@pytest.mark.parametrize(("value", "type_name"), [(b"SIZE=1", "bytes"), (None, "NoneType")])
def test_option_rejects_non_str(value: object, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        option(value)  # type: ignore[arg-type]
    assert str(info.value) == f"An option must be a str, not {type_name}"


# ehlo_name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "mail.example.org",
        "host-1.example.org",
        "xn--bcher-kva.example",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[IPv6:::1]",
    ],
)
def test_ehlo_name_accepts(name: str) -> None:
    assert ehlo_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        " a",
        "a ",
        "a\u00a0b",
        "[]",
        "[a b]",
        "[a",
        "a]",
        "[a]b",
        "a[b]",
        "[[a]]",
        "[a\\b]",
        "a@b",
        "a<b",
        "a>b",
        "a(b)",
        "a,b",
        "a;b",
        "a:b",
        'a"b',
        "a\\b",
    ],
)
def test_ehlo_name_rejects(name: str) -> None:
    with pytest.raises(ValueError) as info:
        ehlo_name(name)
    assert str(info.value) == f"Invalid local host name for EHLO/HELO: {name!r}"


@pytest.mark.parametrize(
    "name",
    ["a\r", "a\n", "a\r\nMAIL FROM:<x@example.org>", "a\x00", "a\tb", "\x7f", "[1.2.3.4]\n"],
)
def test_ehlo_name_rejects_controls(name: str) -> None:
    with pytest.raises(ValueError) as info:
        ehlo_name(name)
    assert str(info.value) == f"Local host name contains a control character: {name!r}"


@pytest.mark.parametrize(("value", "type_name"), [(b"localhost", "bytes"), (None, "NoneType")])
def test_ehlo_name_rejects_non_str(value: object, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        ehlo_name(value)  # type: ignore[arg-type]
    assert str(info.value) == f"The local host name must be a str, not {type_name}"


# command -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "encoding", "expected"),
    [
        (("NOOP",), "ascii", b"NOOP\r\n"),
        (("QUIT",), "ascii", b"QUIT\r\n"),
        (("EHLO", "mail.example.org"), "ascii", b"EHLO mail.example.org\r\n"),
        (("VRFY", "a@example.org"), "ascii", b"VRFY a@example.org\r\n"),
        (
            ("MAIL", "FROM:<a@example.org>", "SIZE=10", "BODY=8BITMIME"),
            "ascii",
            b"MAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME\r\n",
        ),
        (("VRFY", "ü@example.org"), "utf-8", b"VRFY \xc3\xbc@example.org\r\n"),
        (("VRFY", "é"), "latin-1", b"VRFY \xe9\r\n"),
    ],
)
def test_command_encodes(args: tuple[str, ...], encoding: str, expected: bytes) -> None:
    assert command(*args, encoding=encoding) == expected


def test_command_default_encoding_is_ascii() -> None:
    assert command("HELP", "x") == b"HELP x\r\n"
    with pytest.raises(ValueError) as info:
        command("VRFY", "ü@example.org")
    assert str(info.value).startswith("Command VRFY cannot be encoded as ascii: ")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("NO\rOP",), "Command"),
        (("NOOP\r\n",), "Command"),
        (("\x00",), "Command"),
        (("VRFY", "a\r\nQUIT"), "Command argument"),
        (("VRFY", "a\n"), "Command argument"),
        (("VRFY", "a\x00"), "Command argument"),
        (("VRFY", "a\tb"), "Command argument"),
        (("VRFY", "a\x7f"), "Command argument"),
        (("MAIL", "FROM:<a@example.org>", "SIZE=1\n"), "Command argument"),
    ],
)
def test_command_rejects_controls(args: tuple[str, ...], what: str) -> None:
    with pytest.raises(ValueError) as info:
        command(*args, encoding="utf-8")
    assert str(info.value).startswith(f"{what} contains a control character: ")


# mail_from / rcpt_to -----------------------------------------------------------------------


def _gen(*values: str) -> Iterable[str]:
    yield from values


@pytest.mark.parametrize(
    ("sender", "options", "utf8", "expected"),
    [
        ("a@example.org", (), False, b"MAIL FROM:<a@example.org>\r\n"),
        ("", (), False, b"MAIL FROM:<>\r\n"),
        ("<>", (), False, b"MAIL FROM:<>\r\n"),
        ("Jane <a@example.org>", (), False, b"MAIL FROM:<a@example.org>\r\n"),
        (
            "a@example.org",
            ["SIZE=100", "BODY=8BITMIME"],
            False,
            b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n",
        ),
        ("a@example.org", _gen("SIZE=5"), False, b"MAIL FROM:<a@example.org> SIZE=5\r\n"),
        ("a@example.org", (), True, b"MAIL FROM:<a@example.org>\r\n"),
        (
            "ü@exämple.org",
            ["SMTPUTF8"],
            True,
            "MAIL FROM:<ü@exämple.org> SMTPUTF8\r\n".encode(),
        ),
        ('"a b"@example.org', (), False, b'MAIL FROM:<"a b"@example.org>\r\n'),
    ],
)
def test_mail_from(sender: str, options: Iterable[str], utf8: bool, expected: bytes) -> None:
    assert mail_from(sender, options, utf8=utf8) == expected


@pytest.mark.parametrize(
    ("recipient", "options", "utf8", "expected"),
    [
        ("c@example.org", (), False, b"RCPT TO:<c@example.org>\r\n"),
        ("Bob <c@example.org>", (), False, b"RCPT TO:<c@example.org>\r\n"),
        (
            "c@example.org",
            ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;c@example.org"],
            False,
            b"RCPT TO:<c@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@example.org\r\n",
        ),
        ("postmaster", (), False, b"RCPT TO:<postmaster>\r\n"),
        ("user@[192.0.2.1]", (), False, b"RCPT TO:<user@[192.0.2.1]>\r\n"),
        ("ü@exämple.org", (), True, "RCPT TO:<ü@exämple.org>\r\n".encode()),
    ],
)
def test_rcpt_to(recipient: str, options: Iterable[str], utf8: bool, expected: bytes) -> None:
    assert rcpt_to(recipient, options, utf8=utf8) == expected


def test_mail_from_and_rcpt_to_default_options() -> None:
    assert mail_from("a@example.org") == b"MAIL FROM:<a@example.org>\r\n"
    assert rcpt_to("c@example.org") == b"RCPT TO:<c@example.org>\r\n"


@pytest.mark.parametrize(
    ("function", "address", "options", "utf8", "message"),
    [
        (mail_from, "ü@example.org", (), False, "Command MAIL cannot be encoded as ascii"),
        (rcpt_to, "ü@example.org", (), False, "Command RCPT cannot be encoded as ascii"),
        (mail_from, "a@example.org", ["X=ü"], False, "Command MAIL cannot be encoded as ascii"),
        (rcpt_to, "", (), False, "Empty address"),
        (rcpt_to, "<>", (), True, "Empty address"),
        (mail_from, "a@example.org> SIZE=1", (), False, "not allowed in an SMTP path"),
        (rcpt_to, "c@example.org>\r\nRCPT TO:<d@example.org", (), False, "control character"),
        (mail_from, "a@example.org", ["SIZE=1 BODY=7BIT"], False, "Malformed ESMTP parameter"),
        (mail_from, "a@example.org", ["SIZE=1\r\n"], False, "Malformed ESMTP parameter"),
        (rcpt_to, "c@example.org", ["NOTIFY=NEVER\r\nRSET"], False, "Malformed ESMTP"),
        (mail_from, "a@example.org", ["SIZE=1\n"], True, "Malformed ESMTP|control character"),
    ],
)
def test_mail_from_rcpt_to_refuse(
    function: object, address: str, options: Iterable[str], utf8: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        function(address, options, utf8=utf8)  # type: ignore[operator]


@pytest.mark.parametrize("function", [mail_from, rcpt_to])
def test_mail_from_rcpt_to_non_str(function: object) -> None:
    with pytest.raises(TypeError, match="An address must be a str, not bytes"):
        function(b"a@example.org")  # type: ignore[operator]
    with pytest.raises(TypeError, match="An option must be a str, not bytes"):
        function("a@example.org", [b"SIZE=1"])  # type: ignore[operator]
