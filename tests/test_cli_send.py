"""``smtp-backends send``, driven as a subprocess against real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from smtp_backends.cli import main
from tests.servers import (
    DATA_FAIL_MARKER,
    PASSWORD,
    USERNAME,
    RecordingHandler,
    SMTPServer,
    free_port,
    start_smtpd,
)

COMMAND = [sys.executable, "-W", "error", "-m", "smtp_backends"]


def cli_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without SMTP_BACKENDS_* settings, plus ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_BACKENDS_")}
    environment.update(env or {})
    return environment


def run_cli(
    *argv: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m smtp_backends ARGV`` to its end."""
    return subprocess.run(
        [*COMMAND, *argv],
        capture_output=True,
        text=True,
        input=input,
        env=cli_environment(env),
        timeout=60,
        check=False,
    )


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def run_in_process(
    *argv: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``main(ARGV)`` in this process, with its environment, stdin, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
    with (
        mock.patch.dict(os.environ, cli_environment(env), clear=True),
        mock.patch.object(sys, "stdin", stdin),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = main(list(argv))
        except SystemExit as exit_info:
            status = exit_info.code if isinstance(exit_info.code, int) else 1
    return subprocess.CompletedProcess(list(argv), status, out.getvalue(), err.getvalue())


@pytest.fixture(params=["subprocess", "in-process"])
def cli(request: pytest.FixtureRequest) -> Runner:
    """Runs the command line as a subprocess, or in this process (which coverage sees)."""
    return run_cli if request.param == "subprocess" else run_in_process


def eml(to: str, subject: str = "hello", extra: str = "") -> str:
    return f"From: sender@example.org\r\nTo: {to}\r\n{extra}Subject: {subject}\r\n\r\nbody\r\n"


def write_box(directory: Path, count: int, **options: Any) -> Path:
    directory.mkdir(exist_ok=True)
    for number in range(count):
        (directory / f"{number:03}.eml").write_bytes(
            eml(f"user{number}@example.org", f"message {number}", **options).encode()
        )
    return directory


def host(server: SMTPServer) -> str:
    return f"{server.host}:{server.port}"


# --------------------------------------------------------------------------- sending


def test_a_directory_is_sent_with_plain_progress_and_a_summary(
    cli: Runner, smtpd: SMTPServer, tmp_path: Path
) -> None:
    box = write_box(tmp_path / "box", 3, extra="Bcc: blind@example.org\r\n")
    result = cli("send", "--host", host(smtpd), str(box))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"sending 3 messages to {host(smtpd)}"
    assert lines[1].startswith(f"[1/3] sent {box / '000.eml'}: 2.0.0 OK queued as")
    assert len(lines) == 4
    assert result.stdout.startswith(f"3 of 3 sent to {host(smtpd)} in ")
    assert "  sent:                           3\n" in result.stdout
    assert "  not sent:                       0\n" in result.stdout
    assert [m.rcpt_tos for m in smtpd.messages] == [
        [f"user{n}@example.org", "blind@example.org"] for n in range(3)
    ]
    for number, received in enumerate(smtpd.messages):
        # Byte for byte what the file holds, without its Bcc line.
        expected = eml(f"user{number}@example.org", f"message {number}").encode()
        assert received.original_content == expected
        assert b"blind@" not in received.original_content


def test_refusals_and_failures_are_reported_with_exit_status_1(
    cli: Runner, smtpd: SMTPServer, tmp_path: Path
) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "1.eml").write_text(eml("refuse-one@example.org, ok@example.org"))
    (box / "2.eml").write_text(eml("refuse-all@example.org"))
    (box / "3.eml").write_text(eml("x@example.org", extra=f"{DATA_FAIL_MARKER.decode()}: 1\r\n"))
    (box / "4.eml").write_text(eml("fine@example.org"))
    result = cli("send", "--host", host(smtpd), str(box), "--json", "--quiet")
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["counts"] == {
        "sent": 2,
        "refused": 1,
        "failed": 1,
        "unknown": 0,
        "not_sent": 0,
        "recipients_refused": 2,
    }
    assert report["exit_status"] == 1
    first, second, third, fourth = report["messages"]
    assert first["status"] == "sent"
    assert first["refused"] == {"refuse-one@example.org": "550 5.1.1 no such user"}
    assert second["status"] == "refused"
    assert second["refused"] == {"refuse-all@example.org": "550 5.1.1 no such user"}
    assert third["status"] == "failed"
    assert third["error"] == "SMTPDataError: 554 5.6.0 message refused"
    assert fourth["status"] == "sent" and fourth["reply"].startswith("2.0.0 OK queued as")
    assert [m.rcpt_tos for m in smtpd.messages] == [["ok@example.org"], ["fine@example.org"]]

    text = cli("send", "--host", host(smtpd), str(box))
    assert text.returncode == 1
    assert "Refused recipients:\n" in text.stdout
    assert f"  {box / '1.eml'}: refuse-one@example.org: 550 5.1.1 no such user\n" in text.stdout
    assert f"Failed:\n  {box / '3.eml'}: SMTPDataError: 554 5.6.0 message refused\n" in text.stdout


def test_a_pool_sends_over_several_connections(
    cli: Runner, smtpd: SMTPServer, tmp_path: Path
) -> None:
    box = write_box(tmp_path / "box", 12)
    result = cli("send", "--host", host(smtpd), "--connections", "3", str(box), "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["connections"] == 3
    assert report["counts"]["sent"] == 12
    assert [m["status"] for m in report["messages"]] == ["sent"] * 12
    assert sorted(m.rcpt_tos[0] for m in smtpd.messages) == sorted(
        f"user{n}@example.org" for n in range(12)
    )
    assert 1 < smtpd.handler.connections <= 3


def test_a_message_built_from_flags_keeps_bcc_out(
    cli: Runner, smtpd: SMTPServer, tmp_path: Path
) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached text\n")
    result = cli(
        "send", "--host", host(smtpd), "--from", "Me <me@example.org>",
        "--to", "you@example.org", "--cc", "cc@example.org", "--bcc", "hidden@example.org",
        "--subject", "Built", "--body", "Hello", "--html", "<p>Hello</p>",
        "--attach", str(attachment),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [received] = smtpd.messages
    assert received.mail_from == "me@example.org"
    assert received.rcpt_tos == ["you@example.org", "cc@example.org", "hidden@example.org"]
    assert b"hidden@example.org" not in received.original_content
    parsed = received.message
    assert parsed["Subject"] == "Built" and parsed["Cc"] == "cc@example.org"
    assert [part.get_filename() for part in parsed.iter_attachments()] == ["notes.txt"]


def test_stdin_and_an_mbox(cli: Runner, smtpd: SMTPServer, tmp_path: Path) -> None:
    result = cli("send", "--host", host(smtpd), "-", input=eml("stdin@example.org"))
    assert result.returncode == 0, result.stderr
    assert "[1/1] sent <stdin>: 2.0.0 OK" in result.stderr
    mbox = tmp_path / "archive.mbox"
    mbox.write_text(
        "From sender@example.org Thu Dec  3 10:00:00 2026\n"
        + eml("m1@example.org").replace("\r", "")
        + "\nFrom sender@example.org Thu Dec  3 10:00:01 2026\n"
        + eml("m2@example.org").replace("\r", "")
    )
    result = cli("send", "--host", host(smtpd), str(mbox))
    assert result.returncode == 0, result.stderr
    assert f"[2/2] sent {mbox}[1]: " in result.stderr
    assert [m.rcpt_tos for m in smtpd.messages] == [
        ["stdin@example.org"],
        ["m1@example.org"],
        ["m2@example.org"],
    ]


def test_from_and_to_replace_the_envelope_of_a_file(
    cli: Runner, smtpd: SMTPServer, tmp_path: Path
) -> None:
    path = tmp_path / "m.eml"
    path.write_text(eml("header@example.org"))
    result = cli(
        "send", "--host", host(smtpd), str(path),
        "--from", "bounce@example.org", "--to", "a@example.org", "--bcc", "b@example.org",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [received] = smtpd.messages
    assert received.mail_from == "bounce@example.org"
    assert received.rcpt_tos == ["a@example.org", "b@example.org"]
    assert received.original_content == path.read_bytes()


def test_settings_from_the_environment_and_a_login_over_starttls(
    cli: Runner, smtpd_starttls: SMTPServer, ca_bundle_path: Path, tmp_path: Path
) -> None:
    box = write_box(tmp_path / "box", 2)
    env = {
        "SMTP_BACKENDS_HOST": smtpd_starttls.host,
        "SMTP_BACKENDS_PORT": str(smtpd_starttls.port),
        "SMTP_BACKENDS_START_TLS": "yes",
        "SMTP_BACKENDS_CA_FILE": str(ca_bundle_path),
        "SMTP_BACKENDS_USERNAME": USERNAME,
        "SMTP_BACKENDS_PASSWORD": PASSWORD,
    }
    result = cli("send", str(box), env=env)
    assert result.returncode == 0, result.stderr
    assert [(m.tls, m.auth_login) for m in smtpd_starttls.messages] == [(True, USERNAME)] * 2
    assert PASSWORD not in result.stdout + result.stderr
    # A flag wins over its variable: --starttls no, and the server refuses AUTH before TLS.
    refused = cli("send", str(box), "--starttls", "no", env=env)
    assert refused.returncode == 1
    assert PASSWORD not in refused.stdout + refused.stderr
    assert "failed:                         2" in refused.stdout


def test_implicit_tls(
    cli: Runner, smtpd_tls: SMTPServer, ca_bundle_path: Path, tmp_path: Path
) -> None:
    box = write_box(tmp_path / "box", 1)
    result = cli(
        "send", "--host", host(smtpd_tls), "--tls", "--cafile", str(ca_bundle_path), str(box)
    )
    assert result.returncode == 0, result.stderr
    assert smtpd_tls.messages[0].tls
    untrusted = cli("send", "--host", host(smtpd_tls), "--tls", str(box))
    assert untrusted.returncode == 1
    assert "SMTPCertificateError" in untrusted.stdout


def test_an_unreachable_server_fails_every_message(cli: Runner, tmp_path: Path) -> None:
    box = write_box(tmp_path / "box", 2)
    for connections in ("1", "2"):
        result = cli(
            "send", "--host", f"127.0.0.1:{free_port()}", "--connections", connections,
            "--timeout", "5", str(box), "--json",
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        assert report["counts"]["failed"] == 2
        assert all(m["error"].startswith("SMTPConnectError") for m in report["messages"])
    # The text summary lists ten problems of a kind, then counts the rest.
    many = write_box(tmp_path / "many", 12)
    result = cli("send", "--host", f"127.0.0.1:{free_port()}", str(many), "-q")
    assert result.returncode == 1
    assert result.stdout.count(": SMTPConnectError: Error connecting to 127.0.0.1 on port ") == 10
    assert "  ... and 2 more (--json lists every message)\n" in result.stdout


def test_usage_errors_exit_with_status_2(cli: Runner, tmp_path: Path) -> None:
    box = write_box(tmp_path / "box", 1)
    for argv, env, message in (
        (["send"], {}, "give SOURCE files, or --from and --to to build a message"),
        (["send", str(box), "--subject", "x"], {}, "--subject builds a message"),
        (["send", str(box), "--connections", "0"], {}, "--connections must be at least 1"),
        (["send", str(box)], {"SMTP_BACKENDS_PORT": "smtp"}, "SMTP_BACKENDS_PORT: 'smtp'"),
        (["send", str(box)], {"SMTP_BACKENDS_USERNAME": "u"}, "a password is needed"),
        (["send", "--from", "me@example.org", "--to", "nobody"], {}, "--to: 'nobody' is not"),
        (["send", str(tmp_path / "nope.eml")], {}, "nope.eml: no such file or directory"),
    ):
        result = cli(*argv, env=env, input="")
        assert result.returncode == 2, (argv, result.stderr)
        assert message in result.stderr, result.stderr
        assert result.stdout == ""


# --------------------------------------------------------------------------- Ctrl-C


class SlowHandler(RecordingHandler):
    """Answers each end of data after a pause, so a batch takes a while."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.15)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtpd() -> Iterator[SMTPServer]:
    server = start_smtpd(handler=SlowHandler())
    yield server
    server.stop()


def _interrupt(argv: list[str], after_lines: int, signals: int) -> tuple[int, dict[str, Any], str]:
    """Run ``send`` with ``--json``, send SIGINT ``signals`` times once progress shows."""
    with subprocess.Popen(
        [*COMMAND, *argv, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
    ) as process:
        watchdog = threading.Timer(30, process.kill)
        watchdog.start()
        try:
            assert process.stderr is not None and process.stdout is not None
            seen = 0
            while seen < after_lines:
                line = process.stderr.readline()
                assert line, "the command ended before it could be interrupted"
                seen += line.startswith("[")
            for _ in range(signals):
                process.send_signal(signal.SIGINT)
                time.sleep(0.05)
            out, err = process.communicate(timeout=30)
        finally:
            watchdog.cancel()
    assert "Traceback" not in err, err[-6000:]
    return process.returncode, json.loads(out), err


@pytest.mark.parametrize("connections", ["1", "3"])
def test_ctrl_c_finishes_what_is_in_flight_and_reports_the_rest(
    slow_smtpd: SMTPServer, tmp_path: Path, connections: str
) -> None:
    box = write_box(tmp_path / "box", 40)
    argv = ["send", "--host", host(slow_smtpd), "--connections", connections, str(box)]
    status, report, err = _interrupt(argv, after_lines=2, signals=1)
    assert status == 130
    assert report["interrupted"] is True and report["exit_status"] == 130
    counts = report["counts"]
    # Nothing is in doubt after one Ctrl-C: each message was sent or never handed over.
    assert counts["unknown"] == counts["failed"] == 0
    assert counts["sent"] + counts["not_sent"] == 40
    assert 2 <= counts["sent"] < 40
    sent = {m["to"][0] for m in report["messages"] if m["status"] == "sent"}
    assert {m.rcpt_tos[0] for m in slow_smtpd.messages} == sent
    not_sent = [m for m in report["messages"] if m["status"] == "not_sent"]
    assert {m["error"] for m in not_sent} == {"not sent: interrupted before its turn"}
    assert err.endswith(f"{len(not_sent)} not sent: interrupted before their turn\n")
    assert "interrupted: finishing the messages already handed to the connection" in err


def test_a_second_ctrl_c_cuts_the_connection(slow_smtpd: SMTPServer, tmp_path: Path) -> None:
    box = write_box(tmp_path / "box", 40)
    status, report, _ = _interrupt(
        ["send", "--host", host(slow_smtpd), str(box)], after_lines=2, signals=2
    )
    assert status == 130
    counts = report["counts"]
    assert counts["unknown"] >= 1
    assert counts["sent"] + counts["unknown"] + counts["not_sent"] == 40
    unknown = [m for m in report["messages"] if m["status"] == "unknown"]
    assert "it may have been delivered" in unknown[0]["error"]
    # The server has every message reported sent, and perhaps some of the unknown ones.
    received = {m.rcpt_tos[0] for m in slow_smtpd.messages}
    sent = {m["to"][0] for m in report["messages"] if m["status"] == "sent"}
    assert sent <= received <= sent | {m["to"][0] for m in unknown}


# --------------------------------------------------------------------------- on a terminal


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr."""
    controller, terminal = pty.openpty()
    env = cli_environment({"TERM": "xterm-256color", "COLUMNS": "120"})
    env.pop("NO_COLOR", None)
    try:
        process = subprocess.Popen(
            argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True
        )
    finally:
        os.close(terminal)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        status = process.wait(timeout=10)
    return status, output.decode("utf-8", "replace")


def test_a_progress_bar_on_a_terminal(smtpd: SMTPServer, tmp_path: Path) -> None:
    box = write_box(tmp_path / "box", 3)
    box.joinpath("999.eml").write_text(eml("refuse@example.org"))
    status, output = _run_on_a_terminal([*COMMAND, "send", "--host", host(smtpd), str(box)])
    assert status == 1, output
    assert f"sending to {host(smtpd)}" in output
    assert "━" in output  # rich's bar
    assert "4/4" in output and "sent 3" in output and "problems 1" in output
    assert "[1/4]" not in output  # no plain lines
    # A message that was not sent is printed above the bar.
    assert "refused " in output and "refuse@example.org: 550 5.1.1 no such user" in output
    assert "3 of 4 sent" in output


def test_plain_lines_on_a_terminal_without_rich(smtpd: SMTPServer, tmp_path: Path) -> None:
    box = write_box(tmp_path / "box", 2)
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from smtp_backends.cli import main\n"
        f"sys.exit(main(['send', '--host', {host(smtpd)!r}, {str(box)!r}]))\n"
    )
    status, output = _run_on_a_terminal([sys.executable, "-W", "error", "-c", code])
    assert status == 0, output
    assert "[1/2] sent " in output and "[2/2] sent " in output
    assert "━" not in output


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "smtp-backends"
    result = subprocess.run(
        [str(script), "send", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: smtp-backends send ")
    assert "examples:\n  smtp-backends send --host smtp.example.com" in result.stdout
    assert "exit status: 0 every message sent" in result.stdout
