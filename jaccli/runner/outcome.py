"""What a run hands on: a plan, a result at one point, results at many points, a stream of them,
or the presets; each with its JSON document and the files --out asks for. Whoever shows the
outcome (the CLI, or the Python API's result) prints nothing that is not here.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from jaccli.request import Request

if TYPE_CHECKING:
    import numpy as np

    from jaccli.blocks.plan import StorePlan
    from jaccli.blocks.run import Outcome as BlocksOutcome
    from jaccli.engine.many import PointOutcome
    from jaccli.functions import Function
    from jaccli.result import Picture, PlanReport, Result


Document = dict[str, Any]


def _require_json_fits(what: str, numbers: int, request: Request, way_out: str) -> None:
    """A JSON document holds each number as text, many times its bytes: refuse one past the
    budget."""
    from jaccli.engine.guard import JSON_BYTES_PER_NUMBER, require_within_budget

    budget = request.limits.budget
    require_within_budget(
        f"{what} ({numbers} numbers)", numbers * JSON_BYTES_PER_NUMBER, budget, way_out
    )


@dataclass(frozen=True)
class Planned:
    """--plan: what computing would take, without computing."""

    request: Request
    report: PlanReport
    store: StorePlan | None = None
    """With --out NAME.zarr: the blocks J would be stored in."""

    def document(self) -> Document:
        from jaccli.render.document import plan_document

        return plan_document(self.report, self.request.command, self.store)

    @property
    def refused(self) -> str | None:
        """Why the computation would not fit the memory budget, if it would not."""
        if self.store is not None:  # J need not fit, only a block
            return self.store.blocks.refused
        points = self.report.points
        return self.report.plan.refused or (points.refused if points is not None else None)


@dataclass(frozen=True)
class Computed:
    """The result at one point."""

    request: Request
    result: Result
    document_of: Callable[[Result], Document]
    batched_hint: str | None
    """What would compute only J's blocks, to name beside a picture's structure."""
    jacobians_in_document: bool = True

    def document(self) -> Document:
        """The command's document (with J's structure when a picture was asked for); refused
        past the memory budget."""
        from jaccli.render.document import document_numbers, structure_document

        numbers = document_numbers(self.result, jacobians=self.jacobians_in_document)
        _require_json_fits(
            "--json of the result",
            numbers,
            self.request,
            "use --out for the numbers, or --view full",
        )
        document = self.document_of(self.result)
        view = self.request.compute.picture
        if view is None:
            return document
        if self.request.compute.sparse:
            structure = self._picture(view, 1, 1).structure
        else:
            from jaccli.engine.structure import result_structure

            structure = result_structure(self.result, batched_hint=self.batched_hint)  # type: ignore[arg-type]
        return {**document, "structure": structure_document(structure)}

    def picture(self, rows: int, columns: int) -> Picture | None:
        """J pooled into at most rows × columns cells, as --view asks it drawn; None without
        a picture view."""
        view = self.request.compute.picture
        return None if view is None else self._picture(view, rows, columns)

    def _picture(self, view: str, rows: int, columns: int) -> Picture:
        """J (or H) pooled into at most rows × columns cells; a sparse one from its entries."""
        if self.request.compute.sparse:
            from jaccli.engine.structure import sparse_picture_of

            return sparse_picture_of(self.result, view, rows, columns)  # type: ignore[arg-type]
        from jaccli.engine.structure import picture_of

        return picture_of(self.result, view, rows, columns, batched_hint=self.batched_hint)  # type: ignore[arg-type]

    def write_out(self) -> Path | None:
        """The result's arrays, or for .png, .svg and .pdf its heat map (a spy plot of its
        non-zeros with --view sparsity), written to --out; the path written."""
        out = self.request.show.out
        if out is None:
            return None
        from jaccli.render.files import IMAGE_SUFFIXES, publish, result_arrays, write_out

        force = self.request.show.force
        if out.suffix not in IMAGE_SUFFIXES and self.request.compute.sparse:
            from jaccli.render.sparse_files import write_sparse_out

            write_sparse_out(out, self.result, force)  # type: ignore[arg-type]
            return out
        if out.suffix not in IMAGE_SUFFIXES:
            write_out(out, result_arrays(self.result), force)
            return out
        from jaccli.render.image import IMAGE_CELLS, draw_picture

        view = self.request.compute.picture or "heatmap"
        picture = self._picture(view, IMAGE_CELLS, IMAGE_CELLS)
        publish(out, lambda path: draw_picture(picture, path, out.suffix[1:]), force)
        return out

    @property
    def notes(self) -> tuple[str, ...]:
        return self.result.notes

    @property
    def passed(self) -> bool:
        """Whether the view rebuilt the result and the check passed (where they were asked)."""
        view, check = self.result.view, self.result.check
        return (view is None or view.agrees) and (check is None or check.passed)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while jaccli alone builds many small acyclic
    objects (a document for each of 10,000 points: the collector's passes over them took
    longer than building them); no user code runs inside."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


POINT_NOTES_LISTED = 20
"""Warnings of single points (`point k: …`) a run of many points says, before how many more."""


class PointResults(Sequence["Result"]):
    """Every point's result, kept as the engine's chunks: a vectorized chunk stays its stacked
    arrays and makes a point's result object only when it is asked for (ten thousand made
    for --out cost more than computing them)."""

    def __init__(self) -> None:
        self.chunks: list[Sequence[PointOutcome]] = []
        self.starts: list[int] = []
        self.count = 0

    def append(self, chunk: Sequence[PointOutcome]) -> None:
        """Keep a chunk of outcomes (none failed) after the ones kept before."""
        self.chunks.append(chunk)
        self.starts.append(self.count)
        self.count += len(chunk)

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, k: int) -> Result: ...

    @overload
    def __getitem__(self, k: slice) -> list[Result]: ...

    def __getitem__(self, k: int | slice) -> Result | list[Result]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.count))]
        if not -self.count <= k < self.count:
            raise IndexError(k)
        k %= self.count
        import bisect

        c = bisect.bisect_right(self.starts, k) - 1
        result = self.chunks[c][k - self.starts[c]].result
        assert result is not None
        return result

    def made_one_by_one(self) -> Iterator[tuple[int, Result]]:
        """Each point's result that is not a vectorized chunk's (only those can carry a
        --check, which the vectorized chunks never compute), with its position."""
        from jaccli.engine.many import ChunkOutcomes

        for start, chunk in zip(self.starts, self.chunks, strict=True):
            if not isinstance(chunk, ChunkOutcomes):
                for k, outcome in enumerate(chunk):
                    assert outcome.result is not None
                    yield start + k, outcome.result

    def notes(self) -> tuple[str, ...]:
        """The warnings every point has, then each other warning as `point k: …` for each
        point that has it (POINT_NOTES_LISTED of them, then how many more): a NaN at point 7,
        or a kink at points 0 and 7, is said however many points there are."""
        from jaccli.engine.many import ChunkOutcomes

        at: dict[str, list[int]] = {}
        every: set[str] | None = None
        for chunk in self.chunks:
            if isinstance(chunk, ChunkOutcomes):
                noted = list(chunk.with_own_notes())
                if len(noted) < len(chunk):  # the others have the chunk's warnings alone
                    shared = set(chunk.shared_notes())
                    every = shared if every is None else every & shared
            else:
                noted = [(o.index, o.result) for o in chunk if o.result is not None]
            for index, result in noted:
                every = set(result.notes) if every is None else every & set(result.notes)
                for note in result.notes:
                    at.setdefault(note, []).append(index)
        common = [note for note in at if note in (every or set())]
        own = [f"point {k}: {note}" for note, points in at.items() if note not in common
               for k in points]  # fmt: skip
        if len(own) > POINT_NOTES_LISTED:
            more = len(own) - POINT_NOTES_LISTED
            own = [*own[:POINT_NOTES_LISTED], f"… and {more} more (--jsonl gives each point's)"]
        return (*common, *own)

    def stacked(self) -> list[np.ndarray]:
        """Every point's arrays (render/files.py's result_arrays) along a leading point axis:
        a vectorized chunk's as they are stacked, with its sampled points' rows their
        single-point results' (as the points' result objects hold them)."""
        import numpy as np

        from jaccli.engine.many import ChunkOutcomes
        from jaccli.render.files import result_arrays

        parts: list[list[np.ndarray]] = []
        for chunk in self.chunks:
            stacked = chunk.stacked() if isinstance(chunk, ChunkOutcomes) else None
            if isinstance(chunk, ChunkOutcomes) and stacked is not None:
                columns = [np.array(array) for array in stacked]
                for k, reference in chunk.references.items():
                    for column, one in zip(columns, result_arrays(reference), strict=True):
                        column[k] = one.array
            else:
                per_point = [result_arrays(outcome.result) for outcome in chunk]  # type: ignore[arg-type]
                columns = [
                    np.stack([a[i].array for a in per_point]) for i in range(len(per_point[0]))
                ]
            parts.append(columns)
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(column) for column in zip(*parts, strict=True)]


@dataclass(frozen=True)
class AtPoints:
    """The results at every point of --points, kept to be printed together."""

    request: Request
    results: PointResults
    document_of: Callable[[Result], Document]
    varying: list[str]
    """The inputs whose values vary by point."""

    def document(self) -> Document:
        """One document of every point stacked; refused past the memory budget."""
        from jaccli.render.document import document_numbers, stacked_document, values_deferred

        count = len(self.results)
        numbers = document_numbers(self.results[0]) * count
        way_out = "use --out for the numbers, or --jsonl"
        _require_json_fits(f"--json of {count} points", numbers, self.request, way_out)
        with values_deferred(), _collector_paused():
            documents = [self.document_of(result) for result in self.results]
            return {**stacked_document(documents, self.varying), "warnings": list(self.notes)}

    def write_out(self) -> Path | None:
        """Every point's arrays, stacked along a leading point axis, written to --out."""
        out = self.request.show.out
        if out is None:
            return None
        from jaccli.render.files import OutArray, result_arrays, write_out

        stacked = [
            OutArray(
                first.key, array, first.row_ndim + 1, f"point/{first.row_name}", first.column_name
            )
            for first, array in zip(
                result_arrays(self.results[0]), self.results.stacked(), strict=True
            )
        ]
        write_out(out, stacked, self.request.show.force)
        return out

    @functools.cached_property
    def notes(self) -> tuple[str, ...]:
        return self.results.notes()


