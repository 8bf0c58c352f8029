"""Soak: 100,000 messages through SMTPPool.send_messages against a server injecting faults.

Run manually (not part of the test suite)::

    .venv/bin/python -m benchmarks.soak                      # 100,000 messages
    .venv/bin/python -m benchmarks.soak --messages 20000 --connections 4 --scale 2

The server (tests/fault_server.py, its own process) resets connections before the dot (on
MAIL, RCPT or DATA) and after it (the message stored, no reply), answers 421 to MAIL and 451
to MAIL, RCPT or the dot, each on about 1% of transactions (``--scale`` multiplies them).
Each message is known by its envelope sender. At the end the books must balance exactly:

* every message has one outcome, and ``on_result`` heard each exactly once;
* sent + unknown = stored: the server stored exactly the messages reported sent and those
  whose outcome is unknown (it stores before it resets after a dot), and none twice;
* the failed ones were never stored, and each had ``max_attempts`` real attempts.

Prints the counts and exits 1 if the books do not balance.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def fault_server(seed: int, scale: float) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run tests/fault_server.py in a process; yields (port, books), books filled at the end."""
    port = free_port()
    stats = Path(tempfile.mkdtemp()) / "books.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fault_server",
            "--port",
            str(port),
            "--seed",
            str(seed),
            "--scale",
            str(scale),
            "--stats",
            str(stats),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    books: dict[str, Any] = {}
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the fault server did not start")
        yield port, books
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        if stats.exists():
            books.update(json.loads(stats.read_text()))


def message(sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: rcpt@soak.test\r\nSubject: soak {sender}\r\n"
        f"Message-ID: <{sender}>\r\n\r\n" + "soak line\r\n" * 20
    ).encode()


def balance(
    senders: list[str],
    fates: dict[str, str],
    books: dict[str, Any],
    max_attempts: int,
) -> list[str]:
    """The books' discrepancies (empty when they balance)."""
    problems = []
    stored: dict[str, int] = books["stored"]
    attempts: dict[str, int] = books["attempts"]
    twice = [s for s, n in stored.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} stored more than once, e.g. {twice[:5]}")
    missing = [s for s in senders if s not in fates]
    if missing:
        problems.append(f"{len(missing)} without an outcome, e.g. {missing[:5]}")
    sent_or_unknown = {s for s, fate in fates.items() if fate in ("sent", "unknown")}
    stored_set = {s for s, n in stored.items() if n}
    if stored_set != sent_or_unknown:
        extra, lost = stored_set - sent_or_unknown, sent_or_unknown - stored_set
        problems.append(
            f"stored != sent + unknown: {len(extra)} stored but reported failed "
            f"(e.g. {sorted(extra)[:5]}), {len(lost)} reported but not stored "
            f"(e.g. {sorted(lost)[:5]})"
        )
    early = [
        s
        for s, fate in fates.items()
        if fate.startswith("failed") and attempts.get(s, 0) < max_attempts
    ]
    if early:
        problems.append(f"{len(early)} failed before {max_attempts} real attempts: {early[:5]}")
    return problems


async def run_pool(args: argparse.Namespace, port: int) -> tuple[dict[str, str], float, int]:
    from smtp_backends import SMTPPool, SMTPUnknownOutcomeError

    senders = [f"s{n}@soak.test" for n in range(args.messages)]
    fates: dict[str, str] = {}
    heard: collections.Counter[int] = collections.Counter()
    started = time.perf_counter()
    async with SMTPPool(
        hostname="127.0.0.1",
        port=port,
        timeout=10,
        max_connections=args.connections,
        max_attempts=args.max_attempts,
    ) as pool:
        for first in range(0, len(senders), args.batch):
            chunk = senders[first : first + args.batch]
            items = [(s, ["rcpt@soak.test"], message(s)) for s in chunk]

            def told(index: int, outcome: object, first: int = first) -> None:
                heard[first + index] += 1

            outcomes = await pool.send_messages(items, on_result=told)
            for sender, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, tuple):
                    fates[sender] = "sent"
                elif isinstance(outcome, SMTPUnknownOutcomeError):
                    fates[sender] = "unknown"
                else:
                    fates[sender] = f"failed: {type(outcome).__name__}"
        opened = pool.connections_opened
    elapsed = time.perf_counter() - started
    once = all(heard[n] == 1 for n in range(len(senders))) and len(heard) == len(senders)
    if not once:
        fates["<on_result>"] = "failed: on_result did not hear each message exactly once"
    return fates, elapsed, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=10_000, help="messages per send_messages")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the fault rates")
    args = parser.parse_args()

    with fault_server(args.seed, args.scale) as (port, books):
        fates, elapsed, opened = asyncio.run(run_pool(args, port))
    senders = [f"s{n}@soak.test" for n in range(args.messages)]
    counts = collections.Counter(fate.split(":")[0] for fate in fates.values())
    failures = collections.Counter(f for f in fates.values() if f.startswith("failed"))
    stored = sum(1 for n in books["stored"].values() if n)
    print(
        f"pool soak: {args.messages} messages over {args.connections} connections in "
        f"{elapsed:.1f} s ({args.messages / elapsed:.0f} msg/s), seed {args.seed}"
    )
    faults = books["faults"]
    print(f"  faults injected: {sum(faults.values())} {dict(sorted(faults.items()))}")
    print(
        f"  connections: {books['connections']} accepted by the server, {opened} opened by the pool"
    )
    twice = sum(1 for n in books["stored"].values() if n > 1)
    print(
        f"  sent {counts['sent']} + unknown {counts['unknown']} = "
        f"{counts['sent'] + counts['unknown']}; stored {stored} (stored twice: {twice}); "
        f"failed {counts['failed']} {dict(failures)}"
    )
    problems = balance(senders, fates, books, args.max_attempts)
    if problems:
        print("BOOKS DO NOT BALANCE:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("  books balance: every message accounted for, sent + unknown = stored, none twice")


if __name__ == "__main__":
    main()
