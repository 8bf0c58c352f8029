"""Chaos mode: the SMTP side answers by rule, so that applications can test their retries.

A rule names a stage of the SMTP session and what happens there::

    rcpt:reply=451,rate=10%          a 451 for one RCPT in ten
    rcpt:match=*@bounce.test,reply=550
                                     a 550 for every recipient matching the pattern
    dot:drop                         store the message, then close the connection without
                                     the final reply (the client cannot know: "unknown")
    dot:reply=451                    refuse the message after its data (not stored)
    connect:reply=421                greet with 421 and close (RFC 5321 3.8)
    mail:delay=2.5                   wait 2.5 s before answering MAIL

Stages: ``connect`` (the greeting), ``ehlo`` (EHLO and HELO), ``mail``, ``rcpt``,
``data`` (the DATA command, before 354) and ``dot`` (the end of the data). Keys:

``reply``   a 4xx or 5xx code, optionally with its text (``reply=451 4.7.1 Greylisted``);
            a reply of 421 also closes the connection, as the RFC requires.
``text``    the reply's text, if not given with ``reply``.
``rate``    how often the rule fires: ``10%`` or ``0.1`` (default: always).
``match``   a shell-style pattern (``*``, ``?``, ``[...]``), ignoring case, on the
            address (``mail``, ``rcpt``), any recipient (``data``, ``dot``) or the
            EHLO name (``ehlo``).
``drop``    close the connection (after the reply, if there is one); at ``dot`` the
            message is stored first.
``delay``   seconds to wait before answering (at most 600).

The first rule whose stage and pattern match and whose ``rate`` draw succeeds decides;
without one the server behaves normally. Draws come from one random generator seeded
with :attr:`Chaos.seed`, so one client sending the same commands meets the same
faults on every run.
"""

from __future__ import annotations

import fnmatch
import random
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ("MAX_DELAY", "STAGES", "Chaos", "ChaosRule", "Decision")

#: The stages a rule can name, in the order a session meets them.
STAGES = ("connect", "ehlo", "mail", "rcpt", "data", "dot")

#: The longest delay a rule may ask for, in seconds.
MAX_DELAY = 600.0

# Stages whose rules can have a pattern, and what it is matched against.
_MATCHABLE = frozenset({"ehlo", "mail", "rcpt", "data", "dot"})

_REPLY = re.compile(r"([45][0-9][0-9])(?:[ ](.*))?", re.DOTALL)

_DEFAULT_TEXTS = {
    "4": "4.3.0 Temporary failure (devserver chaos rule)",
    "5": "5.7.1 Refused (devserver chaos rule)",
}
_DEFAULT_421 = "4.3.2 Service not available, closing connection (devserver chaos rule)"


def _rate(value: Any) -> float:
    if isinstance(value, str):
        text = value.strip()
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"rate must be a number or a percentage, not {value!r}")
    if not 0 < number <= 1:
        raise ValueError(f"rate must be above 0 and at most 1 (100%), not {value!r}")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"", "1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"drop must be true or false, not {value!r}")


