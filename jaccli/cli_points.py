"""`--points`, `--jsonl` and `--keep-going` for every computing command (NOTE [many points] in
engine/many.py): read the points, build the problem at the first, run the engine over all, and
print one stacked document, a JSON line per point as each chunk finishes, or the first point's
tables.

Part of the CLI: it parses and prints, and calls the engine for the math.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from rich.console import RenderableType

from jaccli import memory
from jaccli.errors import ComputationError, ExitCode, JaccliError, UsageError
from jaccli.output import emit_json, emit_rich, report_error, write, write_result
from jaccli.points import STREAM, Batch, PointError, PointStream, load_points, parse_points_option
from jaccli.spec import (
    ArrayData,
    Direction,
    format_shape,
    require_in_range,
    rounds_in_float32,
)

if TYPE_CHECKING:
    import torch

    from jaccli.engine import Problem
    from jaccli.engine.many import PointOutcome
    from jaccli.result import Result


@dataclass(frozen=True)
class PointsRequest:
    """What --points, --jsonl and --keep-going ask for."""

    points: Sequence[str]
    jsonl: bool
    keep_going: bool


@dataclass(frozen=True)
class Printing:
    """How one command's result is printed: its document and its tables."""

    document: Callable[[Any], dict[str, Any]]
    renderable: Callable[[Any], RenderableType]
    as_json: bool
    full: bool
    out: Path | None
    force: bool


@dataclass(frozen=True)
class DirectionRequest:
    """A vjp's cotangent, a jvp's tangent or an hvp's vector, which every point shares."""

    given: Direction
    option: str
    part: str
    """`output` (a cotangent) or `input`."""


def check_points_request(request: PointsRequest, as_json: bool) -> None:
    """Refuse combinations that cannot mean anything, before any work."""
    if request.keep_going and not request.jsonl:
        raise UsageError(
            "--keep-going goes on past a failed point of a --jsonl stream; add --jsonl"
        )
    if request.jsonl and not request.points:
        raise UsageError("--jsonl prints a line per point; give --points NAME=@FILE or NAME=@-")
    if request.jsonl and as_json:
        raise UsageError("--jsonl and --json are two ways of printing; choose one")


def points_to_plan(
    request: PointsRequest, size_limit: int
) -> tuple[list[tuple[str, ArrayData]], int]:
    """For --plan: the first point of each --points file, and how many points there are."""
    sources = [parse_points_option(text) for text in request.points]
    if any(source == STREAM for _, source in sources):
        raise UsageError("--plan with --points NAME=@- would read the stream; give a file")
    loaded = {name: load_points(name, source, size_limit) for name, source in sources}
    first = [(name, ArrayData(data.shape[1:], data.values[0])) for name, data in loaded.items()]
    return first, max(data.shape[0] for data in loaded.values())


def run_at_points(
    command: str,
    request: PointsRequest,
    build: Callable[[Sequence[tuple[str, ArrayData]]], Problem],
    single: Callable[[Problem, Direction | None], Result],
    printing: Printing,
    *,
    direction: DirectionRequest | None,
    budget: int | None,
    size_limit: int,
) -> None:
    """The command at every point; exits with the first failure's code (or 1 at the end when
    --keep-going saw any)."""
    sources = [parse_points_option(text) for text in request.points]
    from jaccli.engine.guard import budget_or_default

    memory.hold(budget_or_default(budget))  # before a line is read
    names = [name for name, _ in sources]
    if len(set(names)) != len(names):
        raise UsageError("--points given twice for the same input")
    streams = [name for name, source in sources if source == STREAM]
    if streams and len(sources) > 1:
        raise UsageError("--points NAME=@- streams one input; give the others as files")
    if streams:
        (name,) = streams
        batches = PointStream(name, size_limit).batches()
        failed_first, problem, rest = _first_stream_problem(name, batches, build, request)
        if problem is None:
            _stream_lines(command, iter(failed_first), printing.document, request.keep_going)
            return
        _require_inputs(problem, names)
        engine = _Engine(problem, command, budget, request, direction, single)
        outcomes = _chain(iter(failed_first), _streamed(engine, name, rest))
    else:
        loaded = {name: load_points(name, source, size_limit) for name, source in sources}
        counts = {name: data.shape[0] for name, data in loaded.items()}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name} {count}" for name, count in counts.items())
            raise UsageError(f"--points give different numbers of points: {listed}")
        failed_first, problem = _first_file_problem(loaded, build, request)
        if problem is None:
            _stream_lines(command, iter(failed_first), printing.document, request.keep_going)
            return
        _require_inputs(problem, names)
        problem = _checked_points(problem, loaded)
        engine = _Engine(problem, command, budget, request, direction, single)
        start = len(failed_first)
        tensors = {name: engine.tensor(name, data.values[start:]) for name, data in loaded.items()}
        outcomes = _chain(iter(failed_first), engine.run(tensors, start))
    from jaccli.render.progress import progress_bar

    total = None if streams else counts[names[0]]
    from jaccli.engine.many import kept_point_bytes

    kept = kept_point_bytes(problem, command)
    if total is not None and not request.jsonl:
        _require_kept_fits(total, kept, budget)
    with progress_bar(command, unit="points") as progress:
        counted = _counted(outcomes, progress, total)
        if request.jsonl:
            _stream_lines(command, counted, printing.document, request.keep_going)
            return
        results = _collected(counted, kept, budget)
    _print_all(command, results, printing, budget, names)


