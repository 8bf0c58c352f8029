"""Flask integration: Flask-Mail's API on the smtp_backends core.

Switching from Flask-Mail is a change of import::

    from smtp_backends.flask import Mail, Message

    mail = Mail()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_prefixed_env()
        mail.init_app(app)
        return app

Everything Flask-Mail offers keeps its name and behaviour: :class:`Mail`
(``init_app``, ``send``, ``send_message``, ``connect``, ``record_messages``,
``state``), the per-application state at ``app.extensions["mail"]``,
:class:`Message`, :class:`Attachment`, :class:`Connection`,
:class:`BadHeaderError`, :data:`email_dispatched`, :func:`sanitize_address`,
the ``MAIL_*`` configuration keys, and the rendered MIME structure.

What changes underneath, and what is added:

* Connections come from an :class:`~smtp_backends.SMTPPool` that lives on the
  process's bridge loop (:mod:`smtp_backends.bridge`): sequential requests
  reuse one connection instead of opening one per message, every network
  operation has a timeout (``MAIL_TIMEOUT``, 60 s), certificates are
  verified, and pools are closed at process exit (or with
  :meth:`MailState.close`).
* Async views get awaitable twins (``asend``, ``asend_message``,
  ``aconnect``); the sync ones also work inside async views, because no
  pooled connection ever belongs to the view's short-lived event loop.
* Header injection through any header, address or ESMTP option raises
  :class:`BadHeaderError` before anything is sent; a missing sender or
  recipient raises :class:`NoSenderError` / :class:`NoRecipientsError`
  (both still :class:`AssertionError`, as Flask-Mail's asserts were).
* Inline images (``Content-ID`` parts in ``multipart/related``) with
  :meth:`Message.attach_inline`, and Jinja templates rendered into the body
  and HTML with :meth:`Message.render_template`.
* A ``flask mail send-test ADDRESS`` command.
* Queued sending on Celery: after ``mail.init_celery(celery_app)``,
  ``mail.send(msg, queue=True)`` (or every send, with ``MAIL_QUEUE = True``)
  hands the message to a Celery worker instead of sending it in the request
  (see :meth:`Mail.init_celery` and :mod:`smtp_backends.celery`).

Only this module (and the other adapters) imports Flask; it uses nothing
but the public API of :mod:`smtp_backends`, :mod:`smtp_backends.bridge` and
(for queued sending) :mod:`smtp_backends.celery`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import re
import socket
import ssl
import threading
import time
import unicodedata
import warnings
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from email import policy as email_policy
from email.charset import SHORTEST, Charset
from email.encoders import encode_base64
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, getaddresses, make_msgid, parseaddr
from mimetypes import guess_type
from types import TracebackType
from typing import Any, TypeVar, Union

import blinker
import click
from flask import Flask, current_app, has_app_context, render_template
from flask.cli import AppGroup

from smtp_backends import ConnectionConfig, SMTPException, SMTPPool, SMTPResponse
from smtp_backends.bridge import get_bridge, run_async, run_sync, shared_pool

__all__ = (
    "AsyncConnection",
    "Attachment",
    "BadHeaderError",
    "Connection",
    "FlaskMailUnicodeDecodeError",
    "Header",
    "IncompleteMessageError",
    "Mail",
    "MailState",
    "Message",
    "NoRecipientsError",
    "NoSenderError",
    "email_dispatched",
    "force_text",
    "sanitize_address",
    "sanitize_addresses",
    "sanitize_subject",
    "signals",
)

#: An address as Flask-Mail takes it: ``"a@example.com"``, ``"Name <a@example.com>"``
#: or ``("Name", "a@example.com")``.
Address = Union[str, tuple[str, str]]  # noqa: UP007 - a runtime alias on Python 3.10

#: What a send returns: each refused recipient mapped to the server's reply
#: (empty when every recipient was accepted, or when sending is suppressed).
Refused = dict[str, SMTPResponse]

T = TypeVar("T")

# ----------------------------------------------------------------------------- errors


class BadHeaderError(ValueError):
    """A header, address or option would inject a header or an SMTP command.

    Raised by every send before anything is written to the network. Flask-Mail
    derived it from :class:`Exception`; it is also a :class:`ValueError` here.
    """


class IncompleteMessageError(AssertionError, ValueError):
    """The message cannot be sent as it is (no sender, or no recipients).

    Flask-Mail signalled these with ``assert``; deriving from
    :class:`AssertionError` keeps ``except AssertionError`` working, and the
    check runs even under ``python -O``.
    """


class NoSenderError(IncompleteMessageError):
    """The message has no sender and ``MAIL_DEFAULT_SENDER`` is not set."""


class NoRecipientsError(IncompleteMessageError):
    """The message has no recipient (``recipients``, ``cc`` and ``bcc`` are empty)."""


# ----------------------------------------------------------------------------- text helpers


class FlaskMailUnicodeDecodeError(UnicodeDecodeError):
    """A UnicodeDecodeError that names the object that failed to decode (Flask-Mail's name)."""

    def __init__(self, obj: object, *args: Any) -> None:
        self.obj = obj
        super().__init__(*args)

    def __str__(self) -> str:
        return f"{super().__str__()}. You passed in {self.obj!r} ({type(self.obj)})"


def force_text(value: Any, encoding: str = "utf-8", errors: str = "strict") -> str:
    """``value`` as a str: lazy strings (Flask-Babel, speaklater) are resolved.

    Raises:
        UnicodeDecodeError: bytes that do not decode with ``encoding``.
    """
    if isinstance(value, str):
        return value
    try:
        return str(value, encoding, errors) if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as exc:
        raise FlaskMailUnicodeDecodeError(value, *exc.args) from exc


def _charset(name: str) -> Charset:
    """The :class:`~email.charset.Charset` used to render text in charset ``name``.

    UTF-8 text parts are sent 8-bit (unencoded) and UTF-8 headers use the
    shorter of Q and B encoding, as Flask-Mail renders them. Flask-Mail got
    that by changing the process-wide registry (``email.charset.add_charset``);
    a private Charset object gives the same bytes without touching it.
    """
    charset = Charset(name)
    if charset.input_charset == "utf-8":
        charset.header_encoding = SHORTEST
        charset.body_encoding = None  # type: ignore[assignment]
        charset.output_charset = "utf-8"
    return charset


def sanitize_subject(subject: str, encoding: str = "utf-8") -> str:
    """The Subject value: unchanged when ASCII, else RFC 2047 encoded words."""
    if subject.isascii():
        return subject
    try:
        return Header(subject, encoding).encode()
    except UnicodeEncodeError:
        return Header(subject, "utf-8").encode()


def sanitize_address(addr: Address, encoding: str = "utf-8") -> str:
    """One address ready for a header: display name encoded, IDN domain in punycode.

    Args:
        addr: ``"a@example.com"``, ``"Name <a@example.com>"`` or ``("Name", "a@example.com")``.
        encoding: charset for a non-ASCII display name (falls back to UTF-8).

    Raises:
        UnicodeError: a domain that is not a valid internationalised name.
    """
    if isinstance(addr, str):
        name, address = parseaddr(force_text(addr))
    else:
        name, address = addr
    try:
        name = Header(name, encoding).encode()
    except UnicodeEncodeError:
        name = Header(name, "utf-8").encode()
    if not address.isascii():
        if "@" in address:
            local, domain = address.split("@", 1)
            address = f"{Header(local, encoding)}@{domain.encode('idna').decode('ascii')}"
        else:
            address = Header(address, encoding).encode()
    return formataddr((name, address))


def sanitize_addresses(addresses: Iterable[Address], encoding: str = "utf-8") -> list[str]:
    """:func:`sanitize_address` applied to each address."""
    return [sanitize_address(address, encoding) for address in addresses]


def _format_pair(name: str, address: str) -> str:
    """``("Name", "a@b")`` as ``Name <a@b>``, quoting the name only when it must be.

    Flask-Mail joined the parts as they were, so a name with a comma became
    two addresses; names without special characters come out the same.
    """
    if not name:
        return address
    if re.search(r'[][\\()<>@,:;".]', name):
        name = '"{}"'.format(name.replace("\\", "\\\\").replace('"', '\\"'))
    return f"{name} <{address}>"


def _as_address(value: Address | Sequence[str] | None) -> str | None:
    """A sender value as a str (tuples and two-item lists are joined)."""
    if value is None or isinstance(value, str):
        return value
    if len(value) != 2:
        raise ValueError(f"An address tuple must be (name, address), not {value!r}")
    return _format_pair(value[0], value[1])


def _address_list(value: Address | Iterable[Address] | None) -> list[Address]:
    """A recipients argument as a list (a single str is one address, not characters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _address_header(name: str, addresses: Sequence[str], limit: int = 78) -> str:
    """Join sanitised addresses for header ``name``, folded between addresses.

    The email package re-folds a header line longer than ``limit`` by parsing
    it and writing it again, and in doing so it decodes an encoded display
    name such as ``=?utf-8?q?Lee=2C_Ann?=`` and writes ``Lee, Ann <...>``: one
    address becomes two (Flask-Mail's long To and Cc lines suffer from it).
    Folding here, at the spaces between addresses and before ``<address>``,
    leaves no line for it to re-fold. Headers that fit on one line come out
    exactly as ``", ".join(addresses)``.
    """
    parts: list[str] = []
    for index, address in enumerate(addresses):
        comma = "," if index < len(addresses) - 1 else ""
        display, bracket, rest = address.rpartition(" <")
        if bracket and display and "\n" not in rest:
            parts += [display, f"<{rest}{comma}"]
        else:
            parts.append(address + comma)
    text = ""
    for part in parts:
        last_line = text.rsplit("\n", 1)[-1] if "\n" in text else f"{name}: {text}"
        if text and len(last_line) + 1 + len(part.split("\n", 1)[0]) > limit:
            text += "\n " + part
        else:
            text += (" " if text else "") + part
    return text


def _dedupe(values: Iterable[str]) -> list[str]:
    """Values in their first order, without repeats (Flask-Mail used a set)."""
    return list(dict.fromkeys(values))


@functools.lru_cache(maxsize=1)
def _msgid_domain() -> str:
    # make_msgid() looks the FQDN up on every call, which can take seconds on
    # hosts with slow DNS; once per process is enough.
    return socket.getfqdn()


# ----------------------------------------------------------------------------- header checks

# C0 controls except TAB, and DEL: never allowed in a header value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 5322 2.2: a field name is printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# RFC 2045 token (MIME type names, disposition types, charset names).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A Content-ID (msg-id without its angle brackets).
_CONTENT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")
# An ESMTP parameter may hold neither spaces nor controls.
_BAD_IN_OPTION = re.compile(r"[\x00-\x20\x7f]")


def _folded_ok(value: str) -> bool:
    """Whether a header value is safe: no controls, CRLF only as folding (RFC 5322 2.2.3).

    Each line after a CRLF must start with a space or tab and hold more than
    whitespace; a bare CR or LF is never allowed (Flask-Mail's rule for the
    subject, applied here to every free-text header).
    """
    if "\r" not in value and "\n" not in value:
        return not _CONTROL.search(value)
    for number, line in enumerate(value.split("\r\n")):
        if not line.strip() or (number and line[0] not in " \t") or _CONTROL.search(line):
            return False
    return True


def _address_problem(what: str, value: Any) -> str | None:
    """Why an address value would inject a header, or None."""
    parts = value if isinstance(value, (tuple, list)) else (value,)
    for part in parts:
        text = force_text(part)
        if _CONTROL.search(text):
            return f"{what} contains a line break or control character: {text!r}"
    return None


def _header_problems(message: Message) -> Iterator[str]:
    """Every reason ``message`` would inject a header or a command."""
    if message.subject and not _folded_ok(force_text(message.subject)):
        yield f"Subject contains a line break or control character: {message.subject!r}"
    singles: list[tuple[str, Any]] = [("Sender", message.sender), ("Reply-To", message.reply_to)]
    for what, value in singles:
        if value:
            problem = _address_problem(what, value)
            if problem:
                yield problem
    for what, values in (("To", message.recipients), ("Cc", message.cc), ("Bcc", message.bcc)):
        for value in values:
            problem = _address_problem(what, value)
            if problem:
                yield problem
    if message.charset is not None and not _TOKEN.fullmatch(message.charset):
        yield f"Invalid charset: {message.charset!r}"
    if not _folded_ok(force_text(message.msgId)):
        yield f"Message-ID contains a line break or control character: {message.msgId!r}"
    for subtype in message.alts:
        if not _TOKEN.fullmatch(subtype):
            yield f"Invalid alternative MIME subtype: {subtype!r}"
    for name, value in (message.extra_headers or {}).items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            yield f"Invalid header name: {name!r}"
        elif not _folded_ok(force_text(value)):
            yield f"Header {name} contains a line break or control character: {value!r}"
    for attachment in message.attachments:
        yield from _attachment_problems(attachment)
    for what, options in (
        ("mail_options", message.mail_options),
        ("rcpt_options", message.rcpt_options),
    ):
        for option in options:
            if not isinstance(option, str) or _BAD_IN_OPTION.search(option):
                yield f"ESMTP parameter in {what} contains a space or control: {option!r}"


def _attachment_problems(attachment: Attachment) -> Iterator[str]:
    if attachment.filename is not None and _CONTROL.search(attachment.filename):
        yield f"Attachment filename contains a control character: {attachment.filename!r}"
    maintype, _, subtype = attachment.content_type.partition("/")
    if not _TOKEN.fullmatch(maintype) or not subtype or _CONTROL.search(subtype):
        yield f"Invalid attachment content type: {attachment.content_type!r}"
    if not _TOKEN.fullmatch(attachment.disposition):
        yield f"Invalid attachment disposition: {attachment.disposition!r}"
    if attachment.content_id is not None and not _CONTENT_ID.fullmatch(attachment.content_id):
        yield f"Invalid Content-ID: {attachment.content_id!r}"
    for name, value in attachment.headers.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            yield f"Invalid attachment header name: {name!r}"
        elif not _folded_ok(force_text(value)):
            yield f"Attachment header {name} contains a line break or control: {value!r}"


def _single_address(what: str, value: Address) -> None:
    """Refuse a str that holds several addresses or none.

    Flask-Mail's parser kept the first address of ``"a@x, b@y"`` and dropped
    the rest without a word; here that is an error.

    Raises:
        ValueError: not exactly one address.
    """
    if not isinstance(value, str):
        if len(value) != 2 or not value[1]:
            raise ValueError(f"{what}: an address tuple must be (name, address), not {value!r}")
        return
    found = [pair for pair in getaddresses([force_text(value)]) if pair != ("", "")]
    if len(found) != 1 or not found[0][1]:
        raise ValueError(
            f"{what}: {value!r} is not one address ({len(found)} found); "
            "give each address as its own list item"
        )


# ----------------------------------------------------------------------------- messages


class Attachment:
    """A file attached to a :class:`Message` (Flask-Mail's class, plus inline parts).

    Args:
        filename: the file name shown to the recipient (may be None).
        content_type: the MIME type; guessed from ``filename`` when None, else
            ``text/plain`` for str data and ``application/octet-stream`` for bytes.
        data: the content (required). A str is sent UTF-8 encoded.
        disposition: ``attachment`` (default) or ``inline``.
        headers: more headers for this part.
        content_id: makes the part an inline part of a ``multipart/related``
            body that HTML can show with ``<img src="cid:CONTENT_ID">``
            (angle brackets optional; the disposition defaults to ``inline``).

    Raises:
        ValueError: ``data`` is None.
    """

    def __init__(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: dict[str, str] | None = None,
        content_id: str | None = None,
    ) -> None:
        if data is None:
            raise ValueError("The 'data' argument is required.")
        self.data: str | bytes = data
        if content_type is None and filename is not None:
            content_type = guess_type(filename)[0]
        if content_type is None:
            content_type = "text/plain" if isinstance(data, str) else "application/octet-stream"
        self.filename = filename
        self.content_type: str = content_type
        if content_id is not None:
            content_id = content_id.strip().removeprefix("<").removesuffix(">")
        self.content_id = content_id
        self.disposition: str = disposition or ("inline" if content_id else "attachment")
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"<Attachment {self.filename!r} {self.content_type} {self.disposition}>"


class Message:
    """An email message, with Flask-Mail's parameters and attributes.

    Args:
        subject: the Subject.
        recipients: To addresses (each a str or a ``(name, address)`` tuple).
        body: the plain text body.
        html: the HTML alternative.
        alts: more alternatives, ``{subtype: text}`` (``html`` is one of them).
        sender: the From address; ``MAIL_DEFAULT_SENDER`` by default.
        cc: Cc addresses.
        bcc: Bcc addresses (envelope only, never in the headers).
        attachments: :class:`Attachment` objects.
        reply_to: the Reply-To address.
        date: the Date, as a timestamp (the time of sending by default).
        charset: the charset of the text parts and encoded headers (UTF-8).
        extra_headers: more headers, ``{name: value}``.
        mail_options: ESMTP parameters for MAIL FROM.
        rcpt_options: ESMTP parameters for every RCPT TO.

    Inside an application context the default sender is read when the
    message is built, as Flask-Mail does; outside one it is read when the
    message is sent.
    """

    def __init__(
        self,
        subject: str = "",
        recipients: Iterable[Address] | None = None,
        body: str | None = None,
        html: str | None = None,
        alts: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        sender: Address | None = None,
        cc: Iterable[Address] | None = None,
        bcc: Iterable[Address] | None = None,
        attachments: Iterable[Attachment] | None = None,
        reply_to: Address | None = None,
        date: float | None = None,
        charset: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
    ) -> None:
        if not sender:
            state = _current_state()
            sender = state.default_sender if state is not None else None
        self.recipients: list[Address] = _address_list(recipients)
        self.subject = subject
        self.sender: str | None = _as_address(sender) or None
        self.reply_to: Address | None = reply_to
        self.cc: list[Address] = _address_list(cc)
        self.bcc: list[Address] = _address_list(bcc)
        self.body = body
        self.alts: dict[str, str] = dict(alts or {})
        if html is not None:
            self.html = html
        self.date = date
        self.msgId: str = make_msgid(domain=_msgid_domain())
        self.charset = charset
        self.extra_headers: dict[str, str] | None = (
            dict(extra_headers) if extra_headers is not None else None
        )
        self.mail_options: list[str] = list(mail_options or [])
        self.rcpt_options: list[str] = list(rcpt_options or [])
        self.attachments: list[Attachment] = list(attachments or [])

    def __repr__(self) -> str:
        return f"<Message {self.subject!r} from {self.sender!r} to {len(self.send_to)}>"

    @property
    def html(self) -> str | None:
        """The HTML alternative (``alts["html"]``)."""
        return self.alts.get("html")

    @html.setter
    def html(self, value: str | None) -> None:
        if value is None:
            self.alts.pop("html", None)
        else:
            self.alts["html"] = value

    @property
    def send_to(self) -> set[Address]:
        """Every recipient: To, Cc and Bcc (a set, as Flask-Mail's)."""
        return {*self.recipients, *self.cc, *self.bcc}

    def add_recipient(self, recipient: Address) -> None:
        """Add one To address."""
        self.recipients.append(recipient)

    def attach(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: dict[str, str] | None = None,
        content_id: str | None = None,
    ) -> Attachment:
        """Attach a file; takes :class:`Attachment`'s arguments and returns it.

        Raises:
            ValueError: ``data`` is None.
        """
        attachment = Attachment(filename, content_type, data, disposition, headers, content_id)
        self.attachments.append(attachment)
        return attachment

    def attach_inline(
        self,
        filename: str | None,
        content_type: str | None,
        data: bytes,
        content_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Embed an image (or other part) for the HTML to show; returns its Content-ID.

        Use the result in the HTML as ``<img src="cid:{content_id}">``. The
        body becomes ``multipart/related`` holding the text/HTML alternatives
        and the inline parts (RFC 2387).

        Args:
            content_id: the id to use (a unique one is made when None).
        """
        if content_id is None:
            content_id = make_msgid("img", domain=_msgid_domain())
        attachment = self.attach(filename, content_type, data, "inline", headers, content_id)
        assert attachment.content_id is not None
        return attachment.content_id

    def render_template(
        self,
        html_template: str | Sequence[str] | None = None,
        text_template: str | Sequence[str] | None = None,
        **context: Any,
    ) -> Message:
        """Render Jinja templates of the current app into ``html`` and ``body``.

        Needs an application context (templates come from the app's loader).
        Returns the message, so calls chain::

            mail.send(Message("Welcome", recipients=[user.email]).render_template(
                "mail/welcome.html", "mail/welcome.txt", user=user))

        Args:
            html_template: template name (or list of names to try) for the HTML.
            text_template: template name (or names) for the plain text body.
            context: the template variables.
        """
        if html_template is not None:
            self.html = _render(html_template, context)
        if text_template is not None:
            self.body = _render(text_template, context)
        return self

    # Rendering -------------------------------------------------------------

    def _mimetext(self, text: Any, subtype: str = "plain") -> MIMEText:
        """A text part in the message's charset (UTF-8 by default)."""
        value = None if text is None else force_text(text)
        name = self.charset or "utf-8"
        charset = _charset(name)
        # MIMEText takes None (an empty part, as Flask-Mail renders a missing
        # body) and a Charset object, though its annotations say str. Other
        # charsets go by name, the way Flask-Mail passes them (the header
        # order depends on it).
        chosen: Any = charset if charset.input_charset == "utf-8" else name
        return MIMEText(value, _subtype=subtype, _charset=chosen)  # type: ignore[arg-type]

    def _attachment_part(self, attachment: Attachment, ascii_filenames: bool) -> MIMEBase:
        maintype, _, subtype = attachment.content_type.partition("/")
        part = MIMEBase(maintype, subtype)
        data = attachment.data
        if isinstance(data, str):
            # Flask-Mail let the email package encode str data as Latin-1 (or
            # escape sequences beyond it); UTF-8 is what a str means.
            if not data.isascii() and maintype == "text":
                part.set_param("charset", "utf-8")
            data = data.encode("utf-8")
        part.set_payload(data)
        encode_base64(part)
        if attachment.filename is not None:
            filename = attachment.filename
            if ascii_filenames:
                filename = unicodedata.normalize("NFKD", filename)
                filename = filename.encode("ascii", "ignore").decode("ascii")
                filename = re.sub(r"\s+", " ", filename).strip()
            if filename.isascii():
                part.add_header("Content-Disposition", attachment.disposition, filename=filename)
            else:
                part.add_header(
                    "Content-Disposition", attachment.disposition, filename=("UTF8", "", filename)
                )
        elif attachment.content_id is not None:
            part.add_header("Content-Disposition", attachment.disposition)
        if attachment.content_id is not None:
            part.add_header("Content-ID", f"<{attachment.content_id}>")
        for name, value in attachment.headers.items():
            part.add_header(name, force_text(value))
        return part

    def to_mime(self) -> MIMEBase:
        """The message as an :mod:`email.mime` object (Flask-Mail's structure).

        * body only: ``text/plain``;
        * attachments, no alternatives: ``multipart/mixed`` [text, attachments...];
        * alternatives (``html``, ``alts``): ``multipart/mixed``
          [``multipart/alternative`` [text, alternatives...], attachments...];
        * inline parts (:meth:`attach_inline`): the body part above is wrapped
          in ``multipart/related`` [body, inline parts...].

        Needs no application context; ``MAIL_ASCII_ATTACHMENTS`` is read from
        the current app when there is one.
        """
        state = _current_state()
        ascii_filenames = bool(state.ascii_attachments) if state is not None else False
        encoding = self.charset or "utf-8"
        related = [a for a in self.attachments if a.content_id is not None]
        attached = [a for a in self.attachments if a.content_id is None]
        msg: MIMEBase
        if not self.attachments and not self.alts:
            msg = self._mimetext(self.body)
        else:
            body: MIMEBase
            if self.alts:
                body = MIMEMultipart("alternative")
                body.attach(self._mimetext(self.body, "plain"))
                for subtype, content in self.alts.items():
                    body.attach(self._mimetext(content, subtype))
            else:
                body = self._mimetext(self.body)
            if related:
                wrapper = MIMEMultipart("related", type=body.get_content_type())
                wrapper.attach(body)
                for attachment in related:
                    wrapper.attach(self._attachment_part(attachment, ascii_filenames))
                body = wrapper
            msg = MIMEMultipart()
            msg.attach(body)
        if self.subject:
            msg["Subject"] = sanitize_subject(force_text(self.subject), encoding)
        msg["From"] = _address_header("From", [sanitize_address(self.sender or "", encoding)])
        msg["To"] = _address_header("To", _dedupe(sanitize_addresses(self.recipients, encoding)))
        msg["Date"] = formatdate(self.date, localtime=True)
        msg["Message-ID"] = self.msgId  # RFC 5322 3.6.4
        if self.cc:
            msg["Cc"] = _address_header("Cc", _dedupe(sanitize_addresses(self.cc, encoding)))
        if self.reply_to:
            reply_to = sanitize_address(self.reply_to, encoding)
            msg["Reply-To"] = _address_header("Reply-To", [reply_to])
        for name, value in (self.extra_headers or {}).items():
            # Replace a header the message already has instead of repeating it.
            del msg[name]
            msg[name] = force_text(value)
        for attachment in attached:
            msg.attach(self._attachment_part(attachment, ascii_filenames))
        msg.policy = email_policy.SMTP
        return msg

    _message = to_mime  # Flask-Mail's (private) name

    def as_string(self) -> str:
        """The rendered message as text (CRLF line endings)."""
        return self.to_mime().as_string()

    def as_bytes(self) -> bytes:
        """The rendered message as bytes, as it is sent."""
        return self.to_mime().as_bytes()

    def __str__(self) -> str:
        return self.as_string()

    def __bytes__(self) -> bytes:
        return self.as_bytes()

    # Checks ------------------------------------------------------------------

    def has_bad_headers(self) -> bool:
        """Whether any header, address or option would inject a header or command.

        Checks the subject, every address (sender, recipients, cc, bcc,
        reply_to), the extra headers, the attachments' file names, types,
        dispositions, Content-IDs and headers, the charset, the Message-ID
        and the ESMTP options. A CRLF followed by a space or tab (folding) is
        allowed in free-text headers such as the subject.
        """
        return next(_header_problems(self), None) is not None

    def is_bad_headers(self) -> bool:
        """Deprecated name of :meth:`has_bad_headers` (as in Flask-Mail)."""
        warnings.warn(
            "'is_bad_headers' is renamed to 'has_bad_headers'.", DeprecationWarning, stacklevel=2
        )
        return self.has_bad_headers()

    def send(self, connection: Connection) -> Refused:
        """Send this message over ``connection`` (as ``connection.send(self)``)."""
        return connection.send(self)


def _render(names: str | Sequence[str], context: dict[str, Any]) -> str:
    """Render the first of ``names`` that exists with the current app's Jinja environment."""
    choices: list[Any] = [names] if isinstance(names, str) else list(names)
    return render_template(choices, **context)


# ----------------------------------------------------------------------------- signals


def _takes_message_first(receiver: Callable[..., Any]) -> bool:
    """Whether a receiver is written ``def receiver(message, app)``.

    Flask-Mail's documentation shows receivers in that form, but blinker calls
    ``receiver(app, message=message)``, which fails for them with "multiple
    values for argument 'message'". Such receivers are called as documented.
    """
    try:
        parameters = list(inspect.signature(receiver).parameters.values())
    except (TypeError, ValueError):
        return False
    return (
        bool(parameters)
        and parameters[0].name == "message"
        and parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    )


class _MessageFirst:
    """Calls a ``receiver(message, app)`` the way the documentation shows it."""

    def __init__(self, receiver: Callable[..., Any]) -> None:
        self.receiver = receiver
        parameters = inspect.signature(receiver).parameters
        self.pass_app = "app" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )

    def __call__(self, sender: Any, /, **kwargs: Any) -> Any:
        message = kwargs.pop("message")
        if self.pass_app:
            kwargs["app"] = sender
        return self.receiver(message, **kwargs)


class _DispatchSignal(blinker.NamedSignal):
    """The ``email_dispatched`` signal: sent with the app as sender, ``message=``."""

    def receivers_for(self, sender: Any) -> Generator[Callable[..., Any], None, None]:
        for receiver in super().receivers_for(sender):
            if not inspect.iscoroutinefunction(receiver) and _takes_message_first(receiver):
                yield _MessageFirst(receiver)
            else:
                yield receiver


signals: blinker.Namespace = blinker.Namespace()
#: Sent after every message is dispatched, with the Flask app as sender and
#: the :class:`Message` as ``message``; also when sending is suppressed.
email_dispatched: blinker.NamedSignal = _DispatchSignal(
    "email-dispatched",
    doc="Sent when an email is dispatched, even when sending is suppressed.",
)
signals["email-dispatched"] = email_dispatched


# ----------------------------------------------------------------------------- connections


class _PoolSlot:
    """The pool a :class:`MailState` uses, and where it lives."""

    __slots__ = ("key", "loop", "pid", "pool")

    def __init__(
        self, key: tuple[Any, ...], pool: SMTPPool, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.key = key
        self.pool = pool
        self.loop = loop
        self.pid = os.getpid()


_closing: set[asyncio.Task[None]] = set()


def _start_close(pool: SMTPPool) -> None:
    task = asyncio.get_running_loop().create_task(pool.close())
    _closing.add(task)  # the loop holds tasks weakly
    task.add_done_callback(_closing.discard)


def _close_later(slot: _PoolSlot | None) -> None:
    """Close a pool in the background on its own loop.

    Safe from a garbage-collection finaliser: takes no lock, and does nothing
    in a forked child (whose parent owns the sockets) or once the loop is gone.
    """
    if slot is None or slot.pid != os.getpid() or slot.pool.closed:
        return
    # A closed loop raises RuntimeError: the bridge has closed its pools already.
    with contextlib.suppress(RuntimeError):
        slot.loop.call_soon_threadsafe(_start_close, slot.pool, context=contextvars.Context())


def _close_holder(holder: list[_PoolSlot | None]) -> None:
    _close_later(holder[0])


def _on_bridge(function: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """``run_sync(function, ...)``: the call runs on the bridge loop.

    The bridge runs every call in an empty :mod:`contextvars` context, so a
    pooled connection never keeps a view's app and request contexts alive,
    and a timeout the call raises keeps its own type.
    """
    return run_sync(function, *args, **kwargs)


async def _on_bridge_async(
    function: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
) -> T:
    """``await run_async(function, ...)`` (see :func:`_on_bridge`)."""
    return await run_async(function, *args, **kwargs)


class _PooledHost:
    """``Connection.host``: smtplib-style ``sendmail`` over the app's pool.

    Flask-Mail kept an ``smtplib.SMTP`` there; code (and tests) that use
    ``connection.host.sendmail(...)`` keep working.
    """

    def __init__(self, pool: SMTPPool) -> None:
        self.pool = pool
        #: The text of the server's reply to the last message's end of data.
        self.last_response: str | None = None

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Iterable[str] = (),
        rcpt_options: Iterable[str] = (),
    ) -> Refused:
        """Send raw message data; returns the refused recipients (as smtplib)."""
        errors, self.last_response = _on_bridge(
            self.pool.sendmail,
            _addr_spec(from_addr),
            [_addr_spec(a) for a in ([to_addrs] if isinstance(to_addrs, str) else to_addrs)],
            msg,
            mail_options=list(mail_options),
            rcpt_options=list(rcpt_options),
        )
        return errors

    def quit(self) -> None:
        """Nothing to do: the connection stays in the pool for the next send."""


class _AsyncPooledHost(_PooledHost):
    """``AsyncConnection.host``: awaitable ``sendmail`` over the app's pool."""

    async def sendmail(  # type: ignore[override]
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: str | bytes,
        mail_options: Iterable[str] = (),
        rcpt_options: Iterable[str] = (),
    ) -> Refused:
        """Send raw message data; returns the refused recipients."""
        errors, self.last_response = await _on_bridge_async(
            self.pool.sendmail,
            _addr_spec(from_addr),
            [_addr_spec(a) for a in ([to_addrs] if isinstance(to_addrs, str) else to_addrs)],
            msg,
            mail_options=list(mail_options),
            rcpt_options=list(rcpt_options),
        )
        return errors


def _addr_spec(address: str) -> str:
    """The bare address of one sanitised header address, for the envelope.

    Anything that is not exactly one address goes to the core as it is, whose
    stricter check refuses it.
    """
    found = [pair for pair in getaddresses([address]) if pair != ("", "")]
    if len(found) == 1 and found[0][1]:
        return found[0][1]
    return address


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
        for what, value in (("sender", message.sender), ("reply_to", message.reply_to)):
            if value:
                _single_address(what, value)
        for value in [*message.recipients, *message.cc, *message.bcc]:
            _single_address("recipient", value)
        if envelope_from is not None:
            _single_address("envelope_from", envelope_from)
        if message.date is None:
            message.date = time.time()
        recipients = [*message.recipients, *message.cc, *message.bcc]
        self.sender = sanitize_address(envelope_from or message.sender)
        self.recipients = _dedupe(sanitize_addresses(recipients))
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def send(self, message: Message, envelope_from: Address | None = None) -> Refused:
        """Check and send one message; as :meth:`Connection.send`."""
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


# ----------------------------------------------------------------------------- configuration


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


_ENV_HINT = (
    " Values read from environment variables are strings: convert them, or use "
    "app.config.from_prefixed_env(), which parses true/false and numbers."
)


def _type_error(key: str, expected: str, value: Any, *, secret: bool = False) -> TypeError:
    shown = type(value).__name__ if secret else f"{type(value).__name__} {value!r}"
    hint = _ENV_HINT if isinstance(value, str) else ""
    return TypeError(f"{key} must be {expected}, not {shown}.{hint}")


def _read_settings(config: Mapping[str, Any], debug: bool | int, testing: bool) -> dict[str, Any]:
    """The MAIL_* settings of ``config``, checked, as MailState attributes.

    Raises:
        TypeError: a value of the wrong type (the message names the key).
        ValueError: an invalid value, or MAIL_USE_TLS with MAIL_USE_SSL.
    """

    def get(key: str, default: Any, check: Callable[[Any], bool], expected: str) -> Any:
        value = config.get(key, default)
        if value is not None and not check(value):
            raise _type_error(key, expected, value, secret=key == "MAIL_PASSWORD")
        return value

    def flag(key: str, default: bool) -> bool:
        value = config.get(key, default)
        if not isinstance(value, bool):
            raise _type_error(key, "True or False", value)
        return value

    settings: dict[str, Any] = {}
    server = get(
        "MAIL_SERVER", "127.0.0.1", lambda v: isinstance(v, str) and bool(v), "a host name"
    )
    if server is None:
        raise TypeError("MAIL_SERVER must be a host name, not None.")
    settings["server"] = server
    settings["username"] = get("MAIL_USERNAME", None, lambda v: isinstance(v, str), "a str")
    settings["password"] = get("MAIL_PASSWORD", None, lambda v: isinstance(v, str), "a str")
    use_tls = flag("MAIL_USE_TLS", False)
    use_ssl = flag("MAIL_USE_SSL", False)
    if use_tls and use_ssl:
        raise ValueError(
            "MAIL_USE_TLS (STARTTLS) and MAIL_USE_SSL (implicit TLS) cannot both be set: "
            "use MAIL_USE_SSL with port 465, or MAIL_USE_TLS with port 587 or 25."
        )
    port = config.get("MAIL_PORT", 465 if use_ssl else 25)
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)  # smtplib accepted a numeric str, so Flask-Mail did too
    if not _is_int(port):
        raise _type_error("MAIL_PORT", "an int", port)
    if not 0 < port < 65536:
        raise ValueError(f"MAIL_PORT must be between 1 and 65535, not {port!r}.")
    settings["port"] = port
    settings["use_tls"] = use_tls
    settings["use_ssl"] = use_ssl
    sender = config.get("MAIL_DEFAULT_SENDER")
    if isinstance(sender, list):
        sender = tuple(sender)
    if sender is not None and not (
        isinstance(sender, str)
        or (
            isinstance(sender, tuple)
            and len(sender) == 2
            and all(isinstance(s, str) for s in sender)
        )
    ):
        raise _type_error("MAIL_DEFAULT_SENDER", "a str or a (name, address) tuple", sender)
    settings["default_sender"] = sender
    mail_debug = config.get("MAIL_DEBUG", debug)
    if not isinstance(mail_debug, int):  # bool is an int
        raise _type_error("MAIL_DEBUG", "True, False or an int", mail_debug)
    settings["debug"] = int(mail_debug)
    max_emails = get("MAIL_MAX_EMAILS", None, _is_int, "an int or None")
    if max_emails is not None and max_emails < 1:
        raise ValueError(f"MAIL_MAX_EMAILS must be at least 1 (or None), not {max_emails!r}.")
    settings["max_emails"] = max_emails
    settings["suppress"] = flag("MAIL_SUPPRESS_SEND", bool(testing))
    settings["ascii_attachments"] = flag("MAIL_ASCII_ATTACHMENTS", False)
    timeout = get("MAIL_TIMEOUT", 60.0, _is_number, "a number of seconds or None")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"MAIL_TIMEOUT must be positive (or None), not {timeout!r}.")
    settings["timeout"] = timeout
    settings["validate_certs"] = flag("MAIL_VALIDATE_CERTS", True)
    settings["cert_bundle"] = get("MAIL_CERT_BUNDLE", None, _is_path, "a file path")
    settings["client_cert"] = get("MAIL_CLIENT_CERT", None, _is_path, "a file path")
    settings["client_key"] = get("MAIL_CLIENT_KEY", None, _is_path, "a file path")
    settings["tls_context"] = get(
        "MAIL_TLS_CONTEXT", None, lambda v: isinstance(v, ssl.SSLContext), "an ssl.SSLContext"
    )
    settings["local_hostname"] = get(
        "MAIL_LOCAL_HOSTNAME", None, lambda v: isinstance(v, str), "a str"
    )
    settings["allow_insecure_auth"] = flag("MAIL_ALLOW_INSECURE_AUTH", False)
    settings["pipelining"] = flag("MAIL_PIPELINING", True)
    pool_size = get("MAIL_POOL_SIZE", 4, _is_int, "an int")
    if pool_size is None or pool_size < 1:
        raise ValueError(f"MAIL_POOL_SIZE must be at least 1, not {pool_size!r}.")
    settings["pool_size"] = pool_size
    idle = get("MAIL_POOL_IDLE_TIMEOUT", 60.0, _is_number, "a number of seconds or None")
    if idle is not None and not idle > 0:
        raise ValueError(f"MAIL_POOL_IDLE_TIMEOUT must be positive (or None), not {idle!r}.")
    settings["pool_idle_timeout"] = idle
    settings["queue"] = flag("MAIL_QUEUE", False)
    settings["celery_queue"] = get(
        "MAIL_CELERY_QUEUE", None, lambda v: v is None or isinstance(v, str), "a str or None"
    )
    settings["task_queue"] = None
    # Fail now rather than at the first send: the core checks the combination.
    _config_from(settings)
    return settings


def _config_from(settings: Mapping[str, Any]) -> ConnectionConfig:
    """The core's connection settings for a MailState's attributes.

    MAIL_USE_TLS means STARTTLS is required (and never attempted without it,
    as with Flask-Mail); MAIL_USE_SSL means TLS from the first byte. Login
    happens when both MAIL_USERNAME and MAIL_PASSWORD are set.

    Raises:
        ValueError / TypeError: settings the core refuses.
    """
    username = settings["username"] or None
    password = settings["password"] or None
    return ConnectionConfig(
        hostname=settings["server"],
        port=settings["port"],
        username=username if password else None,
        password=password if username else None,
        local_hostname=settings["local_hostname"],
        timeout=settings["timeout"],
        use_tls=bool(settings["use_ssl"]),
        start_tls=bool(settings["use_tls"]),
        validate_certs=settings["validate_certs"],
        client_cert=_fspath(settings["client_cert"]),
        client_key=_fspath(settings["client_key"]),
        tls_context=settings["tls_context"],
        cert_bundle=_fspath(settings["cert_bundle"]),
        pipelining=settings["pipelining"],
        allow_insecure_auth=settings["allow_insecure_auth"],
    )


def _fspath(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


def _enable_debug_logging() -> None:
    """MAIL_DEBUG: show the SMTP exchange, as smtplib's debug output did.

    The core logs it (credentials redacted) on the ``smtp_backends`` logger at
    DEBUG; this lowers that logger's level and, when no handler would show the
    records, adds Flask's default handler (the WSGI error stream or stderr).
    """
    core = logging.getLogger("smtp_backends")
    if core.level == logging.NOTSET or core.level > logging.DEBUG:
        core.setLevel(logging.DEBUG)
    if not core.hasHandlers():
        from flask.logging import default_handler

        core.addHandler(default_handler)


# ----------------------------------------------------------------------------- state and Mail


class _MailMixin(abc.ABC):
    """Sending methods shared by :class:`Mail` and :class:`MailState`."""

    __slots__ = ()

    @abc.abstractmethod
    def _resolve_state(self) -> MailState:
        """The state to send with: this one, or the current app's."""

    @contextmanager
    def record_messages(self) -> Iterator[list[Message]]:
        """Record the messages dispatched inside the block (for tests)::

            with mail.record_messages() as outbox:
                client.get("/send")
            assert outbox[0].subject == "testing"

        On :class:`Mail` every app's messages are recorded (as Flask-Mail);
        on an app's state (``app.extensions["mail"]``) only that app's.
        """
        outbox: list[Message] = []

        def record(app: Flask, message: Message) -> None:
            outbox.append(message)

        with email_dispatched.connected_to(record, sender=self._record_sender()):
            yield outbox

    def _record_sender(self) -> Any:
        return blinker.ANY

    def connect(self) -> Connection:
        """A :class:`Connection` for sending several messages (a context manager).

        Raises:
            RuntimeError: no configured app (outside an app context, or the
                current app was not set up with ``init_app``).
        """
        return Connection(self._resolve_state())

    def aconnect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """An :class:`AsyncConnection` for async code: ``async with mail.aconnect() as c:``."""
        return AsyncConnection(self._resolve_state())

    def send(self, message: Message, queue: bool | None = None) -> Refused:
        """Send one message (recorded only, when sending is suppressed).

        Args:
            message: the message.
            queue: hand it to a Celery worker instead (see
                :meth:`Mail.init_celery`); None: the ``MAIL_QUEUE`` setting.

        Returns the refused recipients (always empty when queued); raises as
        :meth:`Connection.send`, and when queued as :meth:`MailState.enqueue`.
        """
        state = self._resolve_state()
        if state._queued(queue):
            return state.enqueue(message)
        with self.connect() as connection:
            return connection.send(message)

    def send_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a :class:`Message` from the arguments and send it."""
        return self.send(Message(*args, **kwargs))

    async def asend(self, message: Message, queue: bool | None = None) -> Refused:
        """Send one message from async code; as :meth:`send`."""
        state = self._resolve_state()
        if state._queued(queue):
            # Publishing to the broker blocks: off the event loop (with the app context).
            return await asyncio.to_thread(state.enqueue, message)
        async with self.aconnect() as connection:
            return await connection.send(message)

    async def asend_message(self, *args: Any, **kwargs: Any) -> Refused:
        """Build a :class:`Message` from the arguments and send it from async code."""
        return await self.asend(Message(*args, **kwargs))


class MailState(_MailMixin):
    """One app's mail settings and connection pool: ``app.extensions["mail"]``.

    The attributes are Flask-Mail's (``server``, ``username``, ``password``,
    ``port``, ``use_tls``, ``use_ssl``, ``default_sender``, ``debug``,
    ``max_emails``, ``suppress``, ``ascii_attachments``) plus ``timeout``,
    ``validate_certs``, ``cert_bundle``, ``client_cert``, ``client_key``,
    ``tls_context``, ``local_hostname``, ``allow_insecure_auth``,
    ``pipelining``, ``pool_size``, ``pool_idle_timeout``, ``queue``
    (``MAIL_QUEUE``), ``celery_queue`` (``MAIL_CELERY_QUEUE``) and
    ``task_queue`` (set by :meth:`init_celery`). They may be
    changed at run time (``state.suppress = True``); the next send uses them,
    over a new pool if a connection setting changed.

    It holds no reference to the app that keeps it alive: when the app is
    garbage collected the pool is closed; :meth:`close` closes it at once.
    """

    __slots__ = ("__dict__", "__weakref__", "_app", "_finalizer", "_holder", "_lock", "_token")

    server: str
    username: str | None
    password: str | None
    port: int
    use_tls: bool
    use_ssl: bool
    default_sender: Address | None
    debug: int
    max_emails: int | None
    suppress: bool
    ascii_attachments: bool
    timeout: float | None
    validate_certs: bool
    cert_bundle: str | os.PathLike[str] | None
    client_cert: str | os.PathLike[str] | None
    client_key: str | os.PathLike[str] | None
    tls_context: ssl.SSLContext | None
    local_hostname: str | None
    allow_insecure_auth: bool
    pipelining: bool
    pool_size: int
    pool_idle_timeout: float | None
    queue: bool
    celery_queue: str | None
    task_queue: Any

    def __init__(self, **settings: Any) -> None:
        self.__dict__.update(settings)
        self._app: weakref.ref[Flask] | None = None
        self._lock = threading.Lock()
        self._token = object()  # keys this state's pool on the bridge
        self._holder: list[_PoolSlot | None] = [None]
        finalizer = weakref.finalize(self, _close_holder, self._holder)
        finalizer.atexit = False  # at exit the bridge closes every pool itself
        self._finalizer = finalizer

    def __repr__(self) -> str:
        app = self.app
        name = app.name if app is not None else None
        mode = "SSL" if self.use_ssl else "STARTTLS" if self.use_tls else "plain"
        suppressed = ", suppressed" if self.suppress else ""
        return f"<MailState app={name!r} {self.server}:{self.port} {mode}{suppressed}>"

    @property
    def app(self) -> Flask | None:
        """The app this state belongs to (None if it is gone or there is none)."""
        return self._app() if self._app is not None else None

    def _resolve_state(self) -> MailState:
        return self

    def _record_sender(self) -> Any:
        app = self.app
        return app if app is not None else blinker.ANY

    def _signal_sender(self) -> Any:
        """The sender of ``email_dispatched``: the app whose settings sent the message.

        That is the current app in every case Flask-Mail handles; a state made
        with :meth:`Mail.init_mail` (no app) uses the current app, if any.
        """
        app = self.app
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        return app

    # The pool ------------------------------------------------------------------

    def connection_config(self) -> ConnectionConfig:
        """The core's :class:`~smtp_backends.ConnectionConfig` for the current settings.

        Raises:
            ValueError / TypeError: invalid settings.
        """
        return _config_from(self.__dict__)

    def _pool(self) -> SMTPPool:
        """This app's pool on the bridge, made or replaced as the settings require."""
        config = self.connection_config()
        key = (self._token, config, self.pool_size, self.max_emails, self.pool_idle_timeout)
        with self._lock:
            slot = self._holder[0]
            if (
                slot is not None
                and slot.key == key
                and slot.pid == os.getpid()
                and not slot.pool.closed
            ):
                return slot.pool
            limits = {
                "max_connections": self.pool_size,
                "max_messages_per_connection": self.max_emails,
                "idle_timeout": self.pool_idle_timeout,
            }
            pool = shared_pool(key, lambda: SMTPPool.from_config(config, **limits))
            if slot is not None and slot.pool is not pool:
                _close_later(slot)  # the settings changed: let the old one go
            # Created from an empty context: a loop keeps the context it was made
            # in (its self-pipe reader handle), and this may run inside a request.
            loop = contextvars.Context().run(lambda: get_bridge().loop)
            self._holder[0] = _PoolSlot(key, pool, loop)
            return pool

    def _host(self, *, asynchronous: bool = False) -> Any:
        if self.debug:
            _enable_debug_logging()
        pool = self._pool()
        return (_AsyncPooledHost if asynchronous else _PooledHost)(pool)

    @property
    def pool(self) -> SMTPPool | None:
        """The pool in use (None before the first send), for monitoring."""
        slot = self._holder[0]
        return slot.pool if slot is not None and slot.pid == os.getpid() else None

    def close(self) -> None:
        """Close this app's pooled connections now (QUIT); the next send reopens.

        Call it when an app is discarded (tests, app factories); at process
        exit the bridge closes every pool by itself.
        """
        with self._lock:
            slot, self._holder[0] = self._holder[0], None
        if slot is not None and slot.pid == os.getpid() and not slot.pool.closed:
            _on_bridge(slot.pool.close)

    async def aclose(self) -> None:
        """Close this app's pooled connections from async code; as :meth:`close`."""
        with self._lock:
            slot, self._holder[0] = self._holder[0], None
        if slot is not None and slot.pid == os.getpid() and not slot.pool.closed:
            await _on_bridge_async(slot.pool.close)

    # Queued sending (Celery) ----------------------------------------------------

    def init_celery(self, celery: Any, **options: Any) -> Any:
        """Send through Celery workers with this state's settings; see :meth:`Mail.init_celery`."""
        # Imported here: Celery is an optional extra, needed only for queued sending.
        from smtp_backends.celery import register

        def worker_pool(profile: str | None) -> SMTPPool:
            # Called in the worker process: the MAIL_* settings it was started with.
            return SMTPPool.from_config(
                self.connection_config(),
                max_connections=self.pool_size,
                max_messages_per_connection=self.max_emails,
                idle_timeout=self.pool_idle_timeout,
            )

        options.setdefault("queue", self.celery_queue)
        self.task_queue = register(celery, smtp=worker_pool, **options)
        return self.task_queue

    def _queued(self, queue: bool | None) -> bool:
        """Whether a send goes to the queue (never when sending is suppressed)."""
        return bool(self.queue if queue is None else queue) and not self.suppress

    def enqueue(self, message: Message, envelope_from: Address | None = None) -> Refused:
        """Check a message and queue it for a Celery worker; returns {} (nothing refused yet).

        ``email_dispatched`` is sent once the message is queued.

        Raises:
            RuntimeError: :meth:`init_celery` was not called.
            NoRecipientsError / NoSenderError / BadHeaderError / ValueError:
                as :meth:`Connection.send`, before anything is queued (and
                ValueError for ``mail_options`` / ``rcpt_options``, which
                queued messages do not carry).
            Exception: the broker could not be reached (kombu's errors).
        """
        task_queue = self.__dict__.get("task_queue")
        if task_queue is None:
            raise RuntimeError(
                "Queued sending needs a Celery app: call mail.init_celery(celery_app)"
            )
        prepared = _Prepared(message, self, envelope_from)
        if prepared.mail_options or prepared.rcpt_options:
            raise ValueError("mail_options and rcpt_options cannot be used with queued sending")
        task_queue.enqueue(
            _addr_spec(prepared.sender),
            [_addr_spec(address) for address in prepared.recipients],
            prepared.data,
            message_id=message.msgId,
        )
        email_dispatched.send(self._signal_sender(), message=message)
        return {}


#: Flask-Mail's name for the per-app state class.
_Mail = MailState


class Mail(_MailMixin):
    """The extension: ``Mail(app)`` or ``mail = Mail()`` then ``mail.init_app(app)``.

    One instance serves any number of apps: every call works on the current
    app's state (``app.extensions["mail"]``). The instance never stores an
    app; ``Mail(app)`` keeps that app's state so ``mail.state`` and sending
    outside an application context keep working, as in Flask-Mail.
    Attributes of the state can be read through the instance
    (``mail.default_sender``, ``mail.suppress``...).
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._state: MailState | None = None
        if app is not None:
            self._state = self.init_app(app)

    def init_mail(
        self, config: Mapping[str, Any], debug: bool | int = False, testing: bool = False
    ) -> MailState:
        """A :class:`MailState` from a config mapping (not attached to any app).

        Raises:
            TypeError / ValueError: a MAIL_* setting has the wrong type or value.
        """
        return MailState(**_read_settings(config, debug, testing))

    def init_app(self, app: Flask) -> MailState:
        """Read the app's MAIL_* settings and register the state and the CLI.

        Raises:
            TypeError / ValueError: a MAIL_* setting has the wrong type or
                value, or MAIL_USE_TLS and MAIL_USE_SSL are both set.
        """
        state = self.init_mail(app.config, app.debug, app.testing)
        state._app = weakref.ref(app)
        previous = app.extensions.get("mail")
        if isinstance(previous, MailState):
            _close_later(previous._holder[0])
        app.extensions["mail"] = state
        if state.debug:
            _enable_debug_logging()
        if "mail" not in app.cli.commands:
            app.cli.add_command(mail_cli)
        return state

    @property
    def state(self) -> MailState | None:
        """The current app's state, else the one of the app given to ``Mail(app)``."""
        if has_app_context():
            state = current_app.extensions.get("mail")
            if isinstance(state, MailState):
                return state
        return self._state

    def _resolve_state(self) -> MailState:
        state = self.state
        if state is None:
            if has_app_context():
                raise RuntimeError(
                    "The current application was not configured with smtp_backends.flask: "
                    "call mail.init_app(app)"
                )
            raise RuntimeError(
                "Working outside of application context: push one (with app.app_context():) "
                "or use app.extensions['mail'] directly"
            )
        return state

    def close(self) -> None:
        """Close the current app's pooled connections; see :meth:`MailState.close`."""
        self._resolve_state().close()

    def init_celery(self, celery: Any, app: Flask | None = None, **options: Any) -> Any:
        """Queue mail on ``celery`` (a Celery app) for ``app`` (default: the current one).

        Registers the sending task on ``celery`` (call it where the workers
        run it too, e.g. in the app factory after :meth:`init_app`); workers
        send with this app's MAIL_* settings. Then ``send(msg, queue=True)``,
        or every send when ``MAIL_QUEUE`` is true, queues instead of sending;
        ``MAIL_CELERY_QUEUE`` names the Celery queue.

        Args:
            celery: the Celery app.
            app: the Flask app (after ``init_app``).
            **options: keywords of :func:`smtp_backends.celery.register`
                (``name``, ``batch_size``, ``max_retries``, ``dedupe``...).

        Returns:
            The :class:`smtp_backends.celery.SMTPQueue`.

        Raises:
            RuntimeError: the app is not set up with :meth:`init_app`.
            ValueError: a queue of that name is already registered on ``celery``.
        """
        state = app.extensions.get("mail") if app is not None else self._resolve_state()
        if not isinstance(state, MailState):
            raise RuntimeError("Call mail.init_app(app) before mail.init_celery()")
        return state.init_celery(celery, **options)

    async def aclose(self) -> None:
        """Close the current app's pooled connections from async code."""
        await self._resolve_state().aclose()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._resolve_state(), name)


def _current_state() -> MailState | None:
    """The current app's mail state, or None (no app context, or no init_app)."""
    if not has_app_context():
        return None
    state = current_app.extensions.get("mail")
    return state if isinstance(state, MailState) else None


# ----------------------------------------------------------------------------- CLI

mail_cli = AppGroup("mail", help="Mail commands (smtp_backends.flask).")


def _describe(state: MailState) -> str:
    mode = "implicit TLS" if state.use_ssl else "STARTTLS" if state.use_tls else "no TLS"
    login = f", login as {state.username}" if state.username and state.password else ""
    return f"{state.server}:{state.port} ({mode}{login})"


@mail_cli.command("send-test")
@click.argument("address")
@click.option("--sender", default=None, help="From address (default: MAIL_DEFAULT_SENDER).")
@click.option("--subject", default=None, help="Subject of the test message.")
def send_test_command(address: str, sender: str | None, subject: str | None) -> None:
    """Send a test message to ADDRESS with the app's mail settings."""
    state = _current_state()
    if state is None:
        raise click.ClickException("This app is not set up with smtp_backends.flask (init_app).")
    if state.suppress:
        raise click.ClickException(
            "Sending is suppressed (MAIL_SUPPRESS_SEND, which defaults to TESTING): nothing sent."
        )
    app_name = current_app.name
    message = Message(
        subject or f"Test message from {app_name}",
        recipients=[address],
        sender=sender,
        body=(
            f"This is a test message from the Flask app {app_name!r}, sent with "
            f"smtp_backends through {_describe(state)}.\n"
        ),
    )
    click.echo(f"Sending a test message to {address} via {_describe(state)}...")
    try:
        with state.connect() as connection:
            refused = connection.send(message)
            reply = connection.last_response
    except (SMTPException, OSError, ValueError) as exc:
        raise click.ClickException(f"Sending failed: {type(exc).__name__}: {exc}") from exc
    for recipient, response in refused.items():
        click.echo(f"Refused {recipient}: {response.code} {response.message}", err=True)
    click.echo(f"Sent from {message.sender}. The server said: {reply}")
