"""The vector-Jacobian product vᵀ·J, computed as `backward(v)` computes it."""

from __future__ import annotations

import torch

from jaccli.engine.evaluate import as_leaf, describe, to_numpy, vector_jacobian
from jaccli.engine.jacobian import split_outputs, split_wrt, watch_notes
from jaccli.engine.problem import Problem
from jaccli.engine.trust import disagreement, probe_vjp
from jaccli.errors import UsageError
from jaccli.result import VjpResult
from jaccli.spec import ArrayData, Cotangent, Shape, format_shape


def _given(problem: Problem, name: str, shape: Shape, data: ArrayData) -> torch.Tensor:
    if data.shape != shape:
        raise UsageError(
            f"--cotangent has shape {format_shape(data.shape)}, but "
            f"{problem.function.name}'s output {name} has shape {format_shape(shape)}; "
            f"give an array of {name}'s shape, ones or randn",
            code="bad_cotangent",
        )
    return torch.from_numpy(data.values).reshape(shape).to(problem.torch_dtype)


def make_cotangents(problem: Problem, cotangent: Cotangent) -> dict[str, torch.Tensor]:
    """v for each output, in its shape: all ones, seeded normal draws, the given array (one
    output) or the given object of arrays by output name (several)."""
    dtype = problem.torch_dtype
    shapes = problem.output_shapes
    if cotangent == "ones":
        return {name: torch.ones(shape, dtype=dtype) for name, shape in shapes.items()}
    if cotangent == "randn":
        return {
            name: torch.randn(shape, generator=problem.generator, dtype=torch.float64).to(dtype)
            for name, shape in shapes.items()
        }
    names = ", ".join(shapes)
    if isinstance(cotangent, dict):
        if set(cotangent) != set(shapes):
            raise UsageError(
                f"--cotangent names {', '.join(cotangent)}; {problem.function.name}'s outputs "
                f"are {names}: give an array for each",
                code="bad_cotangent",
            )
        return {
            name: _given(problem, name, shape, cotangent[name]) for name, shape in shapes.items()
        }
    assert isinstance(cotangent, ArrayData)
    if len(shapes) != 1:
        raise UsageError(
            f"--cotangent as an array needs a single output; {problem.function.name} returns "
            f'{names} (give an object like {{"{next(iter(shapes))}": [...], ...}}, ones or '
            "randn)",
            code="bad_cotangent",
        )
    ((name, shape),) = shapes.items()
    return {name: _given(problem, name, shape, cotangent)}


def compute_vjp(problem: Problem, cotangent: Cotangent) -> VjpResult:
    """vᵀ·J for each `wrt` input, by one reverse pass: the `x.grad` of `y.backward(v)`,
    verified by the correctness guard.

    With several outputs, v has a part for each and the products add up, as in
    `torch.autograd.backward(outputs, cotangents)`.
    """
    cotangents = make_cotangents(problem, cotangent)
    primals, f = split_wrt(problem)
    joined_v = torch.cat([v.reshape(-1) for v in cotangents.values()])
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y = f(*leaves)
        joined_v = joined_v.reshape(y.shape)
        if y.requires_grad:
            grads = vector_jacobian(y, leaves, joined_v)
        else:  # no output depends on any wrt input
            grads = tuple(torch.zeros_like(leaf) for leaf in leaves)
    guard = probe_vjp(f, primals, joined_v, grads)
    notes = list(problem.notes) + list(watch_notes(problem))
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
