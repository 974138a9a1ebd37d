"""The preset functions: the lesson's expsum, add and matmul, and the Jacobians users meet most.

Callables import torch when called, never at import time, so `jaccli presets` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from jaccli.errors import UsageError
from jaccli.functions import shape_rules
from jaccli.functions.model import (
    BATCHED_OVER_LEADING_AXES,
    ELEMENTWISE,
    DerivedShape,
    Function,
    InputSpec,
    Separable,
    ShapeRule,
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


def _contraction_shape(function: str, left: str, right: str) -> ShapeRule:
    """The shape rule of `left @ right`: left's last dimension must equal right's first (or
    second-to-last), as torch.matmul has it."""

    def rule(shapes: Mapping[str, Shape]) -> Shape:
        a, b = shapes[left], shapes[right]
        _require_dims(function, left, a, 1, f"{left} @ {right}")
        _require_dims(function, right, b, 1, f"{left} @ {right}")
        inner_right = shape_rules.matmul_inner(b)
        right_axis = "second-to-last" if len(b) > 2 else "first"
        if a[-1] != inner_right:
            raise UsageError(
                f"{function}: {left} is {format_shape(a)} and {right} is {format_shape(b)}: "
                f"{left}'s last dimension ({a[-1]}) must equal {right}'s {right_axis} "
                f"dimension ({inner_right})"
            )
        result = shape_rules.matmul(a, b)
        if result is None:
            raise UsageError(
                f"{function}: the batch dimensions of {left} ({format_shape(a[:-2])}) and "
                f"{right} ({format_shape(b[:-2])}) do not broadcast"
            )
        return result

    return rule


def _expsum(x: Any) -> Any:
    return x.exp().sum(dim=1)


def _expsum_shape(shapes: Mapping[str, Shape]) -> Shape:
    x = shapes["x"]
    _require_dims("expsum", "x", x, 2, "the sum runs over dim 1")
    return (x[0], *x[2:])


def _same_as(name: str) -> ShapeRule:
    return lambda shapes: shapes[name]


def _add(x: Any, a: Any) -> Any:
    return x + a


def _matmul(a: Any, b: Any) -> Any:
    return a @ b


def _sigmoid(x: Any) -> Any:
    return x.sigmoid()


def _softmax(x: Any) -> Any:
    return x.softmax(dim=-1)


def _last_dim_shape(function: str, *, reduces: bool) -> ShapeRule:
    """x of at least one dimension; the output drops the last one when the function reduces it."""

    def rule(shapes: Mapping[str, Shape]) -> Shape:
        x = shapes["x"]
        _require_dims(function, "x", x, 1, "it acts along the last dimension")
        return x[:-1] if reduces else x

    return rule


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


def _polar_shape(shapes: Mapping[str, Shape]) -> Shape:
    _require_last_dim("polar", "x", shapes["x"], 2, "x[..., 0] is r and x[..., 1] is θ")
    return shapes["x"]


def _cross(a: Any, b: Any) -> Any:
    import torch

    return torch.linalg.cross(a, b, dim=-1)


def _cross_shape(shapes: Mapping[str, Shape]) -> Shape:
    _require_last_dim("cross", "a", shapes["a"], 3, "vectors in 3-D")
    _require_last_dim("cross", "b", shapes["b"], 3, "vectors in 3-D")
    if shapes["a"] != shapes["b"]:
        raise UsageError(
            f"cross: a is {format_shape(shapes['a'])} and b is {format_shape(shapes['b'])}; "
            "they must have the same shape"
        )
    return shapes["a"]


def _spherical(x: Any) -> Any:
    import torch

    r, theta, phi = x[..., 0], x[..., 1], x[..., 2]
    return torch.stack(
        (r * theta.sin() * phi.cos(), r * theta.sin() * phi.sin(), r * theta.cos()), dim=-1
    )


def _cylindrical(x: Any) -> Any:
    import torch

    r, theta, z = x[..., 0], x[..., 1], x[..., 2]
    return torch.stack((r * theta.cos(), r * theta.sin(), z), dim=-1)


def _coordinates_shape(function: str, why: str) -> ShapeRule:
    def rule(shapes: Mapping[str, Shape]) -> Shape:
        _require_last_dim(function, "x", shapes["x"], 3, why)
        return shapes["x"]

    return rule


def _affine(x: Any, A: Any, b: Any) -> Any:
    return x @ A.mT + b


def _planar_flow(x: Any, u: Any, w: Any, b: Any) -> Any:
    return x + u * ((x * w).sum(dim=-1, keepdim=True) + b).tanh()


def _following_last_dim(function: str, square: bool) -> DerivedShape:
    """A constant of shape (d,), or (d, d) when `square`, for an x whose last dimension is d."""

    def rule(x: Shape) -> Shape:
        _require_dims(function, "x", x, 1, "it acts along the last dimension")
        return (x[-1], x[-1]) if square else (x[-1],)

    return DerivedShape(rule, "d×d" if square else "d", "d = x.shape[-1]")


def square_jacobian(function: Function) -> bool:
    """Whether J of the function's one differentiable input is square at its default shapes
    (as `jaccli det` needs)."""
    differentiable = [spec for spec in function.inputs if spec.differentiable]
    if len(differentiable) != 1 or function.output_shape is None:
        return False
    shapes = {s.name: s.default_shape for s in function.inputs if s.default_shape is not None}
    for spec in function.inputs:
        followed = spec.followed_shape(shapes)
        if followed is not None:
            shapes[spec.name] = followed
    (x,) = differentiable
    return math.prod(function.output_shape(shapes)) == math.prod(shapes[x.name])


JACOBIAN_FORMULAS = {
    "expsum": "∂y[i]/∂x[k,j] = δ_ik exp(x[i,j])",
    "add": "∂y[i]/∂x[j] = δ_ij",
    "matmul": "∂y[i,j]/∂a[k,l] = δ_ik b[l,j]\n∂y[i,j]/∂b[k,l] = a[i,k] δ_jl",
    "sigmoid": "∂y[i]/∂x[j] = δ_ij y[i] (1 − y[i])",
    "softmax": "∂y[i]/∂x[j] = y[i] (δ_ij − y[j])",
    "tanh_linear": "∂y[i]/∂x[j] = (1 − y[i]²) W[i,j]",
    "logsumexp": "∂y/∂x[j] = exp(x[j] − y) = softmax(x)[j]",
    "norm": "∂y/∂x[j] = x[j] / y",
    "polar": "∂y/∂(r,θ) = [[cos θ, −r sin θ],\n             [sin θ,  r cos θ]]",
    "spherical": "∂y/∂(r,θ,φ) = [[sθcφ, r cθcφ, −r sθsφ],\n"
    "               [sθsφ, r cθsφ,  r sθcφ],\n"
    "               [cθ,   −r sθ,   0]]\n(s = sin, c = cos)",
    "cylindrical": "∂y/∂(r,θ,z) = [[cos θ, −r sin θ, 0],\n               [sin θ,  r cos θ, 0],\n"
    "               [0,      0,       1]]",
    "affine": "∂y[i]/∂x[j] = A[i,j]",
    "planar_flow": "∂y[i]/∂x[j] = δ_ij\n  + u[i] (1 − tanh²(wᵀx + b)) w[j]",
    "cross": "∂y/∂a = −[b]×,  ∂y/∂b = [a]×\nwhere [v]× u = v × u",
}
"""Each preset's J in closed form (per sample, over the last axis, for the batched ones), in
lines of at most 42 characters, broken by design so an 80-column table never breaks a phrase."""

# NOTE [separable axes] in model.py: what each `separable=` below promises. Every preset is
# made of smooth torch calls that keep the graph (`kink_free`): none is relu, abs, max/min,
# clamp, a comparison, a rounding or an integer cast.
PRESETS: dict[str, Function] = {
    function.name: replace(
        function, jacobian_formula=JACOBIAN_FORMULAS[function.name], kink_free=True
    )
    for function in (
        Function(
            "expsum",
            "y = x.exp().sum(dim=1)",
            (InputSpec("x", (2, 3), separable=Separable(pairs=((0, 0),))),),
            _expsum,
            _expsum_shape,
        ),
        Function(
            "add",
            "y = x + a",
            (
                InputSpec("x", (3,), separable=ELEMENTWISE),
                InputSpec("a", (3,), differentiable=False, shape_like="x"),
            ),
            _add,
            _same_as("x"),
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
            _contraction_shape("matmul", "a", "b"),
        ),
        Function(
            "sigmoid",
            "y = 1 / (1 + exp(-x))",
            (InputSpec("x", (3,), separable=ELEMENTWISE),),
            _sigmoid,
            _same_as("x"),
        ),
        Function(
            "softmax",
            "y = softmax(x, dim=-1)",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _softmax,
            _last_dim_shape("softmax", reduces=False),
        ),
        Function(
            "tanh_linear",
            "y = tanh(W @ x)",
            (InputSpec("x", (3,)), InputSpec("W", (4, 3), differentiable=False)),
            _tanh_linear,
            _contraction_shape("tanh_linear", "W", "x"),
        ),
        Function(
            "logsumexp",
            "y = log(sum(exp(x), dim=-1))",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _logsumexp,
            _last_dim_shape("logsumexp", reduces=True),
        ),
        Function(
            "norm",
            "y = ‖x‖₂ over dim -1",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _norm,
            _last_dim_shape("norm", reduces=True),
        ),
        Function(
            "polar",
            "y = (r cos θ, r sin θ), (r, θ) = x",
            (InputSpec("x", (2,), separable=BATCHED_OVER_LEADING_AXES),),
            _polar,
            _polar_shape,
        ),
        Function(
            "spherical",
            "y = r(sinθcosφ, sinθsinφ, cosθ), (r,θ,φ) = x",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _spherical,
            _coordinates_shape("spherical", "x[..., 0] is r, x[..., 1] θ and x[..., 2] φ"),
        ),
        Function(
            "cylindrical",
            "y = (r cosθ, r sinθ, z), (r,θ,z) = x",
            (InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),),
            _cylindrical,
            _coordinates_shape("cylindrical", "x[..., 0] is r, x[..., 1] θ and x[..., 2] z"),
        ),
        Function(
            "affine",
            "y = A x + b (over dim -1)",
            (
                InputSpec("x", (3,), separable=BATCHED_OVER_LEADING_AXES),
                InputSpec(
                    "A",
                    (3, 3),
                    differentiable=False,
                    shape_like="x",
                    derived_shape=_following_last_dim("affine", square=True),
                ),
                InputSpec(
                    "b",
                    (3,),
                    differentiable=False,
                    shape_like="x",
                    derived_shape=_following_last_dim("affine", square=False),
                ),
            ),
            _affine,
            _last_dim_shape("affine", reduces=False),
        ),
        Function(
            "planar_flow",
            "y = x + u tanh(wᵀx + b) (over dim -1)",
            (
                InputSpec("x", (2, 3), separable=BATCHED_OVER_LEADING_AXES),
                InputSpec(
                    "u",
                    (3,),
                    differentiable=False,
                    shape_like="x",
                    derived_shape=_following_last_dim("planar_flow", square=False),
                ),
                InputSpec(
                    "w",
                    (3,),
                    differentiable=False,
                    shape_like="x",
                    derived_shape=_following_last_dim("planar_flow", square=False),
                ),
                InputSpec("b", (), differentiable=False),
            ),
            _planar_flow,
            _last_dim_shape("planar_flow", reduces=False),
        ),
        Function(
            "cross",
            "y = a × b (over dim -1)",
            (
                InputSpec("a", (3,), separable=BATCHED_OVER_LEADING_AXES),
                InputSpec("b", (3,), separable=BATCHED_OVER_LEADING_AXES),
            ),
            _cross,
            _cross_shape,
        ),
    )
}
