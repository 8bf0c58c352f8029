"""A small Django project for the Django adapter's tests (settings, URLs, views).

:func:`setup` points ``DJANGO_SETTINGS_MODULE`` at :mod:`tests.django_project.settings`
and runs ``django.setup()``. The Django test modules call it at import time, so that
pytest-django configures Django only when they are collected: the rest of the suite
neither needs nor sees Django.
"""

from __future__ import annotations

import os

SETTINGS_MODULE = "tests.django_project.settings"


def setup() -> None:
    """Configure Django with the test project's settings (idempotent)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django

    django.setup()
