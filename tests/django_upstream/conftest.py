"""Each upstream test ends without a bridge: no pooled socket outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtp_backends import bridge


@pytest.fixture(autouse=True)
def _no_bridge_after() -> Iterator[None]:
    yield
    bridge.shutdown()
