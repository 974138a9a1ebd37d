"""The CLI as a user meets it: tables, JSON documents, errors and exit codes (in-process)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import values_of


def test_expsum_json_document_has_the_design_keys_and_correct_numbers(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "2x3", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.stderr == ""
    document = run.json()
    assert document["schema_version"] == 2
    assert document["command"] == "jacobian"
    assert document["function"] == {"name": "expsum", "formula": "y = x.exp().sum(dim=1)"}
    assert document["dtype"] == "float32"
    x = values_of(document["inputs"]["x"])
    y = values_of(document["outputs"]["y"])
    j = values_of(document["jacobian"]["y"]["x"])
    assert x.shape == (2, 3) and y.shape == (2,) and j.shape == (2, 2, 3)
    np.testing.assert_allclose(y, np.exp(x).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(j[0, 0], np.exp(x[0]), rtol=1e-6)
    np.testing.assert_allclose(j[1, 1], np.exp(x[1]), rtol=1e-6)
    assert not j[0, 1].any() and not j[1, 0].any()
    assert document["strategy"] in {"loop-rev", "loop-fwd", "rev", "fwd"}


def test_seeded_inputs_are_float64_standard_normal_draws_in_input_order(jaccli) -> None:
    import torch

    generator = torch.Generator().manual_seed(7)
    a = torch.randn((2, 3), generator=generator, dtype=torch.float64)
    b = torch.randn((3, 2), generator=generator, dtype=torch.float64)
    document = jaccli(
        "jacobian", "--fn", "matmul", "--seed", "7", "--dtype", "float64", "--json"
    ).json()
    np.testing.assert_array_equal(values_of(document["inputs"]["a"]), a.numpy())
    np.testing.assert_array_equal(values_of(document["inputs"]["b"]), b.numpy())
    # float32 runs use the same point, rounded
    single = jaccli("jacobian", "--fn", "matmul", "--seed", "7", "--json").json()
    np.testing.assert_array_equal(
        values_of(single["inputs"]["a"]).astype(np.float32), a.numpy().astype(np.float32)
    )


def test_float32_values_are_written_with_the_shortest_round_trip_digits(jaccli) -> None:
    document = jaccli("jacobian", "--fn", "add", "--value", "x=[0.1, 0.2, 0.3]", "--json").json()
    assert document["inputs"]["x"]["values"] == [0.1, 0.2, 0.3]
    assert document["jacobian"]["y"]["x"]["values"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_add_shows_its_constant_with_the_inputs_and_differentiates_only_x(jaccli) -> None:
    document = jaccli("jacobian", "--fn", "add", "--shape", "4", "--json").json()
    assert document["inputs"]["a"]["constant"] is True
    assert document["inputs"]["a"]["differentiated"] is False
    assert document["wrt"] == ["x"]
    assert document["inputs"]["a"]["shape"] == [4]
    assert list(document["jacobian"]["y"]) == ["x"]
    x, a = values_of(document["inputs"]["x"]), values_of(document["inputs"]["a"])
    np.testing.assert_allclose(values_of(document["outputs"]["y"]), x + a, rtol=1e-6)


def test_vjp_matmul_json_matches_ones_times_b_transposed(jaccli) -> None:
    run = jaccli("vjp", "--fn", "matmul", "--wrt", "a", "--dtype", "float64", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["command"] == "vjp"
    b = values_of(document["inputs"]["b"])
    v = values_of(document["cotangent"]["y"])
    np.testing.assert_array_equal(v, np.ones((2, 2)))
    assert list(document["vjp"]) == ["a"]
    np.testing.assert_allclose(values_of(document["vjp"]["a"]), v @ b.T, rtol=1e-14)


def test_vjp_with_a_json_cotangent(jaccli) -> None:
    run = jaccli(
        "vjp", "--fn", "matmul", "--cotangent", "[[1, 0], [0, 2]]", "--dtype", "float64", "--json"
    )
    document = run.json()
    a, b = values_of(document["inputs"]["a"]), values_of(document["inputs"]["b"])
    v = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(values_of(document["vjp"]["a"]), v @ b.T, rtol=1e-14)
    np.testing.assert_allclose(values_of(document["vjp"]["b"]), a.T @ v, rtol=1e-14)


def test_randn_cotangent_is_reproducible_and_not_ones(jaccli) -> None:
    first = jaccli("vjp", "--fn", "sigmoid", "--cotangent", "randn", "--json").json()
    second = jaccli("vjp", "--fn", "sigmoid", "--cotangent", "randn", "--json").json()
    assert "view" in first  # a single elementwise input: the rows view by default
    assert first["cotangent"]["y"] == second["cotangent"]["y"]
    assert values_of(first["cotangent"]["y"]).tolist() != [1.0, 1.0, 1.0]


def test_non_finite_numbers_are_strings_and_the_document_is_strict_json(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--value", "x=[[1000, 1], [2, 3]]", "--json")
    assert run.exit_code == 0, run.stderr
    document = json.loads(run.stdout, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert document["outputs"]["y"]["values"][0] == "Infinity"
    assert document["jacobian"]["y"]["x"]["values"][0][0][0] == "Infinity"
    assert float(document["outputs"]["y"]["values"][0]) == float("inf")


def test_expsum_table_shows_one_grid_per_output_element(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", "expsum", "--shape", "2x3", "--dtype", "float64", "--precision", "3"
    )
    assert run.exit_code == 0, run.stderr
    out = run.stdout
    assert "y = x.exp().sum(dim=1)" in out
    assert "∂y[0] / ∂x" in out and "∂y[1] / ∂x" in out
    assert "2x2x3 = y 2 + x 2x3" in out
    document = jaccli("jacobian", "--fn", "expsum", "--dtype", "float64", "--json").json()
    j = values_of(document["jacobian"]["y"]["x"])
    # each printed cell is the JSON value at 3 decimals
    for value in j[0, 0]:
        assert f"{value:.3f}" in out
    assert "\x1b[" not in out  # no colour codes when not on a terminal


def test_large_jacobian_is_a_truncated_matrix_with_a_way_to_see_everything(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "softmax", "--shape", "40")
    assert run.exit_code == 0, run.stderr
    assert "∂y / ∂x as a 40×40 matrix" in run.stdout
    assert "y[39]" in run.stdout and "x[39]" in run.stdout
    assert "y[25]" not in run.stdout
    assert "shown: 19 of 40 rows, " in run.stdout and "(--full: all)" in run.stdout
    full = jaccli("jacobian", "--fn", "softmax", "--shape", "40", "--full", width=1000)
    assert "y[25]" in full.stdout and "--full: all" not in full.stdout


def test_vjp_table_names_the_gradient_it_equals(jaccli) -> None:
    run = jaccli("vjp", "--fn", "matmul", "--wrt", "b", "--view", "full")
    assert run.exit_code == 0, run.stderr
    assert "b.grad after y.backward(v)" in run.stdout
    assert "a.grad" not in run.stdout


def test_presets_lists_every_preset_as_a_table_and_as_json(jaccli) -> None:
    from jaccli.functions import PRESETS

    run = jaccli("presets")
    assert run.exit_code == 0
    for name, function in PRESETS.items():
        assert name in run.stdout
        assert function.formula in run.stdout
    document = jaccli("presets", "--json").json()
    listed = {entry["name"]: entry for entry in document["presets"]}
    assert set(listed) == set(PRESETS)
    assert listed["matmul"]["inputs"][0] == {
        "name": "a",
        "default_shape": [2, 3],
        "differentiable": True,
        "shape_like": None,
        "derived_shape": None,
    }
    assert listed["affine"]["inputs"][1]["derived_shape"] == "d×d, d = x.shape[-1]"
    square = {name for name, entry in listed.items() if entry["square_jacobian"]}
    assert square == {
        "add", "sigmoid", "softmax", "polar", "spherical", "cylindrical", "affine", "planar_flow"
    }  # fmt: skip
    assert "constants: A d×d, b d (d = x.shape[-1])" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--fn", "affine", "--shape", "x=2x3", "--shape", "A=4x4"],
            "affine: A takes the shape 3x3 from x (2x3); got 4x4",
        ),
        (
            ["--fn", "affine", "--shape", "x=scalar"],
            "affine: x must have at least 1 dimension (it acts along the last dimension)",
        ),
        (
            ["--fn", "expsom"],
            "unknown function 'expsom'; did you mean 'expsum'? presets: expsum, add",
        ),
        (["--fn", "expsum", "--shape", "2x"], "bad shape '2x': a dimension is missing"),
        (
            ["--fn", "expsum", "--shape", "0x3"],
            "bad shape '0x3': every dimension must be at least 1",
        ),
        (["--fn", "expsum", "--shape=-1x3"], "bad shape '-1x3': '-1' is not a positive integer"),
        (["--fn", "expsum", "--shape", "abc"], "bad shape 'abc': 'abc' is not a positive integer"),
        (["--fn", "expsum", "--shape", "2x3x"], "bad shape '2x3x': a dimension is missing"),
        (["--fn", "expsum", "--shape", "9" * 5000], "a dimension has 5000 digits (at most 12)"),
        (
            ["--fn", "expsum", "--shape", "b=2x3"],
            "--shape 'b': expsum has no input 'b' (inputs: x)",
        ),
        (
            ["--fn", "matmul", "--shape", "a=2x3", "--shape", "b=4x2"],
            "matmul: a is 2x3 and b is 4x2: a's last dimension (3) must equal b's first "
            "dimension (4)",
        ),
        (["--fn", "matmul", "--wrt", "c"], "--wrt 'c' is not an input of matmul (inputs: a, b)"),
        (["--fn", "add", "--wrt", "a"], "--wrt 'a': a is a constant of add, not differentiated"),
        (
            ["--fn", "expsum", "--dtype", "float16"],
            "unknown dtype 'float16' (choose float32 or float64)",
        ),
        (["--fn", "matmul", "--shape", "2x3"], "matmul has inputs a, b: name the one meant"),
        (["--fn", "expsum", "--shape", "3"], "expsum: x must have at least 2 dimensions"),
        (["--fn", "expsum", "--strategy", "magic"], "unknown --strategy 'magic'"),
        (["--fn", "expsum", "--seed", "-1"], "--seed -1 is out of range"),
        (["--fn", "expsum", "--value", "x=[[1,2],[3]]"], "ragged array: [1] has 1 entries where 2"),
        (["--fn", "expsum", "--max-memory", "lots"], "bad memory size 'lots'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(jaccli, args: list[str], message: str) -> None:
    run = jaccli("jacobian", *args)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("jacobian: ")
    assert message in lines[0]
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("cotangent", "message"),
    [
        ("[1, 2]", "--cotangent has shape 2, but matmul's output y has shape 2x2"),
        ('[["a", 2], [3, 4]]', '--cotangent: [0][0] is "a", not a number'),
        ("[[1, 2], [3]]", "ragged array"),
        ("twos", "--cotangent 'twos' is not ones, randn or a JSON array of numbers"),
    ],
)
def test_bad_cotangents_are_usage_errors(jaccli, cotangent: str, message: str) -> None:
    run = jaccli("vjp", "--fn", "matmul", "--cotangent", cotangent)
    assert run.exit_code == 2
    assert run.stderr.startswith("vjp: ") and message in run.stderr
    assert len(run.stderr.splitlines()) == 1


def test_json_errors_are_also_a_json_object_on_stderr(jaccli) -> None:
    run = jaccli("vjp", "--fn", "matmul", "--wrt", "c", "--json")
    assert run.exit_code == 2
    assert run.stdout == ""
    line, obj = run.stderr.splitlines()
    assert line == "vjp: --wrt 'c' is not an input of matmul (inputs: a, b)"
    assert json.loads(obj) == {
        "error": {
            "code": "unknown_input",
            "message": "--wrt 'c' is not an input of matmul (inputs: a, b)",
        }
    }


def test_click_usage_errors_take_the_same_one_line_form(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--bogus", "--json")
    assert run.exit_code == 2
    line, obj = run.stderr.splitlines()
    assert line.startswith("jaccli: No such option: --bogus")
    assert json.loads(obj)["error"]["code"] == "usage"
    missing = jaccli("jacobian")
    assert missing.exit_code == 2 and "--fn" in missing.stderr


def test_a_huge_shape_is_refused_with_exit_3_before_allocating(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "100000x100000")
    assert run.exit_code == 3
    assert "over the memory budget" in run.stderr and "--max-memory" in run.stderr
    dense = jaccli("jacobian", "--fn", "expsum", "--shape", "512x512", "--max-memory", "100MiB")
    assert dense.exit_code == 3
    assert "512×262144 Jacobian" in dense.stderr


def test_every_command_has_help_text(jaccli) -> None:
    from jaccli.cli import app

    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        run = jaccli(name, "--help")
        assert run.exit_code == 0
        assert command.callback.__doc__.splitlines()[0] in " ".join(run.stdout.split())


def test_colour_appears_on_a_terminal_and_no_color_removes_it(jaccli) -> None:
    from typer.testing import CliRunner

    from jaccli.cli import app

    runner = CliRunner()
    coloured = runner.invoke(app, ["jacobian", "--fn", "expsum"], env={"FORCE_COLOR": "1"})
    assert "\x1b[1;35mexpsum" in coloured.stdout  # the function's name in bold magenta
    plain = runner.invoke(
        app, ["jacobian", "--fn", "expsum"], env={"FORCE_COLOR": "1", "NO_COLOR": "1"}
    )
    assert "\x1b[1;35m" not in plain.stdout and "\x1b[36m" not in plain.stdout
    assert "∂y[0] / ∂x" in plain.stdout


def test_version_names_jaccli_torch_and_python(jaccli) -> None:
    import platform
    from importlib.metadata import version

    import jaccli as package

    run = jaccli("--version")
    assert run.exit_code == 0
    assert run.stdout == (
        f"jaccli {package.__version__}, torch {version('torch')}, "
        f"Python {platform.python_version()}\n"
    )


def test_top_level_help_lists_every_command_without_cutting_its_summary(jaccli) -> None:
    run = jaccli("--help", width=80)
    assert run.exit_code == 0
    for command in ("jacobian", "det", "vjp", "jvp", "hessian", "hvp", "check", "presets"):
        (line,) = [ln for ln in run.stdout.splitlines() if ln.strip("│ ").startswith(command + " ")]
        assert not line.rstrip().endswith("..."), line


def test_fast_top_level_help_lists_what_typer_would(jaccli, capsys, monkeypatch) -> None:
    """`jaccli --help` is drawn without building the commands: it must name the same commands
    with the same summaries and options as the help Typer builds."""
    from jaccli.overview import print_overview

    built = jaccli("--help", width=100)
    monkeypatch.setenv("COLUMNS", "100")
    print_overview()
    fast = capsys.readouterr().out
    for text in (built.stdout, fast):
        assert "Usage: jaccli [OPTIONS] COMMAND [ARGS]..." in text
    built_lines = {" ".join(line.strip("│ ").split()) for line in built.stdout.splitlines()}
    fast_lines = {" ".join(line.strip("│ ").split()) for line in fast.splitlines()}
    for command in ("jacobian", "det", "vjp", "jvp", "hessian", "hvp", "check", "presets"):
        (line,) = [ln for ln in built_lines if ln.startswith(command + " ")]
        assert line in fast_lines
    for option in ("--version", "--install-completion", "--help"):
        (line,) = [ln for ln in built_lines if ln.startswith(option + " ")]
        assert line in fast_lines


def test_command_help_groups_options_in_panels_with_choices_and_examples(jaccli) -> None:
    run = jaccli("jacobian", "--help", width=120)
    assert run.exit_code == 0
    text = run.stdout
    panels = ["Function and inputs", "Many points", "What to compute", "Output", "Limits"]
    positions = [text.index(f"─ {panel} ─") for panel in panels]
    assert positions == sorted(positions)
    for shown in ("DTYPE", "STRATEGY", "FORMAT", "NAME=VALUE", "[NAME=]SHAPE", "SIZE", "VIEW",
                  "float32 or float64", "auto, loop, rev (reverse mode) or fwd", "markdown",
                  "rows, cols or full", "heatmap or sparsity"):  # fmt: skip
        assert shown in " ".join(text.replace("│", " ").split()), shown
    assert "<str>" not in text and "TEXT" not in text
    assert "Examples:" in text and "jaccli jacobian --fn expsum --shape 2x3" in text
    assert "J[i…, j…] = ∂y[i…]/∂x[j…]" in text  # brackets are not taken for markup


HELP_COMMANDS = ["jacobian", "det", "vjp", "jvp", "hessian", "hvp", "check", "presets"]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_fast_command_help_is_the_apps_help_without_typer_or_rich(jaccli, command: str) -> None:
    """`jaccli CMD --help` is drawn before the app is built: the same text the app prints,
    and neither Typer nor Rich is imported for it."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; from jaccli.__main__ import main; main(); "
        "loaded = sorted(m for m in ('typer', 'click', 'rich', 'torch') if m in sys.modules); "
        "sys.stderr.write(repr(loaded))"
    )
    for flag in ("--help", "-h"):
        done = subprocess.run(
            [sys.executable, "-c", script, command, flag],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
            timeout=60,
        )
        assert done.returncode == 0 and done.stderr == "[]", done.stderr
        assert done.stdout == jaccli(command, flag, width=100).stdout


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_command_help_shows_every_option_of_the_table(jaccli, command: str) -> None:
    """Each option's flags, metavar (and range), help and default are in its row."""
    from jaccli.options import options_of

    text = jaccli(command, "--help", width=1000).stdout
    rows = {" ".join(r.replace("│", " ").split()) for r in text.splitlines() if "│ -" in r}
    for option in options_of(command):
        shown = " ".join((*option.flags, option.metavar or "")).split()
        if option.limits is not None:
            shown.append(f"[{option.limits[0]}<=x<={option.limits[1]}]")
        row = " ".join([*shown, *option.help.replace("\\[", "[").split()])
        if option.default is not None and not isinstance(option.default, bool):
            row += f" [default: {option.default}]"
        assert row in rows, row
    if command == "jacobian":  # Typer's Rich markup took these for styles and dropped them
        assert "(pip install 'jaccli[zarr]')" in text and "(pip install 'jaccli[dask]')" in text


