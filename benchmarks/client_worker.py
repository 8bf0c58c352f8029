"""One benchmark run of one client on one workload, in a fresh process.

Usage::

    python -m benchmarks.client_worker --client ours_batch --workload sendmail \\
        --port PORT --messages 1000

prints one JSON object on stdout: at least ``messages`` (how many were
confirmed sent), ``seconds`` (wall time of the timed region), ``cpu``
(user + system CPU seconds of this process in the timed region, from
``getrusage(RUSAGE_SELF)``; for ``smtp_source`` of the child, from
``RUSAGE_CHILDREN``), ``maxrss_delta`` (bytes the peak resident set grew
during the timed region) and ``error`` (None, or why the run failed).

The timed region starts before the connection is opened and ends after it
is closed (QUIT included), so every client pays its own connection set-up.

Workloads:
    sendmail: a prebuilt ~1 KB message (bytes, one recipient) sent N times.
    message: N :class:`email.message.EmailMessage` objects (or the framework's
        own message class), built in the run just before the timed region, which
        then measures what sending message objects costs: serialising them
        (Bcc removal, flattening, line endings) and the SMTP exchange. Building
        them costs every client the same and is the caller's code; Django's and
        Flask-Mail's message classes render their MIME tree while sending, so
        that part stays inside their timed region.
    large: one message with a 10 MB attachment, built before the timed region;
        reports the peak memory increase while sending and the message size.
    memory: N prebuilt ~1 KB messages (distinct ``(sender, [recipient], bytes)``
        tuples, built before timing) in one batch; reports the peak memory
        increase per message above the items themselves.
    memory_lazy: the same, each item a callable that builds its tuple when called.
    fanout: N messages, each to ``FANOUT`` (1,000) recipients.

Clients whose name ends in ``_uvloop`` run the same code on uvloop's event loop.

Clients are registered in :data:`WORKERS` (one function per client and
workload) and described in :data:`CLIENTS`; a new client (for example
``django_ours`` once ``smtp_backends.django`` exists) is one more entry.
"""

from __future__ import annotations

import argparse
import asyncio
import email.message
import email.policy
import gc
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import LOOPBACK

SENDER = "sender@example.org"
RECIPIENT = "recipient@example.org"
#: Body bytes of the small messages (smtp-source's ``-l`` uses the same figure).
BODY_SIZE = 1024
#: The large workload's attachment: 10 MiB of pseudo-random bytes.
ATTACHMENT_SIZE = 10 * 1024 * 1024
#: Connections of the smtp_backends pool.
POOL_CONNECTIONS = 8
#: Processes x connections of the multi-process pool client (same total as POOL_CONNECTIONS).
POOL_PROCESSES = 2
#: Recipients of each message of the fan-out workload.
FANOUT = 1000
#: Parallel sessions of smtp-source in its multi-connection row.
SOURCE_SESSIONS = 8
#: Dotted path of Django's stock backend.
DJANGO_STOCK_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
#: Dotted path of our Django backend, once it exists (see ``django_ours`` below).
DJANGO_OURS_BACKEND = "smtp_backends.django.AsyncSMTPBackend"

Result = dict[str, Any]

#: Every workload a worker may be asked for.
WORKLOADS = ("sendmail", "message", "large", "memory", "memory_lazy", "fanout")


@dataclass(frozen=True)
class Job:
    """What one worker process is asked to do."""

    client: str
    workload: str
    port: int
    messages: int
    host: str = LOOPBACK
    body_size: int = BODY_SIZE
    attachment_size: int = ATTACHMENT_SIZE
    timeout: float = 60.0
    #: Connections of an smtp_backends pool.
    pool_connections: int = POOL_CONNECTIONS

    @property
    def loop(self) -> str:
        """The event loop the client runs on: ``uvloop`` for the ``*_uvloop`` clients."""
        return "uvloop" if self.client.endswith("_uvloop") else "asyncio"


