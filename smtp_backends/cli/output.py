"""What the commands print: progress (a rich bar, or plain lines), and small helpers.

The bar is rich's (the ``cli`` extra); without rich, or when standard error
is not a terminal, progress is one plain line per message, which logs and
CI keep readably.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any, Protocol, TextIO

from ..extras import install_hint

__all__ = (
    "CLI_INSTALL_HINT",
    "PlainProgress",
    "Progress",
    "SilentProgress",
    "make_progress",
    "one_line",
    "print_json",
    "rich_available",
)

#: How to install the command line's niceties (rich, cryptography).
CLI_INSTALL_HINT = install_hint("cli")


def one_line(text: str) -> str:
    """``text`` with control characters (a decoded header may hold newlines) as spaces."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in text)


def print_json(document: Any, stream: TextIO | None = None) -> None:
    """Write ``document`` as indented JSON and a newline."""
    stream = sys.stdout if stream is None else stream
    stream.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    stream.flush()


def rich_available() -> bool:
    """Whether rich (the ``cli`` extra) can be imported."""
    try:
        return importlib.util.find_spec("rich") is not None
    except (ImportError, ValueError):  # a None in sys.modules, a broken install
        return False


class Progress(Protocol):
    """Shows a batch's progress while it is sent."""

    def start(self, total: int, where: str) -> None:
        """The batch of ``total`` messages starts going to ``where``."""

    def update(self, done: int, status: str, line: str, problem: bool) -> None:
        """One more message settled (``done`` so far) with ``status``; ``line`` tells it.

        ``problem``: the message was not sent to every recipient.
        """

    def note(self, text: str) -> None:
        """A remark outside the per-message lines (an interruption...)."""

    def stop(self) -> None:
        """The batch is over (the bar, if any, is left drawn)."""


class SilentProgress:
    """Shows nothing (``--quiet``)."""

    def start(self, total: int, where: str) -> None:
        """Nothing to show."""

    def update(self, done: int, status: str, line: str, problem: bool) -> None:
        """Nothing to show."""

    def note(self, text: str) -> None:
        """Nothing to show."""

    def stop(self) -> None:
        """Nothing to show."""


class PlainProgress:
    """One line per message: ``[3/20] sent a.eml: 250 2.0.0 OK``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total = 0

    def start(self, total: int, where: str) -> None:
        """Announce the batch."""
        self.total = total
        self._write(f"sending {total} message{'s' if total != 1 else ''} to {where}")

    def update(self, done: int, status: str, line: str, problem: bool) -> None:
        """Write the message's line."""
        self._write(f"[{done}/{self.total}] {status} {line}")

    def note(self, text: str) -> None:
        """Write the remark as its own line."""
        self._write(text)

    def stop(self) -> None:
        """Nothing left to draw."""

    def _write(self, text: str) -> None:
        self.stream.write(one_line(text) + "\n")
        self.stream.flush()


class RichProgress:
    """A rich progress bar with counts, speed and time left; problems printed above it."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream, highlight=False)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]sent {task.fields[sent]}[/] [red]problems {task.fields[problems]}[/]"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.sent = 0
        self.problems = 0

    def start(self, total: int, where: str) -> None:
        """Draw the bar."""
        self.bar.start()
        self.task = self.bar.add_task(f"sending to {where}", total=total, sent=0, problems=0)

    def update(self, done: int, status: str, line: str, problem: bool) -> None:
        """Move the bar; print a message that was not simply sent above it."""
        if status == "sent":
            self.sent += 1
        else:
            self.problems += 1
        if problem:
            self.bar.console.print(f"{status} {one_line(line)}", markup=False)
        self.bar.update(self.task, completed=done, sent=self.sent, problems=self.problems)

    def note(self, text: str) -> None:
        """Print the remark above the bar."""
        self.bar.console.print(one_line(text), markup=False)

    def stop(self) -> None:
        """Stop refreshing (the final bar stays on screen)."""
        self.bar.stop()


def make_progress(stream: TextIO, *, quiet: bool) -> Progress:
    """The progress display for ``stream``: silent, a rich bar on a terminal, else lines."""
    if quiet:
        return SilentProgress()
    if stream.isatty() and rich_available():
        return RichProgress(stream)
    return PlainProgress(stream)
