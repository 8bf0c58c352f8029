"""The sync bridge: one long-lived event loop per process, and the pools that live on it.

Every test starts and ends without a bridge (``shutdown()`` on both sides), so no loop
thread or pooled socket outlives its test.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from smtp_backends import (
    SMTPPool,
    SMTPRecipientsRefused,
    SMTPTimeoutError,
    SMTPUnknownOutcomeTimeoutError,
)
from smtp_backends import bridge as bridge_module
from smtp_backends.bridge import (
    Bridge,
    get_bridge,
    run_async,
    run_sync,
    shared_pool,
    shutdown,
)
from tests.servers import RecordingHandler, SMTPServer

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def no_bridge(loop_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No bridge before the test; the test's bridge (pools, loop thread) shut down after.

    The process's bridge runs on the test's loop kind (``[asyncio]`` / ``[uvloop]``),
    chosen as users choose it: ``SMTP_BACKENDS_LOOP`` (inherited by forked and spawned
    children too).
    """
    monkeypatch.setenv(bridge_module.LOOP_ENVIRONMENT_VARIABLE, loop_name)
    shutdown()
    yield
    shutdown()


class GatedHandler(RecordingHandler):
    """Holds the reply to DATA while ``gate`` is clear."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = threading.Event()
        self.gate.set()
        self.in_data = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        while not self.gate.is_set():  # noqa: ASYNC110 - set from the test's thread
            await asyncio.sleep(0.005)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def server(make_smtpd: Callable[..., SMTPServer]) -> Iterator[SMTPServer]:
    handler = GatedHandler()
    yield make_smtpd(handler=handler)
    handler.gate.set()


def message(subject: str, to: str = "bob@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"Body of {subject}.\n")
    return msg


def subjects(server: SMTPServer) -> list[str]:
    return [str(m.message["Subject"]) for m in server.messages]


def factory_for(server: SMTPServer, calls: list[int] | None = None, **options: Any) -> Any:
    def factory() -> SMTPPool:
        if calls is not None:
            calls.append(1)
        options.setdefault("timeout", TIMEOUT)
        return SMTPPool(hostname=server.host, port=server.port, **options)

    return factory


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# --------------------------------------------------------------------------- reuse


def test_sequential_sync_calls_share_one_pooled_connection(server: SMTPServer) -> None:
    calls: list[int] = []
    key = ("bridge-test", server.port)
    pool = shared_pool(key, factory_for(server, calls))
    for number in range(5):
        assert shared_pool(key, factory_for(server, calls)) is pool
        errors, _ = run_sync(pool.send_message, message(f"sync-{number}"))
        assert errors == {}
    assert calls == [1]
    assert server.handler.connections == 1
    assert subjects(server) == [f"sync-{n}" for n in range(5)]
    assert "QUIT" not in server.handler.commands
    shutdown()
    assert server.handler.commands.count("QUIT") == 1
    assert wait_until(lambda: server.handler.open_connections == 0)


def test_run_sync_passes_arguments_and_keywords(server: SMTPServer) -> None:
    pool = shared_pool("kw", factory_for(server))
    errors, text = run_sync(
        pool.sendmail, "alice@example.com", ["bob@example.com"], b"Subject: kw\r\n\r\nhi\r\n"
    )
    assert errors == {}
    assert text.startswith("2.0.0")

    async def add(a: int, b: int, *, c: int) -> int:
        return a + b + c

    assert run_sync(add, 1, 2, c=3) == 6


async def test_run_sync_inside_a_running_event_loop(server: SMTPServer) -> None:
    # This test runs on pytest-asyncio's loop: a plain async_to_sync would refuse here.
    pool = shared_pool("inside-loop", factory_for(server))
    for number in range(3):
        errors, _ = run_sync(pool.send_message, message(f"inside-{number}"))
        assert errors == {}
    assert server.handler.connections == 1
    assert subjects(server) == ["inside-0", "inside-1", "inside-2"]


def test_run_sync_inside_asyncio_run(server: SMTPServer) -> None:
    pool = shared_pool("asyncio-run", factory_for(server))

    async def main() -> Any:
        return run_sync(pool.send_message, message("from asyncio.run"))

    errors, _ = asyncio.run(main())
    assert errors == {}
    # The connection outlived asyncio.run's loop: the next call reuses it.
    errors, _ = asyncio.run(main())
    assert errors == {}
    assert server.handler.connections == 1
    assert len(server.messages) == 2


async def test_run_async_from_another_loop(server: SMTPServer) -> None:
    pool = shared_pool("async", factory_for(server, max_connections=2))
    errors, _ = await run_async(pool.send_message, message("first"))
    assert errors == {}
    results = await asyncio.gather(
        *(run_async(pool.send_message, message(f"gathered-{n}")) for n in range(6))
    )
    assert all(errors == {} for errors, _ in results)
    assert len(server.messages) == 7
    assert server.handler.connections <= 2
    assert get_bridge().loop is not asyncio.get_running_loop()


def test_run_async_on_the_bridge_loop_awaits_directly() -> None:
    async def current() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    async def inner() -> tuple[bool, bool]:
        bridge = get_bridge()
        task = await bridge.run_async(current())
        return task is asyncio.current_task(), bridge.in_loop_thread()

    # Awaited in the caller's own task, not submitted to the loop it is already on.
    assert run_sync(inner) == (True, True)
    assert not get_bridge().in_loop_thread()


# --------------------------------------------------------------------------- errors


def test_exceptions_cross_with_type_and_traceback(server: SMTPServer) -> None:
    pool = shared_pool("errors", factory_for(server))
    with pytest.raises(SMTPRecipientsRefused) as caught:
        run_sync(pool.sendmail, "alice@example.com", ["refuse-1@example.com"], b"x\r\n")
    assert [r.recipient for r in caught.value.recipients] == ["refuse-1@example.com"]
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(f.name == "sendmail" and f.filename.endswith("client.py") for f in frames)
    assert any(f.name == "_with_client" and f.filename.endswith("pool.py") for f in frames)

    async def explode() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom") as raised:
        run_sync(explode)
    assert "explode" in [f.name for f in traceback.extract_tb(raised.value.__traceback__)]
    # The connection survived the refusal and is reused.
    run_sync(pool.send_message, message("after"))
    assert server.handler.connections == 1


async def test_exceptions_cross_run_async_with_their_traceback(server: SMTPServer) -> None:
    pool = shared_pool("errors-async", factory_for(server))
    with pytest.raises(SMTPRecipientsRefused) as caught:
        await run_async(pool.send_message, message("x", to="refuse-2@example.com"))
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(f.name == "send_message" and f.filename.endswith("client.py") for f in frames)


def test_timeout_raises_smtp_timeout_error_and_cancels_the_work() -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError, match="mail bridge") as caught:
        run_sync(slow, timeout=0.1)
    assert time.monotonic() - started < 2
    assert isinstance(caught.value, TimeoutError)
    assert cancelled.wait(2)
    assert run_sync(asyncio.sleep, 0, "still works") == "still works"


def test_timeout_mid_send_does_not_reuse_the_connection(server: SMTPServer) -> None:
    handler = server.handler
    assert isinstance(handler, GatedHandler)
    pool = shared_pool("timeout", factory_for(server, max_connections=1))
    run_sync(pool.send_message, message("before"))
    handler.in_data.clear()
    handler.gate.clear()
    try:
        # The bridge gives up while the server holds its reply to the end of data.
        with pytest.raises(SMTPTimeoutError):
            run_sync(pool.send_message, message("in doubt"), timeout=1.5)
        assert handler.in_data.is_set()
    finally:
        handler.gate.set()
    errors, _ = run_sync(pool.send_message, message("after"), timeout=TIMEOUT)
    assert errors == {}
    assert handler.connections == 2
    by_subject = {str(m.message["Subject"]): m.connection_id for m in server.messages}
    assert by_subject["before"] == 1
    assert by_subject["after"] == 2
    assert subjects(server).count("in doubt") <= 1


async def test_cancelling_run_async_cancels_the_work_on_the_bridge() -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(run_async(slow))
    assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.get_running_loop().run_in_executor(None, cancelled.wait, 2)


def test_shutdown_ends_calls_still_in_flight() -> None:
    # A sync caller blocked in run_sync when the bridge shuts down must not be left waiting
    # for a loop that no longer runs (here it would wait for its own 3 s timeout).
    started = threading.Event()
    outcome: list[BaseException | None] = []

    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    def call() -> None:
        try:
            run_sync(slow, timeout=3)
        except BaseException as exc:
            outcome.append(exc)
        else:  # pragma: no cover - slow() never returns
            outcome.append(None)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert started.wait(2)
    began = time.monotonic()
    shutdown(timeout=2)
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - began < 2, f"the caller waited for its own timeout: {outcome}"
    assert outcome and not isinstance(outcome[0], SMTPTimeoutError)


def test_bridge_run_on_its_own_thread_raises_instead_of_deadlocking() -> None:
    # The inner timeouts only bound the damage if the check were missing.
    async def nested_run() -> None:
        get_bridge().run(asyncio.sleep(0), timeout=1)

    async def nested_run_sync() -> None:
        run_sync(asyncio.sleep, 0, timeout=1)

    with pytest.raises(RuntimeError, match="own loop"):
        run_sync(nested_run, timeout=TIMEOUT)
    with pytest.raises(RuntimeError, match="own loop"):
        run_sync(nested_run_sync, timeout=TIMEOUT)
    assert get_bridge().running


# --------------------------------------------------------------------------- lifecycle


def test_bridge_starts_lazily_and_closes_its_pools(server: SMTPServer) -> None:
    bridge = Bridge(name="test-bridge")
    assert repr(bridge) == "<Bridge stopped, 0 pools>"
    assert not bridge.running
    bridge.close()  # never started: nothing to do
    pool = bridge.pool("k", factory_for(server))
    assert bridge.pool("k", factory_for(server)) is pool
    assert not bridge.running  # creating a pool starts nothing
    bridge.run(pool.send_message(message("one")))
    assert bridge.running
    assert repr(bridge) == "<Bridge running, 1 pools>"
    thread = bridge._thread
    assert thread is not None and thread.name == "test-bridge" and thread.daemon
    bridge.close()
    assert not bridge.running
    assert not thread.is_alive()
    assert pool.closed
    assert server.handler.commands.count("QUIT") == 1
    bridge.close()  # twice: nothing happens
    # A closed bridge starts a new loop on next use.
    assert bridge.run(asyncio.sleep(0, "again")) == "again"
    bridge.close()
    assert not bridge.running


def _loop_module(bridge: Bridge) -> str:
    return type(bridge.loop).__module__.partition(".")[0]


def test_the_bridge_runs_the_loop_it_is_asked_for(server: SMTPServer, loop_name: str) -> None:
    # The environment (set by no_bridge to this test's loop) chooses the process's bridge loop.
    bridge = get_bridge()
    assert bridge.loop_name == loop_name
    assert _loop_module(bridge) == loop_name
    pool = shared_pool("on-loop", factory_for(server))
    run_sync(pool.send_message, message("on the chosen loop"))
    assert subjects(server) == ["on the chosen loop"]
    # An argument wins over the environment.
    for name in ("asyncio", "uvloop"):
        explicit = Bridge(loop=name)
        try:
            assert explicit.loop_name == name
            assert _loop_module(explicit) == name
            assert explicit.run(asyncio.sleep(0, name), timeout=TIMEOUT) == name
        finally:
            explicit.close()


def test_an_unknown_loop_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="loop='trio'"):
        Bridge(loop="trio")
    monkeypatch.setenv("SMTP_BACKENDS_LOOP", "tokio")
    with pytest.raises(ValueError, match="SMTP_BACKENDS_LOOP='tokio'"):
        get_bridge()
    monkeypatch.setenv("SMTP_BACKENDS_LOOP", " UVLOOP ")
    assert get_bridge().loop_name == "uvloop"


def test_uvloop_asked_for_but_not_installed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # uvloop cannot be uninstalled for one test: an import that fails stands in for it.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(ModuleNotFoundError, match=r"smtp-backends\[uvloop\]"):
        Bridge(loop="uvloop")
    # Through the environment (shared with other programs): asyncio's loop, with a warning.
    monkeypatch.setenv("SMTP_BACKENDS_LOOP", "uvloop")
    bridge = Bridge()
    assert bridge.loop_name == "asyncio"
    assert "uvloop is not installed" in caplog.text
    assert bridge.run(asyncio.sleep(0, "ran"), timeout=TIMEOUT) == "ran"
    assert _loop_module(bridge) == "asyncio"
    bridge.close()


def test_closed_shared_pool_is_replaced(server: SMTPServer) -> None:
    calls: list[int] = []
    pool = shared_pool("replace", factory_for(server, calls))
    run_sync(pool.close)
    replacement = shared_pool("replace", factory_for(server, calls))
    assert replacement is not pool
    assert calls == [1, 1]
    run_sync(replacement.send_message, message("on the new pool"))
    assert subjects(server) == ["on the new pool"]


def test_get_bridge_is_one_per_process_until_shutdown() -> None:
    bridge = get_bridge()
    assert get_bridge() is bridge
    assert bridge.pid == os.getpid()
    run_sync(asyncio.sleep, 0)
    thread = bridge._thread
    assert thread is not None and thread.is_alive()
    shutdown()
    assert not thread.is_alive()
    assert get_bridge() is not bridge
    shutdown()
    shutdown()  # nothing to shut down: no error


def test_a_bridge_from_another_process_is_set_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    inherited: list[Bridge] = []
    monkeypatch.setattr(bridge_module, "_inherited", inherited)
    parent = get_bridge()
    parent.loop  # noqa: B018 - start its thread
    # As a forked child sees it when the at-fork hook did not run: another pid.
    monkeypatch.setattr(parent, "pid", -1)
    child = get_bridge()
    assert child is not parent
    assert child.pid == os.getpid()
    assert inherited == [parent]
    # shutdown() never closes another process's bridge.
    monkeypatch.setattr(bridge_module, "_bridge", parent)
    shutdown()
    assert parent.running
    parent.close()


def test_after_fork_hook_sets_the_parents_bridge_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    inherited: list[Bridge] = []
    monkeypatch.setattr(bridge_module, "_inherited", inherited)
    monkeypatch.setattr(bridge_module, "_bridge_lock", threading.Lock())
    bridge_module._after_fork_in_child()  # no bridge yet: nothing to set aside
    assert inherited == []
    parent = get_bridge()
    bridge_module._after_fork_in_child()
    assert inherited == [parent]
    assert bridge_module._bridge_lock is not None
    child = get_bridge()
    assert child is not parent


def child_sends(
    parent_pool: SMTPPool, parent_bridge: Bridge, key: Any, server: SMTPServer
) -> int:  # pragma: no cover - runs in a forked child
    """In a forked child: send through a bridge and pool of its own; the exit code says why
    not (0: all good)."""
    if get_bridge() is parent_bridge:
        return 3
    try:
        # The parent's pool belongs to the parent's loop: refused, its socket untouched.
        run_sync(parent_pool.send_message, message("parent pool in child"), timeout=2)
        return 4
    except RuntimeError:
        pass
    child_pool = shared_pool(key, factory_for(server))
    if child_pool is parent_pool:
        return 5
    run_sync(child_pool.send_message, message("child"), timeout=TIMEOUT)
    shutdown(timeout=TIMEOUT)  # QUITs the child's connection only
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_uses_its_own_bridge_and_connection(server: SMTPServer) -> None:
    key = ("fork", server.port)
    pool = shared_pool(key, factory_for(server))
    run_sync(pool.send_message, message("parent-1"))
    parent_bridge = get_bridge()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() with threads running; the bridge is built for it.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage is not collected here
        code = 2
        try:
            code = child_sends(pool, parent_bridge, key, server)
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's pooled connection is intact and still in use.
    errors, _ = run_sync(pool.send_message, message("parent-2"), timeout=TIMEOUT)
    assert errors == {}
    by_subject = {str(m.message["Subject"]): m.connection_id for m in server.messages}
    assert set(by_subject) == {"parent-1", "child", "parent-2"}
    assert by_subject["parent-1"] == by_subject["parent-2"]
    assert by_subject["child"] != by_subject["parent-1"]
    assert server.handler.connections == 2
    assert server.handler.commands.count("QUIT") == 1  # the child's
    assert get_bridge() is parent_bridge


def test_interpreter_exit_quits_cleanly(server: SMTPServer) -> None:
    code = textwrap.dedent(
        f"""
        from email.message import EmailMessage

        from smtp_backends import SMTPPool
        from smtp_backends.bridge import run_sync, shared_pool

        pool = shared_pool(
            "exit", lambda: SMTPPool(hostname={server.host!r}, port={server.port}, timeout=5)
        )
        for number in range(3):
            msg = EmailMessage()
            msg["From"] = "alice@example.com"
            msg["To"] = "bob@example.com"
            msg["Subject"] = f"exit-{{number}}"
            msg.set_content("bye")
            run_sync(pool.send_message, msg)
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.stderr == b""
    assert result.returncode == 0
    assert subjects(server) == ["exit-0", "exit-1", "exit-2"]
    assert server.handler.connections == 1
    assert server.handler.commands[-1] == "QUIT"
    assert wait_until(lambda: server.handler.open_connections == 0)


def test_a_timeout_raised_by_the_call_keeps_its_own_type() -> None:
    # On Python 3.11+ concurrent.futures.TimeoutError is the builtin TimeoutError, which
    # every SMTPTimeoutError also is: the call's own error must not pass for the bridge's.
    async def unknown_outcome() -> None:
        raise SMTPUnknownOutcomeTimeoutError("the dot went out, no reply")

    with pytest.raises(SMTPUnknownOutcomeTimeoutError):
        run_sync(unknown_outcome, timeout=TIMEOUT)


def test_calls_do_not_keep_the_callers_context_variables() -> None:
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")

    async def seen() -> str:
        return request.get()

    request.set("a request")
    assert run_sync(seen, timeout=TIMEOUT) == "none"
