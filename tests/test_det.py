"""`jaccli det`: det J, sign, log|det J| and trace against closed forms and torch.func, per
sample with --batched, and the refusals of a J that is not square."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaccli.engine import prepare, run_det
from jaccli.functions import PRESETS
from jaccli.spec import parse_shape_option
from tests.conftest import jaccli_command, measure, values_of

MIB = 1024


def _det(name: str, *shapes: str, batched: bool = False, dtype: str = "float64", seed: int = 5):
    problem = prepare(
        PRESETS[name],
        shape_options=[parse_shape_option(s) for s in shapes],
        dtype=dtype,
        seed=seed,
    )
    result = run_det(problem, batched=batched)
    assert result.determinant is not None
    return {k: t.numpy().astype(np.float64) for k, t in problem.inputs.items()}, result


@pytest.mark.parametrize(
    ("name", "closed_form"),
    [
        ("polar", lambda x: x[..., 0]),
        ("spherical", lambda x: x[..., 0] ** 2 * np.sin(x[..., 1])),
        ("cylindrical", lambda x: x[..., 0]),
    ],
)
def test_coordinate_changes_have_their_textbook_determinants(name, closed_form) -> None:
    for seed in range(4):
        inputs, result = _det(name, seed=seed)
        det = result.determinant
        expected = closed_form(inputs["x"])
        np.testing.assert_allclose(det.det, expected, rtol=1e-12)
        assert det.sign == np.sign(expected)
        np.testing.assert_allclose(det.logabsdet, np.log(np.abs(expected)), rtol=1e-12)


def test_affine_det_is_det_a_and_its_trace_is_trace_a() -> None:
    inputs, result = _det("affine", "x=5")
    det = result.determinant
    np.testing.assert_allclose(det.det, np.linalg.det(inputs["A"]), rtol=1e-12)
    np.testing.assert_allclose(det.trace, np.trace(inputs["A"]), rtol=1e-12)
    assert det.size == 5 and det.wrt == ("x",)


def test_planar_flow_per_sample_matches_its_formula_and_dense_slogdet() -> None:
    inputs, result = _det("planar_flow", "x=64x4", batched=True)
    x, u, w, b = inputs["x"], inputs["u"], inputs["w"], inputs["b"]
    expected = 1 + (1 - np.tanh(x @ w + b) ** 2) * (u @ w)
    det = result.determinant
    assert det.det.shape == (64,)
    np.testing.assert_allclose(det.det, expected, rtol=1e-12)
    # log|det| near 0 carries det's relative error as an absolute one
    np.testing.assert_allclose(det.logabsdet, np.log(np.abs(expected)), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(det.sign, np.sign(expected))
    # the same blocks cut from the dense J, and slogdet of each
    _, dense = _det("planar_flow", "x=64x4")
    j = dense.jacobians["y"]["x"]
    blocks = np.stack([j[i, :, i, :] for i in range(64)])
    sign, logabsdet = np.linalg.slogdet(blocks)
    np.testing.assert_allclose(det.logabsdet, logabsdet, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(det.sign, sign)


def test_det_agrees_with_torch_func_jacfwd_and_slogdet() -> None:
    inputs, result = _det("planar_flow", "x=2x3")
    x = torch.from_numpy(inputs["x"])
    others = {k: torch.from_numpy(v) for k, v in inputs.items() if k != "x"}
    j = torch.func.jacfwd(lambda t: PRESETS["planar_flow"].call(x=t, **others))(x)
    sign, logabsdet = torch.linalg.slogdet(j.reshape(6, 6))
    assert result.determinant.sign == sign.item()
    np.testing.assert_allclose(result.determinant.logabsdet, logabsdet.item(), rtol=1e-12)
    np.testing.assert_allclose(result.determinant.trace, torch.trace(j.reshape(6, 6)), rtol=1e-12)


def test_a_det_past_float64_keeps_an_exact_log_and_says_so(jaccli) -> None:
    inputs, result = _det("affine", "x=512", dtype="float32")
    a = inputs["A"]  # float32 values, exactly as J holds them
    sign, logabsdet = np.linalg.slogdet(a)
    det = result.determinant
    assert det.det == np.inf  # |det A| ≈ e^1338 overflows float64, let alone float32
    assert det.sign == sign
    np.testing.assert_allclose(det.logabsdet, logabsdet, rtol=1e-12)
    run = jaccli("det", "--fn", "affine", "--shape", "512")
    assert run.exit_code == 0, run.stderr
    assert (
        "det: warning: det J overflows float64 (log|det J| = 1338.36); logabsdet and sign "
        "hold it exactly" in run.stderr
    )
    assert "inf" in run.stdout


def test_json_spells_an_overflowed_det_as_infinity() -> None:
    from jaccli.render.document import determinant_entry

    _, result = _det("affine", "x=512", dtype="float32")
    entry = determinant_entry(result.determinant)
    assert entry["det"] == {"shape": [], "values": "Infinity"}
    assert entry["logabsdet"]["values"] == pytest.approx(float(result.determinant.logabsdet))


def test_a_joint_jacobian_of_two_inputs_is_square_where_each_alone_is_not(jaccli) -> None:
    run = jaccli("det", "--expr", "outer(x, y) + diag(y)", "--shape", "x=2", "--shape", "y=2",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x, y = (values_of(document["inputs"][name]) for name in "xy")
    # f_ij = x_i y_j + δ_ij y_j: ∂f_ij/∂x_k = δ_ik y_j, ∂f_ij/∂y_l = (x_i + δ_ij) δ_jl
    joint = np.concatenate(
        [np.einsum("ik,j->ijk", np.eye(2), y).reshape(4, 2),
         np.einsum("ij,jl->ijl", x[:, None] + np.eye(2), np.eye(2)).reshape(4, 2)], axis=1
    )  # fmt: skip
    assert abs(np.linalg.det(joint)) > 1e-3
    assert document["det"]["wrt"] == ["x", "y"]
    assert document["det"]["size"] == 4
    assert document["det"]["det"]["values"] == pytest.approx(np.linalg.det(joint), rel=1e-12)
    assert document["det"]["trace"]["values"] == pytest.approx(np.trace(joint), rel=1e-12)
    alone = jaccli("det", "--expr", "outer(x, y)", "--shape", "x=2", "--shape", "y=2", "--wrt", "x")
    assert alone.exit_code == 2 and "; --wrt x --wrt y gives a square J" in alone.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fn", "expsum"], "J is not square: y has 2 elements and x has 6 (J is 2×6)"),
        # no set of inputs has 4 elements (a 6, b 6): no hint, rather than a wrong one
        (["--fn", "matmul", "--wrt", "a"], "(J is 4×6); det needs y.numel() == x.numel()\n"),
        (["--fn", "matmul", "--shape", "a=2x2", "--shape", "b=2x2"],
         "(J is 4×8); det needs y.numel() == x.numel(); --wrt a or --wrt b gives a square J"),
        (["--expr", "x * q[0]", "--shape", "x=2", "--shape", "q=3"],
         "(J is 2×5); det needs y.numel() == x.numel(); --wrt x gives a square J"),
        (["--expr", "x * q[0]", "--shape", "x=2", "--shape", "q=3", "--wrt", "q"],
         "(J is 2×3); det needs y.numel() == x.numel(); --wrt x gives a square J"),
        (["--fn", "expsum", "--shape", "2x3", "--batched"],
         "the diagonal blocks are not square: a sample of y has 1 elements and a sample of x "
         "has 3"),
        (["--fn", "tanh_linear"], "J is not square: y has 4 elements and x has 3"),
    ],
)  # fmt: skip
def test_a_jacobian_that_is_not_square_exits_2_naming_both_sizes(jaccli, args, message) -> None:
    run = jaccli("det", *args)
    assert run.exit_code == 2
    assert message in run.stderr
    assert run.stdout == ""


def test_det_writes_its_quantities_beside_j(jaccli, tmp_path) -> None:
    from safetensors.numpy import load_file

    path = tmp_path / "det.safetensors"
    run = jaccli("det", "--fn", "polar", "--shape", "3x2", "--batched", "--dtype", "float64",
                 "--out", str(path), "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    arrays = load_file(path)
    x = values_of(run.json()["inputs"]["x"])
    assert set(arrays) == {"x", "det.sign", "det.logabsdet", "det.det", "det.trace"}
    np.testing.assert_allclose(arrays["det.det"], x[:, 0], rtol=1e-12)
    refused = jaccli("det", "--fn", "polar", "--out", str(tmp_path / "det.npy"))
    assert refused.exit_code == 2 and "a .npy file holds one" in refused.stderr


def test_the_tables_show_det_sign_log_and_trace(jaccli) -> None:
    run = jaccli("det", "--fn", "polar", "--shape", "20x2", "--batched")
    assert run.exit_code == 0, run.stderr
    assert "Determinants of the 20 diagonal blocks of ∂y/∂x  each 2×2" in run.stdout
    for header in ("det J", "sign", "log|det J|", "trace J"):
        assert header in run.stdout
    assert "…" in run.stdout  # 20 rows are cut to 12 without --full


def test_per_sample_det_of_4096_flows_stays_near_b_d_squared(tmp_path) -> None:
    """4096 samples of a 16→16 map: the dense J would hold (4096·16)² numbers (32 GiB)."""
    run = measure([*jaccli_command(), "det", "--fn", "planar_flow", "--shape", "x=4096x16",
                   "--batched", "--dtype", "float64", "--max-memory", "1GiB"])  # fmt: skip
    assert run.returncode == 0, run.stderr
    small = measure([*jaccli_command(), "det", "--fn", "planar_flow", "--shape", "x=4x16",
                     "--batched", "--dtype", "float64"])  # fmt: skip
    blocks_kib = 4096 * 16 * 16 * 8 // 1024  # 8 MiB of float64 blocks
    assert run.peak_kib < small.peak_kib + 8 * blocks_kib, (run.peak_kib, small.peak_kib)


def _with_singular_values(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Matrices U diag(σ) Vᵀ with the given singular values (one row of `values` each)."""
    count, size = values.shape
    u = np.linalg.qr(rng.standard_normal((count, size, size)))[0]
    v = np.linalg.qr(rng.standard_normal((count, size, size)))[0]
    return (u * values[:, None, :]) @ v.transpose(0, 2, 1)


