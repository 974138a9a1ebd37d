"""--out NAME.zarr: J, or J at every point of --points, computed block by block into a zarr
store (jaccli/blocks), in this process or as tasks on the Dask cluster of --cluster; the
process that runs this never holds J (NOTE [blocks, tasks and the store] in blocks/run.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from jaccli import memory, spec
from jaccli.arrays import ArrayData
from jaccli.errors import UsageError
from jaccli.request import Request
from jaccli.runner.outcome import Stored
from jaccli.runner.points import ShowProgress
from jaccli.runner.problem import build_problem

if TYPE_CHECKING:
    from jaccli.blocks.inputs import PointsSource
    from jaccli.blocks.job import FunctionSource, Job
    from jaccli.blocks.plan import StorePlan
    from jaccli.blocks.run import Executor
    from jaccli.engine import Problem

BLOCK_KINDS = {"auto": "auto", "rev": "rows", "fwd": "columns"}
"""--strategy as the blocks J is split into: rows (one reverse pass each) or columns (one
forward pass each); `loop` is refused beside a store (options.py)."""


def _points(request: Request) -> PointsSource | None:
    """The one --points file, to be read a block at a time (a .zarr array or a .npy file)."""
    if request.compute.points is None:
        return None
    from jaccli.blocks.inputs import points_source

    return points_source(*_points_file(request))


def _points_file(request: Request) -> tuple[str, str]:
    """The name and the file of the one --points (UsageError for the API's arrays)."""
    assert request.compute.points is not None
    ((name, given),) = request.compute.points.sources
    if not isinstance(given, str):
        raise UsageError(
            "points= with out=NAME.zarr are read a block at a time from a file: give "
            f"points={{{name!r}: '@points.zarr'}} (or a .npy file)"
        )
    return name, given


def first_stored_points(request: Request) -> tuple[list[tuple[str, ArrayData]], int]:
    """For --plan with a store: the first point of the one --points file and how many there
    are, from its metadata and first point only (the file may be larger than memory)."""
    from jaccli.blocks.inputs import peek_points

    name, given = _points_file(request)
    count, first = peek_points(name, given)
    return [(name, ArrayData(first.shape, first, from_file=True))], count


def _values(request: Request) -> tuple[tuple[str | None, ArrayData], ...]:
    """--value read now, once: the job carries the arrays to every worker."""
    limit = request.limits.value_limit
    return tuple(
        (name, given if isinstance(given, ArrayData) else spec.read_value(given, limit))
        for name, given in request.inputs.values
    )


def _function_source(
    request: Request, given_names: list[str], points: PointsSource | None
) -> FunctionSource:
    """How every process rebuilds the function; a Python callable lives in this process only."""
    from jaccli.blocks.job import FunctionSource

    chosen = request.function
    if chosen.callable is None:
        names = [*given_names, *([points.name] if points is not None else [])]
        return FunctionSource.of(chosen.name, chosen.expression, names, request.limits.value_limit)
    if request.compute.cluster is not None:
        raise UsageError(
            "cluster= runs the function on Dask workers, which cannot receive a Python "
            "callable: give a preset, an expression or 'path/to/file.py:func'"
        )
    label = f"{chosen.callable.__module__}.{chosen.callable.__qualname__}"
    return FunctionSource(name=label)


@contextlib.contextmanager
def _executor(request: Request) -> Iterator[Executor]:
    """This process, or the Dask cluster --cluster names (started or connected, then let go)."""
    if request.compute.cluster is None:
        from jaccli.blocks.run import Sequential

        yield Sequential()
        return
    from jaccli.blocks.cluster import DaskExecutor

    with DaskExecutor(request.compute.cluster) as executor:
        yield executor


def prepared_job(request: Request, workers: int) -> tuple[Job, Problem, Problem]:
    """The job of computing the request's J (H: the gradient's J) into its store, split for
    `workers`, the Problem whose J that is and the function's own, at the first point
    (ResourceError when no block fits the budget)."""
    from jaccli.blocks.inputs import read_points
    from jaccli.blocks.run import make_job

    out = request.show.out
    assert out is not None
    points = _points(request)
    values = _values(request)
    first: list[tuple[str, ArrayData]] = []
    if points is not None:
        value = read_points(points, 0, 1)[0]
        first = [(points.name, ArrayData(value.shape, value, from_file=True))]
    inputs = request.inputs
    given_names = [name or "x" for name, _ in (*inputs.shapes, *values)]
    source = _function_source(request, given_names, points)
    function = build_problem(replace(request, inputs=replace(inputs, values=values)), values=first)
    problem = function
    if request.command == "hessian":
        from jaccli.engine.hessian import gradient_problem

        problem = gradient_problem(function)
    job = make_job(
        problem,
        source,
        str(out),
        budget=memory.budget_or_default(request.limits.budget),
        kind=BLOCK_KINDS[request.compute.strategy],
        points=points,
        workers=workers,
        shape_options=inputs.shapes,
        value_options=values,
        wrt=inputs.wrt,
        seed=inputs.seed,
        batch_axes=inputs.batch_axes,
        output=inputs.output,
        command=request.command,
    )
    return job, problem, function


def store_plan(request: Request, problem: Problem, points: int | None) -> StorePlan:
    """For --plan: the blocks J would be stored in, and the processes sharing them (a
    scheduler's workers are counted only when a run connects)."""
    import os

    from jaccli.blocks.plan import StorePlan, plan_blocks

    cluster = request.compute.cluster
    workers: int | None = 1
    if cluster is not None:
        workers = None if cluster.address is not None else cluster.workers or os.cpu_count() or 1
    blocks = plan_blocks(
        problem,
        memory.budget_or_default(request.limits.budget),
        kind=BLOCK_KINDS[request.compute.strategy],
        points=points,
        workers=workers or 1,
    )
    text = None if cluster is None else cluster.address or f"local:{workers}"
    tried = blocks.kind == "columns" and request.compute.strategy == "auto" and points is None
    return StorePlan(blocks, workers, text, columns_tried=tried)


def run_stored(request: Request, show_progress: ShowProgress) -> Stored:
    """J computed block by block into the --out store (completing it with --resume); the
    progress shown in blocks."""
    from jaccli.blocks.run import run_job

    # Each block holds the budget while it is computed, in whichever process computes it
    # (blocks/run.py compute_block), as a Dask worker does: the whole run held at once would
    # count the store's threads and what zarr and the engine load against the first block.
    memory.release()
    with _executor(request) as executor:
        job, problem, function = prepared_job(request, executor.workers)
        with show_progress(request.command, "blocks") as progress:

            def on_progress(done: Any) -> None:
                progress(done.done, done.total)

            outcome = run_job(
                job,
                problem,
                executor=executor,
                resume=request.compute.resume,
                force=request.show.force,
                on_progress=on_progress,
                function=function,
            )
    return Stored(request, outcome, executor.workers, problem.notes)
