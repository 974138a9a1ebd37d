"""What each computing command does with a Problem, by family: first order (jacobian, det and
check), products (vjp, jvp, hvp) and second order (hessian).

The runner (jaccli/runner/__init__.py) does the rest the same way for every command: it builds
the Problem, plans, computes at one point or at many, and hands on the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaccli.render.document import (
    check_document,
    hessian_document,
    hvp_document,
    jacobian_document,
    jvp_document,
    sparse_hessian_document,
    sparse_jacobian_document,
    vjp_document,
)
from jaccli.request import Request
from jaccli.spec import Direction

if TYPE_CHECKING:
    from jaccli.engine import Problem
    from jaccli.engine.check import CheckOptions
    from jaccli.engine.jacobian import Progress
    from jaccli.engine.sparse.run import Prepared
    from jaccli.result import Result


@dataclass(frozen=True)
class Command:
    """One computing command, as the runner calls it."""

    compute: Callable[[Problem, Request, Direction | None, Progress | None], Result]
    """At one point: the result with the view, the check and the progress asked for."""
    at_point: Callable[[Problem, Request, Direction | None], Result]
    """At each of --points: the plain result (views and checks work at one point)."""
    document: Callable[[Result], dict[str, Any]]
    out_keys: Callable[[Problem], list[str]]
    """The names of the arrays --out would hold."""
    planned: Callable[[Problem, Request], Problem] | None = None
    """The Problem whose J --plan shows (refusing what cannot be computed at all), and
    whose JSON document is refused up front when too large; None: no --plan."""
    direction: tuple[str, str] | None = None
    """(option, part) of a product's vector: `--cotangent` in the `output`s' shapes, …"""
    jacobians_in_document: bool = True
    """Whether the document holds the Jacobians (not `check`'s, which holds only the check)."""


def _check_options(request: Request) -> CheckOptions:
    from jaccli.engine.check import CheckOptions

    compute = request.compute
    return CheckOptions(compute.rtol, compute.atol, compute.eps)


def _strategy(request: Request) -> Any:
    from jaccli.engine import Strategy

    return Strategy(request.compute.strategy)


# Sparse J and H (--sparse): the pattern found once for every point it holds at.


_kept: dict[str, Any] = {}
"""The request whose pattern was found last, and that pattern (NOTE [a pattern found once] in
engine/sparse/run.py)."""


def sparse_mode(request: Request) -> str:
    """The compressed passes' mode: `fwd` or `rev` as --strategy asks, else `auto`."""
    strategy = request.compute.strategy
    return strategy if strategy in ("fwd", "rev") else "auto"


def prepared_pattern(problem: Problem, request: Request) -> Prepared:
    """J's pattern (H's for hessian) with J's colouring, kept for the request's next points
    where it holds at every point."""
    from jaccli.engine.sparse.run import coloured, prepare_pattern

    kept = _kept.get("prepared")
    if _kept.get("request") is request and kept is not None and kept.reusable:
        return kept  # type: ignore[no-any-return]
    hessian = request.command == "hessian"
    prepared = prepare_pattern(
        problem,
        request.compute.sparsity,
        hessian=hessian,
        budget=request.limits.budget,
        value_limit=request.limits.value_limit,
    )
    prepared = coloured(prepared, sparse_mode(request))
    _kept.update(request=request, prepared=prepared)
    return prepared


def _sparse_jacobian(
    problem: Problem, request: Request, progress: Progress | None, *, check: bool
) -> Result:
    from jaccli.engine.sparse.run import run_sparse_jacobian

    return run_sparse_jacobian(  # type: ignore[return-value]
        problem,
        prepared_pattern(problem, request),
        mode=sparse_mode(request),
        budget=request.limits.budget,
        det=request.command == "det",
        check=check,
        check_options=_check_options(request),
        progress=progress,
    )


def _sparse_hessian(
    problem: Problem, request: Request, progress: Progress | None, *, check: bool
) -> Result:
    from jaccli.engine.sparse.run import run_sparse_hessian

    return run_sparse_hessian(  # type: ignore[return-value]
        problem,
        prepared_pattern(problem, request),
        budget=request.limits.budget,
        check=check,
        check_options=_check_options(request),
        progress=progress,
    )


def _jacobian_or_sparse_document(result: Result) -> dict[str, Any]:
    from jaccli.result import SparseJacobianResult

    if isinstance(result, SparseJacobianResult):
        return sparse_jacobian_document(result)
    return jacobian_document(result)  # type: ignore[arg-type]


def _hessian_or_sparse_document(result: Result) -> dict[str, Any]:
    from jaccli.result import SparseHessianResult

    if isinstance(result, SparseHessianResult):
        return sparse_hessian_document(result)
    return hessian_document(result)  # type: ignore[arg-type]


# First order: J, det J, and the gradient check.


def _jacobian(problem: Problem, request: Request, _: Any, progress: Progress | None) -> Result:
    from jaccli.engine import run_jacobian

    compute = request.compute
    if compute.sparse:
        return _sparse_jacobian(problem, request, progress, check=compute.check)
    return run_jacobian(
        problem,
        _strategy(request),
        budget=request.limits.budget,
        check=compute.check,
        batched=compute.batched,
        progress=progress,
        view=compute.view,
        check_options=_check_options(request),
    )


def _det(problem: Problem, request: Request, _: Any, progress: Progress | None) -> Result:
    from jaccli.engine import run_det

    compute = request.compute
    if compute.sparse:
        return _sparse_jacobian(problem, request, progress, check=compute.check)
    return run_det(
        problem,
        _strategy(request),
        budget=request.limits.budget,
        check=compute.check,
        batched=compute.batched,
        progress=progress,
        check_options=_check_options(request),
    )


def _jacobian_at_point(problem: Problem, request: Request, _: Any) -> Result:
    from jaccli.engine import run_det, run_jacobian

    if request.compute.sparse:
        return _sparse_jacobian(problem, request, None, check=False)
    run = run_det if request.command == "det" else run_jacobian
    return run(problem, _strategy(request), budget=request.limits.budget)


def _square_planned(problem: Problem, request: Request) -> Problem:
    """J's problem, refused now when det J cannot be taken of it."""
    if request.command == "det" and problem.output_unknown is None:
        from jaccli.engine.det import require_square

        require_square(problem, request.compute.batched)
    return problem


def _jacobian_keys(problem: Problem) -> list[str]:
    from jaccli.render.files import jacobian_keys

    return jacobian_keys(list(problem.output_shapes), list(problem.wrt))


def _det_keys(problem: Problem) -> list[str]:
    from jaccli.render.files import DETERMINANT_KEYS

    return _jacobian_keys(problem) + list(DETERMINANT_KEYS)


def _check(problem: Problem, request: Request, _: Any, progress: Progress | None) -> Result:
    from jaccli.engine import run_jacobian

    if request.compute.sparse:
        return _sparse_jacobian(problem, request, progress, check=True)
    return run_jacobian(
        problem,
        budget=request.limits.budget,
        check=True,
        progress=progress,
        check_options=_check_options(request),
    )


def _check_at_point(problem: Problem, request: Request, _: Any) -> Result:
    from jaccli.engine import run_jacobian

    if request.compute.sparse:
        return _sparse_jacobian(problem, request, None, check=True)
    check_options = _check_options(request)
    return run_jacobian(
        problem, budget=request.limits.budget, check=True, check_options=check_options
    )


# Products: vᵀ·J, J·v and H·v, with the vector every point shares.


def _vjp(problem: Problem, request: Request, vector: Any, progress: Progress | None) -> Result:
    from jaccli.engine import run_vjp

    return run_vjp(
        problem,
        vector,
        budget=request.limits.budget,
        view=request.compute.view,
        check=request.compute.check,
        progress=progress,
        check_options=_check_options(request),
    )


def _vjp_at_point(problem: Problem, request: Request, vector: Any) -> Result:
    from jaccli.engine import run_vjp

    return run_vjp(problem, vector, budget=request.limits.budget, view="full")


def _jvp(problem: Problem, request: Request, vector: Any, _: Progress | None) -> Result:
    from jaccli.engine import run_jvp

    return run_jvp(
        problem,
        vector,
        budget=request.limits.budget,
        view=request.compute.view,
        check=request.compute.check,
        check_options=_check_options(request),
    )


def _jvp_at_point(problem: Problem, request: Request, vector: Any) -> Result:
    from jaccli.engine import run_jvp

    return run_jvp(problem, vector, budget=request.limits.budget, view="full")


def _hvp(problem: Problem, request: Request, vector: Any, _: Progress | None) -> Result:
    from jaccli.engine import run_hvp

    return run_hvp(
        problem, vector, check=request.compute.check, check_options=_check_options(request)
    )


def _hvp_at_point(problem: Problem, request: Request, vector: Any) -> Result:
    from jaccli.engine import run_hvp

    return run_hvp(problem, vector)


def _wrt_keys(problem: Problem) -> list[str]:
    return list(problem.wrt)


def _output_keys(problem: Problem) -> list[str]:
    return list(problem.output_shapes)


# Second order: H, the Jacobian of the gradient.


def _hessian(problem: Problem, request: Request, _: Any, progress: Progress | None) -> Result:
    from jaccli.engine import run_hessian

    if request.compute.sparse:
        return _sparse_hessian(problem, request, progress, check=request.compute.check)
    return run_hessian(
        problem,
        _strategy(request),
        budget=request.limits.budget,
        check=request.compute.check,
        progress=progress,
        check_options=_check_options(request),
    )


def _hessian_at_point(problem: Problem, request: Request, _: Any) -> Result:
    from jaccli.engine import run_hessian

    if request.compute.sparse:
        return _sparse_hessian(problem, request, None, check=False)
    return run_hessian(problem, _strategy(request), budget=request.limits.budget)


def _gradient_planned(problem: Problem, request: Request) -> Problem:
    """The gradient's problem: H is its J."""
    from jaccli.engine.hessian import gradient_problem

    return gradient_problem(problem)


def _hessian_keys(problem: Problem) -> list[str]:
    from jaccli.render.files import hessian_keys

    return hessian_keys(list(problem.output_shapes), list(problem.wrt))


def _no_keys(problem: Problem) -> list[str]:
    return []


COMMANDS = {
    "jacobian": Command(
        _jacobian,
        _jacobian_at_point,
        _jacobian_or_sparse_document,
        _jacobian_keys,
        _square_planned,
    ),
    "det": Command(
        _det, _jacobian_at_point, _jacobian_or_sparse_document, _det_keys, _square_planned
    ),
    "check": Command(
        _check, _check_at_point, check_document, _no_keys, jacobians_in_document=False
    ),
    "vjp": Command(
        _vjp, _vjp_at_point, vjp_document, _wrt_keys, direction=("--cotangent", "output")
    ),
    "jvp": Command(
        _jvp, _jvp_at_point, jvp_document, _output_keys, direction=("--tangent", "input")
    ),
    "hvp": Command(_hvp, _hvp_at_point, hvp_document, _wrt_keys, direction=("--vector", "input")),
    "hessian": Command(
        _hessian,
        _hessian_at_point,
        _hessian_or_sparse_document,
        _hessian_keys,
        _gradient_planned,
    ),
}
"""Every computing command, by name."""
