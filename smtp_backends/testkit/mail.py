"""One received message as a test sees it: parsed parts, links, and assertions.

:class:`ReceivedMail` is the development server's parsed message
(:class:`~smtp_backends.devserver.message.StoredMessage`: subject, addresses,
text and HTML bodies, attachments, headers, plus-address tags) with what a
test asks of it: its links, one header, and ``assert_*`` methods whose
failures say what the message holds instead. Parsing uses only the standard
library; nothing here needs aiosmtpd.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from email.utils import getaddresses
from typing import Any

from smtp_backends.devserver.linkcheck import extract_links
from smtp_backends.devserver.message import Attachment, StoredMessage

__all__ = ("Attachment", "ReceivedMail", "Text")

#: What a text criterion takes: the exact text, or a compiled pattern to search for.
Text = str | re.Pattern[str]


def _shown(values: Iterable[str]) -> str:
    listed = [repr(value) for value in values]
    return ", ".join(listed) if listed else "none"


def _matches(wanted: Text, value: str, *, exact: bool) -> bool:
    if isinstance(wanted, re.Pattern):
        return wanted.search(value) is not None
    return wanted == value if exact else wanted in value


def _addresses(*values: str) -> list[str]:
    return [address.lower() for _, address in getaddresses(list(values)) if address]


class ReceivedMail(StoredMessage):
    """A message the capture server (or the development server) received.

    Every attribute of :class:`~smtp_backends.devserver.message.StoredMessage`
    (``envelope_from``, ``envelope_to``, ``subject``, ``from_``, ``to``, ``cc``,
    ``text``, ``html``, ``attachments``, ``headers``, ``tags``, ``raw``), plus
    :attr:`links`, :meth:`header` and the ``assert_*`` methods.
    """

    @classmethod
    def of(cls, message: StoredMessage) -> ReceivedMail:
        """The same message as a :class:`ReceivedMail` (returned as is if it is one)."""
        if isinstance(message, ReceivedMail):
            return message
        return cls(
            message.id,
            message.envelope_from,
            message.envelope_to,
            message.received_at,
            message.raw,
        )

    @property
    def links(self) -> list[str]:
        """The http(s) links of the HTML part, then of the text part, without repeats."""
        return extract_links(self)

    @property
    def recipients(self) -> list[str]:
        """Every recipient address, lower case: the envelope's, then To and Cc's."""
        found = [address.lower() for address in self.envelope_to]
        found += _addresses(self.to, self.cc)
        return list(dict.fromkeys(found))

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), decoded; None if absent."""
        wanted = name.lower()
        for own, value in self.headers:
            if own.lower() == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every header called ``name`` (any case), decoded, in order."""
        wanted = name.lower()
        return [value for own, value in self.headers if own.lower() == wanted]

    def matches(
        self,
        *,
        subject: Text | None = None,
        to: str | None = None,
        from_: str | None = None,
        tag: str | None = None,
        text: Text | None = None,
        where: Callable[[ReceivedMail], bool] | None = None,
    ) -> bool:
        """Whether this message meets every criterion given.

        Args:
            subject: the exact subject, or a pattern searched in it.
            to: an address among the envelope recipients, To and Cc (any case).
            from_: the envelope sender or the From address (any case).
            tag: a plus-address tag of a recipient (``ada+signup@...``: ``signup``).
            text: a fragment (or a pattern) of the text or the HTML part.
            where: a predicate of your own.
        """
        if subject is not None and not _matches(subject, self.subject, exact=True):
            return False
        if to is not None and to.strip().lower() not in self.recipients:
            return False
        if from_ is not None:
            senders = {self.envelope_from.lower(), *_addresses(self.from_)}
            if from_.strip().lower() not in senders:
                return False
        if tag is not None and not self.has_tag(tag):
            return False
        if text is not None:
            bodies = [body for body in (self.text, self.html) if body is not None]
            if not any(_matches(text, body, exact=False) for body in bodies):
                return False
        return where is None or bool(where(self))

    # Assertions --------------------------------------------------------------

    def assert_header(self, name: str, expected: Text | None = None) -> str:
        """Assert the header ``name`` is present (and equals, or matches, ``expected``).

        Returns its value. Raises AssertionError naming the headers present.
        """
        value = self.header(name)
        if value is None:
            names = dict.fromkeys(own for own, _ in self.headers)
            raise AssertionError(f"no {name} header; the headers are: {_shown(names)}")
        if expected is not None and not _matches(expected, value, exact=True):
            raise AssertionError(f"{name} is {value!r}, expected {expected!r}")
        return value

    def assert_no_header(self, name: str) -> None:
        """Assert there is no header called ``name``."""
        value = self.header(name)
        if value is not None:
            raise AssertionError(f"unexpected {name} header: {value!r}")

    def assert_text(self, expected: Text) -> str:
        """Assert the text part contains ``expected`` (or matches the pattern); returns it."""
        return self._assert_body("text", self.text, expected)

    def assert_html(self, expected: Text) -> str:
        """Assert the HTML part contains ``expected`` (or matches the pattern); returns it."""
        return self._assert_body("HTML", self.html, expected)

    def _assert_body(self, kind: str, body: str | None, expected: Text) -> str:
        if body is None:
            raise AssertionError(f"the message has no {kind} part")
        if not _matches(expected, body, exact=False):
            raise AssertionError(f"the {kind} part does not contain {expected!r}:\n{body}")
        return body

    def assert_attachment(
        self,
        filename: Text,
        *,
        content_type: str | None = None,
        content: bytes | str | None = None,
    ) -> Attachment:
        """Assert an attachment called ``filename`` exists (with this type and content).

        ``content`` as a str is compared with the payload decoded as UTF-8, with
        CRLF line endings (what SMTP delivers a text part with) read as LF.
        Returns the attachment. Raises AssertionError listing the attachments.
        """
        found = [a for a in self.attachments if _matches(filename, a.filename, exact=True)]
        if not found:
            listed = (f"{a.filename} ({a.content_type})" for a in self.attachments)
            raise AssertionError(f"no attachment {filename!r}; attachments: {_shown(listed)}")
        attachment = found[0]
        if content_type is not None and attachment.content_type != content_type.lower():
            raise AssertionError(
                f"{attachment.filename} is {attachment.content_type}, expected {content_type}"
            )
        if content is not None:
            payload: Any = attachment.payload
            if isinstance(content, str):
                payload = payload.decode("utf-8", "replace").replace("\r\n", "\n")
            if payload != content:
                raise AssertionError(
                    f"{attachment.filename} holds {payload[:200]!r}, expected {content[:200]!r}"
                )
        return attachment

    def assert_link(self, expected: Text) -> str:
        """Assert a link contains ``expected`` (or matches the pattern); returns the first."""
        for link in self.links:
            if _matches(expected, link, exact=False):
                return link
        raise AssertionError(f"no link with {expected!r}; the links are: {_shown(self.links)}")

    def assert_to(self, *addresses: str) -> None:
        """Assert each address is a recipient (envelope, To or Cc; any case)."""
        missing = [a for a in addresses if a.strip().lower() not in self.recipients]
        if missing:
            raise AssertionError(
                f"not sent to {_shown(missing)}; the recipients are: {_shown(self.recipients)}"
            )
