"""From message objects to envelopes and bytes (smtp_backends.message)."""

from __future__ import annotations

import email.generator
import email.policy
import io
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import given, settings
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
