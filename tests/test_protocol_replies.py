"""Tables of bytes for the sans-IO reply parser (smtp_backends.protocol.replies)."""

from __future__ import annotations

import pytest

from smtp_backends.errors import SMTPProtocolError, SMTPResponseException
from smtp_backends.protocol.replies import (
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_REPLY_SIZE,
    ReplyParser,
    SMTPResponse,
)

R = SMTPResponse

# (id, bytes received, replies they complete)
VALID: list[tuple[str, bytes, list[SMTPResponse]]] = [
    ("empty-feed", b"", []),
    ("single", b"220 mail.example.org ESMTP ready\r\n", [R(220, "mail.example.org ESMTP ready")]),
    ("lf-only", b"250 ok\n", [R(250, "ok")]),
    ("bare-code", b"250\r\n", [R(250, "")]),
    ("bare-code-lf", b"250\n", [R(250, "")]),
    ("code-and-space", b"250 \r\n", [R(250, "")]),
    ("text-spaces-kept", b"550 5.1.1  two  spaces \r\n", [R(550, "5.1.1  two  spaces ")]),
    ("hyphen-in-text", b"250 a-b - c\r\n", [R(250, "a-b - c")]),
    ("lowest-code", b"200 x\r\n", [R(200, "x")]),
    (
        "code-3xx",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        [R(354, "End data with <CR><LF>.<CR><LF>")],
    ),
    ("code-4xx", b"421 4.3.2 Service shutting down\r\n", [R(421, "4.3.2 Service shutting down")]),
    ("highest-code", b"599 x\r\n", [R(599, "x")]),
    (
        "multiline",
        b"250-mail.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
        [R(250, "mail.example.org\nPIPELINING\nSIZE 1000")],
    ),
    ("multiline-mixed-endings", b"250-a\n250-b\r\n250 c\n", [R(250, "a\nb\nc")]),
    ("multiline-ends-bare", b"250-a\r\n250\r\n", [R(250, "a\n")]),
    ("multiline-empty-first", b"250-\r\n250 x\r\n", [R(250, "\nx")]),
    ("two-replies", b"250 ok\r\n354 go\r\n", [R(250, "ok"), R(354, "go")]),
    (
        "pipelined-group",
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no\r\n354 go ahead\r\n",
        [R(250, "2.1.0 ok"), R(250, "2.1.5 ok"), R(550, "5.1.1 no"), R(354, "go ahead")],
    ),
    (
        "multiline-then-single",
        b"250-one\r\n250 two\r\n221 bye\n",
        [R(250, "one\ntwo"), R(221, "bye")],
    ),
    ("utf8-text", "250 héllo ✓ 日本\r\n".encode(), [R(250, "héllo ✓ 日本")]),
    ("invalid-utf8", b"250 a\xffb\r\n", [R(250, "a\ufffdb")]),
    ("latin1-text", b"250 caf\xe9\r\n", [R(250, "caf\ufffd")]),
    ("truncated-utf8", b"250 \xe6\x97\r\n", [R(250, "\ufffd")]),
]


def _ids(rows: list[tuple[str, bytes, list[SMTPResponse]]]) -> list[str]:
    return [row[0] for row in rows]


@pytest.mark.parametrize(("data", "expected"), [row[1:] for row in VALID], ids=_ids(VALID))
def test_feed_whole(data: bytes, expected: list[SMTPResponse]) -> None:
    parser = ReplyParser()
    assert parser.feed(data) == expected
    assert parser.has_partial_data is False


def _splits() -> list[object]:
    params = []
    for name, data, expected in VALID:
        for k in range(len(data) + 1):
            params.append(pytest.param(data, k, expected, id=f"{name}@{k}"))
    return params


@pytest.mark.parametrize(("data", "split", "expected"), _splits())
def test_feed_split_at_every_byte(data: bytes, split: int, expected: list[SMTPResponse]) -> None:
    parser = ReplyParser()
    replies = parser.feed(data[:split])
    replies += parser.feed(data[split:])
    assert replies == expected
    assert parser.has_partial_data is False


@pytest.mark.parametrize(("data", "expected"), [row[1:] for row in VALID], ids=_ids(VALID))
def test_feed_byte_by_byte(data: bytes, expected: list[SMTPResponse]) -> None:
    parser = ReplyParser()
    replies: list[SMTPResponse] = []
    for i in range(len(data)):
        replies += parser.feed(data[i : i + 1])
    assert replies == expected
    assert parser.has_partial_data is False


