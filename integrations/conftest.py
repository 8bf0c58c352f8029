"""Shared setup of the integration suites (kept generic: each suite's fixtures live in its
own module).

- Every test item gets ``report_setup`` / ``report_call`` / ``report_teardown`` attributes
  (the phase's report), so that fixtures can act on failures (the browser suites save a
  screenshot of the page).
- The browser suites' fixtures (``browser``, ``page``, ``mail_server``, ``inbox``) are
  defined in ``integrations/browser.py`` and made visible here; importing that module does
  not import Playwright.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from integrations.browser import browser, inbox, mail_server, page  # noqa: F401


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item as ``report_<phase>``."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
