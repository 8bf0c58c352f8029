"""Run the benchmark suite: every client side by side against the same local servers.

Usage::

    bash benchmarks/run [--quick] [--reps N] [--only TEXT] [--clients NAMES] [--output PATH]
    python -m benchmarks.run ...          # the same, in an environment that has the extras

Starts Postfix's smtp-sink, an aiosmtpd sink and a latency proxy (5 ms each
way) on 127.0.0.1, runs each (case, client, repetition) in a fresh
:mod:`benchmarks.client_worker` process (repetitions interleaved, client
order rotated), and reports medians and ratios to aiosmtplib as a table on the
terminal and as JSON (``benchmarks/results/latest.json``), then one PASS/MISS
line per target. Every child process is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import client_worker
from .client_worker import CLIENTS, WORKERS
from .servers import (
    ManagedProcess,
    ProxyControl,
    start_aiosmtpd_sink,
    start_latency_proxy,
    start_smtp_sink,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

#: One-way delay of the latency link (so a round trip is about twice this).
DELAY_MS = 5.0
#: Everything is compared with this client, measured in the same run.
BASELINE = "aiosmtplib"

LOOPBACK_LINK = "loopback"
LATENCY_LINK = "10ms"
LINK_LABELS = {LOOPBACK_LINK: "loopback", LATENCY_LINK: f"loopback + {2 * DELAY_MS:g} ms RTT proxy"}

WORKLOAD_LABELS = {
    "sendmail": "prebuilt ~1 KB message (bytes), 1 recipient, sendmail",
    "message": (
        "message objects built in the run before the timed region, which measures sending "
        "them (serialising + SMTP)"
    ),
    "large": "one message with a 10 MiB attachment (built before timing); peak memory",
    "memory": (
        "100,000 distinct prebuilt ~1 KB messages in one batch (aiosmtplib: a loop); "
        "peak memory above the items, per message"
    ),
    "memory_lazy": (
        "100,000 lazy items (callables building a ~1 KB message) in one batch; peak memory "
        "above the items, per message"
    ),
    "fanout": "prebuilt ~1 KB message to 1,000 recipients, sent N times",
}

DJANGO_CLIENTS = ("django_stock", "django_ours")
#: The Django clients on the 10 ms link: the stock backend, ours as configured by
#: default (a list in order on one connection) and ours spreading a list over the pool.
DJANGO_LINK_CLIENTS = ("django_stock", "django_ours", "django_ours_pool")
WORKLOAD_TITLES = {
    "sendmail": "sendmail of prebuilt 1 KB bytes",
    "message": "EmailMessage objects (built before timing): send_message",
    "large": "10 MiB attachment",
    "memory": "memory of a 100,000-message batch, prebuilt items",
    "memory_lazy": "memory of a 100,000-message batch, lazy items",
    "fanout": "1 message to 1,000 recipients",
}

SENDMAIL_CLIENTS = (
    "ours_lockstep",
    "ours_pipelined",
    "ours_batch",
    "ours_pool",
    "aiosmtplib",
    "smtplib",
    "smtp_source",
)
#: The loopback sendmail table: every client above, our clients on uvloop too, the
#: multi-connection rows (our pool in one process and in two, Postfix's C client with
#: 8 connections).
LOOPBACK_SENDMAIL_CLIENTS = (
    "ours_lockstep",
    "ours_pipelined",
    "ours_pipelined_uvloop",
    "ours_batch",
    "ours_batch_uvloop",
    "ours_pool",
    "ours_pool_uvloop",
    "ours_pool_procs",
    "ours_pool_procs_uvloop",
    "aiosmtplib",
    "smtplib",
    "smtp_source",
    "smtp_source_8",
)
FANOUT_CLIENTS = ("ours_pipelined", "ours_pipelined_uvloop", "ours_batch", "aiosmtplib")
#: Messages of the fan-out case (each to 1,000 recipients).
FANOUT_MESSAGES = 20
#: Messages of the memory cases.
MEMORY_MESSAGES = 100_000
MESSAGE_CLIENTS = (
    "ours_pipelined",
    "ours_batch",
    "ours_pool",
    "aiosmtplib",
    "smtplib",
    *DJANGO_CLIENTS,
    "flask_mail",
)
LARGE_CLIENTS = (
    "ours_pipelined",
    "ours_batch",
    "aiosmtplib",
    "smtplib",
    "django_stock",
    "flask_mail",
)


@dataclass(frozen=True)
class Case:
    """One table: a server, a link and a workload, run by several clients."""

    server: str
    link: str
    workload: str
    messages: int
    clients: tuple[str, ...]
    reps: int

    @property
    def key(self) -> str:
        """``server/link/workload``, as targets and ``--only`` refer to it."""
        return f"{self.server}/{self.link}/{self.workload}"

    @property
    def title(self) -> str:
        """The heading of this case's table."""
        count = "1 message" if self.workload == "large" else f"{self.messages:,} messages"
        return (
            f"{self.server} | {LINK_LABELS[self.link]} | {WORKLOAD_TITLES[self.workload]} | "
            f"{count}, median of {self.reps}"
        )


