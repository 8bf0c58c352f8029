"""Fetch Django's own mail tests for the installed Django version.

``pip download django==<installed> --no-deps --no-binary :all:`` fetches the source
distribution (it holds the ``tests/`` tree, the wheel does not) into a cache directory;
``tests/mail`` is extracted next to it as the package ``upstream_django_mail``
(its own name would be ``mail``) and put on ``sys.path``.

* Cache: ``$SMTP_BACKENDS_DJANGO_TESTS_CACHE``, else ``$XDG_CACHE_HOME/smtp-backends``
  (``~/.cache/smtp-backends``). Delete it to fetch again.
* Offline: point ``$SMTP_BACKENDS_DJANGO_SDIST`` at a downloaded
  ``django-<version>.tar.gz``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django

PACKAGE = "upstream_django_mail"


class UnavailableError(Exception):
    """Django's test sources could not be fetched (offline, unreleased version...)."""


def cache_dir() -> Path:
    """Where source distributions and extracted tests are kept."""
    explicit = os.environ.get("SMTP_BACKENDS_DJANGO_TESTS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smtp-backends" / "django-tests"


def _sdist(version: str, directory: Path) -> Path:
    explicit = os.environ.get("SMTP_BACKENDS_DJANGO_SDIST")
    if explicit:
        return Path(explicit)
    name = f"django-{version}.tar.gz"
    for candidate in (directory / name, directory / f"Django-{version}.tar.gz"):
        if candidate.exists():
            return candidate
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"django=={version}",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--timeout",
        "20",
        "-q",
        "-d",
        str(directory),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnavailableError(f"pip download failed: {exc}") from exc
    for candidate in (directory / name, directory / f"Django-{version}.tar.gz"):
        if candidate.exists():
            return candidate
    raise UnavailableError(
        f"pip download django=={version} gave no source distribution: "
        f"{(result.stderr or result.stdout).strip()[-500:]}"
    )


def mail_tests_path() -> Path:
    """The directory holding the ``upstream_django_mail`` package, on sys.path.

    Raises:
        UnavailableError: the sources cannot be fetched.
    """
    version = django.__version__
    root = cache_dir() / version
    package = root / PACKAGE
    if not (package / "__init__.py").exists():
        sdist = _sdist(version, cache_dir() / "sdists")
        prefix = None
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
        try:
            with tarfile.open(sdist) as archive:
                for member in archive.getmembers():
                    parts = Path(member.name).parts
                    if len(parts) < 4 or parts[1:3] != ("tests", "mail"):
                        continue
                    if not (member.isfile() or member.isdir()):
                        continue
                    prefix = parts[0]
                    target = staging.joinpath(*parts[3:])
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(member)
                    assert source is not None
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
            if prefix is None:
                raise UnavailableError(f"{sdist} holds no tests/mail directory")
            (staging / "__init__.py").touch()
            try:
                staging.rename(package)
            except OSError:  # another run extracted it meanwhile
                if not (package / "__init__.py").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root
