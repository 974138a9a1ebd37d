"""The plain data the engine hands to the renderers: numpy arrays and names, no torch."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.sparse import csr_array


@dataclass(frozen=True)
class InputValue:
    """One input at the point of evaluation; constants are shown but not differentiated."""

    name: str
    values: np.ndarray
    differentiated: bool
    """Whether J (or vᵀ·J) is taken with respect to it (it is in `wrt`)."""
    differentiable: bool = True
    """False for a preset's constant, which is never differentiated."""


@dataclass(frozen=True)
class Evaluation:
    """A function evaluated at a point: what every result starts with."""

    function_name: str
    formula: str
    dtype: str
    inputs: tuple[InputValue, ...]
    outputs: dict[str, np.ndarray]
    """By name: `y` for a single tensor; `y0`, `y1`… or a dict's keys for several."""
    wrt: tuple[str, ...] = ()
    """The inputs differentiated, in order."""
    jacobian_formula: str = ""
    """J in closed form, when the function carries it (presets)."""


@dataclass(frozen=True)
class FunctionReference:
    """A result checked against the function's own central differences along one random
    direction (NOTE [the function as the reference]): `value` read off the result, `difference`
    the same number by differences of the function, within `tolerance` of the error
    `estimated` from two step sizes."""

    quantity: str
    """What was compared, such as `uᵀJv` or `vᵀHv`."""
    value: float
    difference: float
    """The central difference with the smaller step."""
    estimated_error: float
    """|D(h) − D(2h)| plus the rounding of the function's values over the step."""
    tolerance: float
    step: float
    """The step h along the direction (relative to the inputs' scale)."""
    passed: bool | None
    """None when the comparison could not be made (`skipped` says why)."""
    skipped: str | None = None
    off_point: float | None = None
    """None when compared at the point; else the distance, relative to the inputs' scale, of
    the nearby point compared instead (NOTE [kinks at the point])."""


@dataclass(frozen=True)
class Guard:
    """The correctness guard's verdict on one computed result (NOTE [the correctness guard]).

    `value` is uᵀ(J v) read off the result for random u and v, `reference` the same number from
    an independent pass; they agree within `tolerance`.
    """

    method: str
    reference: str
    value: float
    reference_value: float
    tolerance: float
    passed: bool | None
    """None when the reference could not be computed (`skipped` says why)."""
    rows_probed: int | None = None
    """How many rows of J the probe read; None for all of them."""
    rejected: tuple[str, ...] = ()
    """Methods tried first whose results failed the guard, each with what disagreed."""
    skipped: str | None = None
    function_reference: FunctionReference | None = None
    """The result against the user's function itself; None where the function cannot hide
    anything from autograd (presets, expressions)."""


@dataclass(frozen=True)
class Determinant:
    """det J of a square J (NOTE [the Jacobian determinant]): scalars, or shape (B,) per sample."""

    wrt: tuple[str, ...]
    """The inputs whose joint J it is, columns in this order."""
    size: int
    """d, for a d×d J (or d×d blocks)."""
    sign: np.ndarray
    logabsdet: np.ndarray
    """log|det J|, finite where det J itself is past float64's range."""
    det: np.ndarray
    trace: np.ndarray
    """The divergence, Σᵢ ∂yᵢ/∂xᵢ."""
    conditioning: np.ndarray | Callable[[], np.ndarray]
    """cond J, or how to compute it when it is first read (`condition`): a float64 SVD of every
    block, which costs many times the determinant itself (NOTE [cond J when it is read])."""
    singular: np.ndarray
    """Whether J is singular to working precision: σ_min ≤ d·eps·σ_max (NOTE [a singular J])."""

    @functools.cached_property
    def condition(self) -> np.ndarray:
        """σ_max/σ_min of J by a float64 SVD; Infinity for an exactly singular J."""
        conditioning = self.conditioning
        return conditioning() if callable(conditioning) else conditioning


@dataclass(frozen=True)
class JacobianResult:
    """J of each output for each `wrt` input, with `J.shape == output.shape + input.shape`."""

    evaluation: Evaluation
    jacobians: dict[str, dict[str, np.ndarray]]
    """jacobians[output][wrt]."""
    strategy: str
    strategy_reason: str
    view: View | None = None
    check: Check | None = None
    notes: tuple[str, ...] = ()
    """Warnings for stderr, such as an output that does not depend on an input."""
    per_sample: dict[str, tuple[int, int]] | None = None
    """With --batched: for each input, the (input_axis, output_axis) its blocks run along;
    then each J holds only the diagonal blocks, shaped (B,) + y_sample.shape + x_sample.shape."""
    guard: Guard | None = None
    determinant: Determinant | None = None
    """With `jaccli det`: det J of the (joint, or per-sample) J above."""


