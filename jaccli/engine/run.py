"""The commands' computations end to end: result, then the view and the check asked for."""

from __future__ import annotations

from dataclasses import replace

from jaccli.engine.check import check_jacobian, check_vjp
from jaccli.engine.jacobian import Strategy, compute_jacobian
from jaccli.engine.problem import Problem
from jaccli.engine.views import choose_view, slice_view
from jaccli.engine.vjp import compute_vjp
from jaccli.result import JacobianResult, VjpResult
from jaccli.spec import Cotangent


def run_jacobian(
    problem: Problem,
    strategy: Strategy = Strategy.AUTO,
    *,
    budget: int | None = None,
    view: str | None = None,
    check: bool = False,
) -> JacobianResult:
    """J, with the per-slice view `view` (None: none) and the check when asked."""
    chosen = choose_view(problem, view) if view is not None else None
    result = compute_jacobian(problem, strategy, budget)
    if chosen is not None:
        wrt, name, axes = chosen
        (jacobians,) = result.jacobians.values()
        result = replace(result, view=slice_view(problem, wrt, name, axes, jacobians[wrt], None))
    if check:
        result = replace(result, check=check_jacobian(problem, result))
    return result


def run_vjp(
    problem: Problem, cotangent: Cotangent, *, view: str | None = None, check: bool = False
) -> VjpResult:
    """vᵀ·J, with the per-slice view `view` (None: the natural one of a single input that
    decomposes) and the check when asked."""
    chosen = choose_view(problem, view)
    result = compute_vjp(problem, cotangent)
    if chosen is not None:
        wrt, name, axes = chosen
        result = replace(
            result,
            view=slice_view(
                problem, wrt, name, axes, result.vjps[wrt], *result.cotangents.values()
            ),
        )
    if check:
        result = replace(result, check=check_vjp(problem, result))
    return result
