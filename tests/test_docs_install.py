"""A new user's path: a fresh virtualenv, the documented install command, the documented tests.

For each framework's test-kit page (docs/testing/*.md), in one fresh virtualenv: run the
page's ``pip install ...`` command as written, from a copy of the repository's files (what
a clone holds), then run the page's example project with pytest, unchanged. pip's cache
makes the repeated runs quick; the first one downloads from PyPI.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.test_docs_pages import EXAMPLES, ROOT, example

# The order the pages are installed and run in: each install adds to the same virtualenv.
ORDER = ("asyncio", "django", "flask", "asgi")


def tracked_files() -> list[str]:
    """The repository's files as a clone would hold them (tracked or new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's files, standing for a fresh clone."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git metadata to know its files")
    target = tmp_path_factory.mktemp("clone") / "smtp_backends"
    for name in tracked_files():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination)
    return target


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv (with pip), nothing installed."""
    directory = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True).create(directory)
    return directory / "bin"


def test_example_sets_match_the_pages() -> None:
    assert set(ORDER) == set(EXAMPLES)


def test_fresh_install_runs_each_documented_example(
    clone: Path, fresh_venv: Path, tmp_path: Path
) -> None:
    # Nothing of this process's environment that would point the new one elsewhere.
    leaks = {"VIRTUAL_ENV", "PYTHONPATH", "DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS"}
    env = {k: v for k, v in os.environ.items() if k not in leaks}
    env["PATH"] = f"{fresh_venv}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for name in ORDER:
        command, files = example(name)
        argv = shlex.split(command)
        assert argv[:2] == ["pip", "install"]
        installed = subprocess.run(
            [str(fresh_venv / "pip"), *argv[1:]],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert installed.returncode == 0, f"{command}\n{installed.stdout}\n{installed.stderr}"
        project = tmp_path / name
        project.mkdir()
        for filename, text in files.items():
            (project / filename).write_text(text)
        tested = subprocess.run(
            [str(fresh_venv / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        summary = f"{name}: {command}\n{tested.stdout[-3000:]}\n{tested.stderr[-2000:]}"
        assert tested.returncode == 0, summary
        assert f"{EXAMPLES[name]} passed" in tested.stdout, summary
    # Installed from the copy, not from this checkout (no editable install, no path).
    where = subprocess.run(
        [str(fresh_venv / "python"), "-c", "import smtp_backends; print(smtp_backends.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in where and str(ROOT) not in where
