"""The correctness guard: every computed result is verified by an independent product first.

# NOTE [the correctness guard]
For random u (in y's shape) and v (in x's shape), uᵀ(J v) read off the computed J must equal
(uᵀJ)·v, with uᵀJ from one plain reverse pass (`torch.autograd.grad` with cotangent u) over a
fresh call of the function. When J came from forward mode, that is the other AD mode; when it
came from reverse mode (a loop of single rows, or torch.func's vmapped and chunked VJPs), it is
one unbatched pass against J assembled from many. A J that is wrong somewhere agrees with the
reference only for (u, v) in a set of measure zero. Rounding moves both numbers by about
eps·sqrt(Σ (u_i J_ij v_j)²) (errors of random sign add up like a random walk), so they must agree
within `guard_rtol` of that root sum of squares: GUARD_RTOL is float32's level, since a float64
run may compute in float32 inside; a method that cannot see the function errs by the order of J.
The first test weighs the terms of (uᵀJ)·v, which costs nothing; only if it fails is J read
again for its own terms, which cancellation in uᵀJ cannot hide.

Cost: one forward and one backward pass, and one read of J; the forward pass also gives the
warnings of jacobian.CallNotes, which would otherwise take a call of their own. Where J came
from one plain call of a preset or an expression (a loop of reverse passes, a Hessian's batched
backward pass; for J·v, forward mode's call), the reverse pass runs through that call's own
graph (an H·v's, through its gradient's graph: NOTE [the probe of H·v runs through the
gradient's graph] in hessian.py): such a function computes the same graph at every call, so a
fresh one would only repeat it, and the pass is still one unbatched reverse pass against J
assembled from many. The user's own code always gets a fresh call: it may compute differently
from one call to the next.
Past PROBED_ENTRIES entries, u is nonzero on a random subset of rows only, so the read stays
within PROBED_ENTRIES entries: a method that cannot see the function (forward mode blind to
autograd inside it, a vmap batching rule gone wrong) is wrong on every row it computes, and is
caught on any of them.
u and v come from a generator of their own, so the seeded inputs and cotangents are unchanged.

# NOTE [the probe at the edges of the float range]
A J far from 1 is probed in its own units: u is multiplied by a power of two (exact) that brings
the largest |J| probed near 1, within float32's normal range, so the reverse pass's float32 uᵀJ
neither overflows (polar at r = 3e38: entries near float32's largest) nor falls into subnormals,
and uᵀ(J v) is read off J in float64. Numbers that are subnormal carry an absolute rounding of
about the smallest subnormal on each operation, which no relative tolerance covers (x·1e-45):
the tolerance adds that many multiples of it (GUARD_RTOL / eps) for every term of the probe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from jaccli.engine.evaluate import as_leaf, jacobian_vector, vector_jacobian
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line
from jaccli.result import Guard

if TYPE_CHECKING:
    import scipy.sparse as sp

GUARD_SEED = 0x6A6163
PROBED_ENTRIES = 2**20
GUARD_RTOL = 1e-3
"""About 8000 times float32's eps, relative to the root sum of squares of the probe's terms: room
for float32's rounding after long sums, in float64 runs too. An error of the order of J stands
out from it for all but about one random probe in a thousand, a 1 % error spread over J for most
(finer comparisons are --check's)."""


def guard_rtol(dtype: torch.dtype) -> float:
    """GUARD_RTOL; for a narrower float a function may return (float16, bfloat16), the same
    multiple of its eps, at most 0.1."""
    ratio = GUARD_RTOL / torch.finfo(torch.float32).eps
    return min(0.1, max(GUARD_RTOL, ratio * torch.finfo(dtype).eps))


ROW_CHUNK_ENTRIES = 2**16
"""Entries of J (or of a product) turned into float64 at once while the probe reads it: 512 KiB,
which stays in the allocator's heap from one chunk to the next and is still large enough for
torch to split across two threads, where 2 MiB chunks come fresh from the kernel, page by page,
as often as not (Σ a·b and its terms' squares over 10⁶ float32 entries, medians: 1.2 ms in
512 KiB chunks, 2.1 ms in 256 KiB, 2.5 ms in 2 MiB on two threads; 1.8, 1.6 and 4.6 ms on one;
27 ms in 8 MiB chunks, measured)."""


def probe_draws(
    shapes: Sequence[Sequence[int] | int], generator: torch.Generator, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Standard-normal probe vectors, one in each shape, drawn in the result's `dtype` (torch
    fills float32 ten times as fast as float64); the sums take them to float64, exactly, a
    chunk at a time (dot_terms)."""
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]


def rows_to_probe(n_out: int, n_in: int, generator: torch.Generator) -> torch.Tensor | None:
    """The rows of J the probe reads: None for all, else a sorted random subset."""
    if n_out * n_in <= PROBED_ENTRIES:
        return None
    count = max(1, PROBED_ENTRIES // max(n_in, 1))
    return torch.randperm(n_out, generator=generator)[:count].sort().values


def as_matrix(j: torch.Tensor, n_out: int, rows: torch.Tensor | None) -> torch.Tensor:
    """J as an (outputs × inputs) matrix, or those rows of it; a view where strides allow."""
    try:
        matrix = j.detach().view(n_out, -1)
    except RuntimeError:  # strides that no view can flatten: copy only the rows probed
        if rows is None:
            return j.detach().reshape(n_out, -1)
        flat_rows = [j.detach()[torch.unravel_index(r, j.shape[: j.ndim - 1])] for r in rows]
        return torch.stack([r.reshape(-1) for r in flat_rows])
    return matrix if rows is None else matrix[rows]


def squared_terms(
    matrices: Sequence[torch.Tensor], u: torch.Tensor, vs: Sequence[torch.Tensor]
) -> float:
    """Σ (u_i J_ij v_j)² in float64, reading J a bounded number of rows at a time."""
    scale = 0.0
    for matrix, v in zip(matrices, vs, strict=True):
        step = max(1, ROW_CHUNK_ENTRIES // max(matrix.shape[1], 1))
        for start in range(0, matrix.shape[0], step):
            rows = matrix[start : start + step].to(torch.float64).square()
            scale += float(u[start : start + step].square() @ (rows @ v.square()))
    return scale


def probe_jacobians(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    y_shape: Sequence[int],
    jacobians: Sequence[torch.Tensor],
    method: str,
    made: Made | None = None,
) -> Guard:
    """uᵀ(J v) from `jacobians` (of f's one output, for each primal) against (uᵀJ)·v from a
    reverse pass of a fresh call of f, or of the plain call `made` that computed J (NOTE [the
    correctness guard])."""
    generator = torch.Generator().manual_seed(GUARD_SEED)
    n_out = math.prod(y_shape)
    n_in = sum(p.numel() for p in primals)
    dtype = jacobians[0].dtype if jacobians else torch.float64
    rows = rows_to_probe(n_out, n_in, generator)
    (u_rows,) = probe_draws([n_out if rows is None else len(rows)], generator, dtype)
    u_rows = u_rows.to(torch.float64)
    if rows is None:
        u_full = u_rows
    else:
        u_full = torch.zeros(n_out, dtype=torch.float64)
        u_full[rows] = u_rows
    vs = [v.to(torch.float64) for v in probe_draws([p.numel() for p in primals], generator, dtype)]
    matrices = [as_matrix(j, n_out, rows) for j in jacobians]
    unit = _probe_unit(matrices)  # NOTE [the probe at the edges of the float range]
    u_rows, u_full = u_rows * unit, u_full * unit
    value = bilinear(matrices, u_rows, vs) if unit == 1.0 else _value64(matrices, u_rows, vs)
    reference_name = "(uᵀJ)·v by one reverse pass"
    try:
        u_shaped = u_full.reshape(tuple(y_shape))
        reference, reference_scale = _reference(f, primals, u_shaped, vs, made)
    except Exception as error:  # the reference itself failed: say so rather than guess
        raise_if_out_of_memory(error)
        why = f"the reverse pass failed ({first_line(error)[:160]})"
        return Guard(
            method, reference_name, value / unit, math.nan, math.nan, None, _count(rows), (), why
        )
    floor = _subnormal_allowance(dtype, u_rows, vs)
    tolerance, passed = _verdict(value, reference, reference_scale, dtype, floor)
    if not passed:  # cancellation in uᵀJ can hide rounding: weigh it by J's own terms
        scale = max(reference_scale, squared_terms(matrices, u_rows, vs))
        tolerance, passed = _verdict(value, reference, scale, dtype, floor)
    return Guard(
        method,
        reference_name,
        value / unit,
        reference / unit,
        tolerance / unit,
        passed,
        _count(rows),
    )


UNIT_RANGE = 2.0**20
"""A J whose largest |entry| lies within a factor of this of 1 is probed as it is."""
UNIT_LIMIT = 2.0**60
"""u is scaled by at most this (either way): u stays a normal float32."""


def _probe_unit(matrices: Sequence[torch.Tensor]) -> float:
    """The power of two u is multiplied by so that the largest finite |J| probed is near 1."""
    largest = 0.0
    for matrix in matrices:
        if matrix.numel():
            entries = matrix.detach()
            low, high = torch.aminmax(entries)  # one read, no copy (vector_norm's is slower)
            most = max(-float(low), float(high))
            if not math.isfinite(most):  # NaN or ±Infinity in J: the largest finite entry
                most = float(entries.abs().nan_to_num(nan=0.0, posinf=0.0).max())
            largest = max(largest, most)
    return _unit_of(largest)


def _unit_of(largest: float) -> float:
    """The power of two that brings `largest` near 1 (1 when it is near enough already)."""
    if largest == 0.0 or 1 / UNIT_RANGE <= largest <= UNIT_RANGE:
        return 1.0
    return min(UNIT_LIMIT, max(1 / UNIT_LIMIT, 2.0 ** -math.frexp(largest)[1]))


def _value64(
    matrices: Sequence[torch.Tensor], u: torch.Tensor, vs: Sequence[torch.Tensor]
) -> float:
    """uᵀ(J v) in float64, reading J a bounded number of rows at a time."""
    value = 0.0
    for matrix, v in zip(matrices, vs, strict=True):
        step = max(1, ROW_CHUNK_ENTRIES // max(matrix.shape[1], 1))
        for start in range(0, matrix.shape[0], step):
            rows = matrix[start : start + step].to(torch.float64)
            value += float(u[start : start + step] @ (rows @ v))
    return value


def _subnormal_allowance(dtype: torch.dtype, u: torch.Tensor, vs: Sequence[torch.Tensor]) -> float:
    """What subnormal rounding may move the probe by: GUARD_RTOL / eps smallest subnormals
    (float32's at least, as in guard_rtol) on each entry of J, errors of random sign adding up
    like a random walk over the terms u_i J_ij v_j."""
    if not dtype.is_floating_point:
        return 0.0
    finfo32 = torch.finfo(torch.float32)
    ratio = GUARD_RTOL / finfo32.eps
    smallest = max(torch.finfo(dtype).tiny, finfo32.tiny) * finfo32.eps  # 2⁻¹⁴⁹ for float32
    squares = float(torch.dot(u, u)) * sum(float(torch.dot(v, v)) for v in vs)  # u, v flat
    return ratio * smallest * math.sqrt(squares)


def dot_terms(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """Σ a·b over the pairs (each flattened), and the sum of its terms' squares: each term
    a_i b_i exact in float64 (float32 products are), summed in float64 a bounded number of
    entries at a time."""
    total = squares = 0.0
    for a, b in pairs:
        a, b = a.detach().reshape(-1), b.detach().reshape(-1)
        for start in range(0, a.numel(), ROW_CHUNK_ENTRIES):
            part = a[start : start + ROW_CHUNK_ENTRIES].to(torch.float64, copy=True)
            terms = part.mul_(b[start : start + ROW_CHUNK_ENTRIES])
            total += float(terms.sum())
            squares += float(torch.dot(terms, terms))
    return total, squares


def _reference(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    u: torch.Tensor,
    vs: Sequence[torch.Tensor],
    made: Made | None = None,
) -> tuple[float, float]:
    """(uᵀJ)·v from one reverse pass (of the call `made`, if given), and the sum of its terms'
    squares."""
    return dot_terms(zip(_reverse_pass(f, primals, u, made), vs, strict=True))


def _verdict(
    value: float, reference: float, squared_scale: float, dtype: torch.dtype, floor: float = 0.0
) -> tuple[float, bool]:
    """The tolerance for two probes whose terms' squares add up to `squared_scale` (plus
    `floor`, an absolute allowance), and whether they agree within it."""
    tolerance = guard_rtol(dtype) * math.sqrt(squared_scale) + floor
    if math.isfinite(value) and math.isfinite(reference):
        return tolerance, abs(value - reference) <= tolerance
    # inf or NaN in the result: the probe can only tell that both sides have them
    return tolerance, math.isfinite(value) == math.isfinite(reference)


def _count(rows: torch.Tensor | None) -> int | None:
    return None if rows is None else len(rows)


Made = tuple[torch.Tensor, list[torch.Tensor]]
"""A call of f already made: its output, with its autograd graph, and the leaves it took."""


def _reverse_pass(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    u: torch.Tensor,
    made: Made | None = None,
) -> list[torch.Tensor]:
    """uᵀJ for each primal by one backward pass of a fresh call of f, or of the call `made`."""
    with torch.enable_grad():
        if made is None:
            leaves = [as_leaf(p) for p in primals]
            y = f(*leaves)
        else:
            y, leaves = made
        if not y.requires_grad:
            return [torch.zeros_like(leaf) for leaf in leaves]
        return list(vector_jacobian(y, leaves, u.to(y.dtype)))


def disagreement(guard: Guard) -> str:
    """What the guard saw, for messages: `uᵀ(J v) = 0 where (uᵀJ)·v by … gives 1.23`."""
    return (
        f"uᵀ(J v) = {guard.value:.6g} where {guard.reference} gives "
        f"{guard.reference_value:.6g} (tolerance {guard.tolerance:.2g})"
    )


def probe_vjp(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    cotangent: torch.Tensor,
    vjps: Sequence[torch.Tensor],
) -> Guard:
    """(vᵀJ)·w from `vjps` against vᵀ(J w), with J w by reverse-over-reverse: the derivative
    of u ↦ (uᵀJ)·w, a pass through the graph of the backward pass rather than the function's.
    Skipped where the function has no second derivative graph (a custom backward)."""
    generator = torch.Generator().manual_seed(GUARD_SEED)
    dtype = vjps[0].dtype if vjps else torch.float64
    ws = probe_draws([p.numel() for p in primals], generator, dtype)
    value, scale = dot_terms(zip(vjps, ws, strict=True))
    reference_name = "vᵀ(J w) by reverse-over-reverse"
    leaves = [as_leaf(p) for p in primals]
    try:
        with torch.enable_grad():
            y = f(*leaves)
            j_w = jacobian_vector(y, leaves, ws) if y.requires_grad else torch.zeros_like(y)
    except Exception as error:  # no reference: the VJP stands as backward computed it
        raise_if_out_of_memory(error)
        why = f"no second derivative graph ({first_line(error)[:160]})"
        return Guard("backward", reference_name, value, math.nan, math.nan, None, None, (), why)
    reference, reference_scale = dot_terms([(j_w, cotangent)])
    tolerance, passed = _verdict(value, reference, max(scale, reference_scale), dtype)
    return Guard("backward", reference_name, value, reference, tolerance, passed)


def probe_blocks(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    y_shape: Sequence[int],
    blocks: Sequence[tuple[torch.Tensor, int, int]],
) -> Guard:
    """Σ_b u_bᵀ J_b v_b from per-sample blocks (each with its input and output axis) against
    (uᵀJ)·v from a reverse pass of the whole function: this also verifies that the function
    really acts on each sample alone, since any block off the diagonal would show in J.

    u and v are drawn in the blocks' dtype and the sums taken a bounded number of samples at a
    time, so the probe holds about one more input's worth of memory; as for a dense J, the
    blocks' own terms are weighed only when the first test fails."""
    generator = torch.Generator().manual_seed(GUARD_SEED)
    dtype = blocks[0][0].dtype if blocks else torch.float64
    u = torch.randn(tuple(y_shape), generator=generator, dtype=dtype)
    vs = [torch.randn(p.shape, generator=generator, dtype=dtype) for p in primals]
    value = block_bilinear(blocks, u, vs)
    reference_name = "(uᵀJ)·v by one reverse pass of the whole function"
    try:
        reference, reference_scale = _reference(f, primals, u, vs)
    except Exception as error:  # the reference itself failed: say so rather than guess
        raise_if_out_of_memory(error)
        why = f"the reverse pass failed ({first_line(error)[:160]})"
        return Guard("per-sample", reference_name, value, math.nan, math.nan, None, None, (), why)
    tolerance, passed = _verdict(value, reference, reference_scale, dtype)
    if not passed:  # cancellation in uᵀJ can hide rounding: weigh it by the blocks' own terms
        scale = max(reference_scale, block_squared_terms(blocks, u, vs))
        tolerance, passed = _verdict(value, reference, scale, dtype)
    return Guard("per-sample", reference_name, value, reference, tolerance, passed)


def _sample_chunks(
    blocks: Sequence[tuple[torch.Tensor, int, int]],
    u: torch.Tensor,
    vs: Sequence[torch.Tensor],
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(J, u, v) of a bounded number of samples at a time, J as (samples, outputs, inputs) in
    its own dtype, u and v flat by sample."""
    for (block, input_axis, output_axis), v in zip(blocks, vs, strict=True):
        count = block.shape[0]
        u_b, v_b = u.movedim(output_axis, 0), v.movedim(input_axis, 0)
        step = max(1, ROW_CHUNK_ENTRIES // max(block[0].numel(), 1))
        for start in range(0, count, step):
            stop = min(count, start + step)
            j = block[start:stop].detach().reshape(stop - start, -1, v_b[0].numel())
            u_part = u_b[start:stop].reshape(stop - start, -1)
            v_part = v_b[start:stop].reshape(stop - start, -1)
            yield j, u_part, v_part


def block_bilinear(
    blocks: Sequence[tuple[torch.Tensor, int, int]],
    u: torch.Tensor,
    vs: Sequence[torch.Tensor],
) -> float:
    """Σ_b u_bᵀ J_b v_b over per-sample blocks (each with its input and output axis): J_b v_b
    in J's dtype, as `bilinear` takes it, and the rest in float64 (`block_squared_terms` gives
    the sum of its terms' squares)."""
    value = 0.0
    for j, u_part, v_part in _sample_chunks(blocks, u, vs):
        j_v = torch.bmm(j, v_part.to(j.dtype).unsqueeze(-1)).squeeze(-1)
        value += float((u_part.to(torch.float64) * j_v.to(torch.float64)).sum())
    return value


def block_squared_terms(
    blocks: Sequence[tuple[torch.Tensor, int, int]],
    u: torch.Tensor,
    vs: Sequence[torch.Tensor],
) -> float:
    """Σ_b Σ (u_i J_ij v_j)² over per-sample blocks, in float64."""
    scale = 0.0
    for j, u_part, v_part in _sample_chunks(blocks, u, vs):
        v2 = v_part.to(torch.float64).square().unsqueeze(-1)
        j2_v2 = torch.bmm(j.to(torch.float64).square(), v2).squeeze(-1)
        scale += float((u_part.to(torch.float64).square() * j2_v2).sum())
    return scale


def bilinear(
    matrices: Sequence[torch.Tensor], u: torch.Tensor, vs: Sequence[torch.Tensor]
) -> float:
    """Σ_k uᵀ M_k v_k, each M_k the rows of J by the columns of one input, u and the v_k flat
    float64 (`squared_terms` gives the sum of its terms' squares)."""
    return sum(
        float(u @ (m @ v.to(m.dtype)).to(torch.float64)) for m, v in zip(matrices, vs, strict=True)
    )


def probe_jvp(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    tangents: Sequence[torch.Tensor],
    jvp: torch.Tensor,
    method: str,
    made: Made | None = None,
) -> Guard:
    """uᵀ(J v) from the computed J·v against (uᵀJ)·v from a reverse pass through the call
    `made` (forward mode's own, of a preset or an expression) or, where there is none or its
    pass fails, of a fresh call."""
    (u,) = probe_draws([tuple(jvp.shape)], torch.Generator().manual_seed(GUARD_SEED), jvp.dtype)
    value, scale = dot_terms([(jvp, u)])
    reference_name = "(uᵀJ)·v by one reverse pass"
    try:
        try:
            reference, reference_scale = _reference(f, primals, u, tangents, made)
        except Exception as error:
            if made is None:
                raise
            raise_if_out_of_memory(error)
            made = None  # its graph is freed: a fresh call gives the pass
            reference, reference_scale = _reference(f, primals, u, tangents)
    except Exception as error:  # the reference itself failed: say so rather than guess
        raise_if_out_of_memory(error)
        why = f"the reverse pass failed ({first_line(error)[:160]})"
        return Guard(method, reference_name, value, math.nan, math.nan, None, None, (), why)
    tolerance, passed = _verdict(value, reference, max(scale, reference_scale), jvp.dtype)
    return Guard(method, reference_name, value, reference, tolerance, passed)


def probe_directions(
    shapes: Sequence[Sequence[int]], dtype: torch.dtype, draw: int = 0
) -> list[torch.Tensor]:
    """Random probe vectors drawn in `dtype`, one in each shape, from the guard's own generator
    (`draw` 0, 1, … for independent sets)."""
    generator = torch.Generator().manual_seed(GUARD_SEED + draw)
    return probe_draws([tuple(shape) for shape in shapes], generator, dtype)


def probe_products(
    method: str,
    reference_name: str,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    reference_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
    dtype: torch.dtype,
    skipped: str | None = None,
    typical_scale: Callable[[], float] | None = None,
    other_reference: Callable[[], Sequence[tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> Guard:
    """Σ a·b over `pairs` (a probe read off the result) against Σ c·d over `reference_pairs`
    (the same number by an independent computation); None for no reference (`skipped` why).

    When they disagree beyond the rounding of their own terms, `typical_scale` (the squared
    terms of a product free of the cancellation the given vector may cause) may widen it, and
    then the distance of `other_reference` (the same number by a third computation) from the
    reference: the rounding the reference itself carries where its terms cancel (NOTE [a
    reference that cancels])."""

    value, scale = dot_terms(pairs)
    if reference_pairs is None:
        return Guard(method, reference_name, value, math.nan, math.nan, None, None, (), skipped)
    reference, reference_scale = dot_terms(reference_pairs)
    tolerance, passed = _verdict(value, reference, max(scale, reference_scale), dtype)
    if not passed and typical_scale is not None:
        tolerance, passed = _verdict(
            value, reference, max(scale, reference_scale, typical_scale()), dtype
        )
    if not passed and other_reference is not None and math.isfinite(value):
        other, _ = dot_terms(other_reference())
        spread = abs(other - reference)
        if math.isfinite(spread):
            tolerance += spread
            passed = abs(value - reference) <= tolerance
    return Guard(method, reference_name, value, reference, tolerance, passed)


# NOTE [a reference that cancels]
# (H u)ᵀv for logsumexp at x = [40, 1] is about 1e-17 (H's entries are p₀p₁ ≈ e⁻³⁹), while the
# backward pass that makes H u subtracts numbers of order 1 (p₀u₀ − p₀(pᵀu), with p₀ rounded to
# 1): its rounding, about 1e-16, is of no term the tolerance sees, and a right H·1 = 0 was
# refused. A third composition of the same number, uᵀ(H v) by reverse-over-reverse along v,
# rounds differently: how far it lies from the reference is how far rounding took the
# reference, and the tolerance grows by that much. A wrong H·v is still refused wherever the
# two references agree with each other and not with it.


def probe_sparse(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    y_shape: Sequence[int],
    matrix: sp.csr_array,
    method: str,
    mode: str,
    forward_passes: Mapping[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]],
) -> tuple[Guard, int]:
    """A sparse J (NOTE [compressed AD]) against one pass of the other mode, entry by entry:
    each column of uᵀJ against one reverse pass for a J from JVPs (`mode` fwd), each row of J v
    against one forward pass for a J from VJPs (rev), each within GUARD_RTOL of the root sum of
    squares of its terms. A scalar uᵀJv would let a single wrong entry of a large J hide under
    the rounding of the whole; an entry of uᵀJ or J v holds a handful of terms.

    `forward_passes`: the ways to make J v (by name, tried in order), for rev.

    Returns the verdict (value and reference of the entry furthest outside its tolerance, or
    nearest to it) and that entry's index: a column for fwd, a row for rev."""
    generator = torch.Generator().manual_seed(GUARD_SEED)
    n_out = math.prod(y_shape)
    unit = _probe_unit([torch.from_numpy(matrix.data)]) if matrix.nnz else 1.0
    if mode == "fwd":
        u = torch.randn(n_out, generator=generator, dtype=torch.float64) * unit
        reference_name = "uᵀJ by one reverse pass, column by column"
        try:
            gradients = _reverse_pass(f, primals, u.reshape(tuple(y_shape)))
        except Exception as error:  # the reference itself failed: say so rather than guess
            raise_if_out_of_memory(error)
            return _skipped(method, reference_name, first_line(error)), 0
        reference = torch.cat([g.detach().reshape(-1).to(torch.float64) for g in gradients])
        return probe_entries(method, reference_name, matrix.T, u.numpy(), reference.numpy(), unit)
    v = torch.randn(matrix.shape[1], generator=generator, dtype=torch.float64) * unit
    reference_name = "J v by one forward pass, row by row"
    tangents = [part.reshape(p.shape) for part, p in zip(_split(v, primals), primals, strict=True)]
    failures = []
    for name, jvp in forward_passes.items():
        try:
            _, j_v = jvp(f, list(primals), tangents)
            break
        except Exception as error:
            raise_if_out_of_memory(error)
            failures.append(f"{name}: {first_line(error)}")
    else:
        return _skipped(method, reference_name, "; ".join(failures)), 0
    reference = j_v.detach().reshape(-1).to(torch.float64).numpy()
    return probe_entries(method, reference_name, matrix, v.numpy(), reference, unit)


def _split(flat: torch.Tensor, primals: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return flat.split([p.numel() for p in primals])


def probe_entries(
    method: str,
    reference_name: str,
    matrix: sp.sparray,
    vector: np.ndarray,
    reference: np.ndarray,
    unit: float = 1.0,
) -> tuple[Guard, int]:
    """matrix @ vector (float64) against `reference`, entry by entry, each within GUARD_RTOL
    of the root sum of squares of its own terms (NaN and infinities where both have them);
    the verdict at the entry furthest outside its tolerance (or nearest), and its index.
    `unit`: the power of two the vector was scaled by (NOTE [the probe at the edges of the
    float range]), divided out of the numbers reported."""
    dtype = torch.float64 if matrix.dtype == np.float64 else torch.float32
    computed = matrix @ vector
    squared = matrix.copy()
    squared.data = np.square(squared.data.astype(np.float64))
    tolerance = guard_rtol(dtype) * np.sqrt(squared @ np.square(vector))
    if computed.size == 0:
        return Guard(method, reference_name, 0.0, 0.0, 0.0, True), 0
    with np.errstate(invalid="ignore"):
        both_finite = np.isfinite(computed) & np.isfinite(reference)
        alike = np.isfinite(computed) == np.isfinite(reference)
        excess = np.where(
            both_finite,
            np.abs(computed - reference) - tolerance,
            np.where(alike, -np.inf, np.inf),
        )
    worst = int(np.argmax(excess))
    guard = Guard(
        method,
        reference_name,
        float(computed[worst]) / unit,
        float(reference[worst]) / unit,
        float(tolerance[worst]) / unit,
        bool(excess[worst] <= 0),
    )
    return guard, worst


def _skipped(method: str, reference_name: str, why: str) -> Guard:
    reason = f"the reference pass failed ({why[:160]})"
    return Guard(method, reference_name, math.nan, math.nan, math.nan, None, None, (), reason)


def probe_block(
    f: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor],
    y_shape: Sequence[int],
    block: torch.Tensor,
    rows: tuple[int, int],
    columns: tuple[int, int],
    method: str,
) -> Guard:
    """u_Rᵀ(J[R, C] v_C) from one block of J as a matrix (rows R of the outputs flattened end to
    end, columns C of the `wrt` inputs flattened end to end) against (uᵀJ)·v by one reverse
    pass of the whole function, u zero outside R and v outside C (NOTE [the correctness
    guard]). Each block draws its own u and v, and reads at most PROBED_ENTRIES of its entries
    (u is zero on the other rows), copying no more than those."""
    start, stop = rows
    generator = torch.Generator().manual_seed(GUARD_SEED + 1_000_003 * start + columns[0])
    n_out, n_in = math.prod(y_shape), sum(p.numel() for p in primals)
    probed = rows_to_probe(stop - start, columns[1] - columns[0], generator)
    u_block = torch.zeros(stop - start, dtype=torch.float64)
    if probed is None:
        u_block.normal_(generator=generator)
        u_rows, matrix = u_block, block.detach()
    else:
        u_rows = torch.randn(len(probed), generator=generator, dtype=torch.float64)
        u_block[probed] = u_rows
        matrix = block.detach()[probed]
    v_block = torch.randn(columns[1] - columns[0], generator=generator, dtype=torch.float64)
    unit = _unit_of(_largest_finite(matrix))  # NOTE [the probe at the edges of the float range]
    u_rows, u_block = u_rows * unit, u_block * unit
    value = (
        bilinear([matrix], u_rows, [v_block])
        if unit == 1.0
        else _value64([matrix], u_rows, [v_block])
    )
    u_full = torch.zeros(n_out, dtype=torch.float64)
    u_full[start:stop] = u_block
    v_full = torch.zeros(n_in, dtype=torch.float64)
    v_full[columns[0] : columns[1]] = v_block
    vs = list(v_full.split([p.numel() for p in primals]))
    reference_name = "(uᵀJ)·v by one reverse pass, u over the block's rows, v over its columns"
    try:
        reference, reference_scale = _reference(f, primals, u_full.reshape(tuple(y_shape)), vs)
    except Exception as error:  # the reference itself failed: say so rather than guess
        raise_if_out_of_memory(error)
        why = f"the reverse pass failed ({first_line(error)[:160]})"
        return Guard(method, reference_name, value / unit, math.nan, math.nan, None, None, (), why)
    floor = _subnormal_allowance(block.dtype, u_rows, [v_block])
    tolerance, passed = _verdict(value, reference, reference_scale, block.dtype, floor)
    if not passed:  # cancellation in uᵀJ can hide rounding: weigh it by J's own terms
        scale = max(reference_scale, squared_terms([matrix], u_rows, [v_block]))
        tolerance, passed = _verdict(value, reference, scale, block.dtype, floor)
    return Guard(
        method,
        reference_name,
        value / unit,
        reference / unit,
        tolerance / unit,
        passed,
        _count(probed),
    )


def _largest_finite(matrix: torch.Tensor) -> float:
    """The largest finite |entry| of a matrix, a bounded number of rows at a time: by
    reductions that copy nothing, unless a part holds NaN or an infinity."""
    largest = 0.0
    step = max(1, ROW_CHUNK_ENTRIES // max(matrix.shape[1], 1))
    for start in range(0, matrix.shape[0], step):
        part = matrix[start : start + step]
        if not part.numel():
            continue
        low, high = torch.aminmax(part)
        extreme = max(abs(float(low)), abs(float(high)))
        if not math.isfinite(extreme):
            finite = part.abs().nan_to_num(nan=0.0, posinf=0.0)
            extreme = float(finite.max())
        largest = max(largest, extreme)
    return largest