def run_on_loop(job: Job, coroutine: Any) -> Any:
    """``asyncio.run(coroutine)`` on the job's event loop (asyncio's or uvloop's)."""
    if job.loop == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


# Message material ---------------------------------------------------------------


def body_text(size: int = BODY_SIZE) -> str:
    """ASCII text of exactly ``size`` characters in short lines (``\\n`` endings)."""
    lines: list[str] = []
    total = 0
    number = 0
    while total < size:  # every pass adds at least one character
        number += 1
        line = f"{number:04d} The quick brown fox jumps over the lazy dog, again and again.\n"
        room = size - total
        if len(line) > room:
            line = line[: room - 1] + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def raw_message(size: int = BODY_SIZE) -> bytes:
    """A prebuilt message: a few headers and a ``size``-byte body, CRLF line endings."""
    headers = (
        f"From: <{SENDER}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        "Subject: Benchmark message\r\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        "Message-ID: <benchmark@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    )
    body = body_text(size).replace("\n", "\r\n")
    return (headers + body).encode("ascii")


def build_email(index: int, body: str) -> email.message.EmailMessage:
    """The stdlib message of the ``message`` workload (From, To, Subject, text body)."""
    message = email.message.EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = f"Benchmark message {index}"
    message.set_content(body)
    return message


def attachment_payload(size: int) -> bytes:
    """``size`` pseudo-random (incompressible, reproducible) bytes."""
    return random.Random(0).randbytes(size)


def build_large_email(payload: bytes) -> email.message.EmailMessage:
    """A short text message carrying ``payload`` as a base64 attachment."""
    message = build_email(0, "See the attachment.\n")
    message.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="payload.bin"
    )
    return message


def wire_size(message: email.message.Message) -> int:
    """Bytes of ``message`` flattened with CRLF line endings."""
    return len(message.as_bytes(policy=email.policy.SMTP))


# Measuring ------------------------------------------------------------------------


