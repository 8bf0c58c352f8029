"""``python -m smtp_backends``: see :mod:`smtp_backends.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
