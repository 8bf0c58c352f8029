"""Source distributions of peer projects, fetched at test time for their own test suites.

``pip download <project>==<version> --no-deps --no-binary :all:`` fetches the sdist (it
holds the ``tests/`` tree; wheels do not) into a cache directory:
``$SMTP_BACKENDS_UPSTREAM_CACHE``, else ``$XDG_CACHE_HOME/smtp-backends``
(``~/.cache/smtp-backends``). Delete it to fetch again.

When a sdist cannot be had, :class:`UnavailableError` is raised; the suites then follow
``integrations/requirements.py``'s rule: they fail under CI and skip elsewhere.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


class UnavailableError(Exception):
    """A peer's test sources could not be fetched (offline, unreleased version...)."""


def cache_root() -> Path:
    """Where source distributions and extracted trees are kept."""
    explicit = os.environ.get("SMTP_BACKENDS_UPSTREAM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smtp-backends"


def fetch_sdist(project: str, version: str, directory: Path, override: Path | None) -> Path:
    """The ``<project>-<version>.tar.gz`` in ``directory``, downloaded if missing.

    Args:
        override: a file to use instead (for offline runs), if given.

    Raises:
        UnavailableError: pip could not fetch it.
    """
    if override is not None:
        if not override.is_file():
            raise UnavailableError(f"{override} (the sdist to use instead) is not a file")
        return override
    names = [f"{project.lower()}-{version}.tar.gz", f"{project}-{version}.tar.gz"]
    for name in names:
        if (directory / name).exists():
            return directory / name
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"{project}=={version}", "--no-deps"]
    command += ["--no-binary", ":all:", "--disable-pip-version-check", "--timeout", "20"]
    command += ["-q", "-d", str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnavailableError(f"pip download failed: {exc}") from exc
    for name in names:
        if (directory / name).exists():
            return directory / name
    raise UnavailableError(
        f"pip download {project}=={version} gave no source distribution: "
        f"{(result.stderr or result.stdout).strip()[-500:]}"
    )


def extract_tree(sdist: Path, inside: tuple[str, ...], target: Path) -> Path:
    """Extract the sdist's ``<top>/<inside...>/`` tree to ``target`` (once; atomic).

    Raises:
        UnavailableError: the sdist holds no such tree.
    """
    if target.exists():
        return target
    try:
        return _extract(sdist, inside, target)
    except (OSError, tarfile.TarError) as exc:
        raise UnavailableError(f"{sdist} cannot be extracted: {exc}") from exc


def _extract(sdist: Path, inside: tuple[str, ...], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    depth = 1 + len(inside)
    found = False
    try:
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) <= depth or parts[1:depth] != inside:
                    continue
                if not (member.isfile() or member.isdir()):
                    continue
                found = True
                destination = staging.joinpath(*parts[depth:])
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
        if not found:
            raise UnavailableError(f"{sdist} holds no {'/'.join(inside)} directory")
        try:
            staging.rename(target)
        except OSError:  # another run extracted it meanwhile
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def aiosmtplib_source() -> Path:
    """The installed aiosmtplib's source tree (``tests/``, ``docs/``...), from its sdist.

    Its own copy of the library (``src/``) is removed: its tests are to import the shim
    over smtp_backends. ``$SMTP_BACKENDS_AIOSMTPLIB_SDIST`` names a sdist to use instead
    of downloading one.

    Raises:
        UnavailableError: aiosmtplib is not installed, or its sdist cannot be fetched.
    """
    try:
        version = importlib.metadata.version("aiosmtplib")
    except importlib.metadata.PackageNotFoundError as exc:
        raise UnavailableError(
            "aiosmtplib is not installed (pip install --group dev -e .)"
        ) from exc
    base = cache_root() / "aiosmtplib-tests"
    override = os.environ.get("SMTP_BACKENDS_AIOSMTPLIB_SDIST")
    sdist = fetch_sdist(
        "aiosmtplib", version, base / "sdists", Path(override) if override else None
    )
    root = extract_tree(sdist, (), base / version / "source")
    # Its pytest settings put src/ first on sys.path: without it, the shim is aiosmtplib.
    shutil.rmtree(root / "src", ignore_errors=True)
    return root