def _counted(
    outcomes: Iterator[PointOutcome], progress: Callable[[int, int | None], None], total: int | None
) -> Iterator[PointOutcome]:
    for done, outcome in enumerate(outcomes, start=1):
        progress(done, total)
        yield outcome


def _require_kept_fits(count: int, kept: int, budget: int | None) -> None:
    """Every point is kept until printing without --jsonl: refuse a count that cannot be."""
    from jaccli.engine.guard import require_within_budget

    require_within_budget(
        f"keeping {count} points' results for --json, --out or the tables",
        count * kept,
        budget,
        "use --jsonl, which prints each point as it is done",
    )


def _collected(outcomes: Iterator[PointOutcome], kept: int, budget: int | None) -> list[Result]:
    """Every point's result, or the first failure as the run's error; a stream is refused as
    soon as the points kept pass the memory budget."""
    results: list[Result] = []
    for outcome in outcomes:
        _require_kept_fits(len(results) + 1, kept, budget)
        if outcome.error is not None:
            raise _at_point(outcome.index, outcome.error)
        assert outcome.result is not None
        results.append(outcome.result)
    return results


def _chain(first: Iterator[PointOutcome], rest: Iterator[PointOutcome]) -> Iterator[PointOutcome]:
    yield from first
    yield from rest


def _first_stream_problem(
    name: str,
    batches: Iterator[Batch],
    build: Callable[[Sequence[tuple[str, ArrayData]]], Problem],
    request: PointsRequest,
) -> tuple[list[PointOutcome], Problem | None, Iterator[Batch]]:
    """The problem at the first point that can be read and built, the failed points before it
    (under --keep-going; else the first failure is the run's error), and the points from it on."""
    from jaccli.engine.many import PointOutcome

    failed: list[PointOutcome] = []
    for batch in batches:
        for position, (index, _, point) in enumerate(batch):
            try:
                if isinstance(point, PointError):
                    raise point.error
                problem = build([(name, point)])
            except JaccliError as error:
                if not request.keep_going or not _of_the_point(error, point):
                    raise
                failed.append(PointOutcome(index, None, error))
                continue
            return failed, problem, _chain_batches(batch[position:], batches)
    if not failed:
        raise UsageError(f"--points {name}=@-: no point on stdin")
    return failed, None, iter(())


def _first_file_problem(
    loaded: dict[str, ArrayData],
    build: Callable[[Sequence[tuple[str, ArrayData]]], Problem],
    request: PointsRequest,
) -> tuple[list[PointOutcome], Problem | None]:
    """The problem at the first point it can be built at, and the failed points before it
    (under --keep-going; else the first failure is the run's error)."""
    from jaccli.engine.many import PointOutcome

    failed: list[PointOutcome] = []
    count = next(iter(loaded.values())).shape[0]
    for index in range(count):
        try:
            problem = build(
                [
                    (name, ArrayData(data.shape[1:], data.values[index]))
                    for name, data in loaded.items()
                ]
            )
        except JaccliError as error:
            if not request.keep_going or not _of_the_point(error, None):
                raise
            failed.append(PointOutcome(index, None, error))
            continue
        return failed, problem
    return failed, None


