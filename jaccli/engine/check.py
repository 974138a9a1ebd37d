"""Verifying a result by independent means: the other AD mode, and central finite differences.

A Jacobian is checked against the opposite mode (reverse against forward) and against central
differences computed in float64; a VJP, as the lesson did, against v·J with J from forward mode.
A comparison that cannot be made (a custom autograd.Function with no forward-mode rule, too many
inputs for finite differences) is reported as skipped with the reason, not as a failure.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from jaccli.engine.evaluate import to_numpy
from jaccli.engine.jacobian import LOOP_LIMIT, jacobian_of, split_wrt
from jaccli.engine.problem import Problem
from jaccli.engine.tolerance import AD_TOLERANCE, FD_TOLERANCE, Tolerance
from jaccli.errors import ComputationError
from jaccli.result import Check, Comparison, EntryError, JacobianResult, VjpResult

FD_STEP = 1e-6
"""Central-difference step for x[j], times max(1, |x[j]|)."""
MAX_FD_INPUTS = 4096
WORST_SHOWN = 5


def compare(
    name: str,
    reference_name: str,
    values: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    tolerance: Tolerance,
    output_ndim: int | None,
    step: float | None = None,
) -> Comparison:
    """Entry-by-entry comparison of `values` with `references`, keyed by wrt input.

    `output_ndim` splits each index into its output and input parts (None for a VJP).
    """
    entries: list[tuple[float, EntryError]] = []
    max_abs = max_rel = 0.0
    passed = True
    for wrt, value in values.items():
        reference = references[wrt].astype(np.float64)
        value = value.astype(np.float64)
        excess = tolerance.excess(value, reference)
        passed = passed and bool((excess <= 0).all())
        error = np.abs(value - reference)
        relative = error / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)
        if error.size:
            max_abs = max(max_abs, float(np.nan_to_num(error, nan=np.inf).max()))
            max_rel = max(max_rel, float(np.nan_to_num(relative, nan=np.inf).max()))
        for flat in np.argsort(-excess, axis=None, kind="stable")[:WORST_SHOWN]:
            index = tuple(int(i) for i in np.unravel_index(flat, value.shape))
            split = output_ndim if output_ndim is not None else 0
            entries.append(
                (
                    float(excess[index]),
                    EntryError(
                        wrt=wrt,
                        output_index=index[:split] if output_ndim is not None else None,
                        input_index=index[split:],
                        value=float(value[index]),
                        reference=float(reference[index]),
                        abs_error=float(error[index]),
                        rel_error=float(relative[index]),
                    ),
                )
            )
    entries.sort(key=lambda pair: -pair[0])
    return Comparison(
        name=name,
        reference=reference_name,
        rtol=tolerance.rtol,
        atol=tolerance.atol,
        step=step,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        worst_entries=tuple(entry for _, entry in entries[:WORST_SHOWN]),
        passed=passed,
    )


def skipped(name: str, reference_name: str, tolerance: Tolerance, reason: str) -> Comparison:
    return Comparison(
        name,
        reference_name,
        tolerance.rtol,
        tolerance.atol,
        None,
        math.nan,
        math.nan,
        (),
        None,
        reason,
    )


def _other_mode(problem: Problem, method: str) -> str:
    """The AD mode opposite to `method`, as a loop when that side is small."""
    n_out = math.prod(problem.output_shape)
    n_in = sum(problem.inputs[name].numel() for name in problem.wrt)
    if method.endswith("rev"):
        return "loop-fwd" if n_in <= LOOP_LIMIT else "fwd"
    return "loop-rev" if n_out <= LOOP_LIMIT else "rev"


def _mode_name(method: str) -> str:
    return "reverse mode" if method.endswith("rev") else "forward mode"


def _jacobians(problem: Problem, method: str) -> dict[str, np.ndarray]:
    primals, f = split_wrt(problem)
    _, jacobians = jacobian_of(f, primals, method)
    return {name: to_numpy(j) for name, j in zip(problem.wrt, jacobians, strict=True)}


def _failure_reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 160 else text[:159] + "…"


def central_differences(problem: Problem) -> dict[str, np.ndarray]:
    """J by central differences in float64, all inputs (constants too) cast to float64."""
    inputs64 = {name: t.detach().to(torch.float64) for name, t in problem.inputs.items()}
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for wrt in problem.wrt:
            x = inputs64[wrt]
            flat = x.reshape(-1)
            columns = []
            for j in range(flat.numel()):
                h = FD_STEP * max(1.0, abs(float(flat[j])))
                columns.append(
                    (
                        _shifted(problem, inputs64, wrt, j, h)
                        - _shifted(problem, inputs64, wrt, j, -h)
                    )
                    / (2 * h)
                )
            stacked = torch.stack(columns, dim=-1)
            out[wrt] = to_numpy(stacked.reshape((*problem.output_shape, *x.shape)))
    return out


def _shifted(
    problem: Problem, inputs: dict[str, torch.Tensor], wrt: str, j: int, h: float
) -> torch.Tensor:
    x = inputs[wrt].clone()
    x.view(-1)[j] += h
    try:
        y = problem.function.call(**{**inputs, wrt: x})
    except Exception as error:  # the user's function: any failure is theirs to see
        raise ComputationError(
            f"{problem.function.name} raised {type(error).__name__} "
            f"under finite differences: {error}"
        ) from error
    return y.to(torch.float64)


def check_jacobian(problem: Problem, result: JacobianResult) -> Check:
    """J against the opposite AD mode and against float64 central differences."""
    output_ndim = len(problem.output_shape)
    other = _other_mode(problem, result.strategy)
    ad_tolerance = AD_TOLERANCE[problem.dtype]
    mode_name = f"{_mode_name(result.strategy)} vs {_mode_name(other)}"
    try:
        comparisons = [
            compare(
                mode_name,
                _mode_name(other),
                result.jacobians,
                _jacobians(problem, other),
                ad_tolerance,
                output_ndim,
            )
        ]
    except (ComputationError, RuntimeError, NotImplementedError) as error:
        comparisons = [skipped(mode_name, _mode_name(other), ad_tolerance, _failure_reason(error))]
    fd_tolerance = FD_TOLERANCE[problem.dtype]
    fd_name = f"{_mode_name(result.strategy)} vs central differences"
    n_in = sum(problem.inputs[name].numel() for name in problem.wrt)
    if n_in > MAX_FD_INPUTS:
        comparisons.append(
            skipped(
                fd_name,
                "central differences (float64)",
                fd_tolerance,
                f"{n_in} inputs; finite differences run up to {MAX_FD_INPUTS}",
            )
        )
    else:
        comparisons.append(
            compare(
                fd_name,
                "central differences (float64)",
                result.jacobians,
                central_differences(problem),
                fd_tolerance,
                output_ndim,
                step=FD_STEP,
            )
        )
    return Check(tuple(comparisons))


def check_vjp(problem: Problem, result: VjpResult) -> Check:
    """backward(v) against v·J, with J from forward mode (reverse mode where it has no rule),
    and against v·J with J from float64 central differences."""
    tolerance = AD_TOLERANCE[problem.dtype]
    v = result.cotangent
    n_in = sum(problem.inputs[name].numel() for name in problem.wrt)
    name = "backward(v) vs v·J"
    reasons = []
    for method in ("loop-fwd" if n_in <= LOOP_LIMIT else "fwd", "loop-rev"):
        try:
            jacobians = _jacobians(problem, method)
        except (ComputationError, RuntimeError, NotImplementedError) as error:
            reasons.append(f"{_mode_name(method)}: {_failure_reason(error)}")
            continue
        products = {wrt: np.tensordot(v, j, axes=v.ndim) for wrt, j in jacobians.items()}
        reference = f"v·J, J by {_mode_name(method)}"
        comparisons = [compare(name, reference, result.vjps, products, tolerance, None)]
        break
    else:
        comparisons = [skipped(name, "v·J", tolerance, "; ".join(reasons))]
    fd_name = "backward(v) vs central differences"
    fd_reference = "v·J, J by central differences (float64)"
    fd_tolerance = FD_TOLERANCE[problem.dtype]
    if n_in > MAX_FD_INPUTS:
        reason = f"{n_in} inputs; finite differences run up to {MAX_FD_INPUTS}"
        comparisons.append(skipped(fd_name, fd_reference, fd_tolerance, reason))
    else:
        v64 = v.astype(np.float64)
        fd = {
            wrt: np.tensordot(v64, j, axes=v.ndim)
            for wrt, j in central_differences(problem).items()
        }
        comparisons.append(
            compare(fd_name, fd_reference, result.vjps, fd, fd_tolerance, None, step=FD_STEP)
        )
    return Check(tuple(comparisons))
