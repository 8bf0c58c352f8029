"""Searching the inbox: a small query language over subject, addresses, text and tags.

A query is a list of terms separated by spaces; a message matches when it matches
every term. Matching ignores case and looks for the term as a substring::

    invoice                   anywhere: subject, From, To, Cc, envelope, text or HTML body
    "password reset"          a phrase (double quotes keep the spaces)
    subject:welcome           the Subject only
    from:ada@example.org      From header or envelope sender
    to:bob                    To and Cc headers and every envelope recipient (Bcc included)
    text:token                the text or HTML body
    tag:signup-42             a plus-address tag, exactly (see StoredMessage.tags)
    -newsletter               NOT: the term must not match (works with a field too)

The same query works in the web inbox's search box, in ``GET /api/messages?q=...``
and in :meth:`smtp_backends.devserver.Mailbox.messages`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .message import StoredMessage

__all__ = ("FIELDS", "Query", "Term")

# A term: an optional "-", an optional "field:", then a quoted phrase or a bare word.
_TERM = re.compile(r'(-)?(?:([a-z]+):)?(?:"([^"]*)"?|(\S+))', re.IGNORECASE)


def _addresses_to(message: StoredMessage) -> tuple[str, ...]:
    return (message.to, message.cc, *message.envelope_to)


def _text(message: StoredMessage) -> tuple[str, ...]:
    return (message.text or "", message.html or "")


#: The fields a term can name, and the texts of a message each one looks at.
FIELDS: dict[str, Callable[[StoredMessage], tuple[str, ...]]] = {
    "subject": lambda message: (message.subject,),
    "from": lambda message: (message.from_, message.envelope_from),
    "to": _addresses_to,
    "text": _text,
}


def _anywhere(message: StoredMessage) -> tuple[str, ...]:
    return (
        message.subject,
        message.from_,
        message.envelope_from,
        *_addresses_to(message),
        *_text(message),
    )


@dataclass(frozen=True)
class Term:
    """One term of a :class:`Query`.

    Attributes:
        value: what to look for, case-folded.
        field: ``subject``, ``from``, ``to``, ``text``, ``tag`` or '' (anywhere).
        negated: the message must *not* match.
    """

    value: str
    field: str = ""
    negated: bool = False

    def matches(self, message: StoredMessage) -> bool:
        """Whether ``message`` satisfies this term (negation included)."""
        if self.field == "tag":
            found = message.has_tag(self.value)
        else:
            texts = FIELDS[self.field](message) if self.field else _anywhere(message)
            found = any(self.value in text.casefold() for text in texts)
        return found != self.negated


@dataclass(frozen=True)
class Query:
    """A parsed search: every term must match. An empty query matches everything.

    Build it with :meth:`parse`.
    """

    terms: tuple[Term, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Query:
        """Parse a query string (see the module's documentation).

        An unknown field name is not an error: ``http://x`` or ``re:hello`` are read as
        plain words, because that is what somebody pasting them means.
        """
        terms: list[Term] = []
        for match in _TERM.finditer(text):
            negated, field, phrase, word = match.groups()
            field = (field or "").lower()
            value = phrase if phrase is not None else word
            if field and field != "tag" and field not in FIELDS:
                # Not a field after all: the colon belongs to the word.
                value = f"{match.group(2)}:{value}"
                field = ""
            if not value:
                continue
            terms.append(Term(value.casefold(), field, negated is not None))
        return cls(tuple(terms))

    def matches(self, message: StoredMessage) -> bool:
        """Whether ``message`` satisfies every term."""
        return all(term.matches(message) for term in self.terms)

    def __bool__(self) -> bool:
        return bool(self.terms)
