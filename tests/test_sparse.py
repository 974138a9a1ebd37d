"""Sparse J and H (engine/sparse): colourings, compressed passes against the dense J, the guard
against a pattern that misses a non-zero, det from a sparse LU, and the sparse result drawn,
written as JSON and as files, read back by scipy and torch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch
from conftest import validate_document
from rich.console import Console

from jaccli.engine import compute_jacobian, prepare
from jaccli.engine.hessian import gradient_problem, hessian_result
from jaccli.engine.reference import check_sparse_result
from jaccli.engine.sparse import colouring as colouring_module
from jaccli.engine.sparse.colouring import (
    colour_columns,
    colour_pattern,
    colour_rows,
    conflict_free,
)
from jaccli.engine.sparse.compressed import compute_sparse_hessian, compute_sparse_jacobian
from jaccli.engine.sparse.sparse_det import compute_sparse_det, sparse_determinant
from jaccli.engine.structure import picture_of, sparse_picture_of
from jaccli.errors import ComputationError, UsageError
from jaccli.functions.model import Function, InputSpec
from jaccli.render.document import sparse_hessian_document, sparse_jacobian_document
from jaccli.render.sparse import sparse_hessian_renderable, sparse_jacobian_renderable
from jaccli.render.sparse_files import require_sparse_suffix, write_sparse_out
from jaccli.render.tables import Layout

RTOL = 1e-12


def band(n: int, half_width: int) -> sp.csr_array:
    offsets = range(-half_width, half_width + 1)
    diagonals = [np.ones(n - abs(k)) for k in offsets]
    return sp.csr_array(sp.diags_array(diagonals, offsets=list(offsets), shape=(n, n)) != 0)


def stencil_2d(rows: int, columns: int) -> sp.csr_array:
    """The 5-point stencil on a rows × columns grid flattened row by row."""
    index = np.arange(rows * columns).reshape(rows, columns)
    pairs = [(index, index)]
    pairs += [(index[1:], index[:-1]), (index[:-1], index[1:])]
    pairs += [(index[:, 1:], index[:, :-1]), (index[:, :-1], index[:, 1:])]
    i = np.concatenate([a.ravel() for a, _ in pairs])
    j = np.concatenate([b.ravel() for _, b in pairs])
    n = rows * columns
    return sp.csr_array((np.ones(i.size, dtype=bool), (i, j)), shape=(n, n))


def pattern_of(dense: np.ndarray) -> sp.csr_array:
    """The exact pattern of a dense J, as a matrix: rows = outputs, columns = inputs."""
    matrix = dense.reshape(dense.shape[0], -1) if dense.ndim > 2 else dense
    return sp.csr_array(matrix != 0)


def problem_of(name: str, call, shapes: dict[str, tuple[int, ...]], **options):
    inputs = tuple(InputSpec(n, s) for n, s in shapes.items())
    function = Function(name, name, inputs, call, **options)
    return prepare(function, dtype="float64", seed=3)


def dense_joint(problem) -> np.ndarray:
    """The dense J of the problem (AD, verified by its own guard) as one matrix."""
    result = compute_jacobian(problem)
    blocks = [
        np.concatenate(
            [
                by_wrt[w].reshape(by_wrt[w].size // problem.inputs[w].numel(), -1)
                for w in problem.wrt
            ],
            axis=1,
        )
        for by_wrt in result.jacobians.values()
    ]
    return np.concatenate(blocks, axis=0)


# Colourings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("half_width", [1, 2, 3, 5])
def test_a_band_gets_the_optimal_2b_plus_1_colours(half_width: int) -> None:
    pattern = band(300, half_width)
    for found in (colour_columns(pattern), colour_rows(pattern)):
        assert found.count == 2 * half_width + 1
    assert conflict_free(pattern, colour_columns(pattern).colours)


@pytest.mark.parametrize("rows,columns", [(10, 10), (30, 30), (31, 29), (33, 33), (7, 120)])
def test_a_2d_five_point_stencil_gets_at_most_6_colours(rows: int, columns: int) -> None:
    # 33 and 30 columns: widths divisible by 3, where no greedy order tried gets below 7
    pattern = stencil_2d(rows, columns)
    found = colour_columns(pattern)
    assert found.count <= 6, found
    assert conflict_free(pattern, found.colours)
    assert conflict_free(sp.csr_array(pattern.T), colour_rows(pattern).colours)


def test_random_patterns_are_coloured_validly_in_both_modes() -> None:
    generator = np.random.default_rng(0)
    for trial in range(20):
        m, n = generator.integers(1, 60, size=2)
        pattern = sp.csr_array(sp.random_array((m, n), density=0.1, rng=trial) != 0)
        columns, rows = colour_columns(pattern), colour_rows(pattern)
        assert conflict_free(pattern, columns.colours)
        assert conflict_free(sp.csr_array(pattern.T), rows.colours)


def test_the_mode_with_fewer_colours_is_chosen() -> None:
    # a dense first row: every column shares it (n colours), the rows need only 2
    n = 40
    pattern = sp.csr_array(
        sp.eye_array(n, dtype=bool)
        + sp.csr_array(
            (np.ones(n, dtype=bool), (np.zeros(n, dtype=int), np.arange(n))), shape=(n, n)
        )
    )
    chosen = colour_pattern(pattern)
    assert chosen.colouring.mode == "rev"
    assert chosen.colouring.count == 2
    assert chosen.other_count == n
    assert colour_pattern(band(50, 1)).colouring.mode == "fwd"  # a tie: forward mode


def test_a_colouring_too_costly_to_search_gives_one_colour_per_column(monkeypatch) -> None:
    monkeypatch.setattr(colouring_module, "GREEDY_WORK", 10)
    found = colour_columns(band(30, 1))
    assert found.count == 30 and found.method == "one each"
    assert conflict_free(band(30, 1), found.colours)


# Compressed J against the dense J -----------------------------------------------------------


def burgers(u: torch.Tensor) -> torch.Tensor:
    dx = 0.1
    return u[1:-1] * (u[2:] - u[:-2]) / (2 * dx) - (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2


def reaction_diffusion(u: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad(u, (1, 1, 1, 1))
    laplacian = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * u
    return laplacian + u * (1 - u**2)


def two_inputs_two_outputs(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"p": a.sin() * b, "q": (a[1:] - a[:-1]).exp().reshape(-1)}


def per_sample(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ w)  # rows of x are samples: J (by x) is block-diagonal


def banded_matmul(x: torch.Tensor) -> torch.Tensor:
    matrix = torch.diag(torch.arange(1.0, 21.0, dtype=x.dtype)) + torch.diag(
        torch.ones(19, dtype=x.dtype), 1
    )
    return (matrix @ x).cos()


def periodic(x: torch.Tensor) -> torch.Tensor:
    return x * torch.roll(x, 1) - torch.roll(x, -2)


class _Product(torch.autograd.Function):
    """x[:-1]·x[1:] with a backward of its own and no forward-mode rule: torch.func cannot run
    it, nor can a forward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x[:-1] * x[1:]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        out = torch.zeros_like(x)
        out[:-1] += grad * x[1:]
        out[1:] += grad * x[:-1]
        return out


