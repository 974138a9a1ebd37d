"""Separable axes declared with --batch-axis, verified before they are trusted.

A declared axis is a promise that slice i of the output along it depends on slice i of the input
alone (NOTE [separable axes]). Two VJPs test it: a cotangent on sample 0 of the output must leave
the gradient of every other sample of the input exactly zero, and a cotangent on every other
sample must leave sample 0's gradient exactly zero. A function that subtracts the batch mean, or
normalizes over the batch, fails the first. Mixing that spares sample 0 is left to the guard of
the per-sample blocks and the views, which compare against the whole function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from jaccli.engine.evaluate import call_function, leaves_of, vector_jacobian
from jaccli.engine.trust import probe_directions
from jaccli.errors import ComputationError, UsageError, needs_one_output
from jaccli.functions.model import AxisPair, Function
from jaccli.spec import Shape, format_shape


def declared_axes(
    function: Function,
    declared: Sequence[tuple[str | None, int]],
    shapes: Mapping[str, Shape],
    output_shapes: Mapping[str, Shape],
) -> dict[str, tuple[AxisPair, ...]]:
    """`--batch-axis NAME=AXIS` as (axis, axis) pairs by input, checked against the shapes:
    the output axis follows the input's and must be as long."""
    if len(output_shapes) != 1:
        raise needs_one_output("--batch-axis", function.name, list(output_shapes))
    ((output, y_shape),) = output_shapes.items()
    axes: dict[str, tuple[AxisPair, ...]] = {}
    for given, axis in declared:
        name = function.named(given, "--batch-axis")
        if name not in shapes or not function.input(name).differentiable:
            raise UsageError(f"--batch-axis {name}={axis}: {name} is not an input to differentiate")
        x_shape = shapes[name]
        if not -len(x_shape) <= axis < len(x_shape):
            raise UsageError(
                f"--batch-axis {name}={axis}: {name} has shape {format_shape(x_shape)}, "
                f"with no axis {axis}"
            )
        axis %= len(x_shape)
        if axis >= len(y_shape) or y_shape[axis] != x_shape[axis]:
            raise UsageError(
                f"--batch-axis {name}={axis}: {output} has shape {format_shape(y_shape)}; its "
                f"axis {axis} must run along {name}'s, of {x_shape[axis]} samples"
            )
        axes[name] = ((axis, axis),)
    return axes


def verify_declared(
    function: Function, inputs: Mapping[str, torch.Tensor], axes: Mapping[str, tuple[AxisPair, ...]]
) -> None:
    """Exit 1 (ComputationError) when the function mixes samples along a declared axis."""
    for name, ((input_axis, output_axis),) in axes.items():
        count = inputs[name].shape[input_axis]
        if count < 2:
            continue
        for on_first in (True, False):
            leaves = leaves_of(inputs)
            with torch.enable_grad():
                (y,) = call_function(function, leaves).values()
                if not y.requires_grad:
                    return
                (u,) = probe_directions([y.shape], y.dtype)
                first = torch.zeros_like(u)
                first.select(output_axis, 0).copy_(u.select(output_axis, 0))
                cotangent = first if on_first else u - first
                (gradient,) = vector_jacobian(y, [leaves[name]], cotangent.to(y.dtype))
            moved = (
                gradient.movedim(input_axis, 0)[1:] if on_first else gradient.select(input_axis, 0)
            )
            if bool((moved != 0).any()):
                source, moved_what = (
                    ("sample 0 of the output", "every other sample")
                    if on_first
                    else ("the other samples of the output", "sample 0")
                )
                raise ComputationError(
                    f"--batch-axis {name}={input_axis}: {function.name} mixes samples: a "
                    f"cotangent on {source} moves the gradient of {moved_what} of {name} (by up "
                    f"to {float(moved.abs().max()):.3g}); it does not act on each sample alone "
                    "(drop --batch-axis)",
                    code="mixes_samples",
                )
