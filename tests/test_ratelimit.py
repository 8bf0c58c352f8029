"""Rate limits: buckets shared by a pool's connections, back-off on "slow down" replies,
and the Redis-backed limiter against a real redis-server.

Timing assertions leave room for a loaded machine: they check that the limit is never
exceeded (a lower bound on the time) and only loosely that it is not far too slow.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from integrations.requirements import missing
from smtp_backends import SMTP, SMTPPool
from smtp_backends.errors import SMTPRecipientsRefused, SMTPSenderRefused
from smtp_backends.ratelimit import RateLimiter, RedisRateLimiter, is_throttle_reply
from tests.servers import RecordingHandler, SMTPServer

RAW = b"Subject: limited\r\n\r\nbody\r\n"


def items(count: int) -> list[tuple[str, list[str], bytes]]:
    return [("sender@example.com", [f"r{i}@example.com"], RAW) for i in range(count)]


class ThrottlingHandler(RecordingHandler):
    """Answers MAIL with ``reply`` the first ``times`` times, then as usual."""

    def __init__(self, reply: str, times: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.reply = reply
        self.times = times

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.times > 0:
            self.times -= 1
            self.commands.append("MAIL")
            return self.reply
        result: str = await super().handle_MAIL(server, session, envelope, address, options)
        return result


# --------------------------------------------------------------------------- buckets


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "4.7.0 Service shutting down", True),
        (451, "4.7.1 Too many messages, slow down", True),
        (454, "Throttling failure: Maximum sending rate exceeded.", True),
        (450, "4.2.1 The user you are trying to contact is receiving mail at a rate", True),
        (452, "4.3.2 Server busy", True),
        (450, "4.2.1 mailbox temporarily unavailable", False),
        (550, "5.7.1 rate limited for good", False),
        (250, "OK", False),
    ],
)
def test_throttle_replies(code: int, text: str, expected: bool) -> None:
    assert is_throttle_reply(code, text) is expected


async def test_messages_per_second() -> None:
    limiter = RateLimiter(messages_per_second=20)
    started = time.monotonic()
    for _ in range(11):
        await limiter.acquire()
    elapsed = time.monotonic() - started
    assert 0.49 <= elapsed < 1.0  # 10 intervals of 50 ms after the first message


async def test_burst_lets_a_quiet_limiter_start_at_once() -> None:
    limiter = RateLimiter(messages_per_second=10, burst=5)
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert time.monotonic() - started < 0.08  # no sleep at all (room for a loaded machine)
    await limiter.acquire()
    assert time.monotonic() - started >= 0.09


async def test_recipients_per_minute() -> None:
    limiter = RateLimiter(recipients_per_minute=600, recipient_burst=5)  # 10 per second
    started = time.monotonic()
    await limiter.acquire(5)
    await limiter.acquire(5)
    await limiter.acquire(1)
    assert 0.59 <= time.monotonic() - started < 1.1


async def test_concurrent_callers_share_the_bucket() -> None:
    limiter = RateLimiter(messages_per_second=40)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(21)))
    assert 0.49 <= time.monotonic() - started < 1.0


async def test_throttle_halves_the_rate_pauses_and_recovers() -> None:
    limiter = RateLimiter(messages_per_second=50, backoff=0.2, recovery=0.3)
    await limiter.acquire()
    started = time.monotonic()  # the pause counts from the throttling reply
    assert await limiter.throttled() == pytest.approx(0.2)
    assert limiter.rate_fraction == 0.5
    await limiter.acquire()
    assert time.monotonic() - started >= 0.2  # everyone waits out the pause
    assert await limiter.throttled() == pytest.approx(0.4)  # doubled while it goes on
    assert limiter.rate_fraction == 0.25
    await asyncio.sleep(0.7)
    await limiter.acquire()
    assert limiter.rate_fraction == 0.5  # one step back up per quiet recovery period


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"messages_per_second": 0},
        {"messages_per_second": -1},
        {"messages_per_second": True},
        {"messages_per_second": 1, "burst": 0},
        {"recipients_per_minute": 10, "recipient_burst": 0},
        {"messages_per_second": 1, "min_rate_fraction": 0},
        {"messages_per_second": 1, "retries": -1},
        {"messages_per_second": 1, "recovery": 0},
    ],
)
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_config_checks_the_type() -> None:
    with pytest.raises(TypeError, match="RateLimiter"):
        SMTP(rate_limit=14)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- over the wire


async def test_pool_connections_share_one_limit(make_smtpd: Callable[..., SMTPServer]) -> None:
    server = make_smtpd()
    host, port = server.address
    limiter = RateLimiter(messages_per_second=20)
    seen: list[float] = []
    async with SMTPPool(hostname=host, port=port, max_connections=4, rate_limit=limiter) as pool:
        started = time.monotonic()
        outcomes = await pool.send_messages(
            items(11), on_result=lambda index, outcome: seen.append(time.monotonic())
        )
        elapsed = time.monotonic() - started
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert len(server.messages) == 11
    assert pool.connections_opened > 1
    assert 0.49 <= elapsed < 2.0


async def test_single_sends_through_a_pool_are_limited(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    server = make_smtpd()
    host, port = server.address
    limiter = RateLimiter(messages_per_second=20)
    async with SMTPPool(hostname=host, port=port, max_connections=3, rate_limit=limiter) as pool:
        started = time.monotonic()
        await asyncio.gather(*(pool.sendmail(*item) for item in items(6)))
        assert time.monotonic() - started >= 0.24
    assert len(server.messages) == 6


async def test_a_slow_down_reply_is_retried_not_failed(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    handler = ThrottlingHandler("451 4.7.1 Too many messages, slow down", times=2)
    server = make_smtpd(handler=handler)
    host, port = server.address
    limiter = RateLimiter(messages_per_second=100, backoff=0.05)
    async with SMTP(hostname=host, port=port, rate_limit=limiter) as client:
        outcomes = await client.send_messages(items(3))
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert len(server.messages) == 3
    assert limiter.throttles == 2
    assert limiter.rate_fraction == 0.25
    assert handler.commands.count("MAIL") == 5  # two refused, three accepted


async def test_retries_are_bounded(make_smtpd: Callable[..., SMTPServer]) -> None:
    handler = ThrottlingHandler("451 4.7.1 rate limit exceeded", times=100)
    server = make_smtpd(handler=handler)
    host, port = server.address
    limiter = RateLimiter(messages_per_second=1000, backoff=0.01, max_backoff=0.02, retries=2)
    async with SMTP(hostname=host, port=port, rate_limit=limiter) as client:
        with pytest.raises(SMTPSenderRefused) as caught:
            await client.sendmail(*items(1)[0])
    assert caught.value.code == 451
    assert limiter.throttles == 3
    assert not server.messages


async def test_a_421_sends_the_rest_over_another_connection(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    handler = ThrottlingHandler("421 4.7.0 Too many connections, closing", times=1)
    server = make_smtpd(handler=handler)
    host, port = server.address
    limiter = RateLimiter(messages_per_second=200, backoff=0.05)
    async with SMTPPool(hostname=host, port=port, max_connections=1, rate_limit=limiter) as pool:
        outcomes = await pool.send_messages(items(4))
    assert all(isinstance(outcome, tuple) for outcome in outcomes), outcomes
    assert len(server.messages) == 4
    assert limiter.throttles == 1
    assert pool.connections_opened == 2


async def test_other_temporary_failures_are_not_throttling(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    server = make_smtpd()
    host, port = server.address
    limiter = RateLimiter(messages_per_second=100)
    async with SMTP(hostname=host, port=port, rate_limit=limiter) as client:
        outcomes = await client.send_messages(
            [("sender@example.com", ["tempfail@example.com"], RAW), items(1)[0]]
        )
    assert isinstance(outcomes[0], SMTPRecipientsRefused)
    assert isinstance(outcomes[1], tuple)
    assert limiter.throttles == 0


async def test_lazy_items_and_bad_items_fail_alone(make_smtpd: Callable[..., SMTPServer]) -> None:
    server = make_smtpd()
    host, port = server.address
    limiter = RateLimiter(messages_per_second=100)

    def broken() -> Any:
        raise RuntimeError("render failed")

    async with SMTP(hostname=host, port=port, rate_limit=limiter) as client:
        outcomes = await client.send_messages([broken, lambda: items(1)[0], "nonsense"])  # type: ignore[list-item]
    assert isinstance(outcomes[0], RuntimeError)
    assert isinstance(outcomes[1], tuple)
    assert isinstance(outcomes[2], TypeError)
    assert len(server.messages) == 1


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed (Debian: apt-get install redis-server)")
    from integrations.celery_support import start_redis

    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[tuple[RedisRateLimiter, RedisRateLimiter]]:
    # Two limiters with their own Redis connections: two processes as far as Redis knows.
    key = f"test:{time.monotonic_ns()}"
    first = RedisRateLimiter(redis_url, key=key, messages_per_second=20, backoff=0.2)
    second = RedisRateLimiter(redis_url, key=key, messages_per_second=20, backoff=0.2)
    yield first, second
    await first.reset()
    await first.aclose()
    await second.aclose()


async def test_redis_limiters_share_the_bucket(
    shared: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    first, second = shared
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for limiter in [first, second] * 5), first.acquire())
    assert 0.48 <= time.monotonic() - started < 1.5


async def test_redis_throttle_is_shared(
    shared: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    first, second = shared
    await first.acquire()
    started = time.monotonic()
    assert await first.throttled() == pytest.approx(0.2)
    assert await second.shared_rate_fraction() == 0.5
    await second.acquire()  # the other process waits out the pause too
    # Redis's clock started the pause a little after `started`; 10 ms for clock reading.
    assert time.monotonic() - started >= 0.19


async def test_redis_limiter_in_a_pool(
    redis_url: str, make_smtpd: Callable[..., SMTPServer]
) -> None:
    server = make_smtpd()
    host, port = server.address
    limiter = RedisRateLimiter(redis_url, key=f"pool:{time.monotonic_ns()}", messages_per_second=20)
    try:
        async with SMTPPool(
            hostname=host, port=port, max_connections=3, rate_limit=limiter
        ) as pool:
            started = time.monotonic()
            outcomes = await pool.send_messages(items(7))
            elapsed = time.monotonic() - started
    finally:
        await limiter.reset()
        await limiter.aclose()
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert 0.29 <= elapsed < 2.0


def test_redis_limiter_needs_one_url_or_client() -> None:
    with pytest.raises(ValueError):
        RedisRateLimiter(messages_per_second=1)
    with pytest.raises(ValueError):
        RedisRateLimiter("redis://127.0.0.1:1/0", client=object(), messages_per_second=1)


async def test_a_421_to_a_single_pooled_send_waits_and_goes_again(
    make_smtpd: Callable[..., SMTPServer],
) -> None:
    handler = ThrottlingHandler("421 4.7.0 Too many connections, closing", times=1)
    server = make_smtpd(handler=handler)
    host, port = server.address
    limiter = RateLimiter(messages_per_second=200, backoff=0.05)
    async with SMTPPool(hostname=host, port=port, max_connections=1, rate_limit=limiter) as pool:
        await pool.sendmail(*items(1)[0])
    assert len(server.messages) == 1
    assert limiter.throttles == 1
    assert pool.connections_opened == 2


@pytest.mark.parametrize("connections", [1, 3])
async def test_messages_per_connection_holds_within_a_batch(
    make_smtpd: Callable[..., SMTPServer], connections: int
) -> None:
    server = make_smtpd()
    host, port = server.address
    async with SMTPPool(
        hostname=host,
        port=port,
        max_connections=connections,
        max_messages_per_connection=3,
        rate_limit=RateLimiter(messages_per_second=1000),
    ) as pool:
        outcomes = await pool.send_messages(items(10))
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    per_connection = collections.Counter(m.connection_id for m in server.messages)
    assert sum(per_connection.values()) == 10
    assert max(per_connection.values()) <= 3
    assert len(per_connection) >= 4