def build_cases(quick: bool, reps: int | None) -> list[Case]:
    """The cases of a quick (about 4 minutes) or full (about 10 minutes) run."""

    def n(default: int) -> int:
        return reps if reps is not None else default

    if quick:
        # Fewer clients where they are not needed for a target, to stay under 2 minutes.
        return [
            Case("smtp-sink", LOOPBACK_LINK, "sendmail", 1000, LOOPBACK_SENDMAIL_CLIENTS, n(3)),
            Case("smtp-sink", LOOPBACK_LINK, "fanout", 10, FANOUT_CLIENTS, n(3)),
            # aiosmtplib's loop of 100,000 takes a minute a run: the full run only.
            Case("smtp-sink", LOOPBACK_LINK, "memory", MEMORY_MESSAGES, ("ours_batch",), n(3)),
            Case(
                "smtp-sink",
                LOOPBACK_LINK,
                "memory_lazy",
                MEMORY_MESSAGES,
                ("ours_batch_lazy",),
                n(3),
            ),
            Case(
                "smtp-sink",
                LOOPBACK_LINK,
                "message",
                1000,
                ("ours_pipelined", "ours_batch", "aiosmtplib", *DJANGO_CLIENTS, "flask_mail"),
                n(3),
            ),
            Case("aiosmtpd", LOOPBACK_LINK, "sendmail", 1000, ("ours_batch", "aiosmtplib"), n(3)),
            Case(
                "smtp-sink",
                LATENCY_LINK,
                "sendmail",
                200,
                ("ours_batch", "ours_pool", "aiosmtplib"),
                n(3),
            ),
            Case(
                "smtp-sink",
                LOOPBACK_LINK,
                "large",
                1,
                ("ours_pipelined", "ours_batch", "aiosmtplib"),
                n(3),
            ),
            Case("smtp-sink", LATENCY_LINK, "message", 200, DJANGO_LINK_CLIENTS, n(3)),
        ]
    return [
        Case("smtp-sink", LOOPBACK_LINK, "sendmail", 3000, LOOPBACK_SENDMAIL_CLIENTS, n(5)),
        Case("smtp-sink", LOOPBACK_LINK, "fanout", FANOUT_MESSAGES, FANOUT_CLIENTS, n(3)),
        Case(
            "smtp-sink",
            LOOPBACK_LINK,
            "memory",
            MEMORY_MESSAGES,
            ("ours_batch", "ours_batch_uvloop", "aiosmtplib"),
            n(3),
        ),
        Case(
            "smtp-sink", LOOPBACK_LINK, "memory_lazy", MEMORY_MESSAGES, ("ours_batch_lazy",), n(3)
        ),
        Case("smtp-sink", LOOPBACK_LINK, "message", 1000, MESSAGE_CLIENTS, n(3)),
        Case("aiosmtpd", LOOPBACK_LINK, "sendmail", 1000, SENDMAIL_CLIENTS, n(3)),
        Case("smtp-sink", LATENCY_LINK, "sendmail", 400, SENDMAIL_CLIENTS, n(3)),
        Case("smtp-sink", LOOPBACK_LINK, "large", 1, LARGE_CLIENTS, n(3)),
        # The stock backend needs 4 round trips a message: about 45 s per repetition.
        Case("smtp-sink", LATENCY_LINK, "message", 1000, DJANGO_LINK_CLIENTS, n(3)),
    ]


# Figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A figure computed from one run's result, and how to print it."""

    name: str
    header: str
    compute: Callable[[dict[str, Any]], float | None]
    digits: int
    #: Whether a smaller value is better (for the reader; ratios are always x / aiosmtplib).
    lower_is_better: bool
    #: Whether the table shows its ratio to aiosmtplib (not for reference figures).
    ratio: bool = True


def _per_run(field_name: str, scale: float = 1.0) -> Callable[[dict[str, Any]], float | None]:
    def compute(run: dict[str, Any]) -> float | None:
        value = run.get(field_name)
        return None if value is None else float(value) * scale

    return compute


def _rate(run: dict[str, Any]) -> float | None:
    return run["messages"] / run["seconds"] if run.get("seconds") else None


def _cpu_per_1k(run: dict[str, Any]) -> float | None:
    return run["cpu"] / run["messages"] * 1000 if run.get("messages") else None


def _round_trips(run: dict[str, Any]) -> float | None:
    turns = run.get("turns")
    return turns / run["messages"] if turns is not None and run.get("messages") else None


def _peak_over_size(run: dict[str, Any]) -> float | None:
    size = run.get("message_bytes")
    return run["maxrss_delta"] / size if size else None


def _peak_per_message(run: dict[str, Any]) -> float | None:
    return run["maxrss_delta"] / run["messages"] if run.get("messages") else None


RATE = Metric("messages_per_second", "msg/s", _rate, 1, False)
CPU = Metric("cpu_seconds_per_1000", "CPU s/1k", _cpu_per_1k, 3, True)
ROUND_TRIPS = Metric("round_trips_per_message", "RT/msg", _round_trips, 2, True)
SECONDS = Metric("seconds", "seconds", _per_run("seconds"), 3, True)
CPU_TOTAL = Metric("cpu_seconds", "CPU s", _per_run("cpu"), 3, True)
PEAK = Metric("peak_increase_mb", "peak +MB", _per_run("maxrss_delta", 1e-6), 1, True)
SIZE = Metric("message_mb", "msg MB", _per_run("message_bytes", 1e-6), 2, True, ratio=False)
PEAK_OVER_SIZE = Metric("peak_over_size", "peak/size", _peak_over_size, 2, True, ratio=False)
PEAK_PER_MESSAGE = Metric("peak_bytes_per_message", "peak B/msg", _peak_per_message, 0, True)


def metrics_for(case: Case) -> list[Metric]:
    """The figures shown for ``case``."""
    if case.workload == "large":
        return [SECONDS, CPU_TOTAL, PEAK, SIZE, PEAK_OVER_SIZE]
    if case.workload.startswith("memory"):
        return [RATE, CPU, PEAK_PER_MESSAGE]
    if case.link == LATENCY_LINK:
        return [RATE, CPU, ROUND_TRIPS]
    return [RATE, CPU]


@dataclass
class ClientResults:
    """Every run of one client in one case, and their medians."""

    client: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """The errors of the failed runs."""
        return [str(run["error"]) for run in self.runs if run.get("error")]

    def good_runs(self) -> list[dict[str, Any]]:
        """The runs that sent everything they were asked to."""
        return [run for run in self.runs if not run.get("error")]


