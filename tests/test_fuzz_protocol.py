"""Fuzzing the sans-IO protocol core with arbitrary server bytes and command sequences.

A hypothesis state machine drives :class:`ClientConnection` as a client would (commands
in any order, any pipelining setting, TLS and disconnects at any time) while a hostile or
broken server sends anything: well-formed replies of any code, replies cut anywhere,
multiline replies, oversized lines, garbage. Whatever happens:

* only the package's own errors (:class:`SMTPException`) ever come out;
* once a protocol error was raised, or the session ended, no command is accepted for the
  wire again (``send`` raises), and a refused ``send`` changes nothing;
* every reply is paired with the oldest command awaiting one, in order (RFC 2920 3.1);
* without pipelining at most one command awaits a reply; message content only follows a
  354 to DATA.

The same holds for the reply parser (whatever the chunking), the transaction's judgement
and the AUTH exchange. ``SMTP_BACKENDS_FUZZ_EXAMPLES`` raises the number of examples for
a longer run (the default keeps the suite fast).
"""

from __future__ import annotations

import os
from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from smtp_backends.errors import SMTPException, SMTPProtocolError, SMTPServerDisconnected
from smtp_backends.protocol.auth import AuthExchange, CramMD5, Login, Plain, XOAuth2
from smtp_backends.protocol.connection import ClientConnection, Command, Phase
from smtp_backends.protocol.replies import ReplyParser, SMTPResponse
from smtp_backends.protocol.transaction import AfterData, Envelope, Transaction

