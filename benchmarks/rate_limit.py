"""Rate limit accuracy: a configured messages/s against the rate measured at the server side.

Run manually (not part of the test suite)::

    .venv/bin/python -m benchmarks.rate_limit                      # 14 msg/s, 8 connections, 30 s
    .venv/bin/python -m benchmarks.rate_limit --rate 14 --seconds 30 --connections 8
    .venv/bin/python -m benchmarks.rate_limit --redis              # the Redis-backed limiter

It starts the aiosmtpd sink in its own process (benchmarks/aiosmtpd_sink.py), sends
``rate * seconds + 1`` messages through an SMTPPool of ``--connections`` connections
sharing one RateLimiter, and times each message at the server's 250 to its end of data
(``on_result``). The measured rate is (messages - 1) / (last - first): the intervals
between the first and the last accepted message. Target: within 5% of the configured rate.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from smtp_backends import SMTPPool
from smtp_backends.ratelimit import RateLimiter, RedisRateLimiter

from . import LOOPBACK
from .servers import start_aiosmtpd_sink

RAW = b"From: bench@example.com\r\nTo: sink@example.com\r\nSubject: rate\r\n\r\nbody\r\n"


async def measure(
    port: int, rate: float, seconds: float, connections: int, redis_url: str | None
) -> tuple[int, float]:
    """Send for about ``seconds``; return (messages accepted, measured msg/s)."""
    limiter: RateLimiter
    if redis_url is None:
        limiter = RateLimiter(messages_per_second=rate)
    else:
        limiter = RedisRateLimiter(redis_url, key="bench:rate", messages_per_second=rate)
        await limiter.reset()
    count = int(rate * seconds) + 1
    stamps: list[float] = []

    def accepted(index: int, outcome: object) -> None:
        if isinstance(outcome, tuple):
            stamps.append(time.perf_counter())

    items = [("bench@example.com", [f"sink{i}@example.com"], RAW) for i in range(count)]
    async with SMTPPool(
        hostname=LOOPBACK, port=port, max_connections=connections, rate_limit=limiter
    ) as pool:
        await pool.send_messages(items, on_result=accepted)
    if isinstance(limiter, RedisRateLimiter):
        await limiter.reset()
        await limiter.aclose()
    stamps.sort()
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return len(stamps), measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=14.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--redis", action="store_true", help="use RedisRateLimiter")
    args = parser.parse_args()

    redis_server = None
    redis_url = None
    if args.redis:
        from integrations.celery_support import start_redis

        redis_server = start_redis()
        redis_url = redis_server.url
    sink = start_aiosmtpd_sink(Path(tempfile.mkdtemp()))
    try:
        started = time.perf_counter()
        sent, measured = asyncio.run(
            measure(sink.port, args.rate, args.seconds, args.connections, redis_url)
        )
        wall = time.perf_counter() - started
    finally:
        sink.stop()
        if redis_server is not None:
            redis_server.stop()
    error = (measured - args.rate) / args.rate * 100
    kind = "RedisRateLimiter" if args.redis else "RateLimiter"
    verdict = "PASS" if abs(error) <= 5 else "MISS"
    print(
        f"{kind}: configured {args.rate:g} msg/s, {args.connections} connections, "
        f"{sent} messages in {wall:.1f} s: measured {measured:.3f} msg/s "
        f"({error:+.2f}%, target within 5%: {verdict})"
    )


if __name__ == "__main__":
    main()
