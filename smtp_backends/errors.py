"""Exceptions raised by smtp_backends.

Every exception derives from :class:`SMTPException`. The names and the
constructor signatures follow aiosmtplib's, so code written for aiosmtplib
keeps working; each class also derives from its :mod:`smtplib` counterpart
(and transport errors from :class:`ConnectionError` / :class:`TimeoutError`,
which is also :class:`asyncio.TimeoutError` on every supported Python),
so ``except smtplib.SMTPException`` keeps catching everything we raise.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import sys

__all__ = (
    "SMTPAuthenticationError",
    "SMTPCertificateError",
    "SMTPConnectError",
    "SMTPConnectResponseError",
    "SMTPConnectTimeoutError",
    "SMTPDataError",
    "SMTPException",
    "SMTPGreetingLostError",
    "SMTPHeloError",
    "SMTPInsecureAuthError",
    "SMTPNotSupported",
    "SMTPPoolClosedError",
    "SMTPPoolTimeoutError",
    "SMTPProtocolError",
    "SMTPReadTimeoutError",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTLSError",
    "SMTPTimeoutError",
    "SMTPUnknownOutcomeError",
    "SMTPUnknownOutcomeTimeoutError",
)


class SMTPException(smtplib.SMTPException):
    """Base class of every error raised by smtp_backends.

    Args:
        message: a human readable description (never contains credentials).
    """

    # smtplib.SMTPException derives from OSError, whose str() would format a
    # two-item args tuple as "[Errno ...]"; keep plain exception formatting.
    __str__ = BaseException.__str__

    def __init__(self, message: str, /) -> None:
        self.message = message
        _set_args(self, message)


def _set_args(exc: BaseException, *args: object) -> None:
    # smtplib's stubs narrow ``args`` per class; ours follow aiosmtplib's shapes.
    exc.args = args


class SMTPServerDisconnected(SMTPException, smtplib.SMTPServerDisconnected, ConnectionError):
    """The connection was lost, or a command needed a connection that is not open."""


class SMTPUnknownOutcomeError(SMTPServerDisconnected):
    """The connection ended after the end-of-data dot and before the server's reply.

    The server may or may not have accepted the message. smtp_backends never
    resends such a message by itself: resending could deliver it twice.
    """


if sys.version_info >= (3, 11):

    class SMTPTimeoutError(SMTPException, TimeoutError):
        """A network operation took longer than its timeout; the connection is closed."""

else:
    # Before 3.11 asyncio.TimeoutError is a class of its own, not the builtin
    # TimeoutError; aiosmtplib's timeouts are asyncio's, so ours are both, and
    # ``except asyncio.TimeoutError`` catches them on every supported Python.
    class SMTPTimeoutError(SMTPException, TimeoutError, asyncio.TimeoutError):
        """A network operation took longer than its timeout; the connection is closed."""


class SMTPReadTimeoutError(SMTPTimeoutError):
    """The server did not reply within the timeout."""


class SMTPUnknownOutcomeTimeoutError(SMTPUnknownOutcomeError, SMTPReadTimeoutError):
    """The reply to the end-of-data dot did not arrive within the timeout.

    Both an :class:`SMTPUnknownOutcomeError` (never resend automatically) and an
    :class:`SMTPReadTimeoutError`.
    """


class SMTPPoolTimeoutError(SMTPTimeoutError):
    """No pooled connection became free within the pool's acquire timeout."""


class SMTPPoolClosedError(SMTPException):
    """The pool is closed (or closing) and takes no more work."""


class SMTPNotSupported(SMTPException, smtplib.SMTPNotSupportedError):
    """A command or option is not supported by the server (or by this client)."""


class SMTPInsecureAuthError(SMTPException):
    """AUTH was refused locally: the connection is neither encrypted nor local.

    Raised before anything is written. Connect with TLS (``use_tls=True`` or
    STARTTLS) or pass ``allow_insecure_auth=True`` to send credentials anyway.
    """


