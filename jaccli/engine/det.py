"""The Jacobian determinant: det J, its sign and log|det J|, and the trace (the divergence).

# NOTE [the Jacobian determinant]
det J needs J square once flattened: y.numel() == x.numel(). With several `wrt` inputs it is
the joint J, [J_a | J_b | …] with columns in `wrt` order, that must be square. The numbers come
from `torch.linalg.slogdet` in float64 (for blocks, from their float64 LU factors as slogdet
takes them, summed in another order), so a 512×512 J whose det is past float64's range still
has an exact sign and log|det J|; det itself is then ±Infinity or 0, and a warning says so.
With --batched each diagonal block along the separable axis has its own determinant, shape
(B,): the change-of-variables term of a normalizing flow, in O(B·d²) memory.

# NOTE [a singular J]
A J that is singular in exact arithmetic rarely gives det J = 0 in floating point: a 2-link arm
at q2 = 0 gives 5.6e-17, rounding noise, not a small volume. J is called singular to working
precision when its smallest singular value is at most d·eps·σ_max (eps of the dtype J was
computed in), the tolerance of numpy's `matrix_rank` and of the numerical rank in structure.py:
its entries are only known to about eps·σ_max, so a perturbation that small could make it
exactly singular. Equivalently, cond J = σ_max/σ_min ≥ 1/(d·eps). The singular values come from
a float64 SVD, so cond J is not limited by the dtype; it is Infinity when σ_min is 0.
Most J are far from that bound, and an SVD to say so costs many times the determinant (4096
blocks of 16×16: 8× slogdet). So two cheaper tests come first, each only ever clearing a J.

For blocks (--batched), the first costs nothing beyond their determinants' own LU factors (NOTE
[a J cleared by its volume]). Where it cannot clear J (or for a single J), a Cholesky
factorization of JᵀJ − c·I in float64 comes next, c = ((d·eps)² + 2(d + 2)²·eps₆₄)·‖J‖_F²: it
succeeds only where JᵀJ − c·I is positive definite up to the rounding of forming JᵀJ and of
factoring it (at most (d + 2)²·eps₆₄·‖J‖_F² between them), so where it succeeds σ_min² >
(d·eps)²·‖J‖_F² ≥ (d·eps·σ_max)²: J is not singular. Where it fails (near the bound, a singular
J, one too large or too small for JᵀJ in float64), the SVD decides, as it always did.

# NOTE [a J cleared by its volume]
|det J| = σ_1·…·σ_d, and the d − 1 largest singular values have squares summing to at most
‖J‖_F², so by the inequality of the means their product is at most (‖J‖_F²/(d − 1))^((d−1)/2):
σ_min ≥ |det J|·((d − 1)/‖J‖_F²)^((d−1)/2), and σ_max ≤ ‖J‖_F. Where that lower bound exceeds
d·eps·‖J‖_F, J is not singular to working precision. The determinant comes from the float64 LU
factors L̂Û of J (partial pivoting: |L̂_ij| ≤ 1, so ‖L̂‖_F ≤ sqrt(d(d+1)/2)), which are the exact
factors of a K within E = γ_d·‖|L̂||Û|‖_F ≤ γ_d·‖L̂‖_F·‖Û‖_F of J (Higham, Accuracy and
Stability of Numerical Algorithms, Theorem 9.3; γ_d = d·u/(1 − d·u), u = 2⁻⁵³; ‖Û‖_F at most
the norm of the factors as LAPACK packs them, L̂ below the diagonal and Û on and above; taken
LU_ROUNDING times over for blocked and recursive factorizations). So the bound is taken for K,
with ‖K‖_F ≤ ‖J‖_F + E, and E is subtracted from it: σ_min(J) ≥ σ_min(K) − E. log|det K| is
the sum of the logs of Û's diagonal, whose own rounding is allowed for too. The test is loose
(a random Gaussian J rarely passes it, nor a J with one singular value far above the others)
but exact where it passes, and it clears most blocks of a flow, near the identity, without
forming JᵀJ: 3406 of the bench's 4096 planar-flow blocks of 16×16, whose JᵀJ and Cholesky
factors cost 1.6 times their LU factors (5.2 against 3.2 ms, one thread); the other 690 take
the Cholesky screen.

# NOTE [cond J when it is read]
cond J itself needs the SVD of every block, so it is computed when it is first read
(`Determinant.condition`): by the JSON document, files and a table that shows a singular J,
not by a table of a regular one, which never shows it. The numbers are the same either way.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

from jaccli.engine.batched import batch_axes
from jaccli.engine.problem import Problem
from jaccli.errors import UsageError, needs_one_output
from jaccli.result import Determinant


def _single_output(problem: Problem) -> tuple[str, tuple[int, ...]]:
    if len(problem.output_shapes) != 1:
        raise needs_one_output(
            "det J", problem.function.name, list(problem.output_shapes), code="not_square"
        )
    ((name, shape),) = problem.output_shapes.items()
    return name, tuple(shape)


def require_square(problem: Problem, batched: bool) -> int:
    """Refuse before computing a J that is not square (per sample with `batched`); the size d
    of the square."""
    output, y_shape = _single_output(problem)
    joint = " + ".join(f"{w} ({problem.inputs[w].numel()})" for w in problem.wrt)
    if not batched:
        if problem.output_count != problem.input_count:
            choices = " or ".join(
                " ".join(f"--wrt {name}" for name in names) for names in square_choices(problem)
            )
            raise UsageError(
                f"J is not square: {output} has {problem.output_count} elements and "
                f"{joint if len(problem.wrt) > 1 else problem.wrt[0]} has {problem.input_count} "
                f"(J is {problem.output_count}×{problem.input_count}); det needs y.numel() == "
                "x.numel()" + (f"; {choices} gives a square J" if choices else ""),
                code="not_square",
            )
        return problem.input_count
    axes = batch_axes(problem)
    y_sample = math.prod(y_shape) // y_shape[next(iter(axes.values()))[1]]
    x_sample = sum(
        problem.inputs[wrt].numel() // problem.inputs[wrt].shape[input_axis]
        for wrt, (input_axis, _) in axes.items()
    )
    if y_sample != x_sample:
        raise UsageError(
            f"the diagonal blocks are not square: a sample of {output} has {y_sample} elements "
            f"and a sample of {', '.join(problem.wrt)} has {x_sample}",
            code="not_square",
        )
    return y_sample


MAX_HINT_INPUTS = 12
"""Inputs past this many are not searched for a square joint J (2^12 subsets at most)."""


def square_choices(problem: Problem, most: int = 3) -> list[tuple[str, ...]]:
    """The smallest sets of differentiable inputs whose joint J is square (up to `most`)."""
    sizes = {
        name: problem.inputs[name].numel()
        for name in problem.function.differentiable_names[:MAX_HINT_INPUTS]
        if name in problem.inputs and problem.inputs[name].is_floating_point()
    }
    for count in range(1, len(sizes) + 1):
        found = [
            names
            for names in itertools.combinations(sizes, count)
            if sum(sizes[n] for n in names) == problem.output_count
        ]
        if found:
            return found[:most]
    return []


def determinant(
    matrices: torch.Tensor, wrt: tuple[str, ...], working: torch.dtype = torch.float64
) -> Determinant:
    """sign, log|det|, det and trace of a square matrix (or a batch of them, (B, d, d)), whether
    it is singular to the precision of `working` (NOTE [a singular J]), and its condition number
    when first read (NOTE [cond J when it is read])."""
    # a copy of its own: cond J may be read after the caller's J has changed hands
    square = matrices.detach().to(torch.float64, memory_format=torch.contiguous_format, copy=True)
    factors = None
    if square.ndim == 2:  # one J: torch's one call costs less than the ops on its factors
        sign, logabsdet = torch.linalg.slogdet(square)
    else:  # blocks: their LU factors also clear most of them (NOTE [a J cleared by its volume])
        factors, pivots, _ = torch.linalg.lu_factor_ex(square)
        sign, logabsdet = _slogdet_of(factors, pivots)
    # slogdet gives sign 0 for a J with NaN in it, as for a singular one: the sign is unknown
    sign = torch.where(logabsdet.isnan(), torch.nan, sign)
    with np.errstate(over="ignore", under="ignore"):
        det = sign.numpy() * np.exp(logabsdet.numpy())
    size, eps = square.shape[-1], torch.finfo(working).eps
    conditioning: np.ndarray | Callable[[], np.ndarray]
    if square.ndim == 2 and size <= EAGER_SVD_SIZE:  # one small J: its SVD costs less
        matrix = square.numpy()
        finite = np.asarray(np.isfinite(matrix).all())
        values = _singular_values(np.where(finite, matrix, 0.0))
        conditioning = _condition_of(values, finite)
        singular = np.asarray(finite & (values[-1] <= size * eps * values[0]))
    else:
        gram = square.mT @ square if factors is None else None
        squared_norm = (  # ‖J‖_F²
            torch.linalg.vector_norm(square, dim=(-2, -1)).square()  # a reduction, no copy
            if gram is None
            else gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        )
        finite_blocks = squared_norm.isfinite()  # NaN or ±Infinity in J reach it, or overflow
        if not bool(finite_blocks.all()):
            unsure = ~finite_blocks
            finite_blocks[unsure] = square[unsure].isfinite().flatten(-2).all(-1)
        conditioning = functools.partial(condition_numbers, square.numpy(), finite_blocks.numpy())
        if gram is not None:
            singular = _singular(square, gram, squared_norm, finite_blocks, eps)
        else:
            singular = np.zeros(finite_blocks.shape, dtype=bool)
            rest = finite_blocks & ~cleared_by_volume(factors, logabsdet, squared_norm, eps)
            if bool(rest.any()):
                doubtful = square[rest]
                singular[rest.numpy()] = _singular(
                    doubtful,
                    doubtful.mT @ doubtful,
                    squared_norm[rest],
                    torch.ones(len(doubtful), dtype=torch.bool),
                    eps,
                )
    return Determinant(
        wrt=wrt,
        size=size,
        sign=sign.numpy(),
        logabsdet=logabsdet.numpy(),
        det=np.asarray(det),
        trace=square.diagonal(dim1=-2, dim2=-1).sum(-1).numpy(),
        conditioning=conditioning,
        singular=singular,
    )


def _slogdet_of(factors: torch.Tensor, pivots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sign and log|det| from LU factors (`torch.linalg.lu_factor_ex`), as slogdet takes them:
    the product of Û's diagonal, negated for each row swap (sign 0 and log 0 = −Infinity for
    a zero pivot)."""
    diagonal = factors.diagonal(dim1=-2, dim2=-1)
    rows = torch.arange(1, factors.shape[-1] + 1, dtype=pivots.dtype)
    swaps = (pivots != rows).sum(-1)
    sign = diagonal.sign().prod(-1) * (1 - 2 * (swaps % 2)).to(factors.dtype)
    return sign, diagonal.abs().log().sum(-1)


