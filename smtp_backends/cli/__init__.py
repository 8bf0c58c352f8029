"""The command line: ``smtp-backends COMMAND`` (or ``python -m smtp_backends COMMAND``).

Commands (one module each):
    send        send .eml files, a directory, an mbox, stdin, or one message
                built from flags, with progress and a summary (:mod:`.send`).
    check       diagnose a server: greeting, extensions, TLS, certificate
                chain, AUTH, optionally a login and a test message (:mod:`.check`).
    demo        start an in-process capture server, send mail through the client
                (one-shot, pipelined batch, lock-step batch) and show what arrived.
    devserver   run the development mail server (SMTP plus a web inbox) until
                SIGINT or SIGTERM; see :mod:`smtp_backends.devserver`.

Around them: connection settings from flags or ``SMTP_BACKENDS_*`` variables
(:mod:`.settings`), message sources (:mod:`.sources`), send's results and
summary (:mod:`.results`), check's report (:mod:`.check_report`) and the
certificate chain (:mod:`.certificates`), progress display (:mod:`.output`)
and the exit statuses (:mod:`.exits`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import check, demo, devserver, send
from .exits import EXIT_INTERRUPTED

__all__ = ("build_parser", "main")

EPILOG = """\
examples:
  smtp-backends send --host 127.0.0.1:1025 --from me@example.org --to you@example.org \\
      --subject Hello --body 'Hi there'
  smtp-backends check smtp.example.com:587
  smtp-backends devserver
  smtp-backends COMMAND --help      # each command's options, examples and exit statuses

exit status: 0 success; 1 failure; 2 bad arguments or settings; 3 check: WARN;
4 send: a message's outcome is unknown; 130 interrupted by Ctrl-C.
"""


def _program_name() -> str:
    # "smtp-backends" from the console script, "python -m smtp_backends" from -m.
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "smtp-backends" if name.startswith("smtp-backends") else "python -m smtp_backends"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The argument parser and each command's own parser."""
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Send mail, diagnose SMTP servers, run a development mail server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {
        "send": send.add_parser(commands),
        "check": check.add_parser(commands),
        "demo": demo.add_parser(commands),
        "devserver": devserver.add_parser(commands),
    }
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser, parsers = build_parser()
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "send":
            return send.run(arguments)
        if arguments.command == "check":
            return check.run(arguments)
        if arguments.command == "devserver":
            return devserver.run(arguments, parsers["devserver"])
        return demo.run(arguments, parsers["demo"])
    except KeyboardInterrupt:
        # Ctrl-C outside a batch (a password prompt, a check, the demo): no traceback.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
