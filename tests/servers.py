"""Servers for the test suite.

Two kinds, both on 127.0.0.1 with a random free port, each running its own event loop in a
background thread (so the client under test can run on pytest-asyncio's loop, and the stdlib
``smtplib`` can talk to them from plain synchronous tests):

* :class:`SMTPServer`: a real SMTP server (aiosmtpd) with a :class:`RecordingHandler` that
  stores every accepted message and can be told to refuse senders, recipients or data, and
  to advertise PIPELINING, AUTH (PLAIN, LOGIN, CRAM-MD5, XOAUTH2), STARTTLS or implicit TLS.
  Build one with :func:`start_smtpd` (or the ``make_smtpd`` fixture).

* :class:`ScriptedServer`: a raw-socket server for misbehaviour tests. Each connection runs
  either an ``async def handler(reader, writer)`` or a list of steps (see
  :class:`ScriptedServer`), and everything the client sent is recorded so a test can assert
  what reached the wire and what did not.

Nothing here imports ``smtp_backends``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword
from aiosmtpd.smtp import SMTP as _AiosmtpdSMTP

HOST = "127.0.0.1"
SERVER_HOSTNAME = "localhost"

#: Credentials accepted by servers started with ``auth=True`` (the ``smtpd_auth`` fixture).
USERNAME = "alice"
PASSWORD = "s3cret!"
OAUTH_TOKEN = "tok-123"

#: Every AUTH mechanism the recording server implements.
ALL_AUTH_MECHANISMS = ("CRAM-MD5", "LOGIN", "PLAIN", "XOAUTH2")

#: Put this marker anywhere in a message and the recording server answers its DATA with 554.
DATA_FAIL_MARKER = b"X-Test-Fail-Data"

REFUSED_RECIPIENT_REPLY = "550 5.1.1 no such user"
TEMPFAILED_RECIPIENT_REPLY = "450 4.2.1 mailbox temporarily unavailable"
REFUSED_SENDER_REPLY = "553 5.7.1 sender refused"
DATA_FAIL_REPLY = "554 5.6.0 message refused"


def _local_part(address: str) -> str:
    return address.rsplit("@", 1)[0].lower()


# --------------------------------------------------------------------------- aiosmtpd side


@dataclass
class ReceivedMessage:
    """One message accepted by a :class:`RecordingHandler` (after the 250 to its DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    #: The message bytes as received, dot-unstuffing undone, CRLF line endings kept.
    original_content: bytes
    #: Same as ``original_content`` (aiosmtpd with ``decode_data=False``).
    content: bytes | str
    #: MAIL FROM parameters, upper-cased by aiosmtpd (e.g. ``["BODY=8BITMIME", "SMTPUTF8"]``).
    mail_options: list[str]
    rcpt_options: list[str]
    smtp_utf8: bool
    #: 1-based number of the connection the message came over (see ``handler.connections``).
    connection_id: int
    #: The name the client gave in EHLO/HELO.
    helo_name: str | None
    #: True when the connection was encrypted (implicit TLS or after STARTTLS).
    tls: bool
    #: The authenticated user name, or None.
    auth_login: str | None
    #: The client certificate (``SSLSocket.getpeercert()`` form), if one was presented.
    peercert: dict[str, Any] | None

    @property
    def message(self) -> EmailMessage:
        """The content parsed with the modern email policy."""
        parsed = message_from_bytes(self.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class AuthAttempt:
    """One AUTH exchange seen by the server. Passwords are never recorded."""

    mechanism: str
    login: str | None
    success: bool
    connection_id: int


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (nothing listens: connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RecordingHandler:
    """aiosmtpd handler that records every message and can be told to refuse some.

    Behaviour (each switch may be disabled by passing ``None``):

    * RCPT for a local part starting with ``refuse_rcpt_prefix`` ("refuse") is answered
      ``550 5.1.1 no such user``; one starting with ``tempfail_rcpt_prefix`` ("tempfail")
      ``450 4.2.1 ...``.
    * MAIL FROM a local part starting with ``refuse_sender_prefix`` ("refuse") gets ``553``.
    * DATA whose content contains ``data_fail_marker`` gets ``554 5.6.0 message refused``.
    * EHLO advertises PIPELINING when ``pipelining`` is true, plus ``ehlo_extra`` keywords;
      keywords in ``ehlo_remove`` (e.g. ``{"8BITMIME"}``) are dropped; AUTH is advertised only
      when ``auth`` is true.

    Attributes read by tests (updated from the server thread):

    * ``messages``: list of :class:`ReceivedMessage`, in order of acceptance.
    * ``connections``: number of connections accepted (the controller's own start-up probe
      is not counted); ``open_connections``: number currently open.
    * ``commands``: every command verb handled, in order (``"EHLO"``, ``"MAIL"``, ``"RCPT"``,
      ``"DATA"``, ``"RSET"``, ``"NOOP"``, ``"QUIT"``, ``"STARTTLS"``, ``"AUTH"``), across
      all connections.
    * ``ehlo_names``: the argument of every EHLO.
    * ``logins``: list of :class:`AuthAttempt`.
    """

    def __init__(
        self,
        *,
        pipelining: bool = True,
        auth: bool = False,
        ehlo_extra: Iterable[str] = (),
        ehlo_remove: Iterable[str] = (),
        refuse_rcpt_prefix: str | None = "refuse",
        tempfail_rcpt_prefix: str | None = "tempfail",
        refuse_sender_prefix: str | None = "refuse",
        data_fail_marker: bytes | None = DATA_FAIL_MARKER,
        users: dict[str, str] | None = None,
        oauth_tokens: dict[str, str] | None = None,
    ) -> None:
        self.pipelining = pipelining
        self.auth = auth
        self.ehlo_extra = list(ehlo_extra)
        self.ehlo_remove = {keyword.upper() for keyword in ehlo_remove}
        self.refuse_rcpt_prefix = refuse_rcpt_prefix
        self.tempfail_rcpt_prefix = tempfail_rcpt_prefix
        self.refuse_sender_prefix = refuse_sender_prefix
        self.data_fail_marker = data_fail_marker
        self.users = dict(users) if users is not None else {USERNAME: PASSWORD}
        self.oauth_tokens = (
            dict(oauth_tokens) if oauth_tokens is not None else {USERNAME: OAUTH_TOKEN}
        )

        self.messages: list[ReceivedMessage] = []
        self.commands: list[str] = []
        self.ehlo_names: list[str] = []
        self.logins: list[AuthAttempt] = []
        self.connections = 0
        self.open_connections = 0
        self._lock = threading.Lock()

    # -- bookkeeping called by RecordingSMTP

    def _connection_opened(self) -> int:
        with self._lock:
            self.connections += 1
            self.open_connections += 1
            return self.connections

    def _connection_closed(self) -> None:
        with self._lock:
            self.open_connections -= 1

    def _record_auth(self, session: Any, mechanism: str, login: str | None, ok: bool) -> None:
        self.logins.append(AuthAttempt(mechanism, login, ok, getattr(session, "connection_id", 0)))

    def reset(self) -> None:
        """Forget everything recorded so far (configuration is kept)."""
        with self._lock:
            self.messages.clear()
            self.commands.clear()
            self.ehlo_names.clear()
            self.logins.clear()
            self.connections = 0

    # -- aiosmtpd hooks

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # With the 5-argument hook aiosmtpd leaves recording the name to us.
        session.host_name = hostname
        self.commands.append("EHLO")
        self.ehlo_names.append(hostname)
        first, *middle, last = responses
        keywords = [line[4:] for line in middle]
        if self.pipelining:
            keywords.append("PIPELINING")
        keywords.extend(self.ehlo_extra)
        kept = [
            keyword
            for keyword in keywords
            if keyword.split()[0].upper() not in self.ehlo_remove
            and (self.auth or not keyword.upper().startswith("AUTH"))
        ]
        return [first, *("250-" + keyword for keyword in kept), last]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        self.commands.append("MAIL")
        prefix = self.refuse_sender_prefix
        if prefix is not None and _local_part(address).startswith(prefix):
            return REFUSED_SENDER_REPLY
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        self.commands.append("RCPT")
        local = _local_part(address)
        if self.refuse_rcpt_prefix is not None and local.startswith(self.refuse_rcpt_prefix):
            return REFUSED_RECIPIENT_REPLY
        if self.tempfail_rcpt_prefix is not None and local.startswith(self.tempfail_rcpt_prefix):
            return TEMPFAILED_RECIPIENT_REPLY
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("DATA")
        content: bytes = envelope.original_content
        if self.data_fail_marker is not None and self.data_fail_marker in content:
            return DATA_FAIL_REPLY
        login = session.login_data
        self.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                original_content=content,
                content=envelope.content,
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
                smtp_utf8=bool(envelope.smtp_utf8),
                connection_id=getattr(session, "connection_id", 0),
                helo_name=session.host_name,
                tls=bool(getattr(session, "tls", False)),
                auth_login=login.decode() if isinstance(login, bytes) else login,
                peercert=getattr(session, "peercert", None),
            )
        )
        return f"250 2.0.0 OK queued as {len(self.messages)}"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 2.0.0 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        self.commands.append("NOOP")
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("QUIT")
        return "221 2.0.0 Bye"

    def handle_STARTTLS(self, server: Any, session: Any, envelope: Any) -> bool:
        # Called (synchronously) by aiosmtpd once the STARTTLS handshake has completed.
        self.commands.append("STARTTLS")
        return True

    # -- credential checks for PLAIN and LOGIN (aiosmtpd's `authenticator=` protocol)

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.commands.append("AUTH")
        if not isinstance(auth_data, LoginPassword):
            self._record_auth(session, mechanism, None, False)
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        expected = self.users.get(login)
        ok = expected is not None and hmac.compare_digest(expected, password)
        self._record_auth(session, mechanism, login, ok)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


class RecordingSMTP(_AiosmtpdSMTP):
    """aiosmtpd's SMTP with connection accounting and CRAM-MD5 / XOAUTH2 mechanisms."""

    event_handler: RecordingHandler

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_done = self._original_transport is not None
        super().connection_made(transport)
        session = self.session
        if not starttls_done:
            self._counted = True
            session.connection_id = self.event_handler._connection_opened()
            session.tls = transport.get_extra_info("ssl_object") is not None
        else:
            session.tls = True
        session.peercert = transport.get_extra_info("peercert") or None

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.event_handler._connection_closed()
        super().connection_lost(error)

    # aiosmtpd turns `auth_CRAM__MD5` into the mechanism name "CRAM-MD5". Built-in style
    # methods are called as method(self, args), hence the ignored second parameter.

    async def auth_CRAM__MD5(self, _: Any, args: list[str]) -> AuthResult:
        handler = self.event_handler
        handler.commands.append("AUTH")
        if len(args) != 1:
            await self.push("501 5.5.4 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        nonce = base64.b16encode(os.urandom(8)).decode()
        challenge = f"<{nonce}.{int(time.time())}@{self.hostname}>".encode()
        response = await self.challenge_auth(challenge)
        if response is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(response, bytes)
        login_bytes, _sep, digest = response.rpartition(b" ")
        login = login_bytes.decode("utf-8", "replace")
        password = handler.users.get(login)
        ok = password is not None and hmac.compare_digest(
            hmac.new(password.encode(), challenge, hashlib.md5).hexdigest().encode(), digest
        )
        handler._record_auth(self.session, "CRAM-MD5", login, ok)
        return AuthResult(success=ok, handled=False, auth_data=LoginPassword(login_bytes, b""))

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        # https://developers.google.com/gmail/imap/xoauth2-protocol
        handler = self.event_handler
        handler.commands.append("AUTH")
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await self.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            blob = answer
        fields = dict(
            part.split("=", 1)
            for part in blob.decode("utf-8", "replace").split("\x01")
            if "=" in part
        )
        login = fields.get("user")
        token = fields.get("auth", "")
        expected = handler.oauth_tokens.get(login or "")
        ok = expected is not None and hmac.compare_digest(f"Bearer {expected}", token)
        handler._record_auth(self.session, "XOAUTH2", login, ok)
        if ok:
            assert login is not None
            return AuthResult(success=True, auth_data=LoginPassword(login.encode(), b""))
        # On failure the server sends a base64 JSON error as a 334 challenge; the client
        # answers with an empty line and then gets the final 535.
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "smtp"})
        if await self.challenge_auth(error) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)


