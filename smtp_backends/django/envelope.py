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

from smtp_backends.addresses import addr_spec as strict_addr_spec
from smtp_backends.mailer import addr_spec
from smtp_backends.message import serialize

__all__ = (
    "Envelope",
    "HeaderError",
    "LazyBatch",
    "check_header_names",
    "django_envelope",
    "prep_address",
    "smtputf8_refusal",
)

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


#: What Django raises for a line break in a header: BadHeaderError on 5.2,
#: ValueError (the email package's) on 6.x. BadHeaderError is a ValueError too.
HeaderError: type[ValueError] = ValueError
if _PREP_ADDRESS is None:  # Django 5.2 (6.x deprecates BadHeaderError: not imported there)
    from django.core.mail import BadHeaderError

    HeaderError = BadHeaderError

# A header name is printable ASCII without a colon (RFC 5322 section 2.2); Django
# checks header values itself, not names, and a line break in a name would
# start a header (or the body) of the caller's choosing.
_BAD_HEADER_NAME = re.compile(r"[\x00-\x20\x7f:]|[^\x00-\x7f]").search


def check_header_names(message: Any) -> None:
    """Refuse an extra header name that holds a line break, a colon or a control.

    Raises:
        ValueError (Django 6.x) / BadHeaderError (Django 5.2): what Django
            raises for a line break in a header value.
    """
    for name in getattr(message, "extra_headers", None) or {}:
        if not isinstance(name, str) or not name or _BAD_HEADER_NAME(name):
            raise HeaderError(
                "Header names may not contain line breaks, colons, spaces or control "
                f"characters (got {name!r})"
            )


def _prep_unicode(prep: Callable[..., str], address: Any) -> str:
    """``prep(address)``; an address only SMTPUTF8 can carry is kept in Unicode.

    Django 6's prep_address() refuses a non-ASCII local part (it cannot be
    written in ASCII); prep_address(force_ascii=False) is its form for
    SMTPUTF8. The client sends it with SMTPUTF8, or the backend raises
    Django's ValueError when the server does not offer it.
    """
    try:
        return prep(address)
    except ValueError as error:
        try:
            unicode = prep(address, force_ascii=False)
        except (ValueError, TypeError):
            raise error from None
        if unicode.isascii():
            raise
        return unicode


def django_envelope(
    message: Any, prep: Callable[..., str], smtputf8: bool = False
) -> Envelope | None:
    """(sender, recipients, bytes) of a Django message, as Django's SMTP backend sends it.

    The sender and recipients go through ``prep`` on Django 6.x (the
    backend's ``prep_address``: a subclass may override it; with
    ``smtputf8`` a non-ASCII local part is kept for SMTPUTF8, the message's
    headers then in UTF-8, RFC 6532, where Django refuses it), through
    sanitize_address() with the message's encoding on 5.2. None for a
    message without recipients.

    Raises:
        ValueError: an invalid address, or a header name with a line break
            (BadHeaderError on Django 5.2).
    """
    if not message.recipients():
        return None
    check_header_names(message)
    if _PREP_ADDRESS is not None:  # Django 6.x
        if smtputf8:
            sender = _prep_unicode(prep, message.from_email)
            recipients = [_prep_unicode(prep, address) for address in message.recipients()]
        else:
            sender = prep(message.from_email)
            recipients = [prep(address) for address in message.recipients()]
        utf8 = not (sender.isascii() and all(address.isascii() for address in recipients))
        policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
        # serialize() writes as_bytes()'s very bytes, without its slow header folding.
        return sender, recipients, serialize(message.message(policy=policy))
    # Django 5.2's sanitize_address() lets through what is not one mailbox
    # ("not an address", "a@x.org b@x.org"); the one parser of every adapter
    # refuses it, as Django 6 does.
    for address in [message.from_email, *message.recipients()]:
        strict_addr_spec(address)
    encoding = message.encoding or settings.DEFAULT_CHARSET
    sender = _sanitized_addr_spec(message.from_email, encoding)
    recipients = [_sanitized_addr_spec(address, encoding) for address in message.recipients()]
    return sender, recipients, serialize(message.message(), linesep="\r\n")


def smtputf8_refusal(message: Any, prep: Callable[..., str]) -> ValueError | None:
    """Django's ValueError for the address of ``message`` that needed SMTPUTF8, if any.

    What Django's stock backend raises for a non-ASCII local part; raised
    when the server did not offer SMTPUTF8.
    """
    for address in [message.from_email, *message.recipients()]:
        try:
            prep(address)
        except ValueError as exc:
            return exc
    return None


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