def custom_backward(x: torch.Tensor) -> torch.Tensor:
    return _Product.apply(x)


CASES = {
    "burgers": (burgers, {"u": (40,)}),
    "reaction-diffusion": (reaction_diffusion, {"u": (6, 7)}),
    "two inputs, two outputs": (two_inputs_two_outputs, {"a": (8,), "b": (8,)}),
    "per-sample": (per_sample, {"x": (5, 3), "w": (3, 3)}),
    "banded matmul": (banded_matmul, {"x": (20,)}),
    "periodic roll": (periodic, {"x": (15,)}),
    "custom backward": (custom_backward, {"x": (12,)}),
}


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
@pytest.mark.parametrize("case", list(CASES))
def test_sparse_j_equals_the_dense_j(case: str, mode: str) -> None:
    if case == "custom backward" and mode == "fwd":
        pytest.skip("forward mode cannot run it: see the next test")
    call, shapes = CASES[case]
    problem = problem_of(case.replace(" ", "_"), call, shapes)
    dense = dense_joint(problem)
    result = compute_sparse_jacobian(problem, pattern_of(dense), mode=mode)
    assert result.guard is not None and result.guard.passed
    np.testing.assert_allclose(result.matrix.toarray(), dense, rtol=RTOL, atol=0)
    assert result.matrix.nnz == np.count_nonzero(dense)
    if case == "custom backward":  # neither vmap nor forward mode: a loop of VJPs
        assert result.strategy == "sparse-rev-loop"
    elif mode != "auto":
        assert result.mode == mode