def _checked_points(problem: Problem, loaded: dict[str, ArrayData]) -> Problem:
    """Refuse points a float32 run would turn into ±Infinity; the problem with a warning for
    each float64 file of points it rounds (as --value has)."""
    from dataclasses import replace

    from jaccli.engine.problem import rounding_note

    notes = []
    for name, data in loaded.items():
        require_in_range(f"--points {name!r}", data, problem.dtype)
        if data.from_file and rounds_in_float32(data, problem.dtype):
            notes.append(rounding_note(name))
    return replace(problem, notes=(*problem.notes, *notes)) if notes else problem


def _of_the_point(error: JaccliError, point: ArrayData | PointError | None) -> bool:
    """Whether an error building the problem belongs to the point, so --keep-going may pass it:
    a point that could not be read, or the function failing there; not a bad option, which
    every point would meet."""
    return isinstance(point, PointError) or isinstance(error, ComputationError)


def _chain_batches(first: Batch, rest: Iterator[Batch]) -> Iterator[Batch]:
    yield first
    yield from rest


def _require_inputs(problem: Problem, names: list[str]) -> None:
    for name in names:
        if name not in problem.inputs:
            raise UsageError(f"--points {name}: {problem.function.name} has no input {name!r}")


class _Engine:
    """The engine over runs of points, with the direction every point shares."""

    def __init__(
        self,
        problem: Problem,
        command: str,
        budget: int | None,
        request: PointsRequest,
        direction: DirectionRequest | None,
        single: Callable[[Problem, Direction | None], Result],
    ) -> None:
        self.problem, self.command, self.budget, self.request = problem, command, budget, request
        self.directions = _directions(problem, direction)
        given: Direction | None = None
        if self.directions is not None:
            given = {n: ArrayData(tuple(t.shape), t.numpy()) for n, t in self.directions.items()}
        self.single: Callable[[Problem], Result] = lambda point: single(point, given)

    def tensor(self, name: str, values: np.ndarray) -> torch.Tensor:
        """The points of one input along a leading axis, in the input's dtype."""
        import torch

        array = np.ascontiguousarray(values)
        return torch.from_numpy(array).to(self.problem.inputs[name].dtype)

    def run(self, tensors: dict[str, torch.Tensor], first_index: int) -> Iterator[PointOutcome]:
        from jaccli.engine.many import run_points

        for chunk in run_points(
            self.problem,
            self.command,
            tensors,
            self.single,
            directions=self.directions,
            first_index=first_index,
            budget=self.budget,
            keep_going=self.request.keep_going,
        ):
            yield from chunk


def _directions(
    problem: Problem, direction: DirectionRequest | None
) -> dict[str, torch.Tensor] | None:
    if direction is None:
        return None
    from jaccli.engine.directions import make_directions

    shapes = (
        dict(problem.output_shapes)
        if direction.part == "output"
        else {name: tuple(problem.inputs[name].shape) for name in problem.wrt}
    )
    return make_directions(problem, direction.given, shapes, direction.option, direction.part)


def _streamed(engine: _Engine, name: str, batches: Iterator[Batch]) -> Iterator[PointOutcome]:
    """Every streamed point's outcome in order: runs of readable points go to the engine
    together; a point that could not be read, or has another shape than the first, stands as
    its error."""
    from jaccli.engine.many import PointOutcome

    expected = tuple(engine.problem.inputs[name].shape)
    dtype = engine.problem.dtype
    for batch in batches:
        pending: list[tuple[int, ArrayData]] = []
        for index, line, point in batch:
            error: JaccliError | None = None
            if isinstance(point, PointError):
                error = point.error
            elif point.shape != expected:
                error = UsageError(
                    f"--points {name}=@- line {line}: a point of shape "
                    f"{format_shape(point.shape)}; the first had {format_shape(expected)}",
                    code="bad_point",
                )
            else:
                try:
                    require_in_range(f"--points {name}=@- line {line}", point, dtype)
                except UsageError as refused:
                    error = refused
                else:
                    pending.append((index, point))
                    continue
            yield from _pending(engine, name, pending)
            pending = []
            yield PointOutcome(index, None, error)
        yield from _pending(engine, name, pending)