@dataclass(frozen=True)
class SparseJacobianResult:
    """J as one sparse matrix, never densified: rows are the outputs flattened in order,
    columns the `wrt` inputs flattened and concatenated in `wrt` order; one JVP or VJP per
    colour (NOTE [compressed AD] in engine/sparse/compressed.py)."""

    evaluation: Evaluation
    matrix: csr_array
    """Values in the problem's dtype, at the entries of the sparsity pattern."""
    mode: str
    """`fwd` (columns coloured, one JVP a colour) or `rev` (rows coloured, one VJP a colour)."""
    colours: int
    colouring: str
    """How the colouring was found (`natural order`, `periodic (P = 6)`, …)."""
    strategy: str
    strategy_reason: str
    notes: tuple[str, ...] = ()
    guard: Guard | None = None
    determinant: Determinant | None = None
    """With `jaccli det --sparse`: det J of the square J above, from its sparse LU."""
    check: Check | None = None
    """With --check (and `jaccli check --sparse`): J·v against a JVP and a difference."""
    view: None = None
    """A sparse J has no per-slice view."""

    def blocks(self) -> dict[str, dict[str, csr_array]]:
        """J of each output for each `wrt` input, as (output elements × input elements)
        sparse matrices: blocks[output][wrt]."""
        return sparse_blocks(self.matrix, self.evaluation)


@dataclass(frozen=True)
class SparseHessianResult:
    """H of a scalar output as one sparse symmetric matrix, never densified: rows and columns
    are the `wrt` inputs flattened and concatenated; one Hessian-vector product per colour."""

    evaluation: Evaluation
    matrix: csr_array
    colours: int
    colouring: str
    strategy: str
    strategy_reason: str
    symmetry_error: float
    """max |H[i, j] − H[j, i]| over the pattern: both are read off the products."""
    notes: tuple[str, ...] = ()
    guard: Guard | None = None
    check: Check | None = None
    """With --check: H·v against reverse-over-reverse and a difference of the gradient."""
    view: None = None
    """A sparse H has no per-slice view."""

    def blocks(self) -> dict[str, dict[str, dict[str, csr_array]]]:
        """H[y][a][b] for the output y and each pair of `wrt` inputs, as (a elements × b
        elements) sparse matrices."""
        (output,) = self.evaluation.outputs
        by_a = sparse_blocks(self.matrix, self.evaluation, rows_by_input=True)
        return {output: by_a}


def sparse_blocks(
    matrix: csr_array, evaluation: Evaluation, *, rows_by_input: bool = False
) -> dict[str, dict[str, csr_array]]:
    """The blocks of a joint sparse matrix: rows split by output (or, `rows_by_input`, by
    `wrt` input), columns by `wrt` input, each block a CSR matrix of its own."""
    sizes = {value.name: value.values.size for value in evaluation.inputs}
    column_sizes = [(name, sizes[name]) for name in evaluation.wrt]
    if rows_by_input:
        row_sizes = column_sizes
    else:
        row_sizes = [(name, output.size) for name, output in evaluation.outputs.items()]
    blocks: dict[str, dict[str, csr_array]] = {}
    top = 0
    for row_name, height in row_sizes:
        rows = matrix[top : top + height]
        left = 0
        blocks[row_name] = {}
        for column_name, width in column_sizes:
            blocks[row_name][column_name] = rows[:, left : left + width].tocsr()
            left += width
        top += height
    return blocks


@dataclass(frozen=True)
class SparsePlan:
    """How a sparse J will be computed: its pattern's size, the colouring, and the memory plan
    (`plan.chunk_size` colours a vmapped batch)."""

    plan: Plan
    nonzeros: int
    mode: str
    colours: int
    colouring: str
    other_colours: int
    """The colours the other mode needed."""


@dataclass(frozen=True)
class VjpResult:
    """vᵀ·J for each `wrt` input: the gradient `backward(v)` leaves in that input."""

    evaluation: Evaluation
    cotangents: dict[str, np.ndarray]
    """v for each output, in its shape."""
    vjps: dict[str, np.ndarray]
    view: View | None = None
    check: Check | None = None
    notes: tuple[str, ...] = ()
    """Warnings for stderr, such as an output that does not depend on an input."""
    guard: Guard | None = None


@dataclass(frozen=True)
class JvpResult:
    """J·v for each output: Σₖ Jₖ vₖ over the `wrt` inputs, as torch.func.jvp sums it."""

    evaluation: Evaluation
    tangents: dict[str, np.ndarray]
    """v for each `wrt` input, in its shape."""
    jvps: dict[str, np.ndarray]
    """J·v for each output, in its shape."""
    method: str
    method_reason: str
    check: Check | None = None
    notes: tuple[str, ...] = ()
    guard: Guard | None = None
    view: View | None = None


