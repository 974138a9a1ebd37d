"""Fuzzing the parsers, the expression compiler, the loaders, output names in every text format,
the lines of a point stream and user functions that misbehave, with generated input.

Every property is the same promise: a hostile input gives a result or a UsageError (exit 2) /
ResourceError (exit 3) / ComputationError (exit 1), never another exception, a hang, or an
allocation past the limits. JACCLI_FUZZ_EXAMPLES raises the number of cases (default 400 per
property, a few thousand in all); every input that ever broke one is kept as an @example.
Output names must stay text in every format (no live markup, no control character), and every
non-blank stream line must give its point or its error, numbered as an editor numbers it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jaccli import spec
from jaccli.engine import prepare
from jaccli.errors import ComputationError, JaccliError, ResourceError, UsageError
from jaccli.functions.expression import ALLOWED_CALLS, compile_expression
from jaccli.loaders import load_array

EXAMPLES = int(os.environ.get("JACCLI_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LIMIT = 64 * 1024
"""--max-value-size for the fuzzed files and JSON: 64 KiB."""

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@FUZZ
@given(st.one_of(texts, st.lists(st.integers(-3, 10**13), max_size=70).map(
    lambda dims: "x".join(map(str, dims)))))  # fmt: skip
@example("x".join(["1"] * 65))
@example("9" * 13)
def test_shapes_parse_or_are_refused(text: str) -> None:
    try:
        shape = spec.parse_shape(text)
    except UsageError:
        return
    assert len(shape) <= spec.MAX_NDIM and all(isinstance(d, int) and d >= 1 for d in shape)


@FUZZ
@given(texts)
@example("1e999GiB")
@example("9" * 30)
def test_byte_sizes_parse_or_are_refused(text: str) -> None:
    with contextlib.suppress(UsageError):
        assert spec.parse_bytes(text) >= 0


json_numbers = st.one_of(
    st.integers(-(10**400), 10**400), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.text(max_size=3),
)  # fmt: skip
json_values = st.recursive(
    json_numbers,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=40,
)  # fmt: skip


@FUZZ
@given(st.one_of(json_values.map(json.dumps), texts))
@example("[" + "9" * 400 + "]")
@example("[" * 65 + "1" + "]" * 65)
@example("[" * 100000)
@example("1" * 5000)
def test_values_and_cotangents_parse_or_are_refused(text: str) -> None:
    assume(not text.startswith("@"))  # a file or stdin ("@-" waited on pytest's stdin)
    for parse in (
        lambda: spec.parse_value_option(f"x={text}", LIMIT),
        lambda: spec.parse_cotangent(text, LIMIT),
    ):
        try:
            result = parse()
        except UsageError:
            continue
        arrays = result.values() if isinstance(result, dict) else [result]
        for array in arrays:
            if isinstance(array, str):
                continue
            data = array[1] if isinstance(array, tuple) else array
            assert data.values.shape == data.shape and len(data.shape) <= spec.MAX_NDIM
            assert data.values.dtype in (np.int64, np.float64)


# The expression compiler: generated from its own grammar, with forbidden pieces mixed in.
FORBIDDEN = [
    "x.__class__", "x.numpy()", "x.tofile('p')", "open('f')", "__import__('os')",
    "(lambda: 1)()", "[x for x in x]", "f'{x}'", "x.data", "x.grad_fn", "x if x else x",
    "x.__dict__", "getattr(x, 'T')", "x.exp(dim=torch)", "x[x]", "{x: 1}", "x.sum(dim=x)",
]  # fmt: skip
atoms = st.sampled_from(["x", "y", "1", "2.5", "-3", "1e6", "999999999", "0"])
calls = st.sampled_from(list(ALLOWED_CALLS))
keywords = st.sampled_from(["", ", dim=0", ", dim=-1", ", keepdim=True", ", p=2", ", dim=1e6",
                            ", dim=99", ", 20000", ", 1"])  # fmt: skip


def _grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**", "@"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(calls, inner, keywords).map(lambda t: f"{t[0]}({t[1]}{t[2]})"),
        st.tuples(inner, calls, keywords).map(lambda t: f"({t[0]}).{t[1]}({t[2][2:]})"),
        inner.map(lambda e: f"({e}).T"),
        st.tuples(inner, st.sampled_from(["[0]", "[:, 1:]", "[-1]", "[::2]", "[5]", "[0, 0]"])).map(
            lambda t: f"({t[0]}){t[1]}"
        ),
        inner.map(lambda e: f"-{e}"),
    )  # fmt: skip


expressions = st.recursive(atoms, _grow, max_leaves=8)


@FUZZ
@given(st.one_of(expressions, st.tuples(expressions, st.sampled_from(FORBIDDEN)).map(
    lambda t: f"{t[0]} + {t[1]}")))  # fmt: skip
@example("x * 9 ** 9 ** 9")
@example("x ** (8*8*8)")
@example("diag(x, 20000).sum()")
@example("(x + x.T).sum()")
@example("x.sum(dim=1e6)")
@example("-(x).outer()")
def test_expressions_compile_or_are_refused_and_run_within_bounds(text: str) -> None:
    forbidden = any(piece in text for piece in FORBIDDEN)
    try:
        function = compile_expression(text)
    except UsageError:
        return
    assert not forbidden, f"{text!r} compiled"
    shapes = [(name, (3, 3)) for name in function.input_names]
    try:
        problem = prepare(function, shape_options=shapes, budget=16 * 1024**2, dtype="float64")
    except (UsageError, ResourceError, ComputationError):
        return
    outputs_bytes = sum(math.prod(s) for s in problem.output_shapes.values()) * 8
    assert outputs_bytes <= 16 * 1024**2


# The loaders: random .npy headers, strided .pt views, random safetensors headers.
def _npy(header: str, payload: bytes) -> bytes:
    text = header.encode("latin1", errors="replace")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) % 65536) + text + payload


descrs = st.sampled_from(["<f4", "<f8", "<i8", "|b1", "<c8", "O", "<U3", "|V4", "<f2", "x", ""])
dims = st.lists(st.integers(-2, 10**7), max_size=4)


@FUZZ
@given(descrs, dims, st.booleans(), st.binary(max_size=64), st.integers(0, 6))
@example("<f4", [2], False, b"\0" * 8, 0)
def test_npy_headers(tmp_path_factory, descr, shape, fortran, payload, cut) -> None:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(_npy(header[: len(header) - cut], payload))
    _load_or_refuse(path)


@FUZZ
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=3), st.sampled_from(
    [torch.float32, torch.float64, torch.int64, torch.float16]))  # fmt: skip
def test_pt_views(tmp_path_factory, sizes, dtype) -> None:
    path = tmp_path_factory.mktemp("pt") / "x.pt"
    torch.save(torch.ones(1, dtype=dtype).expand(*sizes) if len(sizes) else torch.ones(1), path)
    result = _load_or_refuse(path)
    if result is not None:
        assert result.values.size * 8 <= 2 * LIMIT


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=4),
        st.fixed_dictionaries({
            "dtype": st.sampled_from(["F32", "F64", "I64", "F8_E4M3", "BF16", "BOOL", "??"]),
            "shape": st.lists(st.integers(-1, 10**6), max_size=3),
            "data_offsets": st.lists(st.integers(-1, 100), min_size=2, max_size=2),
        }),
        max_size=3,
    ),
    st.binary(max_size=100),
)  # fmt: skip
def test_safetensors_headers(tmp_path_factory, header, payload) -> None:
    text = json.dumps(header).encode()
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)
    _load_or_refuse(path)


def _load_or_refuse(path: Path):
    try:
        result = load_array(str(path), LIMIT)
    except UsageError:
        return None
    except JaccliError as error:  # any other kind would be the wrong exit code
        pytest.fail(f"{path.name}: {type(error).__name__}: {error.message}")
    assert result.values.dtype in (np.float32, np.float64, np.int64)
    assert len(result.shape) <= spec.MAX_NDIM and all(d >= 1 for d in result.shape)
    return result


def test_the_fuzzed_file_kinds_round_trip_when_valid(tmp_path) -> None:
    """The generators above can produce valid files: a valid one loads exactly."""
    path = tmp_path / "ok.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6.0).reshape(2, 3))
    path.write_bytes(buffer.getvalue())
    np.testing.assert_array_equal(load_array(str(path), LIMIT).values, np.arange(6.0).reshape(2, 3))


# Output names: markup of every format jaccli writes, control and invisible characters.
NAME_PIECES = [
    "<script>", "</b>", "[x](javascript:alert(1))", "[bold]", "[/]", "$", "$x^2$", "\\input{a}",
    "\\", "{", "}", "%", "&", "#", "_", "^", "~", "*", "`", "|", "=", "+", "-", "@", "!", ":",
    "\x1b[2J", "\n", "\r", "\t", "\x00", "\u200b", "\u202e", "\ufeff", "\u2028", "\xa0", "é", "∂",
]  # fmt: skip
names = st.lists(st.one_of(st.sampled_from(NAME_PIECES), st.text("ab", min_size=1, max_size=2)),
                 min_size=1, max_size=5).map("".join)  # fmt: skip
LATEX_COMMANDS = {
    "frac", "partial", "mathit", "left", "right", "begin", "end", "textbackslash", "texttt",
    "cdots", "vdots", "ddots", "times", "ensuremath", "theta", "phi", "cdot", "top", "Sigma",
    "surd", "operatorname", "det", "log", "lvert", "rvert", "setcounter",
}  # fmt: skip
MARKDOWN_TAGS = {"p", "strong", "code", "h3", "table", "thead", "tbody", "tr", "th", "td"}


def _named_result(name: str):
    """J of one output called `name` (sin of a 2-vector), or None when the name is refused."""
    from jaccli.engine import run_jacobian
    from jaccli.functions.model import Function, InputSpec

    function = Function("named", "y = sin(x)", (InputSpec("x", (2,)),), lambda x: {name: x.sin()})
    try:
        return run_jacobian(prepare(function, dtype="float64"))
    except ComputationError as error:
        assert "names need letters without dots, spaces or control characters" in error.message
        return None


def _controls(text: str) -> set[str]:
    return {c for c in text if not c.isprintable() and c != "\n"}


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 20))
@given(names)
@example("<script>alert(1)</script>")
@example("[x](javascript:alert(1))")
@example("=HYPERLINK(1)")
@example("$\\input{a}$")
def test_output_names_are_text_in_every_format(tmp_path_factory, name: str) -> None:
    import csv
    import re

    from markdown_it import MarkdownIt
    from rich.console import Console

    from jaccli.render.files import result_arrays, write_out
    from jaccli.render.labels import visible
    from jaccli.render.layout import Layout
    from jaccli.render.tables import jacobian_renderable
    from jaccli.render.text_formats import formatted

    result = _named_result(name)
    if result is None:
        return
    markdown = formatted(result, "markdown", 4, False)
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    assert set(re.findall(r"<(\w+)", html)) <= MARKDOWN_TAGS, html
    latex = formatted(result, "latex", 4, False)
    for text in (markdown, latex):
        assert not _controls(text)
    for line in latex.splitlines():
        if line.startswith("%"):
            continue
        plain = re.sub(r"\\textbackslash\{\}|\\[{}$&#_%]|\\[\^~]\{\}", "", line)
        assert "%" not in plain and "$" not in plain, line
        assert set(re.findall(r"\\([A-Za-z]+)", plain)) <= LATEX_COMMANDS, line
        assert plain.count("{") == plain.count("}"), line
    path = tmp_path_factory.mktemp("csv") / "j.csv"
    write_out(path, result_arrays(result)[:1])
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    labels = rows[0][1:] + [row[0] for row in rows[1:]]
    shown = [f"{visible(name)}[{i}]" for i in (0, 1)]
    assert [label.removeprefix("'") for label in labels[2:]] == shown
    assert not any(lab.startswith(("=", "+", "-", "@", "\t", "\r")) for lab in labels)
    console = Console(width=200, color_system=None, legacy_windows=False)
    with console.capture() as captured:
        console.print(jacobian_renderable(result, Layout(width=200, color=False)))
    terminal = captured.get()
    assert not _controls(terminal) and f"{name}[0]" in terminal


# Stream lines: points, blank keep-alives, garbage, wrong shapes, bytes that are not UTF-8,
# lines past --max-value-size; each non-blank line is one point, numbered as an editor does.
stream_lines = st.lists(
    st.one_of(
        st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2).map(
            lambda v: json.dumps(v).encode()),
        st.sampled_from([b"", b"  ", b"\r", b"[1,", b"[1, 2, 3]", b"nan", b"\xff\xfe", b"[[1]]",
                         b"{}", b"[1e999, 1]", b"[" + b"1, " * 400 + b"1]"]),
        st.binary(max_size=30).filter(lambda b: b"\n" not in b),
    ),
    max_size=40,
)  # fmt: skip


@FUZZ
@given(stream_lines, st.booleans())
@example([b""] * 3000 + [b"[1, 2]"], True)
def test_stream_lines_each_give_a_point_or_its_error(monkeypatch, lines, final_newline) -> None:
    from jaccli.points import PointError, PointStream

    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    if len(data) >= 60_000:
        return  # past what a pipe buffers without a reader
    read, write = os.pipe()
    with os.fdopen(write, "wb") as writer, os.fdopen(read, "rb") as reader:
        monkeypatch.setattr("sys.stdin", reader)
        writer.write(data)
        writer.close()
        items = [item for batch in PointStream("x", 1000).batches() for item in batch]
    expected = [(number, line) for number, line in enumerate(data.split(b"\n"), start=1)
                if line.strip()]  # fmt: skip
    assert [line for _, line, _ in items] == [number for number, _ in expected]
    assert [index for index, _, _ in items] == list(range(len(expected)))
    for (_, number, point), (_, line) in zip(items, expected, strict=True):
        if isinstance(point, PointError):
            assert isinstance(point.error, UsageError)
            assert f"line {number}" in point.error.message
        else:
            assert len(line) <= 1000
            np.testing.assert_array_equal(point.values, np.array(json.loads(line), dtype=float))


# User functions that misbehave: what they do on the side, and what they return.
SIDE_EFFECTS = {
    "nothing": lambda x: None,
    "print": lambda x: print("printed by the function"),
    "print to stderr": lambda x: print("to stderr", file=__import__("sys").stderr),
    "warn": lambda x: __import__("warnings").warn("the function warns", stacklevel=1),
    "raise": lambda x: (_ for _ in ()).throw(ValueError("the function raised")),
    "exit 0": lambda x: (_ for _ in ()).throw(SystemExit(0)),
    "exit 3": lambda x: (_ for _ in ()).throw(SystemExit(3)),
    "mutate": lambda x: x.add_(1),
    "mutate detached": lambda x: x.detach().mul_(2),
}


async def _coroutine(x):
    return x


def _generator(x):
    yield x


RETURNS = {
    "sine": lambda x: x.sin(),
    "empty": lambda x: x[:0],
    "sparse": lambda x: x.to_sparse(),
    "meta": lambda x: torch.empty(3, device="meta"),
    "complex": lambda x: x.to(torch.complex64),
    "integers": lambda x: x.long(),
    "scalar": lambda x: x.sum(),
    "None": lambda x: None,
    "int": lambda x: 3,
    "str": lambda x: "y",
    "floats": lambda x: [1.0, 2.0],
    "empty list": lambda x: [],
    "empty dict": lambda x: {},
    "dotted key": lambda x: {"a.b": x * 1},
    "int key": lambda x: {1: x * 1},
    "blank key": lambda x: {"": x * 1},
    "tuple with None": lambda x: (x * 1, None),
    "coroutine": _coroutine,
    "generator": _generator,
    "numpy": lambda x: np.ones(3),
    "infinite": lambda x: x * math.inf,
    "nested": lambda x: {"a": [x * 1, {"b": (x * 2,)}]},
}


@settings(FUZZ, max_examples=min(EXAMPLES, 60))
@given(
    st.lists(st.sampled_from(sorted(SIDE_EFFECTS)), max_size=2),
    st.sampled_from(sorted(RETURNS)),
    st.sampled_from(["jacobian", "vjp", "jvp", "hessian"]),
)
@example(["print"], "coroutine", "jacobian")
@example(["exit 3"], "sine", "jacobian")
def test_misbehaving_user_functions_get_one_line_and_an_exit_code(
    jaccli, side_effects: list[str], returned: str, command: str
) -> None:
    import sys
    import types

    def guest(x):
        for name in side_effects:
            SIDE_EFFECTS[name](x)
        return RETURNS[returned](x)

    module = types.ModuleType("jaccli_fuzz_guest")
    module.f = guest  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        run = jaccli(command, "--fn", "jaccli_fuzz_guest:f", "--shape", "3", "--json")
    finally:
        del sys.modules[module.__name__]
    assert run.exit_code in (0, 1, 2, 3), (side_effects, returned, run.stderr)
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "printed by the function" not in run.stdout  # the document alone (validated)
    if run.exit_code == 0:
        assert run.json()["command"] == command
    else:
        assert run.stdout == ""
        assert "never awaited" not in run.stderr