def test_split_reply_is_returned_by_the_feed_that_completes_it() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-mail.example.org\r\n250-PIPE") == []
    assert parser.feed(b"LINING\r\n250 SIZE 10\r") == []
    assert parser.feed(b"\n250 next") == [R(250, "mail.example.org\nPIPELINING\nSIZE 10")]
    assert parser.feed(b"\r\n") == [R(250, "next")]


@pytest.mark.parametrize(
    ("data", "partial"),
    [
        (b"", False),
        (b"2", True),
        (b"250 ok", True),
        (b"250 ok\r", True),
        (b"250 ok\r\n", False),
        (b"250 ok\n", False),
        (b"250-first\r\n", True),  # nothing buffered, but a multiline reply is open
        (b"250-first\r\n250 last\r\n", False),
        (b"250 ok\r\n2", True),
        (b"250 ok\r\n250-a\n", True),
    ],
)
def test_has_partial_data(data: bytes, partial: bool) -> None:
    parser = ReplyParser()
    parser.feed(data)
    assert parser.has_partial_data is partial


@pytest.mark.parametrize(
    "line",
    [
        # non-digit codes
        b"abc ok",
        b"2x0 ok",
        b"25x ok",
        b"x50 ok",
        "٢٥٠ arabic digits".encode(),
        # codes outside 2xx-5xx
        b"150 ok",
        b"650 ok",
        b"050 ok",
        b"950 ok",
        # bad separator
        b"250_ok",
        b"2500",
        b"250:ok",
        b"250\tok",
        b"250=ok",
        # short lines
        b"",
        b"2",
        b"25",
        # leading junk
        b" 250 ok",
        b"-250 ok",
        b"\x00250 ok",
    ],
)
@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_malformed_line(line: bytes, ending: bytes) -> None:
    parser = ReplyParser()
    with pytest.raises(SMTPProtocolError) as info:
        parser.feed(line + ending)
    assert info.value.message == f"Malformed reply line: {line!r}"
    assert info.value.code == -1
    assert info.value.args == (info.value.message,)


@pytest.mark.parametrize(
    ("data", "shown"),
    [(b"\r\n", b""), (b"\r\r\n", b"\r"), (b"\n\n", b"")],
)
def test_empty_lines_are_malformed(data: bytes, shown: bytes) -> None:
    with pytest.raises(SMTPProtocolError) as info:
        ReplyParser().feed(data)
    assert info.value.message == f"Malformed reply line: {shown!r}"


def test_malformed_line_shown_truncated_to_80_bytes() -> None:
    line = b"x" * 200
    with pytest.raises(SMTPProtocolError) as info:
        ReplyParser().feed(line + b"\r\n")
    assert info.value.message == f"Malformed reply line: {b'x' * 80!r}"


def test_malformed_line_after_good_reply_in_same_chunk() -> None:
    with pytest.raises(SMTPProtocolError, match="Malformed reply line"):
        ReplyParser().feed(b"250 ok\r\nnot a reply\r\n")


def test_malformed_continuation_line() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n") == []
    with pytest.raises(SMTPProtocolError, match=r"Malformed reply line: b'250\+x'"):
        parser.feed(b"250+x\r\n")


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"250-a\r\n251 b\r\n", b"251 b"),
        (b"250-a\r\n550-b\r\n250 c\r\n", b"550-b"),
        (b"250-a\n250-b\n354 c\n", b"354 c"),
        (b"220-hi\r\n250 there\r\n", b"250 there"),
    ],
)
def test_multiline_code_mismatch(data: bytes, shown: bytes) -> None:
    with pytest.raises(SMTPProtocolError) as info:
        ReplyParser().feed(data)
    assert info.value.message == f"Multiline reply changed its code: {shown!r}"
    assert info.value.code == -1


def test_multiline_code_mismatch_across_feeds() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-a\r\n") == []
    with pytest.raises(SMTPProtocolError, match="changed its code"):
        parser.feed(b"550 b\r\n")


def test_new_reply_may_use_another_code_after_multiline_ends() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-a\r\n250 b\r\n550-c\r\n550 d\r\n") == [R(250, "a\nb"), R(550, "c\nd")]


# Line caps: the cap counts the whole line with its terminator.
@pytest.mark.parametrize(
    ("max_line", "data", "expected"),
    [
        (10, b"250 1234\r\n", [R(250, "1234")]),  # exactly 10
        (10, b"250 12345\n", [R(250, "12345")]),  # exactly 10 with LF only
        (10, b"250 1234\r\n250 5678\r\n", [R(250, "1234"), R(250, "5678")]),
        (10, b"250 12345", []),  # 9 buffered: may still end within the cap
        (10, b"250 1234\r", []),  # 9 buffered
    ],
)
def test_line_within_cap(max_line: int, data: bytes, expected: list[SMTPResponse]) -> None:
    assert ReplyParser(max_line_length=max_line).feed(data) == expected


