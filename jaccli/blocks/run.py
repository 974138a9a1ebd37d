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

# NOTE [the direction of the blocks]
A tall J is cheaper in blocks of columns (one forward pass a column), but forward mode cannot
run every function: one that calls torch.autograd.grad inside finds its inputs carrying
tangents, not a graph. The direction is the store's layout, fixed before the first block, so
under --strategy auto the run first computes J's first column on its own (one JVP and its
guard); if that raises or fails the guard, the blocks are rows (one reverse pass a row, which
such a function supports), and a warning says so. --strategy fwd is taken at its word.

# NOTE [a block is written while the next is computed]
Writing a 64 MiB block (zarr's path through its chunk, then the file into the page cache, at
the disk's pace once the kernel's dirty pages are at their limit) took 0.3 to 1.2 s of a
block's 1.4 to 2.6 s (softmax 50000², shared 2-core machine), much of it waiting on the disk.
So where the budget has room for a block being written beside the next one's working memory
(`overlapped`: the blocks capped at MAX_BLOCK_BYTES under a large budget), this process hands
each computed block to the store's writer thread and computes the next; a block is reported
once its done marker is written, and a stop waits for the block being written. A kill may
then find two blocks in flight, one computed and one being written: neither is marked done,
so a resume computes both. A Dask worker computes one task at a time and writes its own.
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
from jaccli.messages import brief
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
    """Every block in this process, one after another; each block written while the next is
    computed where the budget has room for both (NOTE [a block is written while the next is
    computed])."""

    workers = 1

    def prepare(self, job: Job) -> None:
        pass

    def run(self, job: Job, indices: Sequence[int]) -> Iterator[BlockReport]:
        if not overlapped(job):
            for index in indices:
                yield compute_block(job, index)
            return
        yield from _overlapped_blocks(job, indices)


def overlapped(job: Job) -> bool:
    """Whether the budget leaves room beside one block's working memory for the block before
    it, still being written, and zarr's copy of it."""
    return job.budget is not None and job.plan.peak_bytes + 2 * job.plan.block_bytes <= job.budget


def _overlapped_blocks(job: Job, indices: Sequence[int]) -> Iterator[BlockReport]:
    """Each block computed here and written by the store's writer thread while the next one
    is computed, reported once written (NOTE [a block is written while the next is
    computed])."""
    from concurrent.futures import Future

    from jaccli import memory

    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    problem = problem_of(job)
    store.start_threads()  # before the budget holds, as compute_block: the baseline's
    writer = store.writer()
    held = job.budget is not None and not memory.holding()
    if held:
        memory.hold(job.budget)  # type: ignore[arg-type]
    writing: Future[BlockReport] | None = None
    try:
        for index in indices:
            began = time.monotonic()
            block = _computed(job, problem, index)
            guard = (block.guard.value, block.guard.reference_value, block.guard.tolerance)
            if writing is not None:
                report, writing = writing.result(), None
                yield report
            writing = writer.submit(
                _written_block, job, index, block.values, guard, began, block.method, block.notes
            )
            del block
        if writing is not None:
            report, writing = writing.result(), None
            yield report
    except BaseException as error:
        if memory.out_of_memory(error):
            raise memory.refusal(error) from None
        raise
    finally:
        if writing is not None:  # a stop: the block being written is finished or not at all
            with contextlib.suppress(BaseException):
                writing.result()
        if held:
            memory.release()


def _written_block(
    job: Job,
    index: int,
    values: Any,
    guard: tuple[float, float, float],
    began: float,
    method: str,
    notes: tuple[str, ...],
) -> BlockReport:
    """On the writer thread: a computed block written with its done marker, and its report."""
    from jaccli import memory

    store.write_block(job.store, job.plan, index, values, guard)
    del values
    memory.trim()  # zarr's threads free what they wrote from heaps of their own
    return BlockReport(index, time.monotonic() - began, method, notes)


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
    command: str = "jacobian",
) -> Job:
    """The job of computing `problem`'s J (for `command` hessian, `problem` is the gradient's:
    engine/hessian.py gradient_problem) into the store at `path` in blocks within `budget`
    (each process's) of at most `largest_block` bytes of J, split for `workers`; the options
    are those `problem` was prepared with, so that any process rebuilds it. ResourceError
    (exit 3) when no block fits. Under `kind="auto"`, blocks of columns are used only if
    forward mode runs the function (NOTE [the direction of the blocks])."""
    import os

    def planned(chosen: str) -> BlockPlan:
        return plan_blocks(
            problem,
            budget,
            kind=chosen,
            points=None if points is None else points.count,
            workers=workers,
            largest=largest_block,
        )

    plan = planned(kind)
    notes: tuple[str, ...] = ()
    if kind == "auto" and plan.kind == "columns":
        why = forward_mode_fails(problem)
        if why is not None:
            plan = planned("rows")
            notes = (
                f"forward mode cannot compute {problem.function.name}'s columns of J "
                f"({brief(why, 160)}); stored J in blocks of rows (reverse passes) instead",
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
        command=command,
        notes=notes,
    )


