"""smtp_backends: fast, strict SMTP sending for asyncio, Django and Flask.

The client follows aiosmtplib's public API (:class:`SMTP`, :func:`send`,
:class:`SMTPResponse` and the exceptions) and adds ESMTP PIPELINING,
batches (:meth:`SMTP.send_messages`) and strict security defaults.
"""

from __future__ import annotations

from .client import SMTP, BatchItem, send
from .config import ConnectionConfig, SMTPTokenGenerator
from .errors import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPGreetingLostError,
    SMTPHeloError,
    SMTPInsecureAuthError,
    SMTPNotSupported,
    SMTPPoolClosedError,
    SMTPPoolTimeoutError,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)
from .pool import SMTPPool
from .protocol.replies import SMTPResponse, SMTPStatus

__version__ = "0.1.0"

__all__ = (
    "SMTP",
    "BatchItem",
    "ConnectionConfig",
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
    "SMTPPool",
    "SMTPPoolClosedError",
    "SMTPPoolTimeoutError",
    "SMTPProtocolError",
    "SMTPReadTimeoutError",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPResponse",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPStatus",
    "SMTPTLSError",
    "SMTPTimeoutError",
    "SMTPTokenGenerator",
    "SMTPUnknownOutcomeError",
    "SMTPUnknownOutcomeTimeoutError",
    "send",
)
