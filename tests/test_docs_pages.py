"""The documentation's pages: their Python examples run, and its test-kit examples are complete.

Every ```python block of a page under docs/ runs, in order, in one namespace per page,
unless a ``<!-- not run: reason -->`` line comes right before it. Blocks with a
``title="file name"`` are files of a complete example (the test-kit pages): they are run
as a project by tests/test_pytest_plugin.py and tests/test_docs_install.py instead. The
examples send to the development server's address (127.0.0.1:1025): a capture server
takes its place, on a free port.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from smtp_backends.testkit import CaptureServer, Outbox

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
_NOT_RUN = "<!-- not run:"

#: The test-kit pages with a complete example each, and how many tests it holds.
EXAMPLES = {"asyncio": 2, "django": 2, "flask": 2, "asgi": 1}


def example(name: str) -> tuple[str, dict[str, str]]:
    """The install command and the files (name -> text) of ``docs/testing/<name>.md``."""
    text = (DOCS / "testing" / f"{name}.md").read_text()
    install = re.findall(r"^```bash\n(pip install [^\n]*)\n```", text, re.M)
    assert len(install) == 1, f"testing/{name}.md must show one pip install command"
    files = {}
    for _, info, body in _BLOCK.findall(text):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            files[title.group(1)] = body
    return install[0], files


def runnable_blocks(page: Path) -> list[str]:
    """The page's Python blocks that are run (not files, not marked "not run")."""
    text = page.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        language, info, body = match.groups()
        if language != "python" or "title=" in info:
            continue
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        if before.startswith(_NOT_RUN):
            continue
        blocks.append(body)
    return blocks


# --------------------------------------------------------------------------- the pages' examples

#: The pages whose examples send to the development server's port, and how many
#: messages they send there when run.
SENDING_PAGES = {"index.md": 1, "start/asyncio.md": 10, "start/asgi.md": 1, "start/flask.md": 1}
DEV_PORT = "1025"


def pages_with_examples() -> list[str]:
    """Every page under docs/ with at least one Python block that runs."""
    return sorted(
        str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md") if runnable_blocks(page)
    )


def test_every_sending_page_is_listed() -> None:
    pages = pages_with_examples()
    assert set(SENDING_PAGES) <= set(pages)
    for page in pages:
        # port=1025 for the client and ASGI, MAIL_PORT=1025 for Flask.
        sends = any(f"port={DEV_PORT}" in block.lower() for block in runnable_blocks(DOCS / page))
        assert sends == (page in SENDING_PAGES), page


def run_page(page: str, port: int) -> dict[str, Any]:
    """Run the page's blocks in order in one namespace, port 1025 replaced by ``port``."""
    new = str(port)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    for block in runnable_blocks(DOCS / page):
        code = block.replace(f"port={DEV_PORT}", f"port={new}")
        code = code.replace(f"MAIL_PORT={DEV_PORT}", f"MAIL_PORT={new}")
        exec(compile(code, str(DOCS / page), "exec"), namespace)
    return namespace


async def call_signup(app: Any) -> Any:
    """POST /signup to the ASGI page's app, inside its lifespan."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.post("/signup", params={"address": "ada@example.com"})
    return response.json()


@pytest.mark.parametrize("page", pages_with_examples())
def test_page_examples_run(page: str) -> None:
    with CaptureServer().running() as server, Outbox(server) as outbox:
        namespace = run_page(page, server.port)
        if page == "start/asgi.md":
            assert asyncio.run(call_signup(namespace["app"])) == {"sent": True}
        if page == "start/flask.md":
            app = namespace["app"]
            assert app.test_client().post("/welcome/ada@example.com").text == "sent"
            app.extensions["mail"].close()  # its pooled connection QUITs while the server runs
        outbox.wait_for_count(SENDING_PAGES.get(page, 0))
        assert len(outbox) == SENDING_PAGES.get(page, 0)


def test_django_page_settings() -> None:
    """The Django page's MAILERS blocks: the stock one, ours, and one for the dev inbox."""
    blocks = [b for b in runnable_blocks(DOCS / "start/django.md") if "MAILERS" in b]
    values = []
    for block in blocks:
        namespace: dict[str, Any] = {}
        exec(block, namespace)
        values.append(namespace["MAILERS"]["default"])
    stock, ours, dev = values
    assert stock == {"BACKEND": "django.core.mail.backends.console.EmailBackend"}
    assert ours["BACKEND"] == dev["BACKEND"] == "smtp_backends.django.AsyncSMTPBackend"
    assert dev["OPTIONS"] == {"host": "127.0.0.1", "port": 1025}
    from smtp_backends.django.config import HAS_MAILERS

    if HAS_MAILERS:  # the options are the backend's keywords, as Django 6.1 passes them
        from smtp_backends.django import AsyncSMTPBackend

        backend = AsyncSMTPBackend(alias="default", **ours["OPTIONS"])
        assert (backend.host, backend.port, backend.use_tls) == ("smtp.example.com", 587, True)


