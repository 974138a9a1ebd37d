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
    vjp_document,
)
from jaccli.request import Request
from jaccli.spec import Direction

if TYPE_CHECKING:
    from jaccli.engine import Problem
    from jaccli.engine.check import CheckOptions
    from jaccli.engine.jacobian import Progress
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


# First order: J, det J, and the gradient check.


def _jacobian(problem: Problem, request: Request, _: Any, progress: Progress | None) -> Result:
    from jaccli.engine import run_jacobian

    compute = request.compute
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

    return run_jacobian(
        problem,
        budget=request.limits.budget,
        check=True,
        progress=progress,
        check_options=_check_options(request),
    )


def _check_at_point(problem: Problem, request: Request, _: Any) -> Result:
    from jaccli.engine import run_jacobian

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
        _jacobian, _jacobian_at_point, jacobian_document, _jacobian_keys, _square_planned
    ),
    "det": Command(_det, _jacobian_at_point, jacobian_document, _det_keys, _square_planned),
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
        _hessian, _hessian_at_point, hessian_document, _hessian_keys, _gradient_planned
    ),
}
"""Every computing command, by name."""
