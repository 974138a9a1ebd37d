"""The vector-Jacobian product vᵀ·J, computed as `backward(v)` computes it."""

from __future__ import annotations

import torch

from jaccli.engine.evaluate import call_function, describe, to_numpy
from jaccli.engine.problem import Problem
from jaccli.errors import UsageError
from jaccli.result import VjpResult
from jaccli.spec import ArrayData, Cotangent, format_shape


def make_cotangents(problem: Problem, cotangent: Cotangent) -> dict[str, torch.Tensor]:
    """v for each output, in its shape: all ones, seeded normal draws, or the given array."""
    dtype = problem.torch_dtype
    if cotangent == "ones":
        return {
            name: torch.ones(shape, dtype=dtype) for name, shape in problem.output_shapes.items()
        }
    if cotangent == "randn":
        return {
            name: torch.randn(shape, generator=problem.generator, dtype=torch.float64).to(dtype)
            for name, shape in problem.output_shapes.items()
        }
    assert isinstance(cotangent, ArrayData)
    if len(problem.output_shapes) != 1:
        raise UsageError(
            f"--cotangent as an array needs a single output; {problem.function.name} returns "
            f"{', '.join(problem.output_shapes)} (use ones or randn)",
            code="bad_cotangent",
        )
    ((name, shape),) = problem.output_shapes.items()
    if cotangent.shape != shape:
        raise UsageError(
            f"--cotangent has shape {format_shape(cotangent.shape)}, but "
            f"{problem.function.name}'s output {name} has shape {format_shape(shape)}; "
            f"give an array of {name}'s shape, ones or randn",
            code="bad_cotangent",
        )
    return {name: torch.from_numpy(cotangent.values).to(torch.float64).reshape(shape).to(dtype)}


def compute_vjp(problem: Problem, cotangent: Cotangent) -> VjpResult:
    """vᵀ·J for each `wrt` input, by one reverse pass: the `x.grad` of `y.backward(v)`.

    With several outputs, v has a part for each and the products add up, as in
    `torch.autograd.backward(outputs, cotangents)`.
    """
    cotangents = make_cotangents(problem, cotangent)
    leaves = {
        name: tensor.detach().requires_grad_(name in problem.wrt)
        for name, tensor in problem.inputs.items()
    }
    with torch.enable_grad():
        outputs = call_function(problem.function, leaves)
        wrt_leaves = [leaves[name] for name in problem.wrt]
        connected = [name for name, y in outputs.items() if y.requires_grad]
        if connected:
            grads = torch.autograd.grad(
                [outputs[name] for name in connected],
                wrt_leaves,
                grad_outputs=[cotangents[name] for name in connected],
                allow_unused=True,
                materialize_grads=True,
            )
        else:  # no output depends on any wrt input
            grads = tuple(torch.zeros_like(leaf) for leaf in wrt_leaves)
    return VjpResult(
        evaluation=describe(problem, outputs),
        cotangents={name: to_numpy(v) for name, v in cotangents.items()},
        vjps={name: to_numpy(grad) for name, grad in zip(problem.wrt, grads, strict=True)},
    )
