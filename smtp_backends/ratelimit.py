"""Sending rate limits: messages per second and recipients per minute.

A :class:`RateLimiter` is shared by everyone who holds it: give one to an
:class:`~smtp_backends.SMTPPool` (``rate_limit=``) and all its connections
draw from the same buckets; give one :class:`RedisRateLimiter` to several
processes (Celery workers) and they share the buckets through Redis.

The buckets follow the generic cell rate algorithm (GCRA, a token bucket
kept as one "theoretical arrival time" per bucket): a request for ``n``
units reserves its place at once and then sleeps until its turn, so callers
are served in order and the rate holds exactly over time, with ``burst``
units allowed at once.

A server that says "slow down" (a 421, or a 4xx reply about too many
messages, connections or a rate) slows the limiter down instead of failing
the batch: the rate is halved (down to ``min_rate_fraction``), everyone
pauses for a back-off that doubles while the throttling goes on, and the
message is tried again. After ``recovery`` seconds without throttling the
rate doubles back, step by step, to the configured one.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .errors import (
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from .protocol.transaction import Envelope, Outcome
from .transport import logger

__all__ = ("RateLimiter", "RedisRateLimiter", "is_throttle_reply")

# RFC 5321 4.2.2 gives no code for "too fast": servers say it in words
# (Gmail 421-4.7.28 / 450-4.2.1 "rate limited", Exchange 452 4.3.2 / 451 4.7.500
# "Server busy", SES 454 "Throttling failure: Maximum sending rate exceeded").
_THROTTLE_TEXT = re.compile(
    r"too many|too much|rate|limit|throttl|slow down|try again later|exceeded|busy"
    r"|temporarily deferred|quota",
    re.IGNORECASE,
)


def is_throttle_reply(code: int, text: str) -> bool:
    """Whether a reply asks the client to send more slowly.

    421 (the server closes the session: RFC 5321 3.8) always counts; another
    4xx counts when its text speaks of too many messages, a rate or a limit.
    """
    return code == 421 or (400 <= code < 500 and bool(_THROTTLE_TEXT.search(text)))


def _throttled(outcome: object) -> bool:
    if isinstance(outcome, SMTPRecipientsRefused):
        refusals: list[Any] = list(outcome.recipients)
        return bool(refusals) and all(
            isinstance(error, SMTPResponseException)
            and is_throttle_reply(error.code, error.message)
            for error in refusals
        )
    if isinstance(outcome, SMTPResponseException) and not isinstance(
        outcome, SMTPServerDisconnected
    ):
        return is_throttle_reply(outcome.code, outcome.message)
    return False


def _positive(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0 (or None), not {value!r}")
    return float(value)


class RateLimiter:
    """Messages per second and recipients per minute, shared by whoever holds it.

    Args:
        messages_per_second: the most messages started per second (None: no limit).
        recipients_per_minute: the most recipients per minute (None: no limit).
        burst: messages that may start at once after a quiet period (default 1).
        recipient_burst: recipients at once (default: one minute's worth / 60,
            at least 1).
        min_rate_fraction: the slowest back-off, as a fraction of the rates.
        backoff: the first pause after a throttling reply, in seconds;
            doubled while throttling goes on, up to ``max_backoff``.
        recovery: seconds without throttling before the rate doubles back.
        retries: how often one message is tried again after a throttling
            reply on a connection that stays open.

    Raises:
        ValueError: no limit at all, or a bad number.
    """

    def __init__(
        self,
        *,
        messages_per_second: float | None = None,
        recipients_per_minute: float | None = None,
        burst: int = 1,
        recipient_burst: int | None = None,
        min_rate_fraction: float = 1 / 16,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        recovery: float = 30.0,
        retries: int = 5,
    ) -> None:
        self.messages_per_second = _positive(messages_per_second, "messages_per_second")
        self.recipients_per_minute = _positive(recipients_per_minute, "recipients_per_minute")
        if self.messages_per_second is None and self.recipients_per_minute is None:
            raise ValueError("A RateLimiter needs messages_per_second or recipients_per_minute")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int >= 1, not {burst!r}")
        if recipient_burst is None:
            per_second = (self.recipients_per_minute or 60.0) / 60.0
            recipient_burst = max(1, int(per_second))
        if (
            isinstance(recipient_burst, bool)
            or not isinstance(recipient_burst, int)
            or recipient_burst < 1
        ):
            raise ValueError(f"recipient_burst must be an int >= 1, not {recipient_burst!r}")
        if not 0 < min_rate_fraction <= 1:
            raise ValueError(f"min_rate_fraction must be in (0, 1], not {min_rate_fraction!r}")
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        if not recovery > 0:
            raise ValueError(f"recovery must be > 0, not {recovery!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {retries!r}")
        self.burst = burst
        self.recipient_burst = recipient_burst
        self.min_rate_fraction = float(min_rate_fraction)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.recovery = float(recovery)
        self.retries = retries
        # GCRA state: per bucket, the theoretical arrival time (monotonic clock).
        self._message_tat = 0.0
        self._recipient_tat = 0.0
        self._factor = 1.0  # the back-off: a fraction of the configured rates
        self._paused_until = 0.0
        self._changed = 0.0  # when the factor last changed
        self._strikes = 0  # throttling replies in a row
        self._lock = threading.Lock()
        #: Throttling replies seen (for monitoring and tests).
        self.throttles = 0

    def __repr__(self) -> str:
        limits = []
        if self.messages_per_second is not None:
            limits.append(f"{self.messages_per_second:g} msg/s")
        if self.recipients_per_minute is not None:
            limits.append(f"{self.recipients_per_minute:g} rcpt/min")
        return f"<{type(self).__name__} {', '.join(limits)} x{self.rate_fraction:g}>"

    @property
    def rate_fraction(self) -> float:
        """The current back-off: 1.0 at full rate, smaller while slowed down."""
        return self._factor

    # The buckets ------------------------------------------------------------

    async def acquire(self, recipients: int = 1) -> None:
        """Wait for this message's turn (one message, ``recipients`` recipients)."""
        delay = await self._reserve(max(1, recipients))
        if delay > 0:
            await asyncio.sleep(delay)

    async def _reserve(self, recipients: int) -> float:
        """Reserve the units now; return the seconds to wait before using them."""
        with self._lock:
            now = time.monotonic()
            self._recover(now)
            start = max(now, self._paused_until)
            allowed = start
            if self.messages_per_second is not None:
                rate = self.messages_per_second * self._factor
                self._message_tat, at = _gcra(self._message_tat, start, 1, rate, self.burst)
                allowed = max(allowed, at)
            if self.recipients_per_minute is not None:
                rate = self.recipients_per_minute / 60.0 * self._factor
                self._recipient_tat, at = _gcra(
                    self._recipient_tat, start, recipients, rate, self.recipient_burst
                )
                allowed = max(allowed, at)
            return allowed - now

    def _recover(self, now: float) -> None:
        if self._factor < 1.0 and now - self._changed >= self.recovery:
            self._factor = min(1.0, self._factor * 2)
            self._changed = now
            self._strikes = 0

    async def throttled(self) -> float:
        """The server asked to slow down: halve the rate and pause everyone.

        Returns:
            The pause, in seconds.
        """
        with self._lock:
            now = time.monotonic()
            pause = self._pause_for(self._strikes)
            self._strikes += 1
            self.throttles += 1
            self._factor = max(self.min_rate_fraction, self._factor / 2)
            self._changed = now
            self._paused_until = max(self._paused_until, now + pause)
        return pause

    def _pause_for(self, strikes: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0 ** min(strikes, 30))

    # Sending ------------------------------------------------------------------

    async def send(
        self,
        preparers: Sequence[Callable[[], Envelope]],
        send_one: Callable[[Envelope], Awaitable[Outcome | Exception]],
        connected: Callable[[], bool],
        on_result: Callable[[int, Outcome | Exception], object] | None = None,
    ) -> list[Outcome | Exception]:
        """Send messages one at a time, each when the limiter allows.

        What :meth:`SMTP.send_messages` does when a limiter is configured
        (one message per turn: a pipelined group would start several at once).
        A throttling reply slows the limiter and the message is tried again
        (up to ``retries`` times) while the connection stays open; when the
        server closed it (421), the message and those after it are reported
        as not sent, so that a pool sends them over another connection.
        """
        outcomes: list[Outcome | Exception] = []
        for index, prepare in enumerate(preparers):
            outcome: Outcome | Exception
            try:
                envelope = prepare()
            except Exception as exc:  # as delivery does: this message fails, the rest go on
                outcome = exc
            else:
                outcome = await self._send_with_retries(envelope, send_one, connected)
            outcomes.append(outcome)
            if on_result is not None:
                try:
                    on_result(index, outcome)
                except Exception:  # as in SMTP.send_messages: logged, never fatal
                    logger.exception("on_result callback failed for message %d", index)
        return outcomes

    async def _send_with_retries(
        self,
        envelope: Envelope,
        send_one: Callable[[Envelope], Awaitable[Outcome | Exception]],
        connected: Callable[[], bool],
    ) -> Outcome | Exception:
        attempts = 0
        while True:
            if not connected():
                return SMTPServerDisconnected(
                    "Not sent: the connection was closed before this message"
                )
            await self.acquire(len(envelope.recipients))
            outcome = await send_one(envelope)
            if not _throttled(outcome):
                return outcome
            pause = await self.throttled()
            assert isinstance(outcome, SMTPException)
            logger.info("server asked to slow down (%s); pausing %.1f s", outcome, pause)
            if not connected():
                # 421: the session is over, but nothing was accepted: another
                # connection may send it (a pool does, once).
                lost = SMTPServerDisconnected(f"Not sent: the server is throttling ({outcome})")
                lost.__cause__ = outcome
                return lost
            attempts += 1
            if attempts > self.retries:
                return outcome


