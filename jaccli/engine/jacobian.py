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

import numpy as np
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
    """J of each output for each `wrt` input, by the requested strategy or the one the sizes
    call for."""
    n_out, n_in = problem.output_count, problem.input_count
    method, reason = choose_strategy(strategy, n_out, n_in)
    itemsize = problem.torch_dtype.itemsize
    require_within_budget(
        f"the {n_out}×{n_in} Jacobian ({method})",
        n_out * n_in * itemsize * PEAK_FACTOR[method],
        budget,
        "use vjp for one row combination, or smaller shapes",
    )
    primals, f = split_wrt(problem)
    joined_y, joined_jacobians = jacobian_of(f, primals, method)
    jacobians = split_jacobians(problem, joined_jacobians)
    return JacobianResult(
        evaluation=describe(problem, split_outputs(problem, joined_y)),
        jacobians=jacobians,
        strategy=method,
        strategy_reason=reason,
        notes=_independence_notes(problem, jacobians),
    )


def split_outputs(problem: Problem, joined: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs by name, from the one tensor `split_wrt`'s function returns."""
    names = list(problem.output_shapes)
    if len(names) == 1:
        return {names[0]: joined}
    sizes = [math.prod(shape) for shape in problem.output_shapes.values()]
    return {
        name: part.reshape(problem.output_shapes[name])
        for name, part in zip(names, joined.split(sizes), strict=True)
    }


def split_jacobians(
    problem: Problem, joined: list[torch.Tensor]
) -> dict[str, dict[str, np.ndarray]]:
    """jacobians[output][wrt] from J of the joined output for each wrt input."""
    names = list(problem.output_shapes)
    blocks: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    sizes = [math.prod(shape) for shape in problem.output_shapes.values()]
    for wrt, j in zip(problem.wrt, joined, strict=True):
        x_shape = problem.inputs[wrt].shape
        parts = [j] if len(names) == 1 else j.split(sizes)
        for name, part in zip(names, parts, strict=True):
            blocks[name][wrt] = to_numpy(part.reshape((*problem.output_shapes[name], *x_shape)))
    return blocks


def _independence_notes(
    problem: Problem, jacobians: dict[str, dict[str, np.ndarray]]
) -> tuple[str, ...]:
    """A warning for each output that does not depend on an input at all (J is zero there)."""
    if all(j.any() for block in jacobians.values() for j in block.values()):
        return ()
    leaves = {
        name: t.detach().requires_grad_(name in problem.wrt) for name, t in problem.inputs.items()
    }
    notes = []
    with torch.enable_grad():
        outputs = call_function(problem.function, leaves)
        for name, y in outputs.items():
            wrt_leaves = [leaves[w] for w in problem.wrt]
            if y.requires_grad:
                grads = torch.autograd.grad(
                    y.sum(), wrt_leaves, allow_unused=True, retain_graph=True
                )
            else:
                grads = (None,) * len(wrt_leaves)
            notes += [
                f"{name} does not depend on {wrt}: its Jacobian is zero"
                for wrt, grad in zip(problem.wrt, grads, strict=True)
                if grad is None
            ]
    return tuple(notes)


Method = Callable[
    [Callable[..., torch.Tensor], list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]
]


def jacobian_of(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], method: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y = f(*primals) and J of y for each primal, by `method` (a key of PEAK_FACTOR)."""
    return _METHODS[method](f, primals)


def split_wrt(problem: Problem) -> tuple[list[torch.Tensor], Callable[..., torch.Tensor]]:
    """The wrt tensors, and f as a function of them alone (other inputs held fixed) that
    returns one tensor: the single output as it is, several flattened end to end."""
    wrt = problem.wrt
    fixed = {name: t for name, t in problem.inputs.items() if name not in wrt}
    names = list(problem.output_shapes)

    def f_of_wrt(*wrt_values: torch.Tensor) -> torch.Tensor:
        inputs = {**fixed, **dict(zip(wrt, wrt_values, strict=True))}
        outputs = call_function(problem.function, inputs)
        if len(names) == 1:
            return outputs[names[0]]
        return torch.cat([outputs[name].reshape(-1) for name in names])

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
