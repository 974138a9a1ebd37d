"""Sparse J at many points: the compressed passes vmapped over a chunk of points, with the
pattern and its colouring found once.

# NOTE [sparse J at many points]
Where the pattern holds at every point (NOTE [a pattern found once] in run.py), J at each point
of a chunk is one vmap over the points of the vmap over the colours of the compressed JVPs
(columns coloured) or VJPs (rows coloured): a block (points × colours × m or n), read at the
pattern's entries as at one point (NOTE [compressed AD] in compressed.py). The guard is the
single-point one at every point, vectorized: uᵀJ read off each point's sparse J against one
vmapped reverse pass (for JVPs), or J v against one vmapped forward pass (for VJPs), entry by
entry within GUARD_RTOL of the root sum of squares of its terms; and a compressed number that no
entry reads must be zero at every point (a pattern that misses a non-zero somewhere). As with
the dense kernels (NOTE [many points] in engine/many.py), the chunk's first point is also
computed by the guarded single-point engine (which checks J against the function's own
differences) and must agree. A chunk that fails any of this raises ComputationError, and the
caller computes its points one at a time, where each point's own refusal is said.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from jaccli.engine.evaluate import call_function, to_numpy
from jaccli.engine.jacobian import load_forward_vectorizing, load_vectorizing
from jaccli.engine.many import (
    SAMPLED_POINTS,
    ChunkOutcomes,
    ChunkPoints,
    Single,
    _reverse_vjps,
    at_point,
)
from jaccli.engine.problem import Problem
from jaccli.engine.sparse.colouring import ColouredPattern
from jaccli.engine.tolerance import AD_TOLERANCE
from jaccli.engine.trust import GUARD_SEED, guard_rtol
from jaccli.errors import ComputationError
from jaccli.result import Guard, SparseJacobianResult

INTERMEDIATE_MULTIPLE = 4
"""A vmapped point holds about this many times its compressed block in intermediates."""


def sparse_chunk_size(problem: Problem, coloured: ColouredPattern, limit: int, most: int) -> int:
    """How many points one vmapped chunk of compressed passes may hold within `limit` bytes:
    each point's block (colours × m or n), its seeds, its outputs and its entries' values."""
    rows, columns = coloured.shape
    colours = coloured.colouring.count
    numbers = colours * (rows + columns) + 2 * coloured.pattern.nnz + rows + columns
    per_point = INTERMEDIATE_MULTIPLE * numbers * problem.torch_dtype.itemsize
    available = limit - problem.resident_bytes
    return max(1, min(most, available // max(per_point, 1)))


class SparseChunk(ChunkPoints):
    """A chunk of points' sparse J (NOTE [sparse J at many points]): its values at the
    pattern's entries, a row a point, and each point's result object made when asked for."""

    def __init__(
        self,
        problem: Problem,
        coloured: ColouredPattern,
        chunk: Mapping[str, torch.Tensor],
        outputs: Sequence[np.ndarray],
        values: np.ndarray,
        finish: Callable[[Problem, SparseJacobianResult], SparseJacobianResult],
        notes: tuple[str, ...],
    ) -> None:
        super().__init__(problem, chunk)
        self.coloured, self.values = coloured, values
        self.outputs = outputs
        self.finish, self.notes = finish, notes
        colouring = coloured.colouring
        passes = "JVPs" if colouring.mode == "fwd" else "VJPs"
        self.method = f"sparse-{colouring.mode}-vmap"
        self.reason = (
            f"{coloured.reason} ({colouring.method}); {coloured.pattern.nnz} non-zeros; the "
            f"{colouring.count} {passes} of every point vmapped over a chunk of points, the "
            "pattern and its colouring found once"
        )

    def matrix(self, k: int) -> sp.csr_array:
        """Point k's J at the pattern's entries."""
        pattern = self.coloured.pattern
        return sp.csr_array(
            (self.values[k], pattern.indices, pattern.indptr), shape=self.coloured.shape
        )

    def result(self, k: int, guard: Guard | None) -> SparseJacobianResult:
        """Point k's result, as the single-point engine makes it."""
        problem = self.problem
        evaluation = self.evaluation(k, self.outputs)
        colouring = self.coloured.colouring
        made = SparseJacobianResult(
            evaluation=evaluation,
            matrix=self.matrix(k),
            mode=colouring.mode,
            colours=colouring.count,
            colouring=colouring.method,
            strategy=self.method,
            strategy_reason=self.reason,
            notes=(*self.notes, *problem.notes),
            guard=guard,
        )
        return self.finish(problem, made)


