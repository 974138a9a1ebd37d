"""Verifying a result by independent means: the other AD mode, and central finite differences.

A Jacobian is checked against the opposite mode (reverse against forward) and against central
differences computed in float64; a VJP, as the lesson did, against v·J with J from forward mode.
A comparison that cannot be made (a custom autograd.Function with no forward-mode rule, too many
inputs for finite differences) is reported as skipped with the reason, not as a failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from jaccli.engine.evaluate import evaluate
from jaccli.engine.hessian import HVP_METHODS, REVERSE_OVER_REVERSE, gradient_at
from jaccli.engine.jacobian import (
    Progress,
    jacobian_by,
    method_in_mode,
    split_jacobians,
    split_wrt,
)
from jaccli.engine.problem import Problem
from jaccli.engine.tolerance import AD_TOLERANCE, FD_TOLERANCE, Tolerance
from jaccli.errors import ComputationError, UsageError
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line
from jaccli.result import (
    Check,
    Comparison,
    EntryError,
    HvpResult,
    JacobianResult,
    JvpResult,
    VjpResult,
)

FD_STEP = 1e-6
"""Central-difference step for x[j], times max(1, |x[j]|)."""
MAX_FD_INPUTS = 4096
WORST_SHOWN = 5


@dataclass(frozen=True)
class Block:
    """One array compared: J of `output` for `wrt` (output None for a VJP of `wrt`)."""

    output: str | None
    wrt: str
    value: np.ndarray
    reference: np.ndarray
    output_ndim: int = 0
    slack: np.ndarray | float = 0.0
    """Allowed error on top of the tolerance, per entry: the rounding error of a finite
    difference, about eps·|f|/h."""


def jacobian_blocks(
    values: dict[str, dict[str, np.ndarray]],
    references: dict[str, dict[str, np.ndarray]],
    output_shapes: dict[str, tuple[int, ...]],
    slack: dict[str, dict[str, np.ndarray]] | None = None,
) -> list[Block]:
    return [
        Block(
            output,
            wrt,
            value,
            references[output][wrt],
            len(output_shapes[output]),
            0.0 if slack is None else slack[output][wrt],
        )
        for output, by_wrt in values.items()
        for wrt, value in by_wrt.items()
    ]


def vjp_blocks(
    values: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    slack: dict[str, np.ndarray] | None = None,
) -> list[Block]:
    return [
        Block(None, wrt, value, references[wrt], 0, 0.0 if slack is None else slack[wrt])
        for wrt, value in values.items()
    ]


def jvp_blocks(
    values: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    slack: dict[str, np.ndarray] | None = None,
) -> list[Block]:
    """J·v of each output: its entries are the directional derivatives ∂y[i] / ∂v."""
    return [
        Block(out, "v", value, references[out], value.ndim, 0.0 if slack is None else slack[out])
        for out, value in values.items()
    ]


def compare(
    name: str,
    reference_name: str,
    blocks: list[Block],
    tolerance: Tolerance,
    step: float | None = None,
) -> Comparison:
    """Entry-by-entry comparison of each block's value with its reference."""
    entries: list[tuple[float, EntryError]] = []
    max_abs = max_rel = 0.0
    largest: EntryError | None = None
    passed = True
    for block in blocks:
        reference = block.reference.astype(np.float64)
        value = block.value.astype(np.float64)
        excess = tolerance.excess(value, reference) - block.slack
        passed = passed and bool((excess <= 0).all())
        error = np.abs(value - reference)
        relative = error / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)

        arrays = (value, reference, error, relative)
        if error.size:
            errors = np.nan_to_num(error, nan=np.inf)
            if largest is None or float(errors.max()) > max_abs:
                largest = _entry(block, arrays, int(errors.argmax()))
            max_abs = max(max_abs, float(errors.max()))
            max_rel = max(max_rel, float(np.nan_to_num(relative, nan=np.inf).max()))
        for flat in np.argsort(-excess, axis=None, kind="stable")[:WORST_SHOWN]:
            entries.append((float(excess.flat[flat]), _entry(block, arrays, int(flat))))
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
        largest_error_entry=largest,
    )