@pytest.mark.parametrize("size", [1, 2, 3, 16, 40])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_the_volume_bound_never_clears_a_j_singular_to_working_precision(size, scale) -> None:
    # NOTE [a J cleared by its volume]: a test that only ever clears J, whatever the SVD says
    from jaccli.engine.det import _slogdet_of, cleared_by_volume

    rng = np.random.default_rng(size)
    eps = float(torch.finfo(torch.float32).eps)
    count = 400
    # σ_min / σ_max from a thousandth to a thousand times the bound d·eps, and one σ large
    ratio = size * eps * 10.0 ** rng.uniform(-3, 3, count)
    values = np.ones((count, size))
    values[:, -1] = ratio if size > 1 else 1.0
    if size > 2:
        values[:, 0] = 10.0 ** rng.uniform(0, 2, count)
        values[:, -1] *= values[:, 0]
    matrices = torch.from_numpy(_with_singular_values(values, rng) * scale)
    factors, pivots, _ = torch.linalg.lu_factor_ex(matrices)
    _, logabsdet = _slogdet_of(factors, pivots)
    cleared = cleared_by_volume(factors, logabsdet, matrices.square().sum((-2, -1)), eps)
    sigma = np.linalg.svd(matrices.numpy(), compute_uv=False)
    singular = sigma[:, -1] <= size * eps * sigma[:, 0]
    assert not (cleared.numpy() & singular).any()
    if size <= 2 and scale == 1.0:  # the identity but for σ_min: cleared past the bound
        assert cleared.numpy()[ratio > 10 * size * eps].all()


