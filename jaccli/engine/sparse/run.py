"""A sparse J or H for a command: its pattern found (traced, or read from a --sparsity file),
then computed, verified, checked and planned as the dense ones are.

# NOTE [a pattern found once]
At many points (--points) the pattern of the first is kept for the others, and so is its
colouring, unless the pattern said it holds at its point only (an index, a mask or a sort chose
by the values): then each point traces its own. A pattern carried to a point where it misses a
non-zero would still be refused there by the guard (NOTE [a pattern that misses a non-zero]).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from jaccli.engine.check import DEFAULT_CHECK_OPTIONS, CheckOptions, check_sparse
from jaccli.engine.det import require_square
from jaccli.engine.jacobian import Progress
from jaccli.engine.problem import Problem
from jaccli.engine.reference import check_sparse_result
from jaccli.engine.sparse.colouring import (
    ColouredPattern,
    as_pattern,
    colour_pattern,
    symmetric_colouring,
)
from jaccli.engine.sparse.compressed import (
    compute_sparse_hessian,
    compute_sparse_jacobian,
    plan_sparse_jacobian,
)
from jaccli.engine.sparse.dense_route import (
    DENSE_COLOURING,
    compute_dense_as_sparse,
    dense_plan,
)
from jaccli.engine.sparse.many import SparsePoints
from jaccli.engine.sparse.pattern import SparsityPattern, detect_pattern, hessian_pattern
from jaccli.engine.sparse.pattern_file import read_pattern
from jaccli.engine.sparse.sparse_det import compute_sparse_det, with_sparse_det
from jaccli.result import SparseHessianResult, SparseJacobianResult, SparsePlan
from jaccli.spec import DEFAULT_VALUE_LIMIT

SparseResult = TypeVar("SparseResult", SparseJacobianResult, SparseHessianResult)

DENSE_PATTERN = 0.5
"""Past this share of J's entries, a pattern is said dense: --sparse gains nothing."""


@dataclass(frozen=True)
class Prepared:
    """A pattern and where it came from, with the colouring of J's columns or rows once made
    (NOTE [a pattern found once])."""

    pattern: SparsityPattern
    source: str
    """`traced`, or the --sparsity file."""
    hessian: bool = False
    """Whether it is H's pattern (symmetric, its columns coloured), not J's."""
    coloured: ColouredPattern | None = None

    @property
    def reusable(self) -> bool:
        """Whether another point may use it (NOTE [a pattern found once])."""
        return not self.pattern.value_dependent

    def description(self) -> str:
        """`pattern traced, exact` and the like, for the strategy's reason."""
        kind = "exact" if self.pattern.exact else "a superset of J's non-zeros"
        if self.source != "traced":
            kind = f"from {self.source}"
        where = ", at this point only" if self.pattern.value_dependent else ""
        return f"pattern {'traced, ' if self.source == 'traced' else ''}{kind}{where}"

    def notes(self, dense_said: bool = False) -> tuple[str, ...]:
        """What the pattern says of itself (ops without a rule, values that shaped it), and
        whether it is dense (unless `dense_said`: the result says so already)."""
        notes = list(self.pattern.notes)
        if self.pattern.density > DENSE_PATTERN and self.pattern.nnz > 1 and not dense_said:
            notes.append(
                f"J's pattern is dense ({self.pattern.density:.0%} of its entries may be "
                "non-zero): --sparse gains nothing here; drop it"
            )
        return tuple(notes)


def prepare_pattern(
    problem: Problem,
    sparsity: str | None,
    *,
    hessian: bool = False,
    budget: int | None = None,
    value_limit: int = DEFAULT_VALUE_LIMIT,
) -> Prepared:
    """J's pattern (H's for `hessian`) at the problem's point: read from the --sparsity file,
    or traced through one call of the function."""
    if sparsity is not None:
        n = problem.input_count
        shape = (n, n) if hessian else (problem.output_count, n)
        return Prepared(read_pattern(sparsity, shape, value_limit, budget), sparsity, hessian)
    detect = hessian_pattern if hessian else detect_pattern
    return Prepared(detect(problem, budget), "traced", hessian)


def coloured(prepared: Prepared, mode: str = "auto") -> Prepared:
    """The prepared pattern with its colouring: J's in `mode` (auto: the fewer colours), H's
    columns as compute_sparse_hessian colours them (NOTE [recovering H])."""
    if prepared.coloured is not None:
        return prepared
    matrix = as_pattern(prepared.pattern.matrix)
    if not prepared.hessian:
        return replace(prepared, coloured=colour_pattern(matrix, mode))
    symmetric = as_pattern(matrix + matrix.T)
    colouring = symmetric_colouring(symmetric)
    reason = f"{colouring.count} Hessian-vector products, one per colour of H's columns"
    ready = ColouredPattern(symmetric, colouring, colouring.count, reason)
    return replace(prepared, coloured=ready)


