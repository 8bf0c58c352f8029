"""Connections: Flask-Mail's :class:`Connection` (and its async twin) over the app's Mailer.

A connection checks and renders each message (:class:`_Prepared`), hands
it to the app's :class:`~smtp_backends.mailer.Mailer` through ``host``
(Flask-Mail kept an ``smtplib.SMTP`` there) and sends ``email_dispatched``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from smtp_backends import SMTPPool, SMTPResponse
from smtp_backends.addresses import addr_spec
from smtp_backends.mailer import Mailer, Outgoing, Result

from .dispatch import email_dispatched
from .event_signals import apply_pre_send
from .headers import (
    Address,
    BadHeaderError,
    NoRecipientsError,
    NoSenderError,
    _address_problem,
    _as_address,
    _dedupe,
    _header_problems,
    _single_address,
)
from .message import Message

if TYPE_CHECKING:
    from .extension import MailState

__all__ = ("AsyncConnection", "Connection", "Refused")

#: What a send returns: each refused recipient mapped to the server's reply
#: (empty when every recipient was accepted, or when sending is suppressed).
Refused = dict[str, SMTPResponse]


def _outgoing(
    from_addr: str,
    to_addrs: str | Sequence[str],
    msg: str | bytes,
    mail_options: Iterable[str],
    rcpt_options: Iterable[str],
) -> Outgoing:
    recipients = [to_addrs] if isinstance(to_addrs, str) else to_addrs
    return Outgoing(
        addr_spec(from_addr),
        [addr_spec(address) for address in recipients],
        msg,
        tuple(mail_options),
        tuple(rcpt_options),
    )


class _PooledHost:
    """``Connection.host``: smtplib-style ``sendmail`` over the app's Mailer.

    Flask-Mail kept an ``smtplib.SMTP`` there; code (and tests) that use
    ``connection.host.sendmail(...)`` keep working.
    """

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        #: The text of the server's reply to the last message's end of data.
        self.last_response: str | None = None

    @property
    def pool(self) -> SMTPPool:
        """The pool the messages go through (it lives on the bridge loop)."""
        return self.mailer.pool()

    def _settle(self, outcome: Result) -> Refused:
        if isinstance(outcome, BaseException):
            raise outcome
        errors, self.last_response = outcome
        return errors

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Iterable[str] = (),
        rcpt_options: Iterable[str] = (),
    ) -> Refused:
        """Send raw message data; returns the refused recipients (as smtplib)."""
        item = _outgoing(from_addr, to_addrs, msg, mail_options, rcpt_options)
        return self._settle(self.mailer.send([item])[0])

    def quit(self) -> None:
        """Nothing to do: the connection stays in the pool for the next send."""


class _AsyncPooledHost(_PooledHost):
    """``AsyncConnection.host``: awaitable ``sendmail`` over the app's Mailer."""

    async def sendmail(  # type: ignore[override]
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Iterable[str] = (),
        rcpt_options: Iterable[str] = (),
    ) -> Refused:
        """Send raw message data; returns the refused recipients."""
        item = _outgoing(from_addr, to_addrs, msg, mail_options, rcpt_options)
        return self._settle((await self.mailer.asend([item]))[0])


class _Prepared:
    """A message checked and rendered for one send."""

    __slots__ = ("data", "mail_options", "rcpt_options", "recipients", "sender")

    def __init__(self, message: Message, state: MailState, envelope_from: Address | None) -> None:
        if not message.sender and state.default_sender:
            message.sender = _as_address(state.default_sender)
        if not message.send_to:
            raise NoRecipientsError("No recipients have been added")
        if not message.sender:
            raise NoSenderError(
                "The message does not specify a sender and a default sender "
                "has not been configured (MAIL_DEFAULT_SENDER)"
            )
        problem = next(_header_problems(message), None)
        if problem is None and envelope_from is not None:
            problem = _address_problem("envelope_from", envelope_from)
        if problem is not None:
            raise BadHeaderError(problem)
        # The envelope comes from the addresses as given, by the one parser
        # of every adapter (Unicode kept: the core uses SMTPUTF8 or IDNA).
        for what, value in (("sender", message.sender), ("reply_to", message.reply_to)):
            if value:
                _single_address(what, value)
        recipients = [
            _single_address("recipient", value)
            for value in [*message.recipients, *message.cc, *message.bcc]
        ]
        sender = _single_address("sender", message.sender)
        if envelope_from is not None:
            sender = _single_address("envelope_from", envelope_from)
        if message.date is None:
            message.date = time.time()
        self.sender = sender
        self.recipients = _dedupe(recipients)
        self.data = message.as_bytes()
        self.mail_options = message.mail_options
        self.rcpt_options = message.rcpt_options


