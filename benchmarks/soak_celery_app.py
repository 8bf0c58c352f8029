"""The Celery app of the Celery soak (``celery -A benchmarks.soak_celery_app worker -Q soak``).

It uses only :func:`smtp_backends.celery.register`: SMTP settings for the fault server, a
record of accepted messages that is also the soak's count of sent ones (a ``dedupe`` store:
``seen``/``mark`` over a Redis set), and an ``on_failure`` hook that pushes each final failure
to a Redis list. The soak process and the workers read the same environment variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery

from smtp_backends.celery import register

REDIS_URL = os.environ.get("SMTP_BACKENDS_SOAK_REDIS", "redis://127.0.0.1:6379/0")
SMTP_PORT = int(os.environ.get("SMTP_BACKENDS_SOAK_SMTP_PORT", "25"))
QUEUE = "soak"
#: Redis set of the keys of accepted messages (one per message).
SENT_KEY = "smtp_backends:soak:sent"
#: Redis list of final failures, one JSON record each.
FAILURES_KEY = "smtp_backends:soak:failures"


class SoakRecord:
    """The record of accepted messages (``dedupe=``): skip them after a redelivery."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def seen(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        flags = self.client.smismember(SENT_KEY, list(keys))
        return {key for key, flag in zip(keys, flags, strict=True) if flag}

    def mark(self, key: str) -> None:
        self.client.sadd(SENT_KEY, key)


def record_failure(failure: Any) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        record = {
            "sender": failure.sender,
            "reason": failure.reason,
            "error": type(failure.error).__name__,
        }
        client.rpush(FAILURES_KEY, json.dumps(record))
    finally:
        client.close()


app = Celery("smtp_backends_soak", broker=REDIS_URL)
app.conf.update(
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

mail = register(
    app,
    name="smtp_backends.soak",
    smtp={"hostname": "127.0.0.1", "port": SMTP_PORT, "timeout": 10, "max_connections": 4},
    queue=QUEUE,
    batch_size=100,
    max_retries=10,
    retry_backoff=0.2,
    retry_backoff_max=2.0,
    dedupe=SoakRecord(REDIS_URL),
    on_failure=record_failure,
)