LU_ROUNDING = 16
"""The multiple of Higham's bound γ_d·|L̂||Û| on the LU factors' backward error taken (NOTE
[a J cleared by its volume]): room for blocked and recursive factorizations, costing nothing
where J is far from the bound (it is compared with float32's eps, and float64's makes E)."""


def cleared_by_volume(
    factors: torch.Tensor, logabsdet: torch.Tensor, squared_norm: torch.Tensor, eps: float
) -> torch.Tensor:
    """Which matrices the bound σ_min ≥ |det J|·((d − 1)/‖J‖_F²)^((d−1)/2) shows are not
    singular to the precision `eps` (NOTE [a J cleared by its volume]), from their float64 LU
    factors, log|det| read off them, and ‖J‖_F²; False wherever it cannot tell (NaN
    included)."""
    size = factors.shape[-1]
    unit = torch.finfo(torch.float64).eps / 2
    gamma = size * unit / (1 - size * unit)
    rounding = 1 + 4 * size * size * unit  # of a sum of d² squares, of a norm
    upper_norm = squared_norm.sqrt() * rounding  # ≥ ‖J‖_F ≥ σ_max
    u_norm = torch.linalg.vector_norm(factors, dim=(-2, -1)) * rounding  # L̂, Û packed: ≥ ‖Û‖_F
    error = LU_ROUNDING * gamma * math.sqrt(size * (size + 1) / 2) * rounding * u_norm
    logs = factors.diagonal(dim1=-2, dim2=-1).abs().log()
    # each log within an ulp, their sum within d ulps of its terms
    log_rounding = 4 * (size + 1) * unit * logs.abs().sum(-1) + 1e-12
    log_lower = logabsdet - log_rounding
    if size > 1:
        log_lower = log_lower + (size - 1) / 2 * (
            math.log(size - 1) - 2 * torch.log((upper_norm + error) * rounding)
        )
    lower = torch.exp(log_lower) * (1 - 1e-9) - error
    return lower > size * eps * upper_norm * (1 + 1e-9)


