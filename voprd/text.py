"""Small text helpers for what voprd prints: counts that agree in number."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 failure`, `2 failures`, `0 seeds` (an irregular plural may be given)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"