def _maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size in bytes (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss * 1024


def _current_rss_bytes() -> int:
    """The resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False if not possible.

    Without this, a peak reached while building the input (say, encoding the
    attachment) would hide the peak reached while sending it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class Meter:
    """Measures wall time, CPU time and peak RSS growth of the ``with`` block.

    Args:
        children: count the CPU of finished child processes
            (``RUSAGE_CHILDREN``) instead of this process's own.
    """

    children: bool = False
    seconds: float = 0.0
    cpu: float = 0.0
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    maxrss_delta: int = 0
    rss_before: int = 0
    peak_reset: bool = False
    _start: tuple[float, resource.struct_rusage, int] | None = field(default=None, repr=False)

    def _who(self) -> int:
        return resource.RUSAGE_CHILDREN if self.children else resource.RUSAGE_SELF

    def __enter__(self) -> Meter:
        gc.collect()
        self.peak_reset = _reset_peak_rss()
        self.rss_before = _current_rss_bytes()
        maxrss = _maxrss_bytes()
        self._start = (time.perf_counter(), resource.getrusage(self._who()), maxrss)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end = time.perf_counter()
        usage = resource.getrusage(self._who())
        maxrss = _maxrss_bytes()
        assert self._start is not None
        start, usage0, maxrss0 = self._start
        self.seconds = end - start
        self.cpu_user = usage.ru_utime - usage0.ru_utime
        self.cpu_sys = usage.ru_stime - usage0.ru_stime
        self.cpu = self.cpu_user + self.cpu_sys
        self.maxrss_delta = maxrss - maxrss0

    def result(self, job: Job, sent: int, **extra: Any) -> Result:
        """The worker's JSON result; ``error`` is set when fewer than asked were sent."""
        extra.setdefault("loop", job.loop)
        expected = 1 if job.workload == "large" else job.messages
        error = None if sent == expected else f"only {sent} of {expected} messages confirmed"
        return {
            "client": job.client,
            "workload": job.workload,
            "messages": sent,
            "seconds": self.seconds,
            "cpu": self.cpu,
            "cpu_user": self.cpu_user,
            "cpu_sys": self.cpu_sys,
            "maxrss_delta": self.maxrss_delta,
            "rss_before": self.rss_before,
            "peak_reset": self.peak_reset,
            "error": error,
            **extra,
        }


def _accepted(outcome: object) -> bool:
    """Whether a send outcome ``(errors, text)`` reports every recipient accepted."""
    return isinstance(outcome, tuple) and not outcome[0]


# Registry ------------------------------------------------------------------------

WorkerFunction = Callable[[Job], Result]

#: (client, workload) -> the function that runs it.
WORKERS: dict[tuple[str, str], WorkerFunction] = {}


@dataclass(frozen=True)
class ClientInfo:
    """A client's label and whether it can run here."""

    name: str
    label: str
    #: Returns None when the client can run, else the reason it cannot.
    unavailable: Callable[[], str | None] = lambda: None


def _needs_module(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"{module} is not available (not implemented yet?)"

    return check


#: Every client, in the order the tables show them.
CLIENTS: dict[str, ClientInfo] = {
    info.name: info
    for info in (
        ClientInfo("ours_lockstep", "smtp_backends lock-step loop"),
        ClientInfo("ours_pipelined", "smtp_backends pipelined loop"),
        ClientInfo("ours_batch", "smtp_backends send_messages"),
        ClientInfo("ours_pool", f"smtp_backends SMTPPool({POOL_CONNECTIONS})"),
        ClientInfo(
            "ours_pipelined_uvloop", "smtp_backends pipelined loop, uvloop", _needs_module("uvloop")
        ),
        ClientInfo(
            "ours_batch_uvloop", "smtp_backends send_messages, uvloop", _needs_module("uvloop")
        ),
        ClientInfo(
            "ours_pool_uvloop",
            f"smtp_backends SMTPPool({POOL_CONNECTIONS}), uvloop",
            _needs_module("uvloop"),
        ),
        ClientInfo(
            "ours_pool_procs",
            f"smtp_backends {POOL_PROCESSES} processes x "
            f"SMTPPool({POOL_CONNECTIONS // POOL_PROCESSES})",
        ),
        ClientInfo(
            "ours_pool_procs_uvloop",
            f"smtp_backends {POOL_PROCESSES} processes x "
            f"SMTPPool({POOL_CONNECTIONS // POOL_PROCESSES}), uvloop",
            _needs_module("uvloop"),
        ),
        ClientInfo("ours_batch_lazy", "smtp_backends send_messages, lazy items (callables)"),
        ClientInfo("aiosmtplib", "aiosmtplib loop"),
        ClientInfo("smtplib", "smtplib loop"),
        ClientInfo("django_stock", "Django stock EmailBackend"),
        ClientInfo(
            "django_ours", "smtp_backends Django backend", _needs_module("smtp_backends.django")
        ),
        ClientInfo(
            "django_ours_pool",
            f"smtp_backends Django backend, pool({POOL_CONNECTIONS}), keep_order=False",
            _needs_module("smtp_backends.django"),
        ),
        ClientInfo("flask_mail", "Flask-Mail connection"),
        ClientInfo("smtp_source", "Postfix smtp-source (C)"),
        ClientInfo(
            "smtp_source_8",
            f"Postfix smtp-source -s {SOURCE_SESSIONS} (C, {SOURCE_SESSIONS} conns)",
        ),
    )
}


def worker(client: str, *workloads: str) -> Callable[[WorkerFunction], WorkerFunction]:
    """Register the decorated function for ``client`` on each of ``workloads``."""

    def register(function: WorkerFunction) -> WorkerFunction:
        assert client in CLIENTS, client
        for workload in workloads:
            WORKERS[client, workload] = function
        return function

    return register


def workloads_of(client: str) -> list[str]:
    """The workloads ``client`` has a worker function for."""
    return [workload for (name, workload) in WORKERS if name == client]


# smtp_backends ------------------------------------------------------------------


async def _async_loop(job: Job, client: Any) -> Result:
    """A sendmail / send_message loop on one connection of an aiosmtplib-style client.

    smtp_backends and aiosmtplib share this API, so both run exactly this code.
    """
    sent = 0
    if job.workload in ("sendmail", "fanout"):
        data = raw_message(job.body_size)
        recipients = fanout_recipients() if job.workload == "fanout" else [RECIPIENT]
        with Meter() as meter:
            async with client:
                for _ in range(job.messages):
                    sent += _accepted(await client.sendmail(SENDER, recipients, data))
        return meter.result(job, sent)
    if job.workload == "message":
        messages = built_emails(job)
        with Meter() as meter:
            async with client:
                for message in messages:
                    sent += _accepted(await client.send_message(message))
        return meter.result(job, sent)
    message = build_large_email(attachment_payload(job.attachment_size))
    with Meter() as meter:
        async with client:
            sent += _accepted(await client.send_message(message))
    return meter.result(job, sent, message_bytes=wire_size(message))


async def _ours_loop(job: Job, *, pipelining: bool) -> Result:
    from smtp_backends import SMTP

    client = SMTP(hostname=job.host, port=job.port, pipelining=pipelining, timeout=job.timeout)
    return await _async_loop(job, client)


@worker("ours_lockstep", "sendmail", "message")
def ours_lockstep(job: Job) -> Result:
    """smtp_backends ``SMTP(pipelining=False)``: a loop of sendmail / send_message."""
    return asyncio.run(_ours_loop(job, pipelining=False))


@worker("ours_pipelined", "sendmail", "message", "large", "fanout")
@worker("ours_pipelined_uvloop", "sendmail", "message", "large", "fanout")
def ours_pipelined(job: Job) -> Result:
    """smtp_backends ``SMTP()`` (pipelining on): a loop of sendmail / send_message."""
    return run_on_loop(job, _ours_loop(job, pipelining=True))


def fanout_recipients() -> list[str]:
    """The FANOUT recipients of each fan-out message."""
    return [f"rcpt{n:04d}@example.org" for n in range(FANOUT)]


def built_emails(job: Job) -> list[email.message.EmailMessage]:
    """The N message objects of the "message" workload, built before timing."""
    body = body_text(job.body_size)
    build_email(0, body).as_bytes()  # warm up the email package's lazy parts
    return [build_email(index, body) for index in range(job.messages)]


def _batch_items(job: Job) -> list[Any]:
    if job.workload == "sendmail":
        data = raw_message(job.body_size)
        return [(SENDER, [RECIPIENT], data)] * job.messages
    if job.workload == "fanout":
        data = raw_message(job.body_size)
        return [(SENDER, fanout_recipients(), data)] * job.messages
    if job.workload == "memory":
        # Distinct items, as an application's: each its own tuple, recipient list and bytes.
        template = raw_message(job.body_size)
        return [
            (SENDER, [f"r{index}@example.org"], template.replace(b"benchmark@", b"%d@" % index))
            for index in range(job.messages)
        ]
    if job.workload == "memory_lazy":
        template = raw_message(job.body_size)

        def lazy(index: int) -> Callable[[], tuple[str, list[str], bytes]]:
            def build() -> tuple[str, list[str], bytes]:
                data = template.replace(b"benchmark@", b"%d@" % index)
                return (SENDER, [f"r{index}@example.org"], data)

            return build

        return [lazy(index) for index in range(job.messages)]
    return list(built_emails(job))


async def _ours_batch(job: Job, *, pool: bool) -> Result:
    from smtp_backends import SMTP, SMTPPool

    large = None
    if job.workload == "large":
        large = build_large_email(attachment_payload(job.attachment_size))
    items = [large] if large is not None else _batch_items(job)
    with Meter() as meter:
        if pool:
            async with SMTPPool(
                max_connections=job.pool_connections,
                hostname=job.host,
                port=job.port,
                timeout=job.timeout,
            ) as smtp_pool:
                outcomes = await smtp_pool.send_messages(items)
        else:
            async with SMTP(hostname=job.host, port=job.port, timeout=job.timeout) as client:
                outcomes = await client.send_messages(items)
    sent = sum(map(_accepted, outcomes))
    failures = [repr(outcome) for outcome in outcomes if not _accepted(outcome)][:3]
    extra: dict[str, Any] = {"failures": failures}
    if large is not None:
        extra["message_bytes"] = wire_size(large)
    del items, outcomes
    return meter.result(job, sent, **extra)


@worker("ours_batch", "sendmail", "message", "large", "memory", "fanout")
@worker("ours_batch_uvloop", "sendmail", "message", "large", "memory", "fanout")
def ours_batch(job: Job) -> Result:
    """smtp_backends ``SMTP.send_messages``: the whole batch, pipelined."""
    return run_on_loop(job, _ours_batch(job, pool=False))


@worker("ours_batch_lazy", "memory_lazy")
def ours_batch_lazy(job: Job) -> Result:
    """smtp_backends ``SMTP.send_messages`` of callables, each building its item when called."""
    return run_on_loop(job, _ours_batch(job, pool=False))


@worker("ours_pool", "sendmail", "message")
@worker("ours_pool_uvloop", "sendmail", "message")
def ours_pool(job: Job) -> Result:
    """smtp_backends ``SMTPPool(max_connections=8).send_messages``."""
    return run_on_loop(job, _ours_batch(job, pool=True))


def _pool_processes(job: Job) -> Result:
    """POOL_PROCESSES worker processes, each a pool of POOL_CONNECTIONS / POOL_PROCESSES.

    Each child times its own region (connect to QUIT) and reports its CPU; the row shows the
    sum of their CPU and the longest of their wall times (they start together, and each
    one's set-up, imports included, happens before its timed region).
    """
    share = job.messages // POOL_PROCESSES
    shares = [share] * POOL_PROCESSES
    shares[0] += job.messages - share * POOL_PROCESSES
    single = "ours_pool_uvloop" if job.loop == "uvloop" else "ours_pool"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.client_worker",
                "--client",
                single,
                "--workload",
                job.workload,
                "--port",
                str(job.port),
                "--messages",
                str(count),
                "--pool-connections",
                str(job.pool_connections // POOL_PROCESSES),
                "--timeout",
                str(job.timeout),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for count in shares
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=job.timeout * 10)
        results.append(json.loads(out.strip().splitlines()[-1]))
    errors = [r["error"] for r in results if r.get("error")]
    sent = sum(r.get("messages", 0) for r in results)
    return {
        "client": job.client,
        "workload": job.workload,
        "messages": sent,
        "seconds": max(r.get("seconds", 0.0) for r in results),
        "cpu": sum(r.get("cpu", 0.0) for r in results),
        "maxrss_delta": 0,
        "error": errors[0] if errors else None,
    }


@worker("ours_pool_procs", "sendmail")
@worker("ours_pool_procs_uvloop", "sendmail")
def ours_pool_procs(job: Job) -> Result:
    """Two processes, each ``SMTPPool(max_connections=4).send_messages`` of half the batch."""
    return _pool_processes(job)


# aiosmtplib ----------------------------------------------------------------------


async def _aiosmtplib(job: Job) -> Result:
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname=job.host, port=job.port, timeout=job.timeout)
    if job.workload == "memory":
        # aiosmtplib has no batch: the same distinct items, sent in a loop.
        items = _batch_items(job)
        sent = 0
        with Meter() as meter:
            async with client:
                for sender, recipients, data in items:
                    sent += _accepted(await client.sendmail(sender, recipients, data))
        del items
        return meter.result(job, sent)
    return await _async_loop(job, client)


@worker("aiosmtplib", "sendmail", "message", "large", "fanout", "memory")
def aiosmtplib_loop(job: Job) -> Result:
    """aiosmtplib ``SMTP`` on one connection: a loop of sendmail / send_message."""
    return asyncio.run(_aiosmtplib(job))


# smtplib -------------------------------------------------------------------------


@worker("smtplib", "sendmail", "message", "large")
def smtplib_loop(job: Job) -> Result:
    """The standard library's ``smtplib.SMTP``: a synchronous loop on one connection."""
    import smtplib

    def connect() -> smtplib.SMTP:
        return smtplib.SMTP(job.host, job.port, timeout=job.timeout)

    sent = 0
    if job.workload == "sendmail":
        data = raw_message(job.body_size)
        with Meter() as meter, connect() as client:
            for _ in range(job.messages):
                sent += not client.sendmail(SENDER, [RECIPIENT], data)
        return meter.result(job, sent)
    if job.workload == "message":
        messages = built_emails(job)
        with Meter() as meter, connect() as client:
            for message in messages:
                sent += not client.send_message(message)
        return meter.result(job, sent)
    message = build_large_email(attachment_payload(job.attachment_size))
    with Meter() as meter, connect() as client:
        sent += not client.send_message(message)
    return meter.result(job, sent, message_bytes=wire_size(message))


# Django --------------------------------------------------------------------------


def _configure_django(job: Job) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            EMAIL_HOST=job.host,
            EMAIL_PORT=job.port,
            EMAIL_TIMEOUT=job.timeout,
            DEFAULT_FROM_EMAIL=SENDER,
            USE_TZ=True,
        )
        django.setup()


