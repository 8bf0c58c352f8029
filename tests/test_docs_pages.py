"""The documentation's pages: their Python examples run, and its test-kit examples are complete.

Every ```python block of a page under docs/ runs, in order, in one namespace per page,
unless a ``<!-- not run: reason -->`` line comes right before it. Blocks with a
``title="file name"`` are files of a complete example (the test-kit pages): they are run
as a project by tests/test_pytest_plugin.py and tests/test_docs_install.py instead. The
examples send to the development server's address (127.0.0.1:1025): a capture server
takes its place, on a free port.
"""

from __future__ import annotations

import re
from pathlib import Path

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
