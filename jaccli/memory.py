"""The memory budget as the kernel enforces it: what the machine has, the process's own
accounting, and a limit on its data segment so that what an estimate misses is refused.

# NOTE [the budget holds for real]
The estimates of engine/guard.py and plan_jacobian compare the budget with a model of what torch
allocates; a model cannot see what it does not model (the vmapped VJP of a stencil allocates six
rows of n per output row, not two; json.loads makes a 32-byte float of every 5-byte number). So
once torch is loaded and its threads started, `hold` sets RLIMIT_DATA to the data segment now
plus the budget: from then on every private writable mapping (malloc, torch's CPU allocator,
numpy, Python objects, thread stacks) counts, and the allocation that would pass the budget
fails inside the process instead of swapping. Measured (torch 2.13, glibc): torch raises
RuntimeError "DefaultCPUAllocator: can't allocate memory", numpy and Python raise MemoryError;
`out_of_memory` recognizes all three, every place that catches errors lets them through, and
the CLI reports one line with exit 3 after `release` has lifted the limit (the traceback still
holds the big tensors until it is gone). RLIMIT_DATA counts address space, not resident pages,
so it errs on the side of refusing; resident memory above the baseline stays under the budget.
The estimates stay: they refuse in milliseconds what cannot fit, and size chunks before any is
computed. The limit is lifted when the command ends (in-process callers such as tests keep
theirs).
"""

from __future__ import annotations

import contextlib
import functools
import resource
from collections.abc import Callable

from jaccli.errors import ResourceError
from jaccli.messages import format_bytes

OUT_OF_MEMORY_MARKERS = ("can't allocate memory", "not enough memory", "out of memory", "bad_alloc")
"""Words of torch's allocator failures (RuntimeError, torch.OutOfMemoryError; std::bad_alloc
from its C++ code)."""

DEFAULT_CAP = 4 * 1024**3
"""The default budget at most: 4 GiB (less when half the available memory is less)."""
CODE_RESERVE = 32 * 1024**2
"""Kept back from the data limit (an eighth of a small budget): pages of code and file mappings
a run touches later count in its resident memory, not in its data segment."""


class _Held:
    """The limit this process set, and the one it replaced."""

    budget: int | None = None
    previous: tuple[int, int] | None = None


def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status in bytes (VmData, VmRSS, VmHWM), None where unread."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_bytes() -> int | None:
    """The process's resident memory now (VmRSS)."""
    return _status_bytes("VmRSS")


def reset_peak() -> bool:
    """Start the kernel's peak-resident count (VmHWM) afresh from now; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_resident_bytes() -> int | None:
    """The process's peak resident memory since start or `reset_peak` (VmHWM)."""
    return _status_bytes("VmHWM")


def _meminfo() -> dict[str, int]:
    fields = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return fields


