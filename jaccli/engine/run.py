"""The commands' computations end to end: result, then the view and the check asked for."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Concatenate, ParamSpec, TypeVar

import torch

from jaccli.engine.batched import compute_batched, plan_batched
from jaccli.engine.check import (
    DEFAULT_CHECK_OPTIONS,
    CheckOptions,
    check_hvp,
    check_jacobian,
    check_jvp,
    check_vjp,
)
from jaccli.engine.det import determinant as compute_determinant
from jaccli.engine.det import determinant_notes, joint_blocks, joint_matrix, require_square
from jaccli.engine.evaluate import blaming_user_code
from jaccli.engine.finite import nonfinite_notes
from jaccli.engine.guard import JSON_BYTES_PER_NUMBER, require_within_budget
from jaccli.engine.hessian import as_compositions, compute_hvp, gradient_problem, hessian_result
from jaccli.engine.jacobian import (
    Progress,
    Strategy,
    compute_jacobian,
    has_separable_axis,
    plan_inputs_only,
    plan_jacobian,
)
from jaccli.engine.jvp import compute_jvp
from jaccli.engine.problem import Problem
from jaccli.engine.reference import (
    check_hessian_result,
    check_hvp_result,
    check_jacobian_result,
    check_jvp_result,
    check_vjp_result,
)
from jaccli.engine.views import choose_view, slice_view
from jaccli.engine.vjp import compute_vjp
from jaccli.errors import UsageError
from jaccli.functions.model import AxisPair
from jaccli.result import HessianResult, HvpResult, JacobianResult, JvpResult, PlanReport, VjpResult
from jaccli.spec import Cotangent, Direction

Params = ParamSpec("Params")
Returned = TypeVar("Returned")
ResultType = TypeVar("ResultType", JacobianResult, VjpResult, JvpResult, HessianResult, HvpResult)

DEFAULT_VIEW_SLICES = 64
"""Past this many slices, vjp shows the plain result unless --view asks for the slices."""


def require_json_fits(problem: Problem, budget: int | None, *, batched: bool = False) -> None:
    """A JSON document of a huge J would need many times J's memory: refuse it up front."""
    if batched:
        numbers = plan_batched(problem, budget).result_bytes // problem.torch_dtype.itemsize
        shape = "per-sample"
    else:
        numbers = problem.output_count * problem.input_count
        shape = f"{problem.output_count}×{problem.input_count}"
    require_within_budget(
        f"--json of the {shape} Jacobian ({numbers} numbers)",
        numbers * JSON_BYTES_PER_NUMBER,
        budget,
        "use --out j.npy (or .safetensors) for the numbers, --batched, or vjp",
    )


def plan_report(
    problem: Problem,
    strategy: Strategy = Strategy.AUTO,
    *,
    budget: int | None = None,
    batched: bool = False,
) -> PlanReport:
    """What computing J would take, without computing it (the inputs may hold no values)."""
    if problem.output_unknown is not None:
        return PlanReport(
            function_name=problem.function.name,
            formula=problem.function.formula,
            dtype=problem.dtype,
            input_shapes={name: tuple(t.shape) for name, t in problem.inputs.items()},
            output_shapes={},
            wrt=problem.wrt,
            plan=plan_inputs_only(problem, budget),
            per_sample=None,
            batched=batched,
            output_unknown=problem.output_unknown,
        )
    per_sample = plan_batched(problem, budget) if batched or has_separable_axis(problem) else None
    return PlanReport(
        function_name=problem.function.name,
        formula=problem.function.formula,
        dtype=problem.dtype,
        input_shapes={name: tuple(t.shape) for name, t in problem.inputs.items()},
        output_shapes=problem.output_shapes,
        wrt=problem.wrt,
        plan=per_sample if batched and per_sample else plan_jacobian(problem, strategy, budget),
        per_sample=per_sample,
        batched=batched,
    )


