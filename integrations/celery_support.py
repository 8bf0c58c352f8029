"""Helpers for the Celery integration suite: a real redis-server, real worker processes and
an SMTP server that counts deliveries by Message-ID.

Used by integrations/test_celery.py and benchmarks/celery_throughput.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from tests.servers import RecordingHandler, SMTPServer, free_port, start_smtpd

ROOT = Path(__file__).resolve().parent.parent
CELERY_APP = "integrations.celery_apps.celery_app"

#: ``X-Test-Mode`` values understood by :class:`CountingHandler`.
TEMPFAIL_ONCE = "tempfail-once"
REJECT = "reject"
DROP_AFTER_DOT = "drop-after-dot"


def missing_requirements() -> str | None:
    """Why the suite cannot run here (None when it can)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    for module in ("celery", "redis", "django", "flask", "aiosmtpd"):
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module!r} is not installed (pip install --group dev -e .)"
    return None


# ----------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    """A redis-server subprocess on loopback, without persistence."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_redis() -> RedisServer:
    """Start redis-server on a free loopback port and wait until it answers PING."""
    import redis

    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    deadline = time.monotonic() + 10
    while True:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            if client.ping():
                return server
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
        finally:
            client.close()


# ----------------------------------------------------------------------------- SMTP server


class CountingHandler(RecordingHandler):
    """Counts DATA attempts and acceptances per Message-ID; misbehaves on request.

    The ``X-Test-Mode`` header of a message chooses: ``tempfail-once`` (451 the
    first time, then 250), ``reject`` (554 always), ``drop-after-dot`` (close the
    connection without a reply). With :attr:`pause_if` set, the first message it picks
    waits for :attr:`release` before its reply (:attr:`paused` is set,
    :attr:`paused_info` says which message and which client EHLO name).
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("refuse_rcpt_prefix", None)
        options.setdefault("tempfail_rcpt_prefix", None)
        options.setdefault("refuse_sender_prefix", None)
        options.setdefault("data_fail_marker", None)
        super().__init__(**options)
        self.attempts: collections.Counter[str] = collections.Counter()
        self.accepted: collections.Counter[str] = collections.Counter()
        self.tags: dict[str, str] = {}
        self.accepted_total = 0
        #: Called with each message's headers before it is accepted; the first
        #: message it returns True for makes the server pause (see above).
        self.pause_if: Callable[[Message], bool] | None = None
        self.paused = threading.Event()
        self.release = threading.Event()
        self.paused_info: tuple[str, str] | None = None
        self._count_lock = threading.Lock()

    def count(self, tag: str) -> collections.Counter[str]:
        """Acceptances per Message-ID of the messages tagged ``tag``."""
        with self._count_lock:
            return collections.Counter(
                {mid: n for mid, n in self.accepted.items() if self.tags.get(mid) == tag}
            )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        headers = BytesHeaderParser().parsebytes(envelope.original_content)
        message_id = str(headers.get("Message-ID", "")).strip()
        mode = str(headers.get("X-Test-Mode", "")).strip()
        with self._count_lock:
            self.attempts[message_id] += 1
            attempts = self.attempts[message_id]
            self.tags[message_id] = str(headers.get("X-Test-Tag", "")).strip()
        if mode == REJECT:
            return "554 5.7.1 rejected for the test"
        if mode == TEMPFAIL_ONCE and attempts == 1:
            return "451 4.3.0 try again later"
        if mode == DROP_AFTER_DOT:
            server.transport.abort()  # the dot arrived; the reply never will
            return "250 2.0.0 never seen"
        with self._count_lock:
            self.accepted[message_id] += 1
            self.accepted_total += 1
            pause = self.pause_if is not None and self.pause_if(headers)
            if pause:
                self.pause_if = None
        if pause:
            self.paused_info = (message_id, session.host_name)
            self.paused.set()
            # The test kills the client meanwhile; a thread waits, the server loop runs on.
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return "250 2.0.0 OK"


def start_counting_smtpd() -> SMTPServer:
    """An aiosmtpd server (PIPELINING advertised) with a :class:`CountingHandler`."""
    return start_smtpd(handler=CountingHandler(), timeout=30)


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# ----------------------------------------------------------------------------- workers


@dataclass
class Worker:
    """A ``celery worker`` subprocess (its own process group)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = field(default=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (a crash)."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 15) -> None:
        """Warm shutdown (SIGTERM), SIGKILL if it does not end in time."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_env(redis_url: str, smtp_port: int, name: str, queue: str) -> dict[str, str]:
    """The environment the apps of integrations/celery_apps read."""
    env = dict(os.environ)
    env.update(
        SMTP_BACKENDS_TEST_REDIS=redis_url,
        SMTP_BACKENDS_TEST_SMTP_PORT=str(smtp_port),
        SMTP_BACKENDS_TEST_WORKER=name,
        SMTP_BACKENDS_TEST_QUEUE=queue,
        DJANGO_SETTINGS_MODULE="integrations.celery_apps.settings",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_workers(
    names: list[str], redis_url: str, smtp_port: int, queue: str, log_dir: Path
) -> list[Worker]:
    """Start one prefork worker (concurrency 1) per name and wait until all are ready."""
    workers = []
    for name in names:
        log = log_dir / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            CELERY_APP,
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "-Q",
            queue,
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ]
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=worker_env(redis_url, smtp_port, name, queue),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killpg reaches the pool process too
            )
        workers.append(Worker(name, process, log))
    for worker in workers:
        ready = wait_until(
            lambda w=worker: " ready." in w.log_text() or w.process.poll() is not None, 60
        )
        if not ready or worker.process.poll() is not None:
            for other in workers:
                other.stop()
            raise RuntimeError(f"worker {worker.name} did not start:\n{worker.log_text()[-3000:]}")
    return workers


@contextlib.contextmanager
def running_workers(
    names: list[str], redis_url: str, smtp_port: int, queue: str, log_dir: Path
) -> Iterator[list[Worker]]:
    """:func:`start_workers`, stopped at the end of the block."""
    workers = start_workers(names, redis_url, smtp_port, queue, log_dir)
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()
