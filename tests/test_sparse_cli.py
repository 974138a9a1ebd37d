"""`--sparse` and `--sparsity` end to end: the sparse J, H and det J through the CLI and the
Python API against the dense ones, the files read back with scipy and torch, the plan, the
refusals, a pattern that misses a non-zero refused, and the peak of a 10⁶ Burgers J."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch
from conftest import jaccli_command, measure, validate_document
from safetensors.numpy import load_file

import jaccli as api
from jaccli.render.document import dumps

SPARSE_FNS = "tests/fixtures/sparse_fns.py"
BURGERS_EXPR = "u[1:-1] * (u[2:] - u[:-2]) / 2 - (u[2:] - 2 * u[1:-1] + u[:-2])"
RTOL = 1e-12


def coo_matrix(block: dict) -> sp.csr_array:
    """A JSON COO block as a scipy matrix."""
    rows, columns = block["indices"]
    values = np.array(block["values"], dtype=np.float64)
    return sp.csr_array((values, (rows, columns)), shape=tuple(block["shape"]))


def dense_blocks(document: dict) -> dict[str, dict[str, np.ndarray]]:
    """J of a dense document as (output elements × input elements) matrices."""
    blocks = {}
    for output, by_wrt in document["jacobian"].items():
        blocks[output] = {}
        for wrt, entry in by_wrt.items():
            size = int(np.prod(document["inputs"][wrt]["shape"]))
            values = np.array(entry["values"], dtype=np.float64)
            blocks[output][wrt] = values.reshape(-1, size)
    return blocks


# The same J, sparse and dense: a preset, an expression, a user file of two inputs and outputs.
SAME_J = [
    ["--fn", "expsum", "--shape", "3x4"],
    ["--expr", BURGERS_EXPR, "--shape", "u=30"],
    ["--fn", f"{SPARSE_FNS}:two_outputs", "--shape", "x=7", "--shape", "a=7"],
    ["--fn", f"{SPARSE_FNS}:reaction_diffusion", "--shape", "u=6x5"],
]


@pytest.mark.parametrize("args", SAME_J, ids=["preset", "expr", "user-file", "stencil-2d"])
def test_the_sparse_j_equals_the_dense_j(jaccli, args) -> None:
    dense = jaccli("jacobian", *args, "--dtype", "float64", "--json")
    sparse = jaccli("jacobian", *args, "--dtype", "float64", "--json", "--sparse")
    assert dense.exit_code == 0, dense.stderr
    assert sparse.exit_code == 0, sparse.stderr
    document = sparse.json()
    assert document["layout"] == "sparse"
    assert document["guard"]["passed"] is True
    for output, by_wrt in dense_blocks(dense.json()).items():
        for wrt, matrix in by_wrt.items():
            block = document["jacobian"][output][wrt]
            assert block["format"] == "coo"
            np.testing.assert_allclose(coo_matrix(block).toarray(), matrix, rtol=RTOL, atol=1e-300)


def test_the_table_lists_each_rows_non_zeros(jaccli) -> None:
    run = jaccli("jacobian", "--expr", BURGERS_EXPR, "--value", "u=[0, 1, 2, 3, 4]", "--sparse",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    # row i: ∂/∂u[i] = -u[i+1]/2 - 1, ∂/∂u[i+1] = (u[i+2] - u[i])/2 + 2, ∂/∂u[i+2] = u[i+1]/2 - 1
    assert "Sparse Jacobian ∂y/∂u  3×5  9 non-zeros" in run.stdout
    assert "y[0]: u[0] -1.5000  u[1] 3.0000  u[2] -0.5000" in run.stdout
    assert "y[2]: u[2] -2.5000  u[3] 3.0000  u[4] 0.5000" in run.stdout
    assert "pattern traced, exact" in run.stdout


@pytest.mark.parametrize("suffix", [".npz", ".mtx", ".pt", ".safetensors"])
def test_files_read_back_equal_the_json_j(jaccli, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"j{suffix}"
    args = ["jacobian", "--fn", f"{SPARSE_FNS}:two_outputs", "--shape", "x=5", "--shape", "a=5",
            "--dtype", "float64", "--sparse"]  # fmt: skip
    run = jaccli(*args, "--out", str(out), "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    # the joint J: outputs stacked down, inputs side by side
    expected = sp.vstack(
        [
            sp.hstack([coo_matrix(document["jacobian"][y][x]) for x in ("x", "a")])
            for y in ("y0", "y1")
        ]
    ).toarray()
    if suffix == ".npz":
        read = sp.load_npz(out).toarray()
    elif suffix == ".mtx":
        read = scipy.io.mmread(out).toarray()
    elif suffix == ".pt":
        tensor = torch.load(out)
        assert tensor.layout == torch.sparse_coo
        read = tensor.to_dense().numpy()
    else:
        arrays = load_file(str(out))
        rows, columns = arrays["indices"]
        read = sp.csr_array((arrays["values"], (rows, columns)), shape=expected.shape).toarray()
    np.testing.assert_array_equal(read, expected)


def test_a_sparsity_file_missing_one_non_zero_is_refused(jaccli, tmp_path: Path) -> None:
    n = 12
    band = sp.diags_array([np.ones(n - 2)] * 3, offsets=[0, 1, 2], shape=(n - 2, n)).tocsr()
    right = tmp_path / "right.npz"
    sp.save_npz(right, band)
    args = ["jacobian", "--expr", BURGERS_EXPR, "--shape", f"u={n}", "--dtype", "float64"]
    run = jaccli(*args, "--sparsity", str(right), "--json")
    assert run.exit_code == 0, run.stderr
    assert "from " in run.json()["strategy_reason"]
    wrong = band.tolil()
    wrong[4, 5] = 0  # J[4, 5] = (u[6] - u[4])/2 + 2 is not zero
    wrong = sp.csr_array(wrong)
    wrong.eliminate_zeros()
    wrong_file = tmp_path / "wrong.mtx"
    scipy.io.mmwrite(wrong_file, wrong)
    run = jaccli(*args, "--sparsity", str(wrong_file))
    assert run.exit_code == 1
    assert run.stdout == ""
    assert "miss" in run.stderr and "y[4]" in run.stderr


def test_a_sparsity_file_of_the_wrong_shape_exits_2(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    sp.save_npz(path, sp.eye_array(4).tocsr())
    run = jaccli("jacobian", "--expr", BURGERS_EXPR, "--shape", "u=8", "--sparsity", str(path))
    assert run.exit_code == 2
    assert "4×4" in run.stderr and "6×8" in run.stderr


def test_hessian_sparse_equals_the_dense_hessian(jaccli) -> None:
    args = ["hessian", "--fn", f"{SPARSE_FNS}:rosenbrock", "--shape", "x=9", "--dtype", "float64"]
    dense = jaccli(*args, "--json")
    sparse = jaccli(*args, "--json", "--sparse", "--check")
    assert sparse.exit_code == 0, sparse.stderr
    document = sparse.json()
    assert document["colouring"]["colours"] == 3
    assert document["check"]["passed"] is True
    h = np.array(dense.json()["hessian"]["y"]["x"]["x"]["values"], dtype=np.float64)
    np.testing.assert_allclose(
        coo_matrix(document["hessian"]["y"]["x"]["x"]).toarray(), h, rtol=RTOL
    )


def test_det_sparse_equals_slogdet(jaccli) -> None:
    args = ["det", "--fn", f"{SPARSE_FNS}:reaction_diffusion", "--shape", "u=5x5",
            "--dtype", "float64"]  # fmt: skip
    dense = jaccli(*args, "--json").json()["det"]
    sparse = jaccli(*args, "--json", "--sparse").json()["det"]
    assert sparse["sign"] == dense["sign"]
    np.testing.assert_allclose(sparse["logabsdet"]["values"], dense["logabsdet"]["values"],
                               rtol=1e-10)  # fmt: skip


def test_check_sparse_checks_j_v_against_a_jvp_and_differences(jaccli) -> None:
    run = jaccli("check", "--expr", BURGERS_EXPR, "--shape", "u=50", "--sparse", "--json")
    assert run.exit_code == 0, run.stderr
    comparisons = run.json()["check"]["comparisons"]
    assert [c["passed"] for c in comparisons] == [True, True]
    assert "JVP" in comparisons[0]["name"]


def test_points_reuse_the_pattern(jaccli, tmp_path: Path) -> None:
    points = np.random.default_rng(0).standard_normal((4, 10))
    np.save(tmp_path / "u.npy", points)
    run = jaccli("jacobian", "--expr", BURGERS_EXPR, "--points", f"u=@{tmp_path / 'u.npy'}",
                 "--sparse", "--dtype", "float64", "--jsonl")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 4
    for k, line in enumerate(lines):
        u = points[k]
        assert line["point"] == k
        matrix = coo_matrix(line["jacobian"]["y"]["u"]).toarray()
        np.testing.assert_allclose(np.diag(matrix, 1), (u[2:] - u[:-2]) / 2 + 2, rtol=RTOL)


@pytest.mark.parametrize("strategy", ["auto", "rev"])
def test_points_vmap_the_compressed_passes_and_equal_the_dense_j(jaccli, tmp_path, strategy):
    points = np.random.default_rng(1).standard_normal((6, 7))
    np.save(tmp_path / "x.npy", points)
    args = ["jacobian", "--fn", f"{SPARSE_FNS}:two_outputs", "--points",
            f"x=@{tmp_path / 'x.npy'}", "--shape", "a=7", "--dtype", "float64", "--jsonl",
            "--strategy", strategy]  # fmt: skip
    sparse = jaccli(*args, "--sparse")
    dense = jaccli(*args)
    assert sparse.exit_code == 0, sparse.stderr
    assert dense.exit_code == 0, dense.stderr
    sparse_lines = [json.loads(line) for line in sparse.stdout.splitlines()]
    dense_lines = [json.loads(line) for line in dense.stdout.splitlines()]
    assert len(sparse_lines) == 6
    mode = "rev" if strategy == "rev" else "fwd"
    assert sparse_lines[2]["strategy"] == f"sparse-{mode}-vmap"
    assert "at every point" in sparse_lines[2]["guard"]["reference"]
    for sparse_line, dense_line in zip(sparse_lines, dense_lines, strict=True):
        validate_document({k: v for k, v in sparse_line.items() if k != "point"})
        blocks = dense_blocks(dense_line)
        for output, by_wrt in sparse_line["jacobian"].items():
            for wrt, block in by_wrt.items():
                np.testing.assert_allclose(
                    coo_matrix(block).toarray(), blocks[output][wrt], rtol=RTOL, atol=1e-15
                )


def test_points_with_a_sparsity_file_missing_a_non_zero_are_refused(jaccli, tmp_path):
    n = 12
    band = sp.diags_array([np.ones(n - 2)] * 3, offsets=[0, 1, 2], shape=(n - 2, n)).tolil()
    band[4, 5] = 0
    wrong = sp.csr_array(band)
    wrong.eliminate_zeros()
    sp.save_npz(tmp_path / "wrong.npz", wrong)
    np.save(tmp_path / "u.npy", np.random.default_rng(2).standard_normal((8, n)))
    pattern = str(tmp_path / "wrong.npz")
    run = jaccli("jacobian", "--expr", BURGERS_EXPR, "--points", f"u=@{tmp_path / 'u.npy'}",
                 "--sparsity", pattern, "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 1
    assert run.stdout == ""
    assert "misses a non-zero" in run.stderr


def test_det_at_points_vmapped_equals_slogdet(jaccli, tmp_path: Path) -> None:
    points = np.random.default_rng(3).standard_normal((5, 9))
    np.save(tmp_path / "u.npy", points)
    args = ["det", "--fn", f"{SPARSE_FNS}:tridiagonal", "--points", f"u=@{tmp_path / 'u.npy'}",
            "--dtype", "float64", "--jsonl"]  # fmt: skip
    sparse = jaccli(*args, "--sparse")
    assert sparse.exit_code == 0, sparse.stderr
    for k, line in enumerate(sparse.stdout.splitlines()):
        document = json.loads(line)
        u = torch.tensor(points[k])
        jacobian = torch.autograd.functional.jacobian(
            lambda v: (
                torch.nn.functional.pad(v, (1, 1))[2:]
                - 2 * v
                + torch.nn.functional.pad(v, (1, 1))[:-2]
                + v.sin()
            ),
            u,
        )
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        assert document["det"]["sign"]["values"] == float(sign)
        np.testing.assert_allclose(
            document["det"]["logabsdet"]["values"], float(logabsdet), rtol=1e-12
        )
    assert json.loads(sparse.stdout.splitlines()[2])["strategy"] == "sparse-fwd-vmap"


BRANCHY = """\
def f(x):
    if x[0].item() > 0:  # the pattern depends on the values: traced again at each point
        return x * x[1]
    return x * x[2]