def sparse_vectorized_chunk(
    problem: Problem,
    coloured: ColouredPattern,
    chunk: Mapping[str, torch.Tensor],
    single: Single,
    first_index: int,
    *,
    finish: Callable[[Problem, SparseJacobianResult], SparseJacobianResult],
    notes: tuple[str, ...] = (),
) -> ChunkOutcomes:
    """The chunk's sparse J by the compressed passes vmapped over its points, guarded at every
    point (NOTE [sparse J at many points]); `finish` completes a point's result as the
    single-point engine does (det J, say)."""
    names, wrt = list(chunk), problem.wrt
    output_names = list(problem.output_shapes)
    colouring = coloured.colouring
    rows = coloured.shape[0]
    dtype = problem.torch_dtype
    seeds = torch.zeros((colouring.count, colouring.colours.size), dtype=dtype)
    seeds[torch.from_numpy(colouring.colours), torch.arange(colouring.colours.size)] = 1
    input_sizes = [problem.inputs[w].numel() for w in wrt]
    input_shapes = [tuple(problem.inputs[w].shape) for w in wrt]
    output_sizes = [int(np.prod(s)) for s in problem.output_shapes.values()]
    output_shapes = [tuple(s) for s in problem.output_shapes.values()]

    def split(flat: torch.Tensor, sizes: list[int], shapes: list[tuple]) -> tuple:
        lead = flat.shape[:-1]
        return tuple(
            part.reshape(*lead, *shape)
            for part, shape in zip(flat.split(sizes, dim=-1), shapes, strict=True)
        )

    def joined(parts: Sequence[torch.Tensor], lead: int) -> torch.Tensor:
        if len(parts) == 1:  # no copy
            return parts[0].reshape(lead, -1)
        return torch.cat([p.reshape(lead, -1) for p in parts], dim=1)

    def function_at(values: tuple[torch.Tensor, ...]) -> tuple[Callable, tuple]:
        inputs = {**problem.inputs, **dict(zip(names, values, strict=True))}

        def g(*ws: torch.Tensor) -> tuple[torch.Tensor, ...]:
            called = call_function(
                problem.function, {**inputs, **dict(zip(wrt, ws, strict=True))}, vectorized=True
            )
            return tuple(called[n] for n in output_names)

        return g, tuple(inputs[w] for w in wrt)

    count = colouring.count
    if colouring.mode == "fwd":
        tangents = split(seeds, input_sizes, input_shapes)

        def per_point(*values: torch.Tensor) -> tuple:
            g, primals = function_at(values)

            def one(*tangent: torch.Tensor) -> tuple:
                return torch.func.jvp(g, primals, tangent)

            ys, products = torch.func.vmap(one)(*tangents)  # y once a colour: the outer
            return tuple(y[0] for y in ys), joined(products, count)  # vmap batches it
    else:
        cotangents = split(seeds, output_sizes, output_shapes)

        def per_point(*values: torch.Tensor) -> tuple:
            g, primals = function_at(values)
            ys, pull = torch.func.vjp(g, *primals)
            products = torch.func.vmap(pull)(cotangents)
            return ys, joined(products, count)

    if colouring.mode == "fwd":
        load_forward_vectorizing()
    else:
        load_vectorizing()
    ys, blocks = torch.func.vmap(per_point)(*(chunk[n] for n in names))
    size, width = blocks.shape[0], blocks.shape[2]
    flat = blocks.detach().reshape(size, -1)
    del blocks
    pattern = coloured.pattern
    entry_rows = np.repeat(np.arange(rows, dtype=np.int64), np.diff(pattern.indptr))
    if colouring.mode == "rev":
        entry_colours, entry_at = colouring.colours[entry_rows], pattern.indices
    else:
        entry_colours, entry_at = colouring.colours[pattern.indices], entry_rows
    read = entry_colours.astype(np.int64) * width + entry_at
    values_tensor = flat.index_select(1, torch.from_numpy(read))
    unread = np.ones(flat.shape[1], dtype=bool)
    unread[read] = False
    stray = flat.index_select(1, torch.from_numpy(np.flatnonzero(unread)))
    del flat
    if bool(((stray != 0) & ~stray.isnan()).any()):
        raise ComputationError("the sparsity pattern misses a non-zero at a point of the chunk")
    del stray
    _probe_every_point(
        problem, chunk, coloured, values_tensor, entry_rows, first_index, function_at
    )
    values = values_tensor.numpy()
    outputs = [to_numpy(y.detach()) for y in ys]
    arrays = SparseChunk(problem, coloured, chunk, outputs, values, finish, notes)
    sampled = sorted({k % size for k in SAMPLED_POINTS})
    references = {
        k: single(at_point(problem, {n: t[k] for n, t in chunk.items()})) for k in sampled
    }
    tolerance = AD_TOLERANCE[problem.dtype]
    largest = allowed = 0.0
    for k, reference in references.items():
        if not isinstance(reference, SparseJacobianResult):
            raise ComputationError(f"at point {first_index + k} J was not computed sparse")
        difference, bound = _difference(
            [*reference.evaluation.outputs.values()],
            [o[k] for o in outputs],
            reference.matrix,
            arrays.matrix(k),
            tolerance.rtol + tolerance.atol,
        )
        largest, allowed = max(largest, difference), max(allowed, bound)
        if difference > bound:
            raise ComputationError(
                f"at point {first_index + k} it differs from the single-point engine by "
                f"{difference:.3g} (tolerance {bound:.2g})"
            )
    indices = ", ".join(str(first_index + k) for k in sampled)
    other = "uᵀJ by one reverse pass" if colouring.mode == "fwd" else "J v by one forward pass"
    guard = Guard(
        arrays.method,
        f"the guarded single-point engine at points {indices} of this chunk (largest "
        f"difference), and {other} at every point, entry by entry",
        largest,
        0.0,
        allowed,
        True,
    )
    return ChunkOutcomes(first_index, size, arrays, guard, references)  # type: ignore[arg-type]


