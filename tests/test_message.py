"""From message objects to envelopes and bytes (smtp_backends.message)."""

from __future__ import annotations

import email.errors
import email.generator
import email.policy
import io
import re
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtp_backends.errors import SMTPNotSupported
from smtp_backends.message import (
    envelope_for_data,
    envelope_for_message,
    extract_recipients,
    extract_sender,
    flatten,
    message_bytes,
    serialize,
)
from smtp_backends.protocol.extensions import Extensions

FULL = Extensions.parse("host\nPIPELINING\nSIZE 1000000\n8BITMIME\nSMTPUTF8")
BARE = Extensions.parse("host")


def stdlib_flatten(message: Message, *, utf8: bool = False, eight_bit: bool = True) -> bytes:
    """What the standard library's generator writes (Bcc removed), for comparison."""
    copied = message.__class__.__new__(message.__class__)
    copied.__dict__.update(message.__dict__)
    del copied["Bcc"]
    del copied["Resent-Bcc"]
    if isinstance(message, EmailMessage):
        policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    else:
        policy = email.policy.compat32.clone(linesep="\r\n")
    if not eight_bit:
        policy = policy.clone(cte_type="7bit")
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, policy=policy).flatten(copied)
    return buffer.getvalue()


def one_line_per_header(data: bytes, message: Message) -> bool:
    """Whether each of ``message``'s headers starts exactly one line of ``data``'s head.

    Every other line of the header section must continue a header (start with a space
    or a tab): what CPython's ``verify_generated_headers`` enforces, and what the
    standard *bytes* generator does not check.
    """
    head = re.split(rb"\r\n\r\n|\n\n", data, maxsplit=1)[0]
    starts = [line for line in re.split(rb"\r\n|\r|\n", head) if line[:1] not in (b" ", b"\t")]
    names = [name.encode("ascii", "replace") + b":" for name in message]
    return len(starts) == len(names) and all(
        line.lower().startswith(name.lower()) for line, name in zip(starts, names, strict=True)
    )


def corpus() -> list[Message]:
    messages: list[Message] = []
    plain = EmailMessage()
    plain["From"] = "Sender <sender@example.org>"
    plain["To"] = "a@example.org, B <b@example.org>"
    plain["Subject"] = "Hello"
    plain.set_content("Body\n.dot line\n")
    messages.append(plain)

    tricky = EmailMessage()
    tricky["From"] = '"Last, First" <first@example.org>'
    tricky["To"] = [Address("Zoë", "zoe", "example.org"), Address(addr_spec="x@example.org")]
    tricky["Cc"] = "  spaced@example.org  "
    tricky["Bcc"] = "hidden@example.org"
    tricky["Subject"] = "Café =?utf-8?q?not_an_encoded_word?= " + "long " * 30
    tricky["X-Empty"] = ""
    tricky["X-Encoded"] = "=?utf-8?q?caf=C3=A9?="
    tricky["x-lower"] = "lower-case name"
    tricky["Message-ID"] = "<abc@example.org>"
    tricky["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    tricky.set_content("Grüße\n" * 3)
    tricky.add_alternative("<p>Grüße</p>", subtype="html")
    tricky.add_attachment(
        b"\x00\x01" * 500,
        maintype="application",
        subtype="octet-stream",
        filename="data file (1).bin",
    )
    messages.append(tricky)

    mime = MIMEMultipart("alternative")
    mime["From"] = "root@localhost"
    mime["To"] = "somebody@example.com"
    mime["Subject"] = "Hello World!"
    mime.attach(MIMEText("hello", "plain", "utf-8"))
    mime.attach(MIMEText("<html><body><h1>Hello</h1></body></html>", "html", "utf-8"))
    mime.attach(MIMEApplication(b"%PDF-1.4 fake", Name="x.pdf"))
    messages.append(mime)
    # Fix the MIME boundaries: the generator would pick random ones each time.
    for number, message in enumerate(messages):
        for part in message.walk():
            if part.is_multipart() and part.get_boundary() is None:
                part.set_boundary(f"==boundary-{number}-{id(part)}==")
    return messages


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("eight_bit", [True, False])
@pytest.mark.parametrize("index", range(3))
def test_flatten_writes_the_standard_librarys_bytes(
    index: int, utf8: bool, eight_bit: bool
) -> None:
    message = corpus()[index]
    assert flatten(message, utf8=utf8, eight_bit=eight_bit) == stdlib_flatten(
        message, utf8=utf8, eight_bit=eight_bit
    )


header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(subject=header_text, display=header_text, extra=header_text)
def test_flatten_matches_stdlib_for_any_header_values(
    subject: str, display: str, extra: str
) -> None:
    message = EmailMessage()
    try:
        message["Subject"] = subject
        message["X-Extra"] = extra
        message["From"] = Address(display, "user", "example.org")
    except (ValueError, TypeError, IndexError):
        return  # the standard library refuses it: nothing to compare
    message.set_content("x")
    for utf8 in (False, True):
        try:
            expected = stdlib_flatten(message, utf8=utf8)
        except Exception:
            continue
        assert flatten(message, utf8=utf8) == expected


# --------------------------------------------------------------------------- serialize


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("linesep", ["\r\n", "\n", None])
def test_serialize_is_as_bytes_byte_for_byte(index: int, linesep: str | None) -> None:
    message = corpus()[index]
    policy = message.policy if linesep is None else message.policy.clone(linesep=linesep)
    assert serialize(message, linesep=linesep) == message.as_bytes(policy=policy)
    assert b"Bcc" not in serialize(message) or "Bcc" in message  # every header stays
    smtp = email.policy.SMTP
    if isinstance(message, EmailMessage):
        assert serialize(message, policy=smtp) == message.as_bytes(policy=smtp)


def test_serialize_never_mangles_from_lines() -> None:
    message = MIMEText("From here on\nFrom the top\n", "plain", "us-ascii")
    message["Subject"] = "From lines"
    assert b"\nFrom here on" in serialize(message, linesep="\n")
    assert serialize(message, linesep="\r\n") == message.as_bytes(
        policy=message.policy.clone(linesep="\r\n")
    )


compat32_values = st.one_of(
    header_text,
    # Mostly printable ASCII with blanks, so that the fast path's edges are hit often.
    st.text(alphabet=st.sampled_from("ab =?\t,;:<>.-"), max_size=100),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=60, max_size=90),
)