EAGER_SVD_SIZE = 16
"""Up to this d, a single J's SVD costs less than the Cholesky that would spare it (3×3: 40 µs
against 80 µs, measured), and gives cond J at once."""


SCREEN_ROUNDING = 2
"""The rounding of JᵀJ and of its Cholesky factorization, in (d + 2)² float64 eps of ‖J‖_F²,
twice over (NOTE [a singular J])."""


def _singular(
    square: torch.Tensor,
    gram: torch.Tensor,
    squared_norm: torch.Tensor,
    finite: torch.Tensor,
    eps: float,
) -> np.ndarray:
    """Whether σ_min ≤ d·eps·σ_max for each finite matrix J of `square` (float64), given JᵀJ
    (`gram`, shifted here in place) and ‖J‖_F²: cleared by a Cholesky factorization of the
    shifted JᵀJ, decided by a float64 SVD where that fails (NOTE [a singular J])."""
    size = square.shape[-1]
    shift = (size * eps) ** 2 + SCREEN_ROUNDING * (size + 2) ** 2 * torch.finfo(torch.float64).eps
    gram.diagonal(dim1=-2, dim2=-1).sub_(shift * squared_norm.unsqueeze(-1))
    _, failed = torch.linalg.cholesky_ex(gram)  # a J with NaN or ±Infinity fails: not finite
    doubtful = (failed != 0) & finite
    singular = np.zeros(finite.shape, dtype=bool)
    if bool(doubtful.any()):
        values = _singular_values(square[doubtful].numpy())
        singular[doubtful.numpy()] = values[..., -1] <= size * eps * values[..., 0]
    return singular