@dataclass(frozen=True)
class HessianResult:
    """H[y][a][b] = ∂²y/∂a∂b for each output and pair of `wrt` inputs, with
    `H.shape == y.shape + a.shape + b.shape`."""

    evaluation: Evaluation
    hessians: dict[str, dict[str, dict[str, np.ndarray]]]
    strategy: str
    strategy_reason: str
    symmetry_error: float
    """max |H − Hᵀ|: how far the computed H is from symmetric."""
    check: Check | None = None
    notes: tuple[str, ...] = ()
    guard: Guard | None = None
    view: View | None = None


@dataclass(frozen=True)
class HvpResult:
    """H·v of a scalar output for each `wrt` input: (H·v)_a = Σ_b H_ab v_b, H never formed."""

    evaluation: Evaluation
    vectors: dict[str, np.ndarray]
    """v for each `wrt` input, in its shape."""
    hvps: dict[str, np.ndarray]
    method: str
    method_reason: str
    check: Check | None = None
    notes: tuple[str, ...] = ()
    guard: Guard | None = None
    view: View | None = None


@dataclass(frozen=True)
class SliceRow:
    """One slice along a separable axis: its own Jacobian, and how it rebuilds the full result.

    For a VJP, `product` is v[i]·J_i and `full_slice` the slice of vᵀ·J; for a JVP, J_i·v[i]
    and the slice of J·v; for a Jacobian, `product` is J_i and `full_slice` the diagonal
    block i of the full J.
    """

    index: int
    input_slice: np.ndarray
    output_slice: np.ndarray
    jacobian: np.ndarray
    vector: np.ndarray | None
    """v[i]: the cotangent's slice along the output axis (VJP) or the tangent's along the
    input axis (JVP); None for a Jacobian."""
    product: np.ndarray
    full_slice: np.ndarray
    max_difference: float
    agrees: bool


@dataclass(frozen=True)
class View:
    """The result decomposed slice by slice along one separable axis of one input."""

    wrt: str
    output: str
    name: str
    input_axis: int
    output_axis: int
    rtol: float
    atol: float
    slices: tuple[SliceRow, ...]
    product: str = "jacobian"
    """What each slice rebuilds: `jacobian`, `vjp` or `jvp`."""

    @property
    def agrees(self) -> bool:
        return all(row.agrees for row in self.slices)


@dataclass(frozen=True)
class EntryError:
    """One compared entry: where it is, both values and the errors between them."""

    wrt: str
    output: str | None
    """The output of a Jacobian entry; None for a VJP entry, which has only an input index."""
    output_index: tuple[int, ...] | None
    input_index: tuple[int, ...]
    value: float
    reference: float
    abs_error: float
    rel_error: float


@dataclass(frozen=True)
class Comparison:
    """A result against an independent reference, within stated tolerances."""

    name: str
    reference: str
    rtol: float
    atol: float
    step: float | None
    max_abs_error: float
    max_rel_error: float
    worst_entries: tuple[EntryError, ...]
    """The entries that miss the tolerance by the most (or come closest), worst first."""
    passed: bool | None
    """None when the comparison could not be made (see `skipped`)."""
    skipped: str | None = None
    largest_error_entry: EntryError | None = None
    """The entry with the largest absolute error (`max_abs_error`)."""


@dataclass(frozen=True)
class Check:
    """Every comparison made to verify one result."""

    comparisons: tuple[Comparison, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.comparisons)


@dataclass(frozen=True)
class Plan:
    """How J will be computed, why, and what it will cost in memory: known before computing."""

    method: str
    reason: str
    n_out: int
    n_in: int
    result_bytes: int
    peak_bytes: int
    budget: int
    chunk_size: int | None = None
    refused: str | None = None
    """Why the computation would not fit the budget (it then exits 3); None when it fits."""


@dataclass(frozen=True)
class PointsPlan:
    """With --points: how many points are computed at once, and what a chunk holds."""

    count: int | None
    """Points in all, when known (None for a stream)."""
    chunk_size: int
    per_point_bytes: int
    peak_bytes: int
    budget: int
    method: str
    refused: str | None = None


