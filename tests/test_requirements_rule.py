"""The rule that keeps the peers' suites from vanishing quietly (issue 17, item 6).

``integrations/requirements.py``: under CI (``CI=true``) a suite whose requirement is
missing fails; elsewhere it skips with the reason. The peers' suites (aiosmtplib's own
tests, Django's own mail tests, aiosmtplib's documented examples) fetch their sources at
test time; when that fails they follow the rule, as the Celery and browser suites do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from integrations.requirements import missing, on_ci, require_module
from tests.sdists import UnavailableError, extract_tree, fetch_sdist

ROOT = Path(__file__).resolve().parent.parent

#: The peers' suites whose sources are fetched at test time.
PEER_SUITES = (
    "tests/aiosmtplib_upstream",
    "tests/django_upstream",
    "tests/test_docs_examples.py::test_examples_are_the_documented_ones",
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), (" TRUE ", True), ("", False), ("0", False)],
)
def test_on_ci_reads_the_ci_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("CI", value)
    assert on_ci() is expected


def test_missing_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"sources are gone.*CI is set"):
        missing("sources are gone")
    with pytest.raises(pytest.fail.Exception):
        missing("sources are gone", module=True)


def test_missing_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="sources are gone"):
        missing("sources are gone")


def test_require_module(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require_module("json", "this test").__name__ == "json"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_for_smtp_backends"):
        require_module("no_such_module_for_smtp_backends", "this test")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="this test need"):
        require_module("no_such_module_for_smtp_backends", "this test")


def test_unusable_sdists_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="not a file"):
        fetch_sdist("aiosmtplib", "5.1.3", tmp_path, tmp_path / "missing.tar.gz")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a tarball")
    with pytest.raises(UnavailableError, match="cannot be extracted"):
        extract_tree(garbage, (), tmp_path / "tree")
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(UnavailableError, match="holds no"):
        extract_tree(empty, ("tests", "mail"), tmp_path / "mail")


def _offline_environment(tmp_path: Path, *, ci: bool) -> dict[str, str]:
    """An environment in which no sdist can be fetched: empty caches, pip with no index."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SMTP_BACKENDS_", "PIP_", "COV_CORE_"))
    }
    environment.update(
        SMTP_BACKENDS_UPSTREAM_CACHE=str(tmp_path / "cache"),
        SMTP_BACKENDS_DJANGO_TESTS_CACHE=str(tmp_path / "cache" / "django"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        CI="true" if ci else "",
    )
    return environment


def _run_peer_suites(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs"]
    command.append("--continue-on-collection-errors")  # each suite reports its own failure
    return subprocess.run(
        [*command, *PEER_SUITES],
        cwd=ROOT,
        env=_offline_environment(tmp_path, ci=ci),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_peer_suites_fail_under_ci_when_sources_cannot_be_fetched(tmp_path: Path) -> None:
    result = _run_peer_suites(tmp_path, ci=True)
    output = result.stdout + result.stderr
    assert result.returncode not in (0, 5), output[-4000:]
    assert "aiosmtplib's test sources are unavailable" in output, output[-4000:]
    assert "aiosmtplib's documentation sources are unavailable" in output, output[-4000:]
    assert "Django's test sources are unavailable" in output, output[-4000:]
    assert output.count("(CI is set: this suite must run)") >= 3, output[-4000:]
    assert " passed" not in output.splitlines()[-1]


def test_peer_suites_skip_with_reasons_elsewhere(tmp_path: Path) -> None:
    result = _run_peer_suites(tmp_path, ci=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = output.strip().splitlines()[-1]
    assert "skipped" in summary and "failed" not in summary and "error" not in summary
    for reason in (
        "aiosmtplib's test sources are unavailable",
        "aiosmtplib's documentation sources are unavailable",
        "Django's test sources are unavailable",
    ):
        assert reason in output, output[-4000:]
