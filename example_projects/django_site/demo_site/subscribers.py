"""The newsletter's subscribers: a fixed list keeps the example free of models."""

from __future__ import annotations

SUBSCRIBERS: tuple[str, ...] = tuple(f"subscriber{n:02d}@example.com" for n in range(1, 26))
