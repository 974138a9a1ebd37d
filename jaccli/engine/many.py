"""One command at many points: vectorized over a point axis with torch.func.vmap, in chunks.

# NOTE [many points]
Each command has a kernel: its result at one point, written with torch.func's transforms (jacfwd or
jacrev for J, vjp, jvp, jacfwd(jacrev) for H, jvp of grad for H·v), so that `vmap` runs it for a
whole chunk of points at once. Forward mode is preferred for J while the per-point J has no more
inputs than outputs, or few, because torch.func's reverse mode imports torch._dynamo (about 1 s) the
first time in a process; a forward-mode kernel loads forward mode alone (FORWARD_MODES), so a run
of them never imports it. The correctness guard checks the first point of each chunk against the
single-point engine, itself guarded (a preset's or an expression's J against an unbatched call
instead: NOTE [a function that hides nothing, at a chunk's first point]; a chunk of one or two
points is the single-point engine's alone: a coprocess's point at a time answers without
torch._dynamo), and every point of a J
(jacobian, det) against one vmapped reverse pass: uᵀJ for a random u, read off each point's J, must
equal the VJP column by column, within the single-point guard's tolerance (NOTE [the correctness
guard]), with NaN and ±Infinity in the same columns, so a point where vmap's forward mode and the
single-point engine's reverse mode part ways (NaN placement, a branch's derivative) is caught
wherever it lies in the chunk; the cost is one vectorized reverse pass a chunk. The products are
probed the same way at every point, each by another mode than its kernel's: (vᵀJ)·w against vᵀ(J w)
by forward mode, u·(J t) against (uᵀJ)·t by reverse mode, and zᵀ(H v) against (H z)ᵀv (terms of
H's order where H v cancels, as in the single-point guard) or zᵀH w by reverse-over-reverse. A
kernel that vmap cannot run, or that disagrees, gives way to the kernel of the other mode (jacrev
for jacfwd: a custom autograd.Function without `jvp`; for vᵀJ, J's columns by forward mode
contracted with v; for J·t, the VJP of the VJP), then to a loop of the single-point engine, with a
note either way. Each point's result is the same result object a single-point run gives, made when
it is asked for (ChunkOutcomes): ten thousand made up front cost more than the chunk's vectorized
work; --out writes the chunk's stacked arrays (ChunkOutcomes.stacked) without making them."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, overload

import numpy as np
import torch

from jaccli.engine.det import determinant, determinant_notes
from jaccli.engine.evaluate import as_leaf, call_function, to_numpy, vector_jacobian
from jaccli.engine.finite import nonfinite_notes
from jaccli.engine.graph_break import first_silent_graph_break
from jaccli.engine.hessian import symmetry_error
from jaccli.engine.jacobian import (
    CallNotes,
    load_forward_vectorizing,
    load_vectorizing,
    split_wrt,
    vectorized_start_up_paid,
)
from jaccli.engine.problem import Problem
from jaccli.engine.tolerance import AD_TOLERANCE
from jaccli.engine.trust import GUARD_SEED, guard_rtol, probe_draws
from jaccli.errors import ComputationError, JaccliError, ResourceError
from jaccli.memory import budget_or_default, raise_if_out_of_memory
from jaccli.messages import brief, first_line, format_bytes
from jaccli.result import (
    Determinant,
    Evaluation,
    Guard,
    HessianResult,
    HvpResult,
    InputValue,
    JacobianResult,
    JvpResult,
    PointsPlan,
    Result,
    VjpResult,
    computed_arrays,
)

VECTORIZED = frozenset({"jacobian", "det", "vjp", "jvp", "hessian", "hvp"})
"""The commands with a kernel; `check` goes point by point."""
FORWARD_MODES = frozenset({"jacfwd", "jvp", "vᵀ·jacfwd"})
"""The kernel modes that are forward mode alone, which load torch.func without torch._dynamo."""
MAX_CHUNK = 65536
INTERMEDIATE_MULTIPLE = 4
"""A vmapped chunk holds about this many times its results' bytes in intermediates."""

Single = Callable[[Problem], Result]
"""The command at one point, by the single-point engine (guarded)."""
SAMPLED_POINTS = (0,)
"""The points of a vectorized chunk checked against, and given as, the single-point engine's
results, for the products and for the J of the user's own function (one: the every-point
probe covers the rest, and each single-point run costs as much as the vectorized work of
thousands of small points)."""
FEW_POINTS = 2
"""A chunk of no more points than this is the single-point engine's alone, without vmap, which
would only recompute them (a coprocess's point at a time answers without loading torch.func)."""


@dataclass(frozen=True)
class PointOutcome:
    """One point's result, or the error that stopped it. A vectorized point's result object is
    made when it is first asked for (`made`), from its chunk's arrays."""

    index: int
    made: Result | Callable[[], Result] | None
    error: JaccliError | None = None

    @property
    def result(self) -> Result | None:
        if callable(self.made):
            object.__setattr__(self, "made", self.made())
        return self.made  # type: ignore[return-value]


class ChunkOutcomes(Sequence[PointOutcome]):
    """A vectorized chunk's outcomes, each made when it is asked for: none has an error, and
    making ten thousand of them at once cost more than the chunk's vectorized work."""

    def __init__(
        self,
        first_index: int,
        size: int,
        arrays: _ChunkArrays,
        guard: Guard,
        references: Mapping[int, Result],
    ) -> None:
        self.first_index, self.size = first_index, size
        self.arrays, self.guard, self.references = arrays, guard, references

    def __len__(self) -> int:
        return self.size

    def shared_notes(self) -> tuple[str, ...]:
        """The warnings every point of the chunk has."""
        return self.arrays.problem.notes

    def with_own_notes(self) -> Iterator[tuple[int, Result]]:
        """The points whose result may carry warnings of its own, beyond the warnings every
        point of the chunk has: those not finite, the sampled and the first point, and for det
        those whose J is singular or whose det J leaves float64 (determinant_notes); with
        their result objects."""
        arrays = self.arrays
        own = set(np.flatnonzero(~arrays.finite).tolist()) | set(self.references) | {0}
        if arrays.dets is not None:
            d = arrays.dets
            odd = d.singular | (np.isfinite(d.logabsdet) & (~np.isfinite(d.det) | (d.det == 0)))
            own |= set(np.flatnonzero(odd).tolist())
        for k in sorted(own):
            outcome = self[k]
            assert outcome.result is not None
            yield outcome.index, outcome.result

    def stacked(self) -> list[np.ndarray] | None:
        """The chunk's computed arrays along a leading point axis, in the order of its results'
        arrays (each J, vᵀ·J, J·v, H·v or H; then det J's sign, log|det J|, det J and trace),
        the vectorized values at every point: the sampled points' rows are not their
        single-point results' (which differ within the guard's tolerance); None for a chunk
        of sparse J."""
        return self.arrays.stacked()

    @overload
    def __getitem__(self, k: int) -> PointOutcome: ...

    @overload
    def __getitem__(self, k: slice) -> list[PointOutcome]: ...

    def __getitem__(self, k: int | slice) -> PointOutcome | list[PointOutcome]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.size))]
        if not -self.size <= k < self.size:
            raise IndexError(k)
        k %= self.size
        made = self.references.get(k) or functools.partial(self.arrays.result, k, self.guard)
        return PointOutcome(self.first_index + k, made)