def summarise(case: Case, results: dict[str, ClientResults]) -> None:
    """Fill in each client's medians, then its ratios to aiosmtplib's medians."""
    for entry in results.values():
        good = entry.good_runs()
        for metric in metrics_for(case):
            values = [v for v in map(metric.compute, good) if v is not None]
            if values:
                entry.medians[metric.name] = statistics.median(values)
    baseline = results.get(BASELINE)
    for entry in results.values():
        for name, value in entry.medians.items():
            reference = baseline.medians.get(name) if baseline is not None else None
            if reference:
                entry.ratios[name] = value / reference


# Running ---------------------------------------------------------------------------------


class Servers:
    """Starts the servers (and proxies) cases need, once, and stops them all at the end."""

    def __init__(self, stack: contextlib.ExitStack, log_dir: Path) -> None:
        self._stack = stack
        self._log_dir = log_dir
        self._servers: dict[str, ManagedProcess] = {}
        self._proxies: dict[str, tuple[ManagedProcess, ProxyControl]] = {}

    def server(self, name: str) -> ManagedProcess:
        """The running server ``name`` (``smtp-sink`` or ``aiosmtpd``), started if needed."""
        if name not in self._servers:
            start = start_smtp_sink if name == "smtp-sink" else start_aiosmtpd_sink
            self._servers[name] = self._stack.enter_context(start(self._log_dir))
        return self._servers[name]

    def endpoint(self, case: Case) -> tuple[int, ProxyControl | None]:
        """The port clients of ``case`` connect to, and the proxy's control (if any)."""
        server = self.server(case.server)
        if case.link == LOOPBACK_LINK:
            return server.port, None
        if case.server not in self._proxies:
            process, control = start_latency_proxy(
                server.port, DELAY_MS, self._log_dir, name=f"latency-proxy-{case.server}"
            )
            self._stack.enter_context(process)
            self._proxies[case.server] = (process, control)
        process, control = self._proxies[case.server]
        return process.port, control

    def check(self) -> None:
        """Raise if a server or proxy died."""
        processes = [*self._servers.values(), *(p for p, _ in self._proxies.values())]
        for process in processes:
            if not process.running():
                raise RuntimeError(f"{process.name} died:\n{process.log_tail()}")


def run_worker(case: Case, client: str, port: int) -> dict[str, Any]:
    """Run one repetition of ``client`` in a fresh process; its JSON result."""
    timeout = 120.0 + case.messages * (0.2 if case.link == LATENCY_LINK else 0.02)
    argv = [
        sys.executable,
        "-m",
        "benchmarks.client_worker",
        "--client",
        client,
        "--workload",
        case.workload,
        "--port",
        str(port),
        "--messages",
        str(case.messages),
    ]
    try:
        completed = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed the worker
        return {"client": client, "error": f"worker timed out after {timeout:.0f} s"}
    lines = completed.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = completed.stderr.strip()[-600:]
        return {"client": client, "error": f"worker exited {completed.returncode}: {tail}"}
    return result


def run_case(
    case: Case, servers: Servers, progress: Callable[[str], None]
) -> dict[str, ClientResults]:
    """All repetitions of ``case``: reps outermost, client order rotated each rep."""
    clients = [c for c in case.clients if c in CLIENTS and (c, case.workload) in WORKERS]
    if not clients:
        return {}
    results = {client: ClientResults(client) for client in clients}
    runnable = []
    for client in clients:
        reason = CLIENTS[client].unavailable()
        if reason is None:
            runnable.append(client)
        else:
            results[client].runs.append({"error": f"skipped: {reason}", "skipped": True})
    port, control = servers.endpoint(case)
    for rep in range(case.reps):
        shift = rep % max(1, len(runnable))
        for client in runnable[shift:] + runnable[:shift]:
            servers.check()
            if control is not None:
                control.reset()
            result = run_worker(case, client, port)
            if control is not None:
                stats = control.stats()
                result["turns"] = stats["turns"]
                result["connections"] = len(stats["connections"])
            result["rep"] = rep + 1
            results[client].runs.append(result)
            progress(_progress_line(case, client, rep, result))
    summarise(case, results)
    return results


