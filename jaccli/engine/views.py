"""Per-row and per-column views: a result rebuilt slice by slice along a separable axis.

For y = a @ b, row i of a.grad is v[i] @ J_i with J_i the Jacobian of r ↦ r @ b at a[i], and
column j of b.grad is v[:, j] @ J_j with J_j the Jacobian of c ↦ a @ c at b[:, j].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from jaccli.engine.evaluate import call_function, evaluate, leaves_of, to_numpy
from jaccli.engine.guard import require_within_budget
from jaccli.engine.jacobian import jacobian_of, method_in_mode
from jaccli.engine.problem import Problem
from jaccli.engine.tolerance import AD_TOLERANCE
from jaccli.errors import UsageError
from jaccli.functions.model import AxisPair
from jaccli.result import SliceRow, View
from jaccli.spec import PICTURE_VIEWS, SLICE_VIEWS

VIEW_INPUT_AXIS = {"rows": 0, "cols": 1}
VIEW_NAMES = SLICE_VIEWS
MAX_SLICES = 4096


def single_output(problem: Problem) -> str | None:
    """The name of the only output, or None when there are several."""
    return next(iter(problem.output_shapes)) if len(problem.output_shapes) == 1 else None


def available_views(problem: Problem, wrt: str) -> dict[str, AxisPair]:
    """The views (`rows`, `cols`) the function decomposes along for input `wrt`."""
    output = single_output(problem)
    if output is None:
        return {}
    x = problem.inputs[wrt]
    pairs = problem.function.input(wrt).separable.axes(x.ndim, len(problem.output_shapes[output]))
    by_input_axis = dict(pairs)
    return {
        view: (axis, by_input_axis[axis])
        for view, axis in VIEW_INPUT_AXIS.items()
        if axis in by_input_axis
    }


def choose_view(problem: Problem, requested: str | None) -> tuple[str, str, AxisPair] | None:
    """(wrt, view, axes) to show: the one requested, or with None the natural one of a single
    `wrt` input that decomposes (rows before cols); None for the plain result."""
    if requested in PICTURE_VIEWS:
        raise UsageError(
            f"--view {requested} draws J or H: use it with jaccli jacobian, det or hessian"
        )
    if requested is not None and requested not in VIEW_NAMES:
        raise UsageError(f"unknown --view {requested!r} (choose {', '.join(VIEW_NAMES)})")
    if requested == "full":
        return None
    if single_output(problem) is None:
        if requested is None:
            return None
        raise UsageError(
            f"--view {requested} needs a single output; {problem.function.name} returns "
            f"{', '.join(problem.output_shapes)} (use --view full)"
        )
    if len(problem.wrt) != 1:
        if requested is None:
            return None
        raise UsageError(
            f"--view {requested} shows one input at a time; add --wrt with one of "
            f"{', '.join(problem.wrt)}"
        )
    wrt = problem.wrt[0]
    views = available_views(problem, wrt)
    if requested is None:
        return next(((wrt, name, axes) for name, axes in views.items()), None)
    if requested not in views:
        has = ", ".join([*views, "full"])
        raise UsageError(
            f"--view {requested}: {problem.function.name} does not act on {wrt} "
            f"{'row' if requested == 'rows' else 'column'} by "
            f"{'row' if requested == 'rows' else 'column'} (views for {wrt}: {has})",
            code="bad_view",
        )
    return wrt, requested, views[requested]


def view_block_bytes(problem: Problem, wrt: str, axes: AxisPair) -> int:
    """Bytes of every slice's Jacobian J_i together."""
    input_axis, output_axis = axes
    (y_shape,) = problem.output_shapes.values()
    count = problem.inputs[wrt].shape[input_axis]
    y_sample = math.prod(y_shape) // y_shape[output_axis]
    return count * y_sample * (problem.inputs[wrt].numel() // count) * problem.torch_dtype.itemsize


def slice_view(
    problem: Problem,
    wrt: str,
    name: str,
    axes: AxisPair,
    full: np.ndarray,
    cotangent: np.ndarray | None,
    budget: int | None = None,
    *,
    tangent: np.ndarray | None = None,
) -> View:
    """Each slice i along the axis: x_i, g_i(x_i), J_i, and J_i against the full result.

    g_i(r) = f(x with slice i replaced by r)[slice i], so J_i is what the lesson computed by hand.
    Every J_i comes at once from the Jacobian of y summed over the axis (NOTE [the sum trick] in
    batched.py). With a cotangent, `full` is vᵀ·J and each product is v_i·J_i; with a tangent,
    `full` is J·v and each product J_i·v_i; with neither, `full` is J and each product J_i is
    compared with J's diagonal block i.
    """
    input_axis, output_axis = axes
    x = problem.inputs[wrt]
    count = x.shape[input_axis]
    if count > MAX_SLICES:
        raise UsageError(
            f"--view {name} would show {count} slices (at most {MAX_SLICES}); use --view full"
        )
    require_within_budget(
        f"--view {name} ({count} slice Jacobians)",
        view_block_bytes(problem, wrt, axes),
        budget,
        "use --view full",
    )
    fixed = leaves_of({n: t for n, t in problem.inputs.items() if n != wrt})

    def summed(r: torch.Tensor) -> torch.Tensor:
        (y,) = call_function(problem.function, {**fixed, wrt: r}).values()
        return y.sum(dim=output_axis)

    (y_shape,) = problem.output_shapes.values()
    y_sample = math.prod(y_shape) // y_shape[output_axis]
    method = method_in_mode("rev", y_sample, x.numel())
    _, (j,) = jacobian_of(summed, [x], method)
    blocks = to_numpy(j.movedim(j.ndim - x.ndim + input_axis, 0))
    y = evaluate(problem.function, problem.inputs)
    (y_value,) = y.values()
    tolerance = AD_TOLERANCE[problem.dtype]
    y_ndim = len(y_shape)
    rows = []
    for i in range(count):
        j_i = blocks[i]
        if cotangent is not None:
            v_i = np.take(cotangent, i, axis=output_axis)
            product = np.tensordot(v_i, j_i, axes=v_i.ndim)
            full_slice = np.take(full, i, axis=input_axis)
        elif tangent is not None:
            v_i = np.take(tangent, i, axis=input_axis)
            product = np.tensordot(j_i, v_i, axes=v_i.ndim)
            full_slice = np.take(full, i, axis=output_axis)
        else:
            v_i = None
            product = j_i
            full_slice = np.take(
                np.take(full, i, axis=output_axis), i, axis=y_ndim - 1 + input_axis
            )
        difference = np.abs(product - full_slice)
        rows.append(
            SliceRow(
                index=i,
                input_slice=to_numpy(x.select(input_axis, i)),
                output_slice=to_numpy(y_value.select(output_axis, i)),
                jacobian=j_i,
                vector=v_i,
                product=product,
                full_slice=full_slice,
                max_difference=float(difference.max()) if difference.size else 0.0,
                agrees=bool((tolerance.excess(product, full_slice) <= 0).all()),
            )
        )
    (output,) = problem.output_shapes
    kind = "vjp" if cotangent is not None else "jvp" if tangent is not None else "jacobian"
    return View(
        wrt,
        output,
        name,
        input_axis,
        output_axis,
        tolerance.rtol,
        tolerance.atol,
        tuple(rows),
        kind,
    )
