"""What a new user meets first: the help at any width, files for the product vectors, and
refusals that name the way out that works."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import jaccli_command, values_of

COMMANDS = ["jacobian", "det", "vjp", "jvp", "hessian", "hvp", "check", "presets"]
BOX = str.maketrans(dict.fromkeys("│╭╮╰╯─", " "))


def _words(text: str) -> set[str]:
    return set(text.translate(BOX).split())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_and_60_columns_splits_no_word(jaccli, command: str) -> None:
    """Every word of the help at a narrow width is a word of the help at a wide one: nothing
    like `[rows|cols|full|heatmap|spa` / `rsity]`, and no word cut with `…`."""
    wide = _words(jaccli(command, "--help", width=250).stdout)
    for width in (80, 60):
        run = jaccli(command, "--help", width=width)
        assert run.exit_code == 0
        assert max(len(line) for line in run.stdout.splitlines()) <= width
        assert _words(run.stdout) <= wide, (width, sorted(_words(run.stdout) - wide))


@pytest.mark.parametrize("command", COMMANDS)
def test_help_paragraphs_run_on_without_a_break_mid_sentence(jaccli, command: str) -> None:
    """Each paragraph of the command's description is one line on a wide terminal: the line
    breaks of the source do not reach the screen (check's help broke after 'passes and')."""
    from jaccli.cli import app
    from jaccli.overview import COMMANDS as SUMMARIES
    from jaccli.overview import DETAILS

    (info,) = [c for c in app.registered_commands if (c.name or c.callback.__name__) == command]
    assert info.callback.__doc__ == SUMMARIES[command]
    lines = [line.strip() for line in jaccli(command, "--help", width=250).stdout.splitlines()]
    for paragraph in (SUMMARIES[command], *DETAILS[command]):
        assert " ".join(paragraph.split()) in lines


@pytest.mark.parametrize("command", COMMANDS)
def test_dash_h_is_help_everywhere(jaccli, command: str) -> None:
    long, short = jaccli(command, "--help"), jaccli(command, "-h")
    assert short.exit_code == 0 and short.stdout == long.stdout


def test_dash_h_is_the_fast_top_level_help() -> None:
    done = subprocess.run(
        [*jaccli_command(), "-h"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: jaccli [OPTIONS] COMMAND [ARGS]..." in done.stdout
    assert re.search(r"--help\s+-h\s+Show this message and exit", done.stdout)


def _help_row(help_text: str, option: str) -> str:
    """The text of `option`'s row in the help (its wrapped lines joined)."""
    rows = re.split(r"\n│ (?=-)", help_text.translate(str.maketrans("╭╮╰╯", "    ")))
    (row,) = [r for r in rows if r.split()[0] == option]
    return " ".join(row.replace("│", " ").split())


SMALL = {
    "jacobian": ["--expr", "x.sin()", "--shape", "3x3"],
    "det": ["--expr", "x.sin()", "--shape", "3x3"],
    "vjp": ["--expr", "x.sin()", "--shape", "3x3"],
    "jvp": ["--expr", "x.sin()", "--shape", "3x3"],
    "hessian": ["--expr", "(x ** 3).sum()", "--shape", "3"],
    "hvp": ["--expr", "(x ** 3).sum()", "--shape", "3"],
}
VIEWS = ("rows", "cols", "full", "heatmap", "sparsity")
SUFFIXES = (".npy", ".pt", ".safetensors", ".csv", ".png", ".svg", ".pdf")


@pytest.mark.parametrize("command", list(SMALL))
def test_each_command_offers_exactly_the_views_and_files_it_accepts(
    jaccli, command: str, tmp_path
) -> None:
    """vjp and jvp offered heatmap and sparsity, which they refuse; --out's help left out the
    pictures jacobian, det and hessian draw. Every choice the help names must work, and
    every choice it leaves out must be refused."""
    text = jaccli(command, "--help", width=250).stdout
    if "--view" in text:
        offered = {v for v in VIEWS if re.search(rf"\b{v}\b", _help_row(text, "--view"))}
        for view in VIEWS:
            run = jaccli(command, *SMALL[command], "--view", view)
            assert (run.exit_code == 0) == (view in offered), (view, run.stderr)
    out_help = _help_row(text, "--out")
    offered = {s for s in SUFFIXES if s in out_help}
    assert offered >= set(SUFFIXES[:4])
    for suffix in SUFFIXES:
        run = jaccli(command, *SMALL[command], "--out", str(tmp_path / f"{command}{suffix}"))
        refused = "pictures are drawn of" in run.stderr or "unknown kind of file" in run.stderr
        assert refused == (suffix not in offered), (suffix, run.stderr)
        several_arrays = "a .npy file holds one" in run.stderr or ".csv file holds" in run.stderr
        assert refused or several_arrays or run.exit_code == 0, (suffix, run.stderr)


def test_product_vectors_come_from_files_as_values_do(jaccli, tmp_path) -> None:
    """--cotangent, --tangent and --vector @FILE were offered and always refused: they read
    .npy, .json (an array, or an object by name) and stdin with --value's loaders."""
    v = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.save(tmp_path / "v.npy", v)
    (tmp_path / "v.json").write_text(json.dumps(v.tolist()))
    inline = jaccli("vjp", "--fn", "matmul", "--cotangent", json.dumps(v.tolist()), "--json")
    b = values_of(inline.json()["inputs"]["b"])
    np.testing.assert_allclose(values_of(inline.json()["vjp"]["a"]), v @ b.T, rtol=1e-6)
    for given in (f"@{tmp_path / 'v.npy'}", f"@{tmp_path / 'v.json'}"):
        run = jaccli("vjp", "--fn", "matmul", "--cotangent", given, "--json")
        assert run.exit_code == 0, run.stderr
        assert run.json()["vjp"] == inline.json()["vjp"]
    stdin = jaccli("vjp", "--fn", "matmul", "--cotangent", "@-", "--json", input="[[1,0],[0,2]]")
    assert stdin.json()["vjp"] == inline.json()["vjp"]

    (tmp_path / "t.json").write_text('{"a": [1, 0, 0], "b": [0, 0, 1]}')
    jvp = jaccli("jvp", "--fn", "cross", "--tangent", f"@{tmp_path / 't.json'}", "--json")
    assert jvp.exit_code == 0, jvp.stderr
    a, b = (values_of(jvp.json()["inputs"][n]) for n in "ab")
    expected = np.cross([1, 0, 0], b) + np.cross(a, [0, 0, 1])
    np.testing.assert_allclose(values_of(jvp.json()["jvp"]["y"]), expected, rtol=1e-5)

    np.save(tmp_path / "w.npy", np.array([1.0, -1.0, 2.0]))
    hvp = jaccli("hvp", "--expr", "(x ** 3).sum()", "--value", "x=[1, 2, 3]",
                 "--vector", f"@{tmp_path / 'w.npy'}", "--dtype", "float64", "--json")  # fmt: skip
    assert values_of(hvp.json()["hvp"]["x"]).tolist() == [6.0, -12.0, 36.0]  # 6·x·v


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("@missing.npy", "vjp: --cotangent @missing.npy: no such file"),
        ("@v.txt", "vjp: --cotangent @v.txt: unknown kind of file"),
        ("@big.npy", "vjp: --cotangent @big.npy: 4.1 KiB is over the limit of 1.0 KiB"),
        ("@bad.json", "vjp: --cotangent @bad.json '[1, 2' is not a JSON array of numbers"),
    ],
)
def test_a_bad_vector_file_is_one_line_naming_the_option(
    jaccli, tmp_path, monkeypatch, given: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    np.save("big.npy", np.zeros(512))
    Path("bad.json").write_text("[1, 2")
    run = jaccli("vjp", "--fn", "matmul", "--cotangent", given, "--max-value-size", "1KiB")
    assert run.exit_code == 2
    assert run.stderr.startswith(message) and len(run.stderr.splitlines()) == 1, run.stderr


def test_batched_on_a_function_without_known_axes_names_batch_axis(jaccli, tmp_path) -> None:
    source = tmp_path / "model.py"
    source.write_text("def f(x):\n    return x.exp().sum(dim=1)\n")
    run = jaccli("jacobian", "--fn", f"{source}:f", "--shape", "4x3", "--batched")
    assert run.exit_code == 2
    assert "declare it with --batch-axis x=AXIS" in run.stderr
    declared = jaccli("jacobian", "--fn", f"{source}:f", "--shape", "4x3", "--batched",
                      "--batch-axis", "x=0", "--json")  # fmt: skip
    assert declared.exit_code == 0 and declared.json()["layout"] == "per-sample"


def test_a_refused_hessian_suggests_hvp_not_vjp(jaccli) -> None:
    run = jaccli("hessian", "--expr", "(x ** 3).sum()", "--shape", "4000", "--max-memory", "50MiB")
    assert run.exit_code == 3
    assert "the 4000×4000 Hessian would need" in run.stderr
    assert "hvp for H·v" in run.stderr and "vjp" not in run.stderr
    assert "--batched" not in run.stderr  # hessian has no --batched


def test_a_function_returning_a_number_is_named_without_an_empty_location(jaccli, tmp_path):
    source = tmp_path / "numbers.py"
    source.write_text("def f(x):\n    return 3.0\n\ndef g(x):\n    return {}\n")
    run = jaccli("jacobian", "--fn", f"{source}:f", "--shape", "3")
    assert run.exit_code == 1
    assert "f returned float; expected a floating tensor" in run.stderr
    empty = jaccli("jacobian", "--fn", f"{source}:g", "--shape", "3")
    assert empty.stderr.strip() == "jacobian: g returned an empty dict"


def test_make_pictures_outside_the_venv_says_how_to_run_it(tmp_path) -> None:
    """`python scripts/make_pictures.py` with a Python that has no jaccli installed."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_pictures.py"
    done = subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-I", str(script)],  # not the venv
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert ".venv/bin/python scripts/make_pictures.py" in done.stderr


def test_a_vector_and_an_input_cannot_both_read_stdin(jaccli) -> None:
    for source in (["--value", "x=@-"], ["--points", "x=@-"]):
        run = jaccli("vjp", "--fn", "polar", *source, "--cotangent", "@-", input="[1, 2]\n")
        assert run.exit_code == 2
        assert (
            run.stderr
            == f"vjp: --cotangent @- and {' '.join(source)} both read stdin; give one a file\n"
        )


def test_forward_mode_names_autograd_grad_inside_as_the_cause(jaccli) -> None:
    """torch's own 'element 0 of tensors does not require grad' contradicted the README's
    'autograd inside is fine'; the refusal says what forward mode cannot do, and where."""
    force = str(Path(__file__).parent / "fixtures" / "realworld.py") + ":force"
    run = jaccli("jacobian", "--fn", force, "--shape", "3", "--strategy", "fwd")
    assert run.exit_code == 1
    assert (
        "forward mode (jacfwd) cannot run a function that calls torch.autograd.grad" in run.stderr
    )
    assert "realworld.py:19" in run.stderr and "try --strategy rev, loop or auto" in run.stderr
    assert "does not require grad" not in run.stderr
    for strategy in ("rev", "auto"):  # the Hessian of the energy, as the README says
        ok = jaccli("jacobian", "--fn", force, "--value", "x=[1, 2, 3]", "--strategy", strategy,
                    "--dtype", "float64", "--json")  # fmt: skip
        assert ok.exit_code == 0, ok.stderr
        hessian = [[2.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 6.0]]  # diag(2x) + couplings
        assert values_of(ok.json()["jacobian"]["y"]["x"]).tolist() == hessian


def test_points_try_the_other_vectorized_mode_before_a_loop(jaccli, tmp_path) -> None:
    """An autograd.Function without jvp stops vmap(jacfwd); vmap(jacrev) runs it, so the
    points are not computed one by one."""
    points = np.random.default_rng(3).standard_normal((5, 3))
    np.save(tmp_path / "p.npy", points)
    fixture = Path(__file__).parent / "fixtures" / "batching.py"
    run = jaccli("jacobian", "--fn", f"{fixture}:cube_without_jvp", "--points",
                 f"x=@{tmp_path / 'p.npy'}", "--dtype", "float64", "--jsonl")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "vmap(jacfwd) could not run" in run.stderr
    assert "computed vmap(jacrev) instead" in run.stderr and "point by point" not in run.stderr
    documents = [json.loads(line) for line in run.stdout.splitlines()]
    assert documents[2]["strategy"] == "vmap(jacrev)"  # a point inside the chunk
    for document, x in zip(documents, points, strict=True):  # y = x³·Σx
        expected = np.diag(3 * x**2) * x.sum() + np.outer(x**3, np.ones(3))
        np.testing.assert_allclose(values_of(document["jacobian"]["y"]["x"]), expected, rtol=1e-12)


def test_the_points_fallback_note_keeps_the_files_path_whole(jaccli, tmp_path) -> None:
    deep = tmp_path.joinpath(*["a_rather_long_directory_name"] * 6)
    deep.mkdir(parents=True)
    source = deep / "batching.py"
    source.write_text((Path(__file__).parent / "fixtures" / "batching.py").read_text())
    np.save(tmp_path / "p.npy", np.ones((3, 2)))
    run = jaccli("jacobian", "--fn", f"{source}:item_branch", "--points",
                 f"x=@{tmp_path / 'p.npy'}")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if "could not run" in line]
    assert notes and all(f"batching.py:{LINE_OF_ITEM})" in note for note in notes), notes
    assert "computed point by point instead" in notes[-1]


LINE_OF_ITEM = 35
"""The line of tests/fixtures/batching.py that calls .item()."""


BANDED = ["jacobian", "--expr", "x[2:] + x[1:-1] * x[:-2]", "--shape", "640"]
"""A 638×640 J with three diagonals: a thin band in a picture of 800×600 pixels, pooled 5×5."""


def _axes_pixels(path: Path) -> np.ndarray:
    """The pixels (RGB) inside the axes box of a picture file."""
    from matplotlib.image import imread

    from jaccli.render.image import AXES_BOX

    pixels = imread(path)[..., :3]
    height, width = pixels.shape[:2]
    left, bottom, box_width, box_height = AXES_BOX
    top = int((1 - bottom - box_height) * height) + 2
    return pixels[
        top : int((1 - bottom) * height) - 2,
        int(left * width) + 2 : int((left + box_width) * width) - 2,
    ]


def test_a_large_banded_j_is_a_visible_band_with_index_ticks(jaccli, tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    run = jaccli(*BANDED, "--out", str(tmp_path / "j.png"))
    assert run.exit_code == 0, run.stderr
    inside = _axes_pixels(tmp_path / "j.png")
    grey = np.all(np.abs(inside - 0x6B / 255) < 0.02, axis=-1)
    middle = ~grey[grey.shape[0] // 2]  # the band where it crosses the middle row
    assert 4 <= middle.sum() <= 40, middle.sum()  # a line 1 pixel wide was hard to see

    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")  # text stays text
    assert jaccli(*BANDED, "--out", str(tmp_path / "j.svg")).exit_code == 0
    svg = (tmp_path / "j.svg").read_text()
    for tick in ("0", "200", "400", "600"):
        assert f">{tick}</text>" in svg, tick
    assert "a cell shows the largest |entry| of 5×5" in svg


def test_sparsity_out_draws_a_spy_plot_not_the_heat_map(jaccli, tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    run = jaccli(*BANDED, "--view", "sparsity", "--out", str(tmp_path / "s.png"))
    assert run.exit_code == 0, run.stderr
    inside = _axes_pixels(tmp_path / "s.png")
    white = np.all(inside > 0.98, axis=-1)
    black = np.all(inside < 0.02, axis=-1)
    assert (white | black).mean() > 0.99  # black non-zeros on white, no colour scale
    assert 0.005 < black.mean() < 0.1
    assert black[0, :8].any() and black[-1, -8:].any() and not black[0, -8:].any()  # diagonal

    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")
    args = ["--view", "sparsity", "--out", str(tmp_path / "s.svg")]
    assert jaccli(*BANDED, *args).exit_code == 0
    assert "1,914 non-zeros (0.47%), banded" in (tmp_path / "s.svg").read_text()


def test_det_in_markdown_is_one_compact_table(jaccli) -> None:
    run = jaccli("det", "--fn", "spherical", "--value", "x=[2, 0.5, 1]", "--dtype", "float64",
                 "--format", "markdown")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    tail = run.stdout[run.stdout.index("### det J") :].splitlines()
    assert tail == [
        "### det J (3×3 J)",
        "",
        "| det J | sign | log\\|det J\\| | trace J |",
        "|---:|---:|---:|---:|",
        "| 1.9177 | +1 | 0.6511 | 1.7360 |",  # r² sin θ = 4 sin 0.5
    ]
    batched = jaccli("det", "--fn", "polar", "--value", "x=[[2, 0.5], [3, 1]]", "--batched",
                     "--dtype", "float64", "--format", "markdown")  # fmt: skip
    assert batched.stdout.count("### det J") == 1
    rows = batched.stdout[batched.stdout.index("### det J") :].splitlines()[4:]
    assert rows == [  # det J = r, trace J = (1 + r) cos θ
        "| sample\\[0\\] | 2.0000 | +1 | 0.6931 | 2.6327 |",  # Markdown's brackets escaped
        "| sample\\[1\\] | 3.0000 | +1 | 1.0986 | 2.1612 |",
    ]
