"""A sparse J whose pattern is dense: computed by the ordinary dense engine (with its guard) and
kept as a sparse matrix at the pattern's entries.

# NOTE [a dense pattern]
Compressed AD makes one pass per colour; the dense engine one vectorized pass per row (rev) or
column (fwd), min(m, n) of them. When the cheaper mode's colours come close to that count (an
MLP's J: every column shares a row with every other, so n colours), compression saves nothing
and costs the gathering and, where the function cannot be vmapped over colours, one call per
colour. There J is computed by the dense engine, verified by its own guard (NOTE [the
correctness guard] in trust.py), and its values read at the pattern's entries. A number of the
dense J outside the pattern proves the pattern misses a non-zero (a wrong --sparsity file) and
is refused as the compressed passes refuse it (NOTE [a pattern that misses a non-zero]). Only
when the dense J fits the memory budget: otherwise the compressed passes run, as before.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from jaccli.engine.jacobian import Progress, Strategy, compute_jacobian, plan_jacobian
from jaccli.engine.problem import Problem
from jaccli.engine.sparse.colouring import ColouredPattern
from jaccli.errors import ComputationError
from jaccli.result import Plan, SparseJacobianResult

DENSE_PASSES_SHARE = 0.75
"""Past this share of the dense pass count (min(m, n)), the colours gain nothing over the
dense engine (NOTE [a dense pattern])."""

DENSE_COLOURING = "none: J's pattern is dense"
"""The colouring's method where the dense engine computed J."""


def dense_plan(
    problem: Problem, coloured: ColouredPattern, mode: str, budget: int | None
) -> Plan | None:
    """The dense engine's plan when J's pattern needs nearly as many colours as the dense
    engine needs passes and the dense J fits the budget; None otherwise (NOTE [a dense
    pattern])."""
    rows, columns = coloured.shape
    if coloured.colouring.count <= DENSE_PASSES_SHARE * min(rows, columns):
        return None
    plan = plan_jacobian(problem, _strategy(mode), budget)
    return plan if plan.refused is None else None


def _strategy(mode: str) -> Strategy:
    return Strategy(mode) if mode in ("fwd", "rev") else Strategy.AUTO


def dense_note(coloured: ColouredPattern, method: str) -> str:
    """The warning that says the pattern is dense and J was computed densely."""
    rows, columns = coloured.shape
    density = coloured.pattern.nnz / max(rows * columns, 1)
    return (
        f"J's pattern is dense ({density:.0%} of its entries may be non-zero; "
        f"{coloured.colouring.count} colours against {min(rows, columns)} dense passes): "
        f"--sparse gains nothing here, so J was computed densely ({method}) and kept sparse; "
        "drop --sparse"
    )


def compute_dense_as_sparse(
    problem: Problem,
    coloured: ColouredPattern,
    *,
    mode: str = "auto",
    budget: int | None = None,
    progress: Progress | None = None,
) -> SparseJacobianResult:
    """J by the dense engine (its strategy, chunks and guard), read at the entries of the
    coloured pattern into a sparse matrix; refused where the dense J has a number outside the
    pattern (NOTE [a dense pattern])."""
    dense = compute_jacobian(problem, _strategy(mode), budget, progress)
    rows, columns = coloured.shape
    joined = np.concatenate(
        [
            np.concatenate(
                [dense.jacobians[output][wrt].reshape(size, -1) for wrt in problem.wrt],
                axis=1,
            )
            for output, size in _output_sizes(problem)
        ],
        axis=0,
    )
    pattern = coloured.pattern
    entry_rows = np.repeat(np.arange(rows, dtype=np.int64), np.diff(pattern.indptr))
    values = joined[entry_rows, pattern.indices]
    joined[entry_rows, pattern.indices] = 0
    with np.errstate(invalid="ignore"):
        outside = (joined != 0) & ~np.isnan(joined)
    if outside.any():
        row, column = np.unravel_index(int(np.argmax(outside)), outside.shape)
        raise ComputationError(
            f"the sparsity pattern misses a non-zero of J: J[{row}, {column}] is "
            f"{joined[row, column]:.6g} where the pattern has no entry; J is not printed (give "
            "a pattern that holds every non-zero, or let jaccli detect it)",
            code="pattern_misses",
        )
    del joined
    matrix = sp.csr_array((values, pattern.indices, pattern.indptr), shape=(rows, columns))
    mode_of = "fwd" if dense.strategy.endswith("fwd") else "rev"
    passes = columns if mode_of == "fwd" else rows
    note = dense_note(coloured, dense.strategy)
    return SparseJacobianResult(
        evaluation=dense.evaluation,
        matrix=matrix,
        mode=mode_of,
        colours=passes,
        colouring=DENSE_COLOURING,
        strategy=f"dense-{dense.strategy}",
        strategy_reason=(
            f"{coloured.colouring.count} colours would gain nothing over {min(rows, columns)} "
            f"dense passes: {dense.strategy_reason}; {matrix.nnz} non-zeros"
        ),
        notes=(note, *dense.notes),
        guard=replace(dense.guard, method=f"dense-{dense.strategy}") if dense.guard else None,
    )


def _output_sizes(problem: Problem) -> list[tuple[str, int]]:
    return [(name, int(np.prod(shape))) for name, shape in problem.output_shapes.items()]
