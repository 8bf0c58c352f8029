"""The server's EHLO reply: its service extensions and AUTH mechanisms (RFC 5321 4.1.1.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("Extensions",)


@dataclass(frozen=True)
class Extensions:
    """What a server advertised in its EHLO reply.

    Attributes:
        keywords: extension keyword (lower case) -> its parameters as text.
        auth_mechanisms: SASL mechanisms offered with AUTH, upper case, in order.
    """

    keywords: dict[str, str] = field(default_factory=dict)
    auth_mechanisms: tuple[str, ...] = ()

    @classmethod
    def parse(cls, ehlo_text: str) -> Extensions:
        """Read the text of a 250 EHLO reply (the first line is the greeting)."""
        keywords: dict[str, str] = {}
        mechanisms: list[str] = []
        lines = ehlo_text.split("\n")
        del lines[0]
        for line in lines:
            # Old servers write "AUTH=LOGIN PLAIN"; treat "=" after AUTH as a space.
            if line[4:5] == "=" and line[:5].upper() == "AUTH=":
                line = "AUTH " + line[5:]
            keyword, _, params = line.strip().partition(" ")
            if not keyword:
                continue
            name = keyword.lower()
            if name not in keywords:  # the first mention counts
                keywords[name] = params.strip()
            if name == "auth":
                for mechanism in params.upper().split():
                    if mechanism not in mechanisms:
                        mechanisms.append(mechanism)
        return cls(keywords, tuple(mechanisms))

    def supports(self, keyword: str) -> bool:
        """Whether the extension was advertised (case-insensitive)."""
        return keyword.lower() in self.keywords

    @property
    def max_size(self) -> int | None:
        """The SIZE limit in bytes (RFC 1870), or None when none is declared."""
        value = self.keywords.get("size", "")
        if not (value.isascii() and value.isdigit()):
            return None
        return int(value) or None
