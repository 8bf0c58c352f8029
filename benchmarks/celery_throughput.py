"""Queued-sending throughput: messages/s through Redis and N Celery workers to an SMTP sink.

Run manually (not part of the test suite)::

    .venv/bin/python -m benchmarks.celery_throughput --workers 1 --messages 5000
    .venv/bin/python -m benchmarks.celery_throughput --workers 2 --messages 5000

It starts redis-server, an aiosmtpd counting server in this process (which costs about
0.3 ms of CPU per message and shares the machine's cores with the workers) and the
workers of integrations/celery_apps, queues the messages with CeleryBackend (batches of
50) and times from the first enqueue until the server has every message.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from integrations import celery_support as support


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()

    redis_server = support.start_redis()
    smtpd = support.start_counting_smtpd()
    handler = smtpd.handler
    assert isinstance(handler, support.CountingHandler)
    env = support.worker_env(redis_server.url, smtpd.port, "web", "mail")
    os.environ.update({k: v for k, v in env.items() if k.startswith(("SMTP_BACKENDS", "DJANGO"))})
    try:
        names = [f"w{n + 1}" for n in range(args.workers)]
        with support.running_workers(
            names, redis_server.url, smtpd.port, "mail", Path(tempfile.mkdtemp())
        ):
            from django.test import Client

            import integrations.celery_apps.celery_app  # noqa: F401 - configures Django

            start = time.perf_counter()
            Client().post(f"/send/?n={args.messages}&tag=bench")
            queued = time.perf_counter() - start
            support.wait_until(lambda: handler.accepted_total >= args.messages, 600, 0.01)
            elapsed = time.perf_counter() - start
        rate = args.messages / elapsed
        print(
            f"{args.workers} worker(s): {args.messages} messages in {elapsed:.2f} s "
            f"({rate:.0f} msg/s; queueing took {queued:.2f} s)"
        )
    finally:
        smtpd.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
