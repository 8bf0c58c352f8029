"""The capture server users can import (smtp_backends.testing), spoken to by real clients."""

from __future__ import annotations

import asyncio
import smtplib
import socket

import pytest

from smtp_backends import SMTP, SMTPRecipientsRefused
from smtp_backends.testing import CapturedMessage, CaptureServer


async def talk(port: int, lines: list[bytes]) -> list[bytes]:
    """Send raw lines one by one; return the reply lines (first after the greeting)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await reader.readline()]
    for line in lines:
        writer.write(line)
        await writer.drain()
        reply = await reader.readline()
        while reply[3:4] == b"-":
            reply = await reader.readline()
        replies.append(reply)
    writer.close()
    await writer.wait_closed()
    return replies


async def test_captures_messages_from_our_client_with_pipelining() -> None:
    async with CaptureServer() as server:
        async with SMTP(hostname=server.host, port=server.port) as client:
            assert client.supports_extension("pipelining")
            assert client.supports_extension("smtputf8")
            outcomes = await client.send_messages(
                [
                    ("a@example.org", ["b@example.org"], f"Subject: {n}\n\n.dot {n}\n")
                    for n in range(3)
                ]
            )
        assert [o[1] for o in outcomes] == [  # type: ignore[index]
            "2.0.0 OK queued as 1",
            "2.0.0 OK queued as 2",
            "2.0.0 OK queued as 3",
        ]
    assert server.connections == 1
    assert [m.subject for m in server.messages] == ["0", "1", "2"]
    first = server.messages[0]
    assert isinstance(first, CapturedMessage)
    assert first.mail_from == "a@example.org"
    assert first.rcpt_tos == ["b@example.org"]
    assert first.data == b"Subject: 0\r\n\r\n.dot 0\r\n"  # dot-stuffing undone
    assert first.mail_options == [f"SIZE={len(first.data)}"]  # RFC 1870: quoting dots left out
    assert len(first.data) == 22
    assert first.parsed().get_content() == ".dot 0\r\n"


async def test_without_pipelining_and_refused_recipients() -> None:
    server = CaptureServer(pipelining=False, refuse_recipients={"nobody@example.org"})
    async with server:
        assert "CaptureServer 127.0.0.1" in repr(server)
        async with SMTP(hostname=server.host, port=server.port) as client:
            assert not client.supports_extension("pipelining")
            errors, _ = await client.sendmail(
                "", ["nobody@example.org", "c@example.org"], b"Subject: x\r\n\r\nhi\r\n"
            )
            assert list(errors) == ["nobody@example.org"]
            assert errors["nobody@example.org"].code == 550
            with pytest.raises(SMTPRecipientsRefused):
                await client.sendmail("a@example.org", ["nobody@example.org"], "x")
            await client.noop()
            await client.rset()
    assert [(m.mail_from, m.rcpt_tos) for m in server.messages] == [("", ["c@example.org"])]


async def test_protocol_errors_and_sequence() -> None:
    async with CaptureServer() as server:
        replies = await talk(
            server.port,
            [
                b"HELO me\r\n",
                b"RCPT TO:<a@b>\r\n",
                b"DATA\r\n",
                b"MAIL FROM:broken\r\n",
                b"MAIL FROM:<a@b>\r\n",
                b"RCPT TO:<>\r\n",
                b"DATA\r\n",
                b"VRFY x\r\n",
                b"x" * 5000 + b"\r\n",
                b"NOOP\n",
                b"QUIT\r\n",
            ],
        )
    codes = [reply[:3] for reply in replies]
    assert codes == [
        b"220",
        b"250",  # HELO
        b"503",  # RCPT before MAIL
        b"503",  # DATA before MAIL
        b"501",  # MAIL without a path
        b"250",
        b"501",  # empty recipient
        b"554",  # DATA without recipients
        b"502",  # not implemented
        b"500",  # line too long
        b"500",  # not CRLF terminated
        b"221",
    ]
    assert server.messages == []


async def test_empty_message_and_disconnect_during_data() -> None:
    async with CaptureServer() as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        await reader.readline()
        writer.write(b"EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n")
        writer.write(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial line\r\n")
        await writer.drain()
        for _ in range(500):  # the first message is stored once its dot is read
            if server.messages:
                break
            await asyncio.sleep(0.01)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
    assert [m.data for m in server.messages] == [b""]


def test_running_in_a_thread_for_sync_clients() -> None:
    with CaptureServer().running() as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            client.sendmail("a@example.org", ["b@example.org"], "Subject: sync\r\n\r\nhello")
        # A session left open is ended when the server stops.
        idle = socket.create_connection((server.host, server.port), timeout=5)
        assert idle.recv(100).startswith(b"220")
    assert idle.recv(100) == b""
    idle.close()
    assert [m.subject for m in server.messages] == ["sync"]
    assert server.connections == 2


def test_port_before_start_is_the_requested_one() -> None:
    assert CaptureServer(port=2525).port == 2525
