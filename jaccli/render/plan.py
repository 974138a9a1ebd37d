"""What --plan shows: sizes, estimated memory, the strategy and why, before anything is computed."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from jaccli.messages import format_bytes
from jaccli.render.document import SCHEMA_VERSION
from jaccli.result import Plan, PlanReport, PointsPlan
from jaccli.spec import format_shape

LARGE_RESULT = 64 * 1024**2
"""Past this size, a dense J with diagonal blocks earns a suggestion of --batched."""


def _shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())


def batched_hint(report: PlanReport) -> list[str]:
    """A suggestion of --batched when the dense J is large and has diagonal blocks, in lines
    that fit 60 columns (none when it does not apply)."""
    per_sample = report.per_sample
    if report.batched or per_sample is None or per_sample.refused:
        return []
    if report.plan.result_bytes < LARGE_RESULT:
        return []
    return [
        "J is block-diagonal: --batched keeps only its blocks",
        f"({format_bytes(per_sample.result_bytes)} instead of "
        f"{format_bytes(report.plan.result_bytes)})",
    ]


def plan_renderable(report: PlanReport) -> RenderableType:
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
        ("layout", "per-sample (diagonal blocks)" if report.batched else "dense"),
        ("J", f"{plan.n_out} outputs × {plan.n_in} inputs"),
        ("result", format_bytes(plan.result_bytes)),
        (
            "peak memory",
            f"about {format_bytes(plan.peak_bytes)} (budget {format_bytes(plan.budget)})",
        ),
        ("strategy", f"{plan.method}: {plan.reason}"),
    ]
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
    for key, value in rows:
        table.add_row(key, Text(value))
    refused = plan.refused or (points.refused if points is not None else None)
    verdict = (
        Text(f"refused: {refused}", style="bold red")
        if refused
        else Text("fits the memory budget; nothing was computed", style="green")
    )
    parts: list[RenderableType] = [Text("Plan", style="bold underline"), table, verdict]
    parts += [Text(line, style="yellow") for line in batched_hint(report)]
    return Group(*parts)


def _plan_entry(plan: Plan) -> dict[str, Any]:
    return {
        "method": plan.method,
        "reason": plan.reason,
        "outputs": plan.n_out,
        "inputs": plan.n_in,
        "result_bytes": plan.result_bytes,
        "peak_bytes": plan.peak_bytes,
        "budget_bytes": plan.budget,
        "chunk_size": plan.chunk_size,
        "refused": plan.refused,
    }


def _points_entry(points: PointsPlan) -> dict[str, Any]:
    return {
        "count": points.count,
        "chunk_size": points.chunk_size,
        "per_point_bytes": points.per_point_bytes,
        "peak_bytes": points.peak_bytes,
        "budget_bytes": points.budget,
        "method": points.method,
        "refused": points.refused,
    }


def plan_document(report: PlanReport, command: str = "jacobian") -> dict[str, Any]:
    """`{"command": "jacobian", "plan": {...}}`: the same facts for scripts."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "function": {"name": report.function_name, "formula": report.formula},
        "dtype": report.dtype,
        "wrt": list(report.wrt),
        "inputs": {name: {"shape": list(shape)} for name, shape in report.input_shapes.items()},
        "outputs": {name: {"shape": list(shape)} for name, shape in report.output_shapes.items()},
        "output_unknown": report.output_unknown,
        "layout": "per-sample" if report.batched else "dense",
        **({} if report.points is None else {"points": _points_entry(report.points)}),
        "plan": {
            **_plan_entry(report.plan),
            "per_sample": None if report.per_sample is None else _plan_entry(report.per_sample),
            "suggestion": " ".join(batched_hint(report)) or None,
        },
    }
