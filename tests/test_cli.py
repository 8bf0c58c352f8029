"""The command line (python -m smtp_backends)."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from smtp_backends.cli import main


def test_demo_sends_and_shows_what_arrived(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--messages", "3"]) == 0
    out = capsys.readouterr().out
    assert "send():                      1 message" in out
    assert "send_messages() pipelined:  3/3 messages accepted" in out
    assert "send_messages() lock-step:  3/3 messages accepted" in out
    assert "What arrived (7 messages, 3 connections):" in out
    assert out.count("Demo message 3") == 2


def test_demo_rejects_a_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--messages", "0"])
    assert exit_info.value.code == 2
    assert "--messages must be at least 1" in capsys.readouterr().err


def test_module_entry_point_runs_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "smtp_backends", "demo", "--messages", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "What arrived (3 messages, 3 connections):" in result.stdout


def test_module_entry_point_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["smtp_backends", "demo", "--messages", "1"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("smtp_backends", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0
    assert "What arrived (3 messages" in capsys.readouterr().out