class SparseKernel(Protocol):
    """A sparse J vectorized over the points (sparse/many.py's SparsePoints)."""

    def chunk_size(self, problem: Problem, limit: int, most: int) -> int:
        """Points a vmapped chunk may hold within `limit` bytes."""
        ...

    def chunk(
        self, problem: Problem, chunk: Mapping[str, torch.Tensor], single: Single, first_index: int
    ) -> ChunkOutcomes:
        """The chunk's outcomes, vectorized and guarded."""
        ...


KEPT_POINT_OVERHEAD = 2048
"""Bytes of Python objects around one point's arrays when every point is kept in memory."""


def kept_point_bytes(problem: Problem, command: str) -> int:
    """What keeping one point's result costs (for --json, --out and tables, which need every
    point before printing): its arrays twice (the result and the stacked copy) and its objects."""
    return 2 * per_point_numbers(problem, command) * 8 + KEPT_POINT_OVERHEAD


def per_point_numbers(problem: Problem, command: str) -> int:
    """Numbers one point's result holds: J (n_out·n_in), H (n_out·n_in²) or the products."""
    n_out, n_in = problem.output_count, problem.input_count
    if command in ("jacobian", "det", "check"):
        return n_out * n_in + n_out + n_in
    if command == "hessian":
        return n_out * n_in * n_in + n_out + n_in
    return 2 * (n_out + n_in)


def jacobian_mode(problem: Problem) -> str:
    """jacfwd or jacrev for a per-point J (see NOTE [many points])."""
    n_out, n_in = problem.output_count, problem.input_count
    if n_in <= n_out or (not vectorized_start_up_paid() and n_in <= 16 * n_out):
        return "jacfwd"
    return "jacrev"


def kernel_modes(problem: Problem, command: str) -> tuple[str, ...]:
    """The command's kernels, in the order they are tried: the preferred mode, then the other
    one."""
    if command in ("jacobian", "det"):
        preferred = jacobian_mode(problem)
        return (preferred, "jacrev" if preferred == "jacfwd" else "jacfwd")
    modes = {
        "vjp": ("vjp", "vᵀ·jacfwd"),
        "jvp": ("jvp", "vjp(vjp)"),
        "hessian": ("jacfwd(jacrev)", "jacrev(jacrev)"),
        "hvp": ("jvp(grad)", "grad(grad·v)"),
    }
    return modes.get(command, ())


def method_name(
    problem: Problem, command: str, mode: str | None = None, *, sparse: bool = False
) -> str:
    """The vectorized method, by its first kernel mode or by `mode`."""
    if sparse:
        return (
            "the compressed passes vmapped over the points, the pattern and its colouring found "
            "once (point by point where the pattern depends on the values, or is dense)"
        )
    if command == "check":
        return "a loop of single-point checks"
    mode = mode or kernel_modes(problem, command)[0]
    return f"vmap({mode}) + slogdet" if command == "det" else f"vmap({mode})"