def test_command_help_colour_and_escapes(monkeypatch) -> None:
    """Colour on a terminal and never under NO_COLOR; a control character in a name or help
    text never reaches the terminal; a narrow terminal still gets every word."""
    from jaccli import help as command_help
    from jaccli.options import Option

    plain = command_help.command_help("det", 100, colour=False)
    coloured = command_help.command_help("det", 100, colour=True)
    assert "\x1b" not in plain and "\x1b[1;36m--fn\x1b[0m" in coloured
    assert command_help._plain(coloured) == plain
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not command_help.colour_wanted(None)
    monkeypatch.delenv("NO_COLOR")
    assert command_help.colour_wanted(None)

    hostile = Option("--evil\x1b[2J", "show.full", ("det",), "Output\x07", metavar="X\x9b31m",
                     help="Clears\x1b]0;title\x07 the screen.\r")  # fmt: skip
    monkeypatch.setattr(command_help, "options_of", lambda command: iter([hostile]))
    text = command_help.command_help("det", 60, colour=False)
    assert not any(c in text for c in "\x1b\x07\x9b\r"), repr(text)
    assert "--evil[2J" in text and "Clears]0;title the screen." in " ".join(text.split())
    narrow = command_help.command_help("jacobian", 20, colour=False)
    assert max(len(line) for line in narrow.splitlines()) <= command_help.MIN_WIDTH


@pytest.mark.parametrize("command", ["det", "vjp", "jvp", "hessian", "hvp", "check", "presets"])
def test_every_command_help_ends_with_examples_that_name_it(jaccli, command: str) -> None:
    run = jaccli(command, "--help", width=120)
    assert run.exit_code == 0
    examples = run.stdout[run.stdout.index("Examples:") :]
    assert f"jaccli {command} " in examples


def test_every_example_in_the_help_runs(jaccli, tmp_path, monkeypatch) -> None:
    """The examples at the end of each command's help work as written (model.py stands for
    the user's own file)."""
    import shlex

    from jaccli.cli import EXAMPLES

    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.py").write_text("def f(x):\n    return (x.tanh() * 2).sum(dim=-1)\n")
    for examples in EXAMPLES.values():
        for example in examples:
            words = shlex.split(example)
            assert words[0] == "jaccli"
            run = jaccli(*words[1:])
            assert run.exit_code == 0, f"{example}: {run.stderr}"