def _gcra(tat: float, now: float, units: int, rate: float, burst: int) -> tuple[float, float]:
    """One GCRA reservation: (the new arrival time, when the units may be used)."""
    new_tat = max(tat, now) + units / rate
    return new_tat, max(now, new_tat - burst / rate)


# Redis: the same algorithm in one script, on the server's clock (TIME), so
# that every process shares one state. Times in microseconds (exact in a
# double until year 2255). KEYS[1] is a hash: message and recipient arrival
# times, factor, paused_until, changed, strikes.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key = KEYS[1]
local state = redis.call('HMGET', key, 'mtat', 'rtat', 'factor', 'paused', 'changed')
local mtat = tonumber(state[1]) or 0
local rtat = tonumber(state[2]) or 0
local factor = tonumber(state[3]) or 1
local paused = tonumber(state[4]) or 0
local changed = tonumber(state[5]) or 0
local mrate = tonumber(ARGV[1])
local mburst = tonumber(ARGV[2])
local rrate = tonumber(ARGV[3])
local rburst = tonumber(ARGV[4])
local units = tonumber(ARGV[5])
local recovery = tonumber(ARGV[6])
if factor < 1 and now - changed >= recovery then
  factor = math.min(1, factor * 2)
  changed = now
  redis.call('HSET', key, 'factor', factor, 'changed', changed, 'strikes', 0)