@dataclass(frozen=True)
class PlanReport:
    """What --plan shows: the function, the shapes, and the plan for the dense or per-sample J."""

    function_name: str
    formula: str
    dtype: str
    input_shapes: dict[str, tuple[int, ...]]
    output_shapes: dict[str, tuple[int, ...]]
    wrt: tuple[str, ...]
    plan: Plan
    per_sample: Plan | None
    """The per-sample alternative, when J is block-diagonal (or when --batched asked for it)."""
    batched: bool
    output_unknown: str | None = None
    """Why the output shapes are unknown (the function cannot run without values), if so."""
    points: PointsPlan | None = None
    """With --points: how they are chunked."""
    sparse: SparsePlan | None = None
    """With --sparse: the pattern, its colouring and the compressed passes (`plan` is theirs)."""
    notes: tuple[str, ...] = ()
    """What the sparsity pattern says of itself (--sparse)."""


Result = JacobianResult | VjpResult | JvpResult | HessianResult | HvpResult
"""What a computing command hands the renderers."""


def computed_arrays(result: Result) -> list[np.ndarray]:
    """What a result computed, in a fixed order: each J, vᵀ·J, J·v, H·v or H."""
    if isinstance(result, JacobianResult):
        return [j for by_wrt in result.jacobians.values() for j in by_wrt.values()]
    if isinstance(result, VjpResult):
        return list(result.vjps.values())
    if isinstance(result, JvpResult):
        return list(result.jvps.values())
    if isinstance(result, HvpResult):
        return list(result.hvps.values())
    return [h for by_a in result.hessians.values() for by_b in by_a.values() for h in by_b.values()]


def direction_arrays(result: Result) -> list[np.ndarray]:
    """The vectors a product was taken with: cotangents, tangents or H·v's vectors."""
    if isinstance(result, VjpResult):
        return list(result.cotangents.values())
    if isinstance(result, JvpResult):
        return list(result.tangents.values())
    if isinstance(result, HvpResult):
        return list(result.vectors.values())
    return []


@dataclass(frozen=True)
class BlockDiagonal:
    """J's non-zeros lie in diagonal blocks: `row_sizes[k]` rows by `column_sizes[k]` columns."""

    row_sizes: tuple[int, ...]
    column_sizes: tuple[int, ...]
    axis: int | None
    """The axis of both the input and the output the blocks run along (its samples), or None
    when they follow no axis."""
    hint: str | None = None
    """What to run to compute only the blocks, when a command can."""

    @property
    def count(self) -> int:
        return len(self.row_sizes)


@dataclass(frozen=True)
class Structure:
    """The shape of J's non-zero pattern, on the matrix with rows = outputs, columns = inputs."""

    rows: int
    columns: int
    nonzeros: int
    lower_bandwidth: int | None
    """max(i − j) over the non-zeros J[i, j]; None when J is zero."""
    upper_bandwidth: int | None
    diagonal: bool
    triangular: str | None
    """`lower` or `upper` for a square J zero above or below its diagonal (not diagonal)."""
    blocks: BlockDiagonal | None
    rank: int | None
    """The numerical rank: singular values above `rank_tolerance`."""
    rank_tolerance: float | None
    rank_skipped: str | None = None

    @property
    def density(self) -> float:
        return self.nonzeros / max(self.rows * self.columns, 1)

    @property
    def form(self) -> str:
        """zero, diagonal, lower-triangular, upper-triangular, block-diagonal, banded (at most
        half as many diagonals as the shorter side), dense, or other."""
        if self.nonzeros == 0:
            return "zero"
        if self.diagonal:
            return "diagonal"
        if self.triangular is not None:
            return f"{self.triangular}-triangular"
        if self.blocks is not None:
            return "block-diagonal"
        if 2 * self.diagonals <= min(self.rows, self.columns):
            return "banded"
        return "dense" if self.nonzeros == self.rows * self.columns else "other"

    @property
    def diagonals(self) -> int:
        """How many diagonals the non-zeros span: lower + upper bandwidth + 1."""
        return (self.lower_bandwidth or 0) + (self.upper_bandwidth or 0) + 1


@dataclass(frozen=True)
class PictureGroup:
    """One output (rows) or input (columns) in a picture: its label, entries and cells."""

    label: str
    size: int
    cells: int


@dataclass(frozen=True)
class Picture:
    """J pooled to fit a frame: each cell holds the entry of largest magnitude it covers."""

    view: str
    """`heatmap` or `sparsity`: what the picture is drawn as."""
    title: str
    values: np.ndarray
    """Pooled values, with NaN where a cell covers a NaN; a cell is 0 only where every entry
    it covers is."""
    cell_rows: int
    cell_columns: int
    row_groups: tuple[PictureGroup, ...]
    column_groups: tuple[PictureGroup, ...]
    scale: float
    """max |J| over the finite entries; the colour scale runs from −scale to +scale."""
    structure: Structure
