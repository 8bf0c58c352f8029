"""The exit statuses of ``smtp-backends`` (also listed in each command's ``--help``)."""

from __future__ import annotations

__all__ = (
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "EXIT_WARN",
)

#: Everything went as it should (send: every message accepted for every recipient;
#: check: verdict OK).
EXIT_OK = 0
#: Something failed (send: a message failed or a recipient was refused; check: FAIL).
EXIT_FAILED = 1
#: Bad arguments, settings (flags or SMTP_BACKENDS_* variables) or input files.
EXIT_USAGE = 2
#: check: the verdict is WARN (works, with something to fix soon).
EXIT_WARN = 3
#: send: a message's outcome is unknown: it may have been delivered, do not resend blindly.
EXIT_UNKNOWN = 4
#: Stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