@settings(max_examples=400, deadline=None)
@given(
    subject=compat32_values, extra=compat32_values, name=st.sampled_from(["X-A", "X-" + "n" * 40])
)
# compat32 turns U+001C (a line boundary to str.splitlines) into a bare line break:
# the standard bytes generator writes it, CPython's str generator refuses it.
@example(subject="a\x1cnot a header line", extra="x", name="X-A")
def test_serialize_matches_compat32_for_any_header_values(
    subject: str, extra: str, name: str
) -> None:
    # The kind of message Django 5.2 builds: email.mime classes, compat32, str headers.
    message = MIMEText("body\n", "plain", "utf-8")
    message["Subject"] = subject
    message[name] = extra
    policy = message.policy.clone(linesep="\r\n")
    try:
        expected = message.as_bytes(policy=policy)
    except Exception as exc:  # the standard library refuses it: so must serialize
        with pytest.raises(type(exc)):
            serialize(message, linesep="\r\n")
        return
    if not one_line_per_header(expected, message):  # what verify_generated_headers refuses
        with pytest.raises(ValueError, match="header injection"):
            serialize(message, linesep="\r\n")
        return
    assert serialize(message, linesep="\r\n") == expected


@settings(max_examples=200, deadline=None)
@given(
    body=st.text(alphabet=st.sampled_from("ab \r\n.\u00e9"), max_size=60),
    linesep=st.sampled_from(["\r\n", "\n"]),
)
def test_serialize_matches_as_bytes_for_any_line_breaks(body: str, linesep: str) -> None:
    for message in (MIMEText(body, "plain", "utf-8"), EmailMessage()):
        if isinstance(message, EmailMessage):
            message.set_content(body or "x")
        policy = message.policy.clone(linesep=linesep)
        assert serialize(message, linesep=linesep) == message.as_bytes(policy=policy)


def test_serialize_writes_a_large_text_line_by_line_with_the_same_bytes() -> None:
    body = "line\r\nother\rthird\n" * 5000  # over the one-substitution limit
    message = MIMEText(body, "plain", "utf-8")
    policy = message.policy.clone(linesep="\r\n")
    assert serialize(message, linesep="\r\n") == message.as_bytes(policy=policy)


def test_serialize_falls_back_for_other_policies() -> None:
    class Custom(email.policy.Compat32):
        pass

    message = MIMEText("body\n")
    message["Subject"] = "Plain words"
    custom = Custom(linesep="\r\n")
    assert serialize(message, policy=custom) == message.as_bytes(policy=custom)


