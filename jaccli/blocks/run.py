"""A run of blocks end to end: plan, store, compute every block not yet done (in this process
or on Dask), report progress, and say how many blocks were computed and how many kept.

# NOTE [blocks, tasks and the store]
J is split into blocks (plan.py: rows, columns or points, each within the memory budget), and
each block is one chunk of the zarr store (store.py) and one task: `compute_block(job, index)`
rebuilds the Problem from the Job once per process (job.py; a user's file travels as its
bytes), computes the block with the engine's own methods and guards (engine/blocks.py),
writes its chunk, its guard row and then its done marker, and returns a few numbers, never the
block: whichever process computes a block writes it, and the process that started the run
never holds J. The executor only decides where tasks run: `Sequential` here, one after
another; `cluster.DaskExecutor` on a Dask LocalCluster or scheduler, where a worker that dies
has its tasks run again elsewhere by the scheduler. A run stopped at any moment (Ctrl-C,
SIGKILL, a power cut) keeps every block marked done; a resumed run computes the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from jaccli.blocks import store
from jaccli.blocks.inputs import PointsSource
from jaccli.blocks.job import FunctionSource, Job, forget, problem_of, remember
from jaccli.blocks.plan import MAX_BLOCK_BYTES, BlockPlan, plan_blocks
from jaccli.errors import ResourceError
from jaccli.spec import ArrayData, Shape

if TYPE_CHECKING:
    from jaccli.engine.blocks import Block
    from jaccli.engine.problem import Problem


@dataclass(frozen=True)
class BlockReport:
    """What a task hands back: which block, how long it took, how it was computed."""

    index: int
    seconds: float
    method: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    """Blocks done so far of those this run computes, and the time they took."""

    done: int
    total: int
    elapsed: float

    @property
    def rate(self) -> float | None:
        """Blocks a second so far."""
        return self.done / self.elapsed if self.done and self.elapsed > 0 else None

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate so far."""
        rate = self.rate
        return (self.total - self.done) / rate if rate else None


OnProgress = Callable[[Progress], None]


@dataclass(frozen=True)
class Outcome:
    """A finished run: the store, its blocks, how many this run computed and how many it kept
    from before (a resumed run), and the notes of the blocks (each once)."""

    path: str
    plan: BlockPlan
    computed: int
    kept: int
    seconds: float
    methods: tuple[str, ...]
    notes: tuple[str, ...]


class Executor(Protocol):
    """Where the tasks run."""

    workers: int

    def prepare(self, job: Job) -> None:
        """Refuse, before anything is computed, a run the executor cannot do (a store its
        workers cannot reach)."""

    def run(self, job: Job, indices: Sequence[int]) -> Iterator[BlockReport]:
        """Each block's report as it finishes, in any order; closing it early stops the
        blocks still to run."""


class Sequential:
    """Every block in this process, one after another."""

    workers = 1

    def prepare(self, job: Job) -> None:
        pass

    def run(self, job: Job, indices: Sequence[int]) -> Iterator[BlockReport]:
        for index in indices:
            yield compute_block(job, index)


def compute_block(job: Job, index: int) -> BlockReport:
    """Block `index` of the job computed, verified and written with its done marker (NOTE
    [blocks, tasks and the store]); in any process."""
    from jaccli import memory

    began = time.monotonic()
    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    problem = problem_of(job)
    held = job.budget is not None and not memory.holding()
    if held:
        store.start_threads()  # before the budget holds: they are the baseline's
        memory.hold(job.budget)  # type: ignore[arg-type]
    try:
        block = _computed(job, problem, index)
        guard = (block.guard.value, block.guard.reference_value, block.guard.tolerance)
        method, notes = block.method, block.notes
        store.write_block(job.store, job.plan, index, block.values, guard)  # its encoding too
        del block
        memory.trim()  # zarr's threads free what they encoded into heaps of their own
    except BaseException as error:
        if memory.out_of_memory(error):
            raise memory.refusal(error) from None
        raise
    finally:
        if held:
            memory.release()
    return BlockReport(index, time.monotonic() - began, method, notes)


def _computed(job: Job, problem: Problem, index: int) -> Block:
    from jaccli.engine.blocks import joined_at_points, joined_columns, joined_rows

    start, stop = job.plan.bounds(index)
    if job.plan.kind == "rows":
        return joined_rows(problem, start, stop)
    if job.plan.kind == "columns":
        return joined_columns(problem, start, stop)
    import torch

    from jaccli.blocks.inputs import read_points

    assert job.points is not None
    values = torch.from_numpy(read_points(job.points, start, stop)).to(problem.torch_dtype)
    return joined_at_points(problem, {job.points.name: values}, start, job.budget)