def test_an_explicit_mode_that_cannot_run_is_refused_naming_why() -> None:
    problem = problem_of("custom", custom_backward, {"x": (12,)})
    with pytest.raises(ComputationError, match="cannot compute the sparse J of custom"):
        compute_sparse_jacobian(problem, pattern_of(dense_joint(problem)), mode="fwd")


def test_a_superset_pattern_gives_the_same_j_with_zeros_stored() -> None:
    problem = problem_of("burgers", burgers, {"u": (30,)})
    dense = dense_joint(problem)
    wider = pattern_of(dense) + sp.csr_array(band(30, 3)[1:-1])
    result = compute_sparse_jacobian(problem, wider)
    np.testing.assert_allclose(result.matrix.toarray(), dense, rtol=RTOL, atol=0)
    assert result.matrix.nnz > np.count_nonzero(dense)


def test_a_pattern_of_the_wrong_shape_is_refused() -> None:
    problem = problem_of("burgers", burgers, {"u": (30,)})
    with pytest.raises(UsageError, match=r"the sparsity pattern is 30×30; J of burgers is 28×30"):
        compute_sparse_jacobian(problem, band(30, 1))


# The guard: a pattern that misses a non-zero is never printed --------------------------------


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("dropped", [(5, 6), (0, 0), (27, 29)])
def test_a_pattern_missing_one_non_zero_is_refused(mode: str, dropped: tuple[int, int]) -> None:
    problem = problem_of("burgers", burgers, {"u": (30,)})
    pattern = pattern_of(dense_joint(problem)).tolil()
    pattern[dropped] = False
    with pytest.raises(ComputationError) as refused:
        compute_sparse_jacobian(problem, sp.csr_array(pattern), mode=mode)
    assert refused.value.code in ("pattern_misses", "guard_failed")
    assert "not printed" in refused.value.message or "may miss a non-zero" in refused.value.message


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_a_missing_non_zero_folded_into_its_neighbour_fails_the_guard(mode: str) -> None:
    # the pattern says diagonal, so every column (row) shares one colour: J[0, 1] is added to
    # J[0, 0] (J[1, 1]) and no compressed number is left over; only the guard can see it
    def almost_diagonal(x: torch.Tensor) -> torch.Tensor:
        y = 2 * x.sin()
        return torch.cat([y[:1] + x[1:2] ** 2, y[1:]])

    problem = problem_of("almost_diagonal", almost_diagonal, {"x": (50,)})
    diagonal = sp.csr_array(sp.eye_array(50, dtype=bool))
    with pytest.raises(ComputationError, match="failed the correctness guard") as refused:
        compute_sparse_jacobian(problem, diagonal, mode=mode)
    assert refused.value.code == "guard_failed"


def test_a_user_function_hiding_part_of_j_is_refused_by_its_own_differences() -> None:
    honest = problem_of("honest", lambda x: x * x, {"x": (20,)}, may_break_graph=True)
    lying = problem_of("lying", lambda x: x * x.detach(), {"x": (20,)}, may_break_graph=True)
    diagonal = sp.csr_array(sp.eye_array(20, dtype=bool))
    checked = check_sparse_result(honest, compute_sparse_jacobian(honest, diagonal))
    assert checked.guard.function_reference.passed
    with pytest.raises(ComputationError, match="detach"):
        check_sparse_result(lying, compute_sparse_jacobian(lying, diagonal))


# Hessians -----------------------------------------------------------------------------------


def chained_rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def test_a_sparse_hessian_equals_the_dense_one_in_at_most_5_products() -> None:
    problem = problem_of("rosenbrock", chained_rosenbrock, {"x": (60,)})
    dense = hessian_result(problem, compute_jacobian(gradient_problem(problem)))
    h = dense.hessians["y"]["x"]["x"]
    result = compute_sparse_hessian(problem, band(60, 1))
    assert result.colours <= 5
    assert result.guard is not None and result.guard.passed
    np.testing.assert_allclose(result.matrix.toarray(), h, rtol=RTOL, atol=0)
    assert result.symmetry_error == 0.0