def forward_mode_fails(problem: Problem) -> str | None:
    """Why forward mode cannot compute J's first column (it raised, or failed the guard), or
    None where it can (NOTE [the direction of the blocks])."""
    from jaccli.engine.blocks import joined_columns
    from jaccli.errors import ComputationError

    try:
        joined_columns(problem, 0, 1)
    except ComputationError as error:
        return error.message
    return None


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


def _point_arrays(problem: Problem, function: Problem | None = None) -> dict[str, Any]:
    """`inputs/NAME` and `outputs/NAME`: the point J is computed at, and f there (the
    `function`'s outputs where `problem` is its gradient's)."""
    from jaccli.engine.evaluate import evaluate, to_numpy

    arrays = {f"inputs/{n}": to_numpy(t) for n, t in problem.inputs.items()}
    outputs = evaluate((function or problem).function, problem.inputs)
    arrays.update({f"outputs/{n}": to_numpy(y.detach()) for n, y in outputs.items()})
    return arrays


def _kept_layout(job: Job, problem: Problem, stored: BlockPlan) -> tuple[BlockPlan, str]:
    """A resumed store's blocks, which the run keeps (they are its chunks), with their working
    memory under this run's budget, and a note saying so; ResourceError (exit 3) where one of
    them would not fit this run's budget (NOTE [what a store belongs to] in store.py)."""
    from dataclasses import replace

    from jaccli.messages import format_bytes

    budget = job.budget if job.budget is not None else stored.budget
    if stored.kind == job.plan.kind:
        alone = job.plan
    else:
        alone = plan_blocks(problem, budget, kind=stored.kind, largest=1 << 62)
    resident = problem.resident_bytes
    per_line = (alone.peak_bytes - resident) / max(alone.size, 1)
    peak = resident + math.ceil(stored.size * per_line)
    unit = stored.kind if stored.size != 1 else stored.kind[:-1]
    if peak > budget:
        raise ResourceError(
            f"--resume: {job.store} is laid out in blocks of {stored.size} {unit}, which need "
            f"about {format_bytes(peak)}, over the memory budget of {format_bytes(budget)}; "
            f"resume with --max-memory {math.ceil(peak / 2**20)}MiB or more",
            code="memory_budget",
        )
    mine = job.plan.kind if job.plan.size != 1 else job.plan.kind[:-1]
    note = (
        f"--resume keeps the store's blocks of {stored.size} {unit} (about "
        f"{format_bytes(peak)} of working memory each); this run alone would have used blocks "
        f"of {job.plan.size} {mine}"
    )
    return replace(stored, peak_bytes=peak, budget=budget), note


def _changed_note(count: int) -> str:
    """The warning of a resume that found blocks changed since they were written."""
    blocks, were = ("block", "it was") if count == 1 else ("blocks", "they were")
    return (
        f"{count} {blocks} marked done had changed since {were} written (their values no "
        "longer match their digest: edited or damaged); computed again"
    )


def _restored_note(names: Sequence[str]) -> str:
    """The warning of a resume that found the store's description changed (store.py NOTE [a
    description changed since it was written])."""
    return (
        f"the store's {', '.join(names)} had changed since written (edited or damaged); "
        "written again as this run describes it"
    )


def run_job(
    job: Job,
    problem: Problem,
    *,
    executor: Executor | None = None,
    resume: bool = False,
    force: bool = False,
    on_progress: OnProgress | None = None,
    function: Problem | None = None,
) -> Outcome:
    """Every block of `job` not yet done, computed by `executor` (this process by default)
    into the store, which is complete when this returns (NOTE [blocks, tasks and the store]);
    KeyboardInterrupt leaves it to be resumed. `function`: for a Hessian, the problem whose
    gradient `problem` is (its outputs are stored beside H)."""
    from dataclasses import replace

    began = time.monotonic()
    executor = executor or Sequential()
    arrays = _point_arrays(problem, function) if job.points is None else {}
    plan, missing, changed, restored = store.start(
        job.store, job.plan, header(job, problem), resume=resume, force=force, arrays=arrays
    )
    try:  # the store is locked from here: every way out lets it go
        if changed:
            job = replace(job, notes=(*job.notes, _changed_note(changed)))
        if restored:
            job = replace(job, notes=(*job.notes, _restored_note(restored)))
        if (plan.kind, plan.size) != (job.plan.kind, job.plan.size):
            plan, kept_layout = _kept_layout(job, problem, plan)
            job = replace(job, notes=(*job.notes, kept_layout))
        job = replace(job, plan=plan)
        remember(job, problem)
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
        tuple(dict.fromkeys((*job.notes, *notes))),
    )
