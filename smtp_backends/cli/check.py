"""``smtp-backends check HOST[:PORT]``: what a server offers, and whether it is safe to use.

It connects as the client would, then reports the connect time, the
greeting, the EHLO extensions, TLS (implicit or STARTTLS: protocol, cipher,
the certificate chain, names, days to expiry, whether it verifies for the
host name) and the AUTH mechanisms; optionally it logs in and sends a test
message. The last line is the verdict: OK, WARN or FAIL.

When the certificate does not verify, it connects a second time without
verification only to show the chain, and then never logs in or sends: the
password must not go to a server whose identity is unproven.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import sys
import time
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from .. import SMTP
from ..errors import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientsRefused,
)
from .certificates import describe_chain, name_matches
from .check_report import Report, render
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXIT_WARN
from .output import one_line, print_json
from .settings import (
    ENV_PREFIX,
    SettingsError,
    add_connection_arguments,
    connection_options,
    read_password,
)

__all__ = ("add_parser", "resolve", "run")

EPILOG = f"""\
examples:
  smtp-backends check smtp.example.com                 # port 25, STARTTLS when offered
  smtp-backends check smtp.example.com:465             # port 465: implicit TLS
  smtp-backends check smtp.example.com:587 --starttls yes --username app --login
  SMTP_BACKENDS_PASSWORD=... smtp-backends check mail.internal --username app \\
      --login --send-test me@example.org --json

The password comes from a prompt, from --password-env VAR or from
{ENV_PREFIX}PASSWORD; it is never printed.

verdict: FAIL when the server cannot be reached or used safely (no greeting,
a certificate that does not verify, required STARTTLS missing, a refused
login or test message); WARN when it works with something to fix soon (no
TLS at all, a certificate expiring within --warn-days, --no-verify).