def test_the_volume_bound_refuses_nan_and_a_zero_j() -> None:
    from jaccli.engine.det import _slogdet_of, cleared_by_volume

    matrices = torch.stack([torch.full((3, 3), torch.nan), torch.zeros(3, 3)]).double()
    factors, pivots, _ = torch.linalg.lu_factor_ex(matrices)
    sign, logabsdet = _slogdet_of(factors, pivots)
    assert sign[1] == 0 and logabsdet[1] == -np.inf
    squared_norm = matrices.square().sum((-2, -1))
    assert not cleared_by_volume(factors, logabsdet, squared_norm, 1e-7).any()


def test_log_det_from_the_lu_factors_is_slogdets() -> None:
    from jaccli.engine.det import _slogdet_of

    rng = np.random.default_rng(3)
    for size in (1, 2, 5, 16, 64):
        matrices = torch.from_numpy(rng.standard_normal((50, size, size)))
        sign, logabsdet = _slogdet_of(*torch.linalg.lu_factor_ex(matrices)[:2])
        expected_sign, expected = np.linalg.slogdet(matrices.numpy())
        np.testing.assert_array_equal(sign.numpy(), expected_sign)
        np.testing.assert_allclose(logabsdet.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_singular_values_split_between_threads_are_each_blocks_own() -> None:
    """The SVDs of a batch past THREADED_BLOCKS run in torch's threads (two here, as on the
    two cores CI has, whatever the suite sets), each block's σ in its own place, largest first;
    a mix-up would misjudge which determinants are singular."""
    from jaccli.engine.det import THREADED_BLOCKS, _singular_values

    rng = np.random.default_rng(7)
    count, size = THREADED_BLOCKS + 37, 5
    values = np.sort(10.0 ** rng.uniform(-6, 2, (count, size)), axis=1)[:, ::-1]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        found = _singular_values(_with_singular_values(values, rng))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(found, values, rtol=1e-6)
