"""Where the client follows aiosmtplib's own rules (issue 17), tested against real servers.

aiosmtplib's suite runs here too (tests/aiosmtplib_upstream); these are our own tests of
each behaviour changed to match it: the constructor's checks, EHLO/HELO names, VRFY/EXPN
options, timeouts of 0, connect errors naming the port, ``connect(timeout=...)`` for that
connect only, SMTPUTF8 messages declared 8-bit, and the SMTP.protocol attribute.
"""

from __future__ import annotations

import asyncio
import email.message
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPNotSupported,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from tests.servers import ScriptedServer, SMTPServer

TIMEOUT = 5.0
GREETING = b"220 scripted ESMTP\r\n"


def client_for(server: SMTPServer | ScriptedServer, **options: Any) -> SMTP:
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("local_hostname", "client.test")
    return SMTP(hostname=server.host, port=server.port, **options)


@pytest.fixture
def tcp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    yield sock
    sock.close()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --------------------------------------------------------------------------- constructor


@pytest.mark.parametrize("hostname", ["a\nb", "localhost\r\n", "mail.example.com\r"])
def test_hostname_with_a_line_break_is_refused(hostname: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        SMTP(hostname=hostname)
    client = SMTP()
    with pytest.raises(ValueError):
        client.hostname = hostname
    assert client.hostname is None


async def test_hostname_with_a_line_break_is_refused_by_connect(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    with pytest.raises(ValueError):
        await client.connect(hostname="127.0.0.1\r\nQUIT")
    await asyncio.sleep(0.05)
    assert smtpd.handler.connections == 0


def test_a_socket_takes_no_port(tcp_socket: socket.socket, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        SMTP(sock=tcp_socket, port=25)
    with pytest.raises(ValueError, match="port"):
        SMTP(socket_path=str(tmp_path / "smtp.sock"), port=25)
    # A hostname may come with them (the name a TLS certificate is checked against).
    assert SMTP(sock=tcp_socket, hostname="mail.example.com").port is None
    assert SMTP(socket_path=str(tmp_path / "smtp.sock"), hostname="mail.example.com").port is None


def test_tls_over_a_socket_needs_the_hostname(tcp_socket: socket.socket, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hostname"):
        SMTP(sock=tcp_socket, use_tls=True)
    with pytest.raises(ValueError, match="hostname"):
        SMTP(socket_path=str(tmp_path / "smtp.sock"), use_tls=True)
    client = SMTP(sock=tcp_socket, use_tls=True, hostname="mail.example.com")
    assert client.use_tls is True


async def test_connect_checks_the_socket_options_before_connecting(
    smtpd: SMTPServer, tcp_socket: socket.socket
) -> None:
    client = SMTP(port=smtpd.port, timeout=TIMEOUT)
    with pytest.raises(ValueError):
        await client.connect(sock=tcp_socket)
    assert client.sock is None  # the client's settings are unchanged
    await asyncio.sleep(0.05)
    assert smtpd.handler.connections == 0


def test_local_hostname_surrounding_whitespace_is_stripped() -> None:
    assert SMTP(local_hostname="  me.example.com\t").local_hostname == "me.example.com"
    assert SMTP(local_hostname="me.example.com\r\n").local_hostname == "me.example.com"
    client = SMTP()
    client.local_hostname = " [192.0.2.1] "
    assert client.local_hostname == "[192.0.2.1]"
    assert client.config.local_hostname == "[192.0.2.1]"


@pytest.mark.parametrize(
    "name",
    ["", "   ", "me.example.com XCLIENT ADDR=1.2.3.4", "me\texample", "me.example.com\x00"],
    ids=["empty", "blank", "space", "tab", "nul"],
)
def test_local_hostname_still_refuses_inner_whitespace_and_controls(name: str) -> None:
    with pytest.raises(ValueError):
        SMTP(local_hostname=name)


async def test_stripped_local_hostname_is_what_ehlo_sends(smtpd: SMTPServer) -> None:
    async with client_for(smtpd, local_hostname=" spaced.test \n"):
        pass
    assert smtpd.handler.ehlo_names == ["spaced.test"]


# --------------------------------------------------------------------------- timeouts


def test_timeout_zero_is_accepted_negative_is_not() -> None:
    assert SMTP(timeout=0).timeout == 0
    assert SMTP(timeout=0.0).timeout == 0
    for bad in (-1, -0.001):
        with pytest.raises(ValueError, match="Invalid timeout"):
            SMTP(timeout=bad)


async def test_timeout_zero_times_out_at_once_and_closes(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", b"250 scripted\r\n"),
            ("expect", b"NOOP"),
            ("drain", 10),
        ]
    )
    client = client_for(server)
    await client.connect()
    # asyncio's own timeout class catches ours on every Python (3.10 included).
    with pytest.raises(asyncio.TimeoutError) as caught:
        await client.noop(timeout=0)
    assert isinstance(caught.value, SMTPTimeoutError)
    assert client.is_connected is False
    assert client.protocol is None
    with pytest.raises(SMTPServerDisconnected):
        await client.noop()
    await server.wait_done()


async def test_connect_timeout_zero_times_out(smtpd: SMTPServer) -> None:
    client = client_for(smtpd, timeout=0)
    with pytest.raises(SMTPConnectTimeoutError) as caught:
        await client.connect()
    assert str(caught.value) == f"Timed out connecting to {smtpd.host} on port {smtpd.port}"
    assert client.is_connected is False
    with pytest.raises(SMTPServerDisconnected):
        await client.noop()


async def test_connect_timeout_is_for_that_connect_only(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    """connect(timeout=...) bounds the connect's steps, then the client's timeout rules."""
    server = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", b"EHLO"),
            ("send", b"250 scripted\r\n"),
            ("expect", b"NOOP"),
            ("sleep", 0.4),
            ("send", b"250 ok\r\n"),
            ("expect", b"QUIT"),
            ("send", b"221 bye\r\n"),
        ]
    )
    client = client_for(server, timeout=TIMEOUT)
    await client.connect(timeout=0.2)
    assert client.timeout == TIMEOUT
    # 0.4 s is longer than the connect's timeout, well within the client's.
    assert (await client.noop()).code == 250
    await client.quit()
    await server.wait_done()


# --------------------------------------------------------------------------- connect errors


@pytest.mark.parametrize(
    "options", [{}, {"use_tls": True}, {"start_tls": True}], ids=["plaintext", "tls", "starttls"]
)
async def test_connect_error_names_host_and_port(options: dict[str, Any]) -> None:
    closed = unused_port()
    client = SMTP(hostname="127.0.0.1", port=closed, timeout=TIMEOUT, **options)
    with pytest.raises(SMTPConnectError) as caught:
        await client.connect()
    assert f"Error connecting to 127.0.0.1 on port {closed}: " in str(caught.value)
    assert client.port == closed


def test_default_ports_are_the_ones_an_error_would_name() -> None:
    assert SMTP().config.effective_port == 25
    assert SMTP(use_tls=True).config.effective_port == 465
    assert SMTP(start_tls=True).config.effective_port == 587


# --------------------------------------------------------------------------- EHLO / HELO


@pytest.mark.parametrize("verb", ["ehlo", "helo"])
@pytest.mark.parametrize(
    "name", ["", "  ", "me.example.com XCLIENT ADDR=1.2.3.4", "me.example.com\r\nQUIT"]
)
async def test_ehlo_and_helo_refuse_bad_names_before_sending(
    smtpd: SMTPServer, verb: str, name: str
) -> None:
    async with client_for(smtpd, start_tls=False) as client:
        with pytest.raises(ValueError):
            await getattr(client, verb)(name)
        assert client.is_connected
    assert smtpd.handler.commands == ["QUIT"]  # nothing before the refusal


@pytest.mark.parametrize("verb", ["ehlo", "helo"])
async def test_ehlo_and_helo_strip_the_name(
    make_scripted_server: Callable[..., ScriptedServer], verb: str
) -> None:
    server = make_scripted_server(
        [
            ("send", GREETING),
            ("expect", verb.upper().encode()),
            ("send", b"250 scripted\r\n"),
            ("expect", b"QUIT"),
            ("send", b"221 bye\r\n"),
        ]
    )
    client = client_for(server, start_tls=False)
    await client.connect()
    response = await getattr(client, verb)(hostname=" example.com\t")
    assert response.code == 250
    await client.quit()
    await server.wait_done()
    assert server.received_lines[0] == f"{verb.upper()} example.com".encode()


# --------------------------------------------------------------------------- VRFY / EXPN


def vrfy_script(verb: bytes, reply: bytes, *, smtputf8: bool = True) -> list[Any]:
    extensions = b"250-scripted\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"
    return [
        ("send", GREETING),
        ("expect", b"EHLO"),
        ("send", extensions if smtputf8 else b"250-scripted\r\n250 8BITMIME\r\n"),
        ("expect", verb),
        ("send", reply),
        ("expect", b"QUIT"),
        ("send", b"221 bye\r\n"),
    ]


@pytest.mark.parametrize(
    ("verb", "argument"), [("vrfy", "tést@exåmple.com"), ("expn", "tést-lïst")]
)
async def test_vrfy_and_expn_send_smtputf8_arguments(
    make_scripted_server: Callable[..., ScriptedServer], verb: str, argument: str
) -> None:
    server = make_scripted_server(vrfy_script(verb.upper().encode(), b"252 try it\r\n"))
    client = client_for(server, start_tls=False)
    await client.connect()
    response = await getattr(client, verb)(argument, options=["SMTPUTF8"])
    assert response.code == 252
    await client.quit()
    await server.wait_done()
    assert server.received_lines[1] == f"{verb.upper()} {argument} SMTPUTF8".encode()


@pytest.fixture
def smtpd_no_utf8(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    return make_smtpd(smtputf8=False)


@pytest.mark.parametrize("verb", ["vrfy", "expn"])
async def test_vrfy_and_expn_smtputf8_not_offered(smtpd_no_utf8: SMTPServer, verb: str) -> None:
    async with client_for(smtpd_no_utf8, start_tls=False) as client:
        with pytest.raises(SMTPNotSupported):
            await getattr(client, verb)("tést@exåmple.com", options=["SMTPUTF8"])
        assert client.is_connected
    assert smtpd_no_utf8.handler.commands == ["EHLO", "QUIT"]


@pytest.mark.parametrize("verb", ["vrfy", "expn"])
@pytest.mark.parametrize(
    ("argument", "options"),
    [
        ("tést@example.com", None),  # non-ASCII without SMTPUTF8
        ("a@example.com\r\nRSET", None),
        ("a@example.com", ["SMTPUTF8 XCLIENT"]),
        ("a@example.com", ["X=\r\nRSET"]),
    ],
    ids=["non-ascii", "crlf", "option-space", "option-crlf"],
)
async def test_vrfy_and_expn_refuse_bad_input_before_sending(
    smtpd: SMTPServer, verb: str, argument: str, options: list[str] | None
) -> None:
    async with client_for(smtpd, start_tls=False) as client:
        with pytest.raises(ValueError):
            await getattr(client, verb)(argument, options=options)
    assert smtpd.handler.commands == ["QUIT"]  # refused before even EHLO


async def test_vrfy_of_nothing_is_the_server_to_refuse(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = make_scripted_server(vrfy_script(b"VRFY", b"501 Syntax: VRFY <address>\r\n"))
    client = client_for(server, start_tls=False)
    await client.connect()
    with pytest.raises(SMTPResponseException) as caught:
        await client.vrfy("")
    assert caught.value.code == 501
    await client.quit()
    await server.wait_done()
    assert server.received_lines[1] == b"VRFY"


async def test_vrfy_sends_ehlo_first(make_scripted_server: Callable[..., ScriptedServer]) -> None:
    """As aiosmtplib: EHLO first (whether SMTPUTF8 is offered must be known)."""
    server = make_scripted_server(vrfy_script(b"VRFY", b"252 cannot verify\r\n"))
    client = client_for(server, start_tls=False)
    await client.connect()  # start_tls=False: connect itself sends no EHLO
    assert (await client.vrfy("a@example.com")).code == 252
    await client.quit()
    await server.wait_done()
    assert [line.split()[0] for line in server.received_lines] == [b"EHLO", b"VRFY", b"QUIT"]


# --------------------------------------------------------------------------- MAIL / RCPT


async def test_mail_and_rcpt_need_an_encoding_for_non_ascii(smtpd: SMTPServer) -> None:
    async with client_for(smtpd, start_tls=False) as client:
        with pytest.raises(UnicodeEncodeError):
            await client.mail("tést@exåmple.com", options=["SMTPUTF8"])
        await client.mail("a@example.com")
        with pytest.raises(UnicodeEncodeError):
            await client.rcpt("tést@exåmple.com", options=["SMTPUTF8"])
        await client.rset()
        assert (await client.mail("tést@exåmple.com", ["SMTPUTF8"], encoding="utf-8")).code == 250
    assert smtpd.handler.commands == ["EHLO", "MAIL", "RSET", "MAIL", "QUIT"]


# --------------------------------------------------------------------------- send_message


@pytest.mark.parametrize("kind", ["compat32", "email_message"])
async def test_smtputf8_message_is_declared_8bit(smtpd: SMTPServer, kind: str) -> None:
    message = email.message.Message() if kind == "compat32" else email.message.EmailMessage()
    message["From"] = "séndër@exåmple.com"
    message["To"] = "bob@example.com"
    message["Subject"] = "plain ascii"
    message.set_payload("ascii body\n")
    async with client_for(smtpd) as client:
        await client.send_message(message)
    [received] = smtpd.messages
    assert received.mail_options[0].startswith("SIZE=")
    assert received.mail_options[1:] == ["SMTPUTF8", "BODY=8BITMIME"]


async def test_smtputf8_message_keeps_a_given_body_option(smtpd: SMTPServer) -> None:
    message = email.message.EmailMessage()
    message["From"] = "séndër@exåmple.com"
    message["To"] = "bob@example.com"
    message.set_content("ascii body\n")
    async with client_for(smtpd) as client:
        await client.send_message(message, mail_options=["BODY=7BIT"])
    [received] = smtpd.messages
    assert [o for o in received.mail_options if o.startswith("BODY")] == ["BODY=7BIT"]
    assert "SMTPUTF8" in received.mail_options


async def test_ascii_message_is_not_declared_8bit(smtpd: SMTPServer) -> None:
    message = email.message.EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.com"
    message.set_content("ascii body\n")
    async with client_for(smtpd) as client:
        await client.send_message(message)
    [received] = smtpd.messages
    assert not any(o.startswith("BODY") or o == "SMTPUTF8" for o in received.mail_options)


# --------------------------------------------------------------------------- AUTH, protocol


async def test_login_without_auth_over_plaintext_suggests_tls(smtpd: SMTPServer) -> None:
    async with client_for(smtpd, start_tls=False) as client:
        with pytest.raises(SMTPNotSupported, match="Try connecting via TLS"):
            await client.login("user", "secret")


async def test_protocol_attribute_follows_the_connection(smtpd: SMTPServer) -> None:
    client = client_for(smtpd)
    assert client.protocol is None
    await client.connect()
    assert isinstance(client.protocol, asyncio.BaseProtocol)
    assert client.transport is not None
    await client.quit()
    assert client.protocol is None
    assert client.transport is None