def _entry(
    block: Block, arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], flat: int
) -> EntryError:
    """The entry at `flat` of a block, from its (value, reference, error, relative error)."""
    value, reference, error, relative = arrays
    index = tuple(int(i) for i in np.unravel_index(flat, value.shape))
    return EntryError(
        wrt=block.wrt,
        output=block.output,
        output_index=index[: block.output_ndim] if block.output is not None else None,
        input_index=index[block.output_ndim :],
        value=float(value[index]),
        reference=float(reference[index]),
        abs_error=float(error[index]),
        rel_error=float(relative[index]),
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
    opposite = "fwd" if method.endswith("rev") else "rev"
    return method_in_mode(opposite, problem.output_count, problem.input_count)


def _mode_name(method: str) -> str:
    return "reverse mode" if method.endswith("rev") else "forward mode"


def _jacobians(problem: Problem, method: str) -> dict[str, dict[str, np.ndarray]]:
    _, jacobians = jacobian_by(problem, method)
    return split_jacobians(problem, jacobians)


@dataclass(frozen=True)
class CheckOptions:
    """Overrides of the check's tolerances and finite-difference step (`--rtol`, `--atol`,
    `--eps`); None keeps the default."""

    rtol: float | None = None
    atol: float | None = None
    eps: float | None = None

    def __post_init__(self) -> None:
        for option, number in (("--rtol", self.rtol), ("--atol", self.atol), ("--eps", self.eps)):
            if number is not None and not (0 <= number < 1):  # NaN fails too
                raise UsageError(f"{option} {number!r} is out of range (0 ≤ {option[2:]} < 1)")
        if self.eps == 0:
            raise UsageError("--eps 0: the finite-difference step must be positive")

    def tolerance(self, default: Tolerance) -> Tolerance:
        return Tolerance(
            default.rtol if self.rtol is None else self.rtol,
            default.atol if self.atol is None else self.atol,
        )

    @property
    def step(self) -> float:
        return FD_STEP if self.eps is None else self.eps


DEFAULT_CHECK_OPTIONS = CheckOptions()

ROUNDING_SAFETY = 16
"""A finite difference's rounding error is taken as this many times eps·(|f(x+h)|+|f(x-h)|)/2h."""


@dataclass(frozen=True)
class Differences:
    """J by central differences, and the rounding error each entry may carry."""

    jacobians: dict[str, dict[str, np.ndarray]]
    rounding: dict[str, dict[str, np.ndarray]]


def central_differences(
    problem: Problem, step: float = FD_STEP, progress: Progress | None = None
) -> Differences:
    """J by central differences in float64, all inputs (constants too) cast to float64, with
    each entry's rounding error bound (eps·|f|/h) beside it."""
    inputs64 = {
        name: t.detach().to(torch.float64) if t.is_floating_point() else t
        for name, t in problem.inputs.items()
    }
    columns: dict[str, list[torch.Tensor]] = {wrt: [] for wrt in problem.wrt}
    rounding: dict[str, list[torch.Tensor]] = {wrt: [] for wrt in problem.wrt}
    for wrt in problem.wrt:
        flat = inputs64[wrt].reshape(-1)
        for j in range(flat.numel()):
            h = step * max(1.0, abs(float(flat[j])))
            forward = _shifted(problem, inputs64, wrt, j, h)
            backward = _shifted(problem, inputs64, wrt, j, -h)
            columns[wrt].append((forward - backward) / (2 * h))
            eps = torch.finfo(forward.dtype).eps
            size = forward.to(torch.float64).abs() + backward.to(torch.float64).abs()
            rounding[wrt].append(ROUNDING_SAFETY * eps * size / (2 * h))
            if progress is not None:
                progress(sum(len(c) for c in columns.values()), problem.input_count)

    def joined(parts: dict[str, list[torch.Tensor]]) -> dict[str, dict[str, np.ndarray]]:
        return split_jacobians(
            problem,
            [
                torch.stack(parts[wrt], dim=-1)
                .to(torch.float64)
                .reshape((-1, *problem.inputs[wrt].shape))
                for wrt in problem.wrt
            ],
        )

    return Differences(joined(columns), joined(rounding))


def _shifted(
    problem: Problem, inputs: dict[str, torch.Tensor], wrt: str, j: int, h: float
) -> torch.Tensor:
    """The joined outputs at inputs[wrt] with entry j moved by h, flattened."""
    x = inputs[wrt].clone()
    x.view(-1)[j] += h
    outputs = evaluate(problem.function, {**inputs, wrt: x})
    return torch.cat([outputs[name].reshape(-1) for name in problem.output_shapes])


def _finite_difference_comparison(
    problem: Problem,
    name: str,
    reference: str,
    blocks: Callable[[Differences], list[Block]],
    options: CheckOptions,
    progress: Progress | None,
) -> Comparison:
    """`blocks(J by central differences)` compared within the finite-difference tolerance and
    each entry's rounding error, or skipped when there are too many inputs to perturb."""
    tolerance = options.tolerance(FD_TOLERANCE[problem.dtype])
    if problem.input_count > MAX_FD_INPUTS:
        reason = f"{problem.input_count} inputs; finite differences run up to {MAX_FD_INPUTS}"
        return skipped(name, reference, tolerance, reason)
    differences = central_differences(problem, options.step, progress)
    return compare(name, reference, blocks(differences), tolerance, options.step)


def check_jacobian(
    problem: Problem,
    result: JacobianResult,
    progress: Progress | None = None,
    options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> Check:
    """J against the opposite AD mode and against float64 central differences."""
    other = _other_mode(problem, result.strategy)
    tolerance = options.tolerance(AD_TOLERANCE[problem.dtype])
    mode_name = f"{_mode_name(result.strategy)} vs {_mode_name(other)}"

    try:
        references = _jacobians(problem, other)
        modes = compare(
            mode_name,
            _mode_name(other),
            jacobian_blocks(result.jacobians, references, problem.output_shapes),
            tolerance,
        )
    except (ComputationError, RuntimeError, NotImplementedError) as error:
        raise_if_out_of_memory(error)
        modes = skipped(mode_name, _mode_name(other), tolerance, _reason(error))
    differences = _finite_difference_comparison(
        problem,
        f"{_mode_name(result.strategy)} vs central differences",
        "central differences (float64)",
        lambda d: jacobian_blocks(result.jacobians, d.jacobians, problem.output_shapes, d.rounding),
        options,
        progress,
    )
    return Check((modes, differences))


def _reason(error: Exception) -> str:
    text = error.message if isinstance(error, ComputationError) else first_line(error)
    return text if len(text) <= 160 else text[:159] + "…"


def vjp_from_jacobians(
    cotangents: dict[str, np.ndarray], jacobians: dict[str, dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """vᵀ·J for each wrt input: each output's v contracted with its J, summed over outputs."""
    wrts = next(iter(jacobians.values()))
    return {
        wrt: sum(  # type: ignore[misc]
            np.tensordot(v.astype(jacobians[out][wrt].dtype), jacobians[out][wrt], axes=v.ndim)
            for out, v in cotangents.items()
        )
        for wrt in wrts
    }


def check_vjp(
    problem: Problem,
    result: VjpResult,
    progress: Progress | None = None,
    options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> Check:
    """backward(v) against v·J, with J from forward mode (reverse mode where it has no rule),
    and against v·J with J from float64 central differences."""
    tolerance = options.tolerance(AD_TOLERANCE[problem.dtype])
    name = "backward(v) vs v·J"
    reasons = []

    def against(jacobians: dict[str, dict[str, np.ndarray]]) -> list[Block]:
        return vjp_blocks(result.vjps, vjp_from_jacobians(result.cotangents, jacobians))

    def against_differences(differences: Differences) -> list[Block]:
        slack = vjp_from_jacobians(
            {n: np.abs(v) for n, v in result.cotangents.items()}, differences.rounding
        )
        return vjp_blocks(
            result.vjps, vjp_from_jacobians(result.cotangents, differences.jacobians), slack
        )

    forward = method_in_mode("fwd", problem.output_count, problem.input_count)
    for method in (forward, "loop-rev"):
        try:
            jacobians = _jacobians(problem, method)
        except (ComputationError, RuntimeError, NotImplementedError) as error:
            raise_if_out_of_memory(error)
            reasons.append(f"{_mode_name(method)}: {_reason(error)}")
            continue
        products = compare(name, f"v·J, J by {_mode_name(method)}", against(jacobians), tolerance)
        break
    else:
        products = skipped(name, "v·J", tolerance, "; ".join(reasons))
    differences = _finite_difference_comparison(
        problem,
        "backward(v) vs central differences",
        "v·J, J by central differences (float64)",
        against_differences,
        options,
        progress,
    )
    return Check((products, differences))


def jvp_from_jacobians(
    tangents: dict[str, np.ndarray], jacobians: dict[str, dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """J·v for each output: each input's J contracted with its v over the input's axes,
    summed over inputs."""
    return {
        output: sum(  # type: ignore[misc]
            np.tensordot(j, tangents[wrt].astype(j.dtype), axes=tangents[wrt].ndim)
            for wrt, j in by_wrt.items()
        )
        for output, by_wrt in jacobians.items()
    }


def _step_along(primals: list[torch.Tensor], vectors: list[torch.Tensor], step: float) -> float:
    """h for a central difference along v: step·max(1, |x|max)/|v|max, so that no entry of x
    moves by more than a plain difference would move it."""
    largest_x = max(float(p.abs().max()) for p in primals)
    largest_v = max(float(v.abs().max()) for v in vectors)
    return step * max(1.0, largest_x) / largest_v if largest_v > 0 else step


def _central(
    forward: torch.Tensor, backward: torch.Tensor, h: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward − backward)/2h in float64, and its rounding error bound, by the dtype the
    function computed in (it may compute in float32 inside a float64 run)."""
    eps = torch.finfo(forward.dtype).eps
    forward, backward = forward.to(torch.float64), backward.to(torch.float64)
    rounding = ROUNDING_SAFETY * eps * (forward.abs() + backward.abs()) / (2 * h)
    return (forward - backward) / (2 * h), rounding


def directional_differences(
    problem: Problem, tangents: dict[str, np.ndarray], step: float = FD_STEP
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """J·v by one central difference along v in float64, (f(x + h v) − f(x − h v)) / 2h, and
    each entry's rounding error bound beside it."""
    problem64 = _in_float64(problem)
    primals, f = split_wrt(problem64)
    v = [torch.from_numpy(tangents[name]).to(torch.float64) for name in problem.wrt]
    h = _step_along(primals, v, step)

    def at(sign: float) -> torch.Tensor:
        with torch.enable_grad():
            y = f(*(p + sign * h * d for p, d in zip(primals, v, strict=True)))
        return y.detach().reshape(-1)

    difference, rounding = _central(at(1.0), at(-1.0), h)
    return _by_output(problem, difference), _by_output(problem, rounding)


def _by_output(problem: Problem, joined: torch.Tensor) -> dict[str, np.ndarray]:
    sizes = [math.prod(shape) for shape in problem.output_shapes.values()]
    return {
        name: part.reshape(shape).numpy()
        for (name, shape), part in zip(
            problem.output_shapes.items(), joined.split(sizes), strict=True
        )
    }


def _product_check(
    problem: Problem,
    method: str,
    ad: tuple[str, str, Callable[[], list[Block]]],
    along: tuple[str, Callable[[], list[Block]]],
    options: CheckOptions,
) -> Check:
    """A product against another AD computation of it (skipped, with why, if that cannot run)
    and against one central difference along its vector."""
    name, reference, ad_blocks = ad
    tolerance = options.tolerance(AD_TOLERANCE[problem.dtype])
    try:
        by_ad = compare(name, reference, ad_blocks(), tolerance)
    except (ComputationError, RuntimeError, NotImplementedError) as error:
        raise_if_out_of_memory(error)
        by_ad = skipped(name, reference, tolerance, _reason(error))
    difference_reference, difference_blocks = along
    by_difference = compare(
        f"{method} vs central differences",
        difference_reference,
        difference_blocks(),
        options.tolerance(FD_TOLERANCE[problem.dtype]),
        options.step,
    )
    return Check((by_ad, by_difference))


def check_jvp(
    problem: Problem,
    result: JvpResult,
    options: CheckOptions = DEFAULT_CHECK_OPTIONS,
) -> Check:
    """J·v against J·v with J from reverse mode, and against a central difference along v."""

    def by_reverse_mode() -> list[Block]:
        method = method_in_mode("rev", problem.output_count, problem.input_count)
        jacobians = _jacobians(problem, method)
        return jvp_blocks(result.jvps, jvp_from_jacobians(result.tangents, jacobians))

    def by_difference() -> list[Block]:
        differences, rounding = directional_differences(problem, result.tangents, options.step)
        return jvp_blocks(result.jvps, differences, rounding)

    return _product_check(
        problem,
        result.method,
        (f"{result.method} vs J·v", "J·v, J by reverse mode", by_reverse_mode),
        ("a central difference along v (float64)", by_difference),
        options,
    )


def _in_float64(problem: Problem) -> Problem:
    """The same problem with its floating inputs in float64."""
    inputs = {
        name: t.detach().to(torch.float64) if t.is_floating_point() else t
        for name, t in problem.inputs.items()
    }
    return replace(problem, inputs=inputs, dtype="float64")


def gradient_differences(
    problem: Problem, vectors: dict[str, np.ndarray], step: float = FD_STEP
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """H·v by one central difference of the gradient along v in float64,
    (∇f(x + h v) − ∇f(x − h v)) / 2h, and each entry's rounding error bound."""
    problem64 = _in_float64(problem)
    primals, f = split_wrt(problem64)
    v = [torch.from_numpy(vectors[name]).to(torch.float64) for name in problem.wrt]
    h = _step_along(primals, v, step)
    forward = gradient_at(f, [p + h * d for p, d in zip(primals, v, strict=True)])
    backward = gradient_at(f, [p - h * d for p, d in zip(primals, v, strict=True)])
    differences, rounding = {}, {}
    for name, g_plus, g_minus in zip(problem.wrt, forward, backward, strict=True):
        difference, bound = _central(g_plus, g_minus, h)
        differences[name], rounding[name] = difference.numpy(), bound.numpy()
    return differences, rounding


def check_hvp(
    problem: Problem, result: HvpResult, options: CheckOptions = DEFAULT_CHECK_OPTIONS
) -> Check:
    """H·v against the other composition, and against a central difference of the gradient
    along v."""
    (other,) = (m for m in HVP_METHODS if m != result.method)

    def by_other_composition() -> list[Block]:
        primals, f = split_wrt(problem)
        vectors = [torch.from_numpy(result.vectors[w]) for w in problem.wrt]
        _, products = HVP_METHODS[other](f, primals, vectors)
        references = {w: p.numpy() for w, p in zip(problem.wrt, products, strict=True)}
        return vjp_blocks(result.hvps, references)

    def by_difference() -> list[Block]:
        differences, rounding = gradient_differences(problem, result.vectors, options.step)
        return vjp_blocks(result.hvps, differences, rounding)

    return _product_check(
        problem,
        result.method,
        (f"{result.method} vs {other}", other, by_other_composition),
        ("a central difference of the gradient along v (float64)", by_difference),
        options,
    )


SPARSE_CHECK_SEED = 20
"""The seed of the vector a sparse J or H is checked along."""


def check_sparse(
    problem: Problem, matrix: Any, what: str, options: CheckOptions = DEFAULT_CHECK_OPTIONS
) -> Check:
    """A sparse J (`what` J) or H (H) checked along one random v without densifying it: J·v
    against one forward-mode JVP and a central difference along v; H·v against the
    reverse-over-reverse product and a central difference of the gradient along v."""
    generator = torch.Generator().manual_seed(SPARSE_CHECK_SEED)
    flat = torch.randn(matrix.shape[1], generator=generator, dtype=torch.float64)
    sizes = [problem.inputs[name].numel() for name in problem.wrt]
    vectors = {
        name: part.reshape(problem.inputs[name].shape).to(problem.torch_dtype).numpy()
        for name, part in zip(problem.wrt, flat.split(sizes), strict=True)
    }
    v = np.concatenate([vectors[name].reshape(-1).astype(np.float64) for name in problem.wrt])
    product = torch.from_numpy(np.asarray(matrix.astype(np.float64) @ v))
    primals, f = split_wrt(problem)
    tangents = [torch.from_numpy(vectors[name]) for name in problem.wrt]
    if what == "H":
        products = {
            name: part.reshape(problem.inputs[name].shape).numpy()
            for name, part in zip(problem.wrt, product.split(sizes), strict=True)
        }

        def by_other_mode() -> list[Block]:
            _, reference = HVP_METHODS[REVERSE_OVER_REVERSE](f, primals, tangents)
            by_name = {w: r.numpy() for w, r in zip(problem.wrt, reference, strict=True)}
            return vjp_blocks(products, by_name)

        def by_gradient_difference() -> list[Block]:
            differences, rounding = gradient_differences(problem, vectors, options.step)
            return vjp_blocks(products, differences, rounding)

        return _product_check(
            problem,
            "H·v of the sparse H",
            ("H·v of the sparse H vs reverse-over-reverse", "reverse-over-reverse", by_other_mode),
            ("a central difference of the gradient along v (float64)", by_gradient_difference),
            options,
        )
    by_output = _by_output(problem, product)

    def by_forward_mode() -> list[Block]:
        from jaccli.engine.jvp import forward_jvp

        _, reference = forward_jvp(f, primals, tangents)
        return jvp_blocks(by_output, _by_output(problem, reference.reshape(-1).double()))

    def by_difference() -> list[Block]:
        differences, rounding = directional_differences(problem, vectors, options.step)
        return jvp_blocks(by_output, differences, rounding)

    return _product_check(
        problem,
        "J·v of the sparse J",
        ("J·v of the sparse J vs one JVP", "J·v by forward mode", by_forward_mode),
        ("a central difference along v (float64)", by_difference),
        options,
    )
