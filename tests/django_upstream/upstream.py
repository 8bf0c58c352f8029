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
import sys
from pathlib import Path

import django

from tests.sdists import UnavailableError, cache_root, extract_tree, fetch_sdist

__all__ = ("PACKAGE", "UnavailableError", "cache_dir", "mail_tests_path")

PACKAGE = "upstream_django_mail"


def cache_dir() -> Path:
    """Where Django's source distributions and extracted tests are kept."""
    explicit = os.environ.get("SMTP_BACKENDS_DJANGO_TESTS_CACHE")
    return Path(explicit) if explicit else cache_root() / "django-tests"


def mail_tests_path() -> Path:
    """The directory holding the ``upstream_django_mail`` package, on sys.path.

    Raises:
        UnavailableError: the sources cannot be fetched.
    """
    version = django.__version__
    root = cache_dir() / version
    package = root / PACKAGE
    if not (package / "__init__.py").exists():
        override = os.environ.get("SMTP_BACKENDS_DJANGO_SDIST")
        sdist = fetch_sdist(
            "django", version, cache_dir() / "sdists", Path(override) if override else None
        )
        extract_tree(sdist, ("tests", "mail"), package)
        (package / "__init__.py").touch()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root
