"""Tables and properties for message content encoding (smtp_backends.protocol.data)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_backends.protocol.data import (
    END_OF_DATA,
    declared_size,
    encode_content,
    normalize_line_endings,
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # empty and clean
        pytest.param(b"", b"", id="empty"),
        pytest.param(b"a\r\n", b"a\r\n", id="clean-one-line"),
        pytest.param(b"a\r\nb\r\n", b"a\r\nb\r\n", id="clean-two-lines"),
        pytest.param(b"\r\n", b"\r\n", id="clean-empty-line"),
        # no trailing newline
        pytest.param(b"a", b"a\r\n", id="no-newline"),
        pytest.param(b"a\r\nb", b"a\r\nb\r\n", id="no-final-newline"),
        # LF only
        pytest.param(b"a\n", b"a\r\n", id="lf"),
        pytest.param(b"a\nb\n", b"a\r\nb\r\n", id="lf-two-lines"),
        pytest.param(b"\n\n", b"\r\n\r\n", id="lf-empty-lines"),
        # CR only
        pytest.param(b"a\r", b"a\r\n", id="cr"),
        pytest.param(b"a\rb\r", b"a\r\nb\r\n", id="cr-two-lines"),
        pytest.param(b"\r\r", b"\r\n\r\n", id="cr-empty-lines"),
        # mixed
        pytest.param(b"a\r\nb\nc\rd", b"a\r\nb\r\nc\r\nd\r\n", id="mixed"),
        pytest.param(b"\n\r", b"\r\n\r\n", id="lf-then-cr-is-two-ends"),
        pytest.param(b"\r\r\n", b"\r\n\r\n", id="cr-crlf"),
        pytest.param(b"\r\n\n", b"\r\n\r\n", id="crlf-lf"),
        pytest.param(b"\r\n\r", b"\r\n\r\n", id="crlf-cr"),
        pytest.param(b"a\r\n\rb", b"a\r\n\r\nb\r\n", id="crlf-cr-text"),
        # leading dots
        pytest.param(b".", b"..\r\n", id="lone-dot-no-newline"),
        pytest.param(b".\r\n", b"..\r\n", id="lone-dot-line"),
        pytest.param(b".\n", b"..\r\n", id="lone-dot-lf"),
        pytest.param(b".a\r\n", b"..a\r\n", id="leading-dot"),
        pytest.param(b"..a\n", b"...a\r\n", id="two-leading-dots"),
        pytest.param(b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n", id="dot-line-inside"),
        pytest.param(b"a\n.\nb", b"a\r\n..\r\nb\r\n", id="dot-line-lf"),
        pytest.param(b"a\r.\rb", b"a\r\n..\r\nb\r\n", id="dot-line-cr"),
        pytest.param(b"a\r\n.", b"a\r\n..\r\n", id="dot-last-no-newline"),
        pytest.param(b"a\r\n..\r\n", b"a\r\n...\r\n", id="dot-dot-line"),
        pytest.param(b"\r\n.\r\n", b"\r\n..\r\n", id="premature-terminator"),
        pytest.param(b".\r\n.\r\n.\r\n", b"..\r\n..\r\n..\r\n", id="dot-lines"),
        pytest.param(b"a.b\r\n a. .\r\n", b"a.b\r\n a. .\r\n", id="dots-not-at-line-start"),
        pytest.param(b"a\n.b\r.c\r\n.d", b"a\r\n..b\r\n..c\r\n..d\r\n", id="dots-mixed-ends"),
        # binary 8-bit bytes untouched
        pytest.param(b"\xff\xfe\x80 \xc3\xa9\r\n", b"\xff\xfe\x80 \xc3\xa9\r\n", id="8bit"),
        pytest.param(b"\x00\x01\x1b\x7f\r\n", b"\x00\x01\x1b\x7f\r\n", id="controls"),
        pytest.param(b"\xff\n\x00\r.\x80", b"\xff\r\n\x00\r\n..\x80\r\n", id="binary-mixed"),
    ],
)
def test_encode_content(data: bytes, expected: bytes) -> None:
    assert encode_content(data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", b""),
        (b"a", b"a"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb", b"a\r\nb"),
        (b"a\rb", b"a\r\nb"),
        (b"a\r\nb\nc\rd", b"a\r\nb\r\nc\r\nd"),
        (b"\n\r", b"\r\n\r\n"),
        (b"\r\r\n\n", b"\r\n\r\n\r\n"),
        (b".\n", b".\r\n"),  # no dot-stuffing here
    ],
)
def test_normalize_line_endings(data: bytes, expected: bytes) -> None:
    assert normalize_line_endings(data) == expected


def test_clean_content_is_not_copied() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    assert normalize_line_endings(data) is data


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"", 0),
        (b"a", 3),
        (b".", 3),  # transmitted as "..\r\n": the quoting dot does not count
        (b"From: a@example.com\nTo: b@example.com\n\nH\xc3\xa9llo\n.dot", 56),
        (b"..\r\n.x\r\n", 8),
    ],
)
def test_declared_size_leaves_out_quoting_dots(data: bytes, size: int) -> None:
    assert declared_size(encode_content(data)) == size


def test_end_of_data() -> None:
    assert END_OF_DATA == b".\r\n"
    assert encode_content(b"a\n.") + END_OF_DATA == b"a\r\n..\r\n.\r\n"


# Property --------------------------------------------------------------------------------


def _reference_lines(data: bytes) -> list[bytes]:
    """Split on CRLF, CR or LF, one byte at a time: an oracle independent of the code."""
    lines: list[bytes] = []
    current = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x0D:
            lines.append(bytes(current))
            current.clear()
            if i + 1 < len(data) and data[i + 1] == 0x0A:
                i += 1
        elif byte == 0x0A:
            lines.append(bytes(current))
            current.clear()
        else:
            current.append(byte)
        i += 1
    if current:
        lines.append(bytes(current))
    return lines


_line_soup = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\x00", b"\xff", b"\r\n."]),
    max_size=40,
).map(b"".join)


@settings(max_examples=500, database=None, deadline=None)
@given(st.one_of(st.binary(max_size=200), _line_soup))
def test_encode_content_properties(data: bytes) -> None:
    out = encode_content(data)
    lines = _reference_lines(data)

    # Exactly the oracle: every line ended by CRLF, lines starting with "." get another.
    assert out == b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
    )

    # RFC 1870: SIZE counts the lines with their CRLFs, not the doubled quoting dots.
    assert declared_size(out) == sum(len(line) + 2 for line in lines)

    # No bare CR or LF.
    assert b"\r" not in out.replace(b"\r\n", b"")
    assert b"\n" not in out.replace(b"\r\n", b"")

    # Ends with CRLF when nonempty; empty only for empty input.
    if out:
        assert out.endswith(b"\r\n")
    else:
        assert data == b""

    # Every line starting with "." is stuffed: un-stuffing gives the normalised input.
    out_lines = out.split(b"\r\n")[:-1] if out else []
    assert all(line.startswith(b"..") for line in out_lines if line.startswith(b"."))
    unstuffed = [line[1:] if line.startswith(b".") else line for line in out_lines]
    assert unstuffed == lines
    normalised = normalize_line_endings(data)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert b"".join(line + b"\r\n" for line in unstuffed) == normalised

    # The terminator appears only where the client puts it.
    assert b"\r\n.\r\n" not in out
    assert not out.startswith(b".\r\n")
    wire = out + END_OF_DATA
    if out:
        assert wire.find(b"\r\n.\r\n") == len(out) - 2


@settings(max_examples=300, database=None, deadline=None)
@given(st.one_of(st.binary(max_size=200), _line_soup))
def test_encode_content_is_idempotent_on_line_endings(data: bytes) -> None:
    # A second pass only adds dots: the line structure is stable.
    once = encode_content(data)
    assert normalize_line_endings(once) == once
    assert _reference_lines(encode_content(once)) == [
        b"." + line if line.startswith(b".") else line for line in _reference_lines(once)
    ]
