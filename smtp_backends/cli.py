"""The command line: ``python -m smtp_backends COMMAND``.

Commands:
    demo        start an in-process capture server, send mail through the client
                (one-shot, pipelined batch, lock-step batch) and show what arrived.
    devserver   run the development mail server (SMTP plus a web inbox) until
                SIGINT or SIGTERM; see :mod:`smtp_backends.devserver`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from email.message import EmailMessage

from .client import SMTP, send
from .devserver import command as devserver_command
from .testing import CaptureServer

__all__ = ("main",)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m smtp_backends")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="send mail to an embedded capture server")
    demo.add_argument("--messages", type=int, default=5, help="messages per batch (default 5)")
    devserver = commands.add_parser(
        "devserver", help="run a development mail server with a web inbox"
    )
    devserver_command.add_arguments(devserver)
    arguments = parser.parse_args(argv)
    if arguments.command == "devserver":
        return devserver_command.main(arguments)
    if arguments.messages < 1:
        parser.error("--messages must be at least 1")
    return asyncio.run(_demo(arguments.messages))
