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
import signal
import sys
import threading
import time
from collections.abc import Sequence
from email.message import EmailMessage

from .client import SMTP, send
from .devserver import INSTALL_HINT, DevServer, StoredMessage
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


def _one_line(text: str) -> str:
    """``text`` with control characters (a decoded header may hold newlines) as spaces."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in text)


def _devserver(arguments: argparse.Namespace) -> int:
    announced = threading.Event()
    output = threading.Lock()

    def received(message: StoredMessage) -> None:
        # The two "listening" lines come first: a message may arrive between start() and them.
        announced.wait(5)
        line = (
            f"received #{message.id} from {message.envelope_from or '<>'} "
            f"to {', '.join(message.envelope_to)}: {message.subject}"
        )
        with output:
            print(_one_line(line), flush=True)

    server = DevServer(
        arguments.host,
        arguments.smtp_port,
        arguments.http_port,
        max_messages=arguments.max_messages,
        on_message=received,
        verbose=arguments.verbose,
        refresh=arguments.refresh or None,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    # Handlers first, so that a signal at any later point ends the loop below cleanly.
    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            server.start()
        except ImportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"error: cannot start the development server: {error}", file=sys.stderr)
            return 1
        try:
            with output:
                print(f"SMTP server listening on {server.host}:{server.smtp_port}")
                print(f"Web inbox at {server.inbox_url}", flush=True)
            announced.set()
            # A timed wait, so the main thread regularly returns to run signal handlers.
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m smtp_backends")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="send mail to an embedded capture server")
    demo.add_argument("--messages", type=int, default=5, help="messages per batch (default 5)")
    devserver = commands.add_parser(
        "devserver",
        help="run a development mail server with a web inbox",
        description=f"Needs aiosmtpd: {INSTALL_HINT}",
    )
    devserver.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    devserver.add_argument("--smtp-port", type=_port, default=1025, help="0 picks a free port")
    devserver.add_argument("--http-port", type=_port, default=8025, help="0 picks a free port")
    devserver.add_argument(
        "--max-messages", type=int, default=1000, help="messages kept (default 1000)"
    )
    devserver.add_argument(
        "--refresh", type=float, default=0, help="reload the inbox page every N seconds"
    )
    devserver.add_argument("--verbose", action="store_true", help="log every HTTP request")
    arguments = parser.parse_args(argv)
    if arguments.command == "devserver":
        if arguments.max_messages < 1:
            parser.error("--max-messages must be at least 1")
        return _devserver(arguments)
    if arguments.messages < 1:
        parser.error("--messages must be at least 1")
    return asyncio.run(_demo(arguments.messages))