end
local start = math.max(now, paused)
local allowed = start
if mrate > 0 then
  local rate = mrate * factor
  mtat = math.max(mtat, start) + 1000000 / rate
  allowed = math.max(allowed, mtat - mburst * 1000000 / rate)
  redis.call('HSET', key, 'mtat', string.format('%.0f', mtat))
end
if rrate > 0 then
  local rate = rrate * factor
  rtat = math.max(rtat, start) + units * 1000000 / rate
  allowed = math.max(allowed, rtat - rburst * 1000000 / rate)
  redis.call('HSET', key, 'rtat', string.format('%.0f', rtat))
end
redis.call('PEXPIRE', key, 3600000)
return string.format('%.0f', allowed - now)
"""

_THROTTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key = KEYS[1]
local state = redis.call('HMGET', key, 'factor', 'paused', 'strikes')
local factor = tonumber(state[1]) or 1
local paused = tonumber(state[2]) or 0
local strikes = tonumber(state[3]) or 0
local minimum = tonumber(ARGV[1])
local backoff = tonumber(ARGV[2])
local maximum = tonumber(ARGV[3])
local pause = math.min(maximum, backoff * (2 ^ math.min(strikes, 30)))
factor = math.max(minimum, factor / 2)
paused = math.max(paused, now + pause)
redis.call('HSET', key, 'factor', factor, 'paused', string.format('%.0f', paused),
           'changed', string.format('%.0f', now), 'strikes', strikes + 1)
redis.call('PEXPIRE', key, 3600000)
return string.format('%.0f', pause)
"""


class RedisRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets live in Redis, shared by several processes.

    Every process (say every Celery worker) that builds one with the same
    ``url`` and ``key`` draws from the same buckets, timed by the Redis
    server's clock. Each message costs one Redis round trip (one script).

    Args:
        url: the Redis URL (``redis://host:6379/0``).
        key: the Redis key holding this limiter's state.
        client: an existing ``redis.asyncio.Redis`` client instead of ``url``.
        **limits: the keywords of :class:`RateLimiter`.

    Raises:
        ImportError: the redis package is not installed.
        ValueError: as :class:`RateLimiter`, or neither ``url`` nor ``client``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key: str = "smtp_backends:ratelimit",
        client: Any = None,
        **limits: Any,
    ) -> None:
        super().__init__(**limits)
        if (url is None) == (client is None):
            raise ValueError("Give a Redis url or a client (one of them)")
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty str")
        try:
            import redis.asyncio  # noqa: F401 - checked here, used per event loop
        except ImportError:  # pragma: no cover - the extra is part of `dev`
            from .extras import install_hint

            raise ImportError(f"RedisRateLimiter needs redis: {install_hint('redis')}") from None
        self.url = url
        self.key = key
        self._client = client
        # redis.asyncio clients belong to one event loop: one per loop.
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} redis key={self.key!r}>"

    def _redis(self) -> Any:
        if self._client is not None:
            return self._client
        import redis.asyncio

        loop = asyncio.get_running_loop()
        known = self._clients.get(id(loop))
        if known is not None and known[0] is loop:
            return known[1]
        assert self.url is not None
        client = redis.asyncio.Redis.from_url(self.url)
        self._clients[id(loop)] = (loop, client)
        return client

    async def _reserve(self, recipients: int) -> float:
        micros = await self._redis().eval(
            _RESERVE,
            1,
            self.key,
            self.messages_per_second or 0,
            self.burst,
            (self.recipients_per_minute or 0) / 60.0,
            self.recipient_burst,
            recipients,
            int(self.recovery * 1_000_000),
        )
        return int(micros) / 1_000_000

    async def throttled(self) -> float:
        """As :meth:`RateLimiter.throttled`, for every process sharing the key."""
        self.throttles += 1
        micros = await self._redis().eval(
            _THROTTLE,
            1,
            self.key,
            self.min_rate_fraction,
            int(self.backoff * 1_000_000),
            int(self.max_backoff * 1_000_000),
        )
        return int(micros) / 1_000_000

    @property
    def rate_fraction(self) -> float:
        """Not known locally for a shared limiter: see :meth:`shared_rate_fraction`."""
        return 1.0

    async def shared_rate_fraction(self) -> float:
        """The back-off currently stored in Redis (1.0 at full rate)."""
        value = await self._redis().hget(self.key, "factor")
        return 1.0 if value is None else float(value)

    async def reset(self) -> None:
        """Forget the shared state (buckets and back-off)."""
        await self._redis().delete(self.key)

    async def aclose(self) -> None:
        """Close the Redis connection this limiter opened on the running loop."""
        loop = asyncio.get_running_loop()
        known = self._clients.pop(id(loop), None)
        if known is not None and known[0] is loop:
            await known[1].aclose()
