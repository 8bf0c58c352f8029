"""Any message, as it goes on the wire: one end of data, and no header it did not have.

Messages of every kind the package meets (core ``EmailMessage`` under its policies,
``email.mime``/compat32 as Django 5.2 and Flask build them, parsed messages) get arbitrary
headers (any names, values with line breaks of every kind, encoded-word look-alikes, long
ones), bodies (lines of dots, lone CR and LF, 8-bit text) and attachments. Each is
flattened as the client sends it (:func:`flatten`, or :func:`serialize` for the Django
adapter), then encoded for DATA (line endings normalised, dots stuffed) with the end of
data appended. Either the package refuses the message (and so would the standard library,
or the message is an injection attempt), or the bytes:

* contain exactly one end-of-data sequence, at their end, and no bare CR or LF;
* read back, once un-stuffed, as exactly the message's headers (and each part's), in
  order: nothing added, nothing moved from a value into a header of its own.
"""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import os
import re
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from smtp_backends.message import flatten, serialize
from smtp_backends.protocol.data import END_OF_DATA, encode_content
from tests.test_message import stdlib_flatten

EXAMPLES = int(os.environ.get("SMTP_BACKENDS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES * 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

common_names = st.sampled_from(
    ["Subject", "X-A", "Comments", "Reply-To", "Keywords", "X-Mailer", "Bcc", "To"]
)
names = st.one_of(
    common_names,
    common_names,
    st.from_regex(r"[!-9;-~]{1,20}", fullmatch=True),  # any valid name (RFC 5322 2.2)
    st.from_regex(r"[!-9;-~]{1,20}", fullmatch=True),
    st.text(max_size=12),  # anything, mostly invalid
    st.sampled_from(["X-Note\r\nBcc", "X\nTo", "X-\x1c", "X Y", "X:Y", ""]),
)
line_breaks = st.sampled_from(["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"])
values = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.one_of(st.text(max_size=15), line_breaks, st.sampled_from(["Bcc: x@y.org", " ", "."])),
        max_size=6,
    ).map("".join),
    st.sampled_from(["=?utf-8?q?caf=C3=A9?=", "a@example.org", "\r\n.\r\n", "x" * 200]),
    st.text(alphabet="ab =?\t,;:<>.-\r\n", max_size=100),
)
bodies = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from([".", "..", ".x", "a", "\r\n", "\n", "\r", "\r\n.\r\n", "é", " "]),
        max_size=20,
    ).map("".join),
)
kinds = st.sampled_from(["email", "email-smtp", "mime", "multipart", "message", "parsed"])


def build(kind: str, headers: list[tuple[str, str]], body: str, attachment: bytes) -> Message:
    """A message of ``kind``; headers the standard library refuses at once are left out."""
    message: Message
    if kind in ("email", "email-smtp"):
        policy = email.policy.SMTP if kind == "email-smtp" else email.policy.default
        message = EmailMessage(policy=policy)
        message.set_content(body)
        if attachment:
            message.add_attachment(attachment, maintype="application", subtype="octet-stream")
    elif kind == "mime":
        message = MIMEText(body, "plain", "utf-8")
    elif kind == "multipart":
        message = MIMEMultipart()
        message.attach(MIMEText(body, "plain", "utf-8"))
        message.attach(MIMEApplication(attachment or b"\x00"))
    elif kind == "message":
        message = Message()
        message.set_payload(body)
    else:
        raw = b"Subject: parsed\r\n  folded\r\nX-Raw: caf\xc3\xa9\r\n\r\n" + body.encode(
            "utf-8", "surrogateescape"
        )
        message = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(raw)
    for name, value in headers:
        try:
            message[name] = value
        except Exception:  # the standard library refuses it at once
            continue
    for part in message.walk():
        if part.is_multipart() and part.get_boundary() is None:
            part.set_boundary("==fuzz-boundary==")
    return message


def names_of(message: Message, *, skip: tuple[str, ...] = ()) -> list[list[str]]:
    """Each part's header names, lower-cased, in order (top level first)."""
    out = []
    for index, part in enumerate(message.walk()):
        keys = [key.lower() for key in part]
        if index == 0:
            keys = [key for key in keys if key not in skip]
        out.append(keys)
    return out


