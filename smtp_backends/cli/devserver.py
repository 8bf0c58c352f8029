"""``smtp-backends devserver``: the development mail server until SIGINT or SIGTERM.

The server's options and run loop live with the server, in
:mod:`smtp_backends.devserver.command`; this module only gives them a subcommand.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..devserver import INSTALL_HINT
from ..devserver import command as devserver_command

__all__ = ("add_parser", "run")

EPILOG = """\
examples:
  smtp-backends devserver                                # SMTP on 127.0.0.1:1025, inbox on :8025
  smtp-backends devserver --smtp-port 2525 --http-port 8080
  smtp-backends devserver --smtp-port 0 --http-port 0    # free ports, printed at start
  smtp-backends devserver --chaos 'rcpt:reply=451,rate=10%' --chaos-seed 7

Stops on Ctrl-C or SIGTERM.
"""


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
    devserver_command.add_arguments(parser)
    return parser


def run(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the development server until SIGINT or SIGTERM; returns the exit status."""
    return devserver_command.main(arguments)