exit status: 0 OK; 3 WARN; 1 FAIL; 2 bad arguments or settings.
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``check`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "check",
        help="diagnose a server: greeting, extensions, TLS and certificate, AUTH",
        description="Connect to an SMTP server and report what it offers, with a verdict.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="HOST[:PORT]",
        help=f"the server (default: {ENV_PREFIX}HOST, {ENV_PREFIX}PORT)",
    )
    parser.add_argument("--login", action="store_true", help="log in with --username")
    parser.add_argument("--send-test", metavar="TO", help="send a test message to TO")
    parser.add_argument(
        "--from",
        dest="sender",
        metavar="ADDRESS",
        help="sender of the test message (default: the username if it is an address, else TO)",
    )
    parser.add_argument(
        "--warn-days",
        type=int,
        default=14,
        metavar="N",
        help="warn when the certificate expires within N days (default 14)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_connection_arguments(parser, host_flag=False)
    return parser


def _tls_facts(client: SMTP, host: str, verified: bool, warn_days: int) -> dict[str, Any]:
    ssl_object = client.get_transport_info("ssl_object")
    name, _, bits = ssl_object.cipher()
    chain = describe_chain(ssl_object)
    leaf = chain[0] if chain else None
    return {
        "version": ssl_object.version(),
        "cipher": name,
        "bits": bits,
        "verified": verified,
        "name_matches": name_matches(host, leaf.names) if leaf else None,
        "chain": [certificate.as_json() for certificate in chain],
        "warn_days": warn_days,
    }


async def _session(
    report: Report,
    options: dict[str, Any],
    *,
    verify: bool,
    start_tls: bool | None,
    arguments: argparse.Namespace,
    password: str | None,
) -> None:
    """One connection's worth of checks; raises SMTPCertificateError for a bad certificate."""
    data = report.data
    host = options.get("hostname") or "localhost"
    client = SMTP(**{**options, "start_tls": False, "validate_certs": verify})
    started = time.perf_counter()
    try:
        greeting = await client.connect()
    except SMTPCertificateError:
        raise
    except SMTPException as error:
        data["connect_error"] = one_line(str(error))
        report.failures.append(f"cannot connect: {one_line(str(error))}")
        return
    try:
        data["connect_ms"] = round((time.perf_counter() - started) * 1000, 1)
        data["peer"] = list(client.get_transport_info("peername") or ())[:2]
        data["greeting"] = one_line(str(greeting))
        if options.get("use_tls"):
            data["tls_mode"] = "implicit"
            data["tls"] = _tls_facts(client, host, verify, arguments.warn_days)
        try:
            reply = await client.ehlo()
            data["ehlo"] = one_line(reply.message.partition("\n")[0])
        except SMTPHeloError as error:
            report.failures.append(f"EHLO refused: {error.code} {one_line(error.message)}")
            return
        data["extensions"] = client.esmtp_extensions
        if not options.get("use_tls"):
            offered = client.supports_extension("starttls")
            if offered and start_tls is not False:
                began = time.perf_counter()
                await client.starttls()
                data["tls_mode"] = "starttls"
                data["tls"] = _tls_facts(client, host, verify, arguments.warn_days)
                data["tls"]["handshake_ms"] = round((time.perf_counter() - began) * 1000, 1)
                await client.ehlo()
                data["extensions_after_tls"] = client.esmtp_extensions
            else:
                data["tls_mode"] = "none"
                if start_tls:
                    report.failures.append("STARTTLS is required and the server does not offer it")
                elif offered:
                    report.warnings.append("STARTTLS is offered but was not used (--starttls no)")
                else:
                    report.warnings.append(
                        "no TLS: mail and passwords would cross the network in clear text"
                    )
        data["auth_mechanisms"] = client.server_auth_methods
        if not verify and options.get("validate_certs", True):
            # The second look at a certificate that did not verify: show, never log in.
            return
        if arguments.login:
            await _login(report, client, options["username"], password)
        if arguments.send_test and not report.failures:
            await _send_test(report, client, options, arguments)
    except SMTPCertificateError:
        raise
    except SMTPException as error:
        report.failures.append(f"{type(error).__name__}: {one_line(str(error))}")
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except SMTPException:
                client.close()
        else:
            client.close()


async def _login(report: Report, client: SMTP, username: str, password: str | None) -> None:
    assert password is not None
    try:
        reply = await client.login(username, password)
    except SMTPAuthenticationError as error:
        report.data["login"] = {"username": username, "accepted": False}
        report.failures.append(f"login refused: {error.code} {one_line(error.message)}")
        return
    except SMTPException as error:
        report.data["login"] = {"username": username, "accepted": False}
        report.failures.append(f"cannot log in: {one_line(str(error))}")
        return
    report.data["login"] = {"username": username, "accepted": True, "reply": str(reply)}


async def _send_test(
    report: Report, client: SMTP, options: dict[str, Any], arguments: argparse.Namespace
) -> None:
    recipient = arguments.send_test
    username = options.get("username")
    sender = arguments.sender or (username if username and "@" in username else recipient)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "smtp-backends check: test message"
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    host = options.get("hostname") or "localhost"
    message.set_content(f"A test message sent by `smtp-backends check` through {host}.\n")
    facts: dict[str, Any] = {"from": sender, "to": recipient}
    report.data["test_message"] = facts
    try:
        errors, reply = await client.send_message(message)
    except SMTPRecipientsRefused as error:
        facts["accepted"] = False
        report.failures.append(f"test message refused: {one_line(error.message)}")
        return
    except (SMTPException, ValueError) as error:
        facts["accepted"] = False
        report.failures.append(f"test message failed: {one_line(str(error))}")
        return
    facts.update(accepted=not errors, reply=one_line(reply))
    if errors:
        report.failures.append(f"test message refused: {one_line(str(errors[recipient]))}")


def _judge_tls(report: Report, warn_days: int, verify_wanted: bool) -> None:
    tls = report.data.get("tls")
    if not tls:
        return
    chain = tls["chain"]
    days = chain[0]["days_left"] if chain else None
    if days is not None and days < 0:
        report.failures.append(f"the certificate expired {-days:.0f} days ago")
    elif days is not None and days < warn_days:
        report.warnings.append(f"the certificate expires in {days:.0f} days (under {warn_days})")
    if not verify_wanted:
        report.warnings.append("the certificate was not verified (--no-verify)")


async def _check(
    report: Report,
    options: dict[str, Any],
    arguments: argparse.Namespace,
    password: str | None,
) -> None:
    verify_wanted = options.get("validate_certs", True)
    start_tls = options.get("start_tls")
    try:
        await _session(
            report,
            options,
            verify=verify_wanted,
            start_tls=start_tls,
            arguments=arguments,
            password=password,
        )
    except SMTPCertificateError as error:
        reason = one_line(str(error))
        report.failures.append(f"the certificate does not verify: {reason}")
        if arguments.login or arguments.send_test:
            report.data["skipped"] = "login and test message: the certificate does not verify"
        await _session(
            report,
            options,
            verify=False,
            start_tls=start_tls,
            arguments=arguments,
            password=None,
        )
        if "tls" in report.data:
            report.data["tls"].update(verified=False, verify_error=reason)
    _judge_tls(report, arguments.warn_days, verify_wanted)


def resolve(
    arguments: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str | None]:
    """The connection options and the password (None without ``--login``) to check with.

    Port 465 means implicit TLS (RFC 8314 3.3) unless TLS was set either way.

    Raises:
        SettingsError: an unusable flag or variable (the text names it).
        ValueError: contradictory settings.
    """
    if arguments.target is not None:
        arguments.hostname = arguments.target
    options = connection_options(arguments, environ)
    if "hostname" not in options:
        raise SettingsError(f"give HOST[:PORT] or set {ENV_PREFIX}HOST")
    if options.get("port") == 465 and "use_tls" not in options and "start_tls" not in options:
        options["use_tls"] = True
    if arguments.warn_days < 0:
        raise SettingsError("--warn-days must be 0 or more")
    password = None
    if arguments.login:
        if "username" not in options:
            raise SettingsError(f"--login needs --username (or {ENV_PREFIX}USERNAME)")
        password = read_password(arguments, environ, interactive=sys.stdin.isatty())
    if arguments.send_test is not None and "@" not in arguments.send_test:
        raise SettingsError(f"--send-test: {arguments.send_test!r} is not an address")
    SMTP(**options)  # contradictions reported now, before connecting
    return options, password


def run(arguments: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``check``; returns the exit status."""
    try:
        options, password = resolve(arguments, environ)
    except (SettingsError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    client = SMTP(**options)
    host, port = client.config.effective_hostname, client.config.effective_port
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    report = Report(where)
    asyncio.run(_check(report, options, arguments, password))
    report.data.update(verdict=report.verdict, warnings=report.warnings, failures=report.failures)
    if arguments.json:
        print_json(report.data)
    else:
        sys.stdout.write(render(report, where))
        sys.stdout.flush()
    return {"OK": EXIT_OK, "WARN": EXIT_WARN, "FAIL": EXIT_FAILED}[report.verdict]
