"""The vector-Jacobian product vᵀ·J, computed as `backward(v)` computes it."""

from __future__ import annotations

import torch

from jaccli.engine.evaluate import call_function, describe, to_numpy
from jaccli.engine.problem import Problem
from jaccli.errors import UsageError
from jaccli.result import VjpResult
from jaccli.spec import ArrayData, Cotangent, format_shape


def make_cotangent(problem: Problem, cotangent: Cotangent) -> torch.Tensor:
    """v in y's shape: all ones, seeded normal draws, or the given array."""
    shape = problem.output_shape
    if cotangent == "ones":
        return torch.ones(shape, dtype=problem.torch_dtype)
    if cotangent == "randn":
        draws = torch.randn(shape, generator=problem.generator, dtype=torch.float64)
        return draws.to(problem.torch_dtype)
    assert isinstance(cotangent, ArrayData)
    if cotangent.shape != shape:
        raise UsageError(
            f"--cotangent has shape {format_shape(cotangent.shape)}, but "
            f"{problem.function.name}'s output y has shape {format_shape(shape)}; "
            "give an array of y's shape, ones or randn",
            code="bad_cotangent",
        )
    return (
        torch.tensor(cotangent.values, dtype=torch.float64).reshape(shape).to(problem.torch_dtype)
    )


def compute_vjp(problem: Problem, cotangent: Cotangent) -> VjpResult:
    """vᵀ·J for each `wrt` input, by one reverse pass: the `x.grad` of `y.backward(v)`."""
    v = make_cotangent(problem, cotangent)
    leaves = {
        name: tensor.detach().requires_grad_(name in problem.wrt)
        for name, tensor in problem.inputs.items()
    }
    with torch.enable_grad():
        y = call_function(problem, leaves)
        wrt_leaves = [leaves[name] for name in problem.wrt]
        if y.requires_grad:
            grads = torch.autograd.grad(
                y, wrt_leaves, grad_outputs=v, allow_unused=True, materialize_grads=True
            )
        else:  # y does not depend on any wrt input
            grads = tuple(torch.zeros_like(leaf) for leaf in wrt_leaves)
    return VjpResult(
        evaluation=describe(problem, y),
        cotangent=to_numpy(v),
        vjps={name: to_numpy(grad) for name, grad in zip(problem.wrt, grads, strict=True)},
    )
