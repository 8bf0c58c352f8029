"""``smtp-backends devserver``: the development mail server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..devserver import INSTALL_HINT, DevServer, StoredMessage
from .output import one_line

__all__ = ("add_parser", "run")

EPILOG = """\
examples:
  smtp-backends devserver                                # SMTP on 127.0.0.1:1025, inbox on :8025
  smtp-backends devserver --smtp-port 2525 --http-port 8080
  smtp-backends devserver --smtp-port 0 --http-port 0    # free ports, printed at start

Stops on Ctrl-C or SIGTERM.
"""


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``devserver`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "devserver",
        help="run a development mail server with a web inbox",
        description=f"Needs aiosmtpd: {INSTALL_HINT}",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--smtp-port", type=_port, default=1025, help="0 picks a free port")
    parser.add_argument("--http-port", type=_port, default=8025, help="0 picks a free port")
    parser.add_argument(
        "--max-messages", type=int, default=1000, help="messages kept (default 1000)"
    )
    parser.add_argument(
        "--refresh", type=float, default=0, help="reload the inbox page every N seconds"
    )
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    return parser


def run(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the development server until SIGINT or SIGTERM; returns the exit status."""
    if arguments.max_messages < 1:
        parser.error("--max-messages must be at least 1")
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
            print(one_line(line), flush=True)

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
