"""Tables for parsing the EHLO reply (smtp_backends.protocol.extensions)."""

from __future__ import annotations

import dataclasses

import pytest

from smtp_backends.protocol.extensions import Extensions

POSTFIX = (
    "mail.example.org\n"
    "PIPELINING\n"
    "SIZE 10240000\n"
    "VRFY\n"
    "ETRN\n"
    "STARTTLS\n"
    "AUTH PLAIN LOGIN\n"
    "AUTH=PLAIN LOGIN\n"
    "ENHANCEDSTATUSCODES\n"
    "8BITMIME\n"
    "DSN\n"
    "SMTPUTF8\n"
    "CHUNKING"
)


@pytest.mark.parametrize(
    ("text", "keywords", "mechanisms"),
    [
        pytest.param(
            POSTFIX,
            {
                "pipelining": "",
                "size": "10240000",
                "vrfy": "",
                "etrn": "",
                "starttls": "",
                "auth": "PLAIN LOGIN",
                "enhancedstatuscodes": "",
                "8bitmime": "",
                "dsn": "",
                "smtputf8": "",
                "chunking": "",
            },
            ("PLAIN", "LOGIN"),
            id="postfix",
        ),
        pytest.param("", {}, (), id="empty"),
        pytest.param("mail.example.org", {}, (), id="greeting-only"),
        pytest.param("PIPELINING", {}, (), id="first-line-is-the-greeting"),
        pytest.param(
            "x\nStartTLS\nsize 100\nPipeLining",
            {"starttls": "", "size": "100", "pipelining": ""},
            (),
            id="keywords-lower-cased",
        ),
        pytest.param(
            "x\nX-EXT Some Mixed Params",
            {"x-ext": "Some Mixed Params"},
            (),
            id="params-keep-their-case",
        ),
        pytest.param(
            "x\nAUTH PLAIN LOGIN CRAM-MD5",
            {"auth": "PLAIN LOGIN CRAM-MD5"},
            ("PLAIN", "LOGIN", "CRAM-MD5"),
            id="auth-space",
        ),
        pytest.param("x\nAUTH=LOGIN", {"auth": "LOGIN"}, ("LOGIN",), id="auth-equals"),
        pytest.param(
            "x\nAUTH=LOGIN PLAIN", {"auth": "LOGIN PLAIN"}, ("LOGIN", "PLAIN"), id="auth-equals-2"
        ),
        pytest.param("x\nauth=login", {"auth": "login"}, ("LOGIN",), id="auth-equals-lower"),
        pytest.param(
            "x\nauth login cram-md5",
            {"auth": "login cram-md5"},
            ("LOGIN", "CRAM-MD5"),
            id="auth-lower-mechanisms-upper-cased",
        ),
        pytest.param(
            "x\nAUTH=LOGIN\nAUTH PLAIN LOGIN",
            {"auth": "LOGIN"},
            ("LOGIN", "PLAIN"),
            id="auth-equals-first",
        ),
        pytest.param(
            "x\nAUTH PLAIN PLAIN LOGIN\nAUTH LOGIN XOAUTH2\nAUTH=plain",
            {"auth": "PLAIN PLAIN LOGIN"},
            ("PLAIN", "LOGIN", "XOAUTH2"),
            id="auth-dedupe-in-order",
        ),
        pytest.param("x\nAUTH", {"auth": ""}, (), id="auth-without-mechanisms"),
        pytest.param("x\nAUTH=", {"auth": ""}, (), id="auth-equals-empty"),
        pytest.param("x\nAUTHX PLAIN", {"authx": "PLAIN"}, (), id="auth-prefix-is-another-keyword"),
        pytest.param(
            "x\nSIZE 100\nSIZE 200\nsize 300", {"size": "100"}, (), id="duplicate-keyword-first"
        ),
        pytest.param(
            "x\n  PIPELINING  \nSIZE    1000   ",
            {"pipelining": "", "size": "1000"},
            (),
            id="whitespace-stripped",
        ),
        pytest.param("x\n\n\nDSN\n", {"dsn": ""}, (), id="empty-lines-skipped"),
        pytest.param("x\n   \nDSN", {"dsn": ""}, (), id="blank-lines-skipped"),
    ],
)
def test_parse(text: str, keywords: dict[str, str], mechanisms: tuple[str, ...]) -> None:
    extensions = Extensions.parse(text)
    assert extensions.keywords == keywords
    assert extensions.auth_mechanisms == mechanisms
    assert extensions == Extensions(keywords, mechanisms)


@pytest.mark.parametrize(
    ("text", "max_size"),
    [
        ("x\nSIZE 10240000", 10240000),
        ("x\nSIZE 1", 1),
        ("x\nSIZE 00100", 100),
        ("x\nsize 52428800", 52428800),
        ("x\nSIZE 99999999999999999999", 99999999999999999999),
        ("x\nSIZE", None),  # declared without a limit (RFC 1870 4)
        ("x\nSIZE 0", None),  # 0: no fixed maximum
        ("x\nSIZE 000", None),
        ("x\nSIZE abc", None),
        ("x\nSIZE -1", None),
        ("x\nSIZE +1", None),
        ("x\nSIZE 1.5", None),
        ("x\nSIZE 1e6", None),
        ("x\nSIZE 10 20", None),
        ("x\nPIPELINING", None),
        ("", None),
    ],
)
def test_max_size(text: str, max_size: int | None) -> None:
    assert Extensions.parse(text).max_size == max_size


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("1\u00b3", id="superscript-three"),
        pytest.param("\u0661\u0660", id="arabic-indic-digits"),
        pytest.param("\uff11\uff10", id="fullwidth-digits"),
    ],
)
def test_max_size_non_ascii_digits_are_garbage(value: str) -> None:
    # RFC 1870: size-value ::= 1*20DIGIT (ASCII). A server's garbage must not raise.
    assert Extensions.parse(f"x\nSIZE {value}").max_size is None


@pytest.mark.parametrize(
    ("keyword", "supported"),
    [
        ("pipelining", True),
        ("PIPELINING", True),
        ("Pipelining", True),
        ("size", True),
        ("auth", True),
        ("8BITMIME", True),
        ("chunking", False),
        ("", False),
        ("pipe", False),
        ("size 10240000", False),
    ],
)
def test_supports(keyword: str, supported: bool) -> None:
    extensions = Extensions.parse("x\nPIPELINING\nSIZE 10240000\nAUTH PLAIN\n8BITMIME")
    assert extensions.supports(keyword) is supported


def test_default_is_empty() -> None:
    extensions = Extensions()
    assert extensions.keywords == {}
    assert extensions.auth_mechanisms == ()
    assert extensions.max_size is None
    assert extensions.supports("pipelining") is False


def test_frozen() -> None:
    extensions = Extensions.parse("x\nPIPELINING")
    with pytest.raises(dataclasses.FrozenInstanceError):
        extensions.auth_mechanisms = ("PLAIN",)  # type: ignore[misc]
