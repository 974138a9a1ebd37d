"""The Jacobian-vector product J·v, by forward mode: what `torch.func.jvp` computes.

Forward mode carries the tangents through one pass of the function. Where it cannot (an
operation or a custom autograd.Function without a forward-mode rule, autograd inside the
function that forward mode does not see), J·v comes from reverse-over-reverse instead: the
derivative in u of (uᵀJ)·v. Either is verified by the correctness guard against (uᵀJ)·v from a
plain reverse pass.

For a preset or an expression, which computes the same graph at every call, forward mode's own
call (made with its leaves requiring grad) gives the guard's reverse pass its graph and the
warnings (NOTE [the correctness guard] in trust.py): its tangents are forward mode's, the
reference reverse mode's. The user's own code gets a fresh call for the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from jaccli.engine.directions import make_directions
from jaccli.engine.evaluate import as_leaf, jacobian_vector, to_numpy
from jaccli.engine.jacobian import (
    CallNotes,
    forward_mode_without_dynamo,
    split_outputs,
    split_wrt,
)
from jaccli.engine.problem import Problem, describe
from jaccli.engine.trust import disagreement, probe_jvp
from jaccli.errors import ComputationError
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line
from jaccli.result import JvpResult
from jaccli.spec import Direction

FORWARD = "forward mode"
DOUBLE_BACKWARD = "reverse-over-reverse"


def forward_jvp(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], tangents: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """y and J·v by one forward-mode pass with every tangent at once."""
    import torch.autograd.forward_ad as fwad

    forward_mode_without_dynamo()

    with fwad.dual_level(), torch.enable_grad():
        duals = [
            fwad.make_dual(as_leaf(p), t.to(p.dtype))
            for p, t in zip(primals, tangents, strict=True)
        ]
        y, j_v = fwad.unpack_dual(f(*duals))
        y = y.detach()
        j_v = torch.zeros_like(y) if j_v is None else j_v.detach()
    return y, j_v


def double_backward_jvp(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], tangents: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """y and J·v by reverse-over-reverse."""
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y = f(*leaves)
        j_v = jacobian_vector(y, leaves, tangents) if y.requires_grad else torch.zeros_like(y)
    return y.detach(), j_v.detach()


METHODS = {FORWARD: forward_jvp, DOUBLE_BACKWARD: double_backward_jvp}


def compute_jvp(problem: Problem, tangent: Direction) -> JvpResult:
    """J·v for each output, summed over the `wrt` inputs, verified by the correctness guard:
    forward mode, or reverse-over-reverse where forward mode fails or fails the guard."""
    shapes = {name: tuple(problem.inputs[name].shape) for name in problem.wrt}
    tangents = make_directions(problem, tangent, shapes, "--tangent", "input")
    primals, f = split_wrt(problem)
    call_notes = CallNotes()
    _, f_watched = split_wrt(problem, notes=call_notes)  # the guard's call gives the warnings
    reuse = not problem.function.is_guest  # forward mode's call serves the guard (above)
    vs = [tangents[name] for name in problem.wrt]
    rejected: list[str] = []
    for method, compute in METHODS.items():
        call_notes.made = None
        try:
            y, j_v = compute(f_watched if reuse else f, primals, vs)
        except (ComputationError, RuntimeError, NotImplementedError) as error:
            raise_if_out_of_memory(error)
            why = error.message if isinstance(error, ComputationError) else first_line(error)
            rejected.append(f"{method} failed: {why[:200]}")
            continue
        made = call_notes.made if reuse and method == FORWARD else None
        call_notes.made = None
        guard = probe_jvp(f_watched, primals, vs, j_v, method, made)
        del made  # its graph is freed
        if guard.passed is not False:
            break
        rejected.append(f"{method} failed the correctness guard: {disagreement(guard)}")
    else:
        raise ComputationError(
            f"no method gives a J·v of {problem.function.name} that passes the correctness "
            f"guard: {'; '.join(rejected)}",
            code="guard_failed",
        )
    reason = "one pass carrying the tangents" if method == FORWARD else "forward mode failed"
    notes = list(problem.notes) + list(call_notes.ensure(problem).notes)
    if rejected:
        reason = "; ".join(rejected)
        notes.insert(0, f"{'; '.join(rejected)}; computed J·v by {method} instead")
    return JvpResult(
        evaluation=describe(problem, split_outputs(problem, y)),
        tangents={name: to_numpy(t) for name, t in tangents.items()},
        jvps={name: to_numpy(part) for name, part in split_outputs(problem, j_v).items()},
        method=method,
        method_reason=reason,
        notes=tuple(notes),
        guard=replace(guard, rejected=tuple(rejected)),
    )