def _probe_every_point(
    problem: Problem,
    chunk: Mapping[str, torch.Tensor],
    coloured: ColouredPattern,
    values: torch.Tensor,
    entry_rows: np.ndarray,
    first_index: int,
    function_at: Callable[[tuple[torch.Tensor, ...]], tuple[Callable, tuple]],
) -> None:
    """Refuse the chunk unless every point's sparse J agrees with one pass of the other mode:
    uᵀJ against a reverse pass (J from JVPs), J v against a forward pass (J from VJPs), entry
    by entry, each within GUARD_RTOL of the root sum of squares of its terms."""
    names, wrt = list(chunk), problem.wrt
    rows, columns = coloured.shape
    pattern = coloured.pattern
    generator = torch.Generator().manual_seed(GUARD_SEED)
    forward = coloured.colouring.mode == "rev"
    vector = torch.randn(columns if forward else rows, generator=generator, dtype=torch.float64)
    dtype = problem.torch_dtype
    sizes = [problem.inputs[w].numel() for w in wrt]
    shapes = [tuple(problem.inputs[w].shape) for w in wrt]
    output_shapes = [tuple(s) for s in problem.output_shapes.values()]
    output_sizes = [int(np.prod(s)) for s in output_shapes]

    def parts(flat: torch.Tensor, part_sizes: list[int], part_shapes: list[tuple]) -> tuple:
        return tuple(
            p.reshape(s).to(dtype) for p, s in zip(flat.split(part_sizes), part_shapes, strict=True)
        )

    if forward:  # J v: the entries of row i, weighed by v at their columns
        tangents = parts(vector, sizes, shapes)

        def probe(*point: torch.Tensor) -> torch.Tensor:
            g, primals = function_at(point)
            _, products = torch.func.jvp(g, primals, tangents)
            return torch.cat([p.reshape(-1) for p in products])

        weights, at = vector.numpy()[pattern.indices], entry_rows
        length = rows
    else:  # uᵀJ: the entries of column j, weighed by u at their rows
        cotangents = list(parts(vector, output_sizes, output_shapes))
        weights, at = vector.numpy()[entry_rows], pattern.indices
        length = columns
    if forward:
        reference_tensor = torch.func.vmap(probe)(*(chunk[n] for n in names)).detach()
    else:  # one plain reverse pass through the vmapped function, as engine/many.py's guard
        gradients = _reverse_vjps(problem, chunk, cotangents)
        size = values.shape[0]
        reference_tensor = torch.cat([g.detach().reshape(size, -1) for g in gradients], dim=1)
    reference = reference_tensor.to(torch.float64)
    # each entry's term onto its row (J v) or column (uᵀJ), and the root sum of their squares
    terms = values.to(torch.float64) * torch.from_numpy(weights)
    at_tensor = torch.from_numpy(np.ascontiguousarray(at, dtype=np.int64))
    computed = torch.zeros(terms.shape[0], length, dtype=torch.float64)
    computed.index_add_(1, at_tensor, terms)
    squares = torch.zeros_like(computed).index_add_(1, at_tensor, terms.square_())
    tolerance = guard_rtol(dtype) * squares.sqrt_()
    agree = torch.where(
        computed.isfinite() & reference.isfinite(),
        (computed - reference).abs() <= tolerance,
        (computed.isnan() & reference.isnan()) | (computed == reference),
    )
    if not bool(agree.all()):
        k, index = (int(i) for i in (~agree).nonzero()[0])
        what = "J v" if forward else "uᵀJ"
        raise ComputationError(
            f"at point {first_index + k} {what} read off the sparse J differs from one "
            f"{'forward' if forward else 'reverse'} pass at {index} "
            f"({computed[k, index]:.6g} against {reference[k, index]:.6g})"
        )


