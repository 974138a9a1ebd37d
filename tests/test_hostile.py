"""Hostile input, item by item: limits that hold, files never replaced, no hang, one line.

Peak memory comes from the kernel's accounting of a child process (`measure`), and hangs are
bounded by a timeout; each test names the item of the hostile-input list it covers.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import jaccli_command, measure

MIB = 1024  # ru_maxrss is in KiB
REALWORLD = Path(__file__).parent / "fixtures" / "realworld.py"


@pytest.fixture(scope="module")
def baseline_kib() -> int:
    """The peak memory of a small ordinary run: torch imported, a 2x3 Jacobian."""
    run = measure([*jaccli_command(), "jacobian", "--fn", "expsum", "--shape", "2x3"])
    assert run.returncode == 0, run.stderr
    return run.peak_kib


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# 1. A stride-0 view in a small .pt file is counted before it is made.
@pytest.mark.parametrize("side", [15_000, 10**6])
def test_a_pt_file_holding_a_huge_view_is_refused_before_it_is_made(tmp_path, side, baseline_kib):
    bomb = tmp_path / "bomb.pt"
    torch.save(torch.ones(1).expand(side, side), bomb)
    assert bomb.stat().st_size < 4096
    run = measure([*jaccli_command(), "jacobian", "--fn", "expsum", "--value", f"x=@{bomb}",
                   "--max-value-size", "4KiB", "--max-memory", "10MiB"])  # fmt: skip
    assert run.returncode == 2
    assert f"holds {side * side} numbers" in one_line(run.stderr)
    assert run.peak_kib < baseline_kib + 30 * MIB


# 2. Constant sub-expressions are folded and bounded while compiling.
@pytest.mark.parametrize(
    ("expression", "says"),
    [("x * 9 ** 9 ** 9", "exponent 3.8742e+08 is past the bound of 64"),
     ("x ** (8*8*8)", "exponent 512 is past the bound of 64"),
     ("x * (1000000 * 1000000 * 1000)", "is past the bound of 1e+12")],
)  # fmt: skip
def test_constant_sub_expressions_are_bounded(expression, says) -> None:
    done = subprocess.run([*jaccli_command(), "jacobian", "--expr", expression, "--shape", "2"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert says in one_line(done.stderr)


# 3. What an expression makes in between is held to --max-memory before it runs.
@pytest.mark.parametrize(
    ("expression", "shape"), [("diag(x, 20000).sum()", "1"), ("(x + x.T).sum()", "20000x1")]
)
def test_expression_intermediates_obey_the_memory_budget(expression, shape, baseline_kib):
    run = measure([*jaccli_command(), "jacobian", "--expr", expression, "--shape", shape,
                   "--max-memory", "10MiB"])  # fmt: skip
    assert run.returncode == 3, run.stderr
    assert "in its intermediate results" in one_line(run.stderr)
    assert run.peak_kib < baseline_kib + 30 * MIB


# 4. Only regular files are read, and no more of them than the limit.
def test_a_link_to_a_device_and_a_fifo_are_refused_at_once(tmp_path) -> None:
    zero, fifo = tmp_path / "z.json", tmp_path / "f.json"
    zero.symlink_to("/dev/zero")
    os.mkfifo(fifo)
    for path in (zero, fifo):
        command = [*jaccli_command(), "jacobian", "--fn", "expsum", "--value", f"x=@{path}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert "is not a regular file" in one_line(done.stderr)


def test_stdin_is_read_a_chunk_at_a_time_whatever_the_limit(jaccli) -> None:
    args = ["jacobian", "--fn", "sigmoid", "--value", "x=@-", "--json"]
    generous = jaccli(*args, "--max-value-size", "1TiB", input="[1, 2]")
    assert generous.exit_code == 0, generous.stderr  # a single read of 1 TiB would not be
    tight = jaccli(*args, "--max-value-size", "1KiB", input="[" + "1, " * 2000 + "1]")
    assert tight.exit_code == 2 and "over the limit of 1.0 KiB" in tight.stderr


def test_a_loop_of_links_is_named_as_such(jaccli, tmp_path) -> None:
    loop = tmp_path / "loop.npy"
    loop.symlink_to(loop)
    run = jaccli("jacobian", "--fn", "expsum", "--value", f"x=@{loop}")
    assert run.exit_code == 2 and "is a loop of symbolic links" in run.stderr


# 5. The memory guard counts what really happens, before anything is drawn.
@pytest.mark.parametrize(
    "args",
    [["--shape", "1000x250000"], ["--shape", "1000x100000", "--batched"]],
)
def test_exit_3_comes_before_the_memory_is_used(args, baseline_kib) -> None:
    run = measure([*jaccli_command(), "jacobian", "--fn", "expsum", *args,
                   "--max-memory", "1GiB"])  # fmt: skip
    assert run.returncode == 3, run.stderr
    assert run.peak_kib < baseline_kib + 30 * MIB


def test_a_json_document_past_the_budget_is_refused_after_computing(jaccli) -> None:
    run = jaccli("vjp", "--fn", "expsum", "--shape", "1000x400", "--view", "rows", "--json",
                 "--max-memory", "40MiB")  # fmt: skip
    assert run.exit_code == 3
    assert run.stdout == ""
    assert "--json of the result (2404000 numbers) would need about 146.7 MiB" in run.stderr
    assert jaccli("vjp", "--fn", "expsum", "--shape", "1000x400", "--view", "rows",
                  "--max-memory", "40MiB").exit_code == 0  # fmt: skip


def test_seeded_inputs_are_the_same_numbers_drawn_in_chunks() -> None:
    from jaccli.engine.problem import DRAW_CHUNK, draw_normal

    for count in (3, 16, 17, DRAW_CHUNK + 5, 2 * DRAW_CHUNK + 40):
        whole, chunked = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        expected = torch.randn(count, generator=whole, dtype=torch.float64).to(torch.float32)
        assert torch.equal(draw_normal((count,), chunked, torch.float32), expected)
        assert torch.equal(torch.randn(4, generator=whole), torch.randn(4, generator=chunked))


# 6. --out never replaces a file it was not allowed to replace.
def test_out_never_replaces_a_file_created_while_computing(jaccli, tmp_path, monkeypatch):
    import jaccli.engine as engine

    target = tmp_path / "j.npy"
    real = engine.run_jacobian

    def slow_run(*args, **kwargs):
        target.write_text("someone else's file")  # appears while the Jacobian is computed
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "run_jacobian", slow_run)
    run = jaccli("jacobian", "--fn", "expsum", "--out", str(target))
    assert run.exit_code == 1
    assert "appeared while computing; nothing was replaced" in run.stderr
    assert target.read_text() == "someone else's file"
    assert [p.name for p in tmp_path.iterdir()] == ["j.npy"]  # no temporary left behind


# 7. Modes: the umask's for a new file, the old file's with --force; links need --force.
def test_out_files_get_the_umask_mode_and_keep_a_replaced_mode(jaccli, tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.npy"
        assert jaccli("jacobian", "--fn", "expsum", "--out", str(fresh)).exit_code == 0
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        private = tmp_path / "private.npy"
        private.write_bytes(b"old")
        private.chmod(0o600)
        run = jaccli("jacobian", "--fn", "expsum", "--out", str(private), "--force")
        assert run.exit_code == 0
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert np.load(private).shape == (2, 2, 3)
    finally:
        os.umask(previous)
    dangling = tmp_path / "dangling.npy"
    dangling.symlink_to(tmp_path / "nowhere.npy")
    run = jaccli("jacobian", "--fn", "expsum", "--out", str(dangling))
    assert run.exit_code == 2 and "exists; add --force" in run.stderr


# 8. A scalar Jacobian keeps shape () in every file format.
@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors"])
def test_a_scalar_jacobian_keeps_its_empty_shape(jaccli, tmp_path, suffix) -> None:
    path = tmp_path / f"j{suffix}"
    run = jaccli("jacobian", "--expr", "x.sin()", "--shape", "scalar", "--out", str(path))
    assert run.exit_code == 0, run.stderr
    if suffix == ".npy":
        shape = np.load(path).shape
    elif suffix == ".pt":
        shape = tuple(torch.load(path, weights_only=True).shape)
    else:
        from safetensors.numpy import load_file

        shape = load_file(str(path))["x"].shape
    assert shape == ()


# 9. The default view of a large VJP does not rerun the function row by row.
def test_a_large_vjp_finishes_without_its_default_view() -> None:
    done = subprocess.run([*jaccli_command(), "vjp", "--fn", "expsum", "--shape", "1000x10000"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "VJP vᵀ·J wrt x" in done.stdout and "Rows of x" not in done.stdout
    assert "1000 slices are too many to show by default; --view rows shows them" in done.stderr


# 10. A stream that cannot encode the glyphs gets ASCII.
@pytest.mark.parametrize(
    "args", [["presets"], ["jacobian", "--fn", "norm"], ["jacobian", "--fn", "norm", "--json"],
             ["check", "--fn", "norm"], ["vjp", "--fn", "matmul", "--wrt", "c", "--json"],
             ["jacobian", "--fn", "matmul", "--view", "heatmap"],
             ["hessian", "--fn", "logsumexp", "--view", "sparsity"],
             ["det", "--fn", "spherical", "--format", "markdown"]],
)  # fmt: skip
def test_a_non_utf8_stdout_gets_ascii(args) -> None:
    env = {**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([*jaccli_command(), *args], capture_output=True, env=env, timeout=120)
    assert b"Traceback" not in done.stderr
    assert done.returncode == (2 if "c" in args else 0), done.stderr
    assert max(done.stdout + done.stderr, default=0) < 128  # ASCII through and through
    if "--json" in args and done.returncode == 0:
        assert json.loads(done.stdout)["function"]["formula"] == "y = ‖x‖₂ over dim -1"
    if "--view" in args:  # the picture keeps its meaning: shades and blocks, not "?"
        assert b"?" not in done.stdout and (b"#" in done.stdout or b"-" in done.stdout)


def test_ascii_tables_keep_their_columns_aligned() -> None:
    env = {**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": "ascii", "COLUMNS": "120"}
    done = subprocess.run([*jaccli_command(), "presets"], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    rows = [line for line in done.stdout.splitlines() if " | " in line]
    assert any("|x|_2" in row for row in rows) and any("theta" in row for row in rows)
    separators = {tuple(i for i, c in enumerate(row) if c == "|" and row[i - 1] == " ")
                  for row in rows if "|x|_2" not in row}  # fmt: skip
    assert len(separators) == 1, done.stdout  # every row's columns start at the same place


# 11. User code cannot take over the process, even at import.
def test_sys_exit_at_import_is_a_failure_of_the_file(jaccli, tmp_path) -> None:
    source = tmp_path / "exits.py"
    source.write_text("import sys\nprint('loading')\nsys.exit(5)\ndef f(x):\n    return x\n")
    run = jaccli("jacobian", "--fn", f"{source}:f", "--shape", "2")
    assert run.exit_code == 1
    assert run.stdout == ""
    assert f"--fn: importing {source} called sys.exit(5)" in run.stderr


# 12. Usage errors, not internal errors.
def _npy_with_header(path: Path, header: str) -> None:
    text = header.encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 64)


def _safetensors(path: Path, header: dict, payload: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)


def hostile_values(tmp_path: Path) -> dict[str, str]:
    """--value arguments that must each be refused with exit 2, by what they are."""
    files = {}
    _npy_with_header(
        tmp_path / "negative.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }"
    )
    _npy_with_header(
        tmp_path / "garbled.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,"
    )
    _npy_with_header(
        tmp_path / "deep.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1," * 65 + "), }",
    )
    torch.save(torch.ones(3).to_sparse(), tmp_path / "sparse.pt")
    torch.save(
        torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8), tmp_path / "quantized.pt"
    )
    torch.save(torch.empty(3, device="meta"), tmp_path / "meta.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    _safetensors(
        tmp_path / "f8.safetensors",
        {"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}},
        b"\x01\x02",
    )
    _safetensors(
        tmp_path / "deep.safetensors",
        {"x": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}},
        b"\0" * 4,
    )
    for path in tmp_path.iterdir():
        files[path.name] = f"x=@{path}"
    files["huge integer"] = "x=[" + "9" * 400 + "]"
    files["65 deep"] = "x=" + "[" * 65 + "1" + "]" * 65
    files["long name"] = "x=@" + "a" * 300 + ".npy"
    return files  # fmt: skip


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_hostile_values_are_usage_errors(jaccli, tmp_path) -> None:
    for label, value in hostile_values(tmp_path).items():
        run = jaccli("jacobian", "--fn", "expsum", "--value", value, "--json")
        assert run.exit_code == 2, (label, run.stderr)
        line, error = run.stderr.splitlines()
        assert "internal error" not in line, (label, line)
        assert json.loads(error)["error"]["code"] != "internal"


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--shape", "x".join(["1"] * 65)], 2),
     (["--shape", "999999999999x999999999999", "--plan"], 3),
     (["--shape", "2", "--expr", "x.sum(dim=1e6)"], 2)],
)  # fmt: skip
def test_more_usage_errors_and_refusals(jaccli, args, code) -> None:
    function = [] if "--expr" in args else ["--fn", "expsum"]
    run = jaccli("jacobian", *function, *args)
    assert run.exit_code == code, run.stderr
    assert "internal error" not in one_line(run.stderr)


def test_a_cotangent_with_a_huge_integer_is_a_usage_error(jaccli) -> None:
    run = jaccli("vjp", "--fn", "sigmoid", "--cotangent", "[" + "1" * 400 + ", 1, 1]")
    assert run.exit_code == 2 and "past the range of float64" in one_line(run.stderr)


def test_writing_that_fails_says_cannot_write(jaccli, tmp_path, monkeypatch) -> None:
    def full_disk(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(__import__("jaccli.render.files").render.files._WRITERS, ".npy", full_disk)
    run = jaccli("jacobian", "--fn", "expsum", "--out", str(tmp_path / "j.npy"))
    assert run.exit_code == 1
    assert one_line(run.stderr).endswith("cannot write --out " + repr(str(tmp_path / "j.npy"))
                                          + ": No space left on device")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    missing = jaccli("jacobian", "--fn", "expsum", "--out", "/proc/no/such/dir/j.npy")
    assert missing.exit_code == 2 and "no directory" in missing.stderr


def test_a_custom_backward_that_raises_names_its_file_and_line(jaccli) -> None:
    run = jaccli("jacobian", "--fn", f"{REALWORLD}:failing_backward", "--shape", "2")
    assert run.exit_code == 1
    line = one_line(run.stderr)
    assert "differentiating failing_backward raised ValueError: backward is not implemented" in line
    assert "realworld.py:" in line


# 13. One line means one line.
def test_warnings_are_one_jaccli_line_without_paths(jaccli) -> None:
    run = jaccli("jacobian", "--fn", f"{REALWORLD}:warns", "--shape", "2")
    assert run.exit_code == 0
    assert run.stderr == "jacobian: warning: UserWarning: the input is not normalised\n"


def test_plan_json_refusals_print_the_error_line_and_object(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "100000x100000", "--plan", "--json")
    assert run.exit_code == 3
    line, error = run.stderr.splitlines()
    assert line.startswith("jacobian: the 100000×10000000000 Jacobian would need")
    assert json.loads(error)["error"]["code"] == "memory_budget"
    assert json.loads(run.stdout)["plan"]["refused"]


# 14. Messages that say the real reason; one rule for names.
def test_input_names_follow_one_rule(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "θ * 2", "--shape", "θ=2", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["wrt"] == ["θ"]
    for bad in ("1x=2", "for=2"):
        assert jaccli("jacobian", "--fn", "expsum", "--shape", bad).exit_code == 2


def test_ctrl_c_wrapped_by_python_machinery_still_exits_130(jaccli, monkeypatch) -> None:
    import jaccli.engine as engine

    def interrupted_import(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as error:  # as a class body's __set_name__ wraps it
            raise RuntimeError("Error calling __set_name__ on 'cached_property'") from error

    monkeypatch.setattr(engine, "run_jacobian", interrupted_import)
    run = jaccli("jacobian", "--fn", "expsum")
    assert run.exit_code == 130
    assert "internal error" not in run.stderr


def test_an_output_named_by_a_terminal_escape_is_refused(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "tests/fixtures/hostile_names.py:escape_named", "--shape", "3",
                 "--view", "heatmap")  # fmt: skip
    assert run.exit_code == 1
    assert "control characters" in run.stderr and "\x1b" not in run.stderr + run.stdout


HOSTILE_NAMES = "tests/fixtures/hostile_names.py"
MARKUP_NAMES = [
    "<script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "$\\input{/etc/passwd}$",
    "[bold]y[/bold]",
]


def test_names_with_markup_print_as_written_and_mean_nothing(jaccli) -> None:
    from markdown_it import MarkdownIt

    fn = f"{HOSTILE_NAMES}:markup_named"
    markdown = jaccli("jacobian", "--fn", fn, "--shape", "2", "--format", "markdown")
    assert markdown.exit_code == 0, markdown.stderr
    html = MarkdownIt("commonmark").enable("table").render(markdown.stdout)
    assert "<script>" not in html and "<a " not in html  # no live HTML, no link
    assert "&lt;script&gt;alert(1)&lt;/script&gt;[0]" in html
    assert "[x](javascript:alert(1))[1]" in html and "$\\input{/etc/passwd}$[0]" in html
    latex = jaccli("jacobian", "--fn", fn, "--shape", "2", "--format", "latex")
    assert latex.exit_code == 0, latex.stderr
    source = [line for line in latex.stdout.splitlines() if not line.startswith("%")]
    assert "\\mathit{\\$\\textbackslash{}input\\{/etc/passwd\\}\\$}" in "\n".join(source)
    assert not any("\\input" in line.replace("\\textbackslash{}input", "") for line in source)
    table = jaccli("jacobian", "--fn", fn, "--shape", "2")
    assert table.exit_code == 0, table.stderr
    for name in MARKUP_NAMES:  # Rich markup stays text
        assert f"{name}[0]" in table.stdout


def test_an_fn_attribute_that_is_not_a_python_name_is_refused(jaccli) -> None:
    # the file answers any attribute (a module __getattr__): a newline would have left
    # \input live in LaTeX and an escape sequence would have reached the terminal
    for attribute in ["f\n\\input{/etc/passwd}", "f\x1b[2J", "[bold]f"]:
        run = jaccli("jacobian", "--fn", f"{HOSTILE_NAMES}:{attribute}", "--shape", "2",
                     "--format", "latex")  # fmt: skip
        assert run.exit_code == 2, run.stderr
        assert f"{attribute!r} is not a Python name" in run.stderr
        assert "\x1b" not in run.stderr and run.stdout == ""


def test_csv_labels_a_spreadsheet_would_run_are_quoted(jaccli, tmp_path) -> None:
    import csv

    out = tmp_path / "j.csv"
    run = jaccli("jacobian", "--fn", f"{HOSTILE_NAMES}:formula_named", "--shape", "2",
                 "--out", str(out))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    rows = list(csv.reader(out.open(encoding="utf-8")))
    labels = [row[0] for row in rows[1:]]
    assert labels == [f'\'=HYPERLINK("http://evil","x")[{i}]' for i in range(2)]
    cells = [cell for row in rows for cell in row]
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    numbers = [float(c) for row in rows[1:] for c in row[1:]]  # a leading minus is a number
    assert len(numbers) == 4 and numbers[1] == numbers[2] == 0


def test_names_in_picture_files_are_drawn_as_written(jaccli, tmp_path) -> None:
    # mathtext would read $…$ (and fail on \input); markup is text in the SVG
    path = tmp_path / "j.svg"
    run = jaccli("jacobian", "--fn", f"{HOSTILE_NAMES}:markup_named", "--shape", "2",
                 "--out", str(path))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    svg = path.read_text(encoding="utf-8")
    assert "<!-- $\\input{/etc/passwd}$ -->" in svg and "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;, [x](javascript:alert(1))" in svg
