"""One run: Request → outcome, the same for every command, from the CLI or the Python API.

The budget is held and the inputs read, the Problem built, and then: the plan (--plan), the
result at one point, or the results at every point of --points. No Typer, no Rich, nothing
printed: the outcome (jaccli/runner/outcome.py) carries the result data and its documents, and
the caller shows it. torch is imported when a computing command runs, not with this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from jaccli.arrays import ArrayData
from jaccli.request import Request
from jaccli.runner.commands import COMMANDS
from jaccli.runner.outcome import AtPoints, Computed, Listed, Outcome, Planned, Stored, Streamed
from jaccli.runner.points import Progress, ShowProgress, first_points, run_points
from jaccli.runner.problem import build_problem, hold_budget, read_direction

if TYPE_CHECKING:
    from jaccli.engine import Problem
    from jaccli.result import PlanReport

__all__ = [
    "AtPoints",
    "Computed",
    "Listed",
    "Outcome",
    "Planned",
    "ShowProgress",
    "Stored",
    "Streamed",
    "run",
]


@contextmanager
def _no_progress(description: str, unit: str | None = None) -> Iterator[Progress]:
    yield lambda done, total: None


def run(request: Request, show_progress: ShowProgress = _no_progress) -> Outcome:
    """What the request asks for, computed (or planned); `show_progress(description, unit)`
    shows the progress of a long computation."""
    if request.command == "presets":
        return _presets(request)
    command = COMMANDS[request.command]
    compute = request.compute
    hold_budget(request)  # before anything is read
    direction = None
    if command.direction is not None:
        direction = read_direction(request, *command.direction)
    if request.show.to_store and not compute.plan:
        from jaccli.runner.stored import run_stored

        return run_stored(request, show_progress)
    if compute.points is not None and not compute.plan:
        return run_points(request, command, direction, show_progress)
    first: list[tuple[str, ArrayData]] = []
    count = 0
    if compute.plan and compute.points is not None and request.show.to_store:
        from jaccli.runner.stored import first_stored_points

        first, count = first_stored_points(request)  # the file may not fit in memory
    elif compute.plan and compute.points is not None:
        first, count = first_points(request)
    # a sparse plan traces the function: it needs the values
    shapes_only = compute.plan and not compute.sparse
    problem = build_problem(request, shapes_only=shapes_only, values=first)
    planned = command.planned(problem, request) if command.planned is not None else None
    if compute.plan:
        assert planned is not None
        return _plan(request, problem, planned, count)
    out = request.show.out
    if out is not None and not compute.sparse:  # a sparse file holds the one joint matrix
        from jaccli.render.files import check_array_count

        check_array_count(out, command.out_keys(problem))
    if request.show.json and planned is not None and not compute.sparse:
        from jaccli.engine import require_json_fits

        require_json_fits(planned, request.limits.budget, batched=compute.batched)
    with show_progress(request.command, None) as progress:
        result = command.compute(problem, request, direction, progress)
    hint = _batched_hint(problem) if request.command in ("jacobian", "det") else None
    return Computed(request, result, command.document, hint, command.jacobians_in_document)


def _plan(request: Request, problem: Problem, planned: Problem, count: int) -> Planned:
    """What computing J (H: the gradient's J) would take, and at each of `count` points."""
    from jaccli.engine import Strategy, plan_report

    compute, budget = request.compute, request.limits.budget
    report = plan_report(
        planned, Strategy(compute.strategy), budget=budget, batched=compute.batched
    )
    if compute.sparse:
        report = _sparse_plan(request, problem, report)
    if compute.points is not None:
        from jaccli.engine.many import plan_points

        points = plan_points(problem, request.command, count, budget, sparse=compute.sparse)
        report = replace(report, points=points)
    if request.show.to_store:
        from jaccli.runner.stored import store_plan

        return Planned(request, report, store_plan(request, planned, count or None))
    return Planned(request, report)


def _sparse_plan(request: Request, problem: Problem, report: PlanReport) -> PlanReport:
    """The report with the plan of the compressed passes instead of the dense J's."""
    from jaccli.engine.sparse.run import plan_sparse
    from jaccli.runner.commands import prepared_pattern, sparse_mode

    prepared = prepared_pattern(problem, request)
    sparse = plan_sparse(problem, prepared, sparse_mode(request), request.limits.budget)
    reason = f"{prepared.description()}; {sparse.plan.reason}"
    plan = replace(sparse.plan, reason=reason)
    return replace(report, plan=plan, sparse=replace(sparse, plan=plan), notes=prepared.notes())


def _batched_hint(problem: Problem) -> str | None:
    """What computes only J's blocks along axis 0 of its single input, if anything does."""
    if len(problem.wrt) != 1 or len(problem.output_shapes) != 1:
        return None
    (wrt,) = problem.wrt
    (y_shape,) = problem.output_shapes.values()
    axes = problem.function.input(wrt).separable.axes(problem.inputs[wrt].ndim, len(y_shape))
    return "--batched" if axes[:1] == ((0, 0),) else f"--batched --batch-axis {wrt}=0"


def _presets(request: Request) -> Listed:
    from jaccli.functions import PRESETS
    from jaccli.functions.presets import square_jacobian

    return Listed(request, [(function, square_jacobian(function)) for function in PRESETS.values()])