def blames_user_code(
    run: Callable[Concatenate[Problem, Params], Returned],
) -> Callable[Concatenate[Problem, Params], Returned]:
    """`run(problem, …)` under `blaming_user_code(problem.function)`."""

    @functools.wraps(run)
    def wrapper(problem: Problem, *args: Params.args, **kwargs: Params.kwargs) -> Returned:
        with blaming_user_code(problem.function):
            return run(problem, *args, **kwargs)

    return wrapper


@blames_user_code
def run_jacobian(
    problem: Problem,
    strategy: Strategy = Strategy.AUTO,
    *,
    budget: int | None = None,
    view: str | None = None,
    check: bool = False,
    batched: bool = False,
    progress: Progress | None = None,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> JacobianResult:
    """J (or with `batched` its diagonal blocks), with the per-slice view `view` (None: none)
    and the check when asked."""
    if batched:
        if view is not None or check:
            raise UsageError(
                f"--batched already shows J block by block; drop {'--view' if view else '--check'}"
            )
        return _warned(check_jacobian_result(problem, compute_batched(problem, budget, progress)))
    chosen = choose_view(problem, view) if view is not None else None
    if check:  # the other mode's J and the finite-difference J sit beside this one
        result_bytes = problem.output_count * problem.input_count * problem.torch_dtype.itemsize
        require_within_budget(
            "--check (three Jacobians at once)", 3 * result_bytes, budget, "drop --check"
        )
    result = check_jacobian_result(problem, compute_jacobian(problem, strategy, budget, progress))
    if chosen is not None:
        wrt, name, axes = chosen
        (jacobians,) = result.jacobians.values()
        result = replace(
            result, view=slice_view(problem, wrt, name, axes, jacobians[wrt], None, budget)
        )
    result = _warned(result, problem)
    if check:
        result = replace(result, check=check_jacobian(problem, result, progress, check_options))
    return result


def run_det(
    problem: Problem,
    strategy: Strategy = Strategy.AUTO,
    *,
    budget: int | None = None,
    check: bool = False,
    batched: bool = False,
    progress: Progress | None = None,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> JacobianResult:
    """J (or its diagonal blocks) and det J (NOTE [the Jacobian determinant])."""
    size = require_square(problem, batched)
    if not batched:  # a float64 copy of J, then its LU factors, then JᵀJ and its Cholesky's
        result_bytes = problem.output_count * problem.input_count * problem.torch_dtype.itemsize
        require_within_budget(
            f"det of the {size}×{size} J (J, a float64 copy and its factors)",
            result_bytes + 3 * size * size * 8,
            budget,
            "use --batched for the determinants of diagonal blocks, or smaller shapes",
        )
    result = run_jacobian(
        problem,
        strategy,
        budget=budget,
        check=check,
        batched=batched,
        progress=progress,
        check_options=check_options,
    )
    ((_, jacobians),) = result.jacobians.items()
    matrices = joint_blocks(jacobians, size) if batched else joint_matrix(jacobians, size)
    determinant = compute_determinant(matrices, problem.wrt, problem.torch_dtype)
    notes = (*result.notes, *determinant_notes(determinant, problem.dtype))
    return replace(result, determinant=determinant, notes=notes)


def _product_view(
    problem: Problem, requested: str | None
) -> tuple[tuple[str, str, AxisPair] | None, tuple[str, ...]]:
    """The view of a product to show: the one requested, or the natural one of a single input
    that decomposes unless it has more than DEFAULT_VIEW_SLICES slices (then a note says so)."""
    chosen = choose_view(problem, requested)
    if chosen is not None and requested is None:
        wrt, name, axes = chosen
        count = problem.inputs[wrt].shape[axes[0]]
        if count > DEFAULT_VIEW_SLICES:
            return None, (
                f"{count} slices are too many to show by default; --view {name} shows them",
            )
    return chosen, ()


@blames_user_code
def run_vjp(
    problem: Problem,
    cotangent: Cotangent,
    *,
    budget: int | None = None,
    view: str | None = None,
    check: bool = False,
    progress: Progress | None = None,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> VjpResult:
    """vᵀ·J, with the per-slice view `view` (None: the natural one of a single input that
    decomposes, unless it has more than DEFAULT_VIEW_SLICES slices) and the check when asked."""
    chosen, notes = _product_view(problem, view)
    result = _noted(check_vjp_result(problem, compute_vjp(problem, cotangent)), notes)
    if chosen is not None:
        wrt, name, axes = chosen
        (v,) = result.cotangents.values()
        result = replace(
            result, view=slice_view(problem, wrt, name, axes, result.vjps[wrt], v, budget)
        )
    result = _warned(result)
    if check:
        result = replace(result, check=check_vjp(problem, result, progress, check_options))
    return result


@blames_user_code
def run_jvp(
    problem: Problem,
    tangent: Direction,
    *,
    budget: int | None = None,
    view: str | None = None,
    check: bool = False,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> JvpResult:
    """J·v, with the per-slice view `view` (None: as run_vjp chooses), and the check when
    asked."""
    chosen, notes = _product_view(problem, view)
    if check:  # the check forms J by reverse mode
        result_bytes = problem.output_count * problem.input_count * problem.torch_dtype.itemsize
        require_within_budget("--check (J by reverse mode)", result_bytes, budget, "drop --check")
    result = _noted(check_jvp_result(problem, compute_jvp(problem, tangent)), notes)
    if chosen is not None:
        wrt, name, axes = chosen
        (output,) = result.jvps
        shown = slice_view(
            problem,
            wrt,
            name,
            axes,
            result.jvps[output],
            None,
            budget,
            tangent=result.tangents[wrt],
        )
        result = replace(result, view=shown)
    result = _warned(result)
    if check:
        result = replace(result, check=check_jvp(problem, result, check_options))
    return result


@blames_user_code
def run_hessian(
    problem: Problem,
    strategy: Strategy = Strategy.AUTO,
    *,
    budget: int | None = None,
    check: bool = False,
    progress: Progress | None = None,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> HessianResult:
    """H (NOTE [the Hessian is the Jacobian of the gradient]) and, when asked, its check: the
    other composition and central differences of the gradient."""
    outputs: dict[str, torch.Tensor] = {}  # y, from the gradient's calls at the point
    gradient = gradient_problem(problem, outputs)
    if check:  # the other composition's H and the differences' H sit beside this one
        result_bytes = gradient.output_count * gradient.input_count * gradient.torch_dtype.itemsize
        require_within_budget(
            "--check (three Hessians at once)", 3 * result_bytes, budget, "drop --check"
        )
    jacobian = compute_jacobian(gradient, strategy, budget, progress)
    computed = hessian_result(problem, jacobian, dict(outputs) or None)
    result = _warned(check_hessian_result(problem, computed))
    if check:
        check_of_gradient = check_jacobian(gradient, jacobian, progress, check_options)
        result = replace(result, check=as_compositions(check_of_gradient))
    return result


@blames_user_code
def run_hvp(
    problem: Problem,
    vector: Direction,
    *,
    check: bool = False,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> HvpResult:
    """H·v without forming H, and the check when asked."""
    result = _warned(check_hvp_result(problem, compute_hvp(problem, vector)))
    if check:
        result = replace(result, check=check_hvp(problem, result, check_options))
    return result


def _warned(result: ResultType, problem: Problem | None = None) -> ResultType:
    """The result with a warning for each output or computed array that is not finite (with
    `problem`, telling structural zeros apart: NOTE [a NaN that is a structural zero])."""
    return _noted(result, nonfinite_notes(result, problem))


def _noted(result: ResultType, notes: tuple[str, ...]) -> ResultType:
    """The result with `notes` added to its own (itself when there are none)."""
    return replace(result, notes=(*result.notes, *notes)) if notes else result