def _django(job: Job, backend_path: str, **options: Any) -> Result:
    """Django's ``EmailBackend(...).send_messages(list of django EmailMessage)``."""
    _configure_django(job)
    from django.core.mail import EmailMessage
    from django.utils.module_loading import import_string

    backend_class = import_string(backend_path)
    body = body_text(job.body_size)

    def build(index: int) -> Any:
        return EmailMessage(f"Benchmark message {index}", body, SENDER, [RECIPIENT])

    if job.workload == "message":
        build(0).message().as_bytes()  # warm up (Django's cached DNS name, the email package)
        messages = [build(index) for index in range(job.messages)]
        with Meter() as meter:
            backend = backend_class(host=job.host, port=job.port, fail_silently=False, **options)
            sent = backend.send_messages(messages) or 0
        return meter.result(job, sent)
    large = build(0)
    large.body = "See the attachment.\n"
    large.attach("payload.bin", attachment_payload(job.attachment_size), "application/octet-stream")
    build(1).message().as_bytes()
    with Meter() as meter:
        backend = backend_class(host=job.host, port=job.port, fail_silently=False)
        sent = backend.send_messages([large]) or 0
    return meter.result(job, sent, message_bytes=len(large.message().as_bytes(linesep="\r\n")))


@worker("django_stock", "message", "large")
def django_stock(job: Job) -> Result:
    """Django's stock SMTP backend (smtplib underneath), settings configured here."""
    return _django(job, DJANGO_STOCK_BACKEND)