@pytest.mark.parametrize(
    ("max_line", "data"),
    [
        (10, b"250 12345\r\n"),  # complete, 11
        (10, b"250 123456\n"),  # complete, 11, LF only
        (10, b"250 1234\r\n250 12345\r\n"),  # second line too long
        (10, b"250 123456"),  # incomplete, 10 buffered: cannot end within the cap
        (10, b"250 1234\r\n250 123456"),  # incomplete after a good line
        (10, b"x" * 10),  # incomplete garbage
        (10, b"x" * 1000),
    ],
)
def test_line_over_cap(max_line: int, data: bytes) -> None:
    with pytest.raises(SMTPProtocolError) as info:
        ReplyParser(max_line_length=max_line).feed(data)
    assert info.value.message == "Reply line too long"
    assert info.value.code == -1


def test_incomplete_line_over_cap_across_feeds() -> None:
    parser = ReplyParser(max_line_length=10)
    assert parser.feed(b"250 1") == []
    assert parser.feed(b"2345") == []  # 9 buffered
    with pytest.raises(SMTPProtocolError, match="Reply line too long"):
        parser.feed(b"6")


def test_buffered_line_completed_within_cap() -> None:
    parser = ReplyParser(max_line_length=10)
    assert parser.feed(b"250 1234\r") == []
    assert parser.feed(b"\n") == [R(250, "1234")]


def test_default_caps() -> None:
    assert DEFAULT_MAX_LINE_LENGTH == 8192
    assert DEFAULT_MAX_REPLY_SIZE == 65536
    parser = ReplyParser()
    assert parser.max_line_length == 8192
    assert parser.max_reply_size == 65536


def test_default_line_cap_boundary() -> None:
    text = b"x" * (8192 - 6)
    line = b"250 " + text + b"\r\n"
    assert len(line) == 8192
    assert ReplyParser().feed(line) == [R(250, text.decode())]
    with pytest.raises(SMTPProtocolError, match="Reply line too long"):
        ReplyParser().feed(b"250 x" + text + b"\r\n")


def test_default_line_cap_incomplete() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250 " + b"x" * (8191 - 4)) == []
    assert parser.has_partial_data is True
    with pytest.raises(SMTPProtocolError, match="Reply line too long"):
        parser.feed(b"x")


def test_endless_line_in_small_chunks_is_refused_at_the_cap() -> None:
    parser = ReplyParser()
    fed = 0
    with pytest.raises(SMTPProtocolError, match="Reply line too long"):
        while fed < 10 * DEFAULT_MAX_LINE_LENGTH:
            parser.feed(b"x" * 100)
            fed += 100
    assert fed == 8100  # the feed that brought the buffer to 8200 >= 8192 raised


# Reply caps: each line counts as sent with CRLF.
@pytest.mark.parametrize(
    ("max_reply", "data", "expected"),
    [
        (8, b"250 ok\r\n", [R(250, "ok")]),
        (20, b"250-aaaa\r\n250-bbbb\r\n", []),  # exactly 20 so far, reply still open
        (17, b"250-aaaa\r\n250 b\r\n", [R(250, "aaaa\nb")]),  # exactly 17
        # the count restarts with every reply
        (16, b"250 0123456789\r\n" * 3, [R(250, "0123456789")] * 3),
    ],
)
def test_reply_within_cap(max_reply: int, data: bytes, expected: list[SMTPResponse]) -> None:
    parser = ReplyParser(max_reply_size=max_reply)
    assert parser.feed(data) == expected


@pytest.mark.parametrize(
    ("max_reply", "data"),
    [
        (7, b"250 ok\r\n"),
        (20, b"250-aaaa\r\n250-bbbb\r\n250 c\r\n"),
        (16, b"250-aaaa\r\n250 b\r\n"),
    ],
)
def test_reply_over_cap(max_reply: int, data: bytes) -> None:
    with pytest.raises(SMTPProtocolError) as info:
        ReplyParser(max_reply_size=max_reply).feed(data)
    assert info.value.message == "Reply too long"
    assert info.value.code == -1


