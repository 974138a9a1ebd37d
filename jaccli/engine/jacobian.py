"""The Jacobian J of y = f(inputs) for each `wrt` input, with `J.shape == y.shape + x.shape`.

# NOTE [choosing a strategy]
Start-up dominates small problems (see shared/PERF-NOTES.md): the first `torch.func` call
imports torch._dynamo (+1.0–1.5 s), the first forward-mode dual tensor costs about 0.2 s, and a
plain `torch.autograd.grad` costs nothing extra. So when one side of J is small, a Python loop
of single passes along that side wins: one backward pass per output element (`loop-rev`), or one
forward pass per input element (`loop-fwd`) when there are far fewer inputs. Past that, the
vectorized `torch.func.jacrev` (fewer outputs than inputs) or `torch.func.jacfwd` (more outputs)
win by 60–150× over the wrong mode on lopsided shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import torch

from jaccli.engine.evaluate import call_function, describe, to_numpy
from jaccli.engine.guard import require_within_budget
from jaccli.engine.problem import Problem
from jaccli.errors import ComputationError
from jaccli.result import JacobianResult

LOOP_LIMIT = 64
"""Up to this many passes, a loop beats the start-up of the vectorized methods."""


class Strategy(str, Enum):
    """How J is computed: a loop of single passes, or vectorized reverse or forward mode."""

    AUTO = "auto"
    LOOP = "loop"
    REV = "rev"
    FWD = "fwd"


# Peak memory as a multiple of J's size above the inputs (measured, shared/PERF-NOTES.md).
PEAK_FACTOR = {"loop-rev": 2, "loop-fwd": 2, "rev": 2, "fwd": 3}


def choose_strategy(requested: Strategy, n_out: int, n_in: int) -> tuple[str, str]:
    """The method to use and the reason, from the output and input element counts."""
    fewer_outputs = n_out <= n_in
    if requested is Strategy.LOOP:
        method = "loop-rev" if fewer_outputs else "loop-fwd"
        return method, "requested with --strategy loop"
    if requested is Strategy.REV:
        return "rev", "requested with --strategy rev"
    if requested is Strategy.FWD:
        return "fwd", "requested with --strategy fwd"
    if n_out <= LOOP_LIMIT and fewer_outputs:
        return "loop-rev", f"{n_out} outputs: {n_out} backward passes start faster than vmap"
    if n_in <= LOOP_LIMIT and not fewer_outputs:
        return "loop-fwd", f"{n_in} inputs: {n_in} forward passes start faster than vmap"
    if fewer_outputs:
        return "rev", f"{n_out} outputs ≤ {n_in} inputs: reverse mode needs fewer passes"
    return "fwd", f"{n_out} outputs > {n_in} inputs: forward mode needs fewer passes"


def compute_jacobian(
    problem: Problem, strategy: Strategy = Strategy.AUTO, budget: int | None = None
) -> JacobianResult:
    """J for each `wrt` input, by the requested strategy or the one the sizes call for."""
    n_out = math.prod(problem.output_shape)
    n_in = sum(problem.inputs[name].numel() for name in problem.wrt)
    method, reason = choose_strategy(strategy, n_out, n_in)
    itemsize = problem.torch_dtype.itemsize
    require_within_budget(
        f"the {n_out}×{n_in} Jacobian ({method})",
        n_out * n_in * itemsize * PEAK_FACTOR[method],
        budget,
        "use vjp for one row combination, or smaller shapes",
    )
    primals, f = split_wrt(problem)
    y, jacobians = jacobian_of(f, primals, method)
    return JacobianResult(
        evaluation=describe(problem, y),
        jacobians={name: to_numpy(j) for name, j in zip(problem.wrt, jacobians, strict=True)},
        strategy=method,
        strategy_reason=reason,
    )


Method = Callable[
    [Callable[..., torch.Tensor], list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]
]


def jacobian_of(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], method: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y = f(*primals) and J of y for each primal, by `method` (a key of PEAK_FACTOR)."""
    return _METHODS[method](f, primals)