def test_flatten_does_not_touch_the_callers_message() -> None:
    message = corpus()[1]
    before = message.as_bytes()
    assert b"hidden@example.org" not in flatten(message)
    assert message["Bcc"] == "hidden@example.org"
    assert message.as_bytes() == before


def test_sender_and_recipients_from_headers() -> None:
    message = corpus()[1]
    assert extract_sender(message) == "first@example.org"
    assert extract_recipients(message) == [
        "zoe@example.org",
        "x@example.org",
        "spaced@example.org",
        "hidden@example.org",
    ]
    message["Sender"] = "agent@example.org"
    assert extract_sender(message) == "agent@example.org"


def test_resent_headers_win_and_two_blocks_are_refused() -> None:
    message = corpus()[0]
    message["Resent-Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    message["Resent-From"] = "resender@example.org"
    message["Resent-To"] = "new@example.org"
    message["Resent-Bcc"] = "secret@example.org"
    assert extract_sender(message) == "resender@example.org"
    assert extract_recipients(message) == ["new@example.org", "secret@example.org"]
    assert b"secret@example.org" not in flatten(message)
    message["Resent-Date"] = "Thu, 26 Nov 2026 10:00:00 +0000"
    with pytest.raises(ValueError, match="more than one 'Resent-' header block"):
        extract_sender(message)
    with pytest.raises(ValueError, match="more than one"):
        extract_recipients(message)


def test_compat32_message_headers_and_undecodable_address() -> None:
    message = Message()
    message["From"] = "Old Style <old@example.org>"
    message["To"] = "a@example.org,\r\n b@example.org"
    assert extract_sender(message) == "old@example.org"
    assert extract_recipients(message) == ["a@example.org", "b@example.org"]
    message["Cc"] = "not an address at all <"
    with pytest.raises(ValueError):
        extract_recipients(message)
    empty = Message()
    assert extract_sender(empty) is None
    assert extract_recipients(empty) == []


def test_envelopes_choose_extensions() -> None:
    envelope = envelope_for_data(
        "a@example.org", "b@example.org", "Subject: é\n\nx\n", None, None, FULL
    )
    assert envelope.commands[0] == b"MAIL FROM:<a@example.org> SIZE=18 BODY=8BITMIME\r\n"
    envelope = envelope_for_data(
        "ü@example.org", ["b@example.org"], b"x", ["SIZE=9"], ["NOTIFY=NEVER"], FULL
    )
    assert envelope.commands[0] == "MAIL FROM:<ü@example.org> SIZE=9 SMTPUTF8\r\n".encode()
    assert envelope.commands[1] == b"RCPT TO:<b@example.org> NOTIFY=NEVER\r\n"
    with pytest.raises(SMTPNotSupported):
        envelope_for_data("ü@example.org", ["b@example.org"], b"x", None, None, BARE)
    with pytest.raises(SMTPNotSupported):
        envelope_for_data("a@example.org", ["b@example.org"], b"x", ["SMTPUTF8"], None, BARE)
    bare = envelope_for_data("a@example.org", ["b@example.org"], b"\xff", None, None, BARE)
    assert bare.commands[0] == b"MAIL FROM:<a@example.org>\r\n"


def test_message_envelopes() -> None:
    message = corpus()[0]
    envelope = envelope_for_message(message, None, None, None, None, FULL)
    assert (envelope.sender, envelope.recipients) == (
        "sender@example.org",
        ["a@example.org", "b@example.org"],
    )
    envelope = envelope_for_message(message, "x@example.org", "y@example.org", None, None, FULL)
    assert (envelope.sender, envelope.recipients) == ("x@example.org", ["y@example.org"])
    with pytest.raises(TypeError):
        envelope_for_message(b"raw", None, None, None, None, FULL)  # type: ignore[arg-type]
    no_from = EmailMessage()
    no_from["To"] = "a@example.org"
    with pytest.raises(ValueError, match="No From header"):
        envelope_for_message(no_from, None, None, None, None, FULL)
    no_to = EmailMessage()
    no_to["From"] = "a@example.org"
    with pytest.raises(ValueError, match="No recipient headers"):
        envelope_for_message(no_to, None, None, None, None, FULL)
    utf8 = EmailMessage()
    utf8["From"] = "ü@example.org"
    utf8["To"] = "b@example.org"
    with pytest.raises(SMTPNotSupported):
        envelope_for_message(utf8, None, None, None, None, BARE)


def test_message_bytes() -> None:
    assert message_bytes("é") == "é".encode()
    assert message_bytes(bytearray(b"x")) == b"x"
    assert message_bytes(memoryview(b"y")) == b"y"
    with pytest.raises(TypeError):
        message_bytes(1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- header checks
# The fast flattening replaces the standard header writer, where CPython's fix for
# CVE-2024-6923 (verify_generated_headers) lives; the standard *bytes* generator does not
# run that check on any version, and 3.10-3.12 before their security releases have none.
# These hold on every supported Python.

INJECTED_NAMES = [
    pytest.param("X-Note\r\nBcc", id="CRLF"),
    pytest.param("X-Note\nBcc", id="LF"),
    pytest.param("X-Note\rBcc", id="CR"),
    pytest.param("X-Note\x1cBcc", id="str.splitlines-boundary"),
    pytest.param("X Note", id="space"),
    pytest.param("X-Note:Bcc", id="colon"),
    pytest.param("X-Not\u00e9", id="non-ASCII"),
    pytest.param("X-\x00", id="NUL"),
    pytest.param("X-\x7f", id="DEL"),
    pytest.param("X-\t", id="tab"),
]


def _email_message() -> Message:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message.set_content("body\n")
    return message


def _smtp_email_message() -> Message:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message.set_content("body\n")
    return message


def _mime_message() -> Message:  # compat32, as Django 5.2 and Flask build them
    message = MIMEMultipart()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message.attach(MIMEText("body\n", "plain", "utf-8"))
    message.set_boundary("==b==")
    return message


def _plain_message() -> Message:
    message = Message()
    message["From"] = "a@example.org"
    message["To"] = "b@example.org"
    message.set_payload("body\n")
    return message


BUILDERS = [
    pytest.param(_email_message, id="EmailMessage"),
    pytest.param(_smtp_email_message, id="EmailMessage-SMTP"),
    pytest.param(_mime_message, id="email.mime"),
    pytest.param(_plain_message, id="Message"),
]
WRITERS = [
    pytest.param(lambda m: serialize(m), id="serialize"),
    pytest.param(lambda m: serialize(m, linesep="\r\n"), id="serialize-crlf"),
    pytest.param(lambda m: serialize(m, policy=email.policy.SMTP), id="serialize-SMTP"),
    pytest.param(lambda m: flatten(m), id="flatten"),
    pytest.param(lambda m: flatten(m, utf8=True, eight_bit=False), id="flatten-utf8-7bit"),
]


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_an_invalid_header_name_raises(name: str, build: Any, writer: Any) -> None:
    message = build()
    message[name] = "x@example.com"
    with pytest.raises(ValueError, match="Invalid header name"):
        writer(message)


@pytest.mark.parametrize("build", BUILDERS)
def test_every_valid_header_name_writes_the_standard_bytes(build: Any) -> None:
    # RFC 5322 2.2: every printable ASCII character but ':' may be in a name.
    message = build()
    message["X!#$%&'*+-./0123456789;<=>?@[\\]^_`{|}~"] = "value"
    message["x-" + "n" * 100] = "long name " * 12
    message["X-Parts"] = "part of a part"
    crlf = message.policy.clone(linesep="\r\n")
    assert serialize(message) == message.as_bytes()
    assert serialize(message, linesep="\r\n") == message.as_bytes(policy=crlf)
    assert serialize(message, policy=email.policy.SMTP) == message.as_bytes(
        policy=email.policy.SMTP
    )
    for utf8, eight_bit in ((False, True), (True, False)):
        assert flatten(message, utf8=utf8, eight_bit=eight_bit) == stdlib_flatten(
            message, utf8=utf8, eight_bit=eight_bit
        )


class _ForeignFold(str):
    """A header object (as a policy's header_factory might make) with its own fold()."""

    name = "X-Custom"

    def __new__(cls, folded: str) -> _ForeignFold:
        header = super().__new__(cls, "custom")
        header.folded = folded  # type: ignore[attr-defined]
        return header

    def fold(self, *, policy: Any) -> str:
        return self.folded  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    "folded",
    [
        pytest.param("X-Custom: ok\r\nBcc: evil@example.com\r\n", id="second-header"),
        pytest.param("X-Custom: ok\r\n\r\nfake body\r\n", id="early-body"),
        pytest.param("X-Custom: ok\r\n\r\n", id="trailing-empty-line"),
        pytest.param("X-Custom: ok\nBcc: evil@example.com\r\n", id="bare-LF"),
        pytest.param("X-Custom: ok\rBcc: evil@example.com\r\n", id="bare-CR"),
        pytest.param("X-Custom: ok", id="no-line-end"),
        pytest.param("Bcc: evil@example.com\r\n", id="another-name"),
        pytest.param("no colon at all\r\n", id="no-name"),
        pytest.param("X Custom: ok\r\n", id="bad-written-name"),
    ],
)
def test_a_header_that_folds_to_more_than_itself_raises(folded: str) -> None:
    message = _smtp_email_message()
    message._headers.append(("X-Custom", _ForeignFold(folded)))  # type: ignore[attr-defined]
    for write in (serialize, flatten):
        with pytest.raises(ValueError, match="header injection"):
            write(message)


def test_a_header_object_folding_to_one_continued_header_passes() -> None:
    message = _smtp_email_message()
    header = _ForeignFold("x-custom: ok\r\n continued\r\n")
    message._headers.append(("X-Custom", header))  # type: ignore[attr-defined]
    assert b"x-custom: ok\r\n continued\r\n" in serialize(message)


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("ok\r\nBcc: evil@example.com", id="CRLF-header"),
        pytest.param("ok\nnot a header", id="LF-line"),
        pytest.param("ok\x1cnot a header", id="str.splitlines-boundary"),
        pytest.param("ok\x1c\x1cfake body", id="early-body"),
        pytest.param("ok\u2028\u2028fake body", id="unicode-line-separators"),
    ],
)
def test_a_value_that_would_add_lines_raises_or_is_refused_by_the_library(
    build: Any, value: str
) -> None:
    # Stored raw, as a parsed message stores its values (the setters of the modern
    # policy refuse some of them; compat32's accept them all).
    message = build()
    message._headers.append(("X-Note", value))  # type: ignore[attr-defined]
    for write in (serialize, flatten, lambda m: serialize(m, linesep="\r\n")):
        try:
            data = write(message)
        except (ValueError, email.errors.HeaderParseError):
            continue  # ours, or the standard library's own refusal
        assert one_line_per_header(data, message), data


