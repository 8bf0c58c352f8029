"""The ClientConnection state machine as tables of steps (smtp_backends.protocol.connection).

A script is a list of steps: ``Send`` registers a command (and must be accepted), ``Refuse``
expects ``send`` to raise, ``Recv`` feeds bytes and expects exactly the listed events, and
``At`` checks the phase and the commands awaiting a reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from smtp_backends.errors import SMTPProtocolError, SMTPServerDisconnected
from smtp_backends.protocol.connection import ClientConnection, Command, Phase
from smtp_backends.protocol.replies import SMTPResponse

C = Command
P = Phase
R = SMTPResponse

WIRE = {
    C.EHLO: b"EHLO client.example.org\r\n",
    C.HELO: b"HELO client.example.org\r\n",
    C.STARTTLS: b"STARTTLS\r\n",
    C.AUTH: b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
    C.MAIL: b"MAIL FROM:<a@example.org>\r\n",
    C.RCPT: b"RCPT TO:<b@example.org>\r\n",
    C.DATA: b"DATA\r\n",
    C.CONTENT: b"Subject: x\r\n\r\nbody\r\n.\r\n",
    C.RSET: b"RSET\r\n",
    C.NOOP: b"NOOP\r\n",
    C.QUIT: b"QUIT\r\n",
    C.OTHER: b"VRFY a@example.org\r\n",
    C.GREETING: b"",
}
ALL_SENDABLE = [c for c in Command if c is not C.GREETING]


@dataclass(frozen=True)
class Send:
    command: Command


@dataclass(frozen=True)
class Refuse:
    command: Command
    error: type[Exception]
    message: str


@dataclass(frozen=True)
class Recv:
    data: bytes
    events: list[tuple[Command, SMTPResponse]] = field(default_factory=list)


@dataclass(frozen=True)
class Fail:
    """Feeding ``data`` raises SMTPProtocolError whose message fully matches the regex
    ``message``; events before it stay."""

    data: bytes
    message: str
    events: list[tuple[Command, SMTPResponse]] = field(default_factory=list)


@dataclass(frozen=True)
class At:
    phase: Phase
    pending: list[Command] = field(default_factory=list)


Step = Send | Refuse | Recv | Fail | At


def drain(conn: ClientConnection) -> list[tuple[Command, SMTPResponse]]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def play(steps: list[Step], *, pipelining: bool = False, conn: ClientConnection | None = None):
    conn = conn or ClientConnection()
    conn.pipelining = pipelining
    for step in steps:
        if isinstance(step, Send):
            data = WIRE[step.command]
            assert conn.send(step.command, data) is data
        elif isinstance(step, Refuse):
            before = (conn.phase, list(conn.pending))
            with pytest.raises(step.error) as info:
                conn.send(step.command, WIRE[step.command])
            assert type(info.value) is step.error
            assert str(info.value) == step.message
            # a refused send changes nothing
            assert (conn.phase, list(conn.pending)) == before
        elif isinstance(step, Recv):
            conn.receive_data(step.data)
            assert drain(conn) == step.events
        elif isinstance(step, Fail):
            with pytest.raises(SMTPProtocolError) as info:
                conn.receive_data(step.data)
            assert re.fullmatch(step.message, info.value.message), info.value.message
            assert info.value is conn.error
            assert conn.phase is P.ERROR
            assert drain(conn) == step.events
        else:
            assert conn.phase is step.phase
            assert list(conn.pending) == step.pending
    return conn


GREET = [Recv(b"220 mx.example.org ESMTP\r\n", [(C.GREETING, R(220, "mx.example.org ESMTP"))])]
EHLO = [
    Send(C.EHLO),
    Recv(
        b"250-mx.example.org\r\n250 PIPELINING\r\n",
        [(C.EHLO, R(250, "mx.example.org\nPIPELINING"))],
    ),
]
READY = GREET + EHLO


def _refused(command: Command, after: str) -> Refuse:
    return Refuse(
        command, SMTPProtocolError, f"Cannot send {command.value} before the reply to {after}"
    )


def _closed(command: Command) -> Refuse:
    return Refuse(command, SMTPServerDisconnected, "Connection closed")


SCRIPTS: dict[str, tuple[list[Step], bool]] = {
    "lock-step-session": (
        [
            At(P.AWAIT_GREETING, [C.GREETING]),
            *GREET,
            At(P.GREETED),
            Send(C.EHLO),
            At(P.GREETED, [C.EHLO]),
            Recv(b"250 mx.example.org\r\n", [(C.EHLO, R(250, "mx.example.org"))]),
            At(P.READY),
            Send(C.MAIL),
            Recv(b"250 2.1.0 Ok\r\n", [(C.MAIL, R(250, "2.1.0 Ok"))]),
            Send(C.RCPT),
            Recv(b"250 2.1.5 Ok\r\n", [(C.RCPT, R(250, "2.1.5 Ok"))]),
            Send(C.RCPT),
            Recv(b"550 5.1.1 No\r\n", [(C.RCPT, R(550, "5.1.1 No"))]),
            Send(C.DATA),
            Recv(b"354 Go ahead\r\n", [(C.DATA, R(354, "Go ahead"))]),
            Send(C.CONTENT),
            At(P.READY, [C.CONTENT]),
            Recv(b"250 2.0.0 Queued\r\n", [(C.CONTENT, R(250, "2.0.0 Queued"))]),
            Send(C.RSET),
            Recv(b"250 Ok\r\n", [(C.RSET, R(250, "Ok"))]),
            Send(C.NOOP),
            Recv(b"250 Ok\r\n", [(C.NOOP, R(250, "Ok"))]),
            Send(C.OTHER),
            Recv(b"252 Maybe\r\n", [(C.OTHER, R(252, "Maybe"))]),
            Send(C.QUIT),
            At(P.CLOSING, [C.QUIT]),
            Recv(b"221 Bye\r\n", [(C.QUIT, R(221, "Bye"))]),
            At(P.CLOSED),
        ],
        False,
    ),
    "reply-split-across-chunks": (
        [
            Recv(b"220-mx"),
            Recv(b".example.org\r\n22"),
            At(P.AWAIT_GREETING, [C.GREETING]),
            Recv(b"0 ESMTP\r\n", [(C.GREETING, R(220, "mx.example.org\nESMTP"))]),
            At(P.GREETED),
        ],
        False,
    ),
    "send-before-greeting": (
        [
            *[
                Refuse(c, SMTPProtocolError, f"Cannot send {c.value} while awaiting greeting")
                for c in ALL_SENDABLE
            ],
            At(P.AWAIT_GREETING, [C.GREETING]),
            *GREET,
            Send(C.EHLO),
        ],
        False,
    ),
    "hello-needed-first": (
        [
            *GREET,
            *[
                Refuse(c, SMTPProtocolError, f"{c.value} needs EHLO or HELO first")
                for c in (C.MAIL, C.RCPT, C.DATA, C.AUTH, C.STARTTLS)
            ],
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
            Send(C.NOOP),
            Recv(b"250 ok\r\n", [(C.NOOP, R(250, "ok"))]),
            Send(C.RSET),
            Recv(b"250 ok\r\n", [(C.RSET, R(250, "ok"))]),
            Send(C.OTHER),
            Recv(b"502 no\r\n", [(C.OTHER, R(502, "no"))]),
            At(P.GREETED),
        ],
        False,
    ),
    "ehlo-refused-then-helo": (
        [
            *GREET,
            Send(C.EHLO),
            Recv(b"502 5.5.1 Unrecognized\r\n", [(C.EHLO, R(502, "5.5.1 Unrecognized"))]),
            At(P.GREETED),
            Refuse(C.MAIL, SMTPProtocolError, "MAIL needs EHLO or HELO first"),
            Send(C.HELO),
            Recv(b"250 mx\r\n", [(C.HELO, R(250, "mx"))]),
            At(P.READY),
            Send(C.MAIL),
        ],
        False,
    ),
    "helo-refused-stays-greeted": (
        [
            *GREET,
            Send(C.HELO),
            Recv(b"501 bad\r\n", [(C.HELO, R(501, "bad"))]),
            At(P.GREETED),
        ],
        False,
    ),
    "ehlo-again-when-ready": (
        [*READY, Send(C.EHLO), Recv(b"250 x\r\n", [(C.EHLO, R(250, "x"))]), At(P.READY)],
        False,
    ),
    "one-in-flight-without-pipelining": (
        [
            *READY,
            Send(C.MAIL),
            *[_refused(c, "MAIL") for c in ALL_SENDABLE if c is not C.CONTENT],
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
            At(P.READY, [C.MAIL]),
            Recv(b"250 ok\r\n", [(C.MAIL, R(250, "ok"))]),
            Send(C.RCPT),
            _refused(C.RCPT, "RCPT"),
            Recv(b"250 ok\r\n", [(C.RCPT, R(250, "ok"))]),
            Send(C.RCPT),
        ],
        False,
    ),
    "pipelining-flag-needed": (
        [*READY, Send(C.MAIL), _refused(C.RCPT, "MAIL")],
        False,
    ),
    "pipelined-group": (
        [
            *READY,
            Send(C.MAIL),
            Send(C.RCPT),
            Send(C.RCPT),
            Send(C.DATA),
            At(P.READY, [C.MAIL, C.RCPT, C.RCPT, C.DATA]),
            # nothing may follow DATA before its reply
            *[_refused(c, "DATA") for c in ALL_SENDABLE if c is not C.CONTENT],
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
            Recv(
                b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No\r\n",
                [
                    (C.MAIL, R(250, "2.1.0 Ok")),
                    (C.RCPT, R(250, "2.1.5 Ok")),
                    (C.RCPT, R(550, "5.1.1 No")),
                ],
            ),
            At(P.READY, [C.DATA]),
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
            Recv(b"354 Go\r\n", [(C.DATA, R(354, "Go"))]),
            # the content leads the next group, with the next message's envelope
            Send(C.CONTENT),
            Send(C.MAIL),
            Send(C.RCPT),
            Send(C.DATA),
            At(P.READY, [C.CONTENT, C.MAIL, C.RCPT, C.DATA]),
            Recv(
                b"250 Queued 1\r\n250 Ok\r\n250 Ok\r\n354 Go\r\n",
                [
                    (C.CONTENT, R(250, "Queued 1")),
                    (C.MAIL, R(250, "Ok")),
                    (C.RCPT, R(250, "Ok")),
                    (C.DATA, R(354, "Go")),
                ],
            ),
            Send(C.CONTENT),
            Send(C.QUIT),
            At(P.CLOSING, [C.CONTENT, C.QUIT]),
            Recv(
                b"250 Queued 2\r\n221 Bye\r\n",
                [(C.CONTENT, R(250, "Queued 2")), (C.QUIT, R(221, "Bye"))],
            ),
            At(P.CLOSED),
        ],
        True,
    ),
    "pipelined-rset-groupable": (
        [*READY, Send(C.RSET), Send(C.MAIL), Send(C.RSET), Send(C.NOOP), _refused(C.MAIL, "NOOP")],
        True,
    ),
    "pipelined-group-ends-at-non-groupable": (
        [
            *READY,
            *[
                step
                for c in (C.EHLO, C.HELO, C.AUTH, C.NOOP, C.OTHER, C.STARTTLS)
                for step in (
                    Send(c),
                    _refused(C.MAIL, c.value),
                    Recv(b"250 ok\r\n", [(c, R(250, "ok"))]),
                )
                if c is not C.STARTTLS
            ],
        ],
        True,
    ),
    "content-only-after-354": (
        [
            *READY,
            Send(C.MAIL),
            Recv(b"250 ok\r\n", [(C.MAIL, R(250, "ok"))]),
            Send(C.RCPT),
            Recv(b"250 ok\r\n", [(C.RCPT, R(250, "ok"))]),
            Send(C.DATA),
            Recv(b"554 No valid recipients\r\n", [(C.DATA, R(554, "No valid recipients"))]),
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
            Send(C.DATA),
            Recv(b"354 Go\r\n", [(C.DATA, R(354, "Go"))]),
            Send(C.CONTENT),
            # one 354 allows one content
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
            Recv(b"250 ok\r\n", [(C.CONTENT, R(250, "ok"))]),
            Refuse(C.CONTENT, SMTPProtocolError, "Message content may only follow a 354 reply"),
        ],
        False,
    ),
    "quit-closing-closed": (
        [
            *READY,
            Send(C.QUIT),
            At(P.CLOSING, [C.QUIT]),
            *[_closed(c) for c in ALL_SENDABLE],
            Recv(b"221 2.0.0 Bye\r\n", [(C.QUIT, R(221, "2.0.0 Bye"))]),
            At(P.CLOSED),
            *[_closed(c) for c in ALL_SENDABLE],
        ],
        False,
    ),
    "quit-right-after-greeting": (
        [*GREET, Send(C.QUIT), Recv(b"221 Bye\r\n", [(C.QUIT, R(221, "Bye"))]), At(P.CLOSED)],
        False,
    ),
    "quit-refused-still-closes": (
        [*READY, Send(C.QUIT), Recv(b"500 what\r\n", [(C.QUIT, R(500, "what"))]), At(P.CLOSED)],
        False,
    ),
    "greeting-554": (
        [
            Recv(b"554 5.3.2 Go away\r\n", [(C.GREETING, R(554, "5.3.2 Go away"))]),
            At(P.CLOSED),
            *[_closed(c) for c in ALL_SENDABLE],
        ],
        False,
    ),
    "greeting-421": (
        [Recv(b"421 Busy\r\n", [(C.GREETING, R(421, "Busy"))]), At(P.CLOSED), _closed(C.QUIT)],
        False,
    ),
    "unsolicited-421-closes": (
        [
            *READY,
            Recv(b"421 4.3.2 Shutting down\r\n", [(C.OTHER, R(421, "4.3.2 Shutting down"))]),
            At(P.CLOSED),
            *[_closed(c) for c in ALL_SENDABLE],
        ],
        False,
    ),
    "unsolicited-221-closes": (
        [
            *READY,
            Recv(b"221 2.0.0 Bye\r\n", [(C.OTHER, R(221, "2.0.0 Bye"))]),
            At(P.CLOSED),
            *[_closed(c) for c in ALL_SENDABLE],
        ],
        False,
    ),
    "421-to-a-command-closes": (
        [
            *READY,
            Send(C.MAIL),
            Recv(b"421 4.4.2 Timeout\r\n", [(C.MAIL, R(421, "4.4.2 Timeout"))]),
            At(P.CLOSED),
            _closed(C.RSET),
        ],
        False,
    ),
    "421-in-a-pipelined-group": (
        [
            *READY,
            Send(C.MAIL),
            Send(C.RCPT),
            Send(C.DATA),
            Recv(
                b"250 ok\r\n421 bye\r\n",
                [(C.MAIL, R(250, "ok")), (C.RCPT, R(421, "bye"))],
            ),
            At(P.CLOSED, [C.DATA]),
            _closed(C.QUIT),
        ],
        True,
    ),
    "421-while-closing-stays-closing-until-quit-reply": (
        [
            *READY,
            Send(C.MAIL),
            Send(C.QUIT),
            At(P.CLOSING, [C.MAIL, C.QUIT]),
            Recv(b"421 bye\r\n", [(C.MAIL, R(421, "bye"))]),
            At(P.CLOSING, [C.QUIT]),
            Recv(b"221 bye\r\n", [(C.QUIT, R(221, "bye"))]),
            At(P.CLOSED),
        ],
        True,
    ),
    "starttls": (
        [
            *READY,
            Send(C.STARTTLS),
            Recv(
                b"220 2.0.0 Ready to start TLS\r\n",
                [(C.STARTTLS, R(220, "2.0.0 Ready to start TLS"))],
            ),
            At(P.TLS_HANDSHAKE),
            *[
                Refuse(c, SMTPProtocolError, f"Cannot send {c.value} while TLS handshake")
                for c in ALL_SENDABLE
            ],
        ],
        False,
    ),
    "starttls-refused": (
        [
            *READY,
            Send(C.STARTTLS),
            Recv(
                b"454 4.7.0 TLS not available\r\n",
                [(C.STARTTLS, R(454, "4.7.0 TLS not available"))],
            ),
            At(P.READY),
            Send(C.MAIL),
        ],
        False,
    ),
}


@pytest.mark.parametrize(("steps", "pipelining"), SCRIPTS.values(), ids=SCRIPTS.keys())
def test_script(steps: list[Step], pipelining: bool) -> None:
    play(steps, pipelining=pipelining)


# Protocol violations by the server ---------------------------------------------------------


# Either wording refuses the injected reply.
INJECTED_REPLY = (
    r"Reply received with no command awaiting one: 250 injected"
    r"|Reply received after the STARTTLS reply, before the TLS handshake"
)

FAILURES: dict[str, tuple[list[Step], Fail]] = {
    "unsolicited-reply": (
        READY,
        Fail(b"250 extra\r\n", r"Reply received with no command awaiting one: 250 extra"),
    ),
    "extra-reply-in-same-chunk": (
        [*READY, Send(C.NOOP)],
        Fail(
            b"250 ok\r\n250 extra\r\n",
            r"Reply received with no command awaiting one: 250 extra",
            [(C.NOOP, R(250, "ok"))],
        ),
    ),
    "two-greetings": (
        [],
        Fail(
            b"220 hi\r\n220 again\r\n",
            "Reply received with no command awaiting one: 220 again",
            [(C.GREETING, R(220, "hi"))],
        ),
    ),
    "reply-after-quit-reply": (
        [*READY, Send(C.QUIT)],
        Fail(
            b"221 bye\r\n250 more\r\n",
            "Reply received with no command awaiting one: 250 more",
            [(C.QUIT, R(221, "bye"))],
        ),
    ),
    "malformed-reply": (READY, Fail(b"hello\r\n", "Malformed reply line: b'hello'")),
    "malformed-greeting": (
        [],
        Fail(b"SSH-2.0-OpenSSH\r\n", "Malformed reply line: b'SSH-2.0-OpenSSH'"),
    ),
    "multiline-code-change": (
        [*READY, Send(C.NOOP)],
        Fail(b"250-a\r\n251 b\r\n", "Multiline reply changed its code: b'251 b'"),
    ),
    "line-too-long": ([], Fail(b"220 " + b"x" * 9000, "Reply line too long")),
    "starttls-220-then-reply-same-chunk": (
        [*READY, Send(C.STARTTLS)],
        Fail(
            b"220 go\r\n250 injected\r\n",
            INJECTED_REPLY,
            [(C.STARTTLS, R(220, "go"))],
        ),
    ),
    "starttls-220-then-partial-same-chunk": (
        [*READY, Send(C.STARTTLS)],
        Fail(
            b"220 go\r\n250-PIPELINING",
            "Data received after the STARTTLS reply, before the TLS handshake",
            [(C.STARTTLS, R(220, "go"))],
        ),
    ),
    "starttls-220-then-open-multiline-same-chunk": (
        [*READY, Send(C.STARTTLS)],
        Fail(
            b"220 go\r\n250-PIPELINING\r\n",
            "Data received after the STARTTLS reply, before the TLS handshake",
            [(C.STARTTLS, R(220, "go"))],
        ),
    ),
    "starttls-220-then-one-byte-same-chunk": (
        [*READY, Send(C.STARTTLS)],
        Fail(
            b"220 go\r\n2",
            "Data received after the STARTTLS reply, before the TLS handshake",
            [(C.STARTTLS, R(220, "go"))],
        ),
    ),
    "starttls-220-then-later-chunk": (
        [*READY, Send(C.STARTTLS), Recv(b"220 go\r\n", [(C.STARTTLS, R(220, "go"))])],
        Fail(
            b"250 injected\r\n", "Data received after the STARTTLS reply, before the TLS handshake"
        ),
    ),
    "starttls-220-then-later-partial": (
        [*READY, Send(C.STARTTLS), Recv(b"220 go\r\n", [(C.STARTTLS, R(220, "go"))])],
        Fail(b"2", "Data received after the STARTTLS reply, before the TLS handshake"),
    ),
    "starttls-220-split-then-injection": (
        [*READY, Send(C.STARTTLS), Recv(b"220 g")],
        Fail(
            b"o\r\n250 injected\r\n",
            INJECTED_REPLY,
            [(C.STARTTLS, R(220, "go"))],
        ),
    ),
}


@pytest.mark.parametrize(("steps", "fail"), FAILURES.values(), ids=FAILURES.keys())
def test_server_violation_moves_to_error(steps: list[Step], fail: Fail) -> None:
    conn = play([*steps, fail], pipelining=True)
    error = conn.error
    assert isinstance(error, SMTPProtocolError)
    assert error.code == -1
    # every later send refuses, and so does every later receive
    for command in ALL_SENDABLE:
        with pytest.raises(SMTPProtocolError) as info:
            conn.send(command, WIRE[command])
        assert info.value.message == f"Connection unusable after an earlier error: {error.message}"
        assert conn.phase is P.ERROR
    for data in (b"250 ok\r\n", b"", b"221 bye\r\n"):
        with pytest.raises(SMTPProtocolError) as raised:
            conn.receive_data(data)
        assert raised.value is error
    assert drain(conn) == []
    conn.connection_lost()
    assert conn.phase is P.ERROR
    with pytest.raises(SMTPProtocolError):
        conn.tls_established()
    assert conn.phase is P.ERROR


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"421 4.3.2 bye\r\n", id="421"),
        pytest.param(b"221 bye\r\n", id="221"),
        pytest.param(b"250 ok\r\n", id="250"),
        pytest.param(b"250-a\r\n250 b\r\n", id="multiline"),
        pytest.param(b"\r\n", id="empty-line"),
        pytest.param(b"x", id="garbage"),
    ],
)
def test_starttls_220_followed_by_any_bytes_is_injection(extra: bytes) -> None:
    # RFC 3207 / CVE-2011-0411 class: nothing may follow the 220 in the clear. A 421 is
    # no exception: it is as much an injected reply as any other.
    conn = play([*READY, Send(C.STARTTLS)])
    with pytest.raises(SMTPProtocolError):
        conn.receive_data(b"220 go\r\n" + extra)
    assert conn.phase is P.ERROR


def test_receive_after_error_without_stored_error() -> None:
    conn = ClientConnection()
    conn.phase = P.ERROR
    with pytest.raises(SMTPProtocolError) as info:
        conn.receive_data(b"220 hi\r\n")
    assert info.value.message == "Connection failed earlier"


# TLS ---------------------------------------------------------------------------------------


def test_tls_established_resets_everything() -> None:
    conn = ClientConnection(max_line_length=64, max_reply_size=128)
    play([*READY, Send(C.STARTTLS)], pipelining=True, conn=conn)
    conn.receive_data(b"220 go\r\n")
    assert conn.ready_events == 1
    conn.tls_established()
    assert conn.phase is P.GREETED
    assert conn.pipelining is False
    assert conn.ready_events == 0  # events from before the handshake are discarded
    assert conn.next_event() is None
    assert list(conn.pending) == []
    play(
        [
            Refuse(C.MAIL, SMTPProtocolError, "MAIL needs EHLO or HELO first"),
            Send(C.EHLO),
            Recv(b"250-mx\r\n250 PIPELINING\r\n", [(C.EHLO, R(250, "mx\nPIPELINING"))]),
            At(P.READY),
            Send(C.MAIL),
            # pipelining is off until the owner turns it on again
            _refused(C.RCPT, "MAIL"),
            Recv(b"250 ok\r\n", [(C.MAIL, R(250, "ok"))]),
        ],
        conn=conn,
    )
    # the caps survive the new parser
    conn.send(C.NOOP, WIRE[C.NOOP])
    with pytest.raises(SMTPProtocolError, match="Reply line too long"):
        conn.receive_data(b"250 " + b"x" * 61 + b"\r\n")


def test_tls_established_reply_size_cap_survives() -> None:
    conn = ClientConnection(max_reply_size=20)
    conn.receive_data(b"220 hi\r\n")
    conn.send(C.EHLO, WIRE[C.EHLO])
    conn.receive_data(b"250 ok\r\n")
    conn.send(C.STARTTLS, WIRE[C.STARTTLS])
    conn.receive_data(b"220 go\r\n")
    conn.tls_established()
    conn.send(C.EHLO, WIRE[C.EHLO])
    with pytest.raises(SMTPProtocolError, match="Reply too long"):
        conn.receive_data(b"250-aaaaaaaa\r\n250 bbbbbbbb\r\n")


@pytest.mark.parametrize(
    ("steps", "phase_text"),
    [
        ([], "awaiting greeting"),
        (GREET, "greeted"),
        (READY, "ready"),
        ([*READY, Send(C.STARTTLS)], "ready"),
        ([*READY, Send(C.QUIT)], "closing"),
        ([*READY, Send(C.QUIT), Recv(b"221 bye\r\n", [(C.QUIT, R(221, "bye"))])], "closed"),
    ],
)
def test_tls_established_without_handshake_refused(steps: list[Step], phase_text: str) -> None:
    conn = play(steps)
    phase = conn.phase
    with pytest.raises(SMTPProtocolError) as info:
        conn.tls_established()
    assert info.value.message == f"No STARTTLS handshake expected while {phase_text}"
    assert conn.phase is phase


# Lifecycle ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps",
    [
        [],
        GREET,
        READY,
        [*READY, Send(C.MAIL)],
        [*READY, Send(C.STARTTLS), Recv(b"220 go\r\n", [(C.STARTTLS, R(220, "go"))])],
        [*READY, Send(C.QUIT)],
    ],
    ids=["awaiting-greeting", "greeted", "ready", "in-flight", "tls-handshake", "closing"],
)
def test_connection_lost(steps: list[Step]) -> None:
    conn = play(steps)
    conn.connection_lost()
    assert conn.phase is P.CLOSED
    for command in ALL_SENDABLE:
        with pytest.raises(SMTPServerDisconnected, match=r"^Connection closed$"):
            conn.send(command, WIRE[command])


def test_initial_state_and_repr() -> None:
    conn = ClientConnection()
    assert conn.phase is P.AWAIT_GREETING
    assert list(conn.pending) == [C.GREETING]
    assert conn.pipelining is False
    assert conn.error is None
    assert conn.ready_events == 0
    assert conn.next_event() is None
    assert repr(conn) == "<ClientConnection awaiting greeting, 1 awaiting reply>"
    conn.receive_data(b"220 hi\r\n")
    assert conn.ready_events == 1
    assert repr(conn) == "<ClientConnection greeted, 0 awaiting reply>"
    conn.send(C.EHLO, WIRE[C.EHLO])
    conn.receive_data(b"250 ok\r\n")
    assert conn.ready_events == 2
    conn.pipelining = True
    conn.send(C.MAIL, WIRE[C.MAIL])
    conn.send(C.RCPT, WIRE[C.RCPT])
    assert repr(conn) == "<ClientConnection ready, 2 awaiting reply>"
    assert conn.next_event() == (C.GREETING, R(220, "hi"))
    assert conn.next_event() == (C.EHLO, R(250, "ok"))
    assert conn.next_event() is None


def test_connection_caps_are_passed_to_the_parser() -> None:
    conn = ClientConnection(max_line_length=10)
    with pytest.raises(SMTPProtocolError, match="Reply line too long"):
        conn.receive_data(b"220 123456\r\n")
    assert conn.phase is P.ERROR


@pytest.mark.parametrize("command", [C.QUIT, C.RSET, C.MAIL])
@pytest.mark.parametrize("pipelining", [False, True])
def test_only_content_may_follow_354(command: Command, pipelining: bool) -> None:
    # After 354 the server reads everything up to the dot as message text: a command
    # sent now would become part of the message, and its reply would never come.
    conn = play(
        [
            *READY,
            Send(C.MAIL),
            Recv(b"250 ok\r\n", [(C.MAIL, R(250, "ok"))]),
            Send(C.RCPT),
            Recv(b"250 ok\r\n", [(C.RCPT, R(250, "ok"))]),
            Send(C.DATA),
            Recv(b"354 go\r\n", [(C.DATA, R(354, "go"))]),
        ],
        pipelining=pipelining,
    )
    with pytest.raises(SMTPProtocolError):
        conn.send(command, WIRE[command])


OUT_OF_STEP = r"Reply \d{3} cannot answer .*: the replies are out of step with the commands sent .*"
GROUP = [*READY, Send(C.MAIL), Send(C.RCPT), Send(C.DATA)]


@pytest.mark.parametrize(
    ("steps", "fail"),
    [
        pytest.param(
            GROUP,
            Fail(
                b"250 ok\r\n250 ok\r\n250 extra\r\n354 go\r\n",
                OUT_OF_STEP,
                [(C.MAIL, R(250, "ok")), (C.RCPT, R(250, "ok"))],
            ),
            id="2xx-to-DATA",
        ),
        pytest.param(
            GROUP,
            Fail(b"250 ok\r\n354 go\r\n", OUT_OF_STEP, [(C.MAIL, R(250, "ok"))]),
            id="354-to-RCPT",
        ),
        pytest.param(GROUP, Fail(b"354 go\r\n", OUT_OF_STEP), id="354-to-MAIL"),
        pytest.param([*READY, Send(C.RSET)], Fail(b"354 go\r\n", OUT_OF_STEP), id="354-to-RSET"),
        pytest.param([*READY, Send(C.NOOP)], Fail(b"334 go\r\n", OUT_OF_STEP), id="334-to-NOOP"),
        pytest.param(
            [
                *GROUP,
                Recv(
                    b"250 a\r\n250 b\r\n354 c\r\n",
                    [(C.MAIL, R(250, "a")), (C.RCPT, R(250, "b")), (C.DATA, R(354, "c"))],
                ),
                Send(C.CONTENT),
            ],
            Fail(b"354 again\r\n", OUT_OF_STEP),
            id="354-to-end-of-data",
        ),
    ],
)
def test_a_reply_out_of_step_with_its_command_is_a_protocol_error(
    steps: list[Step], fail: Fail
) -> None:
    # An extra reply inside a pipelined group shifts every later reply onto the wrong
    # command; judged as it lands, a 250 meant for RCPT would refuse the DATA.
    conn = play([*steps, fail], pipelining=True)
    assert conn.phase is P.ERROR
    with pytest.raises(SMTPProtocolError):
        conn.send(C.RSET, WIRE[C.RSET])


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (C.DATA, b"354 go\r\n"),
        (C.DATA, b"554 no\r\n"),
        (C.DATA, b"451 later\r\n"),
        (C.MAIL, b"250 ok\r\n"),
        (C.MAIL, b"550 no\r\n"),
        (C.AUTH, b"334 VXNlcm5hbWU6\r\n"),
        (C.AUTH, b"235 ok\r\n"),
        (C.OTHER, b"354 whatever\r\n"),
        (C.NOOP, b"250 ok\r\n"),
    ],
)
def test_replies_in_step_with_their_command_pass(command: Command, reply: bytes) -> None:
    conn = play(READY)
    conn.send(command, WIRE[command])
    conn.receive_data(reply)
    [(answered, _)] = drain(conn)
    assert answered is command
    assert conn.phase is not P.ERROR


@pytest.mark.parametrize(
    ("steps", "late"),
    [
        pytest.param([], b"220 late greeting\r\n", id="lost-before-the-greeting"),
        pytest.param([*READY, Send(C.EHLO)], b"250 late ehlo\r\n", id="lost-awaiting-EHLO"),
        pytest.param([*GREET, Send(C.HELO)], b"250 late helo\r\n", id="lost-awaiting-HELO"),
    ],
)
def test_a_lost_connection_stays_closed_whatever_arrives_after(
    steps: list[Step], late: bytes
) -> None:
    # Found by tests/test_fuzz_protocol.py: a greeting or an EHLO reply fed after
    # connection_lost() used to reopen the session (GREETED / READY) and accept commands.
    conn = play(steps)
    conn.connection_lost()
    conn.receive_data(late)
    assert conn.phase is P.CLOSED
    for command in ALL_SENDABLE:
        with pytest.raises(SMTPServerDisconnected):
            conn.send(command, WIRE[command])


# Whole groups: send_envelope, send_content, take_replies ------------------------------------

ENVELOPE = [WIRE[C.MAIL], WIRE[C.RCPT], WIRE[C.RCPT], WIRE[C.DATA]]


def _one_by_one(conn: ClientConnection, commands: list[bytes]) -> Exception | None:
    """What send() says, command by command, about the envelope (None: all accepted)."""
    kinds = [C.MAIL, *[C.RCPT] * (len(commands) - 2), C.DATA]
    try:
        for kind, data in zip(kinds, commands, strict=True):
            conn.send(kind, data)
    except (SMTPProtocolError, SMTPServerDisconnected) as exc:
        return exc
    return None


ENVELOPE_STATES: dict[str, tuple[list[Step], bool]] = {
    "ready-pipelining": (READY, True),
    "after-content-and-rset": (
        [
            *READY,
            Send(C.MAIL),
            Send(C.RCPT),
            Send(C.DATA),
            Recv(
                b"250 a\r\n250 b\r\n354 c\r\n",
                [(C.MAIL, R(250, "a")), (C.RCPT, R(250, "b")), (C.DATA, R(354, "c"))],
            ),
            Send(C.CONTENT),
            Send(C.RSET),
        ],
        True,
    ),
    "ready-lock-step": (READY, False),
    "greeted": (GREET, True),
    "awaiting-greeting": ([], True),
    "after-354": (
        [
            *READY,
            Send(C.MAIL),
            Send(C.RCPT),
            Send(C.DATA),
            Recv(
                b"250 a\r\n250 b\r\n354 c\r\n",
                [(C.MAIL, R(250, "a")), (C.RCPT, R(250, "b")), (C.DATA, R(354, "c"))],
            ),
        ],
        True,
    ),
    "data-in-flight": ([*READY, Send(C.MAIL), Send(C.RCPT), Send(C.DATA)], True),
    "noop-in-flight": ([*READY, Send(C.NOOP)], True),
    "closing": ([*READY, Send(C.QUIT)], True),
    "closed": ([*READY, Send(C.QUIT), Recv(b"221 bye\r\n", [(C.QUIT, R(221, "bye"))])], True),
}


@pytest.mark.parametrize(("steps", "pipelining"), ENVELOPE_STATES.values(), ids=ENVELOPE_STATES)
def test_send_envelope_checks_as_send_does_command_by_command(
    steps: list[Step], pipelining: bool
) -> None:
    # One check for the group, the same verdict as send() for each command in turn;
    # a refused envelope leaves nothing of itself registered.
    expected_conn = play(steps, pipelining=pipelining)
    before = (expected_conn.phase, list(expected_conn.pending))
    expected = _one_by_one(expected_conn, ENVELOPE)
    conn = play(steps, pipelining=pipelining)
    if expected is None:
        assert conn.send_envelope(ENVELOPE) is None
        assert (conn.phase, list(conn.pending)) == (expected_conn.phase, expected_conn.pending)
        assert list(conn.pending)[-4:] == [C.MAIL, C.RCPT, C.RCPT, C.DATA]
    else:
        with pytest.raises(type(expected)) as info:
            conn.send_envelope(ENVELOPE)
        assert str(info.value) == str(expected)
        assert (conn.phase, list(conn.pending)) == before


def test_send_envelope_needs_mail_a_recipient_and_data() -> None:
    conn = play(READY, pipelining=True)
    for short in ([], [WIRE[C.MAIL]], [WIRE[C.MAIL], WIRE[C.DATA]]):
        with pytest.raises(ValueError, match="at least one RCPT"):
            conn.send_envelope(short)
    assert list(conn.pending) == []


@pytest.mark.parametrize(("steps", "pipelining"), ENVELOPE_STATES.values(), ids=ENVELOPE_STATES)
def test_send_content_checks_as_send_does(steps: list[Step], pipelining: bool) -> None:
    data = WIRE[C.CONTENT]
    reference = play(steps, pipelining=pipelining)
    conn = play(steps, pipelining=pipelining)
    try:
        assert reference.send(C.CONTENT, data) is data
    except (SMTPProtocolError, SMTPServerDisconnected) as exc:
        with pytest.raises(type(exc)) as info:
            conn.send_content(data)
        assert str(info.value) == str(exc)
    else:
        assert conn.send_content(data) is data
        with pytest.raises(SMTPProtocolError, match="only follow a 354"):
            conn.send_content(data)  # once per 354
    assert (conn.phase, list(conn.pending)) == (reference.phase, list(reference.pending))


def test_take_replies_hands_over_a_group_oldest_first() -> None:
    conn = play([*READY, Send(C.MAIL), Send(C.RCPT), Send(C.RCPT), Send(C.DATA)], pipelining=True)
    conn.receive_data(b"250 a\r\n550 b\r\n250 c\r\n")
    assert conn.ready_events == 3
    assert conn.take_replies(2) == [R(250, "a"), R(550, "b")]
    assert conn.ready_events == 1
    conn.receive_data(b"354 d\r\n")
    assert conn.take_replies(2) == [R(250, "c"), R(354, "d")]
    assert conn.take_replies(1) == []
    assert conn.next_event() is None


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"250 a\r\n250 b\r\n354 c\r\n", id="accepted"),
        pytest.param(b"250 a\r\n550 b\r\n554 c\r\n", id="refused"),
        pytest.param(b"250 a\r\n421 b\r\n", id="421-mid-group"),
        pytest.param(b"250 a\r\n250 b\r\n421 c\r\n", id="421-to-DATA"),
        pytest.param(b"250 a\r\n334 b\r\n354 c\r\n", id="3xx-to-RCPT"),
        pytest.param(b"250 a\r\n250 b\r\n250 c\r\n", id="2xx-to-DATA"),
        pytest.param(b"250 a\r\n250 b\r\n334 c\r\n", id="334-to-DATA"),
        pytest.param(b"250 a\r\n250 b\r\n452 c\r\n", id="452-to-DATA"),
        pytest.param(b"550 a\r\n503 b\r\n503 c\r\n", id="all-refused"),
        pytest.param(b"250 a\r\n250 b\r\n354 c\r\n250 d\r\n", id="one-reply-too-many"),
        pytest.param(b"250 a\r\n250-b\r\n250 b\r\n354 c\r\n", id="multiline-mid-group"),
        pytest.param(b"250 a\r\n250 b\r\nxyz\r\n", id="garbage-after-two"),
    ],
)
def test_a_group_read_at_once_is_judged_as_read_reply_by_reply(wire: bytes) -> None:
    # receive_data's fast path (a run of plain replies judged inline) against the
    # general path it stands for (every reply through _on_reply): same events, same
    # phase, same error, same state for the content.
    def fast() -> tuple[object, ...]:
        conn = play(GROUP, pipelining=True)
        error = None
        try:
            conn.receive_data(wire)
        except SMTPProtocolError as exc:
            error = exc.message
        return conn.phase, list(conn.pending), drain(conn), error, conn._content_allowed

    def general() -> tuple[object, ...]:
        conn = play(GROUP, pipelining=True)
        replies, parse_error = conn._parser.parse(wire)
        error = None
        try:
            for reply in replies:
                conn._on_reply(reply)
            if parse_error is not None:
                conn._fail(parse_error.message)
        except SMTPProtocolError as exc:
            error = exc.message
        return conn.phase, list(conn.pending), drain(conn), error, conn._content_allowed

    assert fast() == general()
