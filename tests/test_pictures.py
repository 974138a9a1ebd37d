"""Pictures of J: pooling, structure detection, --view heatmap|sparsity and --out j.png."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from jaccli.engine.structure import pool_max_magnitude, structure_of
from tests.conftest import assert_golden

BATCHING = "tests/fixtures/batching.py"
EPS32 = float(np.finfo(np.float32).eps)
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the plot extra is not installed"
)


def test_pooling_keeps_the_largest_magnitude_of_each_cell_with_its_sign() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((23, 37))
    matrix[rng.random(matrix.shape) < 0.3] = 0
    pooled = pool_max_magnitude(matrix, 4, 5)
    assert pooled.shape == (6, 8)  # ceil(23/4), ceil(37/5): edge cells cover fewer entries
    for r in range(6):
        for c in range(8):
            cell = matrix[4 * r : 4 * r + 4, 5 * c : 5 * c + 5].ravel()
            assert pooled[r, c] == cell[np.argmax(np.abs(cell))]


def test_pooling_keeps_a_single_spike_and_zero_only_where_every_entry_is_zero() -> None:
    matrix = np.zeros((100, 100))
    matrix[57, 3] = -1e-30
    pooled = pool_max_magnitude(matrix, 10, 10)
    assert pooled[5, 0] == -1e-30
    assert np.count_nonzero(pooled) == 1


def test_pooling_marks_a_cell_with_nan() -> None:
    pooled = pool_max_magnitude(np.array([[1.0, -5.0], [np.nan, 2.0]]), 2, 2)
    assert np.isnan(pooled[0, 0])


def test_diagonal_j_is_diagonal_with_full_rank() -> None:
    structure = structure_of(np.diag([1.0, 2.0, 3.0, 4.0]), EPS32)
    assert structure.diagonal and structure.nonzeros == 4 and structure.rank == 4
    assert structure.form == "diagonal"
    assert (structure.lower_bandwidth, structure.upper_bandwidth) == (0, 0)
    assert structure.blocks is None and structure.triangular is None


def test_banded_j_reports_both_bandwidths() -> None:
    n = 9
    matrix = np.eye(n) * 2 + np.eye(n, k=1) + np.eye(n, k=-2) * 3
    structure = structure_of(matrix, EPS32)
    assert (structure.lower_bandwidth, structure.upper_bandwidth) == (2, 1)
    assert structure.form == "banded" and structure.diagonals == 4
    assert not structure.diagonal and structure.triangular is None
    assert structure.nonzeros == n + (n - 1) + (n - 2)


@pytest.mark.parametrize(("form", "make"), [("lower", np.tril), ("upper", np.triu)])
def test_triangular_j(form: str, make) -> None:
    structure = structure_of(make(np.arange(1.0, 26.0).reshape(5, 5)), EPS32)
    assert structure.triangular == form and structure.form == f"{form}-triangular"
    assert structure.density == 15 / 25


def test_block_diagonal_j_along_the_samples_axis_names_the_axis() -> None:
    blocks = np.kron(np.eye(4), np.arange(1.0, 7.0).reshape(2, 3))
    structure = structure_of(blocks, EPS32, samples=4, hint="--batched")
    assert structure.blocks is not None
    assert structure.blocks.row_sizes == (2, 2, 2, 2)
    assert structure.blocks.column_sizes == (3, 3, 3, 3)
    assert structure.blocks.axis == 0
    assert structure.blocks.hint == "--batched"
    assert structure.form == "block-diagonal"


def test_block_diagonal_j_of_unequal_blocks_is_found_without_an_axis() -> None:
    matrix = np.zeros((5, 5))
    matrix[:2, :2] = 1.0
    matrix[2:, 2:] = np.arange(1.0, 10.0).reshape(3, 3) ** 2
    structure = structure_of(matrix, EPS32, samples=5)
    assert structure.blocks is not None
    assert structure.blocks.row_sizes == (2, 3) and structure.blocks.column_sizes == (2, 3)
    assert structure.blocks.axis is None


def test_dense_j_has_no_form_and_a_rank_deficient_j_its_numerical_rank() -> None:
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((6, 6))
    assert structure_of(dense, EPS32).blocks is None
    assert structure_of(dense, EPS32).form == "dense"
    assert structure_of(dense, EPS32).rank == 6
    low_rank = rng.standard_normal((8, 2)) @ rng.standard_normal((2, 5))  # rank 2, no zeros
    structure = structure_of(low_rank, float(np.finfo(np.float64).eps))
    assert structure.rank == 2 and structure.nonzeros == 40
    assert structure.rank == np.linalg.matrix_rank(low_rank)


def test_zero_j_has_rank_zero_and_no_bandwidth() -> None:
    structure = structure_of(np.zeros((3, 4)), EPS32)
    assert structure.nonzeros == 0 and structure.rank == 0 and structure.form == "zero"
    assert structure.lower_bandwidth is None


def test_sparsity_json_reports_the_structure_of_expsum(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "4x3", "--view", "sparsity", "--json")
    assert run.exit_code == 0, run.stderr
    structure = run.json()["structure"]
    assert (structure["rows"], structure["columns"], structure["nonzeros"]) == (4, 12, 12)
    assert structure["density"] == 0.25 and structure["form"] == "block-diagonal"
    assert structure["block_diagonal"]["count"] == 4
    assert structure["block_diagonal"]["axis"] == 0
    assert structure["block_diagonal"]["hint"] == "--batched computes only the 4 blocks"
    assert structure["rank"] == 4
    assert "jacobian" in run.json()  # the numbers are still there


def test_sparsity_of_a_user_function_suggests_declaring_its_axis(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", f"{BATCHING}:per_sample", "--shape", "x=5x3", "--shape", "W=3x2",
        "--wrt", "x", "--view", "sparsity",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "block-diagonal: 5 blocks 2×3, along axis 0" in run.stdout
    assert "hint: --batched --batch-axis x=0 computes only the 5 blocks" in run.stdout


def test_a_mixing_function_is_dense_in_the_sparsity_view(jaccli) -> None:
    run = jaccli("jacobian", "--fn", f"{BATCHING}:centred", "--shape", "4x2", "--view", "sparsity")
    assert run.exit_code == 0, run.stderr
    assert "block-diagonal" not in run.stdout and "hint:" not in run.stdout


def test_hessian_sparsity_of_a_sum_of_squares_is_diagonal(jaccli) -> None:
    run = jaccli(
        "hessian", "--expr", "(x ** 2).sum() + (x ** 3).sum()", "--shape", "6",
        "--view", "sparsity", "--json", "--dtype", "float64",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    structure = run.json()["structure"]
    assert structure["diagonal"] and structure["rank"] == 6


def test_det_heatmap_of_a_triangular_map(jaccli) -> None:
    run = jaccli("det", "--expr", "x.cumsum(dim=0)", "--shape", "5", "--view", "sparsity")
    assert run.exit_code == 0, run.stderr
    assert "lower triangular" in run.stdout
    assert "det J" in run.stdout  # the determinant is still shown


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["vjp", "--fn", "matmul", "--view", "heatmap"], "use it with jaccli jacobian"),
        (["jacobian", "--fn", "expsum", "--view", "heatmap", "--batched"], "drop --batched"),
        (["det", "--fn", "polar", "--view", "rows"], "unknown --view 'rows'"),
        (["hessian", "--fn", "logsumexp", "--view", "cols"], "unknown --view 'cols'"),
        (["vjp", "--fn", "matmul", "--out", "v.png"], "pictures are drawn of J and H"),
        (["jacobian", "--fn", "expsum", "--batched", "--out", "j.png"], "drop --batched"),
        (
            [
                "det",
                "--fn",
                "polar",
                "--points",
                "x=@tests/fixtures/polar_points.json",
                "--out",
                "j.png",
            ],
            "drop --points",
        ),
        (
            [
                "hessian",
                "--fn",
                "logsumexp",
                "--points",
                "x=@tests/fixtures/polar_points.json",
                "--out",
                "j.svg",
            ],
            "drop --points",
        ),
    ],
)
def test_pictures_where_they_do_not_apply_are_refused(
    jaccli, command: list[str], message: str
) -> None:
    run = jaccli(*command)
    assert run.exit_code == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


GOLDEN_PICTURES = [
    ("heatmap_expsum", ["jacobian", "--fn", "expsum", "--shape", "4x3", "--view", "heatmap"]),
    ("sparsity_expsum", ["jacobian", "--fn", "expsum", "--shape", "4x3", "--view", "sparsity"]),
    ("heatmap_matmul", ["jacobian", "--fn", "matmul", "--view", "heatmap"]),
    (
        "sparsity_differences",
        ["jacobian", "--expr", "x[1:] - x[:-1]", "--shape", "300", "--view", "sparsity"],
    ),
    ("sparsity_hessian", ["hessian", "--fn", "logsumexp", "--view", "sparsity"]),
    ("heatmap_det_polar", ["det", "--fn", "polar", "--view", "heatmap"]),
]


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize(("name", "args"), GOLDEN_PICTURES)
def test_pictures_match_the_reviewed_layout_and_fit_the_width(
    jaccli, name: str, args: list[str], width: int
) -> None:
    run = jaccli(*args, width=width)
    assert run.exit_code == 0, run.stderr
    start = run.stdout.index("\nHeat map" if "heatmap" in args else "\nNon-zeros")
    picture = run.stdout[start:].split("\nstrategy ")[0]
    assert max(len(line) for line in picture.splitlines()) <= width
    assert_golden(f"{name}_{width}.txt", picture)


def test_a_pooled_picture_says_how_many_entries_a_cell_covers(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x.sin()", "--shape", "500", "--view", "heatmap", width=80)
    assert run.exit_code == 0, run.stderr
    assert "a cell: up to" in run.stdout
    frame = [line for line in run.stdout.splitlines() if line.startswith(("y ", "  "))]
    assert all(len(line) <= 80 for line in frame)


def test_colour_heatmap_draws_two_rows_a_character() -> None:
    from rich.console import Console

    from jaccli.engine import prepare, run_jacobian
    from jaccli.engine.structure import picture_of
    from jaccli.functions import PRESETS
    from jaccli.render.layout import Layout
    from jaccli.render.picture import picture_renderable

    result = run_jacobian(prepare(PRESETS["expsum"], shape_options=[(None, (4, 3))]))
    picture = picture_of(result, "heatmap", 48, 60)
    console = Console(width=80, color_system="truecolor", force_terminal=True)
    with console.capture() as captured:
        console.print(picture_renderable(picture, Layout(width=80, color=True)))
    text = captured.get()
    assert "▀" in text and "\x1b[38;2;" in text and "48;2;" in text
    assert "exactly 0" in text


@needs_matplotlib
def test_png_heat_map_follows_the_sign_of_j(jaccli, tmp_path) -> None:
    from matplotlib.image import imread

    from jaccli.render.image import AXES_BOX, DPI, FIGURE_INCHES, IMAGE_CELLS

    path = tmp_path / "j.png"
    args = ["jacobian", "--fn", "expsum", "--shape", "64x32"]
    run = jaccli(*args, "--out", str(path))
    assert run.exit_code == 0, run.stderr
    assert jaccli(*args, "--out", str(tmp_path / "j.npy")).exit_code == 0
    matrix = np.load(tmp_path / "j.npy").reshape(64, -1)  # rows y, columns x flattened
    pixels = imread(path)
    assert pixels.shape[:2] == (FIGURE_INCHES[1] * DPI, FIGURE_INCHES[0] * DPI)
    height, width = pixels.shape[:2]
    rows, columns = 64, IMAGE_CELLS  # 64 × 2048 pooled `per` columns a cell
    per, half = 2048 // columns, columns // 2
    left, bottom, box_width, box_height = AXES_BOX

    def cell(row: int, column: int) -> np.ndarray:
        x = (left + box_width * (column + 0.5) / columns) * width
        y = (1 - bottom - box_height + box_height * (row + 0.5) / rows) * height
        return pixels[int(y), int(x), :3]

    row, column = np.unravel_index(matrix.argmax(), matrix.shape)  # the top of the scale
    far = (column // per + half) % columns  # a cell far from y[row]'s own block of x
    assert matrix[row, column] > 0 and not matrix[row, per * far :][:per].any()
    positive = cell(row, column // per)
    zero = cell(row, far)
    assert positive[0] > 2 * positive[2] and positive[0] > positive[1] + 0.2  # red, not blue
    assert np.allclose(zero, [0x6B / 255] * 3, atol=0.02)  # the grey of exact zeros


@needs_matplotlib
def test_svg_and_pdf_are_written_and_an_existing_file_is_kept(jaccli, tmp_path) -> None:
    for suffix, magic in ((".svg", b"<?xml"), (".pdf", b"%PDF")):
        path = tmp_path / f"j{suffix}"
        run = jaccli("hessian", "--fn", "logsumexp", "--out", str(path))
        assert run.exit_code == 0, run.stderr
        assert path.read_bytes().startswith(magic)
        again = jaccli("hessian", "--fn", "logsumexp", "--out", str(path))
        assert again.exit_code == 2 and "--force" in again.stderr


def test_png_without_matplotlib_says_how_to_install_it(jaccli, tmp_path, monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    run = jaccli("jacobian", "--fn", "expsum", "--out", str(tmp_path / "j.png"))
    assert run.exit_code == 2
    assert f"{sys.executable} -m pip install 'matplotlib>=3.7'" in run.stderr
    assert not (tmp_path / "j.png").exists()


def _naive_structure(matrix: np.ndarray) -> tuple[int, int | None, int | None, float]:
    """Non-zeros, bandwidths and largest finite |entry|, the plain way (a copy of J each)."""
    i, j = np.nonzero(matrix)
    finite = np.abs(matrix[np.isfinite(matrix)])
    if not i.size:
        return 0, None, None, float(finite.max(initial=0))
    return i.size, int((i - j).max(initial=0)), int((j - i).max(initial=0)), float(finite.max())


@pytest.mark.parametrize("band", [1, 7, 64, 1 << 21])
def test_tiled_reading_of_j_gives_what_a_whole_read_gives(monkeypatch, band: int) -> None:
    """J is read in tiles of at most BAND_ENTRIES entries (so a picture of a J near the memory
    budget costs little beside it); tile boundaries must change nothing."""
    from jaccli.engine import structure

    monkeypatch.setattr(structure, "BAND_ENTRIES", band)
    rng = np.random.default_rng(band)
    matrix = rng.standard_normal((37, 53)) * (rng.random((37, 53)) < 0.2)
    matrix[5, 40] = np.inf
    joint = structure.Joint(
        [[matrix[:20, :30], matrix[:20, 30:]], [matrix[20:, :30], matrix[20:, 30:]]],
        [("y0", 20), ("y1", 17)],
        [("a", 30), ("b", 23)],
        "J",
    )
    profile = structure.row_profile(joint)
    found = structure._structure(joint.shape, joint.dense, profile, EPS32, None, None)
    count, lower, upper, largest = _naive_structure(matrix)
    assert (found.nonzeros, found.lower_bandwidth, found.upper_bandwidth) == (count, lower, upper)
    assert profile.largest == largest and not profile.finite
    for cell_rows, cell_columns in ((1, 1), (3, 4), (37, 53)):
        tiled = structure.pool_max_magnitude(matrix, cell_rows, cell_columns)
        monkeypatch.setattr(structure, "BAND_ENTRIES", 1 << 21)
        whole = structure.pool_max_magnitude(matrix, cell_rows, cell_columns)
        monkeypatch.setattr(structure, "BAND_ENTRIES", band)
        np.testing.assert_array_equal(tiled, whole)


def test_a_heat_map_of_a_large_j_costs_little_beside_j() -> None:
    """The picture and structure of a 64 MiB J stay within a fraction of J above the plain
    run: no float64 copy, no index arrays of the non-zeros."""
    from tests.conftest import jaccli_command, measure

    args = ["jacobian", "--expr", "x.sin() * 2", "--shape", "4096", "--strategy", "fwd"]
    baseline = measure([*jaccli_command(), *args, "--format", "markdown"])
    pictured = measure([*jaccli_command(), *args, "--view", "sparsity"])
    assert baseline.returncode == pictured.returncode == 0, pictured.stderr
    assert "diagonal" in pictured.stdout and "rank      not computed" in pictured.stdout
    j_kib = 4096 * 4096 * 4 // 1024
    assert pictured.peak_kib < baseline.peak_kib + j_kib // 2, (
        pictured.peak_kib,
        baseline.peak_kib,
    )


def test_nan_in_j_is_drawn_and_named_in_the_legend(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x.sqrt()", "--value", "x=[-1, 4]", "--view", "heatmap")
    assert run.exit_code == 0, run.stderr
    frame = run.stdout[run.stdout.index("Heat map") :]
    assert "?" in frame and "? NaN" in frame


def _many_inputs(tmp_path, count: int) -> list[str]:
    """A function of `count` inputs, each with its own output, and the options that call it."""
    names = ", ".join(f"a{i}" for i in range(count))
    path = tmp_path / "many.py"
    body = f"{{f'out{{i}}': v.sin() for i, v in enumerate([{names}])}}"
    path.write_text(f"def many({names}):\n    return {body}\n")
    return ["--fn", f"{path}:many", *(f"--shape=a{i}=2" for i in range(count))]


def test_many_inputs_are_counted_in_the_title_and_too_many_are_refused(jaccli, tmp_path) -> None:
    run = jaccli("jacobian", *_many_inputs(tmp_path, 12), "--view", "sparsity", width=80)
    assert run.exit_code == 0, run.stderr
    assert "Non-zeros of ∂(out0 … out11)/∂(a0 … a11)  24×24  12 outputs, 12 inputs" in run.stdout
    assert "form      diagonal" in run.stdout
    frame = run.stdout[run.stdout.index("Non-zeros") : run.stdout.index("non-zeros")]
    assert all(len(line) <= 80 for line in frame.splitlines())
    refused = jaccli("jacobian", *_many_inputs(tmp_path, 40), "--view", "heatmap", width=80)
    assert refused.exit_code == 2
    assert "40 inputs, each with a separator, do not fit 80 columns" in refused.stderr


def test_an_output_that_ignores_many_inputs_gets_one_warning(jaccli, tmp_path) -> None:
    run = jaccli("jacobian", *_many_inputs(tmp_path, 12), "--view", "heatmap", width=80)
    assert run.exit_code == 0, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 12  # one an output, not 132
    assert lines[0] == (
        "jacobian: warning: output out0 does not depend on 11 inputs (a1, a2, a3, a4, …): "
        "their Jacobians are zero"
    )


def _special_picture():
    """expsum's 2×6 J replaced by one holding 0, ±Infinity, NaN and finite entries of both
    signs, as a heat map picture."""
    from dataclasses import replace

    from jaccli.engine import prepare, run_jacobian
    from jaccli.engine.structure import picture_of
    from jaccli.functions import PRESETS

    result = run_jacobian(prepare(PRESETS["expsum"], shape_options=[(None, (2, 3))]))
    j = np.array([[[0.0, np.inf, 1.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [-np.inf, np.nan, -1]]])
    return picture_of(replace(result, jacobians={"y": {"x": j}}), "heatmap", 48, 60)


@needs_matplotlib
def test_png_draws_infinities_and_nan_apart_from_zero_with_a_legend(tmp_path) -> None:
    from matplotlib.image import imread

    from jaccli.render.image import AXES_BOX, draw_picture
    from jaccli.render.picture import NAN_RGB, NEGATIVE_INFINITY_RGB, POSITIVE_INFINITY_RGB

    path = tmp_path / "j.png"
    draw_picture(_special_picture(), path, "png")
    pixels = imread(path)
    height, width = pixels.shape[:2]
    left, bottom, box_width, box_height = AXES_BOX

    def cell(row: int, column: int) -> np.ndarray:
        x = (left + box_width * (column + 0.5) / 6) * width
        y = (1 - bottom - box_height + box_height * (row + 0.5) / 2) * height
        return np.round(pixels[int(y), int(x), :3] * 255)

    assert tuple(cell(0, 0)) == (0x6B, 0x6B, 0x6B)  # exact 0: grey
    assert tuple(cell(0, 1)) == POSITIVE_INFINITY_RGB
    assert tuple(cell(1, 3)) == NEGATIVE_INFINITY_RGB
    assert tuple(cell(1, 4)) == NAN_RGB
    assert cell(0, 2)[0] > cell(0, 2)[2] and cell(1, 5)[2] > cell(1, 5)[0]  # +1 red, −1 blue
    svg = tmp_path / "j.svg"
    draw_picture(_special_picture(), svg, "svg")
    legend = svg.read_text()
    assert all(f"<!-- {label} -->" in legend for label in ("exactly 0", "+Infinity", "NaN"))


def test_terminal_legends_name_infinities_and_nan_and_a_j_without_a_scale() -> None:
    from dataclasses import replace

    from rich.console import Console

    from jaccli.render.layout import Layout
    from jaccli.render.picture import picture_renderable

    def drawn(picture, color: bool) -> str:
        console = Console(width=80, color_system=None)  # the legend's words, not its colours
        with console.capture() as captured:
            console.print(picture_renderable(picture, Layout(width=80, color=color)))
        return captured.get()

    picture = _special_picture()
    assert "∞" in drawn(picture, False)  # no OverflowError
    assert "· exactly 0, ∞ ±Infinity, ? NaN (no sign)" in drawn(picture, False)
    assert "exactly 0  █ +Infinity  █ -Infinity  █ NaN" in drawn(picture, True)
    nan = replace(picture, values=np.full_like(picture.values, np.nan), scale=0.0)
    assert "quarters of 0" not in drawn(nan, False)
    assert "|J| has no finite non-zero entry, · exactly 0, ? NaN" in drawn(nan, False)
    assert "no finite non-zero entry   █ exactly 0  █ NaN" in drawn(nan, True)


def test_no_color_heat_map_with_infinity_and_det_of_a_nan_j(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x.exp()", "--value", "x=[1000, 0]", "--view", "heatmap")
    assert run.exit_code == 0, run.stderr
    assert "∞" in run.stdout and "∞ ±Infinity" in run.stdout
    det = jaccli("det", "--expr", "(x - 5).sqrt()", "--value", "x=[1, 2]", "--json")
    assert det.exit_code == 0, det.stderr
    assert det.json()["det"]["sign"]["values"] == "NaN"  # unknown, not 0 (singular)
    table = jaccli("det", "--expr", "(x - 5).sqrt()", "--value", "x=[1, 2]")
    assert " sign         nan " in table.stdout