@worker("django_ours", "message", "large")
def django_ours(job: Job) -> Result:
    """Our Django backend, driven exactly like :func:`django_stock` (when it exists)."""
    return _django(job, DJANGO_OURS_BACKEND)


@worker("django_ours_pool", "message")
def django_ours_pool(job: Job) -> Result:
    """Our Django backend with ``pool_size={POOL_CONNECTIONS}, keep_order=False``: a list
    spread over the pool's connections (the settings a site sending bulk mail would use)."""
    return _django(job, DJANGO_OURS_BACKEND, pool_size=POOL_CONNECTIONS, keep_order=False)


# Flask-Mail ----------------------------------------------------------------------


@worker("flask_mail", "message", "large")
def flask_mail(job: Job) -> Result:
    """Flask-Mail: ``with mail.connect() as conn: conn.send(msg)`` in an app context."""
    from flask import Flask
    from flask_mail import Mail, Message

    app = Flask("benchmarks")
    app.config.update(
        MAIL_SERVER=job.host,
        MAIL_PORT=job.port,
        MAIL_DEFAULT_SENDER=SENDER,
        MAIL_SUPPRESS_SEND=False,
    )
    mail = Mail(app)
    body = body_text(job.body_size)

    def build(index: int) -> Message:
        return Message(f"Benchmark message {index}", recipients=[RECIPIENT], body=body)

    sent = 0
    with app.app_context():
        build(0).as_bytes()
        if job.workload == "message":
            messages = [build(index) for index in range(job.messages)]
            with Meter() as meter, mail.connect() as connection:
                for message in messages:
                    connection.send(message)
                    sent += 1
            return meter.result(job, sent)
        large = build(0)
        large.body = "See the attachment.\n"
        large.attach(
            "payload.bin", "application/octet-stream", attachment_payload(job.attachment_size)
        )
        with Meter() as meter, mail.connect() as connection:
            connection.send(large)
            sent += 1
        return meter.result(job, sent, message_bytes=len(large.as_bytes()))


