"""The preset functions: the lesson's expsum, add and matmul, and the Jacobians users meet most.

Callables import torch when called, never at import time, so `jaccli presets` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from jaccli.errors import UsageError
from jaccli.functions.model import (
    BATCHED_OVER_LEADING_AXES,
    ELEMENTWISE,
    Function,
    InputSpec,
    Separable,
)
from jaccli.spec import Shape, format_shape


def _require_dims(function: str, name: str, shape: Shape, at_least: int, why: str) -> None:
    if len(shape) < at_least:
        raise UsageError(
            f"{function}: {name} must have at least {at_least} dimension"
            f"{'s' if at_least > 1 else ''} ({why}); got {format_shape(shape)}"
        )


def _require_last_dim(function: str, name: str, shape: Shape, size: int, why: str) -> None:
    _require_dims(function, name, shape, 1, why)
    if shape[-1] != size:
        raise UsageError(
            f"{function}: {name}'s last dimension must be {size} ({why}); got {format_shape(shape)}"
        )


def _contraction_check(function: str, left: str, right: str) -> Any:
    """A shape check for `left @ right`: left's last dimension must equal right's first."""

    def check(shapes: Mapping[str, Shape]) -> None:
        left_shape, right_shape = shapes[left], shapes[right]
        _require_dims(function, left, left_shape, 1, f"{left} @ {right}")
        _require_dims(function, right, right_shape, 1, f"{left} @ {right}")
        inner_right = right_shape[-2] if len(right_shape) >= 2 else right_shape[0]
        right_axis = "second-to-last" if len(right_shape) > 2 else "first"
        if left_shape[-1] != inner_right:
            raise UsageError(
                f"{function}: {left} is {format_shape(left_shape)} and {right} is "
                f"{format_shape(right_shape)}: {left}'s last dimension ({left_shape[-1]}) must "
                f"equal {right}'s {right_axis} dimension ({inner_right})"
            )

    return check


def _expsum(x: Any) -> Any:
    return x.exp().sum(dim=1)


def _expsum_check(shapes: Mapping[str, Shape]) -> None:
    _require_dims("expsum", "x", shapes["x"], 2, "the sum runs over dim 1")


def _add(x: Any, a: Any) -> Any:
    return x + a


def _matmul(a: Any, b: Any) -> Any:
    return a @ b


def _sigmoid(x: Any) -> Any:
    return x.sigmoid()


def _softmax(x: Any) -> Any:
    return x.softmax(dim=-1)


def _last_dim_check(function: str) -> Any:
    def check(shapes: Mapping[str, Shape]) -> None:
        _require_dims(function, "x", shapes["x"], 1, "it reduces over the last dimension")

    return check


def _tanh_linear(x: Any, W: Any) -> Any:
    return (W @ x).tanh()


def _logsumexp(x: Any) -> Any:
    return x.logsumexp(dim=-1)


def _norm(x: Any) -> Any:
    import torch

    return torch.linalg.vector_norm(x, dim=-1)


def _polar(x: Any) -> Any:
    import torch

    r, theta = x[..., 0], x[..., 1]
    return torch.stack((r * theta.cos(), r * theta.sin()), dim=-1)


def _polar_check(shapes: Mapping[str, Shape]) -> None:
    _require_last_dim("polar", "x", shapes["x"], 2, "x[..., 0] is r and x[..., 1] is θ")


def _cross(a: Any, b: Any) -> Any:
    import torch

    return torch.linalg.cross(a, b, dim=-1)


def _cross_check(shapes: Mapping[str, Shape]) -> None:
    _require_last_dim("cross", "a", shapes["a"], 3, "vectors in 3-D")
    _require_last_dim("cross", "b", shapes["b"], 3, "vectors in 3-D")
    if shapes["a"] != shapes["b"]:
        raise UsageError(
            f"cross: a is {format_shape(shapes['a'])} and b is {format_shape(shapes['b'])}; "
            "they must have the same shape"
        )


# NOTE [separable axes] in model.py: what each `separable=` below promises.
PRESETS: dict[str, Function] = {
    function.name: replace(function, preset=True)
    for function in (
        Function(
            "expsum",
            "y = x.exp().sum(dim=1)",
            (InputSpec("x", (2, 3), separable=Separable(pairs=((0, 0),))),),
            _expsum,
            _expsum_check,
        ),
        Function(
            "add",
            "y = x + a",
            (
                InputSpec("x", (3,), separable=ELEMENTWISE),
                InputSpec("a", (3,), differentiable=False, shape_like="x"),
            ),
            _add,
        ),
        Function(
            "matmul",
            "y = a @ b",
            (
                # row i of y = a @ b depends only on row i of a, column j only on column j of b
                InputSpec("a", (2, 3), separable=Separable(pairs=((0, 0),), ndim=2)),
                InputSpec("b", (3, 2), separable=Separable(pairs=((1, 1),), ndim=2)),
            ),
            _matmul,
            _contraction_check("matmul", "a", "b"),
        ),
        Function(
            "sigmoid",
            "y = 1 / (1 + exp(-x))",
            (InputSpec("x", (3,), separable=ELEMENTWISE),),
            _sigmoid,
        ),
        Function(
            "softmax",
            "y = softmax(x, dim=-1)",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _softmax,
            _last_dim_check("softmax"),
        ),
        Function(
            "tanh_linear",
            "y = tanh(W @ x)",
            (InputSpec("x", (3,)), InputSpec("W", (4, 3), differentiable=False)),
            _tanh_linear,
            _contraction_check("tanh_linear", "W", "x"),
        ),
        Function(
            "logsumexp",
            "y = log(sum(exp(x), dim=-1))",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _logsumexp,
            _last_dim_check("logsumexp"),
        ),
        Function(
            "norm",
            "y = ‖x‖₂ over dim -1",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _norm,
            _last_dim_check("norm"),
        ),
        Function(
            "polar",
            "y = (r cos θ, r sin θ), (r, θ) = x",
            (InputSpec("x", (2,), separable=BATCHED_OVER_LEADING_AXES),),
            _polar,
            _polar_check,
        ),
        Function(
            "cross",
            "y = a × b (over dim -1)",
            (
                InputSpec("a", (3,), separable=BATCHED_OVER_LEADING_AXES),
                InputSpec("b", (3,), separable=BATCHED_OVER_LEADING_AXES),
            ),
            _cross,
            _cross_check,
        ),
    )
}
