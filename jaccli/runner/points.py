"""A command at every point of --points (NOTE [many points] in engine/many.py): read the points,
build the problem at the first, and run the engine over all, a chunk at a time.

With --jsonl the outcomes stream as each chunk finishes; otherwise every result is kept (within
the memory budget) to be printed together.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from jaccli.arrays import ArrayData
from jaccli.errors import ComputationError, JaccliError, ResourceError, UsageError
from jaccli.messages import format_bytes
from jaccli.points import Batch, PointError, PointStream, load_points
from jaccli.request import GivenPoints, Request
from jaccli.runner.commands import Command
from jaccli.runner.outcome import AtPoints, PointResults, Streamed
from jaccli.runner.problem import build_problem
from jaccli.spec import STREAM, Direction, format_shape, require_in_range, rounds_in_float32

if TYPE_CHECKING:
    import torch

    from jaccli.engine import Problem
    from jaccli.engine.many import PointOutcome
    from jaccli.result import Result

Progress = Callable[[int, int | None], None]
ShowProgress = Callable[[str, str | None], AbstractContextManager[Progress]]
"""(description, unit) -> a context holding the callback told (done, total)."""


def first_points(request: Request) -> tuple[list[tuple[str, ArrayData]], int]:
    """For --plan: the first point of each --points file, and how many points there are."""
    assert request.compute.points is not None
    limit = request.limits.value_limit
    loaded = {name: _loaded(name, given, limit) for name, given in request.compute.points.sources}
    first = [(name, ArrayData(data.shape[1:], data.values[0])) for name, data in loaded.items()]
    return first, max(data.shape[0] for data in loaded.values())


def _loaded(name: str, given: GivenPoints, size_limit: int) -> ArrayData:
    return given if isinstance(given, ArrayData) else load_points(name, given, size_limit)


def run_points(
    request: Request,
    command: Command,
    direction: Direction | None,
    show_progress: ShowProgress,
) -> AtPoints | Streamed:
    """The command at every point: a stream of outcomes with --jsonl (the first failure
    raised unless --keep-going), else every result, the first failure raised."""
    points = request.compute.points
    assert points is not None
    sources = points.sources
    names = [name for name, _ in sources]
    limit = request.limits.value_limit

    def build(values: Sequence[tuple[str, ArrayData]]) -> Problem:
        return build_problem(request, values=values)

    streams = [name for name, source in sources if source == STREAM]
    if streams:
        (name,) = streams
        stream = PointStream(name, limit)
        batches = stream.batches()
        failed_first, problem, rest = _first_stream_problem(name, batches, build, points.keep_going)
        total = None
    else:
        loaded = {name: _loaded(name, given, limit) for name, given in sources}
        counts = {name: data.shape[0] for name, data in loaded.items()}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name} {count}" for name, count in counts.items())
            raise UsageError(f"--points give different numbers of points: {listed}")
        failed_first, problem = _first_file_problem(loaded, build, points.keep_going)
        total = counts[names[0]]
        stream = None
    waiting = stream.before_waiting if stream is not None else []
    if problem is None:  # every point failed (--keep-going): their error lines
        return Streamed(request, (outcome for outcome in failed_first), command.document, waiting)
    _require_inputs(problem, names)
    if not streams:
        problem = _checked_points(problem, loaded)
    engine = _Engine(problem, request, command, direction)
    from jaccli.engine.many import kept_point_bytes
    from jaccli.memory import budget_or_default

    kept = kept_point_bytes(problem, request.command)
    budget = request.limits.budget
    most = budget_or_default(budget) // max(kept, 1)  # the points the budget can keep
    aside = _OldObjectsSetAside(total)
    chunks: Iterator[Sequence[PointOutcome]]
    if streams:  # --jsonl takes each outcome as it comes: a coprocess waits for it
        outcomes = _chain(iter(failed_first), _streamed(engine, name, rest))
        chunks = _runs(outcomes, most)
    else:
        start = len(failed_first)
        tensors = {name: engine.tensor(name, data.values[start:]) for name, data in loaded.items()}
        chunks = _chain_chunks(failed_first, engine.chunks(tensors, start, aside.now))
        outcomes = (outcome for chunk in chunks for outcome in chunk)
    if points.jsonl:
        counted = _counted(outcomes, show_progress(request.command, "points"), total)
        return Streamed(request, counted, command.document, waiting)
    if total is not None:
        _require_kept_fits(total, kept, budget)
    with show_progress(request.command, "points") as progress, aside:
        results = _collected(chunks, progress, total, kept, budget, most)
    return AtPoints(request, results, command.document, names)


def _counted(
    outcomes: Iterator[PointOutcome],
    showing: AbstractContextManager[Progress],
    total: int | None,
) -> Generator[PointOutcome, None, None]:
    """The outcomes, with the progress shown while they are taken."""
    with showing as progress, _OldObjectsSetAside(total) as aside:
        aside.now()  # each line's document is made at once
        yield from _progressing(outcomes, progress, total)


FROZEN_FROM = 1000
"""Points from which a run sets the objects that exist aside from Python's collections."""


