"""The per-batch preparing function (smtp_backends.message.batch_preparer).

Its fast path must give exactly what :func:`envelope_for_data` gives (the same
commands, content, sender and recipients), and everything else must go to the
full path, which raises what it always raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_backends.errors import SMTPNotSupported
from smtp_backends.message import batch_preparer, envelope_for_data
from smtp_backends.protocol.extensions import Extensions
from smtp_backends.protocol.transaction import Envelope

SERVERS = {
    "bare": Extensions.parse("host"),
    "size": Extensions.parse("host\nSIZE 1000000"),
    "8bit": Extensions.parse("host\n8BITMIME"),
    "utf8": Extensions.parse("host\nSMTPUTF8"),
    "full": Extensions.parse("host\nPIPELINING\nSIZE 1000000\n8BITMIME\nSMTPUTF8"),
}

ADDRESSES: list[Any] = [
    "a@example.org",
    "b@example.org",
    "Ann Example <ann@example.org>",
    '"john doe"@example.org',
    "",
    "  c@example.org  ",
    "Jos\u00e9 <jose@example.org>",  # non-ASCII display name, ASCII address
    "\u00fc@example.org",  # non-ASCII local part
    "u@b\u00fccher.example",  # non-ASCII domain (IDNA fallback without SMTPUTF8)
    "a@example.org\r\nRCPT TO:<evil@example.org>",
    "a\n@example.org",
    "a\x00@example.org",
    "a b@example.org",
    "<a@example.org",
    "a@[1.2.3.4]",
    b"bytes@example.org",
    None,
    7,
]


class Full:
    """The full path as the client passes it: counts the items it is given."""

    def __init__(
        self, extensions: Extensions, sign: Callable[[bytes], bytes] | None = None
    ) -> None:
        self.extensions = extensions
        self.sign = sign
        self.items: list[Any] = []

    def __call__(self, item: Any) -> Envelope:
        self.items.append(item)
        ready = item() if callable(item) else item
        if isinstance(ready, tuple) and len(ready) == 3:
            return envelope_for_data(
                ready[0], ready[1], ready[2], None, None, self.extensions, self.sign
            )
        raise TypeError(f"not an item: {type(ready).__name__}")


def outcome(make: Callable[[], Envelope]) -> tuple[Any, ...]:
    """What ``make()`` gives: the envelope's parts, or the error's type and text."""
    try:
        envelope = make()
    except Exception as exc:
        return (type(exc), str(exc))
    return (envelope.sender, envelope.recipients, envelope.content, envelope.commands)


def both(extensions: Extensions, item: tuple[Any, Any, Any]) -> tuple[Any, Any, Full]:
    full = Full(extensions)
    prepare = batch_preparer(extensions, None, full)
    fast = outcome(lambda: prepare(item))
    reference = outcome(lambda: envelope_for_data(*item, None, None, extensions))
    return fast, reference, full


@settings(max_examples=400, deadline=None)
@given(
    server=st.sampled_from(sorted(SERVERS)),
    sender=st.sampled_from(ADDRESSES),
    recipients=st.one_of(
        st.sampled_from(ADDRESSES),
        st.lists(st.sampled_from(ADDRESSES), max_size=3),
        st.lists(st.sampled_from(ADDRESSES), max_size=3).map(tuple),
    ),
    data=st.one_of(
        st.binary(max_size=12).map(lambda b: bytes(b"\r\n.a\xff"[x % 5] for x in b)),
        st.text(alphabet="\r\n.a\u00e9", max_size=12),
        st.sampled_from([bytearray(b"x\n"), memoryview(b".y"), "a\ud800", None, 5]),
    ),
)
def test_the_fast_path_gives_what_the_full_path_gives(
    server: str, sender: Any, recipients: Any, data: Any
) -> None:
    fast, reference, full = both(SERVERS[server], (sender, recipients, data))
    assert fast == reference
    assert len(full.items) <= 1


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_plain_items_never_reach_the_full_path(server: str) -> None:
    extensions = SERVERS[server]
    items = [
        ("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nbody\r\n"),
        ("a@example.org", "b@example.org", "Subject: \u00e9\n\n.dot\n"),
        ("", ("b@example.org", "Bea <c@example.org>"), b".\r\n\xff"),
        ("Ann <a@example.org>", ["b@example.org"], b""),
    ]
    for item in items:
        fast, reference, full = both(extensions, item)
        assert fast == reference
        assert full.items == []


def test_the_commands_carry_size_and_body_as_the_full_path_does() -> None:
    full = Full(SERVERS["full"])
    prepare = batch_preparer(SERVERS["full"], None, full)
    envelope = prepare(("a@example.org", ["b@example.org", "c@example.org"], b".x\r\n\xff\n"))
    assert envelope.commands == [
        b"MAIL FROM:<a@example.org> SIZE=7 BODY=8BITMIME\r\n",
        b"RCPT TO:<b@example.org>\r\n",
        b"RCPT TO:<c@example.org>\r\n",
        b"DATA\r\n",
    ]
    assert envelope.content == b"..x\r\n\xff\r\n"
    clean = prepare(("a@example.org", "b@example.org", b"x\r\n"))
    assert clean.commands[0] == b"MAIL FROM:<a@example.org> SIZE=3\r\n"
    assert full.items == []


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org\r\nRCPT TO:<evil@example.org>",
        "a@example.org\nDATA",
        "a@example.org\rX",
        "a\x00@example.org",
    ],
)
@pytest.mark.parametrize("where", ["sender", "recipient", "second recipient"])
def test_injection_is_refused_with_the_same_error(address: str, where: str) -> None:
    sender = address if where == "sender" else "a@example.org"
    recipients = {
        "sender": ["b@example.org"],
        "recipient": [address],
        "second recipient": ["b@example.org", address],
    }[where]
    full = Full(SERVERS["full"])
    prepare = batch_preparer(SERVERS["full"], None, full)
    with pytest.raises(ValueError, match="control character"):
        prepare((sender, recipients, b"x\r\n"))
    assert len(full.items) == 1  # refused by the full path, as before


def test_non_ascii_addresses_take_the_full_path() -> None:
    for server, item in [
        ("utf8", ("\u00fc@example.org", ["b@example.org"], b"x")),
        ("utf8", ("a@example.org", ["Jos\u00e9 <j@example.org>"], b"x")),
        ("full", ("Jos\u00e9 <j@example.org>", ["b@example.org"], b"x")),
        ("bare", ("Jos\u00e9 <j@example.org>", ["b@example.org"], b"x")),
        ("bare", ("a@example.org", ["u@b\u00fccher.example"], b"x")),
    ]:
        fast, reference, full = both(SERVERS[server], item)
        assert fast == reference
        assert full.items == [item]
    with pytest.raises(SMTPNotSupported):
        batch_preparer(SERVERS["bare"], None, Full(SERVERS["bare"]))(
            ("\u00fc@example.org", ["b@example.org"], b"x")
        )


def test_other_items_go_to_the_full_path_unread() -> None:
    read: list[str] = []

    def recipients() -> Iterator[str]:
        read.append("read")
        yield "b@example.org"

    generator = recipients()
    lazy = lambda: ("a@example.org", ["b@example.org"], b"x")  # noqa: E731
    message = EmailMessage()
    extensions = SERVERS["full"]
    full = Full(extensions)
    prepare = batch_preparer(extensions, None, full)
    envelope = prepare(("a@example.org", generator, b"x"))
    assert envelope.recipients == ["b@example.org"]
    assert read == ["read"]  # the full path read the generator, the fast path did not
    assert prepare(lazy).commands[1] == b"RCPT TO:<b@example.org>\r\n"
    with pytest.raises(TypeError):
        prepare(message)
    with pytest.raises(TypeError):
        prepare(["a@example.org", ["b@example.org"], b"x"])
    with pytest.raises(ValueError, match="at least one recipient"):
        prepare(("a@example.org", [], b"x"))
    assert full.items[1:] == [
        lazy,
        message,
        ["a@example.org", ["b@example.org"], b"x"],
        ("a@example.org", [], b"x"),
    ]


def test_each_envelope_gets_its_own_lists() -> None:
    recipients = ["b@example.org"]
    prepare = batch_preparer(SERVERS["full"], None, Full(SERVERS["full"]))
    first = prepare(("a@example.org", recipients, b"x"))
    second = prepare(("a@example.org", recipients, b"x"))
    assert first.recipients is not recipients
    assert first.recipients is not second.recipients
    assert first.commands is not second.commands
    first.commands[1] += b"changed"
    recipients.append("c@example.org")
    assert second.commands[1] == b"RCPT TO:<b@example.org>\r\n"
    assert second.recipients == ["b@example.org"]


def test_many_senders_in_one_batch() -> None:
    prepare = batch_preparer(SERVERS["size"], None, Full(SERVERS["size"]))
    for round_ in range(2):
        for number in range(100):
            envelope = prepare((f"s{number}@example.org", "b@example.org", b"x"))
            assert envelope.commands[0] == f"MAIL FROM:<s{number}@example.org> SIZE=3\r\n".encode()
            assert envelope.sender == f"s{number}@example.org", round_


def test_the_signer_sees_the_final_bytes_once() -> None:
    signed: list[bytes] = []

    def sign(data: bytes) -> bytes:
        signed.append(data)
        return b"Sig: 1\r\n" + data

    extensions = SERVERS["full"]
    full = Full(extensions, sign)
    prepare = batch_preparer(extensions, sign, full)
    envelope = prepare(("a@example.org", "b@example.org", "x\n.y"))
    assert signed == [b"x\n.y"]
    assert envelope.content == b"Sig: 1\r\nx\r\n..y\r\n"
    assert envelope.commands[0] == b"MAIL FROM:<a@example.org> SIZE=15\r\n"
    signed.clear()
    reference = envelope_for_data(
        "a@example.org", "b@example.org", "x\n.y", None, None, extensions, sign
    )
    assert reference.commands == envelope.commands
    signed.clear()
    with pytest.raises(ValueError):
        prepare(("a@example.org", "b\r@example.org", "x"))
    assert signed == [b"x"]  # once, by the full path
