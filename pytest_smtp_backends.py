"""smtp_backends' pytest plugin: fixtures for tests that send real mail to a capture server.

pytest loads it by itself once smtp_backends is installed (entry point
``pytest11``, named ``smtp_backends``). It defines fixtures and nothing else:
no hook, no option, no autouse fixture, and no import of smtp_backends, of a
framework or of a server until a test asks for one of these fixtures. That is
why it is a module of its own, outside the package: importing it costs
nothing, and it keeps pytest from rewriting the package's modules, which
pytest does to every plugin's distribution (see
:func:`_leave_the_package_unrewritten`). ``-p no:smtp_backends`` turns it off;
with plugin autoloading disabled, ``-p pytest_smtp_backends`` turns it on.

Fixtures:

* ``smtp_capture_server``: a :class:`~smtp_backends.testing.CaptureServer` in a
  thread of its own (works for sync and async tests).
* ``smtp_outbox``: an :class:`~smtp_backends.testkit.Outbox` on it; after the
  test the process's pooled connections are shut down (they QUIT while the
  server listens) and whatever ``outbox.use_django()``, ``use_flask(app)`` or
  ``use_asgi(mail)`` changed is restored.
* ``django_smtp_outbox``: ``smtp_outbox`` with Django's default mailer
  pointed at it (``MAILERS['default']`` on Django 6.1, else ``EMAIL_*``),
  in place of the ``locmem`` backend the test runner installs.
* ``async_smtp_capture_server`` / ``async_smtp_outbox``: the same on the
  test's own event loop (they need pytest-asyncio); wait with
  ``await outbox.await_for(...)``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from smtp_backends.testing import CaptureServer
    from smtp_backends.testkit import Outbox

__all__ = (
    "async_smtp_capture_server",
    "async_smtp_outbox",
    "django_smtp_outbox",
    "smtp_capture_server",
    "smtp_outbox",
)


def _leave_the_package_unrewritten() -> None:
    """Undo pytest's marking of smtp_backends for assertion rewriting.

    pytest rewrites every module of a distribution that declares a ``pytest11``
    entry point, so merely installing smtp_backends would change how pytest
    imports it in every project: its modules would load through pytest's
    import hook, which, for one, cannot serve ``runpy`` (``python -m``-style
    runs of ``smtp_backends`` inside a test). The test kit raises its own
    AssertionErrors and needs no rewriting; as this runs before anything of
    smtp_backends is imported, the package loads as it does outside pytest.
    Only private attributes of pytest's hook are touched, and only if they
    are there.
    """
    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)
        if type(finder).__name__ != "AssertionRewritingHook" or not isinstance(marked, set):
            continue
        marked.discard("smtp_backends")
        cache = getattr(finder, "_marked_for_rewrite_cache", None)
        if isinstance(cache, dict):
            for name in [name for name in cache if name.split(".")[0] == "smtp_backends"]:
                del cache[name]


_leave_the_package_unrewritten()


@pytest.fixture
def smtp_capture_server() -> Iterator[CaptureServer]:
    """A capture server on 127.0.0.1 (a free port), in a thread of its own."""
    from smtp_backends.testing import CaptureServer

    with CaptureServer().running() as server:
        yield server


@pytest.fixture
def smtp_outbox(smtp_capture_server: CaptureServer) -> Iterator[Outbox]:
    """The mail ``smtp_capture_server`` receives during the test.

    Point an application at it with ``smtp_outbox.use_django()``,
    ``use_flask(app)`` or ``use_asgi(mail)`` (or ``smtp_outbox.host`` and
    ``.port``); after the test pooled connections are closed and the
    settings restored.
    """
    from smtp_backends.testkit import Outbox

    outbox = Outbox(smtp_capture_server)
    try:
        yield outbox
    finally:
        outbox.close()


@pytest.fixture
def django_smtp_outbox(smtp_outbox: Outbox) -> Outbox:
    """``smtp_outbox`` with Django's default mailer sending to it for this test."""
    return smtp_outbox.use_django()


def _async_fixtures() -> tuple[Any, Any]:
    try:
        import pytest_asyncio
    except ImportError:

        @pytest.fixture(name="async_smtp_capture_server")
        def no_server() -> None:
            """Needs pytest-asyncio (``pip install pytest-asyncio``)."""
            pytest.fail("async_smtp_capture_server needs pytest-asyncio", pytrace=False)

        @pytest.fixture(name="async_smtp_outbox")
        def no_outbox() -> None:
            """Needs pytest-asyncio (``pip install pytest-asyncio``)."""
            pytest.fail("async_smtp_outbox needs pytest-asyncio", pytrace=False)

        return no_server, no_outbox

    @pytest_asyncio.fixture
    async def async_smtp_capture_server() -> AsyncIterator[CaptureServer]:
        """A capture server on the test's event loop."""
        from smtp_backends.testing import CaptureServer

        async with CaptureServer() as server:
            yield server

    @pytest_asyncio.fixture
    async def async_smtp_outbox(
        async_smtp_capture_server: CaptureServer,
    ) -> AsyncIterator[Outbox]:
        """The mail ``async_smtp_capture_server`` receives; ``await outbox.await_for(...)``."""
        from smtp_backends.testkit import Outbox

        outbox = Outbox(async_smtp_capture_server)
        try:
            yield outbox
        finally:
            await outbox.aclose()

    return async_smtp_capture_server, async_smtp_outbox


async_smtp_capture_server, async_smtp_outbox = _async_fixtures()
