"""What --plan shows: sizes, estimated memory, the strategy and why, before anything is computed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from jaccli.messages import format_bytes
from jaccli.render.document import batched_hint
from jaccli.result import Plan, PlanReport
from jaccli.spec import format_shape

if TYPE_CHECKING:
    from jaccli.blocks.plan import StorePlan


def _shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())


def _store_rows(store: StorePlan) -> list[tuple[str, str]]:
    """The blocks of --out NAME.zarr, the store's size, and the blocks each process takes."""
    blocks = store.blocks
    if store.cluster is None:
        split = "this process, one block after another"
    elif store.workers is None:
        split = f"the workers of {store.cluster}, about {blocks.count} tasks shared out"
    else:
        split = (
            f"{store.workers} worker processes, at most {blocks.per_worker(store.workers)} "
            "blocks each"
        )
    described = blocks.describe()
    if store.columns_tried:
        described += (
            "; rows instead if forward mode cannot run the function (tried on J's first "
            "column when the run starts)"
        )
    return [
        ("blocks", described),
        ("store", f"{format_bytes(blocks.store_bytes)} on disk at most"),
        ("split over", split),
    ]


def plan_renderable(report: PlanReport, store: StorePlan | None = None) -> RenderableType:
    """The plan as a two-column table, with the verdict and any suggestion below it."""
    plan = report.plan
    table = Table(box=box.SIMPLE, show_header=False, show_edge=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows = [
        ("function", f"{report.function_name}   {report.formula}   {report.dtype}"),
        ("inputs", _shapes(report.input_shapes)),
        (
            "outputs",
            f"unknown: {report.output_unknown}"
            if report.output_unknown
            else _shapes(report.output_shapes),
        ),
        ("differentiate", ", ".join(report.wrt)),
        ("layout", _layout(report)),
        ("J", f"{plan.n_out} outputs × {plan.n_in} inputs"),
        ("result", format_bytes(plan.result_bytes)),
        (
            "peak in memory" if store is not None else "peak memory",
            f"about {format_bytes(plan.peak_bytes)} (budget {format_bytes(plan.budget)})",
        ),
        ("strategy", f"{plan.method}: {plan.reason}"),
    ]
    sparse = report.sparse
    if sparse is not None:
        passes = {"fwd": "JVPs", "rev": "VJPs", "hvp": "Hessian-vector products"}[sparse.mode]
        rows[6:6] = [  # after J
            ("non-zeros", f"{sparse.nonzeros:,} ({_share(sparse.nonzeros, plan)} of the entries)"),
            ("colours", f"{sparse.colours} ({sparse.colouring}); the other mode: "
             f"{sparse.other_colours}"),
            ("passes", f"{sparse.colours} {passes}"),
        ]  # fmt: skip
    if plan.chunk_size is not None:
        rows.append(("chunk size", str(plan.chunk_size)))
    points = report.points
    if points is not None:
        count = "a stream of" if points.count is None else str(points.count)
        rows.append(("points", f"{count} points by {points.method}, {points.chunk_size} at a time"))
        rows.append(
            (
                "chunk peak",
                f"about {format_bytes(points.peak_bytes)} (budget {format_bytes(points.budget)})",
            )
        )
    if store is not None:
        rows += _store_rows(store)
    for key, value in rows:
        table.add_row(key, Text(value))
    if store is not None:
        refused = store.blocks.refused  # J need not fit, only a block
    else:
        refused = plan.refused or (points.refused if points is not None else None)
    verdict = (
        Text(f"refused: {refused}", style="bold red")
        if refused
        else Text("fits the memory budget; nothing was computed", style="green")
    )
    parts: list[RenderableType] = [Text("Plan", style="bold underline"), table, verdict]
    parts += [Text(f"note: {note}", style="yellow") for note in report.notes]
    parts += [Text(line, style="yellow") for line in batched_hint(report)]
    return Group(*parts)


def _layout(report: PlanReport) -> str:
    if report.sparse is not None:
        return "sparse (the non-zeros only)"
    return "per-sample (diagonal blocks)" if report.batched else "dense"


def _share(nonzeros: int, plan: Plan) -> str:
    entries = plan.n_out * plan.n_in
    return f"{100 * nonzeros / entries:.2g}%" if entries else "0%"