# Postfix smtp-source -----------------------------------------------------------------


@worker("smtp_source", "sendmail")
@worker("smtp_source_8", "sendmail")
def smtp_source(job: Job) -> Result:
    """Postfix's C ``smtp-source`` (``-d``: messages share connections), timed as a child
    process: one session, or SOURCE_SESSIONS in parallel for ``smtp_source_8``."""
    from .servers import postfix_tool

    sessions = SOURCE_SESSIONS if job.client == "smtp_source_8" else 1
    argv = [
        postfix_tool("smtp-source"),
        "-d",  # one connection for many messages, as the other clients
        "-s",
        str(sessions),
        "-l",
        str(job.body_size),
        "-m",
        str(job.messages),
        "-M",
        "localhost",
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"{job.host}:{job.port}",
    ]
    with Meter(children=True) as meter:
        completed = subprocess.run(argv, capture_output=True, timeout=job.timeout * 10, check=False)
    sent = job.messages if completed.returncode == 0 else 0
    result = meter.result(job, sent)
    # The child's peak RSS, not a delta: smtp-source's memory is not compared.
    result["maxrss_delta"] = 0
    if completed.returncode != 0:
        result["error"] = (
            f"smtp-source exited {completed.returncode}: "
            f"{completed.stderr.decode(errors='replace')[-500:]}"
        )
    return result