def plan_points(
    problem: Problem,
    command: str,
    count: int | None,
    budget: int | None = None,
    *,
    sparse: bool = False,
) -> PointsPlan:
    """The chunk size that keeps a vmapped chunk within the memory budget, or why none does;
    `sparse`: points one at a time, each J held as its non-zeros (planned by the single point)."""
    limit = budget_or_default(budget)
    numbers = 2 * (problem.output_count + problem.input_count) if sparse else None
    numbers = numbers or per_point_numbers(problem, command)
    per_point = numbers * problem.torch_dtype.itemsize
    per_point_peak = INTERMEDIATE_MULTIPLE * per_point + problem.resident_bytes
    available = limit - problem.resident_bytes
    chunk = max(1, min(MAX_CHUNK, available // max(per_point_peak, 1), count or MAX_CHUNK))
    peak = problem.resident_bytes + chunk * per_point_peak
    refused = None
    if peak > limit:
        refused = (
            f"one point of {command} would need about {format_bytes(peak)}, over the memory "
            f"budget of {format_bytes(limit)}; try smaller shapes or a larger --max-memory"
        )
    method = method_name(problem, command, sparse=sparse)
    return PointsPlan(count, chunk, per_point, peak, limit, method, refused)


def at_point(problem: Problem, values: Mapping[str, torch.Tensor]) -> Problem:
    """The problem with some inputs at one point."""
    return replace(problem, inputs={**problem.inputs, **values})


def run_points(
    problem: Problem,
    command: str,
    points: Mapping[str, torch.Tensor],
    single: Single,
    *,
    directions: Mapping[str, torch.Tensor] | None = None,
    first_index: int = 0,
    budget: int | None = None,
    keep_going: bool = False,
    sparse: bool = False,
    sparse_points: SparseKernel | None = None,
    before_loop: Callable[[], None] | None = None,
) -> Iterator[Sequence[PointOutcome]]:
    """Each chunk's outcomes in order, as soon as the chunk is done (NOTE [many points]).

    `points` holds the values of the inputs that vary, along a leading point axis; `directions`
    the cotangent, tangent or vector every point shares (vjp, jvp, hvp); `sparse`: each point's
    sparse J by `single` (NOTE [a pattern found once] in sparse/run.py), or, given
    `sparse_points`, by the compressed passes vmapped over the points (NOTE [sparse J at many
    points] in sparse/many.py); `before_loop` is called before a chunk is computed point by
    point (each point's result object made as it is computed)."""
    count = next(iter(points.values())).shape[0]
    plan = plan_points(problem, command, count, budget, sparse=sparse)
    if plan.refused is not None:
        raise ResourceError(plan.refused, code="memory_budget")
    chunk_size = plan.chunk_size
    if sparse_points is not None:
        chunk_size = sparse_points.chunk_size(problem, budget_or_default(budget), count)
    vectorized = command in VECTORIZED and not sparse
    modes = list(kernel_modes(problem, command)) if vectorized else []
    if modes and problem.function.checked_against_itself:
        problem, modes = _unless_unseen(problem, points, modes)
    # the kernels still to try: the first that runs and agrees serves the chunks after it
    for chunk_start in range(0, count, chunk_size):
        chunk = {n: t[chunk_start : chunk_start + chunk_size] for n, t in points.items()}
        outcomes: Sequence[PointOutcome] | None = None
        few = next(iter(chunk.values())).shape[0] <= FEW_POINTS
        if sparse_points is not None and not few:
            try:
                outcomes = sparse_points.chunk(problem, chunk, single, first_index + chunk_start)
            except (ComputationError, RuntimeError, NotImplementedError, ValueError) as error:
                raise_if_out_of_memory(error)
                why = error.message if isinstance(error, ComputationError) else first_line(error)
                sparse_points = None
                problem = replace(
                    problem,
                    notes=(
                        *problem.notes,
                        f"the compressed passes vmapped over the points could not run or "
                        f"disagreed ({brief(why, 240)}); computed point by point instead",
                    ),
                )
        while modes and outcomes is None and not few:
            try:
                outcomes = _vectorized_chunk(
                    problem, command, chunk, single, directions, first_index + chunk_start, modes[0]
                )
            except (ComputationError, RuntimeError, NotImplementedError, ValueError) as error:
                raise_if_out_of_memory(error)
                why = error.message if isinstance(error, ComputationError) else first_line(error)
                failed = method_name(problem, command, modes.pop(0))
                instead = method_name(problem, command, modes[0]) if modes else "point by point"
                problem = replace(
                    problem,
                    notes=(
                        *problem.notes,
                        f"{failed} could not run ({brief(why, 240)}); computed {instead} instead",
                    ),
                )
        if outcomes is None:
            if before_loop is not None:
                before_loop()
            outcomes = _loop_chunk(problem, chunk, single, first_index + chunk_start, keep_going)
        yield outcomes
        failed = not isinstance(outcomes, ChunkOutcomes) and any(
            o.error is not None for o in outcomes
        )
        if failed and not keep_going:
            return


# NOTE [every point against the function]
# The user's function can be wrong by autograd at one point and right at the others (a branch
# taken at that point alone, `where(x == 0, 0, x)` at 0), where no recorder sees anything and
# the every-point probe, autograd against autograd, agrees. So each point's uᵀJd (a VJP's
# cᵀJ·d, a JVP's uᵀ(J t): its own cotangent and tangent, the result read) is compared
# with the central differences of uᵀf along d there, as the single-point engine's reference
# does (NOTE [the function as the reference] in reference.py), by four vmapped calls of f for
# the whole chunk, each entry moved by eps^(1/3) of itself (steps relative to the input's whole
# scale swept a feature of 1e-3 beside one of 1e3 across its range). Only differences the steps
# resolve judge (the two steps agree: sin at 1e4 in float32 is not resolved), and a point that
# disagrees beyond SAFETY times their estimated error must disagree again, the same way, at a
# quarter of the step (unresolved differences agree by chance, seldom twice). Such a point is
# doubtful: the single-point engine runs there too, and its reference refuses a wrong J or
# tells a kink's convention (relu at 0) from one, and its result stands for that point.
SMALLEST_ENTRY = 1e-3
"""An entry of a point moves at least this share of the point's typical entry (a zero moves)."""
CONVERGED = 0.5
"""How far apart (relative) the central differences at h and 2h may be for the every-point
comparison to judge a point (NOTE [every point against the function])."""


def _doubtful(
    problem: Problem,
    command: str,
    chunk: Mapping[str, torch.Tensor],
    products: tuple,
    given: Mapping[str, torch.Tensor],
) -> set[int]:
    """The points of a chunk of the user's function whose uᵀJd (J's, or cᵀJ·d of a VJP with
    the cotangent c, or uᵀ(J t) of a JVP along the tangent t) differs from the function's own
    central differences (NOTE [every point against the function]); none for other commands
    and functions."""
    if command not in ("jacobian", "det", "vjp", "jvp") or not problem.function.may_break_graph:
        return set()
    from jaccli.engine.reference import SAFETY

    size = next(iter(chunk.values())).shape[0]
    wrt, names, dtype = problem.wrt, list(problem.output_shapes), problem.torch_dtype
    eps = torch.finfo(dtype).eps
    generator = torch.Generator().manual_seed(GUARD_SEED + 1)
    bases, directions, reach = {}, {}, []
    for w in wrt:  # one random direction for every point, scaled by each point's own entries
        given_x = chunk.get(w)
        x = problem.inputs[w].expand(size, *problem.inputs[w].shape) if given_x is None else given_x
        x = x.to(torch.float64).reshape(size, -1)
        typical = x.square().mean(1, keepdim=True).sqrt().clamp_min(1e-300)
        least = x.abs().maximum(SMALLEST_ENTRY * typical)  # how far each entry may move
        if command == "jvp":  # the tangent the product is along
            directions[w] = given[w].to(torch.float64).reshape(1, -1).expand(size, -1)
        else:
            g = torch.randn(x.shape[1], generator=generator, dtype=torch.float64)
            directions[w] = g * least
        moved = directions[w].abs()
        reach.append(torch.where(moved > 0, least / moved, math.inf).amin(1))
        bases[w] = x
    if command == "vjp":  # the cotangent the product is with
        u = torch.cat([given[n].to(torch.float64).reshape(-1) for n in names])
    else:
        u = torch.randn(problem.output_count, generator=generator, dtype=torch.float64)
    u = u.expand(size, problem.output_count)
    counts = [math.prod(shape) for shape in problem.output_shapes.values()]
    us = dict(zip(names, u.split(counts, 1), strict=True))
    # each term's three factors, flat by point: Σ over them is the value, of |·| its rounding
    if command == "vjp":
        terms = [(torch.ones(size, 1, dtype=torch.float64), p.detach().reshape(size, 1, -1),
                  directions[w]) for w, p in zip(wrt, products, strict=True)]  # fmt: skip
    elif command == "jvp":
        terms = [(us[n], p.detach().reshape(size, -1, 1), torch.ones(size, 1, dtype=torch.float64))
                 for n, p in zip(names, products, strict=True)]  # fmt: skip
    else:
        terms = [
            (us[n], j.detach().reshape(size, us[n].shape[1], -1), directions[w])
            for n, by_wrt in zip(names, products, strict=True)
            for w, j in zip(wrt, by_wrt, strict=True)
        ]
    value = sum(  # in the result's dtype: its rounding is within the tolerance's eps·Σ|terms|
        torch.einsum("ko,koi,ki->k", a.to(m.dtype), m, b.to(m.dtype)) for a, m, b in terms
    ).to(torch.float64)
    limit = torch.stack(reach).amin(0)  # each entry moves by at most eps^(1/3) of itself
    h = eps ** (1 / 3) * torch.where(limit.isfinite(), limit, 1.0)
    shared = {n: t for n, t in problem.inputs.items() if n not in wrt and n not in chunk}
    varying = [n for n in chunk if n not in wrt]

    def outputs_at(*values: torch.Tensor) -> torch.Tensor:
        inputs = {**shared, **dict(zip([*wrt, *varying], values, strict=True))}
        ys = call_function(problem.function, inputs, vectorized=True)
        return torch.cat([ys[n].reshape(-1) for n in names]).to(torch.float64)

    def differences(
        rows: torch.Tensor | None, step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """At the points `rows` (None: all): uᵀf's central difference along d with `step`,
        and its estimated error (the difference at twice the step, and f's rounding)."""

        def at(t: torch.Tensor) -> torch.Tensor:
            return t if rows is None else t[rows]

        count = size if rows is None else len(rows)
        phi, sizes = {}, []
        for k in (-2, -1, 1, 2):
            moved = [
                (at(bases[w]) + (k * step)[:, None] * at(directions[w]))
                .to(dtype)
                .reshape(count, *problem.inputs[w].shape)
                for w in wrt
            ]
            f = torch.func.vmap(outputs_at)(*moved, *(at(chunk[n]) for n in varying))
            weights = at(u)
            phi[k], sizes = (weights * f).sum(1), [*sizes, (weights.abs() * f.abs()).sum(1)]
        central = (phi[1] - phi[-1]) / (2 * step)
        wide = (phi[2] - phi[-2]) / (4 * step)
        rounding = 4 * eps * torch.stack(sizes).amax(0) / step
        # the two steps must agree: f varies on a scale they resolve (sin at x = 1e4, steps of
        # 60, does not: its differences say nothing, and the point stands as the probe left it)
        resolved = (central - wide).abs() <= CONVERGED * torch.maximum(central.abs(), wide.abs())
        estimated = torch.where(resolved, (central - wide).abs() + rounding, math.inf)
        return central, estimated

    central, estimated = differences(None, h)
    judged = value.isfinite() & central.isfinite() & estimated.isfinite()
    rows = (judged & ((value - central).abs() > SAFETY * estimated)).nonzero().reshape(-1)
    if not len(rows):
        return set()
    # a point apart is apart again at a quarter of the step, where a resolved derivative is
    # the same (unresolved differences are apart by chance, and seldom twice); J's own
    # rounding, eps·Σ|u_i J_ij d_j|, weighs in only now
    finer, finer_estimated = differences(rows, h[rows] / 4)
    magnitude = sum(
        torch.einsum("ko,koi,ki->k", a[rows].abs(), m[rows].abs().to(torch.float64), b[rows].abs())
        for a, m, b in terms
    )
    tolerance = SAFETY * (finer_estimated + estimated[rows] + eps * magnitude)
    stable = (finer - central[rows]).abs() <= tolerance
    return set(rows[stable & ((value[rows] - finer).abs() > tolerance)].tolist())


# NOTE [points autograd cannot see]
# A vectorized chunk checks its first point against the function itself; the other points only
# by the every-point probe, autograd against autograd, which is as blind as the kernel where the
# function leaves the graph (`torch.where(x > 0, x**2, x.detach()**2)` is right at x > 0 and
# gives 0 elsewhere) or where torch's own derivative is wrong at some points (det of a singular
# matrix). So the user's function is called once at the first point under the recorder of
# graph_break.py: where it leaves the graph anywhere (even in a branch not taken there) in a way
# vmap runs (a detach, an op under no_grad: a value made Python or NumPy stops vmap itself), and for
# an expression whose torch derivative is not to be trusted, every point is computed and
# checked against the function by the single-point engine, one at a time.
def _unless_unseen(
    problem: Problem, points: Mapping[str, torch.Tensor], modes: list[str]
) -> tuple[Problem, list[str]]:
    """The problem and the vectorized kernels still to try: none, with a note saying why, where
    a point could be wrong out of autograd's sight (NOTE [points autograd cannot see])."""
    function = problem.function
    if function.untrusted_derivative:
        why = f"torch's derivative of {function.name} is not to be trusted at every point"
    else:
        first = at_point(problem, {n: t[0] for n, t in points.items()})
        found = first_silent_graph_break(first)
        if found is None:
            return problem, modes
        why = f"{found}, where autograd cannot follow"
    note = f"{why}: every point is computed and checked against the function one at a time"
    return replace(problem, notes=(*problem.notes, note)), []


def _loop_chunk(
    problem: Problem,
    chunk: Mapping[str, torch.Tensor],
    single: Single,
    first_index: int,
    keep_going: bool,
) -> list[PointOutcome]:
    """The single-point engine at each point of the chunk; a point that fails gives its error."""
    size = next(iter(chunk.values())).shape[0]
    outcomes = []
    for k in range(size):
        index = first_index + k
        try:
            result = single(at_point(problem, {n: t[k] for n, t in chunk.items()}))
        except JaccliError as error:
            outcomes.append(PointOutcome(index, None, error))
            if not keep_going:
                break
            continue
        outcomes.append(PointOutcome(index, result))
    return outcomes


def _vectorized_chunk(
    problem: Problem,
    command: str,
    chunk: Mapping[str, torch.Tensor],
    single: Single,
    directions: Mapping[str, torch.Tensor] | None,
    first_index: int,
    mode: str,
) -> ChunkOutcomes:
    """The chunk by vmap of the command's kernel in `mode`, its first point checked
    against the single-point engine (a preset's or an expression's J: against an unbatched
    call, NOTE [a function that hides nothing, at a chunk's first point])."""
    names = list(chunk)
    kernel = _kernel(problem, command, directions or {}, mode)

    def at(*values: torch.Tensor) -> tuple:
        return kernel({**problem.inputs, **dict(zip(names, values, strict=True))})

    if mode in FORWARD_MODES:
        load_forward_vectorizing()  # forward mode alone: no torch._dynamo (NOTE [many points])
    else:
        load_vectorizing()
    # NOTE [a reverse kernel's probe]: the kernel's plain forward pass recorded by autograd
    # serves the every-point probe's reverse pass, which needs no forward of its own (a
    # third of an MLP's engine time); each point has its own leaf, so the gradients stay apart
    fused = mode == "jacrev" and command in ("jacobian", "det")
    fused = fused and all(w in chunk for w in problem.wrt)
    leaves = {n: chunk[n].detach().clone().requires_grad_() for n in problem.wrt} if fused else {}
    with torch.enable_grad() if fused else contextlib.nullcontext():
        outputs, products = torch.func.vmap(at)(*(leaves.get(n, chunk[n]) for n in names))
    size = next(iter(chunk.values())).shape[0]
    # NOTE [a function that hides nothing, at a chunk's first point]
    unbatched = command in ("jacobian", "det") and not problem.function.may_break_graph
    first: _FirstPoint | None = None
    if command in ("jacobian", "det"):
        products = _detached(products)
        recorded = (outputs, leaves) if fused else None
        first = _probe_every_point(problem, chunk, products, first_index, recorded, unbatched)
        outputs = _detached(outputs)
    else:
        _probe_every_product(problem, command, chunk, products, directions or {}, first_index)
    arrays = _ChunkArrays(problem, command, chunk, outputs, products, directions or {}, mode)
    if first is not None:
        arrays.first = first
        ys = zip(arrays.ys, arrays.output_names, strict=True)
        pairs = [(y[0], first.outputs[n]) for y, n in ys]
        largest, tolerance = _arrays_difference(problem, pairs)
        if largest > tolerance:
            raise ComputationError(
                f"at point {first_index} its outputs differ from an unbatched call of "
                f"{problem.function.name} by {largest:.3g} (tolerance {tolerance:.2g})"
            )
        references: dict[int, Result] = {}
        checked = (
            f"the outputs and uᵀJ of an unbatched call at point {first_index} of this chunk "
            "(largest difference of the outputs)"
        )
    else:
        doubtful = _doubtful(problem, command, chunk, products, directions or {})
        sampled = sorted({k % size for k in SAMPLED_POINTS} | doubtful)
        references = {
            k: single(at_point(problem, {n: t[k] for n, t in chunk.items()})) for k in sampled
        }
        largest, tolerance = 0.0, 0.0
        for k, reference in references.items():
            difference, allowed = _difference(problem, arrays.result(k, None), reference)
            largest, tolerance = max(largest, difference), max(tolerance, allowed)
            if difference > allowed:
                raise ComputationError(
                    f"at point {first_index + k} it differs from the single-point engine by "
                    f"{difference:.3g} (tolerance {allowed:.2g})"
                )
        indices = ", ".join(str(first_index + k) for k in sampled)
        checked = (
            f"the guarded single-point engine at points {indices} of this chunk (largest "
            "difference)"
        )
    guard = Guard(
        method_name(problem, command, mode),
        f"{checked}, and an independent product at every point",
        largest,
        0.0,
        tolerance,
        True,
    )
    return ChunkOutcomes(first_index, size, arrays, guard, references)


# NOTE [a function that hides nothing, at a chunk's first point]
# The guarded single-point run at a chunk's first point checks three things the every-point
# probe does not: the outputs (the probe reads J only); a computation without vmap (the kernel
# and the probe's reverse pass are both vmapped, so a batching rule wrong for both alike would
# pass it); and, for the user's own code, J against the function itself (central differences:
# `.item()`, NumPy or `detach` are out of every AD pass's sight). A preset or an expression
# cannot compute out of autograd's sight, so for its J one unbatched call of f at the first
# point, watched for CallNotes' warnings as the single-point engine's call is, and one reverse
# pass through it do the rest: the outputs must match the kernel's within the single-point
# comparison's tolerance, and uᵀJ there is one more row of the probe. What is left out is the
# single-point engine's own J (a loop of reverse passes), its guard and its result object,
# about a bare vmap(jacrev)'s cost for 10,000 polar points; the user's code keeps that run.
@dataclass(frozen=True)
class _FirstPoint:
    """The chunk's first point by one unbatched call of f (NOTE [a function that hides
    nothing, at a chunk's first point]): its outputs by name, as numpy, and the warnings
    CallNotes reads off that call."""

    point: Problem
    outputs: dict[str, np.ndarray]
    notes: tuple[str, ...]
    vjps: tuple[torch.Tensor, ...]
    """uᵀJ there, for each `wrt` input, by a reverse pass through that call."""


def _probe_every_point(
    problem: Problem,
    chunk: Mapping[str, torch.Tensor],
    jacobians: tuple,
    first_index: int,
    recorded: tuple[tuple, dict[str, torch.Tensor]] | None = None,
    unbatched: bool = False,
) -> _FirstPoint | None:
    """Refuse the chunk unless each point's J agrees with one vmapped reverse pass: uᵀJ read
    off J against the VJP with cotangent u, input by input and column by column (NOTE [many
    points]); `recorded`: the kernel's outputs as autograd recorded them from the `wrt`
    leaves, for the reverse pass to start from (NOTE [a reverse kernel's probe]); `unbatched`:
    the chunk's first point's uᵀJ against one more reverse pass, through an unbatched call of f,
    whose outputs and warnings are returned (NOTE [a function that hides nothing, at a chunk's
    first point])."""
    wrt, output_names = problem.wrt, list(problem.output_shapes)
    generator = torch.Generator().manual_seed(GUARD_SEED)
    dtype = jacobians[0][0].dtype
    us = probe_draws([problem.output_shapes[n] for n in output_names], generator, dtype)

    if recorded is None:
        references = _reverse_vjps(problem, chunk, us)
    else:
        references = _recorded_vjps(*recorded, us)
    first = _unbatched_first_point(problem, chunk, us) if unbatched else None
    size = next(iter(chunk.values())).shape[0]
    rtol = guard_rtol(problem.torch_dtype)
    for a, w in enumerate(wrt):
        by_point = [
            (u.reshape(-1).to(j.dtype), j.reshape(size, u.numel(), -1))
            for u, j in zip(us, (jacobians[i][a] for i in range(len(us))), strict=True)
        ]
        # uᵀJ in J's dtype, as the single-point guard's bilinear takes J v (einsum: one matrix
        # product over every point, where matmul's batched one took 5x as long on the MLP)
        value = torch.einsum("i,kij->kj", *by_point[0])
        for u, j in by_point[1:]:
            value = value + torch.einsum("i,kij->kj", u, j)
        reference = references[a].reshape(size, -1)
        if first is not None:  # the unbatched pass's uᵀJ, a row of its own beside point 0's
            value = torch.cat((value, value[:1]))
            reference = torch.cat((reference, first.vjps[a].reshape(1, -1)))
        # float32 at least, where a function returns float16
        compared = torch.promote_types(value.dtype, torch.float32)
        value, reference = value.to(compared), reference.to(compared)
        # the plain test: a few passes over the chunk in J's dtype, whose rounding is far below
        # rtol; NaN, ±Infinity and cancellation fail it, and only those entries are weighed
        # again, in float64, by _agreeing's rule
        agree = (value - reference).abs() <= rtol * reference.abs()
        if not bool(agree.all()):
            # cancellation in uᵀJ: weigh by the terms (u_i J_ij)², in float64, where the plain
            # test failed (the squares of every point's J would cost as much as the probe)
            rows, columns = (~agree).nonzero(as_tuple=True)
            points = torch.where(rows < size, rows, 0)
            squares = sum(
                (
                    u.to(torch.float64).square() * j[points, :, columns].to(torch.float64).square()
                ).sum(-1)
                for u, j in by_point
            )
            v, r = (t[rows, columns].to(torch.float64) for t in (value, reference))
            weighed = rtol * (squares + r.square()).sqrt()
            agree[rows, columns] = _agreeing(v, r, weighed)
        if not bool(agree.all()):
            k, column = (int(i) for i in (~agree).nonzero()[0])
            if k == size:
                raise ComputationError(
                    f"at point {first_index} uᵀJ of {w} read off J differs from a reverse pass "
                    f"through an unbatched call at column {column} ({float(value[k, column]):.6g} "
                    f"against {float(reference[k, column]):.6g})"
                )
            raise ComputationError(
                f"at point {first_index + k} uᵀJ of {w} read off J differs from a reverse pass "
                f"at column {column} ({float(value[k, column]):.6g} against "
                f"{float(reference[k, column]):.6g})"
            )
    return first


def _unbatched_first_point(
    problem: Problem, chunk: Mapping[str, torch.Tensor], us: list[torch.Tensor]
) -> _FirstPoint:
    """f at the chunk's first point by one plain call, without vmap, watched for CallNotes'
    warnings, and uᵀJ there by one reverse pass through that call (`vjps`, one a `wrt` input)."""
    point = at_point(problem, {n: t[0] for n, t in chunk.items()})
    call_notes = CallNotes()
    primals, f = split_wrt(point, notes=call_notes)
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        joined = f(*leaves)
        u = us[0] if len(us) == 1 else torch.cat([u.reshape(-1) for u in us])
        if joined.requires_grad:
            vjps = vector_jacobian(joined, leaves, u.reshape(joined.shape).to(joined.dtype))
        else:
            vjps = tuple(torch.zeros_like(leaf) for leaf in leaves)
    outputs = {n: to_numpy(y) for n, y in call_notes.outputs.items()}
    return _FirstPoint(point, outputs, call_notes.notes or (), vjps)


def _agreeing(
    value: torch.Tensor, reference: torch.Tensor, tolerance: torch.Tensor
) -> torch.Tensor:
    """Where a probe read off the result agrees with its reference: within `tolerance` where
    both are finite, else NaN against NaN and an infinity against the same infinity."""
    value, reference, tolerance = torch.broadcast_tensors(value, reference, tolerance)
    close = (value - reference).abs() <= tolerance
    # where a finite tolerance is met both sides are finite: the rule below is needed only
    # at the other entries, usually none or few
    odd = ~close | ~tolerance.isfinite()
    if not bool(odd.any()):
        return close
    at = odd.nonzero(as_tuple=True)
    v, r, t = value[at], reference[at], tolerance[at]
    close[at] = torch.where(
        v.isfinite() & r.isfinite(), (v - r).abs() <= t, (v.isnan() & r.isnan()) | (v == r)
    )
    return close


def _calling(
    problem: Problem, names: list[str], values: tuple[torch.Tensor, ...]
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """f at one point of the chunk, as a function of the `wrt` inputs: its outputs in order."""
    inputs = {**problem.inputs, **dict(zip(names, values, strict=True))}
    output_names = list(problem.output_shapes)

    def g(*ws: torch.Tensor) -> tuple[torch.Tensor, ...]:
        called = call_function(
            problem.function, {**inputs, **dict(zip(problem.wrt, ws, strict=True))}, vectorized=True
        )
        return tuple(called[n] for n in output_names)

    return g


def _reverse_vjps(
    problem: Problem, chunk: Mapping[str, torch.Tensor], us: list[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """uᵀJ at every point of the chunk, for each `wrt` input (a leading point axis): one plain
    reverse pass through the vmapped function, each point with its own copy of every `wrt`
    input, so the points' gradients stay apart. Plain autograd, not torch.func's reverse mode,
    which would import torch._dynamo (about 1 s) into a run whose kernel is forward mode."""
    size = next(iter(chunk.values())).shape[0]
    leaves = {
        w: (chunk[w] if w in chunk else problem.inputs[w].expand(size, *problem.inputs[w].shape))
        .detach()
        .clone()
        .requires_grad_()
        for w in problem.wrt
    }
    batched = {**chunk, **leaves}
    names, output_names = list(batched), list(problem.output_shapes)

    def forward(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = {**problem.inputs, **dict(zip(names, values, strict=True))}
        called = call_function(problem.function, inputs, vectorized=True)
        return tuple(called[n] for n in output_names)

    with torch.enable_grad():
        ys = torch.func.vmap(forward)(*batched.values())
        differentiable = [(y, u) for y, u in zip(ys, us, strict=True) if y.requires_grad]
        if not differentiable:
            return tuple(torch.zeros_like(leaf) for leaf in leaves.values())
        total = sum((y * u.to(y.dtype)).sum() for y, u in differentiable)  # see vector_jacobian
        gradients = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return tuple(
        torch.zeros_like(leaf) if g is None else g
        for g, leaf in zip(gradients, leaves.values(), strict=True)
    )


def _recorded_vjps(
    outputs: tuple, leaves: dict[str, torch.Tensor], us: list[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """uᵀJ at every point for each `wrt` leaf, by one backward pass from outputs autograd
    recorded from the leaves (a leading point axis: each point its own leaf)."""
    differentiable = [(y, u) for y, u in zip(outputs, us, strict=True) if y.requires_grad]
    if not differentiable:
        return tuple(torch.zeros_like(leaf) for leaf in leaves.values())
    with torch.enable_grad():
        total = sum((y * u.to(y.dtype)).sum() for y, u in differentiable)
        gradients = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return tuple(
        torch.zeros_like(leaf) if g is None else g
        for g, leaf in zip(gradients, leaves.values(), strict=True)
    )


def _detached(value: object) -> object:
    """Nested tuples of tensors, each detached from autograd's graph."""
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value.detach()  # type: ignore[attr-defined]


def _probe_every_product(
    problem: Problem,
    command: str,
    chunk: Mapping[str, torch.Tensor],
    products: tuple,
    directions: Mapping[str, torch.Tensor],
    first_index: int,
) -> None:
    """Refuse the chunk unless each point's product agrees with an independent one: for vᵀJ,
    (vᵀJ)·w against vᵀ(J w) by forward mode; for J·t, u·(J t) against (uᵀJ)·t by reverse mode;
    for H·v, zᵀ(H v) against (H z)ᵀv and for H, zᵀH w, by reverse-over-reverse (NOTE [many
    points])."""
    names, wrt = list(chunk), problem.wrt
    output_names = list(problem.output_shapes)
    xs_shapes = [tuple(problem.inputs[w].shape) for w in wrt]
    generator = torch.Generator().manual_seed(GUARD_SEED)

    def draw(shapes: list) -> list[torch.Tensor]:
        return probe_draws(shapes, generator, problem.torch_dtype)

    def cast(vectors: list[torch.Tensor], like: tuple) -> tuple:
        return tuple(v.to(t.dtype) for v, t in zip(vectors, like, strict=True))

    def terms(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        """Σ a·b over each point (b shared), and the sum of the terms' squares."""
        total = squares = torch.zeros((), dtype=torch.float64)
        for a, b in pairs:
            a64 = a.reshape(a.shape[0], -1).to(torch.float64) if a.ndim else a
            b64 = b.reshape(-1).to(torch.float64)
            total = total + a64 @ b64
            squares = squares + a64.square() @ b64.square()
        return total, squares

    values = tuple(chunk[n] for n in names)
    if command == "vjp":
        w = draw(xs_shapes)
        v = [directions[n] for n in output_names]
        value, value_squares = terms(list(zip(products, w, strict=True)))

        def reference_at(*point: torch.Tensor) -> tuple:
            g = _calling(problem, names, point)
            xs = tuple(problem.inputs[n] if n not in names else point[names.index(n)] for n in wrt)
            _, j_w = torch.func.jvp(g, xs, cast(w, xs))
            return j_w

        references = torch.func.vmap(reference_at)(*values)
        reference, reference_squares = terms(list(zip(references, v, strict=True)))
    elif command == "jvp":
        u = draw([problem.output_shapes[n] for n in output_names])
        t = [directions[n] for n in wrt]
        value, value_squares = terms(list(zip(products, u, strict=True)))

        references = _reverse_vjps(problem, chunk, u)
        reference, reference_squares = terms(list(zip(references, t, strict=True)))
    else:  # hvp, hessian: the scalar's second derivative, reverse over reverse
        z, w = draw(xs_shapes), draw(xs_shapes)
        u = draw([problem.output_shapes[n] for n in output_names])
        if command == "hvp":
            # zᵀ(H v) against (H z)ᵀv, H symmetric, as the single-point guard does: the terms
            # (H z)_i v_i are of H's order even where H v cancels to nothing (H·1 of logsumexp
            # is 0), so the rounding of the result is weighed at H's scale, not at its own
            value, value_squares = terms(list(zip(products, z, strict=True)))
            ws = z
        else:
            value = value_squares = torch.zeros((), dtype=torch.float64)
            for i, by_a in enumerate(products):
                for a, by_b in enumerate(by_a):
                    for b, h in enumerate(by_b):
                        outer = torch.einsum(
                            "i,j,k->ijk", u[i].reshape(-1), z[a].reshape(-1), w[b].reshape(-1)
                        )
                        pair_value, pair_squares = terms([(h, outer)])
                        value, value_squares = value + pair_value, value_squares + pair_squares
            ws = w

        def reference_at(*point: torch.Tensor) -> tuple:
            g = _calling(problem, names, point)
            xs = tuple(problem.inputs[n] if n not in names else point[names.index(n)] for n in wrt)
            argnums = tuple(range(len(wrt)))

            def scalar(*arguments: torch.Tensor) -> torch.Tensor:
                ys = g(*arguments)
                if command == "hvp":
                    return ys[0].reshape(())
                return sum((y * c.to(y.dtype)).sum() for y, c in zip(ys, u, strict=True))

            def along(*arguments: torch.Tensor) -> torch.Tensor:
                gradient = torch.func.grad(scalar, argnums=argnums)(*arguments)
                return sum((d * c.to(d.dtype)).sum() for d, c in zip(gradient, ws, strict=True))

            return torch.func.grad(along, argnums=argnums)(*xs)

        references = torch.func.vmap(reference_at)(*values)
        others = [directions[n] for n in wrt] if command == "hvp" else z
        reference, reference_squares = terms(list(zip(references, others, strict=True)))
    tolerance = guard_rtol(problem.torch_dtype) * (value_squares + reference_squares).sqrt()
    agree = _agreeing(value, reference, tolerance)
    if not bool(agree.all()):
        k = int((~agree).nonzero()[0])
        raise ComputationError(
            f"at point {first_index + k} its {command} differs from an independent product "
            f"({float(value[k]):.6g} against {float(reference[k]):.6g})"
        )


def _kernel(
    problem: Problem, command: str, directions: Mapping[str, torch.Tensor], mode: str
) -> Callable[[dict[str, torch.Tensor]], tuple]:
    """The command's result at one point (its inputs given in full) in `mode` (kernel_modes),
    in torch.func's terms: (outputs, products), each a tuple."""
    function, wrt = problem.function, problem.wrt
    output_names = list(problem.output_shapes)
    argnums = tuple(range(len(wrt)))

    def kernel(inputs: dict[str, torch.Tensor]) -> tuple:
        def g(*ws: torch.Tensor) -> tuple[torch.Tensor, ...]:
            values = call_function(
                function, {**inputs, **dict(zip(wrt, ws, strict=True))}, vectorized=True
            )
            return tuple(values[n] for n in output_names)

        xs = tuple(inputs[w] for w in wrt)

        def with_value(*ws: torch.Tensor) -> tuple:
            ys = g(*ws)
            return ys, ys  # the outputs come back beside J: one call of f, not two

        if command in ("jacobian", "det") or mode == "vᵀ·jacfwd":
            transform = torch.func.jacrev if mode == "jacrev" else torch.func.jacfwd
            jacobians, ys = transform(with_value, argnums=argnums, has_aux=True)(*xs)
            if command != "vjp":
                return ys, jacobians
            # forward mode, the other one to vjp's: J column by column, contracted with v
            pairs = list(zip((directions[n] for n in output_names), jacobians, strict=True))
            return ys, tuple(
                sum(torch.tensordot(v, by_wrt[a], dims=v.ndim) for v, by_wrt in pairs)
                for a in range(len(wrt))
            )
        if command == "vjp":
            ys, pull = torch.func.vjp(g, *xs)
            return ys, pull(tuple(directions[n] for n in output_names))
        if command == "jvp":
            tangents = tuple(directions[w] for w in wrt)
            if mode == "jvp":
                return torch.func.jvp(g, xs, tangents)
            # reverse-over-reverse, the other one to jvp's: J·t is the VJP, with cotangent t,
            # of the linear map u ↦ uᵀJ
            ys, pull = torch.func.vjp(g, *xs)
            _, pull_of_pull = torch.func.vjp(pull, tuple(torch.zeros_like(y) for y in ys))
            (products,) = pull_of_pull(tangents)
            return ys, products
        if command == "hessian":
            outer = torch.func.jacfwd if mode == "jacfwd(jacrev)" else torch.func.jacrev
            hessian = outer(torch.func.jacrev(g, argnums=argnums), argnums=argnums)
            return g(*xs), hessian(*xs)

        def scalar(*ws: torch.Tensor) -> torch.Tensor:
            return g(*ws)[0].reshape(())

        gradient = torch.func.grad(scalar, argnums=argnums)
        vs = tuple(directions[w] for w in wrt)
        if mode == "jvp(grad)":
            _, products = torch.func.jvp(gradient, xs, vs)
        else:  # reverse-over-reverse: H·v is the gradient of gradient·v

            def along(*ws: torch.Tensor) -> torch.Tensor:
                return sum((p * v).sum() for p, v in zip(gradient(*ws), vs, strict=True))

            products = torch.func.grad(along, argnums=argnums)(*xs)
        return g(*xs), products

    return kernel


class ChunkPoints:
    """A chunk's inputs as numpy, and each point's inputs and outputs as its result shows them
    (shared by the dense kernels' chunks and the sparse ones)."""

    def __init__(self, problem: Problem, chunk: Mapping[str, torch.Tensor]) -> None:
        self.problem = problem
        self.output_names = list(problem.output_shapes)
        self.at_points = {n: to_numpy(t) for n, t in chunk.items()}
        self.fixed = {n: to_numpy(t) for n, t in problem.inputs.items() if n not in chunk}
        self.specs = [s for s in problem.function.inputs if s.name in problem.inputs]

    def stacked(self) -> list[np.ndarray] | None:
        """The arrays every point's result slices, stacked (ChunkOutcomes.stacked); None where a
        point's result is not a slice of stacked arrays (a sparse J)."""
        return None

    def evaluation(self, k: int, outputs: Sequence[np.ndarray]) -> Evaluation:
        """Point k's inputs (its own values, or the fixed ones) and outputs, as the single-point
        engine's result holds them."""
        problem = self.problem
        return Evaluation(
            problem.function.name,
            problem.function.formula,
            problem.dtype,
            tuple(
                InputValue(
                    spec.name,
                    self.at_points[spec.name][k]
                    if spec.name in self.at_points
                    else self.fixed[spec.name],
                    spec.name in problem.wrt,
                    spec.differentiable,
                )
                for spec in self.specs
            ),
            {n: outputs[i][k] for i, n in enumerate(self.output_names)},
            problem.wrt,
            jacobian_formula=problem.function.jacobian_formula,
        )


class _ChunkArrays(ChunkPoints):
    """A chunk's vmapped arrays, turned into numpy once, and each point's result object."""

    def __init__(
        self,
        problem: Problem,
        command: str,
        chunk: Mapping[str, torch.Tensor],
        outputs: tuple,
        products: tuple,
        directions: Mapping[str, torch.Tensor],
        mode: str,
    ) -> None:
        super().__init__(problem, chunk)
        self.command = command
        self.method = method_name(problem, command, mode)
        self.ys = [to_numpy(y) for y in outputs]
        self.vectors = {n: to_numpy(v) for n, v in directions.items()}
        self.products = _as_numpy(products)
        self.dets = None
        if command == "det":
            (by_wrt,) = self.products
            size = by_wrt[0].shape[0]
            matrices = torch.cat(
                [torch.from_numpy(j).reshape(size, problem.output_count, -1) for j in by_wrt],
                dim=2,
            )
            self.dets = determinant(matrices, problem.wrt, problem.torch_dtype)
        self.finite = _finite_points([*self.ys, *_leaves(self.products)], len(self.ys[0]))
        """Whether each point's outputs and products are all finite: only the others need
        nonfinite_notes."""
        self.first: _FirstPoint | None = None
        """The chunk's first point by an unbatched call, where no single-point result stands
        for it: its result object carries that call's warnings, as a single-point run's does."""

    def stacked(self) -> list[np.ndarray] | None:
        """The products' arrays along the point axis (and det J's), as ChunkOutcomes.stacked."""
        arrays = _leaves(self.products)
        if self.dets is not None:
            d = self.dets
            arrays += [np.asarray(a) for a in (d.sign, d.logabsdet, d.det, d.trace)]
        return arrays

    def result(self, k: int, guard: Guard | None) -> Result:
        """Point k's result object, as the single-point engine would make it (telling
        structural zeros apart only at a first point called unbatched: NOTE [a NaN that is a
        structural zero])."""
        made = self._made(k, guard)
        first = self.first if k == 0 else None
        if first is not None and first.notes:
            made = replace(made, notes=(*made.notes, *first.notes))
        if self.finite[k]:
            return made
        point = first.point if first is not None else None  # structural zeros told apart
        return replace(made, notes=(*made.notes, *nonfinite_notes(made, point)))

    def _made(self, k: int, guard: Guard | None) -> Result:
        problem, wrt, products = self.problem, self.problem.wrt, self.products
        evaluation = self.evaluation(k, self.ys)
        reason, notes = "many points at once", problem.notes
        if self.command in ("jacobian", "det"):
            jacobians = {
                n: {w: products[i][a][k] for a, w in enumerate(wrt)}
                for i, n in enumerate(self.output_names)
            }
            determinant_k = None
            if self.dets is not None:
                d = self.dets
                determinant_k = Determinant(
                    wrt,
                    d.size,
                    d.sign[k],
                    d.logabsdet[k],
                    d.det[k],
                    d.trace[k],
                    d.condition[k],
                    d.singular[k],
                )
                notes = (*notes, *determinant_notes(determinant_k, problem.dtype))
            return JacobianResult(
                evaluation,
                jacobians,
                self.method,
                reason,
                notes=notes,
                guard=guard,
                determinant=determinant_k,
            )
        if self.command == "vjp":
            return VjpResult(
                evaluation,
                {n: self.vectors[n] for n in self.output_names},
                {w: products[a][k] for a, w in enumerate(wrt)},
                notes=notes,
                guard=guard,
            )
        if self.command == "jvp":
            return JvpResult(
                evaluation,
                {w: self.vectors[w] for w in wrt},
                {n: products[i][k] for i, n in enumerate(self.output_names)},
                self.method,
                reason,
                notes=notes,
                guard=guard,
            )
        if self.command == "hessian":
            hessians = {
                n: {
                    a: {b: products[i][ai][bi][k] for bi, b in enumerate(wrt)}
                    for ai, a in enumerate(wrt)
                }
                for i, n in enumerate(self.output_names)
            }
            return HessianResult(
                evaluation,
                hessians,
                self.method,
                reason,
                symmetry_error(problem, hessians),
                notes=notes,
                guard=guard,
            )
        return HvpResult(
            evaluation,
            {w: self.vectors[w] for w in wrt},
            {w: products[a][k] for a, w in enumerate(wrt)},
            self.method,
            reason,
            notes=notes,
            guard=guard,
        )


def _leaves(value: object) -> list[np.ndarray]:
    """The arrays of nested tuples of arrays."""
    if isinstance(value, tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]  # type: ignore[list-item]


def _finite_points(arrays: list[np.ndarray], size: int) -> np.ndarray:
    """For each of `size` points (the arrays' leading axis), whether all its entries are
    finite: by a float64 sum a point, which a NaN or ±Infinity anywhere makes one too."""
    finite = np.ones(size, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for array in arrays:
            # the whole array at once first: the per-point sums, in float64, cost ten times more
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                finite &= np.isfinite(array.reshape(size, -1).sum(axis=1, dtype=np.float64))
    return finite


def _as_numpy(value: object) -> object:
    """Nested tuples of tensors as the same nesting of numpy arrays."""
    if isinstance(value, tuple):
        return tuple(_as_numpy(v) for v in value)
    return to_numpy(value)  # type: ignore[arg-type]


def main_arrays(result: Result) -> list[np.ndarray]:
    """The arrays a result is about, in a fixed order: outputs, then what it computed."""
    return [*result.evaluation.outputs.values(), *computed_arrays(result)]


def _difference(problem: Problem, value: Result, reference: Result) -> tuple[float, float]:
    """The largest difference between two results' arrays, and what the dtype allows of it."""
    pairs = zip(main_arrays(value), main_arrays(reference), strict=True)
    return _arrays_difference(problem, pairs)


def _arrays_difference(
    problem: Problem, pairs: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """The largest difference between the arrays of each pair, and what the dtype allows of
    it (the first pair past its bound, if any)."""
    tolerance = AD_TOLERANCE[problem.dtype]
    largest = allowed = 0.0
    for a, b in pairs:
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.size == 0:
            continue
        scale = max(1.0, float(np.nan_to_num(np.abs(b64), nan=0.0, posinf=0.0).max()))
        bound = 10 * (tolerance.rtol + tolerance.atol) * scale
        difference = float(np.nan_to_num(np.abs(a64 - b64), nan=math.inf).max())
        if np.isnan(a64).any() or np.isnan(b64).any():
            difference = 0.0 if np.array_equal(np.isnan(a64), np.isnan(b64)) else math.inf
        largest, allowed = max(largest, difference), max(allowed, bound)
        if difference > bound:
            return difference, bound
    return largest, allowed
