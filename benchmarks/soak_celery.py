"""Soak: 20,000 messages through Celery (two workers, Redis) against a server injecting faults.

Run manually (not part of the test suite; needs redis-server)::

    .venv/bin/python -m benchmarks.soak_celery
    .venv/bin/python -m benchmarks.soak_celery --messages 5000 --workers 2 --scale 2

The server is benchmarks/soak.py's (tests/fault_server.py in its own process: resets before
and after the dot, 421s and 451s). Messages are queued with ``enqueue_many`` of the queue that
:func:`smtp_backends.celery.register` made (benchmarks/soak_celery_app.py); two prefork
workers send them through their pools, retrying what is transient. At the end the books must
balance exactly: every message accepted (recorded once) or failed once; the server stored
exactly the accepted ones and those whose outcome is unknown, none twice; nothing that failed
otherwise was stored.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.soak import ROOT, fault_server, message
from integrations import celery_support as support


def start_worker(name: str, env: dict[str, str], log: Path) -> support.Worker:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.soak_celery_app", "worker",
        "--pool", "prefork", "--concurrency", "1", "-Q", "soak", "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return support.Worker(name, process, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the fault rates")
    parser.add_argument("--deadline", type=float, default=1200, help="most seconds to wait")
    args = parser.parse_args()
    reason = support.missing_requirements()
    if reason:
        sys.exit(f"cannot run: {reason}")

    import redis

    redis_server = support.start_redis()
    logs = Path(tempfile.mkdtemp(prefix="soak-celery-"))
    try:
        with fault_server(args.seed, args.scale) as (port, books):
            env = {
                **os.environ,
                "SMTP_BACKENDS_SOAK_REDIS": redis_server.url,
                "SMTP_BACKENDS_SOAK_SMTP_PORT": str(port),
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "PYTHONUNBUFFERED": "1",
            }
            os.environ.update({k: v for k, v in env.items() if k.startswith("SMTP_BACKENDS")})
            from benchmarks import soak_celery_app as soak_app

            workers = [
                start_worker(f"soak{n + 1}", env, logs / f"soak{n + 1}.log")
                for n in range(args.workers)
            ]
            try:
                for worker in workers:
                    ready = support.wait_until(
                        lambda w=worker: " ready." in w.log_text() or w.process.poll() is not None,
                        60,
                    )
                    if not ready or worker.process.poll() is not None:
                        raise RuntimeError(f"worker did not start:\n{worker.log_text()[-3000:]}")
                senders = [f"c{n}@soak.test" for n in range(args.messages)]
                started = time.perf_counter()
                soak_app.mail.enqueue_many([(s, ["rcpt@soak.test"], message(s)) for s in senders])
                queued = time.perf_counter() - started
                client = redis.Redis.from_url(redis_server.url)

                def accounted() -> int:
                    return int(client.scard(soak_app.SENT_KEY)) + int(
                        client.llen(soak_app.FAILURES_KEY)
                    )

                finished = support.wait_until(
                    lambda: accounted() >= args.messages, args.deadline, 0.2
                )
                elapsed = time.perf_counter() - started
                time.sleep(1.0)  # anything still in flight would show up as an excess
                sent_keys = int(client.scard(soak_app.SENT_KEY))
                failures = [json.loads(r) for r in client.lrange(soak_app.FAILURES_KEY, 0, -1)]
                client.close()
            finally:
                for worker in workers:
                    worker.stop()
        fails_by_sender = collections.Counter(f["sender"] for f in failures)
        reasons = collections.Counter(
            f"{f['reason']}: {f['error']}" for f in failures if f["reason"] != "unknown-outcome"
        )
        unknown = {f["sender"] for f in failures if f["reason"] == "unknown-outcome"}
        failed = {f["sender"] for f in failures if f["reason"] != "unknown-outcome"}
        stored = {s for s, n in books["stored"].items() if n}
        twice = [s for s, n in books["stored"].items() if n > 1]
        faults = books["faults"]
        print(
            f"celery soak: {args.messages} messages, {args.workers} workers, "
            f"{elapsed:.1f} s ({args.messages / elapsed:.0f} msg/s; queueing {queued:.1f} s), "
            f"seed {args.seed}"
        )
        print(f"  faults injected: {sum(faults.values())} {dict(sorted(faults.items()))}")
        print(f"  connections accepted by the server: {books['connections']}")
        print(
            f"  sent {sent_keys} + unknown {len(unknown)} = {sent_keys + len(unknown)}; "
            f"stored {len(stored)} (stored twice: {len(twice)}); failed {len(failed)} "
            f"{dict(reasons)}"
        )
        problems = []
        if not finished:
            problems.append(f"only {sent_keys + len(failures)} accounted for after the deadline")
        if sent_keys + len(failures) != args.messages:
            problems.append(f"{sent_keys} sent + {len(failures)} failed != {args.messages}")
        if any(n > 1 for n in fails_by_sender.values()):
            problems.append("a message failed twice")
        if twice:
            problems.append(f"{len(twice)} stored twice, e.g. {twice[:5]}")
        if not unknown <= stored:
            problems.append(f"unknown but not stored: {sorted(unknown - stored)[:5]}")
        if failed & stored:
            problems.append(f"failed but stored: {sorted(failed & stored)[:5]}")
        if len(stored) != sent_keys + len(unknown):
            problems.append(f"stored {len(stored)} != sent {sent_keys} + unknown {len(unknown)}")
        if problems:
            print("BOOKS DO NOT BALANCE:\n  " + "\n  ".join(problems) + f"\n  logs: {logs}")
            sys.exit(1)
        print("  books balance: every message accounted for, sent + unknown = stored, none twice")
    finally:
        with contextlib.suppress(Exception):
            redis_server.stop()


if __name__ == "__main__":
    main()