class _ConnectionBase:
    """What the sync and async connections share."""

    def __init__(self, mail: MailState) -> None:
        #: The app's mail state (Flask-Mail's name for it).
        self.mail = mail
        self.num_emails = 0

    def _dispatched(self, message: Message) -> None:
        email_dispatched.send(self.mail._signal_sender(), message=message)
        self.num_emails += 1
        if self.num_emails == self.mail.max_emails:
            # The pool itself reconnects after MAIL_MAX_EMAILS messages.
            self.num_emails = 0

    host: _PooledHost | None

    @property
    def last_response(self) -> str | None:
        """The text of the server's reply to the last message sent (None if suppressed)."""
        return self.host.last_response if isinstance(self.host, _PooledHost) else None


class Connection(_ConnectionBase):
    """Sends several messages with one app's settings (from :meth:`Mail.connect`).

    ``with mail.connect() as conn: conn.send(msg)``. Messages go over the
    app's pooled connection, one after the other: a sequence of sends reuses
    one SMTP connection, and ``MAIL_MAX_EMAILS`` makes it reconnect after so
    many messages. When sending is suppressed ``host`` is None and messages
    are only recorded (``email_dispatched`` is still sent).
    """

    def __init__(self, mail: MailState) -> None:
        super().__init__(mail)
        self.host: _PooledHost | None = None

    def __enter__(self) -> Connection:
        self.host = None if self.mail.suppress else self.configure_host()
        self.num_emails = 0
        return self

    def configure_host(self) -> _PooledHost:
        """The host object ``send`` uses: ``sendmail()`` over the app's pool.

        Flask-Mail returned a connected ``smtplib.SMTP`` here; this connects
        lazily, on the first message.

        Raises:
            ValueError / TypeError: invalid connection settings.
        """
        host: _PooledHost = self.mail._host()
        return host

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.host is not None:
            self.host.quit()

    def send(self, message: Message, envelope_from: Address | None = None) -> Refused:
        """Check and send one message.

        Args:
            message: the message.
            envelope_from: the MAIL FROM address, if not the sender.

        Returns:
            The refused recipients (empty when all were accepted).

        Raises:
            NoRecipientsError / NoSenderError: before anything is sent.
            BadHeaderError: header injection, before anything is sent.
            ValueError: an address that is not one valid address.
            smtp_backends.SMTPException: what the server or the connection did
                (these also derive from :mod:`smtplib`'s exceptions).
        """
        message = apply_pre_send(self.mail, message)  # raises CancelSend if cancelled
        prepared = _Prepared(message, self.mail, envelope_from)
        refused: Refused = {}
        if self.host is not None:
            refused = self.host.sendmail(
                prepared.sender,
                prepared.recipients,
                prepared.data,
                prepared.mail_options,
                prepared.rcpt_options,
            )
        self._dispatched(message)
        return refused

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a :class:`Message` from the arguments and send it."""
        return self.send(Message(*args, **kwargs))


class AsyncConnection(_ConnectionBase):
    """The awaitable twin of :class:`Connection` (from :meth:`Mail.aconnect`).

    ``async with mail.aconnect() as conn: await conn.send(msg)``. The sends
    run on the bridge loop, so they work from any event loop, including the
    fresh one Flask starts for each async view.
    """

    def __init__(self, mail: MailState) -> None:
        super().__init__(mail)
        self.host: _AsyncPooledHost | None = None

    async def __aenter__(self) -> AsyncConnection:
        self.host = None if self.mail.suppress else self.mail._host(asynchronous=True)
        self.num_emails = 0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def send(self, message: Message, envelope_from: Address | None = None) -> Refused:
        """Check and send one message; as :meth:`Connection.send`."""
        message = apply_pre_send(self.mail, message)  # raises CancelSend if cancelled
        prepared = _Prepared(message, self.mail, envelope_from)
        refused: Refused = {}
        if self.host is not None:
            refused = await self.host.sendmail(
                prepared.sender,
                prepared.recipients,
                prepared.data,
                prepared.mail_options,
                prepared.rcpt_options,
            )
        self._dispatched(message)
        return refused

    async def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a :class:`Message` from the arguments and send it."""
        return await self.send(Message(*args, **kwargs))