# Command line --------------------------------------------------------------------


@contextmanager
def _stdout_reserved() -> Iterator[None]:
    """Send anything the libraries print to stderr; stdout carries only the JSON."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def run_job(job: Job) -> Result:
    """Run ``job`` and return its result (with ``error`` set on failure)."""
    function = WORKERS.get((job.client, job.workload))
    if function is None:
        return {"client": job.client, "workload": job.workload, "error": "no such worker"}
    reason = CLIENTS[job.client].unavailable()
    if reason is not None:
        return {"client": job.client, "workload": job.workload, "error": reason}
    try:
        with _stdout_reserved():
            return function(job)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {
            "client": job.client,
            "workload": job.workload,
            "error": f"{type(exc).__name__}: {exc}"[:500],
        }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the job, print its JSON result."""
    parser = argparse.ArgumentParser(description="Run one benchmark job and print JSON.")
    parser.add_argument("--client", required=True, choices=sorted(CLIENTS))
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--body-size", type=int, default=BODY_SIZE)
    parser.add_argument("--attachment-size", type=int, default=ATTACHMENT_SIZE)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--pool-connections", type=int, default=POOL_CONNECTIONS)
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    job = Job(
        client=args.client,
        workload=args.workload,
        port=args.port,
        messages=args.messages,
        body_size=args.body_size,
        attachment_size=args.attachment_size,
        timeout=args.timeout,
        pool_connections=args.pool_connections,
    )
    result = run_job(job)
    print(json.dumps(result), flush=True)
    return 0 if result.get("error") is None else 1


if __name__ == "__main__":
    sys.exit(main())
