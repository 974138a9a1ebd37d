"""What a run hands on: a plan, a result at one point, results at many points, a stream of them,
or the presets; each with its JSON document and the files --out asks for. Whoever shows the
outcome (the CLI, or the Python API's result) prints nothing that is not here.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaccli.request import Request

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class AtPoints:
    """The results at every point of --points, kept to be printed together."""

    request: Request
    results: list[Result]
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
            return stacked_document(documents, self.varying)

    def write_out(self) -> Path | None:
        """Every point's arrays, stacked along a leading point axis, written to --out."""
        out = self.request.show.out
        if out is None:
            return None
        import numpy as np

        from jaccli.render.files import OutArray, result_arrays, write_out

        per_point = [result_arrays(result) for result in self.results]
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
        write_out(out, stacked, self.request.show.force)
        return out

    @property
    def notes(self) -> tuple[str, ...]:
        return self.results[0].notes


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