def test_default_reply_cap() -> None:
    line = b"250-" + b"x" * 1000 + b"\r\n"  # 1004 counted per line
    ok = line * 65 + b"250 end\r\n"  # 65 * 1004 + 7 = 65267
    replies = ReplyParser().feed(ok)
    assert len(replies) == 1
    assert replies[0].code == 250
    assert replies[0].message == "\n".join(["x" * 1000] * 65 + ["end"])
    with pytest.raises(SMTPProtocolError, match="Reply too long"):
        ReplyParser().feed(line * 66)  # 66264 > 65536 before the reply ends


def test_reply_flood_across_feeds_is_refused() -> None:
    parser = ReplyParser(max_reply_size=100)
    for _ in range(9):
        assert parser.feed(b"250-aaaaa\r\n") == []  # 9 x 11 = 99
    with pytest.raises(SMTPProtocolError, match="Reply too long"):
        parser.feed(b"250-a\r\n")


def test_protocol_error_is_a_response_exception() -> None:
    with pytest.raises(SMTPResponseException):
        ReplyParser().feed(b"hello\r\n")


# SMTPResponse ------------------------------------------------------------------------------


def test_response_is_a_named_tuple() -> None:
    reply = R(250, "ok")
    assert reply == (250, "ok")
    assert reply.code == 250
    assert reply.message == "ok"
    assert str(reply) == "250 ok"
    assert str(R(250, "a\nb")) == "250 a\nb"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("2.1.5 Recipient ok", "2.1.5"),
        ("5.7.1 Relaying denied", "5.7.1"),
        ("4.4.2 Timeout", "4.4.2"),
        ("2.0.0", "2.0.0"),
        ("5.1.10 Null MX", "5.1.10"),
        ("5.123.123 three digits each", "5.123.123"),
        ("2.0.0 first line\n2.0.0 second line", "2.0.0"),
        ("ok", None),
        ("", None),
        ("3.1.1 not a class", None),
        ("1.1.1 not a class", None),
        ("6.1.1 not a class", None),
        ("2.1 two parts", None),
        ("2.1.1.1 four parts", None),
        ("2.a.1 letter", None),
        ("2..1 empty part", None),
        (".2.1 leading dot", None),
        ("x2.1.1 prefixed", None),
        (" 2.1.1 leading space", None),
        ("2.1.1, comma", None),
    ],
)
def test_enhanced_status(message: str, expected: str | None) -> None:
    assert R(250, message).enhanced_status == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # RFC 3463 section 2: class = "2" / "4" / "5"; subject and detail 1 to 3 digits.
        pytest.param("24.1.1 two-digit class", None, id="class-24"),
        pytest.param("45.1.1 two-digit class", None, id="class-45"),
        pytest.param("245.1.1 three-digit class", None, id="class-245"),
        pytest.param("2.1.1234 four-digit detail", None, id="detail-4-digits"),
        pytest.param("2.1234.1 four-digit subject", None, id="subject-4-digits"),
        pytest.param("2.\u0661.1 arabic-indic digit", None, id="non-ascii-digit"),
        pytest.param("2.\u00b2.1 superscript two", None, id="superscript-digit"),
        # a multiline reply whose first line is only the status code
        pytest.param("2.0.0\n2.0.0 Ok", "2.0.0", id="code-only-first-line"),
    ],
)
def test_enhanced_status_follows_rfc3463_syntax(message: str, expected: str | None) -> None:
    assert R(250, message).enhanced_status == expected


# Bursts: the fast path for any size --------------------------------------------------------


def _burst(count: int) -> bytes:
    return b"".join(b"250 2.1.5 recipient %d ok\r\n" % n for n in range(count))


def test_a_burst_of_a_thousand_replies_is_parsed_without_the_line_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    burst = _burst(1000)
    assert len(burst) > DEFAULT_MAX_LINE_LENGTH
    parser = ReplyParser()

    def no_line_loop(self: ReplyParser, line: bytes) -> None:
        raise AssertionError("left the fast path")

    monkeypatch.setattr(ReplyParser, "_line", no_line_loop)
    # Split anywhere: whole replies are taken at once, the partial one kept for later.
    replies = parser.feed(burst[:20_001]) + parser.feed(burst[20_001:])
    assert len(replies) == 1000
    assert replies[999] == SMTPResponse(250, "2.1.5 recipient 999 ok")
    assert not parser.has_partial_data


@pytest.mark.parametrize("cut", [1, 7, 26, 4096, 8191, 8192, 30_000])
def test_a_burst_split_anywhere_gives_the_same_replies(cut: int) -> None:
    burst = _burst(1200) + b"250-multi\r\n250 line\r\n" + _burst(3)
    parser = ReplyParser()
    replies = []
    for start in range(0, len(burst), cut):
        replies += parser.feed(burst[start : start + cut])
    assert len(replies) == 1204
    assert replies[1200] == SMTPResponse(250, "multi\nline")
    assert replies[-1] == SMTPResponse(250, "2.1.5 recipient 2 ok")


