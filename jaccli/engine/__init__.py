"""The math: Jacobians and VJPs by torch autograd, handed on as plain result data.

Imports torch; the CLI imports this package only inside the commands that compute.
"""

from jaccli.engine.jacobian import Strategy, choose_strategy, compute_jacobian
from jaccli.engine.problem import Problem, prepare
from jaccli.engine.run import (
    plan_report,
    require_json_fits,
    run_det,
    run_hessian,
    run_hvp,
    run_jacobian,
    run_jvp,
    run_vjp,
)
from jaccli.engine.vjp import compute_vjp
from jaccli.result import Evaluation, InputValue, JacobianResult, Plan, PlanReport, VjpResult

__all__ = [
    "Evaluation",
    "InputValue",
    "JacobianResult",
    "Plan",
    "PlanReport",
    "Problem",
    "Strategy",
    "VjpResult",
    "choose_strategy",
    "compute_jacobian",
    "compute_vjp",
    "plan_report",
    "prepare",
    "require_json_fits",
    "run_det",
    "run_hessian",
    "run_hvp",
    "run_jacobian",
    "run_jvp",
    "run_vjp",
]