PARSED = [
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: folded\r\n  over two lines\r\n"
    b"X-Empty:\r\nX-8bit: caf\xc3\xa9\r\n\r\nbody\r\n",
    b"From: a@example.org\nTo: b@example.org\nSubject: =?utf-8?q?caf=C3=A9?=\n\nbody\n",
    b"From: a@example.org\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n'
    b"X-Part: part header\r\n\r\npart\r\n--XX--\r\n",
]


@pytest.mark.parametrize("raw", PARSED)
@pytest.mark.parametrize(
    "policy", [email.policy.SMTP, email.policy.default, email.policy.compat32], ids=str
)
def test_parsed_messages_write_the_standard_bytes(raw: bytes, policy: Any) -> None:
    # A parsed message holds plain strings, not header objects (this used to fail
    # with AttributeError on the modern policies).
    message = email.message_from_bytes(raw, policy=policy)
    assert serialize(message) == message.as_bytes()
    assert serialize(message, linesep="\r\n") == message.as_bytes(
        policy=message.policy.clone(linesep="\r\n")
    )
    if isinstance(message, EmailMessage):
        assert flatten(message) == stdlib_flatten(message)


header_names = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(name=header_names, value=header_text, build=st.sampled_from([b.values[0] for b in BUILDERS]))
@example(name="X-Note\r\nBcc", value="x@example.com", build=_email_message)
@example(name="X-Note\r\nBcc", value="x@example.com", build=_mime_message)
def test_any_header_name_is_written_as_the_standard_library_does_or_refused(
    name: str, value: str, build: Any
) -> None:
    message = build()
    try:
        message[name] = value
    except Exception:
        return  # the standard library refuses it at once
    valid = re.fullmatch(r"[!-9;-~]+", name) is not None
    try:
        expected = message.as_bytes()
    except Exception:
        expected = None
    if not valid:
        with pytest.raises((ValueError, TypeError)):
            serialize(message)
        return
    if expected is None:
        with pytest.raises(Exception):  # noqa: B017 - whatever the standard library raises
            serialize(message)
    elif one_line_per_header(expected, message):
        assert serialize(message) == expected
    else:
        with pytest.raises(ValueError, match="header injection"):
            serialize(message)


