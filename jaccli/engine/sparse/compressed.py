"""J as a sparse matrix from one JVP or VJP per colour (compressed AD), never densified; and a
sparse Hessian from one Hessian-vector product per colour.

# NOTE [compressed AD]
With the columns coloured (NOTE [colouring J] in colouring.py), the JVP along s_c, the sum of
the unit vectors of the columns of colour c, is B[:, c] = Σ over the columns j of colour c of
J[:, j]; a row i has at most one column of colour c in the pattern, so J[i, j] = B[i, colour(j)]
for every entry (i, j) of the pattern. With the rows coloured, the VJP along the rows of colour
c gives C[c, :], and J[i, j] = C[colour(i), j]. The passes are vmapped a chunk of colours at a
time (`fill_in_chunks`, NOTE [chunks from a measured first chunk]); each chunk's compressed
block is read at the pattern's entries of its colours and dropped, so nothing of J's full size
(m × n) is ever made: the result is the pattern's CSR structure with its values.

# NOTE [a pattern that misses a non-zero]
A pattern that misses a non-zero J[i, j] (a wrong --sparsity file) would give a wrong J without
a sound: J[i, j] lands in B[i, colour(j)], which is either read as another entry of row i of the
same colour (and adds to it) or read by no entry at all. The second shows at once: a compressed
number no entry reads must be exactly 0, and one that is not proves the miss (NaN aside: 0·∞
in a pass is NaN without any miss). The first is the guard's (`probe_sparse` in trust.py): it
compares the sparse J entry by entry with one pass of the other mode, where an entry added to
its neighbour moves that column of uᵀJ by u_i·J[i, j] (that row of J v by J[i, j]·(v_j − v_k)),
far beyond rounding. Either way the result is refused (exit 1), never printed.

# NOTE [the sparse guard's cost]
The probe is the other AD mode, as the dense guard's is: for a J from JVPs a reverse pass, which
at 10⁶ unknowns costs more than all three compressed JVPs together (the graph kept, then a
backward pass whose slicing ops fill and add whole tensors: 0.5 s against 0.25 s for a JVP,
Burgers). A JVP along a random v would catch a missed non-zero as well, at half the cost, but it
is the same mode that made J: a forward-mode rule that is wrong (torch's or a custom Function's
jvp) would pass it. The guard's budget is one pass of each mode; the other one is kept.

# NOTE [recovering H]
H·s for the seed s of a colour of H's columns is a JVP of the gradient (forward-over-reverse),
so H is recovered as J is from JVPs: with a distance-2 colouring of the columns of the
symmetrized pattern, H[i, j] = (H·s_colour(j))[i] for every entry. H being symmetric, each
off-diagonal entry is so read twice, as H[i, j] and as H[j, i]; their largest gap is the
symmetry error the result reports. A star colouring (every path of four vertices on three
colours or more) would need fewer colours where H has a dense row, each entry then read where
it alone has its colour; it is not done: a band of half-width b takes 2b + 1 products either way
(a chained Rosenbrock's H, 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from jaccli.engine.evaluate import as_leaf, evaluate
from jaccli.engine.guard import budget_or_default
from jaccli.engine.hessian import hvp_forward_over_reverse, hvp_reverse_over_reverse
from jaccli.engine.jacobian import (
    CallNotes,
    ChunkTooLarge,
    Progress,
    fill_in_chunks,
    load_forward_vectorizing,
    load_vectorizing,
    split_outputs,
    split_wrt,
    vectorized_call,
)
from jaccli.engine.jvp import METHODS as JVP_METHODS
from jaccli.engine.jvp import forward_jvp
from jaccli.engine.problem import Problem, describe
from jaccli.engine.run import blames_user_code
from jaccli.engine.sparse.colouring import (
    ColouredPattern,
    Colouring,
    as_pattern,
    colour_pattern,
    symmetric_colouring,
)
from jaccli.engine.trust import GUARD_SEED, probe_entries, probe_sparse
from jaccli.errors import ComputationError, ResourceError, UsageError
from jaccli.memory import out_of_memory, raise_if_out_of_memory, trim
from jaccli.messages import first_line, format_bytes
from jaccli.result import (
    Guard,
    Plan,
    SparseHessianResult,
    SparseJacobianResult,
    SparsePlan,
)
from jaccli.spec import format_shape, indexed

Returned = TypeVar("Returned")

ASSEMBLY_BYTES_PER_ENTRY = 24
"""While the values are gathered: each entry's colour, its place in colour order and its row
(int64), besides the result's own value and column index."""


