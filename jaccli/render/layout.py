"""How much of a result fits on the screen: the decimals, the width, and which rows show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """How much fits: decimals shown, terminal width, and whether to truncate big grids."""

    precision: int = 4
    width: int = 80
    full: bool = False
    max_rows: int = 20
    color: bool = False
    """Whether the terminal shows colour (not NO_COLOR, not a pipe)."""


def window(count: int, limit: int | None) -> list[int | None]:
    """The positions shown of `count`: all, or the first ones, an ellipsis (None), the last."""
    if limit is None or count <= limit:
        return list(range(count))
    return [*range(max(limit - 2, 1)), None, count - 1]
