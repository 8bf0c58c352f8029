"""``smtp-backends demo``: send mail to an embedded capture server and show what arrived."""

from __future__ import annotations

import argparse
import asyncio
import time
from email.message import EmailMessage
from typing import Any

from .. import SMTP, send
from ..testing import CaptureServer

__all__ = ("add_parser", "run")

EPILOG = """\
examples:
  smtp-backends demo                 # 5 messages per batch
  smtp-backends demo --messages 50   # pipelined against lock-step on 50 messages

Needs no server: a capture server runs inside the command on a free port.
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="send mail to an embedded capture server",
        description="Send one message, a pipelined batch and a lock-step batch to an "
        "in-process capture server, then show what arrived.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--messages", type=int, default=5, help="messages per batch (default 5)")
    return parser


def _message(number: int, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Demo <demo@example.org>"
    message["To"] = recipient
    message["Subject"] = f"Demo message {number}"
    message.set_content(
        f"Hello from smtp_backends, message {number}.\n.A line starting with a dot.\n"
    )
    return message


async def _demo(count: int) -> int:
    async with CaptureServer() as server:
        print(f"Capture SMTP server listening on {server.host}:{server.port} (PIPELINING on)\n")

        _, reply = await send(
            _message(0, "alice@example.org"), hostname=server.host, port=server.port
        )
        print(f"send():                      1 message, server said {reply!r}")

        for pipelining in (True, False):
            batch = [_message(n, f"user{n}@example.org") for n in range(1, count + 1)]
            started = time.perf_counter()
            async with SMTP(
                hostname=server.host, port=server.port, pipelining=pipelining
            ) as client:
                outcomes = await client.send_messages(batch)
            elapsed = time.perf_counter() - started
            sent = sum(1 for outcome in outcomes if isinstance(outcome, tuple))
            mode = "pipelined" if pipelining else "lock-step"
            print(
                f"send_messages() {mode}:  {sent}/{count} messages accepted "
                f"in {elapsed * 1000:.1f} ms"
            )

        print(
            f"\nWhat arrived ({len(server.messages)} messages, {server.connections} connections):"
        )
        print(f"  {'#':>3}  {'from':<18} {'to':<22} {'subject':<20} {'bytes':>6}")
        for number, captured in enumerate(server.messages, 1):
            print(
                f"  {number:>3}  {captured.mail_from:<18} {', '.join(captured.rcpt_tos):<22} "
                f"{captured.subject:<20} {len(captured.data):>6}"
            )
        expected = 1 + 2 * count
        if len(server.messages) != expected:
            print(f"\nExpected {expected} messages, got {len(server.messages)}")
            return 1
        return 0


def run(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``demo``; returns the exit status."""
    if arguments.messages < 1:
        parser.error("--messages must be at least 1")
    return asyncio.run(_demo(arguments.messages))
