"""The blocks J is computed and stored in: rows, columns or points, each sized so that one
block's working memory fits the memory budget.

# NOTE [the size of a block]
A block of rows holds its part of J; while it is computed, a quarter of its rows at a time
(CHUNKS_A_BLOCK in engine/blocks.py) go through vmap with their basis, VJPs and the function's
backward intermediates (NOTE [memory] in engine/jacobian.py; fewer when the held budget says
so: NOTE [chunks from a measured first chunk]), and zarr's encoding takes one more copy.
Measured (softmax's 6000² float32 J under budgets of 32 and 64 MiB, tests/test_blocks.py):
the peak above a plain run's is 4 to 6 times a block's bytes, and moves by a block from one run
to the next (freed pages reused or not); ROW_MULTIPLE leaves room above that.
A block of columns holds, per column, its JVPs, their transpose, the stored copy and the
encoding (COLUMN_MULTIPLE) and one basis vector of the inputs. A block of points is sized by
the engine of many points (plan_points) for its vmapped chunks. Within that, a block is at
most MAX_BLOCK_BYTES of J (what a crash can lose, and a comfortable zarr chunk), and when W
workers share the work there are at least TASKS_PER_WORKER blocks for each, so no worker waits
while another finishes a large block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jaccli.messages import format_bytes

if TYPE_CHECKING:
    from jaccli.engine.problem import Problem

KINDS = ("rows", "columns", "points")
ROW_MULTIPLE = 8
COLUMN_MULTIPLE = 4
MAX_BLOCK_BYTES = 64 * 1024**2
TASKS_PER_WORKER = 4


@dataclass(frozen=True)
class BlockPlan:
    """How J is split: `kind` blocks of `size` rows, columns or points of the stored array
    (`shape`: rows × columns of J as a matrix, or points × rows × columns)."""

    kind: str
    shape: tuple[int, ...]
    size: int
    itemsize: int
    peak_bytes: int
    """The estimated working memory of one block, the function's own included."""
    budget: int
    refused: str | None = None

    @property
    def axis_length(self) -> int:
        """Rows, columns or points in all."""
        return self.shape[1] if self.kind == "columns" else self.shape[0]

    @property
    def count(self) -> int:
        """How many blocks."""
        return math.ceil(self.axis_length / self.size) if self.axis_length else 0

    def bounds(self, index: int) -> tuple[int, int]:
        """The rows, columns or points (start, stop) of block `index`."""
        start = index * self.size
        return start, min(self.axis_length, start + self.size)

    def region(self, index: int) -> tuple[slice, ...]:
        """Where block `index` lies in the stored array."""
        start, stop = self.bounds(index)
        if self.kind == "columns":
            return (slice(None), slice(start, stop))
        return (slice(start, stop), *(slice(None) for _ in self.shape[1:]))

    @property
    def chunks(self) -> tuple[int, ...]:
        """The stored array's chunk shape: one chunk a block."""
        if self.kind == "columns":
            return (self.shape[0], self.size)
        return (self.size, *self.shape[1:])

    @property
    def block_bytes(self) -> int:
        """J's bytes in one full block."""
        return math.prod(self.chunks) * self.itemsize

    @property
    def store_bytes(self) -> int:
        """J's bytes on disk before compression."""
        return math.prod(self.shape) * self.itemsize

    def per_worker(self, workers: int) -> int:
        """Blocks each of `workers` computes, at most."""
        return math.ceil(self.count / max(1, workers))

    def describe(self) -> str:
        """`150 blocks of 335 rows (64.0 MiB of J each, about 260 MiB working memory)`."""
        unit = self.kind if self.size != 1 else self.kind[:-1]
        return (
            f"{self.count} block{'s' if self.count != 1 else ''} of {self.size} {unit} "
            f"({format_bytes(self.block_bytes)} of J each, about "
            f"{format_bytes(self.peak_bytes)} of working memory)"
        )


@dataclass(frozen=True)
class StorePlan:
    """For --plan with --out NAME.zarr: the blocks of J, and the processes they are shared by."""

    blocks: BlockPlan
    workers: int | None
    """Processes computing blocks: 1 (this one), N of --cluster local:N, or None for a
    scheduler's workers (counted when the run connects)."""
    cluster: str | None
    """--cluster as given, or None."""
    columns_tried: bool = False
    """Columns chosen under --strategy auto: the run keeps them only if forward mode computes
    J's first column (NOTE [the direction of the blocks] in run.py), else rows."""


def plan_blocks(
    problem: Problem,
    budget: int,
    *,
    kind: str = "auto",
    points: int | None = None,
    workers: int = 1,
    largest: int = MAX_BLOCK_BYTES,
) -> BlockPlan:
    """The blocks that keep one block within `budget` (NOTE [the size of a block]): of points
    when `points` is given, else of rows where J has no more rows than columns (one reverse
    pass a row), else of columns; `kind` may choose rows or columns."""
    n_out, n_in = problem.output_count, problem.input_count
    itemsize = problem.torch_dtype.itemsize
    resident = problem.resident_bytes
    available = budget - resident
    if points is not None:
        return _plan_points(problem, budget, points, workers, largest)
    if kind == "auto":
        kind = "rows" if n_out <= n_in else "columns"
    if kind == "rows":
        line, length, per_line = n_in * itemsize, n_out, ROW_MULTIPLE * n_in * itemsize
        what = f"one row of J ({n_in} numbers)"
    else:
        line, length = n_out * itemsize, n_in
        per_line = (COLUMN_MULTIPLE * n_out + n_in) * itemsize
        what = f"one column of J ({n_out} numbers, and a basis vector of {n_in})"
    size = _size(length, available // max(per_line, 1), largest // max(line, 1), workers)
    shape = (n_out, n_in)
    peak = resident + size * per_line
    refused = None
    if peak > budget:
        refused = (
            f"{what} would need about {format_bytes(resident + per_line)}, over the memory "
            f"budget of {format_bytes(budget)}; raise --max-memory"
        )
    return BlockPlan(kind, shape, size, itemsize, peak, budget, refused)


def _plan_points(
    problem: Problem, budget: int, count: int, workers: int, largest: int
) -> BlockPlan:
    from jaccli.engine.many import plan_points

    n_out, n_in = problem.output_count, problem.input_count
    itemsize = problem.torch_dtype.itemsize
    chunked = plan_points(problem, "jacobian", count, budget)
    point_bytes = n_out * n_in * itemsize
    size = _size(count, chunked.chunk_size, largest // max(point_bytes, 1), workers)
    peak = problem.resident_bytes + size * (chunked.peak_bytes - problem.resident_bytes) // max(
        chunked.chunk_size, 1
    )
    return BlockPlan("points", (count, n_out, n_in), size, itemsize, peak, budget, chunked.refused)


def _size(length: int, by_memory: int, by_largest: int, workers: int) -> int:
    """Lines a block: what memory allows, at most `by_largest`, and at most an even share of
    TASKS_PER_WORKER blocks a worker when several share the work."""
    size = max(1, min(length, by_memory, by_largest))
    if workers > 1:
        size = min(size, max(1, math.ceil(length / (TASKS_PER_WORKER * workers))))
    return size
