"""The memory budget: refuse work whose estimated bytes exceed it, before allocating anything."""

from __future__ import annotations

import functools

from jaccli.errors import ResourceError
from jaccli.spec import format_bytes

GIB = 1024**3
DEFAULT_CAP = 4 * GIB
JSON_BYTES_PER_NUMBER = 64
"""Python's float object, the nested lists and the text of one number in a JSON document."""


@functools.lru_cache(maxsize=1)
def available_memory() -> int | None:
    """Bytes the kernel reported as available (MemAvailable) when first asked in this process,
    or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_budget() -> int:
    """The smaller of 4 GiB and half the available memory."""
    available = available_memory()
    return DEFAULT_CAP if available is None else min(DEFAULT_CAP, available // 2)


def budget_or_default(budget: int | None) -> int:
    """The budget given with --max-memory, else the default."""
    return default_budget() if budget is None else budget


def require_within_budget(what: str, needed: int, budget: int | None, way_out: str) -> None:
    """Raise ResourceError (exit 3) when `needed` bytes exceed the budget."""
    limit = budget_or_default(budget)
    if needed > limit:
        raise ResourceError(
            f"{what} would need about {format_bytes(needed)}, over the memory budget of "
            f"{format_bytes(limit)}; {way_out}, or raise --max-memory",
            code="memory_budget",
        )