@dataclass(frozen=True)
class ChaosRule:
    """One rule of :class:`Chaos` (see the module's documentation for the meaning).

    Attributes:
        stage: one of :data:`STAGES`.
        reply: the whole reply line (``451 4.3.0 ...``), or None to answer normally.
        rate: the chance that the rule fires, above 0 and at most 1.
        match: a shell-style pattern, or None for every command of the stage.
        drop: close the connection.
        delay: seconds to wait before answering.

    Raises:
        ValueError: an unknown stage, a reply that is not 4xx/5xx or holds a line
            break, a rate outside (0, 1], a pattern where the stage has nothing to
            match, a delay outside [0, :data:`MAX_DELAY`], or a rule that does nothing.
    """

    stage: str
    reply: str | None = None
    rate: float = 1.0
    match: str | None = None
    drop: bool = False
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown chaos stage {self.stage!r} (one of {', '.join(STAGES)})")
        if self.reply is not None:
            object.__setattr__(self, "reply", _reply_line(self.reply))
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be above 0 and at most 1, not {self.rate!r}")
        if self.match is not None and self.stage not in _MATCHABLE:
            raise ValueError(f"a {self.stage} rule has nothing to match")
        if not 0 <= self.delay <= MAX_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY:g} seconds")
        if self.reply is None and not self.drop and not self.delay:
            raise ValueError("a chaos rule needs a reply, drop or delay")

    @property
    def closes(self) -> bool:
        """Whether firing ends the connection (``drop``, or a 421 reply)."""
        return self.drop or (self.reply is not None and self.reply.startswith("421"))

    @classmethod
    def parse(cls, text: str) -> ChaosRule:
        """A rule from its command-line form, ``STAGE:key=value,key=value``.

        ``drop`` may stand alone; ``reply`` may carry its text (without commas).

        Raises:
            ValueError: a malformed rule (the message says what is wrong).
        """
        stage, colon, rest = text.strip().partition(":")
        if not colon or not rest.strip():
            raise ValueError(f"a chaos rule looks like 'rcpt:reply=451,rate=10%', not {text!r}")
        options: dict[str, str] = {}
        for item in rest.split(","):
            key, equals, value = item.strip().partition("=")
            key = key.strip().lower()
            if not equals and key == "drop":
                value = "true"
            elif not equals:
                raise ValueError(f"expected key=value in chaos rule {text!r}, not {item!r}")
            if key in options:
                raise ValueError(f"{key} is given twice in chaos rule {text!r}")
            options[key] = value.strip()
        return cls.from_json({"stage": stage.strip().lower(), **options})

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | str) -> ChaosRule:
        """A rule from its JSON form (see :meth:`to_json`), or a string for :meth:`parse`.

        Raises:
            ValueError: an unknown key or a bad value.
        """
        if isinstance(value, str):
            return cls.parse(value)
        if not isinstance(value, Mapping):
            raise ValueError(f"a chaos rule is an object or a string, not {value!r}")
        unknown = set(value) - {"stage", "reply", "text", "rate", "match", "drop", "delay"}
        if unknown:
            raise ValueError(f"unknown chaos rule key(s): {', '.join(sorted(unknown))}")
        reply = value.get("reply")
        text = value.get("text")
        if reply is not None:
            reply = str(reply).strip()
            if text is not None:
                reply = f"{reply} {text}"
        elif text is not None:
            raise ValueError("text needs a reply code")
        try:
            delay = float(value.get("delay", 0) or 0)
        except (TypeError, ValueError):
            raise ValueError(f"delay must be a number of seconds, not {value['delay']!r}") from None
        match = value.get("match")
        return cls(
            stage=str(value.get("stage", "")),
            reply=reply,
            rate=_rate(value["rate"]) if "rate" in value else 1.0,
            match=str(match) if match is not None else None,
            drop=_flag(value.get("drop", False)),
            delay=delay,
        )

    def to_json(self) -> dict[str, Any]:
        """The rule as a JSON object (what ``GET /api/chaos`` shows)."""
        return {
            "stage": self.stage,
            "reply": self.reply,
            "rate": self.rate,
            "match": self.match,
            "drop": self.drop,
            "delay": self.delay,
        }

    def applies_to(self, stage: str, subjects: Sequence[str]) -> bool:
        """Whether the rule concerns this stage and (if it has a pattern) one of ``subjects``."""
        if stage != self.stage:
            return False
        if self.match is None:
            return True
        pattern = self.match.casefold()
        return any(fnmatch.fnmatchcase(subject.casefold(), pattern) for subject in subjects)


def _reply_line(reply: str) -> str:
    matched = _REPLY.fullmatch(reply.strip())
    if matched is None:
        raise ValueError(f"a chaos reply is a 4xx or 5xx code and optional text, not {reply!r}")
    code, text = matched.groups()
    if text is not None and ("\r" in text or "\n" in text):
        raise ValueError("a chaos reply cannot hold a line break")
    if not text:
        text = _DEFAULT_421 if code == "421" else _DEFAULT_TEXTS[code[0]]
    return f"{code} {text}"


@dataclass(frozen=True)
class Decision:
    """What the SMTP side does for one command (see :meth:`Chaos.decide`).

    Attributes:
        rule: the rule that fired.
        reply: the reply line to send instead of the normal one, or None.
        drop: close the connection (after the reply, if any).
        delay: seconds to wait first.
    """

    rule: ChaosRule
    reply: str | None
    drop: bool
    delay: float


class Chaos:
    """The rules in force and their seeded random generator; thread-safe.

    Args:
        rules: the rules, first match wins.
        seed: seeds the generator behind ``rate``; None picks one (see :attr:`seed`).
    """

    def __init__(self, rules: Iterable[ChaosRule] = (), seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: tuple[ChaosRule, ...] = ()
        self._fired: list[int] = []
        self.seed = 0
        self._random = random.Random()
        self.configure(rules, seed)

    def configure(self, rules: Iterable[ChaosRule], seed: int | None = None) -> None:
        """Replace the rules and restart the generator from ``seed`` (None: a new one)."""
        rules = tuple(rules)
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        with self._lock:
            self._rules = rules
            self._fired = [0] * len(rules)
            self.seed = seed
            self._random = random.Random(seed)

    @property
    def rules(self) -> tuple[ChaosRule, ...]:
        """The rules in force."""
        with self._lock:
            return self._rules

    def decide(self, stage: str, subjects: Sequence[str] = ()) -> Decision | None:
        """The decision for one command at ``stage`` about ``subjects``, or None (normal)."""
        with self._lock:
            for number, rule in enumerate(self._rules):
                if not rule.applies_to(stage, subjects):
                    continue
                if rule.rate < 1 and self._random.random() >= rule.rate:
                    continue
                self._fired[number] += 1
                return Decision(rule, rule.reply, rule.closes, rule.delay)
        return None

    def to_json(self) -> dict[str, Any]:
        """The seed and the rules, each with how often it fired (``GET /api/chaos``)."""
        with self._lock:
            return {
                "seed": self.seed,
                "rules": [
                    {**rule.to_json(), "fired": fired}
                    for rule, fired in zip(self._rules, self._fired, strict=False)
                ],
            }

    def __bool__(self) -> bool:
        return bool(self.rules)
