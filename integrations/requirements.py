"""What the integration suites do when a program they drive is missing.

Under CI (``CI`` set to true) the suites must run: a missing requirement fails the test.
Elsewhere it skips, with the reason and how to install what is missing.
"""

from __future__ import annotations

import os
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
