"""``python -m smtp_backends devserver``: the development mail server from a shell.

The command line calls two functions, so that the dev server's options live here with
the server rather than in the CLI: :func:`add_arguments` fills the ``devserver``
sub-parser and :func:`main` runs the server with the parsed arguments until SIGINT or
SIGTERM. Nothing here imports aiosmtpd (the SMTP side is imported when it starts).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading

from . import INSTALL_HINT, DevServer, StoredMessage
from .chaos import Chaos, ChaosRule
from .linkcheck import LinkCheckConfig
from .release import TLS_MODES, ReleaseConfig
from .store import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES

__all__ = ("RELEASE_PASSWORD_ENV", "add_arguments", "main", "parse_size")

#: The environment variable the relay's password is read from (never a command-line
#: argument: other users of the machine can read those).
RELEASE_PASSWORD_ENV = "SMTP_BACKENDS_RELEASE_PASSWORD"

_SIZE = re.compile(r"\s*([0-9]+)\s*([kmg]?)i?b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A byte count such as ``1048576``, ``512K``, ``256M``, ``1G`` or ``256MiB`` (powers of 1024).

    Raises:
        ValueError: not a size, or below 1.
    """
    matched = _SIZE.fullmatch(text)
    if matched is None:
        raise ValueError(f"not a size: {text!r} (examples: 1048576, 512K, 256M, 1G)")
    number, unit = int(matched[1]), matched[2].lower()
    size = number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if size < 1:
        raise ValueError("a size must be at least 1 byte")
    return size


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _at_least_one(option: str) -> type[int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option} must be at least 1")
        return value

    parse.__name__ = "int"
    return parse  # type: ignore[return-value]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _rule(text: str) -> ChaosRule:
    try:
        return ChaosRule.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the development server's options to ``parser`` (the ``devserver`` sub-command)."""
    parser.description = (
        "A local SMTP server that delivers nothing: it keeps what it receives and shows it "
        f"in a web inbox. Needs aiosmtpd: {INSTALL_HINT}"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--smtp-port", type=_port, default=1025, help="0 picks a free port")
    parser.add_argument("--http-port", type=_port, default=8025, help="0 picks a free port")
    parser.add_argument(
        "--max-messages",
        type=_at_least_one("--max-messages"),
        default=DEFAULT_MAX_MESSAGES,
        help=f"messages kept (default {DEFAULT_MAX_MESSAGES}); the oldest go first",
    )
    parser.add_argument(
        "--max-bytes",
        type=_size,
        default=DEFAULT_MAX_BYTES,
        help="bytes of messages kept, such as 64M (default 256M); the oldest go first and "
        "a larger message is refused with 552",
    )
    parser.add_argument(
        "--refresh", type=float, default=0, help="reload the inbox page every N seconds"
    )
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the web inbox answers besides loopback names and --host "
        "(repeatable; '*' for any: turns off the DNS rebinding check)",
    )

    chaos = parser.add_argument_group(
        "chaos", "answer by rule to test retries, e.g. --chaos rcpt:reply=451,rate=10%"
    )
    chaos.add_argument(
        "--chaos",
        action="append",
        default=[],
        type=_rule,
        metavar="RULE",
        help="STAGE:key=value,... with STAGE one of connect, ehlo, mail, rcpt, data, dot and "
        "keys reply, text, rate, match, drop, delay (repeatable; first match wins)",
    )
    chaos.add_argument(
        "--chaos-seed", type=int, default=None, help="seed of the rate draws (default: random)"
    )

    release = parser.add_argument_group("release", "send a stored message on to a real server")
    release.add_argument("--release-host", metavar="HOST", help="the relay (turns release on)")
    release.add_argument("--release-port", type=_port, default=None, help="default 587 or 465")
    release.add_argument(
        "--release-tls", choices=TLS_MODES, default="starttls", help="default starttls"
    )
    release.add_argument(
        "--release-allow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="recipients a release may go to: an address, @domain or a pattern such as "
        "*@example.com (repeatable; required)",
    )
    release.add_argument(
        "--release-username",
        help=f"log in to the relay; the password is read from ${RELEASE_PASSWORD_ENV}",
    )
    release.add_argument("--release-sender", help="envelope sender (default: the message's)")
    release.add_argument("--release-cafile", help="CA bundle to verify the relay with")

    links = parser.add_argument_group("link check", "fetch a message's links")
    links.add_argument(
        "--link-check-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host whose links are fetched besides loopback (repeatable; '*' for any)",
    )
    links.add_argument(
        "--link-check-timeout", type=_positive, default=5.0, help="seconds per request (5)"
    )
    links.add_argument(
        "--link-check-max-links",
        type=_at_least_one("--link-check-max-links"),
        default=50,
        help="links checked per message (50)",
    )


def _one_line(text: str) -> str:
    """``text`` with control characters (a decoded header may hold newlines) as spaces."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in text)


def _release_config(arguments: argparse.Namespace) -> ReleaseConfig | None:
    if arguments.release_host is None:
        if arguments.release_allow:
            raise ValueError("--release-allow needs --release-host")
        return None
    port = arguments.release_port
    if port is None:
        port = 465 if arguments.release_tls == "tls" else 587
    password = os.environ.get(RELEASE_PASSWORD_ENV) if arguments.release_username else None
    if arguments.release_username and password is None:
        raise ValueError(f"--release-username needs the password in ${RELEASE_PASSWORD_ENV}")
    return ReleaseConfig(
        host=arguments.release_host,
        port=port,
        tls=arguments.release_tls,
        allowed=tuple(arguments.release_allow),
        username=arguments.release_username,
        password=password,
        sender=arguments.release_sender,
        cafile=arguments.release_cafile,
    )


def main(arguments: argparse.Namespace) -> int:
    """Run the development server as ``arguments`` say until SIGINT or SIGTERM.

    Returns the exit status: 0 after a clean stop, 1 when the server cannot start
    (aiosmtpd missing, port busy), 2 for options that do not fit together.
    """
    announced = threading.Event()
    output = threading.Lock()

    def received(message: StoredMessage) -> None:
        # The "listening" lines come first: a message may arrive between start() and them.
        announced.wait(5)
        line = (
            f"received #{message.id} from {message.envelope_from or '<>'} "
            f"to {', '.join(message.envelope_to)}: {message.subject}"
        )
        with output:
            print(_one_line(line), flush=True)

    try:
        server = DevServer(
            arguments.host,
            arguments.smtp_port,
            arguments.http_port,
            max_messages=arguments.max_messages,
            max_bytes=arguments.max_bytes,
            on_message=received,
            verbose=arguments.verbose,
            refresh=arguments.refresh or None,
            allowed_hosts=arguments.allowed_host,
            chaos=Chaos(arguments.chaos, arguments.chaos_seed),
            release=_release_config(arguments),
            link_check=LinkCheckConfig(
                hosts=tuple(arguments.link_check_host),
                timeout=arguments.link_check_timeout,
                max_links=arguments.link_check_max_links,
            ),
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
                if server.chaos:
                    rules = len(server.chaos.rules)
                    print(f"Chaos: {rules} rule(s), seed {server.chaos.seed}", flush=True)
                if server.releaser is not None:
                    config = server.releaser.config
                    print(
                        f"Release to {config.host}:{config.port} ({config.tls}) for "
                        f"{', '.join(config.allowed)}",
                        flush=True,
                    )
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