class _RecordingController(Controller):  # type: ignore[misc]
    def factory(self) -> RecordingSMTP:
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # We bind port 0; learn the real port before aiosmtpd's start-up probe connects.
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SMTPServer:
    """A running recording SMTP server (see :func:`start_smtpd`)."""

    host: str
    port: int
    handler: RecordingHandler
    controller: Controller
    #: "none", "starttls" or "implicit".
    tls_mode: str
    tls_context: ssl.SSLContext | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self) -> None:
        """Close every open connection, then stop the server thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        loop = self.controller.loop
        if loop.is_running():
            # Closing transports ourselves (rather than relying on task cancellation)
            # avoids "unclosed transport" ResourceWarnings, which the suite turns into errors.
            future = asyncio.run_coroutine_threadsafe(_close_smtpd_connections(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=5)
        self.controller.stop()


async def _close_smtpd_connections() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2)
    # Give connection_lost callbacks a chance to run.
    for _ in range(3):
        await asyncio.sleep(0)


def start_smtpd(
    *,
    tls_mode: str = "none",
    tls_context: ssl.SSLContext | None = None,
    require_starttls: bool = False,
    pipelining: bool = True,
    smtputf8: bool = True,
    auth: bool = False,
    auth_mechanisms: Sequence[str] = ALL_AUTH_MECHANISMS,
    auth_require_tls: bool = False,
    auth_required: bool = False,
    handler: RecordingHandler | None = None,
    **options: Any,
) -> SMTPServer:
    """Start a recording aiosmtpd server on 127.0.0.1 and a free port.

    Args:
        tls_mode: "none", "starttls" (advertise STARTTLS with ``tls_context``) or
            "implicit" (TLS from the first byte with ``tls_context``).
        tls_context: server-side SSL context; required unless ``tls_mode == "none"``.
        require_starttls: refuse commands other than EHLO/NOOP/QUIT/STARTTLS before TLS.
        pipelining: advertise PIPELINING (aiosmtpd handles pipelined commands in order).
        smtputf8: advertise SMTPUTF8 (8BITMIME is always advertised unless removed with
            ``ehlo_remove={"8BITMIME"}``).
        auth: advertise and accept AUTH with ``auth_mechanisms``; credentials are
            ``handler.users`` / ``handler.oauth_tokens`` (alice / s3cret! / tok-123).
        auth_require_tls: aiosmtpd refuses AUTH (538) before TLS when true.
        auth_required: refuse MAIL/RCPT/DATA (530) until authenticated.
        handler: a pre-built :class:`RecordingHandler`; otherwise one is made from the
            handler keywords found in ``options`` (``ehlo_extra``, ``ehlo_remove``,
            ``refuse_rcpt_prefix``, ``tempfail_rcpt_prefix``, ``refuse_sender_prefix``,
            ``data_fail_marker``, ``users``, ``oauth_tokens``).
        options: anything else goes to aiosmtpd's SMTP (e.g. ``data_size_limit``,
            ``timeout``, ``ident``, ``command_call_limit``).
    """
    handler_keys = {
        "ehlo_extra",
        "ehlo_remove",
        "refuse_rcpt_prefix",
        "tempfail_rcpt_prefix",
        "refuse_sender_prefix",
        "data_fail_marker",
        "users",
        "oauth_tokens",
    }
    handler_options = {key: options.pop(key) for key in list(options) if key in handler_keys}
    if handler is None:
        handler = RecordingHandler(pipelining=pipelining, auth=auth, **handler_options)
    elif handler_options:
        raise TypeError(f"pass {sorted(handler_options)} to the RecordingHandler instead")
    if tls_mode not in ("none", "starttls", "implicit"):
        raise ValueError(f"tls_mode must be 'none', 'starttls' or 'implicit', not {tls_mode!r}")
    if tls_mode != "none" and tls_context is None:
        raise ValueError(f"tls_mode={tls_mode!r} needs a server tls_context")

    unknown_mechanisms = set(auth_mechanisms) - set(ALL_AUTH_MECHANISMS)
    if unknown_mechanisms:
        raise ValueError(f"unsupported AUTH mechanisms: {sorted(unknown_mechanisms)}")
    smtp_kwargs: dict[str, Any] = {
        "server_hostname": SERVER_HOSTNAME,
        "enable_SMTPUTF8": smtputf8,
        "auth_require_tls": auth_require_tls,
        "auth_required": auth_required,
        "auth_exclude_mechanism": [m for m in ALL_AUTH_MECHANISMS if m not in auth_mechanisms],
        "authenticator": handler.authenticator,
    }
    if tls_mode == "starttls":
        smtp_kwargs["tls_context"] = tls_context
        smtp_kwargs["require_starttls"] = require_starttls
    elif tls_mode == "implicit":
        smtp_kwargs["ssl_context"] = tls_context
    smtp_kwargs.update(options)

    controller = _RecordingController(handler, hostname=HOST, port=0, **smtp_kwargs)
    controller.start()
    server = SMTPServer(HOST, controller.port, handler, controller, tls_mode, tls_context)
    # Forget aiosmtpd's start-up probe connection once it has gone.
    deadline = time.monotonic() + 5
    while handler.open_connections and time.monotonic() < deadline:
        time.sleep(0.005)
    handler.reset()
    return server


# --------------------------------------------------------------------------- scripted server


Step = tuple[Any, ...]
ConnectionHandler = Callable[["RecordingReader", "RecordingWriter"], Awaitable[None]]


class ScriptError(AssertionError):
    """A scripted connection received something other than what its script expected."""


@dataclass
class ScriptedConnection:
    """What one connection to a :class:`ScriptedServer` saw."""

    index: int
    #: Every byte read from the client, in order (including anything read by drain steps,
    #: the tail read after the script, and plaintext discarded at a TLS upgrade).
    raw: bytearray = field(default_factory=bytearray)
    #: Command lines read (CRLF stripped). Data blocks read by ``expect_data`` or inside a
    #: group are not in here but in ``data``.
    lines: list[bytes] = field(default_factory=list)
    #: Message data blocks, as on the wire (dot-stuffed), without the final ".\r\n".
    data: list[bytes] = field(default_factory=list)
    #: Every byte the server sent.
    sent: bytearray = field(default_factory=bytearray)
    #: Bytes the client had sent in plaintext after the command preceding a TLS upgrade
    #: (they are discarded, as RFC 3207 requires, and recorded here).
    plaintext_before_tls: bytes = b""
    tls: bool = False
    #: Set when the client closed the connection (EOF seen).
    client_closed: bool = False
    #: Why the script stopped early (EOF, connection error, TLS failure), or None.
    ended_early: str | None = None
    #: Index of the step that was running when the script stopped early.
    ended_at_step: int | None = None
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    #: True when the last reply line sent was a 354 (the client is now sending data).
    in_data: bool = False


class RecordingReader:
    """Wraps an ``asyncio.StreamReader``; every byte read is appended to ``conn.raw``.

    ``readline`` also records the line (CRLF stripped) in ``conn.lines``.
    """

    def __init__(self, reader: asyncio.StreamReader, conn: ScriptedConnection) -> None:
        self.stream = reader
        self.conn = conn

    def _got(self, data: bytes) -> bytes:
        self.conn.raw += data
        return data

    async def readline(self, *, record: bool = True) -> bytes:
        line = self._got(await self.stream.readline())
        if line and record:
            self.conn.lines.append(line.rstrip(b"\r\n"))
        if not line:
            self.conn.client_closed = True
        return line

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        try:
            return self._got(await self.stream.readuntil(separator))
        except asyncio.IncompleteReadError as exc:
            self._got(exc.partial)
            self.conn.client_closed = True
            raise

    async def readexactly(self, n: int) -> bytes:
        try:
            return self._got(await self.stream.readexactly(n))
        except asyncio.IncompleteReadError as exc:
            self._got(exc.partial)
            self.conn.client_closed = True
            raise

    async def read(self, n: int = -1) -> bytes:
        data = self._got(await self.stream.read(n))
        if not data and n != 0:
            self.conn.client_closed = True
        return data

    def at_eof(self) -> bool:
        return self.stream.at_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class RecordingWriter:
    """Wraps an ``asyncio.StreamWriter``; every byte written is appended to ``conn.sent``."""

    def __init__(
        self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, conn: ScriptedConnection
    ) -> None:
        self.stream = writer
        self.reader = reader
        self.conn = conn

    def write(self, data: bytes) -> None:
        self.conn.sent += data
        lines = data.rstrip(b"\r\n").split(b"\r\n")
        if data:
            self.conn.in_data = lines[-1].startswith(b"354")
        self.stream.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    async def send(self, data: bytes) -> None:
        """write() then drain()."""
        self.write(data)
        await self.stream.drain()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


async def upgrade_to_tls(
    writer: RecordingWriter | asyncio.StreamWriter,
    context: ssl.SSLContext,
    *,
    handshake_timeout: float = 10.0,
) -> bytes:
    """Switch a server-side stream to TLS (for STARTTLS) and return discarded plaintext.

    Anything the client sent after the command that led to the upgrade and before the
    handshake is still in the reader's buffer; it is removed (and, for a
    :class:`RecordingWriter`, recorded in ``conn.plaintext_before_tls`` and ``conn.raw``)
    so that it can never be mistaken for encrypted input. Works on Python 3.10, which
    lacks ``StreamWriter.start_tls``.
    """
    if isinstance(writer, RecordingWriter):
        raw_writer, reader, conn = writer.stream, writer.reader, writer.conn
    else:
        raw_writer, conn = writer, None
        reader = raw_writer._protocol._stream_reader  # type: ignore[attr-defined]
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    leftover = bytes(buffer)
    buffer.clear()
    if conn is not None:
        conn.raw += leftover
        conn.plaintext_before_tls += leftover
    await raw_writer.drain()
    if hasattr(raw_writer, "start_tls"):  # Python 3.11+
        await raw_writer.start_tls(context, ssl_handshake_timeout=handshake_timeout)
    else:  # pragma: no cover - Python 3.10
        loop = asyncio.get_running_loop()
        protocol = raw_writer._protocol  # type: ignore[attr-defined]
        transport = await loop.start_tls(
            raw_writer.transport,
            protocol,
            context,
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,
        )
        raw_writer._transport = transport  # type: ignore[attr-defined]
        protocol._transport = transport
        protocol._over_ssl = True
        reader._transport = transport  # type: ignore[attr-defined]
    if conn is not None:
        conn.tls = True
    return leftover


class _EndOfScript(Exception):
    """The client went away (or the server closed); stop running steps."""


class ScriptedServer:
    """A raw TCP server on 127.0.0.1 that plays a script, or a handler, per connection.

    ``script`` is either an ``async def handler(reader, writer)`` (``reader`` is a
    :class:`RecordingReader`, ``writer`` a :class:`RecordingWriter`; both delegate anything
    else to the real stream objects), or a list of steps run for every connection:

    ``("send", data)``
        write ``data`` (bytes) and drain.
    ``("expect", prefix)``
        read one line; it must start with ``prefix`` (bytes, compared case-insensitively,
        like SMTP verbs; ``received_lines`` keeps the exact bytes).
    ``("readline",)``
        read one line, whatever it is.
    ``("expect_data",)``
        read message data up to and including the ``.`` line.
    ``("send_after_group", n, reply)``
        read ``n`` items, then send ``reply``: an item is a command line, or, if the last
        reply line the server sent was a 354, a whole data block (so a group "content +
        dot, MAIL, RCPT, DATA" is 4 items). Models a server that only answers once the
        whole pipelined group has arrived.
    ``("starttls", context)``
        upgrade to TLS with the server-side ``context`` (see :func:`upgrade_to_tls`).
    ``("sleep", seconds)``
        pause (cut short if the server is stopped).
    ``("drain", seconds)``
        read and record whatever arrives for ``seconds`` or until EOF.
    ``("expect_close", timeout)``
        the client must close within ``timeout`` seconds (default 5); data is recorded.
    ``("close",)``
        close the connection (FIN) and end the script.
    ``("reset",)``
        abort the connection with a TCP RST and end the script.

    After the last step (unless it closed) the server keeps reading, recording everything,
    until the client closes. If the client closes early the script stops quietly and
    ``conn.ended_early`` says why; only a line that does not match an ``expect`` (or an
    exception in a handler) is an error, collected in ``errors`` and raised by
    :meth:`check` (the fixture calls it at teardown when ``strict``).
    """

    def __init__(
        self,
        script: ConnectionHandler | Sequence[Step],
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = HOST,
    ) -> None:
        if not callable(script):
            script = list(script)
            _validate_steps(script)
        self.script = script
        self.ssl_context = ssl_context
        self.host = host
        self.port = 0
        self.connections: list[ScriptedConnection] = []
        self.errors: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # -- what tests read

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    @property
    def received(self) -> list[bytes]:
        """Raw bytes received, one entry per connection."""
        return [bytes(conn.raw) for conn in self.connections]

    @property
    def received_lines(self) -> list[bytes]:
        """Command lines received on all connections, in order, CRLF stripped."""
        return [line for conn in self.connections for line in conn.lines]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def join(self, timeout: float = 5.0, *, connections: int | None = None) -> None:
        """Block until ``connections`` connections (default: all accepted so far, at least
        one) are finished: script over and the client gone. Raises TimeoutError otherwise.

        Blocking: in an async test whose client may still hold a connection, use
        :meth:`wait_done` instead so the test's loop keeps running.
        """
        deadline = time.monotonic() + timeout
        while not self._finished(connections):
            if time.monotonic() > deadline:
                raise TimeoutError(self._progress(connections))
            time.sleep(0.005)

    async def wait_done(self, timeout: float = 5.0, *, connections: int | None = None) -> None:
        """Await (without blocking the loop) until ``connections`` connections (default:
        all accepted so far, at least one) have finished."""
        deadline = time.monotonic() + timeout
        while not self._finished(connections):
            if time.monotonic() > deadline:
                raise TimeoutError(self._progress(connections))
            await asyncio.sleep(0.005)

    def _finished(self, wanted: int | None) -> bool:
        conns = list(self.connections)
        target = wanted if wanted is not None else max(1, len(conns))
        return len(conns) >= target and all(conn.done.is_set() for conn in conns[:target])

    def _progress(self, wanted: int | None) -> str:
        conns = list(self.connections)
        target = wanted if wanted is not None else max(1, len(conns))
        finished = sum(conn.done.is_set() for conn in conns)
        return f"{finished} of {target} scripted connections finished ({len(conns)} accepted)"

    def check(self) -> None:
        """Raise ScriptError if any connection's script failed."""
        if self.errors:
            raise ScriptError("scripted server: " + "; ".join(self.errors))

    # -- lifecycle

    def start(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._run, name="scripted-smtp", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("scripted server did not start")
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop(self) -> None:
        """Abort open connections and stop the server thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._thread = None
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._on_connect, self.host, 0, ssl=self.ssl_context)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ScriptedConnection(index=len(self.connections))
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn.tls = writer.get_extra_info("ssl_object") is not None
        rreader = RecordingReader(reader, conn)
        rwriter = RecordingWriter(writer, reader, conn)
        try:
            if callable(self.script):
                await self.script(rreader, rwriter)
            else:
                await self._play(self.script, rreader, rwriter, conn)
        except asyncio.CancelledError:
            pass  # the server is stopping
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            conn.ended_early = conn.ended_early or f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            message = f"connection {conn.index}: handler raised {type(exc).__name__}: {exc}"
            conn.errors.append(message)
            self.errors.append(message)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(writer.wait_closed(), 1)
            if not writer.transport.is_closing():  # pragma: no cover - defensive
                writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            conn.done.set()

    async def _play(
        self,
        steps: list[Step],
        reader: RecordingReader,
        writer: RecordingWriter,
        conn: ScriptedConnection,
    ) -> None:
        for number, step in enumerate(steps):
            try:
                closed = await self._step(step, reader, writer, conn)
            except _EndOfScript as end:
                conn.ended_early = str(end)
                conn.ended_at_step = number
                return
            except ScriptError as exc:
                message = f"connection {conn.index}, step {number} {step[0]!r}: {exc}"
                conn.errors.append(message)
                self.errors.append(message)
                conn.ended_at_step = number
                return
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                conn.ended_early = f"{type(exc).__name__}: {exc}"
                conn.ended_at_step = number
                return
            if closed:
                return
        # Script over: keep recording whatever the client still sends until it closes.
        while await reader.read(65536):
            pass

    async def _step(
        self, step: Step, reader: RecordingReader, writer: RecordingWriter, conn: ScriptedConnection
    ) -> bool:
        """Run one step; return True when the step closed the connection."""
        kind = step[0]
        if kind == "send":
            await writer.send(step[1])
        elif kind == "expect":
            line = await reader.readline()
            if not line:
                raise _EndOfScript(f"client closed while expecting {step[1]!r}")
            # SMTP verbs are case-insensitive (smtplib sends "ehlo"), so is the match.
            if not line.lower().startswith(step[1].lower()):
                raise ScriptError(f"expected a line starting with {step[1]!r}, got {line!r}")
        elif kind == "readline":
            if not await reader.readline():
                raise _EndOfScript("client closed while reading a line")
        elif kind == "expect_data":
            await self._read_data(reader, conn)
        elif kind == "send_after_group":
            _, count, reply = step
            for _ in range(count):
                if conn.in_data:
                    await self._read_data(reader, conn)
                elif not await reader.readline():
                    raise _EndOfScript("client closed in the middle of a group")
            await writer.send(reply)
        elif kind == "starttls":
            try:
                await upgrade_to_tls(writer, step[1])
            except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
                raise _EndOfScript(f"TLS handshake failed: {type(exc).__name__}: {exc}") from exc
        elif kind == "sleep":
            await asyncio.sleep(step[1])
        elif kind == "drain":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_read_to_eof(reader), step[1])
        elif kind == "expect_close":
            timeout = step[1] if len(step) > 1 else 5.0
            try:
                await asyncio.wait_for(_read_to_eof(reader), timeout)
            except asyncio.TimeoutError:
                raise ScriptError(f"client did not close within {timeout} s") from None
            return True
        elif kind == "close":
            writer.close()
            return True
        elif kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return True
        else:  # pragma: no cover - rejected by _validate_steps
            raise ScriptError(f"unknown step {step!r}")
        return False

    async def _read_data(self, reader: RecordingReader, conn: ScriptedConnection) -> None:
        lines: list[bytes] = []
        while True:
            line = await reader.readline(record=False)
            if not line:
                raise _EndOfScript("client closed in the middle of message data")
            if line == b".\r\n":
                break
            lines.append(line)
        conn.data.append(b"".join(lines))
        conn.in_data = False


async def _read_to_eof(reader: RecordingReader) -> None:
    while await reader.read(65536):
        pass


_STEP_ARITY = {
    "send": (2,),
    "expect": (2,),
    "readline": (1,),
    "expect_data": (1,),
    "send_after_group": (3,),
    "starttls": (2,),
    "sleep": (2,),
    "drain": (2,),
    "expect_close": (1, 2),
    "close": (1,),
    "reset": (1,),
}


def _validate_steps(steps: list[Step]) -> None:
    for step in steps:
        if not isinstance(step, tuple) or not step or step[0] not in _STEP_ARITY:
            raise ValueError(f"unknown scripted-server step {step!r}")
        if len(step) not in _STEP_ARITY[step[0]]:
            raise ValueError(f"wrong number of arguments in step {step!r}")
        if step[0] in ("send", "expect") and not isinstance(step[1], bytes):
            raise TypeError(f"step {step!r} needs bytes")


# --------------------------------------------------------------------------- TLS helpers


def server_context_for(
    cert: Any, *, ca: Any | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A server-side SSLContext using a trustme ``LeafCert``.

    With ``require_client_cert`` the server asks for (and requires) a client certificate
    issued by ``ca``.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if require_client_cert:
        assert ca is not None, "require_client_cert needs the CA that issues client certs"
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_ids = itertools.count(1)


def unique_address(prefix: str = "user", domain: str = "example.com") -> str:
    """A fresh address (``user-3@example.com``), handy in tests sending several messages."""
    return f"{prefix}-{next(_ids)}@{domain}"
