"""Django messages -> (sender, recipients, bytes), exactly as Django's SMTP backend sends them."""

from __future__ import annotations

import contextvars
import email.policy
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend as _StockSMTPBackend
from django.core.mail.message import sanitize_address

from smtp_backends.mailer import addr_spec
from smtp_backends.message import serialize

__all__ = ("Envelope", "LazyBatch", "django_envelope", "prep_address")

# Django 6.0 moved envelope preparation to EmailBackend.prep_address() and
# serialises with the SMTP policy; 5.2 uses sanitize_address() and CRLF.
_PREP_ADDRESS: Callable[..., str] | None = getattr(_StockSMTPBackend, "prep_address", None)

Envelope = tuple[str, list[str], bytes]

# A bare dot-atom address (RFC 5322 3.4.1) with an LDH domain: Django's address
# parsing (sanitize_address(), prep_address()) returns it unchanged, so the
# common case skips the parser (checked against Django in the tests).
_DOT_ATOM_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
).fullmatch


def _plain_address(address: Any) -> bool:
    """Whether ``address`` is a bare ASCII dot-atom address Django leaves as it is."""
    return type(address) is str and _DOT_ATOM_ADDRESS(address) is not None


def _sanitized_addr_spec(address: Any, encoding: str) -> str:
    """Django 5.2's envelope form: sanitize_address(), then the addr-spec."""
    if _plain_address(address):
        return str(address)
    return addr_spec(sanitize_address(address, encoding))


def prep_address(backend: Any, address: Any, force_ascii: bool = True) -> str:
    """The envelope form of ``address`` (see ``AsyncSMTPBackend.prep_address``)."""
    if _plain_address(address):
        return str(address)  # what Django's parser returns for it, in a fraction of the time
    if _PREP_ADDRESS is not None:
        return _PREP_ADDRESS(backend, address, force_ascii=force_ascii)
    if not force_ascii:
        raise TypeError("prep_address(force_ascii=False) needs Django 6.0 or later")
    return addr_spec(sanitize_address(address, settings.DEFAULT_CHARSET))


def django_envelope(message: Any, prep: Callable[[Any], str]) -> Envelope | None:
    """(sender, recipients, bytes) of a Django message, as Django's SMTP backend sends it.

    The sender and recipients go through ``prep`` on Django 6.x (the
    backend's ``prep_address``: a subclass may override it), through
    sanitize_address() with the message's encoding on 5.2. None for a
    message without recipients.

    Raises:
        ValueError: an invalid address.
    """
    if not message.recipients():
        return None
    if _PREP_ADDRESS is not None:  # Django 6.x
        sender = prep(message.from_email)
        recipients = [prep(address) for address in message.recipients()]
        # serialize() writes as_bytes()'s very bytes, without its slow header folding.
        return sender, recipients, serialize(message.message(policy=email.policy.SMTP))
    encoding = message.encoding or settings.DEFAULT_CHARSET
    sender = _sanitized_addr_spec(message.from_email, encoding)
    recipients = [_sanitized_addr_spec(address, encoding) for address in message.recipients()]
    return sender, recipients, serialize(message.message(), linesep="\r\n")


class _NotSent(ValueError):
    """A message after one that could not be prepared: not sent, as in the stock backend."""


class LazyBatch:
    """Django messages rendered one at a time, as the client reaches them.

    Rendering (``message.message()`` and the bytes) costs more than sending
    over a pipelined connection; done lazily on the bridge it overlaps the
    replies of the messages before it. Each item renders once (a pool may
    retry a message on another connection) in a copy of the caller's context.
    """

    def __init__(self, render: Callable[[Any], Envelope | None]) -> None:
        self.render = render
        self.context = contextvars.copy_context()
        self.failed = False

    def item(self, message: Any) -> Callable[[], Envelope]:
        """A zero-argument callable rendering ``message`` (a lazy batch item)."""
        rendered: list[Envelope] = []

        def render() -> Envelope:
            if rendered:
                return rendered[0]
            if self.failed:
                raise _NotSent("Not sent: an earlier message in the list could not be prepared")
            try:
                envelope = self.context.run(self.render, message)
            except Exception:
                self.failed = True
                raise
            assert envelope is not None  # messages without recipients were left out
            rendered.append(envelope)
            return envelope

        return render