EXAMPLES = int(os.environ.get("SMTP_BACKENDS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

C = Command
WIRE = {
    C.EHLO: b"EHLO client.example.org\r\n",
    C.HELO: b"HELO client.example.org\r\n",
    C.STARTTLS: b"STARTTLS\r\n",
    C.AUTH: b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
    C.MAIL: b"MAIL FROM:<a@example.org>\r\n",
    C.RCPT: b"RCPT TO:<b@example.org>\r\n",
    C.DATA: b"DATA\r\n",
    C.CONTENT: b"Subject: x\r\n\r\nbody\r\n",
    C.RSET: b"RSET\r\n",
    C.NOOP: b"NOOP\r\n",
    C.QUIT: b"QUIT\r\n",
    C.OTHER: b"VRFY a@example.org\r\n",
}
SENDABLE = list(WIRE)
NEEDS_HELLO = {C.MAIL, C.RCPT, C.DATA, C.AUTH, C.STARTTLS}
GROUPABLE = {C.MAIL, C.RCPT, C.RSET, C.CONTENT}
COMMON_CODES = [220, 221, 235, 250, 251, 252, 334, 354, 421, 450, 451, 452, 454, 500, 501]
COMMON_CODES += [502, 503, 530, 535, 550, 552, 553, 554]

# --------------------------------------------------------------------------- server bytes

codes = st.one_of(st.sampled_from(COMMON_CODES), st.integers(0, 999))
texts = st.one_of(
    st.just(b""),
    st.sampled_from([b"ok", b"2.0.0 ok", b"go ahead", b"PIPELINING", b"VXNlcm5hbWU6"]),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)
endings = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\r\n"])


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    """One reply (maybe multiline, maybe with codes that disagree)."""
    code = draw(codes)
    lines = draw(st.integers(1, 3))
    out = b""
    for index in range(lines):
        line_code = code if draw(st.integers(0, 9)) else draw(codes)
        separator = b"-" if index < lines - 1 else draw(st.sampled_from([b" ", b" ", b""]))
        out += b"%03d" % line_code + separator + draw(texts) + draw(endings)
    return out


server_bytes = st.one_of(
    replies(),
    st.lists(replies(), min_size=2, max_size=4).map(b"".join),
    st.binary(max_size=60),
    st.binary(min_size=1, max_size=8),
    st.integers(60, 400).map(lambda n: b"250-" + b"x" * n + b"\r\n"),  # over the small caps
)


# --------------------------------------------------------------------------- the connection


class ConnectionMachine(RuleBasedStateMachine):
    """A client's use of ClientConnection against a server that may send anything."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = ClientConnection()
        self.awaiting: deque[Command] = deque([C.GREETING])
        self.failed = False  # a protocol error came out of the connection
        self.lost = False  # connection_lost() was called
        self.content_allowed = False  # the last event was a 354 to DATA, nothing sent since

    @initialize(small=st.booleans(), pipelining=st.booleans())
    def start(self, small: bool, pipelining: bool) -> None:
        if small:  # small caps, so that oversized lines and replies are reached
            self.conn = ClientConnection(max_line_length=64, max_reply_size=160)
        self.conn.pipelining = pipelining

    # -- the client's side

    @rule(command=st.sampled_from(SENDABLE))
    def send(self, command: Command) -> None:
        conn = self.conn
        phase, pending = conn.phase, list(conn.pending)
        data = WIRE[command]
        try:
            sent = conn.send(command, data)
        except SMTPException as exc:
            # A refused command changes nothing, and says why in the package's terms.
            assert (conn.phase, list(conn.pending)) == (phase, pending)
            if phase is Phase.ERROR:
                assert isinstance(exc, SMTPProtocolError)
            elif phase in (Phase.CLOSED, Phase.CLOSING):
                assert isinstance(exc, SMTPServerDisconnected)
            return
        # Accepted for the wire: only in a state where writing is right.
        assert sent is data
        assert not self.failed, "a command was accepted after a protocol error"
        assert not self.lost, "a command was accepted after the connection was lost"
        assert phase in (Phase.READY, Phase.GREETED), phase
        if command in NEEDS_HELLO:
            assert phase is Phase.READY
        if command is C.CONTENT:
            assert self.content_allowed, "content without a 354 to DATA"
        else:
            assert not self.content_allowed, "a command where the content had to come"
            if pending:
                assert conn.pipelining and pending[-1] in GROUPABLE, (pending, command)
        self.content_allowed = False
        self.awaiting.append(command)

    @rule(enabled=st.booleans())
    def set_pipelining(self, enabled: bool) -> None:
        self.conn.pipelining = enabled

    @precondition(lambda self: self.conn.phase is Phase.TLS_HANDSHAKE)
    @rule()
    def handshake_done(self) -> None:
        self.conn.tls_established()
        assert self.conn.phase is Phase.GREETED
        assert self.conn.next_event() is None

    @rule()
    def tls_established_out_of_turn(self) -> None:
        phase = self.conn.phase
        if phase is Phase.TLS_HANDSHAKE:
            return
        try:
            self.conn.tls_established()
        except SMTPProtocolError:
            assert self.conn.phase is phase
        else:
            raise AssertionError(f"tls_established() accepted while {phase}")

    @rule()
    def connection_lost(self) -> None:
        self.conn.connection_lost()
        self.lost = True
        assert self.conn.phase in (Phase.CLOSED, Phase.ERROR)

    # -- the server's side

    @rule(data=server_bytes)
    def receive(self, data: bytes) -> None:
        conn = self.conn
        was_failed = conn.phase is Phase.ERROR
        try:
            conn.receive_data(data)
        except SMTPException as exc:
            assert isinstance(exc, SMTPProtocolError), exc
            assert conn.phase is Phase.ERROR
            assert was_failed or exc is conn.error
            self.failed = True
        self.drain()

    def drain(self) -> None:
        while (event := self.conn.next_event()) is not None:
            command, reply = event
            assert isinstance(reply, SMTPResponse)
            assert 200 <= reply.code <= 599 and isinstance(reply.message, str)
            # RFC 5321 4.3.2: DATA's only positive reply is 354, and no other
            # transaction command has a 3xx one; such a reply is out of step (an extra
            # reply shifted the rest) and must fail the connection, not be judged.
            if command is C.DATA:
                assert reply.code == 354 or reply.code >= 400, reply
            elif command in (C.MAIL, C.RCPT, C.CONTENT, C.RSET, C.NOOP):
                assert not 300 <= reply.code < 400, (command, reply)
            if self.awaiting:
                assert command is self.awaiting.popleft(), (command, reply)
            else:  # unsolicited: only a server's goodbye (RFC 5321 3.8)
                assert command is C.OTHER and reply.code in (421, 221)
            if command is C.DATA and reply.code == 354:
                self.content_allowed = True
            if command is C.STARTTLS and reply.code == 220:
                self.awaiting.clear()

    # -- always

    @invariant()
    def consistent(self) -> None:
        conn = self.conn
        if self.failed:
            assert conn.phase is Phase.ERROR
        if self.lost:  # nothing the server sends after that reopens the session
            assert conn.phase in (Phase.CLOSED, Phase.ERROR), conn.phase
        if conn.phase is not Phase.ERROR:
            assert list(conn.pending) == list(self.awaiting)
        assert isinstance(conn.phase, Phase)
        repr(conn)


ConnectionMachine.TestCase.settings = FUZZ
TestConnectionMachine = ConnectionMachine.TestCase


# --------------------------------------------------------------------------- the parser


@FUZZ
@given(data=st.lists(server_bytes, max_size=6).map(b"".join), cuts=st.lists(st.integers(0, 400)))
def test_the_reply_parser_gives_the_same_replies_however_the_bytes_are_cut(
    data: bytes, cuts: list[int]
) -> None:
    def run(chunks: list[bytes]) -> tuple[list[SMTPResponse], str | None]:
        parser = ReplyParser(max_line_length=64, max_reply_size=160)
        got: list[SMTPResponse] = []
        for chunk in chunks:
            replies, error = parser.parse(chunk)
            got += replies
            if error is not None:
                assert isinstance(error, SMTPProtocolError)
                assert parser.parse(b"250 ok\r\n") == ([], error)  # unusable from now on
                return got, "error"
        return got, None

    whole = run([data])
    points = sorted({cut for cut in cuts if cut < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    cut = run(pieces)
    if whole[1] is None and cut[1] is None:
        assert cut == whole
    else:  # the same replies up to the error (a line cap may be hit a little later)
        shorter, longer = sorted((whole[0], cut[0]), key=len)
        assert longer[: len(shorter)] == shorter


# --------------------------------------------------------------------------- the transaction

reply_codes = st.one_of(st.sampled_from(COMMON_CODES), st.integers(200, 599))


@FUZZ
@given(
    mail=reply_codes,
    rcpts=st.lists(reply_codes, min_size=1, max_size=4),
    data=reply_codes,
    dot=reply_codes,
)
def test_a_transaction_never_sends_content_after_a_failure_and_ends_with_our_errors(
    mail: int, rcpts: list[int], data: int, dot: int
) -> None:
    envelope = Envelope("a@example.org", [f"r{k}@example.org" for k in range(len(rcpts))], b"x\r\n")
    transaction = Transaction(envelope)
    transaction.on_mail(SMTPResponse(mail, "m"))
    for code in rcpts:
        transaction.on_rcpt(SMTPResponse(code, "r"))
    failed_before_data = transaction.error is not None
    after = transaction.on_data(SMTPResponse(data, "d"))
    if after is AfterData.CONTENT:
        assert not failed_before_data and data == 354
        assert mail == 250 and any(code in (250, 251) for code in rcpts)
    if failed_before_data:
        assert after is not AfterData.CONTENT  # RFC 2920 3.1: a lone dot or RSET, no content
    if after is not AfterData.RSET:
        transaction.on_end_of_data(SMTPResponse(dot, "e"))
    outcome = transaction.outcome()
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, SMTPException)
    else:
        assert after is AfterData.CONTENT and dot == 250
        refused, _ = outcome
        assert set(refused) == {
            f"r{k}@example.org" for k, code in enumerate(rcpts) if code not in (250, 251)
        }


# --------------------------------------------------------------------------- AUTH

mechanisms = st.sampled_from([Plain, Login, CramMD5, XOAuth2])


@FUZZ
@given(kind=mechanisms, answers=st.lists(replies(), max_size=8))
def test_an_auth_exchange_answers_anything_with_our_errors_and_ends(
    kind: type[Plain], answers: list[bytes]
) -> None:
    exchange = AuthExchange(kind("user", "pass"))
    line: bytes | None = exchange.start()
    assert line.endswith(b"\r\n")
    parser = ReplyParser()
    rounds = 0
    for raw in answers:
        try:
            replies_, error = parser.parse(raw)
            if error is not None:
                raise error
            for reply in replies_:
                line = exchange.on_reply(reply)
                rounds += 1
                if line is None:
                    assert reply.code == 235
                    return
                assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
        except SMTPException:
            return
    assert rounds <= exchange.max_rounds + 1