class _OldObjectsSetAside:
    """For a file of many points: the objects that exist before they are computed (torch's and
    the function's, about 300,000) left out of Python's cyclic collections while the points'
    results pile up, and given back when the context ends (gc.unfreeze): each collection of the
    oldest generation scanned them all again, 40 % of a 10,000-point run's time when every
    point made its result object. Set aside only when `now` is called (before the points of a
    chunk are computed one by one, or a stream's lines made): a vectorized chunk makes no object
    a point, and the collection that comes first took a tenth of a 10,000-point run. Garbage is
    collected first, so that none of it is held aside (the memory budget counts what the heap
    holds). A stream, whose count is unknown, and a process that froze objects itself (the
    API's caller: unfreezing would give back its objects too) are left as they are."""

    def __init__(self, total: int | None) -> None:
        self.wanted = total is not None and total >= FROZEN_FROM and not gc.get_freeze_count()
        self.frozen = False

    def now(self) -> None:
        """Set the objects that exist aside, once."""
        if self.wanted and not self.frozen:
            gc.collect()
            gc.freeze()
            self.frozen = True

    def __enter__(self) -> _OldObjectsSetAside:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.frozen:
            gc.unfreeze()
            self.frozen = False


def _progressing(
    outcomes: Iterator[PointOutcome], progress: Progress, total: int | None
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


def _collected(
    chunks: Iterator[Sequence[PointOutcome]],
    progress: Progress,
    total: int | None,
    kept: int,
    budget: int | None,
    most: int,
) -> PointResults:
    """Every point's result, or the first failure as the run's error; a stream is refused as
    soon as the points kept pass the memory budget. A vectorized chunk is kept as its arrays
    (no point of it fails), its points' result objects made when they are asked for."""
    from jaccli.engine.many import ChunkOutcomes

    results = PointResults()
    for chunk in chunks:
        if len(results) + len(chunk) > most:
            _require_kept_fits(most + 1, kept, budget)
        if not isinstance(chunk, ChunkOutcomes):
            for outcome in chunk:
                if outcome.error is not None:
                    if outcome.error.code == "memory_budget" and len(results):
                        raise _kept_past_budget(len(results), budget) from outcome.error
                    raise at_point(outcome.index, outcome.error)
                assert outcome.result is not None  # made now, as the point was computed
        results.append(chunk)
        progress(len(results), total)
    return results


def _kept_past_budget(count: int, budget: int | None) -> ResourceError:
    """The refusal of a run whose kept results took the memory the next point needed: the
    kernel's limit refused it before the estimate of what a result keeps did."""
    from jaccli.memory import budget_or_default

    return ResourceError(
        f"keeping {count} points' results for --json, --out or the tables took the memory "
        f"budget of {format_bytes(budget_or_default(budget))}; use --jsonl, which prints each "
        "point as it is done, or raise --max-memory",
        code="memory_budget",
    )


def _chain(first: Iterator[PointOutcome], rest: Iterator[PointOutcome]) -> Iterator[PointOutcome]:
    yield from first
    yield from rest


def _chain_chunks(
    first: list[PointOutcome], rest: Iterator[Sequence[PointOutcome]]
) -> Iterator[Sequence[PointOutcome]]:
    if first:
        yield first
    yield from rest


RUN_OF_POINTS = 4096
"""Outcomes of a stream kept together, as a chunk of the engine's would be."""


def _runs(outcomes: Iterator[PointOutcome], most: int) -> Iterator[list[PointOutcome]]:
    """The outcomes in runs of at most RUN_OF_POINTS, a run ending at a failed point (the
    run's error, unless --keep-going) and at the point past the `most` the memory budget can
    keep (refused there, as soon as it is computed)."""
    run: list[PointOutcome] = []
    for seen, outcome in enumerate(outcomes, start=1):
        run.append(outcome)
        if outcome.error is not None or len(run) == RUN_OF_POINTS or seen == most + 1:
            yield run
            run = []
    if run:
        yield run


def _first_stream_problem(
    name: str,
    batches: Iterator[Batch],
    build: Callable[[Sequence[tuple[str, ArrayData]]], Problem],
    keep_going: bool,
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
                if not keep_going or not _of_the_point(error, point):
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
    keep_going: bool,
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
            if not keep_going or not _of_the_point(error, None):
                raise
            failed.append(PointOutcome(index, None, error))
            continue
        return failed, problem
    return failed, None


def _checked_points(problem: Problem, loaded: dict[str, ArrayData]) -> Problem:
    """Refuse points a float32 run would turn into ±Infinity; the problem with a warning for
    each float64 file of points it rounds (as --value has)."""
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
        self, problem: Problem, request: Request, command: Command, direction: Direction | None
    ) -> None:
        self.problem, self.request = problem, request
        self.keep_going = request.compute.points is not None and request.compute.points.keep_going
        self.directions = _directions(problem, command, direction)
        given: Direction | None = None
        if self.directions is not None:
            given = {n: ArrayData(tuple(t.shape), t.numpy()) for n, t in self.directions.items()}
        self.single: Callable[[Problem], Result] = lambda point: command.at_point(
            point, request, given
        )
        self.sparse_points = None
        compute = request.compute
        if compute.sparse and request.command in ("jacobian", "det") and not compute.check:
            from jaccli.engine.sparse.run import sparse_points
            from jaccli.runner.commands import prepared_pattern, sparse_mode

            try:
                prepared = prepared_pattern(problem, request)
            except JaccliError:  # said at the point, as without vmap (--keep-going goes on)
                prepared = None
            if prepared is not None:
                self.sparse_points = sparse_points(
                    problem,
                    prepared,
                    mode=sparse_mode(request),
                    budget=request.limits.budget,
                    det=request.command == "det",
                )

    def tensor(self, name: str, values: np.ndarray) -> torch.Tensor:
        """The points of one input along a leading axis, in the input's dtype."""
        import torch

        array = np.ascontiguousarray(values)
        return torch.from_numpy(array).to(self.problem.inputs[name].dtype)

    def run(self, tensors: dict[str, torch.Tensor], first_index: int) -> Iterator[PointOutcome]:
        for chunk in self.chunks(tensors, first_index):
            yield from chunk

    def chunks(
        self,
        tensors: dict[str, torch.Tensor],
        first_index: int,
        before_loop: Callable[[], None] | None = None,
    ) -> Iterator[Sequence[PointOutcome]]:
        """Each chunk's outcomes in order, as the engine finishes it; `before_loop` is called
        before a chunk is computed point by point."""
        from jaccli.engine.many import run_points

        yield from run_points(
            self.problem,
            self.request.command,
            tensors,
            self.single,
            directions=self.directions,
            first_index=first_index,
            budget=self.request.limits.budget,
            keep_going=self.keep_going,
            sparse=self.request.compute.sparse,
            sparse_points=self.sparse_points,
            before_loop=before_loop,
        )


def _directions(
    problem: Problem, command: Command, direction: Direction | None
) -> dict[str, torch.Tensor] | None:
    if command.direction is None or direction is None:
        return None
    from jaccli.engine.directions import make_directions

    option, part = command.direction
    shapes = (
        dict(problem.output_shapes)
        if part == "output"
        else {name: tuple(problem.inputs[name].shape) for name in problem.wrt}
    )
    return make_directions(problem, direction, shapes, option, part)


def _streamed(engine: _Engine, name: str, batches: Iterator[Batch]) -> Iterator[PointOutcome]:
    """Every streamed point's outcome in order: runs of readable points go to the engine
    together; a point that could not be read, or has another shape than the first, stands as
    its error."""
    from jaccli.engine.many import PointOutcome

    expected = tuple(engine.problem.inputs[name].shape)
    dtype = engine.problem.dtype
    for batch in batches:
        pending: list[tuple[int, ArrayData]] = []
        checked = _in_float32_range(batch, dtype)  # then no point needs its own check
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
                    if not checked:
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


def _in_float32_range(batch: Batch, dtype: str) -> bool:
    """Whether every float64 number of the batch's points is within float32's range (or the
    run is not float32), checked in one pass: require_in_range a point was a tenth of a
    stream's time."""
    if dtype != "float32":
        return True
    wide = [
        point.values.ravel()
        for _, _, point in batch
        if not isinstance(point, PointError)
        and point.values.dtype.kind == "f"
        and point.values.dtype.itemsize > 4
    ]
    if len(wide) < 2:  # a point alone (a coprocess, a stdin without a descriptor): its own check
        return not wide
    values = np.concatenate(wide)
    with np.errstate(over="ignore"):
        return not bool((np.isinf(values.astype(np.float32)) & np.isfinite(values)).any())


def _pending(
    engine: _Engine, name: str, pending: list[tuple[int, ArrayData]]
) -> Iterator[PointOutcome]:
    if pending:
        values = np.stack([point.values for _, point in pending])
        yield from engine.run({name: engine.tensor(name, values)}, pending[0][0])


def at_point(index: int, error: JaccliError) -> JaccliError:
    """The error with the point it happened at in front."""
    return type(error)(f"point {index}: {error.message}", code=error.code)