def wire_problem(data: bytes, message: Message, *, skip: tuple[str, ...] = ()) -> str | None:
    """What is wrong with ``data`` (``message`` flattened) once on the wire, if anything."""
    wire = encode_content(data) + END_OF_DATA
    # Exactly one end of data, at the end; no bare CR or LF (RFC 5321 2.3.8, 4.5.2).
    if wire.find(b"\r\n.\r\n") != len(wire) - 5 or wire.startswith(b".\r\n"):
        return "more than one end of data"
    if re.search(rb"\r(?!\n)|(?<!\r)\n", wire):
        return "a bare CR or LF"
    # What a server stores: the content up to the end of data, un-stuffed (RFC 5321 4.5.2).
    stored = re.sub(rb"(?m)^\.", b"", wire[: -len(END_OF_DATA)])
    head = b"" if stored.startswith(b"\r\n") else stored.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n") if head else []:
        # Each header line starts a header or continues one.
        if not re.match(rb"[!-9;-~]+:|[ \t]", line):
            return f"a header line that is no header: {line!r}"
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(stored)
    if names_of(parsed) != names_of(message, skip=skip):
        return f"other headers: {names_of(parsed)} for {names_of(message, skip=skip)}"
    return None


def invalid_name(message: Message) -> bool:
    return any(
        not isinstance(name, str) or not re.fullmatch(r"[!-9;-~]+", name)
        for part in message.walk()
        for name, _ in part.raw_items()
    )


def bare_line_break(data: bytes) -> bool:
    """A CR or LF that is not part of a CRLF: inside a header, CPython's str generator
    (``verify_generated_headers``) refuses it; the generator never leaves one elsewhere."""
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is not None


def value_ends_with_a_line_break(message: Message) -> bool:
    return any(
        str(value)[-1:] in ("\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028")
        for part in message.walk()
        for _, value in part.raw_items()
    )


def stdlib_bytes(message: Message, how: str) -> bytes:
    """What the standard library's generator writes for ``as_sent(message, how)``."""
    if how.startswith("flatten"):
        utf8 = how == "flatten-7bit-utf8"
        return stdlib_flatten(message, utf8=utf8, eight_bit=not utf8)
    if how == "serialize-smtp":
        return message.as_bytes(policy=email.policy.SMTP)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def as_sent(message: Message, how: str) -> tuple[bytes, tuple[str, ...]]:
    if how == "flatten":
        return flatten(message), ("bcc", "resent-bcc")
    if how == "flatten-7bit-utf8":
        return flatten(message, utf8=True, eight_bit=False), ("bcc", "resent-bcc")
    if how == "serialize-smtp":
        return serialize(message, policy=email.policy.SMTP), ()
    return serialize(message, linesep="\r\n"), ()


@FUZZ
@given(
    kind=kinds,
    headers=st.lists(st.tuples(names, values), max_size=4),
    body=bodies,
    attachment=st.binary(max_size=40),
    how=st.sampled_from(["flatten", "flatten-7bit-utf8", "serialize-smtp", "serialize"]),
)
@example(
    kind="email",
    headers=[("X-Note\r\nBcc", "x@example.com")],
    body="x",
    attachment=b"",
    how="flatten",
)
@example(
    kind="mime",
    headers=[("Subject", "a\x1c\x1cfake body")],
    body=".",
    attachment=b"",
    how="serialize",
)
@example(
    kind="message",
    headers=[("X-A", "ok\x1cBcc: x@y.org")],
    body="\r\n.\r\n",
    attachment=b"",
    how="flatten",
)
def test_any_message_on_the_wire_has_one_end_of_data_and_only_its_headers(
    kind: str, headers: list[tuple[str, str]], body: str, attachment: bytes, how: str
) -> None:
    try:
        message = build(kind, headers, body, attachment)
    except Exception:  # a body or payload the standard library cannot hold
        return
    try:
        expected: bytes | None = stdlib_bytes(message, how)
    except Exception:  # the standard library's own failure on this message
        expected = None
    try:
        data, skip = as_sent(message, how)
    except Exception as exc:
        if expected is not None:
            # Refused where the standard library writes bytes: only ours, and only for
            # an invalid name or bytes that would not be this message on the wire.
            assert isinstance(exc, ValueError), exc
            assert "header injection" in str(exc) or "Invalid header name" in str(exc), exc
            skip = ("bcc", "resent-bcc") if how.startswith("flatten") else ()
            assert (
                invalid_name(message)
                or bare_line_break(expected)  # what verify_generated_headers refuses
                or wire_problem(expected, message, skip=skip)
                # Stricter than CPython: a header ending in an empty line (harmless only
                # when it is the last one; before another, it starts the body there).
                or value_ends_with_a_line_break(message)
            ), exc
            event("refused: the standard library would inject")
        else:
            event("refused: so does the standard library")
        return
    problem = wire_problem(data, message, skip=skip)
    assert problem is None, (problem, data[-300:])
    if expected is not None:
        assert data == expected  # byte for byte the standard library's, when it is safe
    event(f"checked, {len(message)} headers")
