"""The decisions of a connection pool, as a pure step without I/O.

:class:`PoolPlanner` keeps the pool's bookkeeping (which connections exist,
which are idle or in use, who waits) and :meth:`PoolPlanner.step` decides,
from that state and the current time, which waiter gets which connection,
which connections to open and which to close. The pool applies the plan
and does the I/O afterwards. Nothing here awaits, so a step is atomic on an
event loop, and the whole policy is unit-tested with plain values.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ("EntryState", "Plan", "PoolEntry", "PoolPlanner")


class EntryState(enum.Enum):
    """Where a pooled connection stands."""

    ACTIVE = "active"  # handed to one caller (maybe still being opened)
    IDLE = "idle"  # open and free
    CLOSING = "closing"  # being closed (QUIT); still counts against the limit
    CLOSED = "closed"  # out of the pool


@dataclass(eq=False)
class PoolEntry:
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
    client: Any = None
    messages_sent: int = 0
    idle_since: float = 0.0

    def __repr__(self) -> str:
        opened = "" if self.client is not None else ", unopened"
        return f"<#{self.number} {self.state.value}, {self.messages_sent} sent{opened}>"


@dataclass
class Plan:
    """What one step decided: hand these out, close those."""

    assign: list[tuple[Hashable, PoolEntry]] = field(default_factory=list)
    close: list[PoolEntry] = field(default_factory=list)


class PoolPlanner:
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
        self.entries: list[PoolEntry] = []
        self.waiting: deque[Hashable] = deque()
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return f"<PoolPlanner {self.entries!r}, {len(self.waiting)} waiting>"

    @property
    def idle_count(self) -> int:
        """Connections open and free."""
        return sum(1 for entry in self.entries if entry.state is EntryState.IDLE)

    @property
    def active_count(self) -> int:
        """Connections handed out."""
        return sum(1 for entry in self.entries if entry.state is EntryState.ACTIVE)

    def request(self, token: Hashable) -> None:
        """A caller wants a connection; it waits its turn (first come, first served)."""
        self.waiting.append(token)

    def cancel(self, token: Hashable) -> bool:
        """A waiting caller gave up; returns whether it was still waiting."""
        try:
            self.waiting.remove(token)
        except ValueError:
            return False
        return True

    def release(self, entry: PoolEntry, now: float, *, reusable: bool, sent: int = 0) -> None:
        """A caller is done with ``entry``.

        Args:
            reusable: the connection is healthy and its state is known; if
                False it is to be closed (a connection in doubt is never
                reused): its state becomes CLOSING, and the pool calls
                :meth:`discard` once it is closed.
            sent: messages completed during this use.
        """
        if entry.state is not EntryState.ACTIVE:
            return
        entry.messages_sent += sent
        limit = self.max_messages_per_connection
        if entry.client is None:
            self._remove(entry)  # never opened: nothing to close
        elif not reusable or (limit is not None and entry.messages_sent >= limit):
            entry.state = EntryState.CLOSING
        else:
            entry.state = EntryState.IDLE
            entry.idle_since = now

    def discard(self, entry: PoolEntry) -> None:
        """Take ``entry`` out of the pool: it failed to open, or it is closed now.

        Until then a closing entry counts against ``max_connections``: its
        socket is still open.
        """
        self._remove(entry)

    def _remove(self, entry: PoolEntry) -> None:
        entry.state = EntryState.CLOSED
        if entry in self.entries:
            self.entries.remove(entry)

    def next_expiry(self) -> float | None:
        """When the soonest idle connection expires, or None."""
        if self.idle_timeout is None:
            return None
        times = [
            e.idle_since + self.idle_timeout for e in self.entries if e.state is EntryState.IDLE
        ]
        return min(times) if times else None

    def step(self, now: float) -> Plan:
        """Decide: expire idle connections, then serve waiters in order.

        An idle connection is preferred (the most recently used first: it is
        the likeliest to still be open); otherwise a new one is created while
        under ``max_connections``; otherwise the waiter keeps waiting, and so
        does everyone behind it.
        """
        plan = Plan()
        if self.idle_timeout is not None:
            for entry in self.entries:
                if entry.state is EntryState.IDLE and now - entry.idle_since >= self.idle_timeout:
                    entry.state = EntryState.CLOSING
                    plan.close.append(entry)
        while self.waiting:
            idle = [e for e in self.entries if e.state is EntryState.IDLE]
            if idle:
                entry = max(idle, key=lambda e: e.idle_since)
                entry.state = EntryState.ACTIVE
            elif len(self.entries) < self.max_connections:
                entry = PoolEntry(next(self._numbers))
                self.entries.append(entry)
            else:
                break
            plan.assign.append((self.waiting.popleft(), entry))
        return plan

    def close_all_idle(self) -> list[PoolEntry]:
        """Mark every idle connection CLOSING (for shutdown) and return them."""
        idle = [e for e in self.entries if e.state is EntryState.IDLE]
        for entry in idle:
            entry.state = EntryState.CLOSING
        return idle