def test_a_hessian_pattern_missing_an_entry_is_refused() -> None:
    problem = problem_of("rosenbrock", chained_rosenbrock, {"x": (30,)})
    with pytest.raises(ComputationError, match=r"misses a non-zero of H|failed the correctness"):
        compute_sparse_hessian(problem, sp.csr_array(sp.eye_array(30, dtype=bool)))


def test_a_sparse_hessian_needs_a_scalar_output() -> None:
    problem = problem_of("burgers", burgers, {"u": (10,)})
    with pytest.raises(UsageError, match="needs a scalar output"):
        compute_sparse_hessian(problem, band(10, 1))


# det from a sparse LU -----------------------------------------------------------------------


def mixing(u: torch.Tensor) -> torch.Tensor:
    return u + 0.3 * torch.roll(u, 1).sin() - 0.2 * torch.roll(u, -3) ** 2


def test_sparse_det_equals_the_dense_slogdet() -> None:
    problem = problem_of("mixing", mixing, {"u": (40,)})
    dense = dense_joint(problem)
    result = compute_sparse_det(problem, pattern_of(dense))
    sign, logabsdet = np.linalg.slogdet(dense)
    det = result.determinant
    assert det is not None and float(det.sign) == sign
    assert float(det.logabsdet) == pytest.approx(logabsdet, rel=1e-12)
    assert float(det.trace) == pytest.approx(np.trace(dense), rel=1e-12)
    assert not det.singular


def test_the_sign_follows_the_lu_permutations() -> None:
    generator = np.random.default_rng(5)
    for n in (1, 2, 7, 50):
        for trial in range(4):
            matrix = sp.random_array((n, n), density=0.3, rng=trial) + sp.eye_array(n) * (
                generator.normal()
            )
            sign, logabsdet = np.linalg.slogdet(matrix.toarray())
            found = sparse_determinant(sp.csr_array(matrix), ("x",), 2.2e-16)
            assert float(found.sign) == sign
            if sign != 0:
                assert float(found.logabsdet) == pytest.approx(logabsdet, rel=1e-10)


def test_a_singular_sparse_j_is_said_singular() -> None:
    problem = problem_of(
        "pairs", lambda u: torch.cat([u[:2].sum().reshape(1) * u[:2], u[2:]]), {"u": (6,)}
    )
    dense = dense_joint(problem)
    exact = sparse_determinant(sp.csr_array(np.array([[1.0, 2.0], [2.0, 4.0]])), ("x",), 2e-16)
    assert float(exact.det) == 0 and float(exact.logabsdet) == -np.inf and exact.singular
    result = compute_sparse_det(problem, pattern_of(dense) + sp.eye_array(6, dtype=bool))
    assert result.determinant is not None
    assert bool(result.determinant.singular) == (abs(np.linalg.det(dense)) < 1e-12)


def test_sparse_det_needs_a_square_j() -> None:
    problem = problem_of("burgers", burgers, {"u": (10,)})
    with pytest.raises(UsageError, match="not square"):
        compute_sparse_det(problem, sp.csr_array(band(10, 1)[1:-1]))


# Drawn, written, read back ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_block_result():
    problem = problem_of("two", two_inputs_two_outputs, {"a": (8,), "b": (8,)})
    dense = dense_joint(problem)
    return compute_sparse_jacobian(problem, pattern_of(dense)), dense


def _text(renderable, width: int = 100) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def test_the_table_lists_each_rows_non_zeros(two_block_result) -> None:
    result, dense = two_block_result
    text = _text(sparse_jacobian_renderable(result, Layout(max_rows=30)))
    assert "Sparse Jacobian ∂(p, q)/∂(a, b)  15×16" in text
    assert f"{np.count_nonzero(dense)} non-zeros" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("p[0]:"))
    assert row.split(":", 1)[1].split() == [
        "a[0]",
        f"{dense[0, 0]:.4f}",
        "b[0]",
        f"{dense[0, 8]:.4f}",
    ]
    assert "q[6]: a[6]" in text and "strategy sparse-" in text


