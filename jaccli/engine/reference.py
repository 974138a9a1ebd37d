"""The function as the reference: a result of the user's code against the function's own values.

# NOTE [the function as the reference]
The correctness guard (NOTE [the correctness guard]) compares one AD computation with another, so
where autograd itself is blind (a value turned into a Python number by `.item()` and used again,
a NumPy round trip, `detach`, gradients turned off inside the function, a patched
`torch.autograd.grad`), both sides agree on the same wrong answer. The function's values cannot
be fooled that way. Along a direction d (random, each input's entries scaled by their own size;
the tangent of a JVP, the vector of an HVP), φ(t) = wᵀf(x + t·d) is evaluated in the problem's
dtype at t = 0, ±h, ±2h (five calls, no backward pass), with w random over the outputs (the
cotangent of a VJP). The result gives φ'(0) (uᵀJd, cᵀJd, uᵀ(J t)) or φ''(0) (uᵀH[d, d],
vᵀHv); from the same five values come

- central differences with steps h and 2h, D(h) and D(2h): their gap |D(h) − D(2h)| is 3× the
  truncation error of D(h) (which falls as h²), so it estimates that error instead of guessing;
- the rounding of φ's values over the step: eps·S/h for φ' and eps·S/h² for φ'' (times the
  weights of the formulas), with S = max Σ|w_i f_i| and eps that of the dtype;
- one-sided differences of the same order, D₊ (t ≥ 0 only) and D₋ (t ≤ 0 only).

The result passes when it lies within SAFETY × (estimated error) + the result's own rounding
(VALUE_RTOL_EPS eps of the root sum of squares of its terms) of the interval that D,
D₊ and D₋ span. The one-sided differences cover a point on or near a kink (relu at 0: torch's
convention is one of the one-sided derivatives, or between them) and a jump of a
piecewise-constant function inside the step (round, a branch on `x.sum() > 0`): on the side
without the jump the difference is clean. SAFETY stands even without them: a jump inside
(−h, h) makes |result − D(h)| = 2·|D(h) − D(2h)| exactly (D(h) = jump/2h, D(2h) = jump/4h, the
result 0), and a jump in (h, 2h) leaves D(h) equal to the result; SAFETY = 10 leaves a factor 5
beyond that for the estimate's own scatter (rounding noise may make two steps agree by chance).
A graph break errs by the order of the part of J autograd cannot see, while the estimated error
of a smooth function is about eps^(2/3) of φ's scale (1e-10 in float64, 3e-5 in float32).

# NOTE [a reference too rough to judge]
SAFETY × the estimated error is a tolerance only while the estimate is small beside the
difference itself. A function whose two central differences disagree by more than their size
(dropout, a random draw at each call, noise finer than the step) would pass anything under it,
and "checked against the function's own differences" would then claim what was not done: such a
reference is recorded as skipped (ROUGH), saying why. A graph break in a smooth function keeps
an estimate far below the difference, and is still refused.

# NOTE [kinks at the point]
At a point where several entries sit on kinks (relu and abs at x = [0, 0, 1]), torch's
convention takes one derivative in each entry, and their sum along d need not lie between the
one-sided differences of φ, which take the same side for all. So a disagreement is not refused
at once: the comparison is made again at up to OFFSET_TRIES random points x' about OFFSET_STEPS
largest steps away, with the value there by autograd (one reverse pass, or reverse-over-reverse).
A graph break is there too (it is in the code, not at a point), while x' lies off the kinks of
x. What passes there is recorded with `off_point`, the distance relative to the inputs' scale.
Only where φ has a kink at 0, though: where its one-sided differences agree (within SAFETY
times the estimated error) φ is smooth along d, so no convention explains a disagreement, and
agreement a little away would only hide a derivative wrong at x itself (torch's det of a
singular matrix, `where(x == 0, 0, x)`): that disagreement is refused.

# NOTE [steps finer than the differences]
A staircase finer than the step (round(3x) at x ≈ 100 in float32, a fake quantizer) has J = 0
almost everywhere, as autograd says, while its differences see the slope of its envelope. Its
φ then jumps between the five points: their fourth difference φ(2h) − 4φ(h) + 6φ(0) − 4φ(−h)
+ φ(−2h), which is h⁴ times the fourth derivative for a smooth φ (about (h/ℓ)³ of φ's range for
features of length ℓ), is of the order of the jumps. A disagreement where it passes JUMP_FRACTION
of the range (and rounding) is not refused: the reference is recorded as skipped, saying why. Where
the stairs are spaced evenly enough to look like a line at five points, a disagreement is looked
at once more with a step FINER times smaller (two more calls): a staircase's difference there is
0 or one jump over the small step, far from D(h), while a smooth φ's agrees with D(h) within the
errors of both. A graph break in a smooth function leaves φ smooth, and is still refused.
A float64 run whose function computes in float32 inside (`torch.tensor(x.tolist())` makes
float32) looks like such a staircase at float64's steps: there the comparison is made once more
with float32's steps and rounding, which see through it.

Steps are eps^(1/3) (φ') and eps^(1/4) (φ'') relative to the inputs' scale, where truncation and
rounding errors balance. Presets and expressions, which cannot hide anything from autograd, skip
the check (Function.checked_against_itself), but for an expression calling a function whose
torch derivative is wrong at some points (det of a singular matrix). When it fails, the
function runs once more under a recorder that names the graph break (graph_break.py).

Cost when it passes: five calls of the function (along each input of a J or a VJP: NOTE [each
input its own reference]) and one read of J (past 2^20 entries, of the random rows the AD guard
would read); more calls only on the way to a refusal or a skip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from jaccli.engine.evaluate import evaluate
from jaccli.engine.graph_break import describe_graph_break
from jaccli.engine.hessian import gradient_at, hvp_reverse_over_reverse
from jaccli.engine.jacobian import split_wrt
from jaccli.engine.problem import Problem
from jaccli.engine.trust import (
    GUARD_SEED,
    as_matrix,
    bilinear,
    block_bilinear,
    block_squared_terms,
    dot_terms,
    rows_to_probe,
    squared_terms,
)
from jaccli.errors import ComputationError
from jaccli.memory import raise_if_out_of_memory
from jaccli.result import (
    FunctionReference,
    Guard,
    HessianResult,
    HvpResult,
    JacobianResult,
    JvpResult,
    Result,
    SparseHessianResult,
    SparseJacobianResult,
    VjpResult,
)

SAFETY = 10.0
"""How far beyond the estimated error of the differences a result may lie (see the NOTE)."""
OFFSET_TRIES = 2
OFFSET_STEPS = 20
"""How many of the largest step (2h) away the points of NOTE [kinks at the point] lie..."""
MAX_OFFSET = 0.1
"""...but no farther than this, relative to the inputs' scale."""
LONGER_STEPS = 2.0**10
"""How much longer the steps are when float64's differences come out too rough: about 0.6 %
of the inputs' scale, where a part of f far below f's own rounding shows (NOTE [each input
its own reference])."""
FINER = 16
"""How much smaller the step that looks for a staircase finer than h is (its square root for
second differences, whose rounding grows as 1/h²)."""
JUMPS = (
    "the function jumps within the differences' step (round, floor, a branch on a value): its "
    "differences cannot check the result"
)
FLAT = "the function's values do not change over the step (its rounding is coarser than it)"
ROUGH = (
    "the function's differences at two steps disagree by more than their own size (it is random, "
    "or rough within the step): they cannot check the result"
)
VALUE_RTOL_EPS = 8000
"""The rounding allowed the result, in eps of the precision, relative to the root sum of
squares of its terms: the AD guard's GUARD_RTOL in float32, and as many eps in float64."""
JUMP_FRACTION = 1e-3
"""The fourth difference of φ, relative to φ's range over the five points, past which φ is
not smooth at the step's scale (NOTE [steps finer than the differences])."""
REFERENCE_SEED = GUARD_SEED + 17
"""The directions' own generator: the seeded inputs, cotangents and guard are unchanged."""


