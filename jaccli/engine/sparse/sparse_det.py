"""det J of a sparse square J from its sparse LU: sign and log|det J| without densifying.

# NOTE [det of a sparse J]
scipy's SuperLU (`scipy.sparse.linalg.splu`, float64) factors Pr·J·Pc = L·U with L of unit
diagonal, so log|det J| = Σ log|U_ii| and sign det J = Π sign U_ii times the parities of the
two permutations (a permutation of n with c cycles has parity n − c; the cycles are the
connected components of i → p(i), counted by scipy.sparse.csgraph). A J that SuperLU finds
exactly singular has det 0. Singular to working precision (NOTE [a singular J]) is judged by
the condition number in the 1-norm, ‖J‖₁·‖J⁻¹‖₁, both estimated (Higham's `onenormest`) with
a few solves by the factors: the SVD the dense det uses would need J dense. The two condition
numbers differ by at most a factor n.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from jaccli.engine.det import determinant_notes, require_square
from jaccli.engine.problem import Problem
from jaccli.engine.sparse.compressed import compute_sparse_jacobian
from jaccli.memory import raise_if_out_of_memory
from jaccli.result import Determinant, SparseJacobianResult


def _parity(permutation: np.ndarray) -> int:
    """0 for an even permutation, 1 for an odd one."""
    from scipy.sparse.csgraph import connected_components

    n = permutation.size
    graph = sp.csr_array((np.ones(n, dtype=np.int8), (np.arange(n), permutation)), shape=(n, n))
    cycles, _ = connected_components(graph, directed=True, connection="weak")
    return (n - cycles) % 2


def sparse_determinant(matrix: sp.sparray, wrt: tuple[str, ...], eps: float) -> Determinant:
    """sign, log|det|, det, trace and (1-norm) condition number of a sparse square matrix, and
    whether it is singular to the precision `eps` (NOTE [det of a sparse J])."""
    from scipy.sparse.linalg import LinearOperator, onenormest, splu

    square = sp.csc_array(matrix, dtype=np.float64)
    size = square.shape[0]
    trace = float(square.diagonal().sum())
    nan = np.float64(np.nan)
    if not np.isfinite(square.data).all():  # the sign is unknown, as the dense slogdet says
        return _determinant(wrt, size, nan, nan, trace, nan, False)
    try:
        factors = splu(square)
    except RuntimeError as error:
        raise_if_out_of_memory(error)
        if "singular" not in str(error):
            raise
        return _determinant(wrt, size, 0.0, -np.inf, trace, np.inf, True)
    except MemoryError as error:
        raise_if_out_of_memory(error)
        raise
    diagonal = factors.U.diagonal()
    if (diagonal == 0).any():
        return _determinant(wrt, size, 0.0, -np.inf, trace, np.inf, True)
    negatives = int((diagonal < 0).sum()) + _parity(factors.perm_r) + _parity(factors.perm_c)
    sign = -1.0 if negatives % 2 else 1.0
    logabsdet = float(np.log(np.abs(diagonal)).sum())
    inverse = LinearOperator(
        square.shape,
        matvec=factors.solve,
        rmatvec=lambda x: factors.solve(x, trans="T"),
        dtype=np.float64,
    )
    condition = float(onenormest(square) * onenormest(inverse)) if size > 1 else 1.0
    return _determinant(wrt, size, sign, logabsdet, trace, condition, condition * size * eps >= 1)


def _determinant(
    wrt: tuple[str, ...],
    size: int,
    sign: float,
    logabsdet: float,
    trace: float,
    condition: float,
    singular: bool,
) -> Determinant:
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        det = sign * np.exp(logabsdet)
    return Determinant(
        wrt=wrt,
        size=size,
        sign=np.asarray(sign, dtype=np.float64),
        logabsdet=np.asarray(logabsdet, dtype=np.float64),
        det=np.asarray(det, dtype=np.float64),
        trace=np.asarray(trace, dtype=np.float64),
        conditioning=np.asarray(condition, dtype=np.float64),
        singular=np.asarray(singular),
    )


def compute_sparse_det(
    problem: Problem,
    pattern: sp.sparray,
    *,
    budget: int | None = None,
    mode: str = "auto",
) -> SparseJacobianResult:
    """The sparse J (compute_sparse_jacobian) with det J from its sparse LU, and the warnings
    of a singular J or of a det past float64's range."""
    require_square(problem, batched=False)
    result = compute_sparse_jacobian(problem, pattern, budget=budget, mode=mode)
    return with_sparse_det(problem, result)


def with_sparse_det(problem: Problem, result: SparseJacobianResult) -> SparseJacobianResult:
    """The sparse J with det J from its sparse LU, and the warnings of a singular J or of a
    det past float64's range."""
    require_square(problem, batched=False)
    eps = float(np.finfo(np.dtype(problem.dtype)).eps)
    det = sparse_determinant(result.matrix, problem.wrt, eps)
    notes = (*result.notes, *determinant_notes(det, problem.dtype))
    return replace(result, determinant=det, notes=notes)
