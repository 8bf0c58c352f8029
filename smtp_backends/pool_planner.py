"""The decisions of a connection pool, as a pure step without I/O.

:class:`PoolPlanner` keeps the pool's bookkeeping (which connections exist,
which are idle or in use, who waits) and :meth:`PoolPlanner.step` decides,
from that state and the current time, which waiter gets which connection,
which connections to open and which to close. The pool applies the plan
and does the I/O afterwards. Nothing here awaits, so a step is atomic on an
event loop, and the whole policy is unit-tested with plain values.

:class:`BatchBook` does the same for the scheduling of one batch: which
messages go to a connection next, what a message's outcome means for it
(:func:`verdict_of`), whether it goes back in line, and when the batch stops
trying new connections.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import (
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .outcomes import Verdict as Kind
from .outcomes import classify
from .protocol.transaction import Outcome

__all__ = (
    "BatchBook",
    "EntryState",
    "Line",
    "Plan",
    "PoolEntry",
    "PoolPlanner",
    "Share",
    "Verdict",
    "check_batch_limits",
    "verdict_of",
)

#: The connection object of an entry (the pool's SMTP client; anything in tests).
C = TypeVar("C")
#: A waiting caller's token (hashable).
W = TypeVar("W", bound=Hashable)


class EntryState(enum.Enum):
    """Where a pooled connection stands."""

    ACTIVE = "active"  # handed to one caller (maybe still being opened)
    IDLE = "idle"  # open and free
    CLOSING = "closing"  # being closed (QUIT); still counts against the limit
    CLOSED = "closed"  # out of the pool


# Members as module globals: on CPython 3.11 a lookup on the Enum class costs
# ten times as much (the pool steps at every hand-out and release).
_ACTIVE = EntryState.ACTIVE
_IDLE = EntryState.IDLE
_CLOSING = EntryState.CLOSING
_CLOSED = EntryState.CLOSED


@dataclass(eq=False)
class PoolEntry(Generic[C]):
    """One pooled connection's bookkeeping.

    Attributes:
        number: a small id for reprs and logs.
        state: see :class:`EntryState`.
        client: the connection object, None until the pool opened it.
        messages_sent: transactions completed over it.
        idle_since: when it was last released (the planner's clock).
    """

    number: int
    state: EntryState = EntryState.ACTIVE
    client: C | None = None
    messages_sent: int = 0
    idle_since: float = 0.0

    def __repr__(self) -> str:
        opened = "" if self.client is not None else ", unopened"
        return f"<#{self.number} {self.state.value}, {self.messages_sent} sent{opened}>"


@dataclass
class Plan(Generic[C, W]):
    """What one step decided: hand these out, close those."""

    assign: list[tuple[W, PoolEntry[C]]] = field(default_factory=list)
    close: list[PoolEntry[C]] = field(default_factory=list)


class PoolPlanner(Generic[C, W]):
    """Bounded pool bookkeeping; see the module docstring.

    Args:
        max_connections: never more connections than this (open, opening or
            in use).
        max_messages_per_connection: close a connection after this many
            messages (None: no limit).
        idle_timeout: close a connection idle this long (seconds; None: never).

    Raises:
        ValueError: a limit that is not positive.
    """

    def __init__(
        self,
        max_connections: int,
        max_messages_per_connection: int | None = None,
        idle_timeout: float | None = 60.0,
    ) -> None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError("max_connections must be an int")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_messages_per_connection is not None and max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1 (or None)")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError("idle_timeout must be positive (or None)")
        self.max_connections = max_connections
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_timeout = idle_timeout
        self.entries: list[PoolEntry[C]] = []
        self.waiting: deque[W] = deque()
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return f"<PoolPlanner {self.entries!r}, {len(self.waiting)} waiting>"

    @property
    def idle_count(self) -> int:
        """Connections open and free."""
        return sum(1 for entry in self.entries if entry.state is _IDLE)

    @property
    def active_count(self) -> int:
        """Connections handed out."""
        return sum(1 for entry in self.entries if entry.state is _ACTIVE)

    def request(self, token: W) -> None:
        """A caller wants a connection; it waits its turn (first come, first served)."""
        self.waiting.append(token)

    def cancel(self, token: W) -> bool:
        """A waiting caller gave up; returns whether it was still waiting."""
        try:
            self.waiting.remove(token)
        except ValueError:
            return False
        return True

    def release(self, entry: PoolEntry[C], now: float, *, reusable: bool, sent: int = 0) -> None:
        """A caller is done with ``entry``.

        Args:
            reusable: the connection is healthy and its state is known; if
                False it is to be closed (a connection in doubt is never
                reused): its state becomes CLOSING, and the pool calls
                :meth:`discard` once it is closed.
            sent: messages completed during this use.
        """
        if entry.state is not _ACTIVE:
            return
        entry.messages_sent += sent
        limit = self.max_messages_per_connection
        if entry.client is None:
            self._remove(entry)  # never opened: nothing to close
        elif not reusable or (limit is not None and entry.messages_sent >= limit):
            entry.state = _CLOSING
        else:
            entry.state = _IDLE
            entry.idle_since = now

    def discard(self, entry: PoolEntry[C]) -> None:
        """Take ``entry`` out of the pool: it failed to open, or it is closed now.

        Until then a closing entry counts against ``max_connections``: its
        socket is still open.
        """
        self._remove(entry)

    def _remove(self, entry: PoolEntry[C]) -> None:
        entry.state = _CLOSED
        if entry in self.entries:
            self.entries.remove(entry)

    def next_expiry(self) -> float | None:
        """When the soonest idle connection expires, or None."""
        if self.idle_timeout is None:
            return None
        times = [e.idle_since + self.idle_timeout for e in self.entries if e.state is _IDLE]
        return min(times) if times else None

    def step(self, now: float) -> Plan[C, W]:
        """Decide: expire idle connections, then serve waiters in order.

        An idle connection is preferred (the most recently used first: it is
        the likeliest to still be open); otherwise a new one is created while
        under ``max_connections``; otherwise the waiter keeps waiting, and so
        does everyone behind it.
        """
        plan: Plan[C, W] = Plan()
        if self.idle_timeout is not None:
            for entry in self.entries:
                if entry.state is _IDLE and now - entry.idle_since >= self.idle_timeout:
                    entry.state = _CLOSING
                    plan.close.append(entry)
        while self.waiting:
            idle = [e for e in self.entries if e.state is _IDLE]
            if idle:
                entry = max(idle, key=lambda e: e.idle_since)
                entry.state = _ACTIVE
            elif len(self.entries) < self.max_connections:
                entry = PoolEntry[C](next(self._numbers))
                self.entries.append(entry)
            else:
                break
            plan.assign.append((self.waiting.popleft(), entry))
        return plan

    def close_all_idle(self) -> list[PoolEntry[C]]:
        """Mark every idle connection CLOSING (for shutdown) and return them."""
        idle = [e for e in self.entries if e.state is _IDLE]
        for entry in idle:
            entry.state = _CLOSING
        return idle


# ----------------------------------------------------------------------------- batches


class Verdict(enum.Enum):
    """What one send's outcome means for its message in a batch."""

    SENT = "sent"  # the 2xx to its dot (maybe with some recipients refused)
    UNKNOWN = "unknown"  # its dot left and no reply came: never resent
    PERMANENT = "permanent"  # refused for good (5xx), or the item itself is bad
    TRANSIENT = "transient"  # a real attempt failed for now: a 4xx reply, or lost mid-content
    NOT_SENT = "not sent"  # nothing of it left (it waited behind a failure): no attempt


# Members as module globals for the paths every failed message takes: on
# CPython 3.11 looking a member up on its Enum class costs ten times as much.
_SENT = Verdict.SENT
_UNKNOWN = Verdict.UNKNOWN
_PERMANENT = Verdict.PERMANENT
_TRANSIENT = Verdict.TRANSIENT
_NOT_SENT = Verdict.NOT_SENT
_KIND_SENT = Kind.SENT
_KIND_REFUSED = Kind.REFUSED
_KIND_RETRYABLE = Kind.RETRYABLE
_KIND_UNKNOWN = Kind.UNKNOWN


def verdict_of(outcome: object, content_left: bool = False) -> Verdict:
    """What one message's outcome means for its account in a batch.

    The kind of outcome comes from the one classifier, :func:`outcomes.classify`;
    the batch only adds whether a failure was a real attempt.

    Args:
        outcome: the ``(errors, reply)`` tuple or the exception.
        content_left: some of its content was written before the connection
            failed (a large message, before its dot): a real attempt.
    """
    kind = classify(outcome)  # type: ignore[arg-type]
    if kind is _KIND_SENT or kind is _KIND_REFUSED:
        return _SENT
    if kind is _KIND_UNKNOWN:
        return _UNKNOWN
    if isinstance(outcome, SMTPRecipientsRefused) or (
        isinstance(outcome, SMTPResponseException) and outcome.code >= 0
    ):
        # A reply refused it (to MAIL, RCPT, DATA or the dot): a real attempt.
        return _TRANSIENT if kind is _KIND_RETRYABLE else _PERMANENT
    if isinstance(outcome, (SMTPServerDisconnected, SMTPTimeoutError, SMTPResponseException)):
        # The connection failed (lost, timed out, broke the protocol) with no
        # reply about this message, before its dot.
        return _TRANSIENT if content_left else _NOT_SENT
    return _PERMANENT  # a bad address or item, an unsupported need...


def check_batch_limits(max_attempts: int, max_reconnects: int) -> None:
    """Validate a pool's batch limits.

    Raises:
        TypeError / ValueError: not ints, ``max_attempts`` below 1 or
            ``max_reconnects`` below 0.
    """
    for name, value, least in (
        ("max_attempts", max_attempts, 1),
        ("max_reconnects", max_reconnects, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < least:
            raise ValueError(f"{name} must be at least {least}, not {value}")


class Line:
    """A batch's messages waiting for a connection, in order (a deque of indices).

    Kept in three parts: those put back in front, the fresh ones never taken
    (a range: a connection's share of them is taken as one slice, with no
    step per message), and those put back at the end.
    """

    __slots__ = ("_back", "_fresh", "_front")

    def __init__(self, total: int) -> None:
        self._front: deque[int] = deque()
        self._fresh = range(total)
        self._back: deque[int] = deque()

    def __bool__(self) -> bool:
        return bool(self._front or self._fresh or self._back)

    def __len__(self) -> int:
        return len(self._front) + len(self._fresh) + len(self._back)

    def __iter__(self) -> Iterator[int]:
        return itertools.chain(self._front, self._fresh, self._back)

    def __repr__(self) -> str:
        return f"Line({list(self)!r})"

    def append(self, index: int) -> None:
        """Put ``index`` back at the end."""
        self._back.append(index)

    def extendleft(self, indices: Iterable[int]) -> None:
        """Put each of ``indices`` back in front, in turn (as :meth:`deque.extendleft`)."""
        self._front.extendleft(indices)

    def clear(self) -> None:
        """Empty the line."""
        self._front.clear()
        self._fresh = range(0)
        self._back.clear()

    def take(self, most: int) -> list[int]:
        """Remove and return up to ``most`` indices from the front."""
        front, back = self._front, self._back
        taken = [front.popleft() for _ in range(min(most, len(front)))] if front else []
        if self._fresh and len(taken) < most:
            share = most - len(taken)
            taken += self._fresh[:share]
            self._fresh = self._fresh[share:]
        if back and len(taken) < most:
            taken += [back.popleft() for _ in range(min(most - len(taken), len(back)))]
        return taken


class BatchBook:
    """The accounts and outcomes of one batch's messages (by index), as plain bookkeeping.

    Every message is pending, in flight on a connection, or settled (its final
    outcome known). A message is charged an attempt only for a real one (a
    reply refused it, or its content left); one that waited behind a failure
    goes back to the front of the line uncharged. A transient failure goes to
    the back, until ``max_attempts`` are used. Connections lost without
    getting any message further count as fruitless; after ``max_reconnects``
    in a row (any progress resets the count) the batch stops, and what was
    not sent fails with its last error.

    Args:
        total: messages in the batch.
        max_attempts: real attempts allowed per message.
        max_reconnects: fruitless connections in a row tolerated after the
            first one.

    Attributes:
        outcomes: each message's final outcome, None until it is settled.
        latest: each message's latest outcome, final or not: what it fails
            with if the batch stops before it could be sent again.
    """

    def __init__(self, total: int, max_attempts: int = 3, max_reconnects: int = 3) -> None:
        check_batch_limits(max_attempts, max_reconnects)
        self.max_attempts = max_attempts
        self.max_reconnects = max_reconnects
        self.pending = Line(total)
        self.outcomes: list[Outcome | Exception | None] = [None] * total
        self.latest: list[Outcome | Exception | None] = [None] * total
        self.attempts = [0] * total
        self.in_flight = 0
        self.settled = 0
        self.total = total
        #: Set once the batch gave up on new connections.
        self.stopped = False
        self._fruitless = 0
        self._front: list[int] = []

    def __repr__(self) -> str:
        return (
            f"<BatchBook {self.settled}/{self.total} settled, {len(self.pending)} pending, "
            f"{self.in_flight} in flight{', stopped' if self.stopped else ''}>"
        )

    @property
    def finished(self) -> bool:
        """Nothing pending and nothing in flight."""
        return not self.pending and not self.in_flight

    def take(self, most: int) -> list[int]:
        """Up to ``most`` pending messages for one connection (in flight from now)."""
        taken = self.pending.take(most)
        self.in_flight += len(taken)
        return taken

    def record(self, index: int, verdict: Verdict) -> bool:
        """Judge an in-flight message's outcome; True when it is final (settle it).

        Otherwise it went back in line: a NOT_SENT one to the front once its
        connection's share is done (:meth:`chunk_done`), a TRANSIENT one to the back.
        """
        self.in_flight -= 1
        if verdict is not _NOT_SENT:
            self._fruitless = 0  # something moved: the server is taking work
        final = verdict is _SENT or verdict is _UNKNOWN or verdict is _PERMANENT
        if verdict is _TRANSIENT:
            self.attempts[index] += 1
            final = self.attempts[index] >= self.max_attempts
        if final or self.stopped:
            self.settled += 1
            return True
        if verdict is _NOT_SENT:
            self._front.append(index)
        else:
            self.pending.append(index)
        return False

    def chunk_done(self) -> None:
        """Put the messages that never left back at the front, in their order."""
        self.pending.extendleft(reversed(self._front))
        self._front.clear()

    def connection_lost(self, progressed: bool) -> bool:
        """A connection of the batch was lost; whether to try another one."""
        if not progressed:
            self._fruitless += 1
            if self._fruitless > self.max_reconnects:
                self.stopped = True
        return not self.stopped

    def give_up(self) -> list[int]:
        """Stop: every pending message is to be settled with its last error."""
        self.stopped = True
        self.chunk_done()
        left = list(self.pending)
        self.pending.clear()
        self.settled += len(left)
        return left


#: Told each message's final outcome as a share settles it: (index in the batch, outcome).
FinalCallback = Callable[[int, "Outcome | Exception"], object]
#: Told each judgement of a share: (position in the share, outcome, whether it goes again).
JudgedCallback = Callable[[int, "Outcome | Exception", bool], object]


class Share:
    """One connection's share of a batch: its messages judged as their outcomes arrive.

    :meth:`judge` is the sending layer's result callback for the share: it
    records each message's verdict in the :class:`BatchBook`, and a final
    one's outcome in ``book.outcomes``, in one step.

    Args:
        book: the batch's accounts.
        indices: the share's messages (from :meth:`BatchBook.take`), by position.
        connected: whether the share's connection is still up (a message not
            sent on a live connection is charged an attempt: nothing can go
            round on one connection for ever).
        on_final: told each message settled by this share (index, outcome).
        on_judged: told each judgement (position, outcome, whether it goes again).
    """

    __slots__ = (
        "accepted",
        "book",
        "connected",
        "content_left",
        "indices",
        "judged",
        "on_final",
        "on_judged",
        "progressed",
    )

    def __init__(
        self,
        book: BatchBook,
        indices: list[int],
        connected: Callable[[], bool],
        on_final: FinalCallback | None = None,
        on_judged: JudgedCallback | None = None,
    ) -> None:
        self.book = book
        self.indices = indices
        self.connected = connected
        self.on_final = on_final
        self.on_judged = on_judged
        #: 1 at the position of each message judged already (each is judged once).
        self.judged = bytearray(len(indices))
        #: Positions whose content left ahead of their dot (a failure is a real attempt).
        self.content_left: set[int] = set()
        #: Messages accepted by the server, settled by this share.
        self.accepted = 0
        #: Whether any message got further (anything but "not sent").
        self.progressed = False

    def __repr__(self) -> str:
        return f"<Share of {len(self.indices)}, {self.judged.count(1)} judged>"

    @property
    def complete(self) -> bool:
        """Whether every message of the share was judged."""
        return 0 not in self.judged

    def judge(self, position: int, outcome: Outcome | Exception) -> None:
        """Judge the outcome of the message at ``position``; a second call is ignored."""
        judged = self.judged
        if judged[position]:
            return
        judged[position] = 1
        index = self.indices[position]
        book = self.book
        if outcome.__class__ is tuple and not outcome[0]:
            # Accepted for every recipient: nearly every message. This is
            # verdict_of (SENT) and BatchBook.record (final) inline, as the one
            # step per message on the pool's hot path.
            book.in_flight -= 1
            book._fruitless = 0
            book.settled += 1
            book.outcomes[index] = outcome
            self.accepted += 1
            self.progressed = True
            if self.on_judged is not None:
                self.on_judged(position, outcome, False)
        else:
            book.latest[index] = outcome
            verdict = verdict_of(outcome, position in self.content_left)
            if verdict is _NOT_SENT and self.connected():
                verdict = _TRANSIENT
            if verdict is not _NOT_SENT:
                self.progressed = True
            final = book.record(index, verdict)
            if self.on_judged is not None:
                self.on_judged(position, outcome, not final)
            if not final:
                return  # back in line
            if verdict is _SENT:
                self.accepted += 1
            book.outcomes[index] = outcome
        if self.on_final is not None:
            self.on_final(index, outcome)
