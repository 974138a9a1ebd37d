"""Per-sample (block-diagonal) Jacobians: only the diagonal blocks along a separable axis.

# NOTE [the sum trick]
Along a separable axis (NOTE [separable axes] in functions/model.py) y[i] depends only on x[i],
so ∂(Σᵢ y[i])/∂x[i] = ∂y[i]/∂x[i]: the Jacobian of y summed over that axis holds every diagonal
block, side by side along x's axis. It has y_sample × x entries instead of y × x, and reverse
mode needs y_sample passes instead of y's: for expsum on 1024×256, one pass instead of 1024 and
1 MiB instead of 1 GiB. Blocks come out with the sample axis first:
`(B,) + y_sample.shape + x_sample.shape`.
"""

from __future__ import annotations

import math

import torch

from jaccli.engine.evaluate import call_function, leaves_of, to_numpy
from jaccli.engine.jacobian import (
    CallNotes,
    Progress,
    jacobian_of,
    method_in_mode,
    require_feasible,
    split_wrt,
)
from jaccli.engine.problem import Problem, describe
from jaccli.engine.trust import disagreement, probe_blocks
from jaccli.errors import ComputationError, UsageError, needs_one_output
from jaccli.functions.model import AxisPair
from jaccli.memory import budget_or_default
from jaccli.messages import format_bytes
from jaccli.result import JacobianResult, Plan


def batch_axes(problem: Problem) -> dict[str, AxisPair]:
    """For each `wrt` input, the first (input_axis, output_axis) it is separable along."""
    if len(problem.output_shapes) != 1:
        raise needs_one_output("--batched", problem.function.name, list(problem.output_shapes))
    (y_shape,) = problem.output_shapes.values()
    axes = {}
    for wrt in problem.wrt:
        pairs = problem.function.input(wrt).separable.axes(problem.inputs[wrt].ndim, len(y_shape))
        if not pairs:
            raise UsageError(
                f"--batched: {problem.function.name} has no known axis along which it acts on "
                f"{wrt} sample by sample, so its Jacobian has no diagonal blocks to keep; if it "
                f"has one, declare it with --batch-axis {wrt}=AXIS (verified before it is "
                "trusted), or drop --batched",
                code="not_separable",
            )
        axes[wrt] = pairs[0]
    return axes


def plan_batched(problem: Problem, budget: int | None = None) -> Plan:
    """The per-sample computation's method, sizes and memory, or ResourceError."""
    axes = batch_axes(problem)  # first: it refuses several outputs in words
    (y_shape,) = problem.output_shapes.values()
    itemsize = problem.torch_dtype.itemsize
    result_bytes = 0
    passes = 0
    for wrt, (_, output_axis) in axes.items():
        y_sample = math.prod(y_shape) // y_shape[output_axis]
        result_bytes += y_sample * problem.inputs[wrt].numel() * itemsize
        passes = max(passes, y_sample)
    method = method_in_mode("rev", passes, problem.input_count)
    limit = budget_or_default(budget)
    peak = problem.resident_bytes + (result_bytes if method == "loop-rev" else 2 * result_bytes)
    reason = (
        f"block-diagonal: {passes} reverse pass{'es' if passes > 1 else ''} of y summed over "
        "the sample axis"
    )
    refused = None
    if peak > limit:
        refused = (
            f"the per-sample Jacobian would need about {format_bytes(peak)}, over the memory "
            f"budget of {format_bytes(limit)}; try smaller shapes or a larger --max-memory"
        )
    n_out = problem.output_count
    return Plan(
        method, reason, n_out, problem.input_count, result_bytes, peak, limit, None, refused
    )


def compute_batched(
    problem: Problem, budget: int | None = None, progress: Progress | None = None
) -> JacobianResult:
    """The diagonal blocks of J along each `wrt` input's separable axis (see the sum trick),
    verified against a reverse pass of the whole function (NOTE [the correctness guard])."""
    plan = require_feasible(plan_batched(problem, budget))
    axes = batch_axes(problem)
    (output,) = problem.output_shapes
    blocks: dict[str, torch.Tensor] = {}
    for wrt, (input_axis, output_axis) in axes.items():
        fixed = leaves_of({name: t for name, t in problem.inputs.items() if name != wrt})

        def summed(
            x: torch.Tensor, fixed: dict = fixed, wrt: str = wrt, axis: int = output_axis
        ) -> torch.Tensor:
            (y,) = call_function(problem.function, {**fixed, wrt: x}).values()
            return y.sum(dim=axis)

        _, (j,) = jacobian_of(summed, [problem.inputs[wrt]], plan.method, None, progress)
        # j: y_sample + x.shape; the sample axis of x moves to the front
        y_sample_ndim = j.ndim - problem.inputs[wrt].ndim
        blocks[wrt] = j.movedim(y_sample_ndim + input_axis, 0)
    call_notes = CallNotes()
    primals, f = split_wrt(problem, notes=call_notes)  # the guard's call gives y and warnings
    by_wrt = [(blocks[wrt], *axes[wrt]) for wrt in problem.wrt]
    guard = probe_blocks(f, primals, problem.output_shapes[output], by_wrt)
    if guard.passed is False:
        raise ComputationError(
            f"--batched: the per-sample blocks of {problem.function.name} failed the "
            f"correctness guard, {disagreement(guard)}; the function may not act on each "
            "sample alone (drop --batched for the dense J)",
            code="guard_failed",
        )
    called = call_notes.ensure(problem)
    return JacobianResult(
        evaluation=describe(problem, {output: called.outputs[output]}),
        jacobians={output: {wrt: to_numpy(block) for wrt, block in blocks.items()}},
        strategy=f"per-sample {plan.method}",
        strategy_reason=plan.reason,
        per_sample=axes,
        notes=(*problem.notes, *called.notes),
        guard=guard,
    )