def _difference(
    outputs: Sequence[np.ndarray],
    computed_outputs: Sequence[np.ndarray],
    reference: sp.csr_array,
    computed: sp.csr_array,
    rtol: float,
) -> tuple[float, float]:
    """The largest difference between the single-point engine's outputs and J and a chunk's,
    and what the dtype allows of it (as engine/many.py's _difference)."""
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(computed_outputs, outputs, strict=True)]
    gap = (computed - reference).tocsr()
    pairs.append((gap.data, np.zeros_like(gap.data)))
    scale = max(
        1.0, float(np.nan_to_num(np.abs(reference.data), nan=0.0, posinf=0.0).max(initial=0.0))
    )
    largest, bound = 0.0, 10 * rtol * scale
    for a, b in pairs:
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.size == 0:
            continue
        if np.isnan(a64).any() or np.isnan(b64).any():
            if not np.array_equal(np.isnan(a64), np.isnan(b64)):
                return np.inf, bound
            continue
        largest = max(largest, float(np.abs(a64 - b64).max()))
    return largest, bound


class SparsePoints:
    """What vectorizing a sparse J over points needs (NOTE [sparse J at many points]): the
    coloured pattern every point shares, how a point's result is completed, and the pattern's
    notes."""

    def __init__(
        self,
        coloured: ColouredPattern,
        finish: Callable[[Problem, SparseJacobianResult], SparseJacobianResult],
        notes: tuple[str, ...],
    ) -> None:
        self.coloured, self.finish, self.notes = coloured, finish, notes

    def chunk_size(self, problem: Problem, limit: int, most: int) -> int:
        """Points a vmapped chunk may hold within `limit` bytes."""
        return sparse_chunk_size(problem, self.coloured, limit, most)

    def chunk(
        self,
        problem: Problem,
        chunk: Mapping[str, torch.Tensor],
        single: Single,
        first_index: int,
    ) -> ChunkOutcomes:
        """The chunk's outcomes, vectorized and guarded."""
        return sparse_vectorized_chunk(
            problem, self.coloured, chunk, single, first_index, finish=self.finish,
            notes=self.notes,
        )  # fmt: skip