def plan_sparse(
    problem: Problem, prepared: Prepared, mode: str = "auto", budget: int | None = None
) -> SparsePlan:
    """What the compressed passes of J (or H) would take (--plan --sparse)."""
    ready = coloured(prepared, mode)
    assert ready.coloured is not None
    dense = None if prepared.hessian else dense_plan(problem, ready.coloured, mode, budget)
    if dense is not None:  # NOTE [a dense pattern]
        rows, columns = ready.coloured.shape
        passes = columns if dense.method.endswith("fwd") else rows
        reason = (
            f"J's pattern is dense: {ready.coloured.colouring.count} colours would gain nothing "
            f"over {min(rows, columns)} dense passes, so J is computed densely and kept sparse; "
            f"{dense.reason}"
        )
        return SparsePlan(
            replace(dense, method=f"dense-{dense.method}", reason=reason),
            ready.coloured.pattern.nnz,
            "fwd" if dense.method.endswith("fwd") else "rev",
            passes,
            DENSE_COLOURING,
            ready.coloured.other_count,
        )
    plan = plan_sparse_jacobian(problem, ready.coloured, budget)
    if prepared.hessian:
        return replace(plan, mode="hvp", plan=replace(plan.plan, method="sparse-hvp"))
    return plan


def run_sparse_jacobian(
    problem: Problem,
    prepared: Prepared,
    *,
    mode: str = "auto",
    budget: int | None = None,
    det: bool = False,
    check: bool = False,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
    progress: Progress | None = None,
) -> SparseJacobianResult:
    """The sparse J (with det J from a sparse LU when `det`), verified by the guard and, for a
    user function, against its own differences; with `check`, J·v against a JVP and a central
    difference along v."""
    pattern = prepared.pattern.matrix
    ready = coloured(prepared, mode)
    assert ready.coloured is not None
    if dense_plan(problem, ready.coloured, mode, budget) is not None:  # NOTE [a dense pattern]
        if det:
            require_square(problem, batched=False)  # before J is computed
        result = compute_dense_as_sparse(
            problem, ready.coloured, mode=mode, budget=budget, progress=progress
        )
        if det:
            result = with_sparse_det(problem, result)
    elif det:
        result = compute_sparse_det(problem, pattern, budget=budget, mode=mode)
    else:
        result = compute_sparse_jacobian(
            problem, pattern, budget=budget, mode=mode, progress=progress, coloured=ready.coloured
        )
    result = _finished(problem, result, prepared)
    if check:
        result = replace(result, check=check_sparse(problem, result.matrix, "J", check_options))
    return result


def run_sparse_hessian(
    problem: Problem,
    prepared: Prepared,
    *,
    budget: int | None = None,
    check: bool = False,
    check_options: CheckOptions = DEFAULT_CHECK_OPTIONS,
    progress: Progress | None = None,
) -> SparseHessianResult:
    """The sparse H of a scalar output, verified as `run_sparse_jacobian` verifies J; with
    `check`, H·v against reverse-over-reverse and a central difference of the gradient."""
    result = compute_sparse_hessian(
        problem, prepared.pattern.matrix, budget=budget, progress=progress
    )
    result = _finished(problem, result, prepared)
    if check:
        result = replace(result, check=check_sparse(problem, result.matrix, "H", check_options))
    return result


def _finished(problem: Problem, result: SparseResult, prepared: Prepared) -> SparseResult:
    """The result with what its pattern says, and checked against the function itself."""
    reason = f"{prepared.description()}; {result.strategy_reason}"
    dense_said = isinstance(result, SparseJacobianResult) and result.colouring == DENSE_COLOURING
    notes = (*prepared.notes(dense_said), *result.notes)
    result = replace(result, strategy_reason=reason, notes=notes)
    return check_sparse_result(problem, result)  # type: ignore[return-value]


def sparse_points(
    problem: Problem,
    prepared: Prepared,
    *,
    mode: str = "auto",
    budget: int | None = None,
    det: bool = False,
) -> SparsePoints | None:
    """What vectorizing J over the points needs (NOTE [sparse J at many points] in many.py),
    or None where the points go one at a time: a pattern that holds at its point only, H's
    pattern, or a dense one (NOTE [a dense pattern])."""
    if prepared.hessian or not prepared.reusable:
        return None
    ready = coloured(prepared, mode)
    assert ready.coloured is not None
    if dense_plan(problem, ready.coloured, mode, budget) is not None:
        return None
    description = prepared.description()

    def finish(point: Problem, result: SparseJacobianResult) -> SparseJacobianResult:
        result = replace(result, strategy_reason=f"{description}; {result.strategy_reason}")
        return with_sparse_det(point, result) if det else result

    return SparsePoints(ready.coloured, finish, prepared.notes())