def split_wrt(problem: Problem) -> tuple[list[torch.Tensor], Callable[..., torch.Tensor]]:
    """The wrt tensors, and f as a function of them alone (other inputs held fixed)."""
    wrt = problem.wrt
    fixed = {name: t for name, t in problem.inputs.items() if name not in wrt}

    def f_of_wrt(*wrt_values: torch.Tensor) -> torch.Tensor:
        return call_function(problem, {**fixed, **dict(zip(wrt, wrt_values, strict=True))})

    return [problem.inputs[name] for name in wrt], f_of_wrt


def _loop_reverse(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One backward pass per output element: row i of J is ∂y[i]/∂x."""
    leaves = [p.detach().requires_grad_(True) for p in primals]
    with torch.enable_grad():
        y = f(*leaves)
        rows: list[list[torch.Tensor]] = [[] for _ in leaves]
        flat = y.reshape(-1)
        for i in range(flat.numel()):
            if flat.requires_grad:
                grads = torch.autograd.grad(
                    flat[i], leaves, retain_graph=True, allow_unused=True, materialize_grads=True
                )
            else:
                grads = tuple(torch.zeros_like(leaf) for leaf in leaves)
            for row, grad in zip(rows, grads, strict=True):
                row.append(grad)
    jacobians = [
        _stack(row, leaf, y.shape, along_output=True)
        for row, leaf in zip(rows, leaves, strict=True)
    ]
    return y.detach(), jacobians


def _loop_forward(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward-mode pass per input element: column j of J is ∂y/∂x[j]."""
    import torch.autograd.forward_ad as fwad

    y = f(*primals).detach()
    jacobians = []
    with fwad.dual_level():
        for k, primal in enumerate(primals):
            columns = []
            for j in range(primal.numel()):
                tangent = torch.zeros(primal.numel(), dtype=primal.dtype)
                tangent[j] = 1
                args = list(primals)
                args[k] = fwad.make_dual(primal, tangent.reshape(primal.shape))
                derivative = fwad.unpack_dual(f(*args)).tangent
                columns.append(torch.zeros_like(y) if derivative is None else derivative)
            jacobians.append(_stack(columns, primal, y.shape, along_output=False))
    return y, jacobians


def _stack(
    parts: list[torch.Tensor], x: torch.Tensor, y_shape: torch.Size, *, along_output: bool
) -> torch.Tensor:
    """Rows ∂y[i]/∂x (or columns ∂y/∂x[j]) into J of shape y.shape + x.shape."""
    if along_output:
        return torch.stack(parts).reshape((*y_shape, *x.shape))
    return torch.stack(parts, dim=-1).reshape((*y_shape, *x.shape))


def _vectorized(transform: Callable[..., Callable[..., object]]) -> Method:
    def compute(
        f: Callable[..., torch.Tensor], primals: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        argnums = tuple(range(len(primals)))
        try:
            jacobians, y = transform(f, argnums=argnums, has_aux=True)(*primals)  # type: ignore[misc]
        except ComputationError:
            raise
        except RuntimeError as error:
            raise ComputationError(
                f"the function cannot be vectorized ({str(error).splitlines()[0]}); "
                "try --strategy loop"
            ) from error
        return y, list(jacobians)

    return compute


def _with_aux(f: Callable[..., torch.Tensor]) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    def f_and_value(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = f(*args)
        return y, y.detach()

    return f_and_value


def _jacrev(f: Callable[..., torch.Tensor], **options: object) -> Callable[..., object]:
    return torch.func.jacrev(_with_aux(f), **options)


def _jacfwd(f: Callable[..., torch.Tensor], **options: object) -> Callable[..., object]:
    return torch.func.jacfwd(_with_aux(f), **options)


_METHODS: dict[str, Method] = {
    "loop-rev": _loop_reverse,
    "loop-fwd": _loop_forward,
    "rev": _vectorized(_jacrev),
    "fwd": _vectorized(_jacfwd),
}