class SMTPResponseException(SMTPException, smtplib.SMTPResponseException):
    """The server replied with an error code.

    Args:
        code: the reply code (``-1`` where there was no usable reply).
        message: the reply text.

    ``smtp_code`` and ``smtp_error`` mirror :mod:`smtplib`'s attributes.
    """

    def __init__(self, code: int, message: str, /) -> None:
        self.code = code
        self.message = message
        self.smtp_code = code
        self.smtp_error = message.encode("utf-8", "replace")
        _set_args(self, code, message)


class SMTPProtocolError(SMTPResponseException):
    """The server's reply broke the protocol (malformed, oversized, unexpected).

    The connection is closed: its state is in doubt. ``code`` is ``-1``.
    """

    def __init__(self, message: str, /) -> None:
        super().__init__(-1, message)
        _set_args(self, message)


class SMTPConnectError(SMTPException, smtplib.SMTPConnectError, ConnectionError):
    """Connecting to the server failed (``smtp_code`` is -1: there was no reply)."""

    def __init__(self, message: str, /) -> None:
        super().__init__(message)
        self.smtp_code = -1
        self.smtp_error = message.encode("utf-8", "replace")


class SMTPTLSError(SMTPConnectError, ssl.SSLError):
    """The TLS handshake failed (implicit TLS or STARTTLS).

    Also an :class:`ssl.SSLError`, as the standard library would raise.
    """


class SMTPCertificateError(SMTPTLSError, ssl.SSLCertVerificationError):
    """The server's certificate or host name did not verify."""


class SMTPConnectTimeoutError(SMTPTimeoutError, SMTPConnectError):
    """Connecting, the TLS handshake or the greeting took longer than the timeout."""


class SMTPConnectResponseError(SMTPResponseException, SMTPConnectError):
    """The server's greeting was not 220 (or was malformed)."""


class SMTPGreetingLostError(SMTPConnectError, SMTPServerDisconnected):
    """The server closed the connection before its greeting.

    A failed connect, as aiosmtplib reports it (:class:`SMTPConnectError`),
    and a lost connection, as smtplib reports it (:class:`SMTPServerDisconnected`).
    """


class SMTPHeloError(SMTPResponseException, smtplib.SMTPHeloError):
    """The server refused EHLO and HELO."""


class SMTPDataError(SMTPResponseException, smtplib.SMTPDataError):
    """The server refused the DATA command or the message content."""


class SMTPAuthenticationError(SMTPResponseException, smtplib.SMTPAuthenticationError):
    """The server refused the AUTH exchange (wrong credentials, too many rounds...)."""


class SMTPSenderRefused(SMTPResponseException, smtplib.SMTPSenderRefused):
    """The server refused the envelope sender (the MAIL command).

    Args:
        code: the reply code.
        message: the reply text.
        sender: the refused address.
    """

    def __init__(self, code: int, message: str, sender: str, /) -> None:
        super().__init__(code, message)
        self.sender = sender
        _set_args(self, code, message, sender)


class SMTPRecipientRefused(SMTPResponseException):
    """The server refused one recipient (one RCPT command).

    Args:
        code: the reply code.
        message: the reply text.
        recipient: the refused address.
    """

    def __init__(self, code: int, message: str, recipient: str, /) -> None:
        super().__init__(code, message)
        self.recipient = recipient
        _set_args(self, code, message, recipient)


class SMTPRecipientsRefused(SMTPException, smtplib.SMTPRecipientsRefused):
    """The server refused every recipient of a message.

    Args:
        recipients: one :class:`SMTPRecipientRefused` per refused recipient.
    """

    def __init__(self, recipients: list[SMTPRecipientRefused], /) -> None:
        self.recipients = recipients  # type: ignore[assignment]
        self.message = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in recipients)
        _set_args(self, recipients)
