"""The processes the benchmarks talk to: SMTP sinks and the latency proxy.

Every server listens on 127.0.0.1 only, runs as a child process of the
orchestrator, and is stopped by :meth:`ManagedProcess.stop` (terminate, then
kill), which :class:`ManagedProcess` also does as a context manager.

* Postfix's ``smtp-sink`` (C, advertises PIPELINING): the throughput reference.
* an aiosmtpd sink (:mod:`benchmarks.aiosmtpd_sink`) in its own process, so its CPU
  never shows in the client's accounting. It does not advertise PIPELINING.
* :mod:`benchmarks.latency_proxy`, a delaying TCP proxy in front of a sink.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from . import LOOPBACK

__all__ = (
    "ManagedProcess",
    "ProxyControl",
    "free_port",
    "postfix_tool",
    "start_aiosmtpd_sink",
    "start_latency_proxy",
    "start_smtp_sink",
    "wait_for_greeting",
)

#: Seconds a server gets to start answering before the benchmark gives up.
READY_TIMEOUT = 20.0

#: Where Debian's postfix package puts its test tools.
POSTFIX_DIRS = ("/usr/sbin", "/usr/lib/postfix/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """A child process the orchestrator owns, with its port and log file.

    Args:
        name: a short name for messages.
        argv: the command line.
        port: the port it serves (for the caller's convenience).
        log_path: file that receives the child's stdout and stderr.
    """

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the terminal reaches the
                # orchestrator, whose finally block then stops it cleanly.
                start_new_session=True,
            )

    def __repr__(self) -> str:
        state = "running" if self.popen.poll() is None else f"exited {self.popen.returncode}"
        return f"<ManagedProcess {self.name} pid={self.popen.pid} port={self.port} {state}>"

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.popen.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the process (SIGTERM), then kill it if it lingers past ``grace``."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(grace)


def wait_for_greeting(
    port: int, process: ManagedProcess, timeout: float = READY_TIMEOUT, expect: bytes = b"220"
) -> None:
    """Connect to ``port`` until the first bytes received start with ``expect``.

    Raises:
        RuntimeError: the process exited, or no greeting came within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not process.running():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
                greeting = sock.recv(512)
            if greeting.startswith(expect):
                return
            last_error = f"unexpected greeting {greeting[:80]!r}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} did not answer on port {port} in {timeout} s: {last_error}")


def postfix_tool(name: str) -> str:
    """The path of a Postfix test tool (``smtp-sink``, ``smtp-source``), installing if needed.

    When the tool is missing and this process runs as root on a system with
    apt-get, the Debian package ``postfix`` is installed non-interactively.

    Raises:
        RuntimeError: the tool is missing and cannot be installed here.
    """
    for attempt in (1, 2):
        for directory in POSTFIX_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        found = shutil.which(name)
        if found:
            return found
        if attempt == 2:
            break
        apt_get = shutil.which("apt-get")
        if os.geteuid() != 0 or apt_get is None:
            break
        print(f"==> {name} not found: installing Debian's postfix package", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt_get, "update"], check=False, env=env, timeout=600)
        subprocess.run([apt_get, "install", "-y", "postfix"], check=True, env=env, timeout=900)
    raise RuntimeError(
        f"{name} not found; install Postfix (Debian: `apt-get install -y postfix`, as root)"
    )


def start_smtp_sink(log_dir: Path) -> ManagedProcess:
    """Start Postfix's smtp-sink on a free loopback port and wait for its greeting.

    Runs ``smtp-sink [-u nobody] 127.0.0.1:PORT 1000`` (1000 is the listen
    backlog; ``-u`` only when root, as smtp-sink then drops privileges).
    """
    sink = postfix_tool("smtp-sink")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = ManagedProcess(
        "smtp-sink", [sink, *user, f"{LOOPBACK}:{port}", "1000"], port, log_dir / "smtp-sink.log"
    )
    try:
        wait_for_greeting(port, process)
    except BaseException:
        process.stop()
        raise
    return process


def start_aiosmtpd_sink(log_dir: Path) -> ManagedProcess:
    """Start the aiosmtpd sink (:mod:`benchmarks.aiosmtpd_sink`) in its own process."""
    port = free_port()
    process = ManagedProcess(
        "aiosmtpd",
        [sys.executable, "-m", "benchmarks.aiosmtpd_sink", "--port", str(port)],
        port,
        log_dir / "aiosmtpd.log",
    )
    try:
        wait_for_greeting(port, process)
    except BaseException:
        process.stop()
        raise
    return process


class ProxyControl:
    """Talks to a running :mod:`benchmarks.latency_proxy` over its control port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _ask(self, command: str, timeout: float = 10.0) -> bytes:
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
            sock.sendall(command.encode("ascii") + b"\n")
            chunks: list[bytes] = []
            # The proxy answers one line and closes; the loop ends at EOF or 1 MiB.
            total = 0
            while total < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        return b"".join(chunks)

    def ping(self) -> bool:
        """Whether the proxy answers."""
        try:
            return self._ask("PING", timeout=2.0).startswith(b"PONG")
        except OSError:
            return False

    def reset(self) -> None:
        """Forget every finished connection and zero the counters of open ones."""
        if not self._ask("RESET").startswith(b"OK"):
            raise RuntimeError("latency proxy refused RESET")

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset: ``{"connections": [...], "turns": n, ...}``."""
        data: dict[str, Any] = json.loads(self._ask("STATS"))
        return data


def start_latency_proxy(
    target_port: int, delay_ms: float, log_dir: Path, name: str = "latency-proxy"
) -> tuple[ManagedProcess, ProxyControl]:
    """Start :mod:`benchmarks.latency_proxy` in front of ``target_port``.

    ``name`` names the process in messages and its log file.

    Returns the process (its ``port`` is where clients connect) and a control
    handle for the round-trip counters.
    """
    listen_port = free_port()
    control_port = free_port()
    process = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "benchmarks.latency_proxy",
            "--listen-port",
            str(listen_port),
            "--control-port",
            str(control_port),
            "--target-port",
            str(target_port),
            "--delay-ms",
            str(delay_ms),
        ],
        listen_port,
        log_dir / f"{name}.log",
    )
    control = ProxyControl(control_port)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not control.ping():
            if not process.running() or time.monotonic() > deadline:
                raise RuntimeError(f"latency proxy did not start:\n{process.log_tail()}")
            time.sleep(0.05)
        # Through the proxy the sink's greeting arrives one delay later.
        wait_for_greeting(listen_port, process)
        control.reset()
    except BaseException:
        process.stop()
        raise
    return process, control
