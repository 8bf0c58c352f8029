"""``smtp-backends send``: send files, a directory, an mbox, stdin, or one message from flags.

One connection (``--connections 1``, the default) sends the whole batch
pipelined with :meth:`SMTP.send_messages`; more go through an
:class:`SMTPPool`. The first Ctrl-C stops handing out messages and lets the
ones already on the wire finish, so every message is either sent or not
sent; a second Ctrl-C cuts the connections, and a message that was in
flight then has an unknown outcome (it may have been delivered).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import SMTP, BatchItem, SMTPPool
from ..errors import SMTPUnknownOutcomeError
from .exits import EXIT_USAGE
from .output import Progress, make_progress, print_json
from .results import MessageResult, NotSent, Outcome, exit_status, print_summary, summarise
from .settings import (
    SettingsError,
    add_connection_arguments,
    connection_options,
    read_password,
)
from .sources import LoadedMessage, SourceError, build_message, load_sources, split_addresses

__all__ = ("add_parser", "run")

EPILOG = """\
examples:
  smtp-backends send --host smtp.example.com --starttls yes --username app \\
      --from app@example.com --to ann@example.org --subject Hi --body 'Hello!'
  smtp-backends send --host 127.0.0.1:1025 outbox/                # every outbox/*.eml
  smtp-backends send --connections 4 --json archive.mbox > report.json
  cat message.eml | smtp-backends send --host mail.internal -
  smtp-backends send message.eml --from bounce@example.com --to test@example.org

Messages from files go out byte for byte, without their Bcc lines; their
envelope comes from their headers unless --from/--to/--cc/--bcc are given.
--body and --html take text, or @FILE to read it from a file (@- for stdin).