def _pending(
    engine: _Engine, name: str, pending: list[tuple[int, ArrayData]]
) -> Iterator[PointOutcome]:
    if pending:
        values = np.stack([point.values for _, point in pending])
        yield from engine.run({name: engine.tensor(name, values)}, pending[0][0])


def _at_point(index: int, error: JaccliError) -> JaccliError:
    """The error with the point it happened at in front."""
    return type(error)(f"point {index}: {error.message}", code=error.code)


def _stream_lines(
    command: str,
    outcomes: Iterator[PointOutcome],
    document: Callable[[Any], dict[str, Any]],
    keep_going: bool,
) -> None:
    """A JSON line per point, each written whole and flushed; a failed point's line is its error."""
    from jaccli.render.document import dumps, point_document, point_error_document

    failed: JaccliError | None = None
    for outcome in outcomes:
        if outcome.error is not None:
            error = outcome.error
            write_result(
                dumps(point_error_document(outcome.index, error.code, error.message)) + "\n"
            )
            report_error(command, error.code, f"point {outcome.index}: {error.message}", False)
            failed = failed or error
            if not keep_going:
                raise typer.Exit(error.exit_code)
            continue
        assert outcome.result is not None
        write_result(dumps(point_document(outcome.index, document(outcome.result))) + "\n")
        if _check_failed(command, outcome.index, outcome.result):
            failed = failed or JaccliError("check failed")
        for note in outcome.result.notes if outcome.index == 0 else ():
            write(sys.stderr, f"{command}: warning: {note}\n")
    if failed is not None:
        raise typer.Exit(ExitCode.COMPUTATION)


def _print_all(
    command: str,
    results: list[Result],
    printing: Printing,
    budget: int | None,
    varying: list[str],
) -> None:
    """--out of every point stacked, then one stacked document or the first point's tables."""
    from jaccli.render.files import OutArray, result_arrays, write_out

    if printing.out is not None:
        per_point = [result_arrays(result) for result in results]
        stacked = [
            OutArray(
                first.key,
                np.stack([arrays[i].array for arrays in per_point]),
                first.row_ndim + 1,
                f"point/{first.row_name}",
                first.column_name,
            )
            for i, first in enumerate(per_point[0])
        ]
        write_out(printing.out, stacked, printing.force)
    if printing.as_json:
        from jaccli.engine.guard import JSON_BYTES_PER_NUMBER, require_within_budget
        from jaccli.render.document import document_numbers, stacked_document

        numbers = document_numbers(results[0]) * len(results)
        require_within_budget(
            f"--json of {len(results)} points ({numbers} numbers)",
            numbers * JSON_BYTES_PER_NUMBER,
            budget,
            "use --out for the numbers, or --jsonl",
        )
        documents = [printing.document(result) for result in results]
        emit_json(stacked_document(documents, varying))
    else:
        from rich.console import Group
        from rich.text import Text

        first = results[0]
        summary = Text(
            f"\npoint 0 of {len(results)} shown; {results[-1].evaluation.function_name} at every "
            "point is in --json, --jsonl or --out",
            style="dim",
        )
        emit_rich(Group(printing.renderable(first), summary), printing.full)
    for note in results[0].notes:
        write(sys.stderr, f"{command}: warning: {note}\n")
    if printing.out is not None:
        write(sys.stderr, f"{command}: wrote {printing.out}\n")
    failed = [k for k, result in enumerate(results) if _check_failed(command, k, result)]
    if failed:
        raise typer.Exit(ExitCode.COMPUTATION)


def _check_failed(command: str, index: int, result: Result) -> bool:
    """Whether the point's check failed; if so, a line on stderr says where and how."""
    if result.check is None or result.check.passed:
        return False
    from jaccli.render.checks import check_failure_line

    write(sys.stderr, f"{command}: point {index}: {check_failure_line(result.check)}\n")
    return True
