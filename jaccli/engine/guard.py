"""The memory budget: refuse work whose estimated bytes exceed it, before allocating anything."""

from __future__ import annotations

from jaccli.errors import ResourceError
from jaccli.memory import budget_or_default
from jaccli.messages import format_bytes

JSON_BYTES_PER_NUMBER = 64
"""Python's float object, the nested lists and the text of one number in a JSON document."""


def require_within_budget(what: str, needed: int, budget: int | None, way_out: str) -> None:
    """Raise ResourceError (exit 3) when `needed` bytes exceed the budget."""
    limit = budget_or_default(budget)
    if needed > limit:
        raise ResourceError(
            f"{what} would need about {format_bytes(needed)}, over the memory budget of "
            f"{format_bytes(limit)}; {way_out}, or raise --max-memory",
            code="memory_budget",
        )