def _require_shape(problem: Problem, pattern: sp.sparray, what: str = "J") -> None:
    expected = (problem.output_count, problem.input_count)
    if what == "H":
        expected = (problem.input_count, problem.input_count)
    if tuple(pattern.shape) != expected:
        rows, columns = pattern.shape
        raise UsageError(
            f"the sparsity pattern is {rows}×{columns}; {what} of {problem.function.name} is "
            f"{expected[0]}×{expected[1]} (rows: the outputs flattened, columns: the --wrt "
            "inputs flattened and concatenated)",
            code="bad_pattern",
        )


def plan_sparse_jacobian(
    problem: Problem, coloured: ColouredPattern, budget: int | None = None
) -> SparsePlan:
    """The memory plan of compressed AD: the pattern and its colouring, the result (values and
    indices of the pattern's entries), the gathering, one call of the function, and as many
    colours a vmapped batch as the budget leaves room for (each holding a call's intermediates,
    a seed and a compressed row); `plan.refused` says why it cannot fit."""
    colouring = coloured.colouring
    m, n = coloured.shape
    nnz = coloured.pattern.nnz
    itemsize = problem.torch_dtype.itemsize
    index_size = coloured.pattern.indices.dtype.itemsize
    limit = budget_or_default(budget)
    result_bytes = nnz * (itemsize + index_size) + (m + 1) * index_size
    pattern_bytes = nnz * (1 + index_size) + (m + 1) * index_size + (m + n) * 8  # and colours
    fixed = problem.resident_bytes + pattern_bytes + result_bytes + nnz * ASSEMBLY_BYTES_PER_ENTRY
    per_colour = problem.resident_bytes + 2 * (m + n) * itemsize
    chunk = max(1, min(colouring.count, (limit - fixed) // max(per_colour, 1)))
    peak = fixed + chunk * per_colour
    method = f"sparse-{colouring.mode}"
    passes = "JVP" if colouring.mode == "fwd" else "VJP"
    reason = (
        f"{nnz} non-zeros; {coloured.reason} ({colouring.method}); "
        f"{chunk if chunk < colouring.count else 'all'} colours a vmapped batch"
    )
    refused = None
    if peak > limit:
        refused = (
            f"the sparse {m}×{n} Jacobian ({nnz} non-zeros, one {passes} for each of "
            f"{colouring.count} colours) would need about {format_bytes(peak)}, over the memory "
            f"budget of {format_bytes(limit)}; try smaller shapes or a larger --max-memory"
        )
    plan = Plan(method, reason, m, n, result_bytes, peak, limit, chunk, refused)
    return SparsePlan(
        plan, nnz, colouring.mode, colouring.count, colouring.method, coloured.other_count
    )


@blames_user_code
def compute_sparse_jacobian(
    problem: Problem,
    pattern: sp.sparray,
    *,
    budget: int | None = None,
    mode: str = "auto",
    progress: Progress | None = None,
    coloured: ColouredPattern | None = None,
) -> SparseJacobianResult:
    """J at the entries of `pattern` (bool, outputs flattened × `wrt` inputs flattened and
    concatenated) by one JVP (columns coloured) or VJP (rows coloured) per colour, `mode`
    `fwd`, `rev` or `auto` (the fewer colours), verified entry by entry against a pass of the
    other mode (NOTE [compressed AD], NOTE [a pattern that misses a non-zero]).

    Vectorized passes that fail, or fail the guard, give way to a loop of single passes, and
    under `auto` a loop that fails to one in the other mode (a custom backward without a
    forward-mode rule); a pattern shown to miss a non-zero is refused at once (exit 1).
    `coloured`: the pattern's colouring in `mode`, already made (at another point)."""
    _require_shape(problem, pattern)
    pattern = as_pattern(pattern)
    if coloured is None:
        coloured = colour_pattern(pattern, mode)
    plan = plan_sparse_jacobian(problem, coloured, budget).plan
    if plan.refused is not None:
        raise ResourceError(plan.refused, code="memory_budget")
    primals, f = split_wrt(problem)
    _, f_vectorized = split_wrt(problem, vectorized=True)
    rejected: list[str] = []
    """Why each way tried before the one used was not used."""
    guard = None
    mismatches: list[str] = []
    ways = ["vectorized", "loop"] + (["loop in the other mode"] if mode == "auto" else [])
    for way in ways:
        if way == "loop in the other mode":
            other = "rev" if coloured.colouring.mode == "fwd" else "fwd"
            coloured = colour_pattern(pattern, other)
        colouring = coloured.colouring
        vectorized = way == "vectorized"
        sizing: list[str] = []
        try:
            compressed = _compressed_jacobian(
                f_vectorized if vectorized else f,
                primals,
                coloured,
                plan.chunk_size if vectorized else 1,
                vectorized,
                sizing,
                progress,
            )
        except ComputationError as error:
            rejected.append(f"{_passes_of(colouring, vectorized)} failed: {error.message}")
            continue
        _refuse_stray(problem, compressed, colouring)
        y_shape = tuple(compressed.y.shape)
        guard, worst = probe_sparse(  # the other mode: NOTE [the sparse guard's cost]
            f, primals, y_shape, compressed.matrix, "", colouring.mode, JVP_METHODS
        )
        if guard.passed is not False:
            break
        mismatch = _mismatch(problem, guard, worst, colouring.mode)
        passes = _passes_of(colouring, vectorized)
        if mismatches and mismatches[-1] == mismatch:
            rejected.append(f"{passes} gave the same J")
        else:
            rejected.append(f"the J of {passes} failed the correctness guard: {mismatch}")
        mismatches.append(mismatch)
        guard = None
    if guard is None:
        raise ComputationError(
            f"cannot compute the sparse J of {problem.function.name}: {'; '.join(rejected)}"
            + (
                "; the sparsity pattern may miss a non-zero of J (a --sparsity file that is "
                "wrong), or the function hides part of its computation from autograd"
                if mismatches
                else ""
            ),
            code="guard_failed" if mismatches else "computation",
        )
    method = f"sparse-{colouring.mode}" + ("" if vectorized else "-loop")
    reason = f"{coloured.reason} ({colouring.method}); {compressed.matrix.nnz} non-zeros"
    if sizing:
        reason += f"; {sizing[0]}"
    notes = [*problem.notes, *(CallNotes().ensure(problem).notes or ())]
    if rejected:
        reason = f"{'; '.join(rejected)}; so {_passes_of(colouring, vectorized)}"
        notes.insert(
            0,
            f"could not vectorize the passes of {problem.function.name}; one pass a colour instead",
        )
    return SparseJacobianResult(
        evaluation=describe(problem, split_outputs(problem, compressed.y)),
        matrix=compressed.matrix,
        mode=colouring.mode,
        colours=colouring.count,
        colouring=colouring.method,
        strategy=method,
        strategy_reason=reason,
        notes=tuple(notes),
        guard=replace(guard, method=method, rejected=tuple(rejected)),
    )


def _passes_of(colouring: Colouring, vectorized: bool) -> str:
    """`vmapped JVPs`, `one VJP a colour`: how the passes of a way are made."""
    kind = "JVP" if colouring.mode == "fwd" else "VJP"
    return f"vmapped {kind}s" if vectorized else f"one {kind} a colour"


class _Compressed:
    """What the passes gave: y, the sparse J, and the first compressed number no entry reads
    that is not 0 (colour, row or column), if any."""

    def __init__(self, y: torch.Tensor, matrix: sp.csr_array, stray: tuple[int, int] | None):
        self.y = y
        self.matrix = matrix
        self.stray = stray


def _compressed_jacobian(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    coloured: ColouredPattern,
    chunk_size: int | None,
    vectorized: bool,
    sizing: list[str],
    progress: Progress | None,
    mode: str | None = None,
) -> _Compressed:
    """The passes of NOTE [compressed AD], a chunk of colours at a time, gathered into the
    pattern's entries; `mode` `hvp` for H·s of a scalar f, with the columns coloured."""
    pattern, colouring = coloured.pattern, coloured.colouring
    m, n = coloured.shape
    dtype = primals[0].dtype
    entry_rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(pattern.indptr))
    if colouring.mode == "rev":  # C[c, :]: the entry (i, j) is read at (colour(i), j)
        entry_colours, entry_at = colouring.colours[entry_rows], pattern.indices
    else:  # B[:, c] (H·s_c for hvp): the entry (i, j) is read at (colour(j), i)
        entry_colours, entry_at = colouring.colours[pattern.indices], entry_rows
    del entry_rows
    narrow = np.int16 if colouring.count < 2**15 else np.int64  # a radix sort for few colours
    in_colour_order = np.argsort(entry_colours.astype(narrow), kind="stable")
    starts = np.searchsorted(entry_colours[in_colour_order], np.arange(colouring.count + 1))
    values = np.zeros(pattern.nnz, dtype=np.float64 if dtype == torch.float64 else np.float32)
    stray: list[tuple[int, int]] = []
    seeded = colouring.colours
    width = n if colouring.mode == "rev" else m  # a JVP (HVP) gives a column of B, a VJP a row
    if vectorized and (mode or colouring.mode) == "fwd":
        load_forward_vectorizing()  # JVPs alone: no torch._dynamo (NOTE [many points])
    elif vectorized:
        load_vectorizing()
    passes = _Passes(f, primals, mode or colouring.mode, vectorized)

    def fill(start: int, stop: int) -> None:
        count = stop - start
        in_chunk = np.flatnonzero((seeded >= start) & (seeded < stop))
        seeds = torch.zeros((count, seeded.size), dtype=dtype)
        seeds[torch.from_numpy(seeded[in_chunk] - start), torch.from_numpy(in_chunk)] = 1
        block = passes.block(seeds).reshape(count, width).numpy()
        chosen = in_colour_order[starts[start] : starts[stop]]
        where = (entry_colours[chosen] - start, entry_at[chosen])
        values[chosen] = block[where]
        read = np.zeros(block.shape, dtype=bool)
        read[where] = True
        unread = (block != 0) & ~read & ~np.isnan(block)
        if unread.any() and not stray:
            colour, at = np.unravel_index(int(np.argmax(unread)), block.shape)
            stray.append((int(colour) + start, int(at)))
        if progress is not None:
            progress(stop, colouring.count)

    fill_in_chunks(colouring.count, fill, chunk_size, sizing, unit="colours")
    trim()
    matrix = sp.csr_array((values, pattern.indices, pattern.indptr), shape=(m, n))
    return _Compressed(passes.value(), matrix, stray[0] if stray else None)


class _Passes:
    """One JVP (`fwd`) or VJP (`rev`) for each row of a chunk of seeds (seeds over J's columns
    for fwd, over its rows for rev), vmapped or one at a time, as rows of the compressed block;
    and y, which the passes compute on the way."""

    def __init__(
        self,
        f: Callable[..., torch.Tensor],
        primals: list[torch.Tensor],
        mode: str,
        vectorized: bool,
    ) -> None:
        self.f, self.primals, self.mode, self.vectorized = f, primals, mode, vectorized
        self.y: torch.Tensor | None = None
        self.sizes = [p.numel() for p in primals]
        if mode == "rev":
            self._linearize()

    def _linearize(self) -> None:
        """y, and the graph (or torch.func's VJP function) every VJP pulls back through."""
        if self.vectorized:
            try:
                y, self.vjp_of = torch.func.vjp(self.f, *self.primals)
            except (ComputationError, RuntimeError, NotImplementedError) as error:
                raise_if_out_of_memory(error)
                why = error.message if isinstance(error, ComputationError) else first_line(error)
                raise ComputationError(f"the function cannot be vectorized ({why})") from error
            self.y = y.detach()
            return
        self.leaves = [as_leaf(p) for p in self.primals]
        with torch.enable_grad():
            self.output = self.f(*self.leaves)
        self.y = self.output.detach()

    def value(self) -> torch.Tensor:
        """y = f(primals), by a plain call when no pass has computed it."""
        if self.y is None:
            with torch.enable_grad():
                self.y = self.f(*[as_leaf(p) for p in self.primals]).detach()
        return self.y

    def tangents(self, seeds: torch.Tensor) -> list[torch.Tensor]:
        """The seeds over J's columns split into one tangent per primal, in its shape."""
        parts = seeds.split(self.sizes, dim=-1)
        return [
            part.reshape(*seeds.shape[:-1], *p.shape)
            for part, p in zip(parts, self.primals, strict=True)
        ]

    def block(self, seeds: torch.Tensor) -> torch.Tensor:
        if self.mode == "fwd":
            return self._jvps(seeds)
        if self.mode == "hvp":
            return self._hvps(seeds)
        return self._vjps(seeds)

    def _hvps(self, seeds: torch.Tensor) -> torch.Tensor:
        """H·s for each row s of the seeds: the JVP of the gradient (forward-over-reverse)."""
        if self.vectorized:
            argnums = tuple(range(len(self.primals)))
            gradient = torch.func.grad(lambda *xs: self.f(*xs).reshape(()), argnums=argnums)

            def hvp_of(*tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return torch.func.jvp(gradient, tuple(self.primals), tangents)[1]

            parts = vectorized_call(hvp_of, *self.tangents(seeds))
            return torch.cat([p.reshape(seeds.shape[0], -1) for p in parts], dim=1).detach()
        rows = []
        for s in seeds:
            y, products = _guarded(
                lambda s=s: hvp_forward_over_reverse(self.f, self.primals, self.tangents(s))
            )
            self.y = y
            rows.append(torch.cat([p.reshape(-1) for p in products]))
        return torch.stack(rows)

    def _jvps(self, seeds: torch.Tensor) -> torch.Tensor:
        if self.vectorized:

            def jvp_of(*tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return torch.func.jvp(self.f, tuple(self.primals), tangents)

            y, products = vectorized_call(jvp_of, *self.tangents(seeds), out_dims=(None, 0))
            self.y = y.detach()
            return products.detach()
        rows = []
        for s in seeds:
            y, product = _guarded(lambda s=s: forward_jvp(self.f, self.primals, self.tangents(s)))
            self.y = y
            rows.append(product.reshape(-1))
        return torch.stack(rows)

    def _vjps(self, seeds: torch.Tensor) -> torch.Tensor:
        assert self.y is not None
        if self.vectorized:
            parts = vectorized_call(self.vjp_of, seeds.reshape(seeds.shape[0], *self.y.shape))
            return torch.cat([p.reshape(seeds.shape[0], -1) for p in parts], dim=1).detach()
        rows = []
        for s in seeds:
            if not self.output.requires_grad:
                rows.append(torch.zeros(sum(self.sizes), dtype=seeds.dtype))
                continue
            weighted = (self.output * s.reshape(self.output.shape).to(self.output.dtype)).sum()
            grads = _guarded(
                lambda weighted=weighted: torch.autograd.grad(
                    weighted,
                    self.leaves,
                    retain_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                )
            )
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        return torch.stack(rows)


def _guarded(run: Callable[[], Returned]) -> Returned:
    """One pass of a loop: an allocation refused under the held limit is ChunkTooLarge."""
    try:
        return run()
    except (RuntimeError, MemoryError) as error:
        if out_of_memory(error):
            raise ChunkTooLarge from error
        raise


def _refuse_stray(
    problem: Problem, compressed: _Compressed, colouring: Colouring, what: str = "J"
) -> None:
    """Refuse J where a compressed number no entry reads is not 0: the pattern misses a
    non-zero there (NOTE [a pattern that misses a non-zero])."""
    if compressed.stray is None:
        return
    colour, at = compressed.stray
    if what == "H":
        where = (
            f"the gradient at {_column_label(problem, at)} changes along the inputs of colour "
            f"{colour}, none of which it depends on by the pattern"
        )
    elif colouring.mode == "fwd":
        where = (
            f"output {_row_label(problem, at)} changes along the inputs of colour {colour}, "
            "none of which it depends on by the pattern"
        )
    else:
        where = (
            f"input {_column_label(problem, at)} moves the outputs of colour {colour}, none of "
            "which depends on it by the pattern"
        )
    raise ComputationError(
        f"the sparsity pattern misses a non-zero of {what}: {where}; {what} is not printed (give a "
        "pattern that holds every non-zero, or let jaccli detect it)",
        code="pattern_misses",
    )


def _row_label(problem: Problem, row: int) -> str:
    """`y[3,1]`: the output element of row `row` of J."""
    for name, shape in problem.output_shapes.items():
        size = math.prod(shape)
        if row < size:
            return indexed(name, np.unravel_index(row, tuple(shape)) if shape else ())
        row -= size
    return str(row)


def _column_label(problem: Problem, column: int) -> str:
    """`x[0,2]`: the input element of column `column` of J."""
    for name in problem.wrt:
        shape = tuple(problem.inputs[name].shape)
        size = math.prod(shape)
        if column < size:
            return indexed(name, np.unravel_index(column, shape) if shape else ())
        column -= size
    return str(column)


def _mismatch(problem: Problem, guard: Guard, index: int, mode: str) -> str:
    """What the guard saw: the column (row) of uᵀJ (J v) furthest from its reference."""
    label = _column_label(problem, index) if mode == "fwd" else _row_label(problem, index)
    what = "uᵀJ" if mode == "fwd" else "J v"
    return (
        f"{what} at {label} is {guard.value:.6g} from the sparse J where "
        f"{guard.reference} gives {guard.reference_value:.6g} (tolerance {guard.tolerance:.2g})"
    )


def _require_scalar(problem: Problem) -> None:
    shapes = problem.output_shapes
    if len(shapes) != 1 or math.prod(next(iter(shapes.values()))) != 1:
        described = ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())
        raise UsageError(
            f"hessian --sparse needs a scalar output; {problem.function.name} returns "
            f"{described} (reduce it to one number, or drop --sparse for H of each element)",
            code="not_scalar",
        )


@blames_user_code
def compute_sparse_hessian(
    problem: Problem,
    pattern: sp.sparray,
    *,
    budget: int | None = None,
    progress: Progress | None = None,
) -> SparseHessianResult:
    """H of the scalar output at the entries of `pattern` (n × n over the `wrt` inputs
    flattened and concatenated, made symmetric), by one Hessian-vector product per colour of
    its columns (NOTE [recovering H]), verified row by row against H v by reverse-over-reverse."""
    _require_scalar(problem)
    _require_shape(problem, pattern, "H")
    symmetric = as_pattern(sp.csr_array(pattern) + sp.csr_array(pattern).T)
    colouring = symmetric_colouring(symmetric)
    coloured = ColouredPattern(symmetric, colouring, colouring.count, "")
    plan = plan_sparse_jacobian(problem, coloured, budget).plan
    if plan.refused is not None:
        raise ResourceError(plan.refused.replace("Jacobian", "Hessian"), code="memory_budget")
    primals, f = split_wrt(problem)
    _, f_vectorized = split_wrt(problem, vectorized=True)
    rejected: list[str] = []
    for vectorized in (True, False):
        sizing: list[str] = []
        try:
            compressed = _compressed_jacobian(
                f_vectorized if vectorized else f,
                primals,
                coloured,
                plan.chunk_size if vectorized else 1,
                vectorized,
                sizing,
                progress,
                mode="hvp",
            )
        except ComputationError as error:
            if not vectorized:
                raise
            rejected.append(f"vectorized products failed: {error.message}")
            continue
        _refuse_stray(problem, compressed, colouring, "H")
        guard, worst = _probe_hessian(f, primals, compressed.matrix)
        if guard.passed is not False:
            break
        mismatch = (
            f"H v at {_column_label(problem, worst)} is {guard.value:.6g} from the sparse H "
            f"where {guard.reference} gives {guard.reference_value:.6g} "
            f"(tolerance {guard.tolerance:.2g})"
        )
        rejected.append(f"the H of vectorized products failed the guard: {mismatch}")
        if not vectorized:
            raise ComputationError(
                f"the sparse H of {problem.function.name} failed the correctness guard: "
                f"{mismatch}; the Hessian's sparsity pattern may miss a non-zero",
                code="guard_failed",
            )
    matrix = compressed.matrix
    method = "sparse-hvp" + ("" if vectorized else "-loop")
    reason = (
        f"{colouring.count} Hessian-vector products (forward-over-reverse), one per colour of "
        f"H's columns ({colouring.method}); {matrix.nnz} non-zeros"
    )
    if sizing:
        reason += f"; {sizing[0]}"
    notes = [*problem.notes, *(CallNotes().ensure(problem).notes or ())]
    if rejected:
        reason = f"{'; '.join(rejected)}; so one product a colour"
    mirror = matrix - matrix.T
    symmetry = float(np.abs(mirror.data).max(initial=0.0)) if mirror.nnz else 0.0
    return SparseHessianResult(
        evaluation=describe(problem, evaluate(problem.function, problem.inputs)),
        matrix=matrix,
        colours=colouring.count,
        colouring=colouring.method,
        strategy=method,
        strategy_reason=reason,
        symmetry_error=symmetry,
        notes=tuple(notes),
        guard=replace(guard, method=method, rejected=tuple(rejected)),
    )


def _probe_hessian(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], matrix: sp.csr_array
) -> tuple[Guard, int]:
    """H v from the sparse H against H v by one reverse-over-reverse product, row by row."""
    generator = torch.Generator().manual_seed(GUARD_SEED)
    v = torch.randn(matrix.shape[1], generator=generator, dtype=torch.float64)
    vectors = [
        part.reshape(p.shape)
        for part, p in zip(v.split([p.numel() for p in primals]), primals, strict=True)
    ]
    name = "H v by one reverse-over-reverse product, row by row"
    try:
        _, products = hvp_reverse_over_reverse(f, primals, vectors)
    except Exception as error:  # no reference: the H stands as the products gave it
        raise_if_out_of_memory(error)
        why = f"the reference product failed ({first_line(error)[:160]})"
        return Guard("", name, math.nan, math.nan, math.nan, None, None, (), why), 0
    reference = torch.cat([p.reshape(-1).to(torch.float64) for p in products]).numpy()
    return probe_entries("", name, matrix, v.numpy(), reference)