def test_a_long_row_ends_with_how_many_more_and_rows_are_windowed() -> None:
    problem = problem_of("cumulative", lambda x: x.cumsum(0), {"x": (60,)})
    dense = dense_joint(problem)
    result = compute_sparse_jacobian(problem, pattern_of(dense))
    text = _text(sparse_jacobian_renderable(result, Layout(max_rows=6, width=60)), width=60)
    last = next(line for line in text.splitlines() if line.strip().startswith("y[59]:"))
    assert "more" in last and len(last) <= 60
    assert "⋮" in text and "shown: 5 of 60 rows" in text


def test_the_json_document_follows_the_schema_and_reads_back(two_block_result) -> None:
    result, dense = two_block_result
    document = json.loads(json.dumps(sparse_jacobian_document(result), allow_nan=False))
    validate_document(document)
    assert document["layout"] == "sparse"
    block = document["jacobian"]["q"]["a"]
    assert block["format"] == "coo" and block["shape"] == [7, 8]
    read = sp.coo_array((block["values"], tuple(block["indices"])), shape=tuple(block["shape"]))
    np.testing.assert_array_equal(read.toarray(), dense[8:, :8])
    assert document["colouring"]["colours"] == result.colours


def test_the_sparse_hessian_and_det_documents_follow_the_schema() -> None:
    problem = problem_of("rosenbrock", chained_rosenbrock, {"x": (12,)})
    hessian = compute_sparse_hessian(problem, band(12, 1))
    validate_document(json.loads(json.dumps(sparse_hessian_document(hessian))))
    assert "Sparse Hessian ∂²y/∂x²  12×12" in _text(sparse_hessian_renderable(hessian, Layout()))
    mixed = problem_of("mixing", mixing, {"u": (10,)})
    det = compute_sparse_det(mixed, pattern_of(dense_joint(mixed)))
    document = sparse_jacobian_document(det)
    validate_document(json.loads(json.dumps(document)))
    assert document["command"] == "det" and "log|det J|" in _text(
        sparse_jacobian_renderable(det, Layout())
    )


@pytest.mark.parametrize("suffix", [".npz", ".mtx", ".pt", ".safetensors"])
def test_files_read_back_with_scipy_and_torch(two_block_result, tmp_path: Path, suffix) -> None:
    result, dense = two_block_result
    path = tmp_path / f"j{suffix}"
    write_sparse_out(path, result)
    if suffix == ".npz":
        read = sp.load_npz(path).toarray()
    elif suffix == ".mtx":
        read = scipy.io.mmread(path).toarray()
    elif suffix == ".pt":
        tensor = torch.load(path)
        assert tensor.layout == torch.sparse_coo
        read = tensor.to_dense().numpy()
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as file:
            shape = json.loads(file.metadata()["shape"])
            indices, values = file.get_tensor("indices"), file.get_tensor("values")
        read = (
            torch.sparse_coo_tensor(indices, values, shape, check_invariants=True)
            .to_dense()
            .numpy()
        )
    np.testing.assert_array_equal(read, dense)
    with pytest.raises(ComputationError, match="appeared while computing"):
        write_sparse_out(path, result)  # an existing file is replaced only with force
    write_sparse_out(path, result, force=True)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_a_dense_file_kind_is_refused_for_a_sparse_j() -> None:
    with pytest.raises(UsageError, match=r"a sparse J is written as \.npz, \.mtx, \.pt"):
        require_sparse_suffix(Path("j.npy"))
    require_sparse_suffix(Path("j.png"), pictures=True)


@pytest.mark.parametrize("view", ["sparsity", "heatmap"])
@pytest.mark.parametrize("frame", [(40, 40), (3, 5)])
def test_the_picture_from_the_sparse_j_is_the_dense_j_s(two_block_result, view, frame) -> None:
    sparse_result, _ = two_block_result
    problem = problem_of("two", two_inputs_two_outputs, {"a": (8,), "b": (8,)})
    dense_picture = picture_of(compute_jacobian(problem), view, *frame)
    sparse = sparse_picture_of(sparse_result, view, *frame)
    np.testing.assert_array_equal(sparse.values, dense_picture.values)
    assert sparse.row_groups == dense_picture.row_groups
    assert sparse.column_groups == dense_picture.column_groups
    assert sparse.structure == dense_picture.structure
    assert sparse.title == dense_picture.title
