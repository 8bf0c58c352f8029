"""aiosmtplib's own test suite, run against smtp_backends.

The installed aiosmtplib's source distribution is fetched at test time (see
:func:`tests.sdists.aiosmtplib_source`) and every test file of its ``tests/`` directory
runs in a subprocess in which ``import aiosmtplib`` gives a thin shim over
``smtp_backends`` (:mod:`tests.aiosmtplib_upstream.shim`): code written for aiosmtplib
must run with the import changed. The tests left out, each with its reason, are listed
in one place, :mod:`tests.aiosmtplib_upstream.left_out`; every other test must pass, and
every listed one must still fail here (else the list is stale).

When the sources cannot be fetched, the test fails under CI and skips elsewhere
(``integrations/requirements.py``'s rule).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from integrations.requirements import missing, require_module
from tests.aiosmtplib_upstream.left_out import LEFT_OUT
from tests.aiosmtplib_upstream.shim import write_shim
from tests.sdists import UnavailableError, aiosmtplib_source

_WHY = "aiosmtplib's own test suite"
for _name in ("aiosmtplib", "aiosmtpd", "trustme", "hypothesis", "pytest_asyncio"):
    require_module(_name, _WHY)


def _outcomes(junit: Path) -> dict[str, set[str]]:
    """Test id (``file.py::name``, parameters dropped) -> the outcomes of its runs."""
    outcomes: dict[str, set[str]] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        module = module.removeprefix("tests/")
        name = re.sub(r"\[.*", "", case.get("name", ""))
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        outcomes.setdefault(f"{module}.py::{name}", set()).add(outcome)
    return outcomes


def test_aiosmtplib_suite_passes_against_smtp_backends(tmp_path: Path, loop_name: str) -> None:
    try:
        root = aiosmtplib_source()
    except UnavailableError as exc:
        missing(f"aiosmtplib's test sources are unavailable: {exc}")
    shim = write_shim(root.parent / "shim")
    junit = tmp_path / "aiosmtplib.xml"
    # Its own pytest settings, without ours: no pytest-django (our settings module is
    # not there). Every test file runs: no --deselect, the outcomes are judged below.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "no:django", "-p", "no:randomly", f"--junitxml={junit}"]
    # On the loop of this run (aiosmtplib's own conftest takes --event-loop=asyncio|uvloop).
    command += [f"--event-loop={loop_name}", "tests"]
    environment = {**os.environ, "PYTHONPATH": str(shim)}
    environment.pop("COV_CORE_SOURCE", None)  # not measured: it runs the shim's imports
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        command, cwd=root, env=environment, capture_output=True, text=True, timeout=600
    )
    assert junit.exists(), result.stdout[-6000:] + result.stderr[-2000:]
    outcomes = _outcomes(junit)
    files = {path.name for path in (root / "tests").glob("test_*.py")}
    ran = {test_id.split("::")[0] for test_id in outcomes}
    assert ran == files, f"test files that did not run: {sorted(files - ran)}"

    failing = sorted(t for t, seen in outcomes.items() if t not in LEFT_OUT and "failed" in seen)
    gone = sorted(t for t in LEFT_OUT if t not in outcomes)
    stale = sorted(t for t in LEFT_OUT if outcomes.get(t) == {"passed"})
    assert not failing, f"failing: {failing}\n{result.stdout[-8000:]}"
    assert not gone, f"listed in left_out.py but gone upstream: {gone}"
    assert not stale, f"listed in left_out.py but passing now (remove them): {stale}"
    passed = sum(1 for t, seen in outcomes.items() if t not in LEFT_OUT and "passed" in seen)
    assert passed > 100, result.stdout[-3000:]