def test_django_page_quotes_startproject() -> None:
    """What the page says a fresh project holds is what Django 6.1's startproject writes."""
    django = pytest.importorskip("django")
    template = Path(django.__file__).parent / "conf/project_template/project_name/settings.py-tpl"
    if "MAILERS" not in template.read_text():
        pytest.skip(f"Django {django.__version__}'s startproject writes no MAILERS (before 6.1)")
    tree = ast.parse(template.read_text().replace("{{ ", "").replace(" }}", ""))
    [assignment] = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MAILERS"
    ]
    written = ast.literal_eval(assignment.value)
    [first] = [b for b in runnable_blocks(DOCS / "start/django.md") if "MAILERS" in b][:1]
    namespace: dict[str, Any] = {}
    exec(first, namespace)
    assert namespace["MAILERS"] == written


# --------------------------------------------------------------------------- the README

#: README blocks that are no page's: the test that runs each one.
README_BLOCKS_RUN_ELSEWHERE = {
    "def test_signup_sends_a_welcome_mail": "tests/test_pytest_plugin.py",
}


def test_readme_examples_are_the_pages() -> None:
    """Each Python example of the README is, verbatim, one of a page's (run there).

    The README is the front page: its quick starts are copies of the docs' first examples,
    so that what a reader copies from it has run in this suite.
    """
    readme = (ROOT / "README.md").read_text()
    blocks = [body for language, _, body in _BLOCK.findall(readme) if language == "python"]
    assert len(blocks) >= 5  # Django (MAILERS, EMAIL_*), Flask, asyncio, ASGI...
    run_here = {block for page in DOCS.rglob("*.md") for block in runnable_blocks(page)}
    for block in blocks:
        elsewhere = [name for name in README_BLOCKS_RUN_ELSEWHERE if name in block]
        if elsewhere:
            continue
        assert block in run_here, f"README block not run by any docs page:\n{block}"


def test_install_hints_give_the_documented_commands() -> None:
    """Not on PyPI yet: a missing extra's message gives the README's commands, which work."""
    from smtp_backends.devserver import INSTALL_HINT
    from smtp_backends.extras import GIT_URL, install_hint

    readme = (ROOT / "README.md").read_text()
    install = (DOCS / "install.md").read_text()
    assert f'pip install "smtp-backends[django] @ {GIT_URL}"' in readme
    assert f'pip install "smtp-backends[django] @ {GIT_URL}"' in install
    assert 'pip install ".[django]"' in readme and 'pip install ".[django]"' in install
    assert install_hint("devserver") == INSTALL_HINT
    assert "pip install '.[devserver]'" in INSTALL_HINT
    assert f"'smtp-backends[devserver] @ {GIT_URL}'" in INSTALL_HINT
    assert "once released on PyPI: pip install 'smtp-backends[devserver]'" in INSTALL_HINT


# --------------------------------------------------------------------------- the settings tables


def test_settings_tables_list_every_option() -> None:
    """The hook builds each table from the option table: every option is in each one."""
    sys.path.insert(0, str(DOCS))
    try:
        spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
        assert spec is not None and spec.loader is not None
        hooks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hooks)
    finally:
        sys.path.remove(str(DOCS))
    from smtp_backends.django.config import ATTRIBUTES as DJANGO
    from smtp_backends.flask.config import ATTRIBUTES as FLASK
    from smtp_backends.flask.config import KEYS
    from smtp_backends.settings import OPTIONS

    mailer, django, flask = hooks.mailer_table(), hooks.django_table(), hooks.flask_table()
    for field in OPTIONS:
        assert f"| `{field}` |" in mailer
        if field in DJANGO:
            assert f"| `{DJANGO[field]}` |" in django
        if field in FLASK:
            assert f"| `{KEYS[FLASK[field]]}` |" in flask
    page = hooks.on_page_markdown("a\n<!-- settings-table: flask -->\nb")
    assert page == f"a\n{flask}\nb"
    assert (DOCS / "settings.md").read_text().count("<!-- settings-table:") == 3