@dataclass(frozen=True)
class Streamed:
    """The outcome of each point of --points in order, each as soon as it is computed (for
    --jsonl); a failed point holds its error."""

    request: Request
    outcomes: Generator[PointOutcome, None, None]
    document_of: Callable[[Result], Document]
    before_waiting: list[Callable[[], None]] = field(default_factory=list)
    """Called before the points' source waits for stdin: a reader that holds answers back
    to write them together writes them there."""


@dataclass(frozen=True)
class Stored:
    """J computed block by block into the --out .zarr store: how many blocks this run
    computed, how many it kept from before (--resume), and the warnings of the problem and the
    blocks; J itself stays in the store."""

    request: Request
    blocks: BlocksOutcome
    workers: int
    problem_notes: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.problem_notes, *self.blocks.notes)))

    def summary(self) -> str:
        """`wrote j.zarr: J 50000×50000 float32 in 150 blocks of 335 rows, 12 computed on 2
        workers, 138 kept from before`."""
        from jaccli.spec import format_shape

        plan, blocks = self.blocks.plan, self.blocks
        unit = plan.kind if plan.size != 1 else plan.kind[:-1]
        blocks_word = "block" if plan.count == 1 else "blocks"
        workers_word = "worker" if self.workers == 1 else "workers"
        where = (
            f" on {self.workers} {workers_word}" if self.request.compute.cluster is not None else ""
        )
        kept = f", {blocks.kept} kept from before" if self.request.compute.resume else ""
        matrix = "H" if self.request.command == "hessian" else "J"
        return (
            f"wrote {blocks.path}: {matrix} {format_shape(plan.shape)} "
            f"{'float32' if plan.itemsize == 4 else 'float64'} in {plan.count} {blocks_word} of "
            f"{plan.size} {unit}, {blocks.computed} computed{where} in "
            f"{blocks.seconds:.1f} s{kept}"
        )


@dataclass(frozen=True)
class Listed:
    """`presets`: the preset functions, each with whether its J is square."""

    request: Request
    functions: list[tuple[Function, bool]]

    def document(self) -> Document:
        from jaccli.render.document import presets_document

        return presets_document(self.functions)


Outcome = Planned | Computed | AtPoints | Streamed | Stored | Listed
