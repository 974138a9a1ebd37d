"""y = x² elementwise with a deliberately wrong backward at one entry, and the right one."""

from __future__ import annotations

import torch

from jaccli.functions.model import ELEMENTWISE, Function, InputSpec

WRONG_INDEX = 1


class SquareWithWrongBackward(torch.autograd.Function):
    """Forward x², backward 2x·g except at WRONG_INDEX, where it is 1.5 times too large."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = 2 * x * g
        grad[WRONG_INDEX] = grad[WRONG_INDEX] * 1.5
        return grad


def square(right: bool) -> Function:
    """A preset-like Function: the right x², or the one with the wrong backward."""
    call = (lambda x: x * x) if right else SquareWithWrongBackward.apply
    return Function(
        "square" if right else "bad_square",
        "y = x²",
        (InputSpec("x", (3,), separable=ELEMENTWISE),),
        call,
    )
