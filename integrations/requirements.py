"""What the suites do when something they need is missing.

Under CI (``CI`` set to true) the suites must run: a missing requirement fails the test.
Elsewhere it skips, with the reason and how to install what is missing. The rule covers
the integration suites (a program they drive: Redis, Chromium) and the peers' suites in
``tests/`` (aiosmtplib's and Django's own tests, aiosmtplib's documented examples: their
sources are fetched at test time and may be out of reach).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def on_ci() -> bool:
    """Whether this run is CI's (``CI=true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Fail under CI, skip elsewhere (the whole module with ``module``), with ``reason``."""
    if on_ci():
        pytest.fail(f"{reason} (CI is set: this suite must run)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def require_module(name: str, why: str, *, module: bool = True) -> ModuleType:
    """Import ``name``; if it cannot be imported, :func:`missing` (fail under CI, else skip).

    Args:
        why: what needs it, for the message ("aiosmtplib's own tests").
        module: skip the whole test module (at import time) rather than one test.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{why} need {name}, which cannot be imported ({exc})", module=module)