def _flat64(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    return tensor.detach().reshape(-1).to(torch.float64)


def _rms(tensors: Sequence[torch.Tensor]) -> float:
    count = sum(t.numel() for t in tensors)
    total = sum(float(t.square().sum()) for t in tensors)
    return math.sqrt(total / count) if count else 0.0


class _Line:
    """φ(t) = wᵀf(x + t·d) along one direction d of the `wrt` inputs, in the problem's dtype."""

    def __init__(
        self,
        problem: Problem,
        directions: Mapping[str, torch.Tensor],
        precision: torch.dtype,
        step_factor: float = 1.0,
    ) -> None:
        self.problem = problem
        self.precision = precision
        """The dtype whose eps sets the steps and the rounding: the problem's, or float32 for a
        float64 run that computes in float32 inside (NOTE [steps finer than the differences])."""
        self.directions = {name: d.to(torch.float64) for name, d in directions.items()}
        moving = [name for name, d in self.directions.items() if bool(d.any())] or problem.wrt
        xs = [problem.inputs[name].to(torch.float64) for name in moving]
        scale = _rms(xs) or 1.0
        self.step_scale = (
            step_factor * scale / (_rms([self.directions[name] for name in moving]) or 1.0)
        )
        """h for a relative step of 1: the direction's length set to the scale of the inputs
        it moves."""
        self.eps = torch.finfo(precision).eps
        self.constant = False
        """Whether φ took one value at every point of the step."""
        self.values: dict[int, float] = {}
        """φ(k·h) for k = -2…2, once the differences are taken."""
        self.rounding = 0.0
        """The rounding of one value of φ: eps·max Σ|w_i f_i|."""
        self.jumps = False
        """Whether the five values are far from smooth (NOTE [steps finer than the differences])."""

    def outputs(self, t: float) -> torch.Tensor:
        """f(x + t·d), every output flattened end to end, in float64."""
        inputs = dict(self.problem.inputs)
        for name, d in self.directions.items():
            x = self.problem.inputs[name]
            inputs[name] = (x.to(torch.float64) + t * d).to(x.dtype)
        outputs = evaluate(self.problem.function, inputs)
        shapes = {name: tuple(y.shape) for name, y in outputs.items()}
        if shapes != {n: tuple(s) for n, s in self.problem.output_shapes.items()}:
            raise _Skip(f"the outputs change shape along the step ({shapes})")
        self.eps = max(
            [torch.finfo(self.precision).eps] + [torch.finfo(y.dtype).eps for y in outputs.values()]
        )
        return torch.cat([outputs[n].reshape(-1).to(torch.float64) for n in shapes])


class _Skip(Exception):
    """The comparison cannot be made here; the message says why."""


def _relative_step(dtype: torch.dtype, order: int) -> float:
    """eps^(1/3) for a first difference, eps^(1/4) for a second: where truncation and rounding
    errors balance."""
    return float(torch.finfo(dtype).eps ** (1 / (2 + order)))


def _differences(
    line: _Line, weights: torch.Tensor, order: int
) -> tuple[float, float, float, float, float]:
    """(D(h), D₊, D₋, estimated error, h) for φ' (order 1) or φ'' (order 2) at t = 0."""
    h = _relative_step(line.precision, order) * line.step_scale
    values, sizes = {}, []
    for k in (-2, -1, 0, 1, 2):
        f = line.outputs(k * h)
        values[k] = float(weights @ f)
        sizes.append(float(weights.abs() @ f.abs()))
    if not all(math.isfinite(v) for v in values.values()):
        raise _Skip("the function is not finite within the step")
    p = values
    line.constant = len(set(p.values())) == 1
    rounding = line.eps * max(sizes)
    line.values, line.rounding = p, rounding
    fourth = abs(p[2] - 4 * p[1] + 6 * p[0] - 4 * p[-1] + p[-2])
    line.jumps = (
        fourth > JUMP_FRACTION * (max(p.values()) - min(p.values())) + 16 * SAFETY * rounding
    )
    if order == 1:
        central, wide = (p[1] - p[-1]) / (2 * h), (p[2] - p[-2]) / (4 * h)
        plus = (4 * p[1] - p[2] - 3 * p[0]) / (2 * h)
        minus = (3 * p[0] - 4 * p[-1] + p[-2]) / (2 * h)
        rounding_error = 4 * rounding / h
    else:
        central = (p[1] - 2 * p[0] + p[-1]) / h**2
        wide = (p[2] - 2 * p[0] + p[-2]) / (4 * h**2)
        plus = (p[0] - 2 * p[1] + p[2]) / h**2
        minus = (p[0] - 2 * p[-1] + p[-2]) / h**2
        rounding_error = 4 * rounding / h**2
    return central, plus, minus, abs(central - wide) + rounding_error, h


def compare_along(
    problem: Problem,
    quantity: str,
    value: float,
    squared_scale: Callable[[], float],
    weights: torch.Tensor,
    directions: Mapping[str, torch.Tensor],
    order: int,
) -> FunctionReference:
    """`value` (φ'(0) or φ''(0) read off the result) against the function's own differences
    along `directions`, weighted over the outputs by `weights` (NOTE [the function as the
    reference]); `squared_scale()` gives the squares of the value's terms, for its rounding.

    When they disagree, the same comparison is made at points a little away (NOTE [kinks at
    the point]), with the value there by autograd; the first that agrees stands for the result."""
    precision = problem.torch_dtype
    reference, smooth = _compare(
        problem, quantity, value, squared_scale, weights, directions, order, precision
    )
    if reference.skipped in (JUMPS, FLAT) and precision == torch.float64:
        coarse, coarse_smooth = _compare(
            problem, quantity, value, squared_scale, weights, directions, order, torch.float32
        )
        if coarse.passed is not None:  # float32 inside: its own steps tell
            reference, smooth, precision = coarse, coarse_smooth, torch.float32
    if reference.skipped == ROUGH and precision == torch.float64:
        # rounding coarse beside the part measured (y = 1e12·a + b², along b): longer steps
        longer, longer_smooth = _compare(
            problem, quantity, value, squared_scale, weights, directions, order, precision,
            LONGER_STEPS,
        )  # fmt: skip
        if longer.passed is not None:
            reference, smooth = longer, longer_smooth
    if reference.passed is not False or smooth:  # NOTE [kinks at the point]
        return reference
    generator = torch.Generator().manual_seed(REFERENCE_SEED + 1)
    offset = min(MAX_OFFSET, OFFSET_STEPS * 2 * _relative_step(precision, order))
    for _ in range(OFFSET_TRIES):
        moved = _moved(problem, _random_directions(problem, generator), offset)
        near, near_squared = _autograd_value(moved, weights, directions, order)
        retried, _ = _compare(
            moved, quantity, near, lambda s=near_squared: s, weights, directions, order, precision
        )
        if retried.passed:
            return replace(retried, off_point=offset)
    return reference


def _compare(
    problem: Problem,
    quantity: str,
    value: float,
    squared_scale: Callable[[], float],
    weights: torch.Tensor,
    directions: Mapping[str, torch.Tensor],
    order: int,
    precision: torch.dtype,
    step_factor: float = 1.0,
) -> tuple[FunctionReference, bool]:
    """The comparison at the problem's point, with steps and rounding of `precision` (see
    compare_along), and whether φ is smooth there: its one-sided differences agree (NOTE
    [kinks at the point])."""
    line = _Line(problem, directions, precision, step_factor)
    nan = math.nan
    try:
        central, plus, minus, estimated, h = _differences(line, weights, order)
    except _Skip as why:
        return FunctionReference(quantity, value, nan, nan, nan, nan, None, str(why)), False
    except ComputationError as error:
        why = f"the function failed within the step ({error.message[:160]})"
        return FunctionReference(quantity, value, nan, nan, nan, nan, None, why), False
    smooth = abs(plus - minus) <= SAFETY * estimated
    if not math.isfinite(value):
        why = "the result is not finite"
        return FunctionReference(quantity, value, central, estimated, nan, h, None, why), smooth
    if estimated > max(abs(central), abs(value)):  # NOTE [a reference too rough to judge]
        why = FLAT if line.constant else ROUGH
        return FunctionReference(quantity, value, nan, nan, nan, nan, None, why), smooth
    low, high = min(central, plus, minus), max(central, plus, minus)
    distance = max(low - value, value - high, 0.0)
    tolerance = SAFETY * estimated
    if distance > tolerance:  # only now weigh the result's own rounding, which costs a read of it
        tolerance += VALUE_RTOL_EPS * line.eps * math.sqrt(squared_scale())
    if distance > tolerance and line.constant:  # a nonzero slope too small to change f
        return FunctionReference(quantity, value, nan, nan, nan, nan, None, FLAT), smooth
    if distance > tolerance and (
        line.jumps or _jumps_finer(line, weights, order, h, central, estimated)
    ):
        return FunctionReference(quantity, value, nan, nan, nan, nan, None, JUMPS), False
    step = h / line.step_scale
    passed = distance <= tolerance
    return FunctionReference(quantity, value, central, estimated, tolerance, step, passed), smooth


def _jumps_finer(
    line: _Line, weights: torch.Tensor, order: int, h: float, central: float, estimated: float
) -> bool:
    """Whether the central difference with a step FINER times smaller (two more calls) leaves
    D(h) by more than both their errors: a staircase finer than h, which a smooth φ, graph
    break or not, cannot be (NOTE [steps finer than the differences])."""
    small = h / (FINER if order == 1 else math.sqrt(FINER))
    try:
        ends = [float(weights @ line.outputs(k * small)) for k in (-1, 1)]
    except (ComputationError, _Skip):
        return False
    if order == 1:
        finer, rounding = (ends[1] - ends[0]) / (2 * small), line.rounding / small
    else:
        finer = (ends[1] - 2 * line.values[0] + ends[0]) / small**2
        rounding = 4 * line.rounding / small**2
    return math.isfinite(finer) and abs(finer - central) > SAFETY * (estimated + rounding)


def _moved(problem: Problem, offsets: Mapping[str, torch.Tensor], size: float) -> Problem:
    """The problem at x + size·offset (in the problem's dtype)."""
    inputs = dict(problem.inputs)
    for name, offset in offsets.items():
        x = problem.inputs[name]
        inputs[name] = (x.to(torch.float64) + size * offset).to(x.dtype)
    return replace(problem, inputs=inputs)


def _autograd_value(
    problem: Problem, weights: torch.Tensor, directions: Mapping[str, torch.Tensor], order: int
) -> tuple[float, float]:
    """What the result would read at the problem's point, by autograd: (wᵀJ)·d by one reverse
    pass, or dᵀ∇²(wᵀf)d by reverse-over-reverse; and the sum of its terms' squares."""
    primals, f = split_wrt(problem)
    ds = [directions[w].to(p.dtype) for w, p in zip(problem.wrt, primals, strict=True)]

    def weighted(*values: torch.Tensor) -> torch.Tensor:
        y = f(*values)
        return (y.reshape(-1) * weights.to(y.dtype)).sum()

    try:
        if order == 1:
            products = gradient_at(weighted, primals)
        else:
            _, products = hvp_reverse_over_reverse(weighted, primals, ds)
    except (ComputationError, RuntimeError) as error:
        raise_if_out_of_memory(error)
        return math.nan, math.nan
    return dot_terms(list(zip(products, ds, strict=True)))


def _random_directions(problem: Problem, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction for each `wrt` input, each entry scaled by its own size (at least the
    input's root mean square, or 1), so that steps stay relative to the numbers they move."""
    directions = {}
    for name in problem.wrt:
        x = problem.inputs[name].to(torch.float64)
        typical = _rms([x]) or 1.0
        g = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        directions[name] = g * x.abs().clamp_min(typical)
    return directions


def _output_weights(problem: Problem, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(problem.output_count, generator=generator, dtype=torch.float64)


def _with_reference(
    result: Result, problem: Problem, reference: FunctionReference, notes: tuple[str, ...] = ()
) -> Result:
    """The result with `reference` on its guard (and `notes` among its warnings), or
    ComputationError (exit 1) naming the likely cause when the result disagrees with the
    function."""
    refuse_disagreement(problem, reference)
    guard = result.guard or Guard("", "", math.nan, math.nan, math.nan, None)
    return replace(  # type: ignore[return-value]
        result,
        guard=replace(guard, function_reference=reference),
        notes=(*result.notes, *notes),
    )


def refuse_disagreement(problem: Problem, reference: FunctionReference) -> None:
    """ComputationError (exit 1) naming the likely cause when a result disagrees with the
    function's own differences; nothing when it agrees or could not be checked."""
    if reference.passed is False:
        derivative = "H" if "H" in reference.quantity else "J"
        found = describe_graph_break(problem, derivative)
        if found is not None:
            raise ComputationError(f"{problem.function.name}: {found}", code="graph_break")
        cause = (
            "autograd does not see part of the computation: look for NumPy, .detach(), "
            "torch.no_grad, a custom autograd.Function, steps finer than the differences' "
            "(round, floor), or a branch taken at this point alone (where(x == 0, …))"
            if problem.function.may_break_graph
            else "torch's derivative is wrong here (det of a singular matrix gives 0 where the "
            "adjugate is not); try a point where the matrix is not singular"
        )
        raise ComputationError(
            f"{problem.function.name}: the result disagrees with the function's own central "
            f"differences ({reference.quantity} = {reference.value:.6g}, the differences give "
            f"{reference.difference:.6g} ± {reference.estimated_error:.2g}); {cause}",
            code="function_reference_failed",
        )


def _by_output(problem: Problem, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """The flat weights over all outputs, split by output name."""
    sizes = [math.prod(shape) for shape in problem.output_shapes.values()]
    return dict(zip(problem.output_shapes, u.split(sizes), strict=True))


def check_jacobian_result(problem: Problem, result: JacobianResult) -> JacobianResult:
    """uᵀJd against d/dt uᵀf(x + t·d): the dense J, or the sum over per-sample blocks."""
    if not _applies(problem):
        return result
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    u = _output_weights(problem, generator)
    directions = _random_directions(problem, generator)
    rows = rows_to_probe(problem.output_count, problem.input_count, generator)
    if rows is not None and result.per_sample is None:  # read J's rows as the AD guard does
        u = torch.zeros_like(u).index_copy_(0, rows, u[rows])
    if result.per_sample is not None:
        ((_, by_wrt),) = result.jacobians.items()
        (shape,) = problem.output_shapes.values()
        blocks = {w: (torch.from_numpy(by_wrt[w]), *result.per_sample[w]) for w in problem.wrt}
        u_y = u.reshape(shape)

        def terms(names: Sequence[str]) -> tuple[float, Callable[[], float]]:
            chosen, vs = [blocks[w] for w in names], [directions[w] for w in names]
            return block_bilinear(chosen, u_y, vs), lambda: block_squared_terms(chosen, u_y, vs)

    else:
        parts = []
        for y, u_y in _by_output(problem, u).items():
            read = None if rows is None else u_y.nonzero().reshape(-1)
            matrices = {
                w: as_matrix(torch.from_numpy(result.jacobians[y][w]), u_y.numel(), read)
                for w in problem.wrt
            }
            parts.append((matrices, u_y if read is None else u_y[read]))

        def terms(names: Sequence[str]) -> tuple[float, Callable[[], float]]:
            vs = [directions[w].reshape(-1) for w in names]
            chosen = [([m[w] for w in names], u_y) for m, u_y in parts]
            value = sum(bilinear(m, u_y, vs) for m, u_y in chosen)
            return value, lambda: sum(squared_terms(m, u_y, vs) for m, u_y in chosen)

    def along(names: Sequence[str]) -> FunctionReference:
        value, squared = terms(names)
        quantity = "uᵀJv" if names == problem.wrt else f"uᵀJv along {names[0]}"
        return compare_along(problem, quantity, value, squared, u, _only(directions, names), 1)

    return _with_reference(result, problem, *_each_input(problem, along))


# NOTE [each input its own reference]
# One direction through every input weighs each input's part of uᵀJd by its own scale: with
# y = 1e12·a + g(b) the differences' error is about 1e-10 of a's part, far above all of b's,
# so a J of b that autograd got wrong (b.detach() inside g: zero) agreed. Each differentiated
# input is checked along its own direction, the others held (5 calls of the function each).
# An input whose check cannot be made (its part below f's rounding, or none at all) gets a
# warning of its own, and the others' checks stand.
def _each_input(
    problem: Problem, along: Callable[[Sequence[str]], FunctionReference]
) -> tuple[FunctionReference, tuple[str, ...]]:
    """The reference along each `wrt` input in turn (NOTE [each input its own reference]):
    the first that disagrees, else the first made, else the first; and a warning for each
    input whose check could not be made while another's was."""
    if len(problem.wrt) == 1:
        return along(problem.wrt), ()
    references = [along([w]) for w in problem.wrt if problem.inputs[w].numel()]
    failed = [r for r in references if r.passed is False]
    made = [r for r in references if r.passed]
    if failed or not made:
        return (failed or references)[0], ()
    notes = tuple(  # a zero part where f does not change at all says nothing worth a warning
        f"{r.quantity} was not checked against {problem.function.name}'s differences: {r.skipped}"
        for r in references
        if r.passed is None and not (r.skipped == FLAT and r.value == 0)
    )
    return made[0], notes


def _only(directions: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """`directions` along `names`, zero along the other inputs."""
    return {w: d if w in names else torch.zeros_like(d) for w, d in directions.items()}


def check_sparse_result(
    problem: Problem, result: SparseJacobianResult | SparseHessianResult
) -> SparseJacobianResult | SparseHessianResult:
    """uᵀJd against d/dt uᵀf(x + t·d) for a sparse J, or dᵀHd against the second difference of
    f along d for a sparse H, read off the sparse matrix (every entry: it holds only the
    pattern's)."""
    if not _applies(problem):
        return result
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    matrix = result.matrix
    if isinstance(result, SparseHessianResult):
        weights = torch.ones(problem.output_count, dtype=torch.float64)
        directions = _random_directions(problem, generator)
        u = torch.cat([directions[w].reshape(-1) for w in problem.wrt]).numpy()
        quantity, order = "vᵀH v", 2
    else:
        weights = _output_weights(problem, generator)
        directions = _random_directions(problem, generator)
        u = weights.numpy()
        quantity, order = "uᵀJv", 1
    d = torch.cat([directions[w].reshape(-1) for w in problem.wrt]).numpy()
    terms = matrix.multiply(u[:, None]).multiply(d[None, :])
    value = float(terms.sum())
    scale = float(np.square(terms.data).sum())
    reference = compare_along(problem, quantity, value, lambda: scale, weights, directions, order)
    return _with_reference(result, problem, reference)  # type: ignore[return-value]


def check_vjp_result(problem: Problem, result: VjpResult) -> VjpResult:
    """(cᵀJ)·d against d/dt cᵀf(x + t·d), c the cotangent."""
    if not _applies(problem):
        return result
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    directions = _random_directions(problem, generator)
    c = torch.cat([_flat64(result.cotangents[y]) for y in problem.output_shapes])

    def along(names: Sequence[str]) -> FunctionReference:
        value, scale = dot_terms([(torch.from_numpy(result.vjps[w]), directions[w]) for w in names])
        quantity = "(cᵀJ)·v" if names == problem.wrt else f"(cᵀJ)·v along {names[0]}"
        return compare_along(
            problem, quantity, value, lambda: scale, c, _only(directions, names), 1
        )

    return _with_reference(result, problem, *_each_input(problem, along))


def check_jvp_result(problem: Problem, result: JvpResult) -> JvpResult:
    """uᵀ(J t) against d/ds uᵀf(x + s·t), t the tangent."""
    if not _applies(problem):
        return result
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    u = _output_weights(problem, generator)
    j_t = torch.cat([_flat64(result.jvps[y]) for y in problem.output_shapes])
    value, scale = dot_terms([(u, j_t)])
    tangents = {w: torch.from_numpy(result.tangents[w]) for w in problem.wrt}
    reference = compare_along(problem, "uᵀ(J t)", value, lambda: scale, u, tangents, 1)
    return _with_reference(result, problem, reference)


def check_hessian_result(problem: Problem, result: HessianResult) -> HessianResult:
    """uᵀH[d, d] = Σ_y u_y dᵀH_y d against the second difference of uᵀf along d."""
    if not _applies(problem):
        return result
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    u = _output_weights(problem, generator)
    directions = _random_directions(problem, generator)
    flat = {w: directions[w].reshape(-1) for w in problem.wrt}
    parts = []
    for y, u_y in _by_output(problem, u).items():
        for a in problem.wrt:
            rows = (u_y[:, None] * flat[a][None, :]).reshape(-1)  # H_y as (y, a) rows × b columns
            matrices = [
                as_matrix(torch.from_numpy(result.hessians[y][a][b]), rows.numel(), None)
                for b in problem.wrt
            ]
            parts.append((matrices, rows))
    vs = [flat[b] for b in problem.wrt]
    value = sum(bilinear(matrices, rows, vs) for matrices, rows in parts)
    squared = lambda: sum(squared_terms(m, rows, vs) for m, rows in parts)  # noqa: E731
    reference = compare_along(problem, "uᵀH[v, v]", value, squared, u, directions, 2)
    return _with_reference(result, problem, reference)


def check_hvp_result(problem: Problem, result: HvpResult) -> HvpResult:
    """vᵀ(H v) against the second difference of f along v."""
    if not _applies(problem):
        return result
    vectors = {w: torch.from_numpy(result.vectors[w]) for w in problem.wrt}
    value, scale = dot_terms([(torch.from_numpy(result.hvps[w]), vectors[w]) for w in problem.wrt])
    weights = torch.ones(problem.output_count, dtype=torch.float64)
    reference = compare_along(problem, "vᵀ(H v)", value, lambda: scale, weights, vectors, 2)
    return _with_reference(result, problem, reference)


def _applies(problem: Problem) -> bool:
    """Whether the function may hide a computation from autograd, and J has entries."""
    return (
        problem.function.checked_against_itself and problem.output_count * problem.input_count > 0
    )


def check_block(
    problem: Problem, block: torch.Tensor, rows: tuple[int, int], columns: tuple[int, int]
) -> FunctionReference | None:
    """u_Rᵀ J[R, C] d_C from one block of J as a matrix (rows R, columns C: NOTE [the
    correctness guard]'s layout) against d/dt uᵀf(x + t·d), u zero outside R and d outside C;
    ComputationError (exit 1) where they disagree, None where the function cannot hide anything
    from autograd (NOTE [the function as the reference])."""
    if not _applies(problem):
        return None
    generator = torch.Generator().manual_seed(REFERENCE_SEED + 1_000_003 * rows[0] + columns[0])
    u = torch.zeros(problem.output_count, dtype=torch.float64)
    u[rows[0] : rows[1]] = torch.randn(rows[1] - rows[0], generator=generator, dtype=torch.float64)
    directions = _random_directions(problem, generator)
    flat = torch.cat([directions[w].reshape(-1) for w in problem.wrt])
    outside = torch.ones_like(flat, dtype=torch.bool)
    outside[columns[0] : columns[1]] = False
    flat[outside] = 0.0
    sizes = [problem.inputs[w].numel() for w in problem.wrt]
    directions = {
        w: part.reshape(problem.inputs[w].shape)
        for w, part in zip(problem.wrt, flat.split(sizes), strict=True)
    }
    u_rows, d_columns = u[rows[0] : rows[1]], flat[columns[0] : columns[1]]
    matrix = block.detach()
    value = bilinear([matrix], u_rows, [d_columns])
    reference = compare_along(
        problem,
        "uᵀJv",
        value,
        lambda: squared_terms([matrix], u_rows, [d_columns]),
        u,
        directions,
        1,
    )
    refuse_disagreement(problem, reference)
    return reference