exit status: 0 every message sent to every recipient; 1 a message failed or a
recipient was refused; 2 bad arguments, settings or input; 4 a message's
outcome is unknown (it may have been delivered: do not resend it blindly);
130 interrupted by Ctrl-C.
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``send`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "send",
        help="send .eml files, a directory, an mbox, stdin, or one message built from flags",
        description="Send messages and report what happened to each.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help=".eml file, directory of .eml files, mbox, or - for standard input",
    )
    message = parser.add_argument_group(
        "message",
        "built from these flags when no SOURCE is given; with SOURCE files, "
        "--from/--to/--cc/--bcc replace the envelope their headers give",
    )
    message.add_argument(
        "--from", dest="sender", metavar="ADDRESS", help="sender (and envelope sender)"
    )
    for flag, what in (("to", "recipient"), ("cc", "copy to"), ("bcc", "blind copy to")):
        message.add_argument(
            f"--{flag}", action="append", metavar="ADDRESS", help=f"{what} (repeatable)"
        )
    message.add_argument("--subject", metavar="TEXT", help="subject line")
    message.add_argument("--body", metavar="TEXT", help="plain text body, or @FILE")
    message.add_argument("--html", metavar="HTML", help="HTML alternative, or @FILE")
    message.add_argument(
        "--attach", action="append", metavar="FILE", default=[], help="attach a file"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        metavar="N",
        help="send over N connections (a pool); 1 (default) is one pipelined connection",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    add_connection_arguments(parser)
    return parser


def _load(arguments: argparse.Namespace) -> list[LoadedMessage]:
    to = split_addresses(arguments.to, "--to")
    cc = split_addresses(arguments.cc, "--cc")
    bcc = split_addresses(arguments.bcc, "--bcc")
    sender = None
    if arguments.sender is not None:
        senders = split_addresses([arguments.sender], "--from")
        if len(senders) != 1:
            raise SourceError(f"--from: {arguments.sender!r} must be one address")
        sender = senders[0]
    if arguments.sources:
        for flag in ("subject", "body", "html"):
            if getattr(arguments, flag) is not None:
                raise SourceError(f"--{flag} builds a message: it cannot go with SOURCE files")
        if arguments.attach:
            raise SourceError("--attach builds a message: it cannot go with SOURCE files")
        return load_sources(arguments.sources, sender, [*to, *cc, *bcc])
    if sender is None:
        raise SourceError("give SOURCE files, or --from and --to to build a message")
    return [
        build_message(
            sender=arguments.sender,
            to=arguments.to or [],
            cc=arguments.cc or [],
            bcc=arguments.bcc or [],
            subject=arguments.subject,
            body=arguments.body,
            html=arguments.html,
            attachments=arguments.attach,
        )
    ]


class _Batch:
    """The batch being sent: its results, and the Ctrl-C handling around it."""

    def __init__(self, messages: Sequence[LoadedMessage], progress: Progress) -> None:
        self.messages = messages
        self.progress = progress
        self.results = [
            MessageResult(m.label, m.sender, list(m.recipients), len(m.data)) for m in messages
        ]
        self.settled = [False] * len(messages)
        self.handed_out = [False] * len(messages)
        self.done = 0
        self.unsent = 0
        self.stopping = False
        self.aborted = False
        self.task: asyncio.Task[Any] | None = None

    def item(self, index: int) -> BatchItem:
        """The batch item for message ``index``: refuses to go once Ctrl-C was pressed."""

        def prepare() -> Any:
            if self.stopping:
                raise NotSent("not sent: interrupted before its turn")
            self.handed_out[index] = True
            return self.messages[index].item

        return prepare

    def on_result(self, index: int, outcome: Outcome | Exception) -> None:
        """Record one message's final outcome (each is told once)."""
        if self.settled[index]:
            return
        self.settled[index] = True
        result = self.results[index]
        result.settle(outcome)
        if result.status == "not_sent":
            # Not progress: the batch stopped before this one. Counted once, at the end.
            self.unsent += 1
            return
        self.done += 1
        self.progress.update(
            self.done,
            result.status.replace("_", " "),
            result.line(),
            problem=result.status != "sent" or bool(result.refused),
        )

    def interrupt(self) -> None:
        """Ctrl-C: first stop handing out messages, the second time cut the connections."""
        if not self.stopping:
            self.stopping = True
            self.progress.note(
                "interrupted: finishing the messages already handed to the connection "
                "(Ctrl-C again to cut the connection)"
            )
        elif self.task is not None and not self.aborted:
            self.aborted = True
            self.task.cancel()

    def finish_aborted(self) -> None:
        """After a cut: a message handed out and not answered may have been delivered."""
        for index, settled in enumerate(self.settled):
            if not settled:
                outcome: Exception = (
                    SMTPUnknownOutcomeError(
                        "interrupted while in progress: it may have been delivered"
                    )
                    if self.handed_out[index]
                    else NotSent("not sent: interrupted before its turn")
                )
                self.on_result(index, outcome)


async def _deliver(batch: _Batch, options: dict[str, Any], connections: int) -> None:
    items = [batch.item(index) for index in range(len(batch.messages))]
    outcomes: list[Outcome | Exception]
    if connections == 1:
        client = SMTP(**options)
        try:
            await client.connect()
        except Exception as error:
            outcomes = [error] * len(items)
        else:
            async with client:
                outcomes = await client.send_messages(items, on_result=batch.on_result)
    else:
        async with SMTPPool(max_connections=connections, **options) as pool:
            outcomes = await pool.send_messages(items, on_result=batch.on_result)
    for index, outcome in enumerate(outcomes):
        batch.on_result(index, outcome)


async def _run_batch(batch: _Batch, options: dict[str, Any], connections: int) -> None:
    loop = asyncio.get_running_loop()
    batch.task = asyncio.ensure_future(_deliver(batch, options, connections))
    previous: Any = None
    # Only the main thread may set signal handlers; elsewhere Ctrl-C stays Python's.
    handling = threading.current_thread() is threading.main_thread()
    if handling:
        previous = signal.signal(
            signal.SIGINT, lambda signum, frame: loop.call_soon_threadsafe(batch.interrupt)
        )
    try:
        await batch.task
    except BaseException:
        # Judged by the task's state rather than the exception's class: only our own
        # cancellation of the batch (the second Ctrl-C) is handled here.
        if not (batch.aborted and batch.task.cancelled()):
            raise
        batch.finish_aborted()
    finally:
        if handling:
            signal.signal(signal.SIGINT, previous)


def run(arguments: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``send``; returns the exit status."""
    if arguments.connections < 1:
        print("error: --connections must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        options = connection_options(arguments, environ)
        if "username" in options:
            options["password"] = read_password(arguments, environ, interactive=sys.stdin.isatty())
        messages = _load(arguments)
        # Every contradiction in the settings is reported now, before anything is sent.
        client = SMTP(**options)
    except (SettingsError, SourceError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    where = f"{client.config.effective_hostname}:{client.config.effective_port}"
    progress = make_progress(sys.stderr, quiet=arguments.quiet)
    batch = _Batch(messages, progress)
    started = time.perf_counter()
    progress.start(len(messages), where)
    try:
        asyncio.run(_run_batch(batch, options, arguments.connections))
        if batch.unsent:
            progress.note(f"{batch.unsent} not sent: interrupted before their turn")
    finally:
        progress.stop()
    elapsed = time.perf_counter() - started
    results = batch.results
    status = exit_status(results, batch.stopping)
    if arguments.json:
        print_json(
            {
                "server": where,
                "connections": arguments.connections,
                "elapsed_seconds": round(elapsed, 3),
                "interrupted": batch.stopping,
                "exit_status": status,
                "counts": summarise(results),
                "messages": [result.as_json() for result in results],
            }
        )
    else:
        print_summary(results, where, elapsed, batch.stopping)
    return status
