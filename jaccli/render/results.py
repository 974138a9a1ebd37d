"""Each command's result as Rich renderables: the one place the CLI's tables and the Python
API's `__rich__` choose them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from jaccli.render.layout import Layout
from jaccli.render.second_order import hessian_renderable, hvp_renderable
from jaccli.render.tables import (
    check_command_renderable,
    jacobian_renderable,
    jvp_renderable,
    vjp_renderable,
)
from jaccli.result import Picture, Result, SparseHessianResult, SparseJacobianResult


def result_renderable(
    command: str, result: Result, layout: Layout, picture: Picture | None = None
) -> RenderableType:
    """The tables of one command's result, with the picture of J or H asked for."""
    if isinstance(result, SparseJacobianResult) and command != "check":
        from jaccli.render.sparse import sparse_jacobian_renderable

        return sparse_jacobian_renderable(result, layout, picture)
    if isinstance(result, SparseHessianResult):
        from jaccli.render.sparse import sparse_hessian_renderable

        return sparse_hessian_renderable(result, layout, picture)
    if command in ("jacobian", "det"):
        return jacobian_renderable(result, layout, picture)  # type: ignore[arg-type]
    if command == "hessian":
        return hessian_renderable(result, layout, picture)  # type: ignore[arg-type]
    renderables: dict[str, Any] = {
        "check": check_command_renderable,
        "vjp": vjp_renderable,
        "jvp": jvp_renderable,
        "hvp": hvp_renderable,
    }
    return renderables[command](result, layout)  # type: ignore[no-any-return]


def points_renderable(command: str, results: Sequence[Result], layout: Layout) -> RenderableType:
    """The first point's tables, and where every point's results are."""
    summary = Text(
        f"\npoint 0 of {len(results)} shown; {results[-1].evaluation.function_name} at every "
        "point is in --json, --jsonl or --out",
        style="dim",
    )
    return Group(result_renderable(command, results[0], layout), summary)
