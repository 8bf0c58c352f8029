"""``smtp-backends check``, driven as a subprocess against real servers (trustme TLS)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pty
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from smtp_backends.cli import build_parser, certificates
from smtp_backends.cli.certificates import name_matches
from smtp_backends.cli.check import resolve
from smtp_backends.cli.settings import SettingsError
from tests.servers import PASSWORD, USERNAME, SMTPServer, free_port, server_context_for
from tests.test_cli_send import (
    COMMAND,
    Runner,
    cli_environment,
    host,
    run_cli,
    run_in_process,
)

NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(params=["subprocess", "in-process"])
def cli(request: pytest.FixtureRequest) -> Runner:
    """Runs the command line as a subprocess, or in this process (which coverage sees)."""
    return run_cli if request.param == "subprocess" else run_in_process


@pytest.fixture(scope="module")
def chained_ca() -> trustme.CA:
    """A root CA; servers below present a leaf and an intermediate issued under it."""
    return trustme.CA(organization_name="Check Root")


@pytest.fixture(scope="module")
def chained_ca_file(chained_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("check") / "root.pem"
    chained_ca.cert_pem.write_to_path(str(path))
    return path


def _chained_context(ca: trustme.CA, **validity: datetime.datetime) -> Any:
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("localhost", "127.0.0.1", **validity)
    return server_context_for(leaf)


@pytest.fixture
def soon_expiring_starttls(
    make_smtpd: Callable[..., SMTPServer], chained_ca: trustme.CA
) -> SMTPServer:
    """STARTTLS, AUTH after TLS, a certificate that expires in five days."""
    context = _chained_context(chained_ca, not_after=NOW + datetime.timedelta(days=5, hours=1))
    return make_smtpd(tls_mode="starttls", tls_context=context, auth=True, auth_require_tls=True)


@pytest.fixture
def implicit_tls(make_smtpd: Callable[..., SMTPServer], chained_ca: trustme.CA) -> SMTPServer:
    """Implicit TLS with AUTH and a certificate valid for a year."""
    context = _chained_context(chained_ca, not_after=NOW + datetime.timedelta(days=365))
    return make_smtpd(tls_mode="implicit", tls_context=context, auth=True)


def check(
    cli: Runner, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli("check", *argv, env=env)


def check_json(
    cli: Runner, *argv: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    result = check(cli, *argv, "--json", env=env)
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


# --------------------------------------------------------------------------- TLS


def test_starttls_with_a_certificate_that_expires_soon_warns(
    cli: Runner, soon_expiring_starttls: SMTPServer, chained_ca_file: Path
) -> None:
    server = soon_expiring_starttls
    result = check(cli, host(server), "--cafile", str(chained_ca_file))
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Checking {host(server)}"
    assert lines[1].startswith("  connected to 127.0.0.1 in ")
    assert lines[2] == "  greeting:   220 localhost Python SMTP 1.4.6"
    assert "STARTTLS" in lines[4] and "AUTH" not in lines[4]  # before TLS
    assert re.fullmatch(
        r"  TLS:        STARTTLS \(handshake [0-9.]+ ms\), TLSv1\.[23], .*", lines[5]
    )
    assert "  certificate 0: " in result.stdout and "  certificate 1: " in result.stdout
    assert "      names:   localhost, 127.0.0.1\n" in result.stdout
    assert "(5 days left)" in result.stdout
    assert "  verified:   yes, the chain is trusted and valid for 127.0.0.1\n" in result.stdout
    assert "  after TLS:  " in result.stdout and "AUTH CRAM-MD5 LOGIN PLAIN XOAUTH2" in lines[-3]
    assert "  AUTH:       CRAM-MD5 LOGIN PLAIN XOAUTH2\n" in result.stdout
    assert lines[-1] == "WARN: the certificate expires in 5 days (under 14)"
    # Fewer days to warn about: OK.
    quiet = check(cli, host(server), "--cafile", str(chained_ca_file), "--warn-days", "3")
    assert quiet.returncode == 0
    assert quiet.stdout.splitlines()[-1] == f"OK: {host(server)} accepts mail over TLS"


def test_implicit_tls_shows_the_chain_and_logs_in_and_sends(
    cli: Runner, implicit_tls: SMTPServer, chained_ca_file: Path
) -> None:
    env = {"SMTP_BACKENDS_PASSWORD": PASSWORD, "SMTP_BACKENDS_CA_FILE": str(chained_ca_file)}
    status, report = check_json(
        cli,
        host(implicit_tls), "--tls", "--username", USERNAME, "--login",
        "--send-test", "probe@example.org", "--from", "me@example.org", env=env,
    )  # fmt: skip
    assert status == 0, report
    assert report["verdict"] == "OK" and report["warnings"] == report["failures"] == []
    assert report["tls_mode"] == "implicit"
    tls = report["tls"]
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["bits"] >= 128
    assert tls["verified"] is True and tls["name_matches"] is True
    leaf, intermediate = tls["chain"]
    assert leaf["names"] == ["localhost", "127.0.0.1"]
    assert leaf["issuer"] == intermediate["subject"]
    assert "O=Check Root" in intermediate["issuer"]
    assert 364 <= leaf["days_left"] <= 365 and len(leaf["sha256"]) == 64
    assert report["auth_mechanisms"] == ["CRAM-MD5", "LOGIN", "PLAIN", "XOAUTH2"]
    assert report["login"] == {
        "username": USERNAME,
        "accepted": True,
        "reply": "235 2.7.0 Authentication successful",
    }
    assert report["test_message"]["accepted"] is True
    [received] = implicit_tls.messages
    assert (received.mail_from, received.rcpt_tos) == ("me@example.org", ["probe@example.org"])
    assert received.auth_login == USERNAME and received.tls
    assert PASSWORD not in json.dumps(report)


def test_a_refused_login_fails_and_never_shows_the_password(
    cli: Runner, implicit_tls: SMTPServer, chained_ca_file: Path
) -> None:
    env = {"WRONG": "not-the-password", "SMTP_BACKENDS_PASSWORD": PASSWORD}
    result = check(
        cli,
        host(implicit_tls), "--tls", "--cafile", str(chained_ca_file),
        "--username", USERNAME, "--login", "--password-env", "WRONG", env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "  login:      alice: refused\n" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("FAIL: login refused: 535")
    assert "not-the-password" not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_an_untrusted_certificate_fails_and_no_password_is_sent(
    cli: Runner, make_smtpd: Callable[..., SMTPServer], untrusted_server_tls_context: Any
) -> None:
    server = make_smtpd(tls_mode="starttls", tls_context=untrusted_server_tls_context, auth=True)
    env = {"SMTP_BACKENDS_PASSWORD": PASSWORD}
    result = check(
        cli,
        host(server),
        "--username",
        USERNAME,
        "--login",
        "--send-test",
        "x@example.org",
        env=env,
    )
    assert result.returncode == 1
    out = result.stdout
    assert "  verified:   NO (STARTTLS: certificate verification failed:" in out
    assert "  names match 127.0.0.1: yes\n" in out  # the names are right, the issuer is not
    assert "  certificate 0: " in out  # shown from a second, unverified look
    assert "  skipped:    login and test message: the certificate does not verify\n" in out
    assert out.splitlines()[-1].startswith("FAIL: the certificate does not verify: ")
    assert server.handler.logins == [] and server.messages == []
    assert "AUTH" not in server.handler.commands
    # With verification turned off it works, with a warning.
    unverified = check(cli, host(server), "--no-verify")
    assert unverified.returncode == 3
    assert unverified.stdout.splitlines()[-1] == (
        "WARN: the certificate was not verified (--no-verify)"
    )


def test_a_certificate_for_another_host_fails(
    cli: Runner,
    make_smtpd: Callable[..., SMTPServer],
    wrong_host_server_tls_context: Any,
    ca_bundle_path: Path,
) -> None:
    server = make_smtpd(tls_mode="implicit", tls_context=wrong_host_server_tls_context)
    status, report = check_json(cli, host(server), "--tls", "--cafile", str(ca_bundle_path))
    assert status == 1
    assert report["tls"]["verified"] is False and report["tls"]["name_matches"] is False
    assert "127.0.0.1" in report["tls"]["verify_error"]
    assert report["tls"]["chain"][0]["names"] == ["mail.example.org"]
    assert report["failures"][0].startswith("the certificate does not verify")


def test_an_expired_certificate_fails(
    cli: Runner,
    make_smtpd: Callable[..., SMTPServer],
    expired_server_tls_context: Any,
    ca_bundle_path: Path,
) -> None:
    server = make_smtpd(tls_mode="starttls", tls_context=expired_server_tls_context)
    status, report = check_json(cli, host(server), "--cafile", str(ca_bundle_path))
    assert status == 1
    assert "expired" in report["tls"]["verify_error"]
    assert report["tls"]["chain"][0]["days_left"] < 0
    assert any(failure.startswith("the certificate expired") for failure in report["failures"])


# --------------------------------------------------------------------------- without TLS


def test_a_plaintext_server_warns(cli: Runner, smtpd_auth: SMTPServer) -> None:
    result = check(cli, host(smtpd_auth))
    assert result.returncode == 3
    assert "  TLS:        none\n" in result.stdout
    assert "  AUTH:       CRAM-MD5 LOGIN PLAIN XOAUTH2\n" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "WARN: no TLS: mail and passwords would cross the network in clear text"
    )
    required = check(cli, host(smtpd_auth), "--starttls", "yes")
    assert required.returncode == 1
    assert required.stdout.splitlines()[-1] == (
        "FAIL: STARTTLS is required and the server does not offer it"
    )


def test_an_unreachable_server_fails(
    cli: Runner,
) -> None:
    status, report = check_json(cli, f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert status == 1
    assert report["verdict"] == "FAIL"
    assert report["failures"][0].startswith(
        "cannot connect: Error connecting to 127.0.0.1 on port "
    )


def test_a_refused_test_message_fails(cli: Runner, smtpd: SMTPServer) -> None:
    result = check(
        cli, host(smtpd), "--send-test", "refuse@example.org", "--from", "me@example.org"
    )
    assert result.returncode == 1
    assert "  test:       me@example.org -> refuse@example.org: not accepted\n" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "FAIL: test message refused: refuse@example.org: 550 5.1.1 no such user"
    )


def test_settings_from_the_environment(cli: Runner, smtpd: SMTPServer) -> None:
    env = {"SMTP_BACKENDS_HOST": smtpd.host, "SMTP_BACKENDS_PORT": str(smtpd.port)}
    status, report = check_json(cli, env=env)
    assert status == 3
    assert report["target"] == host(smtpd) and report["greeting"].startswith("220 ")
    assert report["extensions"]["pipelining"] == ""


def test_usage_errors(cli: Runner) -> None:
    for argv, env, message in (
        ([], {}, "give HOST[:PORT] or set SMTP_BACKENDS_HOST"),
        (["h.example", "--login"], {}, "--login needs --username"),
        (["h.example", "--login", "--username", "u"], {}, "a password is needed"),
        (["h.example", "--send-test", "nobody"], {}, "--send-test: 'nobody' is not an address"),
        (["h.example", "--warn-days", "-1"], {}, "--warn-days must be 0 or more"),
        (["h.example:99999"], {}, "99999 is not a port"),
        (["h.example"], {"SMTP_BACKENDS_TIMEOUT": "never"}, "SMTP_BACKENDS_TIMEOUT: 'never'"),
    ):
        result = cli("check", *argv, env=env, input="")
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert message in result.stderr


def test_port_465_means_implicit_tls() -> None:
    parser, _ = build_parser()

    def options(*argv: str) -> dict[str, Any]:
        return resolve(parser.parse_args(["check", *argv]), {})[0]

    assert options("mail.example.com:465") == {
        "hostname": "mail.example.com",
        "port": 465,
        "use_tls": True,
    }
    assert options("mail.example.com:465", "--starttls", "yes")["start_tls"] is True
    assert "use_tls" not in options("mail.example.com:587")
    arguments = parser.parse_args(["check", "mail.example.com", "--starttls", "yes"])
    with pytest.raises(SettingsError, match="exclude each other"):
        resolve(arguments, {"SMTP_BACKENDS_USE_TLS": "1"})


def test_name_matching() -> None:
    assert name_matches("mail.example.com", ("mail.example.com",))
    assert name_matches("MAIL.example.com.", ("mail.example.com",))
    assert name_matches("mail.example.com", ("*.example.com",))
    assert not name_matches("a.mail.example.com", ("*.example.com",))
    assert not name_matches("example.com", ("*.example.com",))
    assert name_matches("::1", ("0:0:0:0:0:0:0:1", "::1"))
    assert not name_matches("127.0.0.1", ("localhost",))


# --------------------------------------------------------------------------- degraded modes


def test_without_cryptography_the_leaf_comes_from_python(
    implicit_tls: SMTPServer, chained_ca_file: Path
) -> None:
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from smtp_backends.cli import main\n"
        f"sys.exit(main(['check', {host(implicit_tls)!r}, '--tls', '--cafile', "
        f"{str(chained_ca_file)!r}, '--json']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_environment(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [leaf] = json.loads(result.stdout)["tls"]["chain"]
    assert leaf["names"] == ["localhost", "127.0.0.1"]
    assert "organizationName=" in leaf["issuer"] and 364 <= leaf["days_left"] <= 365


@pytest.fixture
def prompt_terminal() -> Iterator[tuple[int, int]]:
    controller, terminal = pty.openpty()
    yield controller, terminal
    for fd in (controller, terminal):
        with contextlib.suppress(OSError):  # the test closes the terminal's end itself
            os.close(fd)


def test_the_password_prompt_does_not_echo(
    implicit_tls: SMTPServer, chained_ca_file: Path, prompt_terminal: tuple[int, int]
) -> None:
    controller, terminal = prompt_terminal
    argv = [*COMMAND, "check", host(implicit_tls), "--tls", "--cafile", str(chained_ca_file)]
    argv += ["--username", USERNAME, "--login"]
    process = subprocess.Popen(
        argv, stdin=terminal, stdout=terminal, stderr=terminal, env=cli_environment(),
        start_new_session=True,  # the terminal becomes its controlling tty (getpass opens it)
    )  # fmt: skip
    os.close(terminal)
    output = b""
    answered = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"SMTP password: " in output:
                os.write(controller, PASSWORD.encode() + b"\n")
                answered = True
        elif process.poll() is not None:
            break
    assert process.wait(timeout=10) == 0, output
    text = output.decode()
    assert answered and "  login:      alice: accepted (235" in text
    assert PASSWORD not in text


def test_the_chain_read_in_process_with_and_without_cryptography(
    implicit_tls: SMTPServer, chained_ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = ssl.create_default_context(cafile=str(chained_ca_file))
    with (
        socket.create_connection(implicit_tls.address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        full = certificates.describe_chain(tls)
        monkeypatch.setattr(certificates, "cryptography_available", lambda: False)
        fallback = certificates.describe_chain(tls)
    assert len(full) == 2 and len(fallback) == 1
    leaf = fallback[0]
    assert leaf.names == full[0].names == ("localhost", "127.0.0.1")
    assert leaf.sha256 == full[0].sha256
    assert leaf.not_after == full[0].not_after
    assert "organizationName=Check Root" not in leaf.subject and leaf.issuer
    assert certificates.CertificateInfo("s", "i", (), None, None).days_left() is None


def test_ctrl_c_while_waiting_for_a_greeting_ends_cleanly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        with subprocess.Popen(
            [*COMMAND, "check", f"127.0.0.1:{port}", "--timeout", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_environment(),
        ) as process:
            try:
                connection, _ = listener.accept()  # the check is waiting for a greeting now
                with connection:
                    time.sleep(0.2)
                    process.send_signal(signal.SIGINT)
                    out, err = process.communicate(timeout=30)
            finally:
                process.kill()
    assert process.returncode == 130, (out, err)
    assert (out, err) == ("", "interrupted\n")


def test_a_login_the_server_does_not_offer_fails(cli: Runner, smtpd: SMTPServer) -> None:
    env = {"SMTP_BACKENDS_PASSWORD": PASSWORD}
    result = check(cli, host(smtpd), "--username", USERNAME, "--login", env=env)
    assert result.returncode == 1
    assert "  AUTH:       none offered\n" in result.stdout
    assert "  login:      alice: refused\n" in result.stdout
    # The failure is the verdict's reason; the missing TLS is only a warning beside it.
    assert result.stdout.splitlines()[-1] == (
        "FAIL: cannot log in: SMTP AUTH extension not supported by server."
        " Try connecting via TLS (or STARTTLS)."
    )


def test_starttls_offered_and_declined_warns(
    cli: Runner, soon_expiring_starttls: SMTPServer
) -> None:
    status, report = check_json(cli, host(soon_expiring_starttls), "--starttls", "no")
    assert status == 3
    assert report["tls_mode"] == "none" and "tls" not in report
    assert report["warnings"] == ["STARTTLS is offered but was not used (--starttls no)"]