def _cgroup_limit() -> int | None:
    """The cgroup's memory.max (v2) or limit_in_bytes (v1), None when unlimited or unread."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as limit:
                text = limit.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def machine_memory() -> tuple[int | None, int | None]:
    """(memory the machine or its cgroup has at all, memory available now), None where unread."""
    info = _meminfo()
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    cgroup = _cgroup_limit()
    if cgroup is not None:
        total = cgroup if total is None else min(total, cgroup)
        available = cgroup if available is None else min(available, cgroup)
    return total, available


@functools.lru_cache(maxsize=1)
def available_memory() -> int | None:
    """Bytes the kernel reported as available (MemAvailable) when first asked in this process,
    or None where it cannot be read."""
    return _meminfo().get("MemAvailable")


def default_budget() -> int:
    """The smaller of 4 GiB and half the available memory."""
    available = available_memory()
    return DEFAULT_CAP if available is None else min(DEFAULT_CAP, available // 2)


def budget_or_default(budget: int | None) -> int:
    """The budget given with --max-memory, else the default."""
    return default_budget() if budget is None else budget


def fit_to_machine(budget: int) -> tuple[int, str | None]:
    """The budget a run can hold, and the warning when it is less than asked: a budget above
    what the machine has could only end in swapping or the allocator's crash.

    Above the machine's memory (or its cgroup's) it is refused (exit 3); above the memory
    available now it is reduced to that, with a warning."""
    total, available = machine_memory()
    if total is not None and budget > total:
        suggestion = format_bytes(available or total).replace(" ", "").replace(".0", "")
        raise ResourceError(
            f"--max-memory {format_bytes(budget)} is more than this machine has "
            f"({format_bytes(total)}); use --max-memory {suggestion} or less",
            code="memory_budget",
        )
    if available is not None and budget > available:
        return available, (
            f"--max-memory {format_bytes(budget)} is more than the {format_bytes(available)} "
            f"available now; the budget is {format_bytes(available)}"
        )
    return budget, None


def trim() -> None:
    """Hand the heap's free memory back to the kernel (malloc_trim), so the held limit counts
    only what is in use after a computation's temporaries are gone."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def hold(budget: int) -> None:
    """From now until `release`, allocations past `budget` bytes more than the process holds
    now fail inside the process (NOTE [the budget holds for real]); torch is loaded and its
    threads started first, so neither counts. Holding again keeps the first limit."""
    if _Held.previous is not None:
        return
    import torch

    torch.ones(1 << 16).mul_(2)  # starts the intra-op threads (their stacks are data too)
    data = _status_bytes("VmData")
    if data is None:
        return
    try:
        previous = resource.getrlimit(resource.RLIMIT_DATA)
        hard = previous[1]
        limit = data + budget - min(budget // 8, CODE_RESERVE)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (OSError, ValueError):  # no such limit here: the estimates still guard
        return
    _Held.budget, _Held.previous = budget, previous


def headroom_bytes() -> int | None:
    """What the held limit still leaves to allocate (None when nothing is held)."""
    if _Held.previous is None:
        return None
    data = _status_bytes("VmData")
    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    return None if data is None else max(0, limit - data)


def outside_budget(load: Callable[[], object]) -> None:
    """Run `load` (torch's lazy import of its vectorizing machinery, about 100 MB of code and
    tables) with the held limit lifted, then raise the limit by what it added: the code a
    method needs is part of a plain run's baseline, not of the computation's work."""
    if _Held.previous is None:
        load()
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    before = _status_bytes("VmData") or 0
    resource.setrlimit(resource.RLIMIT_DATA, _Held.previous)
    try:
        load()
    finally:
        added = max(0, (_status_bytes("VmData") or before) - before)
        resource.setrlimit(resource.RLIMIT_DATA, (soft + added, hard))


def release() -> None:
    """Lift the limit `hold` set (a no-op when none is held)."""
    if _Held.previous is None:
        return
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_DATA, _Held.previous)
    _Held.budget = _Held.previous = None


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed: Python's or numpy's MemoryError, or torch's
    allocator refusing (a RuntimeError naming it)."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":
        return True
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        return "alloc" in text and any(marker in text for marker in OUT_OF_MEMORY_MARKERS)
    return False


def refusal(error: BaseException) -> ResourceError:
    """The one-line refusal (exit 3) for an allocation that failed; lifts the held limit so the
    report itself can be made."""
    budget = _Held.budget
    release()
    if budget is None:
        budget = default_budget()
    return ResourceError(
        f"ran out of memory: the computation needs more than the memory budget of "
        f"{format_bytes(budget)}; raise --max-memory, use smaller shapes, or compute less: a "
        "product (vjp, jvp, hvp) instead of the whole J or H, or --batched where J has blocks",
        code="memory_budget",
    )


def raise_if_out_of_memory(error: BaseException) -> None:
    """Re-raise an allocation failure as the refusal (exit 3), for places that catch errors
    to try something else or to blame the user's code."""
    if out_of_memory(error):
        raise refusal(error) from error


def holding() -> bool:
    """Whether this process holds a limit now."""
    return _Held.previous is not None