"""


def test_stacked_json_of_points_whose_patterns_differ_is_each_points_j(
    jaccli, tmp_path: Path
) -> None:
    """The stacked --json gave every point the first point's indices: at a point where the
    pattern was traced again, its values were printed at other entries (J[0, 1] = -1 where
    J[0, 2] = -1)."""
    (tmp_path / "branchy.py").write_text(BRANCHY, encoding="utf-8")
    points = np.array([[1.0, 2.0, 3.0], [-1.0, 2.0, 3.0], [1.0, -2.0, 3.0]])
    np.save(tmp_path / "x.npy", points)
    model, xs = tmp_path / "branchy.py", tmp_path / "x.npy"
    run = jaccli("jacobian", "--fn", f"{model}:f", "--points",
                 f"x=@{xs}", "--sparse", "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    block = run.json()["jacobian"]["y"]["x"]
    assert block["shape"] == [3, 3, 3]
    for k, x in enumerate(points):
        at_k = {**block, "shape": block["shape"][1:], "values": block["values"][k]}
        chosen = 1 if x[0] > 0 else 2
        expected = np.diag(np.full(3, x[chosen]))
        expected[:, chosen] += x
        np.testing.assert_allclose(coo_matrix(at_k).toarray(), expected, rtol=RTOL)


def test_plan_sparse_tells_non_zeros_colours_and_passes(jaccli) -> None:
    run = jaccli("jacobian", "--expr", BURGERS_EXPR, "--shape", "u=100000", "--sparse", "--plan",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    sparse = run.json()["sparse"]
    assert sparse["nonzeros"] == 3 * 99_998
    assert sparse["passes"] == 3
    assert run.json()["layout"] == "sparse"


def test_a_dense_refusal_suggests_sparse(jaccli) -> None:
    run = jaccli("jacobian", "--expr", BURGERS_EXPR, "--shape", "u=100000", "--max-memory", "1GiB")
    assert run.exit_code == 3
    assert "--sparse" in run.stderr


def test_a_dense_pattern_says_so(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x.sin() * x.sum()", "--shape", "6", "--sparse")
    assert run.exit_code == 0, run.stderr
    assert "pattern is dense" in run.stderr


def test_a_dense_pattern_is_computed_densely_and_kept_sparse(jaccli) -> None:
    args = ["jacobian", "--fn", f"{SPARSE_FNS}:mlp", "--shape", "x=24", "--dtype", "float64"]
    dense = jaccli(*args, "--json")
    sparse = jaccli(*args, "--json", "--sparse")
    assert dense.exit_code == 0, dense.stderr
    assert sparse.exit_code == 0, sparse.stderr
    assert "pattern is dense" in sparse.stderr and "computed densely" in sparse.stderr
    document = sparse.json()
    validate_document(document)
    assert document["strategy"].startswith("dense-")
    assert document["colouring"]["method"].startswith("none")
    matrix = coo_matrix(document["jacobian"]["y"]["x"])
    assert matrix.nnz == 24 * 24
    expected = dense_blocks(dense.json())["y"]["x"]
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=RTOL, atol=0)
    plan = jaccli(*args, "--sparse", "--plan", "--json")
    assert plan.exit_code == 0, plan.stderr
    assert plan.json()["plan"]["method"].startswith("dense-")


def test_a_dense_pattern_file_missing_one_non_zero_is_refused(jaccli, tmp_path: Path) -> None:
    full = np.ones((6, 6), dtype=bool)
    full[2, 3] = False  # J[2, 3] = cos(x[2])·0 + sin(x[2]) is not zero
    wrong_file = tmp_path / "wrong.npz"
    sp.save_npz(wrong_file, sp.csr_array(full))
    args = ["jacobian", "--expr", "x.sin() * x.sum()", "--shape", "6", "--dtype", "float64"]
    run = jaccli(*args, "--sparsity", str(wrong_file))
    assert run.exit_code == 1
    assert run.stdout == ""
    assert "misses a non-zero" in run.stderr and "J[2, 3]" in run.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batched"], "drop --batched"),
        (["--view", "rows"], "--view rows"),
        (["--format", "latex"], "--format latex"),
        (["--strategy", "loop"], "--strategy auto, fwd or rev"),
        (["--out", "j.npy"], "a sparse J is written as"),
    ],
)
def test_what_a_sparse_j_cannot_give_is_refused_in_one_line(jaccli, extra, message) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "6", "--sparse", *extra)
    assert run.exit_code == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_the_api_gives_the_clis_document(jaccli) -> None:
    cli = jaccli("jacobian", "--expr", BURGERS_EXPR, "--shape", "u=12", "--sparse", "--json")
    assert cli.exit_code == 0, cli.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.JaccliWarning)
        result = api.jacobian(BURGERS_EXPR, shape={"u": 12}, sparse=True)
    document = result.document()
    validate_document(document)
    assert json.loads(dumps(document)) == cli.json()
    block = result.arrays["jacobian"]["y"]["u"]
    assert sp.issparse(block)
    expected = coo_matrix(document["jacobian"]["y"]["u"]).toarray()
    np.testing.assert_allclose(block.toarray(), expected, rtol=1e-6)  # float32 as JSON has it


def test_the_peak_of_a_million_unknown_burgers_j_keeps_to_its_budget(tmp_path: Path) -> None:
    """The kernel's peak (VmHWM of the child) of the 10⁶ Burgers J within the --max-memory
    given plus a plain run's baseline (the same command at n = 64: the interpreter, torch and
    the code the run loads); the plan's estimate within that budget too."""
    budget = 768 * 2**20
    args = ["jacobian", "--fn", f"{SPARSE_FNS}:burgers", "--dtype", "float64", "--sparse",
            "--max-memory", "768MiB"]  # fmt: skip
    plain = measure([*jaccli_command(), *args, "--shape", "u=64", "--out", str(tmp_path / "s.npz")])
    assert plain.returncode == 0, plain.stderr
    plan = measure([*jaccli_command(), *args, "--shape", "u=1000000", "--plan", "--json"])
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["plan"]["peak_bytes"] <= budget
    run = measure([*jaccli_command(), *args, "--shape", "u=1000000", "--out",
                   str(tmp_path / "j.npz")])  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sp.load_npz(tmp_path / "j.npz").nnz == 3 * 999_998
    above = (run.peak_kib - plain.peak_kib) * 1024
    assert above <= budget, f"peak {above / 2**20:.0f} MiB above a plain run's"
