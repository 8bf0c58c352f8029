"""aiosmtplib's own test suite, run against smtp_backends.

The installed aiosmtplib's source distribution is fetched at test time (see
:mod:`tests.sdists`) and its tests of the public API run in a subprocess in which
``import aiosmtplib`` gives a thin shim over ``smtp_backends`` (written below): code
written for aiosmtplib must run with the import changed. Every test of those files runs,
except ``NOT_APPLICABLE``: tests of aiosmtplib's private internals, or of a behaviour we
deliberately differ in, each with the reason and, where there is one, our own test.

The files left out test internals only (``aiosmtplib.protocol``, ``.esmtp``, ``.auth``,
``.email`` helpers) or its command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdists import UnavailableError, cache_root, extract_tree, fetch_sdist

aiosmtplib = pytest.importorskip("aiosmtplib")
pytest.importorskip("aiosmtpd")
pytest.importorskip("trustme")
pytest.importorskip("hypothesis")

#: aiosmtplib's test files about the public API.
FILES = (
    "test_api.py",
    "test_asyncio.py",
    "test_connect.py",
    "test_errors.py",
    "test_response.py",
    "test_sendmail.py",
    "test_status.py",
    "test_sync.py",
    "test_tls.py",
)

_INTERNALS = "tests aiosmtplib's private internals ({})"

NOT_APPLICABLE = {
    "test_sendmail.py::test_sendmail_simple_failure": (
        "sends the sender '@@' to see the server refuse it; we refuse such an address with "
        "ValueError before anything is written (tests/test_protocol_commands.py)"
    ),
    "test_sendmail.py::test_send_message_smtputf8_sender[compat32_message]": (
        "expects BODY=8BITMIME with every SMTPUTF8 message; we declare it when the content "
        "is 8-bit (a compat32 message encodes its headers: 7-bit), tests/test_client.py"
    ),
    "test_sendmail.py::test_send_message_smtputf8_sender[mime_message]": (
        "as the compat32 case: BODY=8BITMIME only for 8-bit content"
    ),
    "test_connect.py::test_bad_connect_response_raises_error": _INTERNALS.format("protocol"),
    "test_connect.py::test_connect_with_no_starttls_support": _INTERNALS.format("protocol"),
    "test_connect.py::test_eof_on_connect_raises_connect_error": (
        _INTERNALS.format(
            "protocol; the behaviour is "
            "tests/test_misbehaving_servers.py::test_disconnect_before_greeting"
        )
    ),
    "test_connect.py::test_stale_connection_lost_does_not_sabotage_reconnect": (
        _INTERNALS.format("protocol")
    ),
    "test_tls.py::test_starttls_sets_protocol_over_ssl": _INTERNALS.format("protocol"),
    "test_connect.py::test_disconnected_server_raises_on_starttls": (
        _INTERNALS.format("_ehlo_or_helo_if_needed, replaced by a function of no argument")
    ),
    "test_connect.py::test_server_unexpected_disconnect_on_starttls_then_reconnect": (
        _INTERNALS.format("_connect_lock")
    ),
    "test_connect.py::test_server_unexpected_disconnect_on_data_then_reconnect": (
        _INTERNALS.format("_connect_lock")
    ),
    "test_connect.py::test_server_unexpected_disconnect_with_delay": (
        _INTERNALS.format("_connect_lock")
    ),
    "test_connect.py::test_create_connection_runtime_error_on_missing_loop": (
        _INTERNALS.format("_create_connection")
    ),
    "test_connect.py::test_oauth_token_generator_without_username": (
        _INTERNALS.format(
            "_oauth_token_generator; the behaviour is "
            "tests/test_client_tls.py::test_oauth_without_username_is_refused_before_any_auth"
        )
    ),
    "test_connect.py::test_connect_cancellation_releases_lock": (
        _INTERNALS.format("_get_default_local_hostname")
    ),
    "test_connect.py::test_server_unexpected_disconnect_on_command_then_reconnect": (
        "the server says 250 and then, unasked, 221 and closes; we end the session at that "
        "221 (tests/test_protocol_connection.py, unsolicited-221-closes), where aiosmtplib "
        "takes it for the reply to the next EHLO"
    ),
}

_SHIM = {
    "__init__.py": (
        '"""aiosmtplib\'s public names, served by smtp_backends."""\n'
        "from smtp_backends import *  # noqa: F403\n"
        "from smtp_backends import __all__\n"
    ),
    "errors.py": "from smtp_backends.errors import *  # noqa: F403\n",
    "response.py": "from smtp_backends import SMTPResponse\n",
    "smtp.py": "from smtp_backends import SMTP\n",
    "status.py": "from smtp_backends import SMTPStatus\n",
    "typing.py": (
        "from smtp_backends import SMTPStatus, SMTPTokenGenerator\n"
        "from smtp_backends.client import Default\n"
    ),
}


def _suite() -> tuple[Path, Path]:
    """aiosmtplib's extracted source tree (its own copy of the library removed) and the shim."""
    version = aiosmtplib.__version__
    base = cache_root() / "aiosmtplib-tests"
    override = os.environ.get("SMTP_BACKENDS_AIOSMTPLIB_SDIST")
    sdist = fetch_sdist(
        "aiosmtplib", version, base / "sdists", Path(override) if override else None
    )
    root = extract_tree(sdist, (), base / version / "source")
    # Its pytest settings put src/ first on sys.path: without it, the shim is aiosmtplib.
    shutil.rmtree(root / "src", ignore_errors=True)
    shim = base / version / "shim" / "aiosmtplib"
    shim.mkdir(parents=True, exist_ok=True)
    for name, text in _SHIM.items():
        (shim / name).write_text(text)
    return root, shim.parent


def test_aiosmtplib_suite_passes_against_smtp_backends(loop_name: str) -> None:
    try:
        root, shim = _suite()
    except UnavailableError as exc:  # pragma: no cover - offline
        pytest.skip(f"aiosmtplib's test sources are unavailable: {exc}")
    # Its own pytest, without ours: no pytest-django (our settings module is not there).
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django"]
    # On the loop of this run (aiosmtplib's own conftest takes --event-loop=asyncio|uvloop).
    base += [f"--event-loop={loop_name}"]
    base += [f"tests/{name}" for name in FILES]
    command = list(base)
    for test_id in NOT_APPLICABLE:
        command += ["--deselect", f"tests/{test_id}"]
    environment = {**os.environ, "PYTHONPATH": str(shim)}
    environment.pop("COV_CORE_SOURCE", None)  # not measured: it runs the shim's imports
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        command, cwd=root, env=environment, capture_output=True, text=True, timeout=300
    )
    summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary[0], summary
    # Every test named as not applicable still exists upstream (else the list is stale).
    collected = subprocess.run(
        [*base, "--collect-only"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for test_id in NOT_APPLICABLE:
        assert f"tests/{test_id}" in collected, f"{test_id} is gone upstream"
