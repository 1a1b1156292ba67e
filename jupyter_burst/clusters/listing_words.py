"""Words of the ``%burst gc`` listings, the same for every cloud: counts, ages, tables."""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    """``1 instance``, ``3 instances``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def age(seconds: float) -> str:
    """``42m``, ``5h07m``, ``3d04h``."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """``rows`` (the header first) as lines of left-aligned columns, indented two spaces."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