def make_job(
    problem: Problem,
    function: FunctionSource,
    path: str,
    *,
    budget: int,
    kind: str = "auto",
    points: PointsSource | None = None,
    workers: int = 1,
    threads: int | None = None,
    largest_block: int = MAX_BLOCK_BYTES,
    shape_options: Sequence[tuple[str | None, Shape]] = (),
    value_options: Sequence[tuple[str | None, ArrayData]] = (),
    wrt: Sequence[str] = (),
    seed: int = 0,
    batch_axes: Sequence[tuple[str | None, int]] = (),
    output: str | None = None,
) -> Job:
    """The job of computing `problem`'s J into the store at `path` in blocks within `budget`
    (each process's) of at most `largest_block` bytes of J, split for `workers`; the options
    are those `problem` was prepared with, so that any process rebuilds it. ResourceError
    (exit 3) when no block fits."""
    import os

    plan = plan_blocks(
        problem,
        budget,
        kind=kind,
        points=None if points is None else points.count,
        workers=workers,
        largest=largest_block,
    )
    if plan.refused is not None:
        raise ResourceError(plan.refused, code="memory_budget")
    return Job(
        key=uuid.uuid4().hex,
        function=function,
        plan=plan,
        store=os.path.abspath(path),
        shape_options=tuple(shape_options),
        value_options=tuple(value_options),
        wrt=tuple(wrt),
        seed=seed,
        dtype=problem.dtype,
        budget=budget,
        batch_axes=tuple(batch_axes),
        output=output,
        points=points,
        threads=threads,
    )


def header(job: Job, problem: Problem) -> dict[str, Any]:
    """What the store says about the run (NOTE [the store's layout]): the JSON document's
    description of it, where each output and input lies in J's matrix, and the digests that
    tie a store to its run (NOTE [what a store belongs to])."""
    from jaccli.render.document import SCHEMA_VERSION

    rows, columns, start = [], [], 0
    for name, shape in problem.output_shapes.items():
        stop = start + math.prod(shape)
        rows.append({"output": name, "shape": list(shape), "start": start, "stop": stop})
        start = stop
    start = 0
    for name in problem.wrt:
        shape = tuple(problem.inputs[name].shape)
        stop = start + math.prod(shape)
        columns.append({"input": name, "shape": list(shape), "start": start, "stop": stop})
        start = stop
    varying = job.points.name if job.points is not None else None
    return {
        "schema_version": SCHEMA_VERSION,
        "command": job.command,
        "function": {
            "name": problem.function.name,
            "formula": problem.function.formula,
            "sha256": job.function.digest,
        },
        "dtype": problem.dtype,
        "wrt": list(problem.wrt),
        "output": job.output,
        "inputs": {
            name: {
                "shape": list(tensor.shape),
                "differentiated": name in problem.wrt,
                "sha256": None if name == varying else _digest(tensor),
            }
            for name, tensor in problem.inputs.items()
        },
        "outputs": {name: {"shape": list(shape)} for name, shape in problem.output_shapes.items()},
        "points": None
        if job.points is None
        else {
            "input": job.points.name,
            "count": job.points.count,
            "shape": list(job.points.point_shape),
            "sha256": job.points.digest,
        },
        "points_file": None if job.points is None else job.points.path,
        "matrix": {"rows": rows, "columns": columns},
        "guard": {
            "array": "guard",
            "columns": ["value", "reference", "tolerance"],
            "reference": "uᵀ(J v) of each block against (uᵀJ)·v by one reverse pass, u over the "
            "block's rows and v over its columns; for a user's function also the function's "
            "own central differences"
            if job.points is None
            else "the guard of many points (each point's J against a reverse pass)",
        },
    }


def _digest(tensor: Any) -> str:
    array = tensor.detach().contiguous().numpy()
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


def _point_arrays(problem: Problem) -> dict[str, Any]:
    """`inputs/NAME` and `outputs/NAME`: the point J is computed at, and f there."""
    from jaccli.engine.evaluate import evaluate, to_numpy

    arrays = {f"inputs/{n}": to_numpy(t) for n, t in problem.inputs.items()}
    outputs = evaluate(problem.function, problem.inputs)
    arrays.update({f"outputs/{n}": to_numpy(y.detach()) for n, y in outputs.items()})
    return arrays


def run_job(
    job: Job,
    problem: Problem,
    *,
    executor: Executor | None = None,
    resume: bool = False,
    force: bool = False,
    on_progress: OnProgress | None = None,
) -> Outcome:
    """Every block of `job` not yet done, computed by `executor` (this process by default)
    into the store, which is complete when this returns (NOTE [blocks, tasks and the store]);
    KeyboardInterrupt leaves it to be resumed."""
    from dataclasses import replace

    began = time.monotonic()
    executor = executor or Sequential()
    arrays = _point_arrays(problem) if job.points is None else {}
    plan, missing = store.start(
        job.store, job.plan, header(job, problem), resume=resume, force=force, arrays=arrays
    )
    job = replace(job, plan=plan)
    remember(job, problem)
    try:
        executor.prepare(job)
        methods: list[str] = []
        notes: list[str] = []
        reports = executor.run(job, missing)
        with contextlib.closing(reports):  # type: ignore[type-var]  # a stop cancels its tasks
            for done, report in enumerate(reports, start=1):
                if report.method not in methods:
                    methods.append(report.method)
                notes.extend(n for n in report.notes if n not in notes)
                if on_progress is not None:
                    on_progress(Progress(done, len(missing), time.monotonic() - began))
        store.finish(job.store)
    finally:
        forget(job)
        store.release(job.store)
    return Outcome(
        job.store,
        plan,
        len(missing),
        plan.count - len(missing),
        time.monotonic() - began,
        tuple(methods),
        tuple(notes),
    )