def _progress_line(case: Case, client: str, rep: int, result: dict[str, Any]) -> str:
    head = f"{case.key} rep {rep + 1}/{case.reps} {client}"
    if result.get("error"):
        return f"{head}: ERROR {result['error']}"
    if case.workload == "large":
        return f"{head}: peak +{result['maxrss_delta'] / 1e6:.1f} MB, {result['seconds']:.3f} s"
    if case.workload.startswith("memory"):
        per_message = _peak_per_message(result) or 0.0
        return f"{head}: {_rate(result):.1f} msg/s, peak +{per_message:.0f} B/msg"
    text = f"{head}: {_rate(result):.1f} msg/s, {_cpu_per_1k(result):.3f} CPU s/1k"
    if "turns" in result:
        text += f", {_round_trips(result):.2f} RT/msg"
    return text


# Reporting -------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_case(case: Case, results: dict[str, ClientResults]) -> str:
    """The table of one case: a row per client, each figure with its ratio to aiosmtplib."""
    metrics = metrics_for(case)
    headers = ["client"]
    for metric in metrics:
        headers += [metric.header, f"x{BASELINE[:3]}"] if metric.ratio else [metric.header]
    rows: list[list[str]] = []
    notes: list[str] = []
    for client, entry in results.items():
        label = CLIENTS[client].label
        if not entry.good_runs():
            error = entry.errors[0] if entry.errors else "no runs"
            rows.append([label, *(["-"] * (len(headers) - 1))])
            notes.append(f"  {label}: {error}")
            continue
        row = [label]
        for metric in metrics:
            row.append(_fmt(entry.medians.get(metric.name), metric.digits))
            if metric.ratio:
                row.append(_fmt(entry.ratios.get(metric.name), 2))
        rows.append(row)
        failed = len(entry.runs) - len(entry.good_runs())
        if failed:
            notes.append(f"  {label}: {failed} failed run(s): {entry.errors[0]}")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    out = [f"== {case.title}", line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out + notes)


@dataclass(frozen=True)
class Target:
    """A goal from the issue tracker, checked against this run's medians."""

    description: str
    case_key: str
    client: str
    metric: str
    #: "ratio" compares the ratio to aiosmtplib; "value" the median itself.
    kind: str
    op: str
    threshold: float
    #: The client a "ratio" target divides by, in the same case.
    baseline: str = BASELINE


