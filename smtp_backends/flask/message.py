"""Flask-Mail's :class:`Message` and :class:`Attachment`, rendered as Flask-Mail renders them."""

from __future__ import annotations

import re
import time
import unicodedata
import warnings
from collections.abc import Iterable, Mapping, Sequence
from email import policy as email_policy
from email.encoders import encode_base64
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid
from mimetypes import guess_type
from typing import TYPE_CHECKING, Any

from flask import render_template

from .context import current_state
from .headers import (
    Address,
    _address_header,
    _address_list,
    _as_address,
    _charset,
    _dedupe,
    _header_problems,
    _msgid_domain,
    force_text,
    header_address,
    sanitize_subject,
)

if TYPE_CHECKING:
    from .connection import Connection, Refused

__all__ = ("Attachment", "Message")


def _header_addresses(addresses: list[Address], encoding: str) -> list[str]:
    return [header_address(address, encoding) for address in addresses]


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
        date: the Date, as a timestamp (by default the time the message is first
            rendered, usually when it is sent; later renderings keep it, so that the
            message signed, logged and sent is one message).
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
            state = current_state()
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
        # The default Date, fixed by the first rendering (as the Message-ID is at creation).
        self._default_date: float | None = None
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
        state = current_state()
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
        msg["From"] = _address_header("From", [header_address(self.sender or "", encoding)])
        msg["To"] = _address_header("To", _dedupe(_header_addresses(self.recipients, encoding)))
        date = self.date
        if date is None:
            if self._default_date is None:
                self._default_date = time.time()
            date = self._default_date
        msg["Date"] = formatdate(date, localtime=True)
        msg["Message-ID"] = self.msgId  # RFC 5322 3.6.4
        if self.cc:
            msg["Cc"] = _address_header("Cc", _dedupe(_header_addresses(self.cc, encoding)))
        if self.reply_to:
            reply_to = header_address(self.reply_to, encoding)
            msg["Reply-To"] = _address_header("Reply-To", [reply_to])
        for name, value in (self.extra_headers or {}).items():
            # Replace a header the message already has instead of repeating it.
            del msg[name]
            msg[name] = force_text(value)
        for attachment in attached:
            msg.attach(self._attachment_part(attachment, ascii_filenames))
        # Raw UTF-8 headers only for a non-ASCII address (sent with SMTPUTF8).
        utf8 = any(not str(msg.get(name, "")).isascii() for name in ("From", "To", "Cc"))
        msg.policy = email_policy.SMTPUTF8 if utf8 else email_policy.SMTP
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