def test_the_caps_hold_inside_a_large_burst() -> None:
    good = _burst(500)
    parser = ReplyParser()
    replies, error = parser.parse(good + b"250 " + b"x" * DEFAULT_MAX_LINE_LENGTH + b"\r\n")
    assert len(replies) == 500  # the good ones before it are kept
    assert error is not None and "too long" in error.message
    # A partial line over the cap after complete replies is refused too.
    parser = ReplyParser(max_line_length=100)
    replies, error = parser.parse(_burst(10) + b"250 " + b"y" * 200)
    assert len(replies) == 10
    assert error is not None and "too long" in error.message
    # A smaller cap bounds each line of the fast path.
    parser = ReplyParser(max_line_length=40)
    replies, error = parser.parse(b"250 ok\r\n250 " + b"z" * 40 + b"\r\n")
    assert replies == [SMTPResponse(250, "ok")]
    assert error is not None


def test_repeated_one_line_replies_are_shared_and_the_rest_built_each_time() -> None:
    # A server's replies to MAIL, RCPT and DATA repeat for every message; the one
    # carrying a queue id does not.
    group = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    parser = ReplyParser()
    seen = [parser.feed(b"250 2.0.0 Ok: queued as %d\r\n" % n + group) for n in range(5)]
    for replies in seen:
        assert replies[1:] == [
            R(250, "2.1.0 Ok"),
            R(250, "2.1.5 Ok"),
            R(354, "End data with <CR><LF>.<CR><LF>"),
        ]
        assert all(type(reply) is SMTPResponse for reply in replies)
    assert [replies[0] for replies in seen] == [
        R(250, f"2.0.0 Ok: queued as {n}") for n in range(5)
    ]
    # Kept from the second sighting on: the same objects from then on.
    assert seen[2][1] is seen[3][1] is seen[4][1]
    assert seen[0][1] is not seen[1][1]
    # A reply split across reads, or a multiline one, is still built in full.
    assert parser.feed(b"250 2.1") + parser.feed(b".0 Ok\r\n") == [R(250, "2.1.0 Ok")]
    assert parser.feed(b"250-a\r\n250 2.1.0 Ok\r\n") == [R(250, "a\n2.1.0 Ok")]


def test_a_server_cannot_make_the_parser_keep_many_replies() -> None:
    parser = ReplyParser()
    lines = [b"250 %d %s\r\n" % (n, b"x" * (n % 200)) for n in range(500)]
    for _ in range(3):
        assert parser.feed(b"".join(lines)) == [R(250, line[4:-2].decode()) for line in lines]
    known = parser._known
    assert 0 < len(known) <= 32
    assert all(len(line) <= 128 for line in known)
    assert len(known._seen) <= 32


def test_a_run_of_lines_not_all_plain_one_line_replies_is_parsed_line_by_line() -> None:
    # Each line of a run is checked before its reply is built or looked up; a run with
    # any other line goes to the general path, whole, with the same results as before.
    assert ReplyParser().parse(b"250 a\r\n250-b\r\n250 c\r\n") == (
        [R(250, "a"), R(250, "b\nc")],
        None,
    )
    assert ReplyParser().parse(b"250 ok\r\n250 a\rb\r\n") == ([R(250, "ok"), R(250, "a\rb")], None)
    assert ReplyParser().parse(b"250 \xff\r\n354 go\r\n") == (
        [R(250, "\ufffd"), R(354, "go")],
        None,
    )
    replies, error = ReplyParser().parse(b"250 ok\r\n250 a\nb\r\n")
    assert replies == [R(250, "ok"), R(250, "a")]
    assert error is not None and "Malformed" in error.message
    replies, error = ReplyParser(max_line_length=16).parse(b"250 ok\r\n250 " + b"x" * 20 + b"\r\n")
    assert replies == [R(250, "ok")]
    assert error is not None and "too long" in error.message
    replies, error = ReplyParser().parse(b"250 ok\r\n\r\n")
    assert replies == [R(250, "ok")]
    assert error is not None and "Malformed" in error.message
    # A line that failed its check is never kept, however often it comes.
    parser = ReplyParser()
    for _ in range(3):
        parser.parse(b"250-a\r\n250 b\r\n")
    assert not parser._known