TARGETS = (
    Target(
        "loopback smtp-sink, prebuilt 1 KB, send_messages: >= 4x aiosmtplib msg/s",
        "smtp-sink/loopback/sendmail",
        "ours_batch",
        RATE.name,
        "ratio",
        ">=",
        4.0,
    ),
    Target(
        "loopback smtp-sink, prebuilt 1 KB, send_messages: <= 0.25x aiosmtplib CPU per message",
        "smtp-sink/loopback/sendmail",
        "ours_batch",
        CPU.name,
        "ratio",
        "<=",
        0.25,
    ),
    Target(
        "loopback smtp-sink, prebuilt 1 KB, send_messages: <= 0.18x aiosmtplib CPU per message",
        "smtp-sink/loopback/sendmail",
        "ours_batch",
        CPU.name,
        "ratio",
        "<=",
        0.18,
    ),
    Target(
        "loopback, SMTPPool(8) on uvloop: >= 1.1x the msg/s of smtp-source -d -s 8 (C)",
        "smtp-sink/loopback/sendmail",
        "ours_pool_uvloop",
        RATE.name,
        "ratio",
        ">=",
        1.1,
        baseline="smtp_source_8",
    ),
    Target(
        "loopback, SMTPPool(8) on asyncio: >= 1.0x the msg/s of smtp-source -d -s 8 (C)",
        "smtp-sink/loopback/sendmail",
        "ours_pool",
        RATE.name,
        "ratio",
        ">=",
        1.0,
        baseline="smtp_source_8",
    ),
    Target(
        "loopback, SMTPPool(8) on uvloop: <= 1.0x the CPU per message of smtp-source -s 8",
        "smtp-sink/loopback/sendmail",
        "ours_pool_uvloop",
        CPU.name,
        "ratio",
        "<=",
        1.0,
        baseline="smtp_source_8",
    ),
    Target(
        "100,000-message batch, prebuilt items: peak memory above the items <= 300 B/message",
        "smtp-sink/loopback/memory",
        "ours_batch",
        PEAK_PER_MESSAGE.name,
        "value",
        "<=",
        300.0,
    ),
    Target(
        "100,000-message batch, lazy items: peak memory above the items <= 300 B/message",
        "smtp-sink/loopback/memory_lazy",
        "ours_batch_lazy",
        PEAK_PER_MESSAGE.name,
        "value",
        "<=",
        300.0,
    ),
    Target(
        "1 message to 1,000 recipients, sendmail: >= 50x aiosmtplib msg/s",
        "smtp-sink/loopback/fanout",
        "ours_pipelined",
        RATE.name,
        "ratio",
        ">=",
        50.0,
    ),
    Target(
        "loopback smtp-sink, EmailMessage objects, send_messages: >= 2x aiosmtplib msg/s",
        "smtp-sink/loopback/message",
        "ours_batch",
        RATE.name,
        "ratio",
        ">=",
        2.0,
    ),
    Target(
        "10 ms link, send_messages: <= 1.1 round trips per message",
        "smtp-sink/10ms/sendmail",
        "ours_batch",
        ROUND_TRIPS.name,
        "value",
        "<=",
        1.1,
    ),
    Target(
        "10 ms link, send_messages: >= 3.5x aiosmtplib msg/s",
        "smtp-sink/10ms/sendmail",
        "ours_batch",
        RATE.name,
        "ratio",
        ">=",
        3.5,
    ),
    Target(
        "10 ms link, SMTPPool(8): >= 25x aiosmtplib (one connection) msg/s",
        "smtp-sink/10ms/sendmail",
        "ours_pool",
        RATE.name,
        "ratio",
        ">=",
        25.0,
    ),
    Target(
        "10 MB attachment, send_message: peak memory increase <= 3x message size",
        "smtp-sink/loopback/large",
        "ours_pipelined",
        PEAK_OVER_SIZE.name,
        "value",
        "<=",
        3.0,
    ),
    Target(
        "10 MB attachment, send_messages: peak memory increase <= 3x message size",
        "smtp-sink/loopback/large",
        "ours_batch",
        PEAK_OVER_SIZE.name,
        "value",
        "<=",
        3.0,
    ),
    Target(
        "Django, loopback smtp-sink, send_messages of 1,000: >= 3x the stock backend's msg/s",
        "smtp-sink/loopback/message",
        "django_ours",
        RATE.name,
        "ratio",
        ">=",
        3.0,
        baseline="django_stock",
    ),
    Target(
        "Django, 10 ms link, send_messages of 1,000 with the pool: >= 20x the stock backend",
        "smtp-sink/10ms/message",
        "django_ours_pool",
        RATE.name,
        "ratio",
        ">=",
        20.0,
        baseline="django_stock",
    ),
)


def _target_value(target: Target, all_results: dict[str, dict[str, ClientResults]]) -> float | None:
    """The figure ``target`` is judged on, if this run measured it."""
    results = all_results.get(target.case_key, {})
    entry = results.get(target.client)
    if entry is None:
        return None
    if target.kind != "ratio":
        return entry.medians.get(target.metric)
    if target.baseline == BASELINE:
        return entry.ratios.get(target.metric)
    base = results.get(target.baseline)
    value = entry.medians.get(target.metric)
    reference = None if base is None else base.medians.get(target.metric)
    return value / reference if value is not None and reference else None