# --------------------------------------------------------------------------- through the client


def _flask_message() -> Message:
    from smtp_backends.flask import Message as FlaskMessage

    mime = FlaskMessage(
        "Subject", sender="a@example.org", recipients=["b@example.org"], body="body\n"
    ).to_mime()
    return mime


def _good() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "good@example.org"
    message["Subject"] = "fine"
    message.set_content("fine\n")
    return message


@pytest.mark.parametrize("build", [*BUILDERS, pytest.param(_flask_message, id="Flask")])
async def test_the_client_refuses_an_injected_header_before_anything_is_sent(
    make_scripted_server: Any, build: Any
) -> None:
    from smtp_backends import SMTP
    from tests.scripted import GroupServer

    server = GroupServer()
    scripted = make_scripted_server(server)
    message = build()
    message["X-Note\r\nBcc"] = "x@example.com"
    async with SMTP(
        hostname=scripted.host, port=scripted.port, start_tls=False, timeout=5
    ) as client:
        with pytest.raises(ValueError, match="Invalid header name"):
            await client.send_message(message)
        assert client.is_connected  # nothing was written: the connection is still good
        first, refused, last = await client.send_messages([_good(), message, _good()])
        assert isinstance(refused, ValueError)
        assert not isinstance(first, Exception) and not isinstance(last, Exception)
    wire = b"".join(scripted.received)
    assert b"Bcc" not in wire and b"x@example.com" not in wire
    assert server.verbs.count(b"MAIL") == 2
    assert len(server.data) == 2


