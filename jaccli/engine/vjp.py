"""The vector-Jacobian product vᵀ·J, computed as `backward(v)` computes it."""

from __future__ import annotations

import torch

from jaccli.engine.directions import make_directions
from jaccli.engine.evaluate import as_leaf, to_numpy, vector_jacobian
from jaccli.engine.jacobian import CallNotes, split_outputs, split_wrt
from jaccli.engine.problem import Problem, describe
from jaccli.engine.trust import disagreement, probe_vjp
from jaccli.result import VjpResult
from jaccli.spec import Cotangent


def compute_vjp(problem: Problem, cotangent: Cotangent) -> VjpResult:
    """vᵀ·J for each `wrt` input, by one reverse pass: the `x.grad` of `y.backward(v)`,
    verified by the correctness guard.

    With several outputs, v has a part for each and the products add up, as in
    `torch.autograd.backward(outputs, cotangents)`.
    """
    cotangents = make_directions(problem, cotangent, problem.output_shapes, "--cotangent", "output")
    primals, f = split_wrt(problem)
    call_notes = CallNotes()
    _, f_watched = split_wrt(problem, notes=call_notes)  # the guard's call gives the warnings
    joined_v = torch.cat([v.reshape(-1) for v in cotangents.values()])
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y = f(*leaves)
        joined_v = joined_v.reshape(y.shape)
        if y.requires_grad:
            grads = vector_jacobian(y, leaves, joined_v)
        else:  # no output depends on any wrt input
            grads = tuple(torch.zeros_like(leaf) for leaf in leaves)
    guard = probe_vjp(f_watched, primals, joined_v, grads)
    notes = list(problem.notes) + list(call_notes.ensure(problem).notes)
    if guard.passed is False:
        notes.append(
            f"the correctness guard disagrees with backward(v): {disagreement(guard)}; the "
            "VJP shown is backward's (run jaccli check to compare with finite differences)"
        )
    return VjpResult(
        evaluation=describe(problem, split_outputs(problem, y.detach())),
        cotangents={name: to_numpy(v) for name, v in cotangents.items()},
        vjps={name: to_numpy(grad) for name, grad in zip(problem.wrt, grads, strict=True)},
        notes=tuple(notes),
        guard=guard,
    )