def check_targets(all_results: dict[str, dict[str, ClientResults]]) -> list[dict[str, Any]]:
    """Each target's measured value and PASS / MISS (or N/A when not measured)."""
    checked = []
    for target in TARGETS:
        value = _target_value(target, all_results)
        if value is None:
            status = "N/A"
        elif target.op == ">=":
            status = "PASS" if value >= target.threshold else "MISS"
        else:
            status = "PASS" if value <= target.threshold else "MISS"
        checked.append(
            {
                "description": target.description,
                "case": target.case_key,
                "client": target.client,
                "metric": target.metric,
                "kind": target.kind,
                "op": target.op,
                "threshold": target.threshold,
                "baseline": target.baseline,
                "value": value,
                "status": status,
            }
        )
    return checked


def render_targets(checked: list[dict[str, Any]]) -> str:
    """One PASS/MISS line per target."""
    lines = ["== Targets"]
    for item in checked:
        shown = "not measured" if item["value"] is None else f"{item['value']:.2f}"
        unit = f"x {item['baseline']}" if item["kind"] == "ratio" else ""
        lines.append(
            f"{item['status']:<4}  {item['description']}  "
            f"(measured {shown}{' ' + unit if unit and item['value'] is not None else ''}, "
            f"needs {item['op']} {item['threshold']:g})"
        )
    return "\n".join(lines)


#: The cases of the Django summary: (case key, clients compared with the stock backend).
DJANGO_SUMMARY = (
    ("smtp-sink/loopback/message", ("django_ours", "ours_batch")),
    ("smtp-sink/10ms/message", ("django_ours", "django_ours_pool")),
)


def django_entry(all_results: dict[str, dict[str, ClientResults]]) -> dict[str, Any]:
    """Django's send_messages: our backend vs the stock one, per case measured."""
    entry: dict[str, Any] = {}
    for key, clients in DJANGO_SUMMARY:
        results = all_results.get(key)
        if not results or "django_stock" not in results:
            continue
        figures: dict[str, Any] = {}
        for client in ("django_stock", *clients):
            found = results.get(client)
            if found is None:
                continue
            rate = found.medians.get(RATE.name)
            figures[client] = rate if rate is not None else (found.errors or ["not run"])[0]
        stock = figures.get("django_stock")
        for client in clients:
            ours = figures.get(client)
            if isinstance(stock, float) and isinstance(ours, float):
                figures[f"{client}_over_stock"] = ours / stock
        entry[key] = figures
    return entry