def condition_numbers(square: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """cond J = σ_max/σ_min of each matrix of `square` (Infinity for σ_min = 0, NaN where
    `finite` says J is not), by a float64 SVD.

    NumPy's SVD rather than torch's: right after torch's own parallel work, on a busy machine,
    torch's took 10 to 30 ms for a 64×64 J that it factors in 0.2 ms alone (measured)."""
    return _condition_of(_singular_values(np.where(finite[..., None, None], square, 0.0)), finite)


def _condition_of(singular_values: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """σ_max/σ_min from each matrix's singular values, largest first (see condition_numbers)."""
    largest, smallest = singular_values[..., 0], singular_values[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        condition = np.where(largest > 0, largest / smallest, np.inf)
    return np.asarray(np.where(finite, condition, np.nan))


THREADED_BLOCKS = 256
"""A batch of at least this many blocks has its SVDs split between torch's threads."""


def _singular_values(square: np.ndarray) -> np.ndarray:
    """The singular values of each matrix of `square`, largest first (NumPy's float64 SVD).

    A batch of small blocks (`det --batched`: 4096 SVDs of 16×16, 100 ms where the Jacobian
    and slogdet take 15) is split between torch's intra-op threads: NumPy releases the GIL
    in LAPACK, and each block's SVD is the same whichever thread computes it."""
    threads = torch.get_num_threads()
    if square.ndim < 3 or square.shape[0] < THREADED_BLOCKS or threads < 2:
        return np.linalg.svd(square, compute_uv=False)
    from concurrent.futures import ThreadPoolExecutor

    parts = np.array_split(square, threads)
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda part: np.linalg.svd(part, compute_uv=False), parts))
    return np.concatenate(found)


def joint_matrix(jacobians: dict[str, np.ndarray], n_out: int) -> torch.Tensor:
    """[J_a | J_b | …] as an n_out × n_in matrix, columns in `wrt` order (J itself, not a
    copy, for a single input)."""
    if len(jacobians) == 1:
        (j,) = jacobians.values()
        return torch.from_numpy(j).reshape(n_out, -1)
    return torch.cat([torch.from_numpy(j).reshape(n_out, -1) for j in jacobians.values()], dim=1)


def joint_blocks(blocks: dict[str, np.ndarray], sample_out: int) -> torch.Tensor:
    """Per-sample blocks (B,) + y_sample + x_sample of each input, `sample_out` elements in
    y_sample, as (B, d, d) matrices [J_a | J_b | …] (a view of the blocks, where strides allow,
    for a single input: `determinant` makes the one copy it needs)."""
    matrices = [torch.from_numpy(b).reshape(b.shape[0], sample_out, -1) for b in blocks.values()]
    return matrices[0] if len(matrices) == 1 else torch.cat(matrices, dim=2)


def determinant_notes(det: Determinant, dtype: str) -> tuple[str, ...]:
    """Warnings for a J singular to working precision (NOTE [a singular J]), and for a det past
    float64's range, where log|det J| still holds it exactly."""
    finite = np.isfinite(det.logabsdet)
    overflow = finite & ~np.isfinite(det.det)
    underflow = finite & (det.det == 0)
    notes = list(_singular_notes(det, dtype))
    for mask, what in ((overflow, "overflows"), (underflow, "underflows")):
        if mask.any():
            where = "" if det.det.ndim == 0 else f" for {int(mask.sum())} samples"
            notes.append(
                f"det J {what} float64{where} (log|det J| = "
                f"{float(det.logabsdet[mask].flat[0]):.6g}); logabsdet and sign hold it exactly"
            )
    return tuple(notes)


SAMPLES_LISTED = 4
"""Samples named in one warning before `…`."""


def _singular_notes(det: Determinant, dtype: str) -> tuple[str, ...]:
    """A warning when J (or some of its diagonal blocks) is singular to working precision."""
    if not det.singular.any():
        return ()
    bound = f"1/(d·eps) = {1 / (det.size * float(np.finfo(dtype).eps)):.3g} in {dtype}"
    if det.singular.ndim == 0:
        value = "" if det.det == 0 else f"; det J = {float(det.det):.3g} is"
        return (
            f"J is singular to working precision (cond J = {float(det.condition):.3g} ≥ "
            f"{bound}){value or ': det J is'} within rounding of 0 (a change of J's entries "
            "within rounding makes it 0), and J has no reliable inverse",
        )
    samples = np.flatnonzero(det.singular)
    listed = ", ".join(str(s) for s in samples[:SAMPLES_LISTED])
    more = ", …" if samples.size > SAMPLES_LISTED else ""
    blocks = "1 diagonal block is" if samples.size == 1 else f"{samples.size} diagonal blocks are"
    return (
        f"{blocks} singular to working precision, of {det.singular.size} (sample"
        f"{'' if samples.size == 1 else 's'} {listed}{more}; cond J ≥ {bound}): their det J "
        "is within rounding of 0, and they have no reliable inverse",
    )