@pytest.mark.parametrize("fail_silently", [False, True])
@pytest.mark.parametrize("count", [1, 3])
def test_django_messages_with_a_crlf_header_name_are_refused(
    make_scripted_server: Any, fail_silently: bool, count: int
) -> None:
    # Stock Django (5.2 and 6.x) checks header values but not names; the check in
    # serialize() catches them whichever message class the installed Django builds.
    from tests.django_project import setup

    setup()
    import django.core.mail

    from smtp_backends import bridge
    from tests.django_project.testing import make_backend
    from tests.scripted import GroupServer

    server = GroupServer()
    scripted = make_scripted_server(server)
    bad = django.core.mail.EmailMessage(
        "Subject",
        "Body",
        "a@example.org",
        ["b@example.org"],
        headers={"X-Note\r\nBcc": "x@example.com"},
    )
    try:
        rendered = bad.message()
    except ValueError:
        pass  # a Django that checks names itself: refused all the same
    else:
        with pytest.raises(ValueError, match="Invalid header name"):
            serialize(rendered, linesep="\r\n")
        with pytest.raises(ValueError, match="Invalid header name"):
            serialize(rendered, policy=email.policy.SMTP)
    good = [
        django.core.mail.EmailMessage("Fine", "Body", "a@example.org", ["good@example.org"])
        for _ in range(count - 1)
    ]
    backend = make_backend(scripted, fail_silently=fail_silently)
    try:
        with pytest.raises(ValueError):  # never silent: a programming error, as in Django
            backend.send_messages([*good, bad])
    finally:
        backend.close()
        bridge.shutdown()
    wire = b"".join(scripted.received)
    assert b"Bcc" not in wire and b"x@example.com" not in wire
    assert server.verbs.count(b"MAIL") == count - 1  # the good ones before it went out


def test_a_header_object_is_checked_under_the_name_it_writes() -> None:
    # The modern fold writes the header object's own name, whatever it is stored under.
    registry = email.policy.SMTP.header_factory
    message = _smtp_email_message()
    message._headers.append(("X-A", registry("X-Renamed", "v")))  # type: ignore[attr-defined]
    assert serialize(message) == message.as_bytes()
    assert b"\r\nX-Renamed: v\r\n" in serialize(message)
    message._headers.append(("X-B", registry("X-Note\r\nBcc", "x@example.com")))  # type: ignore[attr-defined]
    for write in (serialize, flatten):
        with pytest.raises(ValueError, match="Invalid header name"):
            write(message)


@pytest.mark.parametrize("build", BUILDERS)
def test_a_header_name_that_is_not_a_str_is_a_type_error(build: Any) -> None:
    message = build()
    message._headers.append((b"X-Bytes", "v"))
    with pytest.raises(TypeError, match="A header name must be a str, not bytes"):
        serialize(message)