def render_django_entry(entry: dict[str, Any], cases: list[Case]) -> str:
    """The Django lines: our backend vs Django's stock backend."""

    def show(value: Any) -> str:
        return f"{value:,.1f} msg/s" if isinstance(value, float) else str(value)

    messages = {case.key: case.messages for case in cases}
    lines: list[str] = []
    for key, clients in DJANGO_SUMMARY:
        figures = entry.get(key)
        if figures is None:
            continue
        if lines:
            lines.append("")
        lines.append(f"== Django: send_messages of {messages.get(key, '?')} messages ({key})")
        lines.append(f"{CLIENTS['django_stock'].label}: {show(figures.get('django_stock'))}")
        for client in clients:
            ratio = figures.get(f"{client}_over_stock")
            shown = f"  ({ratio:.2f}x stock)" if ratio is not None else ""
            lines.append(f"{CLIENTS[client].label}: {show(figures.get(client, '-'))}{shown}")
    return "\n".join(lines) if lines else "== Django: not measured in this run"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("smtp-backends", "aiosmtplib", "aiosmtpd", "Django", "Flask", "Flask-Mail"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        postconf = subprocess.run(
            ["postconf", "-h", "mail_version"], capture_output=True, text=True, timeout=10
        )
        versions["postfix"] = postconf.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        versions["postfix"] = "unknown"
    return versions


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# Entry point -----------------------------------------------------------------------------


@contextlib.contextmanager
def _timer() -> Iterator[Callable[[], float]]:
    start = time.monotonic()
    yield lambda: time.monotonic() - start


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print the tables and targets; write the JSON file."""
    parser = argparse.ArgumentParser(
        prog="bash benchmarks/run", description="smtp_backends side-by-side benchmarks."
    )
    parser.add_argument("--quick", action="store_true", help="a shorter run (about 4 minutes)")
    parser.add_argument("--reps", type=int, help="repetitions per client (at least 3)")
    parser.add_argument(
        "--only", action="append", default=[], help="run cases whose server/link/workload has this"
    )
    parser.add_argument(
        "--clients",
        action="append",
        default=[],
        help="run only these clients (comma-separated names, repeatable), e.g. "
        "ours_pool_uvloop,smtp_source_8",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results file"
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    if args.reps is not None and args.reps < 3:
        parser.error("--reps must be at least 3 (the figures are medians)")
    cases = build_cases(args.quick, args.reps)
    if args.only:
        cases = [case for case in cases if any(text in case.key for text in args.only)]
        if not cases:
            parser.error("--only matched no case")
    if args.clients:
        wanted = {name for names in args.clients for name in names.split(",") if name}
        unknown = wanted - set(CLIENTS)
        if unknown:
            parser.error(f"--clients: unknown clients {sorted(unknown)}")
        cases = [
            dataclasses.replace(case, clients=tuple(c for c in case.clients if c in wanted))
            for case in cases
        ]
        cases = [case for case in cases if case.clients]
        if not cases:
            parser.error("--clients matched no client of the cases run")

    RESULTS_DIR.mkdir(exist_ok=True)
    log_dir = RESULTS_DIR / "logs"
    log_dir.mkdir(exist_ok=True)
    total_runs = sum(case.reps * len(case.clients) for case in cases)
    done = 0

    def progress(text: str) -> None:
        nonlocal done
        done += 1
        print(f"[{done}/~{total_runs}] {text}", file=sys.stderr, flush=True)

    meta: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "profile": "quick" if args.quick else "full",
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "versions": _versions(),
        "delay_ms_each_way": DELAY_MS,
        "baseline": BASELINE,
        "pool_connections": client_worker.POOL_CONNECTIONS,
    }
    all_results: dict[str, dict[str, ClientResults]] = {}
    case_seconds: dict[str, float] = meta.setdefault("case_seconds", {})
    with _timer() as elapsed:
        # Leaving the stack stops every server and proxy, even on an error or Ctrl-C;
        # worker processes are killed by subprocess.run when interrupted.
        with contextlib.ExitStack() as stack:
            servers = Servers(stack, log_dir)
            for case in cases:
                started = time.monotonic()
                all_results[case.key] = run_case(case, servers, progress)
                case_seconds[case.key] = round(time.monotonic() - started, 1)
        meta["seconds"] = round(elapsed(), 1)
    meta["load_after"] = _load()

    checked = check_targets(all_results)
    django = django_entry(all_results)
    print()
    print(
        f"smtp_backends benchmarks ({meta['profile']}, {meta['seconds']} s, "
        f"{meta['cpus']} CPUs, load {meta['load_before']} -> {meta['load_after']}); "
        f"x{BASELINE[:3]} = figure / {BASELINE}'s figure in the same table"
    )
    for case in cases:
        print()
        print(render_case(case, all_results[case.key]))
    print()
    print(render_django_entry(django, cases))
    print()
    print(render_targets(checked))

    document = {
        "meta": meta,
        "cases": [
            {
                "key": case.key,
                "server": case.server,
                "link": case.link,
                "workload": case.workload,
                "description": WORKLOAD_LABELS[case.workload],
                "messages": case.messages,
                "reps": case.reps,
                "clients": {
                    client: {
                        "label": CLIENTS[client].label,
                        "medians": entry.medians,
                        "vs_aiosmtplib": entry.ratios,
                        "runs": entry.runs,
                    }
                    for client, entry in all_results[case.key].items()
                },
            }
            for case in cases
        ],
        "django": django,
        "targets": checked,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
