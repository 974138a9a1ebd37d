"""--points, --jsonl, --keep-going and --device: many points in one run equal the same number of
single-point runs, streamed line by line, with a coprocess, bad points and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import jaccli_command, validate_document, values_of

BATCHING = "tests/fixtures/batching.py"
USERFNS = "tests/fixtures/userfns.py"


def _save(tmp_path, name: str, array: np.ndarray) -> str:
    path = tmp_path / name
    np.save(path, array)
    return str(path)


CASES = [
    # (command args, points input, one point's shape)
    (["jacobian", "--fn", "polar"], "x", (2,)),
    (["jacobian", "--fn", f"{USERFNS}:quadratic", "--shape", "w=3x3", "--seed", "4"], "x", (3,)),
    (["jacobian", "--expr", "x.exp().sum(dim=1)"], "x", (2, 3)),
    (["det", "--fn", "spherical"], "x", (3,)),
    (["vjp", "--fn", "matmul", "--wrt", "a", "--cotangent", "randn"], "a", (2, 3)),
    (["jvp", "--fn", "softmax", "--shape", "x=4", "--tangent", "randn"], "x", (4,)),
    (["hessian", "--fn", "logsumexp", "--shape", "x=3"], "x", (3,)),
    (["hvp", "--fn", "logsumexp", "--shape", "x=3", "--vector", "randn"], "x", (3,)),
]


def _arrays(document: dict, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every {shape, values} entry of a document by its path."""
    found: dict[str, np.ndarray] = {}

    def walk(node, path: str) -> None:
        if isinstance(node, dict) and set(node) == {"shape", "values"}:
            found[path] = values_of(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key not in skip:
                    walk(value, f"{path}/{key}")

    walk(document, "")
    return found


@pytest.mark.parametrize(("args", "name", "shape"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_n_points_equal_n_single_point_runs(jaccli, tmp_path, args, name, shape) -> None:
    points = np.random.default_rng(7).standard_normal((5, *shape))
    if args[:2] == ["det", "--fn"]:
        points[:, 0] = np.abs(points[:, 0]) + 0.5  # r > 0
    source = _save(tmp_path, "points.npy", points)
    run = jaccli(*args, "--points", f"{name}=@{source}", "--dtype", "float64", "--json")
    assert run.exit_code == 0, run.stderr
    stacked = run.json()
    assert stacked["points"] == 5
    many = _arrays(stacked, skip=("guard",))
    for k in (0, 2, 4):
        value = json.dumps(points[k].tolist())
        single = jaccli(*args, "--value", f"{name}={value}", "--dtype", "float64", "--json")
        assert single.exit_code == 0, single.stderr
        for path, array in _arrays(single.json(), skip=("guard", "view")).items():
            shared = path.split("/")[1] in ("cotangent", "tangent", "vector") or (
                path.startswith("/inputs/") and path != f"/inputs/{name}"
            )
            at_k = many[path] if shared else many[path][k]
            np.testing.assert_allclose(at_k, array, rtol=1e-12, atol=1e-14, err_msg=path)


def test_an_mlp_in_a_user_file_over_many_points(jaccli, tmp_path) -> None:
    x = np.random.default_rng(3).standard_normal((200, 16))
    source = _save(tmp_path, "x.npy", x)
    run = jaccli("jacobian", "--fn", f"{BATCHING}:mlp", "--shape", "W1=16x64", "--shape",
                 "W2=64x8", "--wrt", "x", "--points", f"x=@{source}", "--dtype", "float64",
                 "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    w1, w2 = values_of(document["inputs"]["W1"]), values_of(document["inputs"]["W2"])
    np.testing.assert_array_equal(values_of(document["inputs"]["x"]), x)
    j = values_of(document["jacobian"]["y"]["x"])
    assert j.shape == (200, 8, 16)
    # y = tanh(x W1) W2: ∂y/∂x = W2ᵀ diag(1 − tanh²(x W1)) W1ᵀ
    for k in (0, 99, 199):
        expected = w2.T @ np.diag(1 - np.tanh(x[k] @ w1) ** 2) @ w1.T
        np.testing.assert_allclose(j[k], expected, rtol=1e-12, atol=1e-14)


def test_points_are_written_stacked(jaccli, tmp_path) -> None:
    points = np.random.default_rng(1).standard_normal((7, 2))
    out = tmp_path / "j.npy"
    run = jaccli("jacobian", "--fn", "polar", "--points", f"x=@{_save(tmp_path, 'p.npy', points)}",
                 "--out", str(out), "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    j = np.load(out)
    r, theta = points[:, 0], points[:, 1]
    np.testing.assert_allclose(j[:, 0, 0], np.cos(theta), rtol=1e-12)
    np.testing.assert_allclose(j[:, 1, 1], r * np.cos(theta), rtol=1e-12)
    assert "point 0 of 7 shown" in run.stdout


def test_two_inputs_with_points_and_one_fixed(jaccli, tmp_path) -> None:
    a = np.random.default_rng(2).standard_normal((4, 2, 3))
    b = np.random.default_rng(3).standard_normal((4, 3, 2))
    a_file, b_file = _save(tmp_path, "a.npy", a), _save(tmp_path, "b.npy", b)
    run = jaccli("vjp", "--fn", "matmul", "--points", f"a=@{a_file}", "--points", f"b=@{b_file}",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    # with v = ones: a.grad = 1 bᵀ, b.grad = aᵀ 1
    np.testing.assert_allclose(
        values_of(document["vjp"]["a"]), np.ones((4, 2, 2)) @ b.transpose(0, 2, 1)
    )
    np.testing.assert_allclose(
        values_of(document["vjp"]["b"]), a.transpose(0, 2, 1) @ np.ones((4, 2, 2))
    )


def test_a_jsonl_file_of_points(jaccli, tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("[1, 0]\n\n[2, 0.5]\n")
    run = jaccli(
        "jacobian", "--fn", "polar", "--points", f"x=@{path}", "--jsonl", "--dtype", "float64"
    )
    assert run.exit_code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["point"] for line in lines] == [0, 1]
    for line in lines:
        validate_document(line)
    assert values_of(lines[1]["jacobian"]["y"]["x"])[0, 0] == pytest.approx(np.cos(0.5))


def test_a_function_vmap_cannot_run_falls_back_to_a_loop(jaccli, tmp_path) -> None:
    points = np.random.default_rng(5).standard_normal((3, 2))
    source = _save(tmp_path, "p.npy", points)
    run = jaccli("jacobian", "--fn", f"{BATCHING}:item_branch", "--points", f"x=@{source}",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "computed point by point instead" in run.stderr
    j = values_of(run.json()["jacobian"]["y"]["x"])
    for k, x in enumerate(points):  # y = 2x where Σx > 0 (read out by .item()), else 3x
        np.testing.assert_allclose(j[k], (2.0 if x.sum() > 0 else 3.0) * np.eye(2), rtol=1e-12)


def test_hvp_of_logsumexp_along_ones_over_many_points_is_no_false_alarm(jaccli, tmp_path) -> None:
    # H·1 of logsumexp cancels to ~0 in float32: the points probe weighs the rounding at H's
    # scale, as the single-point guard does, instead of refusing the vectorized kernel
    points = np.random.default_rng(11).standard_normal((1000, 8)).astype(np.float32)
    run = jaccli("hvp", "--fn", "logsumexp", "--points", f"x=@{_save(tmp_path, 'p.npy', points)}",
                 "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "could not run" not in run.stderr and "warning" not in run.stderr
    document = run.json()
    assert document["guard"]["passed"] is True
    x = points.astype(np.float64)  # H = diag(s) − s sᵀ with s = softmax(x): H·1 = s − s Σs = 0
    s = np.exp(x - x.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    v = np.ones(8)
    expected = s * v - s * (s @ v)[:, None]
    np.testing.assert_allclose(values_of(document["hvp"]["x"]), expected, rtol=0, atol=1e-6)


def _stream(lines: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*jaccli_command(), "jacobian", "--fn", "polar", "--points", "x=@-",
                           "--jsonl", "--dtype", "float64", *extra], input=lines,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_bad_point_stops_the_stream_with_its_exit_code_or_is_skipped(tmp_path) -> None:
    lines = "[1, 0.5]\n[2, 0.1]\n[1, 2, 3]\n[3, 0.2]\n"
    stopped = _stream(lines)
    assert stopped.returncode == 2, stopped.stderr
    answers = [json.loads(line) for line in stopped.stdout.splitlines()]
    assert [a["point"] for a in answers] == [0, 1, 2]
    assert answers[2]["error"]["code"] == "bad_point"
    assert "a point of shape 3; the first had 2" in answers[2]["error"]["message"]
    going = _stream(lines, "--keep-going")
    assert going.returncode == 1
    answers = [json.loads(line) for line in going.stdout.splitlines()]
    assert [a["point"] for a in answers] == [0, 1, 2, 3]
    assert "error" in answers[2] and "jacobian" in answers[3]
    for answer in answers:
        validate_document(answer)


def test_a_coprocess_gets_each_answer_before_sending_the_next() -> None:
    command = [*jaccli_command(), "jacobian", "--fn", "polar", "--points", "x=@-", "--jsonl",
               "--dtype", "float64"]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        for k in range(10):
            r, theta = 1.0 + k, 0.1 * k
            process.stdin.write(json.dumps([r, theta]) + "\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())  # a deadlock here fails by timeout
            assert answer["point"] == k
            j = values_of(answer["jacobian"]["y"]["x"])
            assert j[1, 1] == pytest.approx(r * np.cos(theta), rel=1e-12)
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


def test_ctrl_c_in_a_stream_exits_130_with_every_line_whole() -> None:
    process = subprocess.Popen([*jaccli_command(), "jacobian", "--fn", "polar", "--points", "x=@-",
                                "--jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    for k in range(3):
        process.stdin.write(f"[{k + 1}, 0.5]\n")
        process.stdin.flush()
        process.stdout.readline()
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert "Traceback" not in errors
    for line in rest.splitlines():
        json.loads(line)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--points", "x=@p.npy", "--keep-going"], "--keep-going goes on past a failed point"),
        (["--jsonl"], "--jsonl prints a line per point"),
        (["--points", "x=p.npy"], "expected NAME=@FILE"),
        (["--points", "x=@-", "--plan"], "--plan with --points NAME=@- would read the stream"),
        (["--device", "cuda:7"], "--device 'cuda:7' is not available here (available: cpu"),
        (["--points", "x=@p.npy", "--view", "rows"], "--view works at one point"),
        (["--points", "x=@p.npy", "--view", "heatmap"], "--view heatmap works at one point"),
        (["--points", "x=@p.npy", "--view", "sparsity"], "--view sparsity works at one point"),
        (["--points", "y=@p.npy"], "--points 'y': polar has no input 'y' (inputs: x)"),
    ],
)
def test_bad_points_options_exit_2(jaccli, tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "p.npy", np.ones((3, 2)))
    run = jaccli("jacobian", "--fn", "polar", *args)
    assert run.exit_code == 2, run.stderr
    assert message in run.stderr


def test_plan_with_points_tells_the_chunking(jaccli, tmp_path) -> None:
    source = _save(tmp_path, "p.npy", np.zeros((10000, 2)))
    document = jaccli("jacobian", "--fn", "polar", "--points", f"x=@{source}", "--plan",
                      "--json").json()  # fmt: skip
    assert document["points"]["count"] == 10000
    assert document["points"]["chunk_size"] == 10000  # all at once: they fit the budget
    refused = jaccli("hessian", "--fn", "logsumexp", "--points",
                     f"x=@{_save(tmp_path, 'big.npy', np.zeros((3, 8000)))}", "--plan",
                     "--max-memory", "100MiB")  # fmt: skip
    assert refused.exit_code == 3
    assert "over the memory budget of 100.0 MiB" in refused.stderr


def test_check_at_every_point_fails_where_one_fails(jaccli, tmp_path) -> None:
    points = _save(tmp_path, "k.npy", np.array([[0.5, 1.0, 2.0], [0.0, -1.5, 2.0]]))
    run = jaccli("check", "--fn", "tests/fixtures/realworld.py:relu_product", "--points",
                 f"x=@{points}", "--rtol", "1e-14", "--atol", "1e-16", "--eps", "1e-2")  # fmt: skip
    assert run.exit_code == 1
    assert "check: point 1: check failed" in run.stderr


def test_the_cpu_device_computes_as_the_default(jaccli) -> None:
    plain = jaccli("jacobian", "--fn", "polar", "--json").json()
    on_cpu = jaccli("jacobian", "--fn", "polar", "--device", "cpu", "--json").json()
    assert plain["jacobian"] == on_cpu["jacobian"]


@pytest.mark.skipif(os.environ.get("CUDA_VISIBLE_DEVICES") is None, reason="no CUDA here")
def test_cuda_gives_the_cpus_numbers(jaccli) -> None:  # pragma: no cover - needs a GPU
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA here")
    plain = jaccli("jacobian", "--fn", "polar", "--dtype", "float64", "--json").json()
    on_gpu = jaccli("jacobian", "--fn", "polar", "--dtype", "float64", "--device", "cuda",
                    "--json").json()  # fmt: skip
    np.testing.assert_allclose(
        values_of(on_gpu["jacobian"]["y"]["x"]), values_of(plain["jacobian"]["y"]["x"]), rtol=1e-12
    )


def test_points_kept_for_json_obey_the_memory_budget(jaccli, tmp_path) -> None:
    source = _save(tmp_path, "many.npy", np.zeros((200_000, 2)))
    run = jaccli("jacobian", "--fn", "polar", "--points", f"x=@{source}", "--max-memory", "100MiB",
                 "--json")  # fmt: skip
    assert run.exit_code == 3
    assert "keeping 200000 points' results for --json, --out or the tables" in run.stderr
    assert run.stdout == ""
    # a process of its own: in a worker's heap, shaped by the tests before it, the kernel's
    # limit could refuse a point before the kept results' estimate did (exit 3 either way)
    streamed = subprocess.run(
        [*jaccli_command(), "jacobian", "--fn", "polar", "--points", "x=@-", "--max-memory",
         "128MiB"], input="[1, 0.5]\n" * 80_000, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert streamed.returncode == 3
    assert "use --jsonl, which prints each point as it is done" in streamed.stderr


@pytest.mark.parametrize(
    ("source", "message"),
    [("/dev/zero", "--points x=@/dev/zero: unknown kind of file"),
     ("missing.jsonl", "--points x=@missing.jsonl: no such file"),
     ("missing.npy", "--points x=@missing.npy: no such file")],
)  # fmt: skip
def test_a_points_file_that_cannot_be_read_is_named_as_points(jaccli, source, message) -> None:
    run = jaccli("jacobian", "--fn", "polar", "--points", f"x=@{source}")
    assert run.exit_code == 2
    assert message in run.stderr


def test_a_stream_survives_keep_alives_long_lines_and_a_reader_that_leaves(jaccli) -> None:
    # 3,000 blank keep-alive lines once ended in RecursionError; line numbers count them; a line
    # past --max-value-size is that point's error, after the point already answered
    long = "[" + "1, " * 200 + "1]"
    lines = "\n" * 3000 + f"[1, 0.5]\n{long}\n\n[2, 0.1]\n[1, 2, 3]\n"
    going = _stream(lines, "--keep-going", "--max-value-size", "300")
    assert going.returncode == 1, going.stderr
    answers = [json.loads(line) for line in going.stdout.splitlines()]
    assert [a["point"] for a in answers] == [0, 1, 2, 3]
    assert "jacobian" in answers[0] and "jacobian" in answers[2]
    assert answers[1]["error"]["message"].endswith("line 3002: longer than --max-value-size "
                                                   "(300 bytes)")  # fmt: skip
    assert "line 3005: a point of shape 3" in answers[3]["error"]["message"]
    stopped = jaccli("jacobian", "--fn", "polar", "--points", "x=@-", "--jsonl",
                     "--max-value-size", "300", input=f"[1, 0.5]\n{long}\n[3, 0.2]\n")  # fmt: skip
    assert stopped.exit_code == 2 and len(stopped.stdout.splitlines()) == 2
    # `--jsonl | head -1` ends quietly with 0, like `--json | head`
    command = [*jaccli_command(), "jacobian", "--fn", "polar", "--points", "x=@-", "--jsonl"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"[1, 0.5]\n" * 1000)  # answers far past what a pipe buffers
        process.stdin.close()
        process.stdout.readline()
        process.stdout.close()
        assert process.stderr is not None and process.stderr.read() == b""
        assert process.wait(timeout=120) == 0


RAISES_WHEN_NEGATIVE = """
def f(x):
    if float(x[0]) < 0:
        raise ValueError("negative")
    return x.sin()
"""


@pytest.mark.parametrize("source", ["@-", "@points.jsonl"])
def test_keep_going_passes_a_first_point_that_cannot_be_read_or_computed(
    jaccli, tmp_path, monkeypatch, source
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.py").write_text(RAISES_WHEN_NEGATIVE)
    lines = "\n[1,\n[-1, 2]\n[3, 4]\n"
    (tmp_path / "points.jsonl").write_text(lines.replace("[1,\n", ""))
    run = jaccli("jacobian", "--fn", "f.py:f", "--points", f"x={source}", "--jsonl",
                 "--keep-going", input=lines)  # fmt: skip
    assert run.exit_code == 1, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    errors = {a["point"]: a["error"]["message"] for a in answers if "error" in a}
    if source == "@-":
        assert [a["point"] for a in answers] == [0, 1, 2]
        assert errors[0].startswith("--points x=@- line 2 '[1,' is not a JSON array")
        assert errors[1] == "f raised ValueError: negative (at f.py:4)"
    else:
        assert [a["point"] for a in answers] == [0, 1]
        assert errors[0] == "f raised ValueError: negative (at f.py:4)"
    j = values_of(answers[-1]["jacobian"]["y"]["x"])
    np.testing.assert_allclose(j, np.diag(np.cos([3.0, 4.0])), rtol=1e-6)
    # a bad option is not a point's failure: it stops at once
    run = jaccli("jacobian", "--fn", "f.py:g", "--points", f"x={source}", "--jsonl",
                 "--keep-going", input=lines)  # fmt: skip
    assert run.exit_code == 2 and run.stdout == ""


SQRT_WHERE_POSITIVE = """
import torch


def f(x):
    return torch.where(x > 0, x.sqrt(), torch.zeros_like(x))
"""


def test_every_point_of_a_chunk_is_verified_not_only_its_ends(jaccli, tmp_path) -> None:
    # at x < 0, vmap's forward mode gives 0 where the single-point reverse engine gives NaN
    # (0 · ∂sqrt): the points in the middle of the chunk were printed with forward mode's J
    (tmp_path / "w.py").write_text(SQRT_WHERE_POSITIVE)
    fn = f"{tmp_path / 'w.py'}:f"
    points = [[1.0, 2.0], [-1.0, 2.0], [-1.0, 3.0], [3.0, 4.0]]
    source = _save(tmp_path, "p.npy", np.array(points))
    run = jaccli("jacobian", "--fn", fn, "--points", f"x=@{source}", "--json")
    assert run.exit_code == 0, run.stderr
    stacked = values_of(run.json()["jacobian"]["y"]["x"])
    for k, point in enumerate(points):
        alone = jaccli("jacobian", "--fn", fn, "--value", f"x={json.dumps(point)}", "--json")
        np.testing.assert_array_equal(stacked[k], values_of(alone.json()["jacobian"]["y"]["x"]))
    assert np.isnan(stacked[1]).any()
    # the disagreeing chunk is not printed: another kernel, or the loop, computed it again
    assert "could not run (at point 1" in run.stderr


def _wrong_at_point_1(value):
    """The kernel's products with 1 added at point 1 (the middle of a 3-point chunk)."""
    if isinstance(value, tuple):
        return tuple(_wrong_at_point_1(v) for v in value)
    wrong = value.clone()
    wrong[1] += 1
    return wrong


@pytest.mark.parametrize(
    "args",
    [
        ["jacobian", "--fn", "polar"],
        ["vjp", "--fn", "polar"],
        ["jvp", "--fn", "polar"],
        ["hvp", "--expr", "(x.sin() * x).sum()"],
        ["hvp", "--fn", "logsumexp"],  # H·1 = 0: the probe weighed at H's scale still catches it
        ["hessian", "--fn", "polar"],
    ],
)
def test_a_wrong_product_in_the_middle_of_a_chunk_is_caught(jaccli, tmp_path, monkeypatch, args):
    import torch

    real_vmap = torch.func.vmap

    def vmap(f, *options, **named):
        mapped = real_vmap(f, *options, **named)
        if f.__name__ != "at":  # the command's kernel; the probes' own passes stay right
            return mapped
        return lambda *values: (lambda out: (out[0], _wrong_at_point_1(out[1])))(mapped(*values))

    points = [[1.0, 0.5], [2.0, 0.3], [3.0, 0.2]]
    source = _save(tmp_path, "p.npy", np.array(points))
    monkeypatch.setattr(torch.func, "vmap", vmap)
    run = jaccli(*args, "--points", f"x=@{source}", "--dtype", "float64", "--json")
    monkeypatch.undo()
    assert run.exit_code == 0, run.stderr
    assert "at point 1" in run.stderr and "computed point by point instead" in run.stderr
    alone = jaccli(*args, "--value", "x=[2, 0.3]", "--dtype", "float64", "--json").json()
    stacked, single = run.json()[args[0]], alone[args[0]]

    def leaves(tree):
        if "values" in tree:
            return [np.array(tree["values"], dtype=float)]
        return [leaf for child in tree.values() for leaf in leaves(child)]

    for many_values, one in zip(leaves(stacked), leaves(single), strict=True):
        np.testing.assert_allclose(many_values[1], one, rtol=1e-12)


def _at_a_wrong_point_0(real_vmap):
    """torch.func.vmap, wrong as a batching rule could be for every transform alike: the
    chunk's kernel and the probe's reverse pass both compute point 0 at x + 0.25, so J and
    the reverse pass agree with each other there; only an unbatched call can tell."""
    import torch

    def vmap(f, *options, **named):
        mapped = real_vmap(f, *options, **named)

        def shifted(*values):
            moved = []
            for value in values:
                delta = torch.zeros_like(value)
                delta[0] = 0.25
                moved.append(value + delta)
            return mapped(*moved)

        return shifted if f.__name__ in ("at", "forward") else mapped

    return vmap


@pytest.mark.parametrize(
    "args",
    [
        ["jacobian", "--fn", "polar"],  # a preset: an unbatched call at point 0
        ["det", "--fn", "polar"],
        ["jacobian", "--expr", "x.sin() * x.sum()"],  # an expression: the same
        ["jacobian", "--fn", f"{USERFNS}:quadratic", "--shape", "w=2x2"],  # the single-point run
    ],
)
def test_a_vmap_wrong_alike_for_kernel_and_probe_is_caught_at_the_first_point(
    jaccli, tmp_path, monkeypatch, args
) -> None:
    import torch

    points = [[1.0, 0.5], [2.0, 0.3], [3.0, 0.2]]
    source = _save(tmp_path, "p.npy", np.array(points))
    monkeypatch.setattr(torch.func, "vmap", _at_a_wrong_point_0(torch.func.vmap))
    run = jaccli(*args, "--points", f"x=@{source}", "--dtype", "float64", "--json")
    monkeypatch.undo()
    assert run.exit_code == 0, run.stderr
    assert "at point 0" in run.stderr and "computed point by point instead" in run.stderr
    alone = jaccli(*args, "--value", "x=[1, 0.5]", "--dtype", "float64", "--json").json()
    for key in ("outputs", args[0]):
        many, one = _arrays(run.json()[key]), _arrays(alone[key])
        for path, array in one.items():
            np.testing.assert_allclose(many[path][0], array, rtol=1e-12, err_msg=path)


@pytest.mark.parametrize(
    ("expression", "first"),
    [("sqrt(x)", [-1.0, 4.0]), ("abs(x) * x.sum()", [0.0, 1.0])],  # NaN, a kink
)
def test_the_first_point_of_a_chunk_warns_as_a_run_of_that_point_alone(
    jaccli, tmp_path, expression, first
) -> None:
    # the first point is called unbatched, not by the single-point engine: its warnings (a
    # structural zero told apart, a kink) are still the ones a run of it alone gives
    source = _save(tmp_path, "p.npy", np.array([first, [1.0, 4.0], [2.0, 3.0]]))
    run = jaccli("jacobian", "--expr", expression, "--points", f"x=@{source}", "--jsonl",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    documents = [json.loads(line) for line in run.stdout.splitlines()]
    alone = jaccli("jacobian", "--expr", expression, "--value", f"x={json.dumps(first)}",
                   "--dtype", "float64", "--json").json()  # fmt: skip
    own = [[w for w in d["warnings"] if "could not run" not in w] for d in documents]
    assert own[0] == alone["warnings"] != []
    assert own[1] == []


def test_a_jvp_forward_mode_cannot_run_is_vectorized_by_the_other_mode(jaccli, tmp_path) -> None:
    # a custom autograd.Function without jvp: vmap(jvp) fails, a VJP of the VJP runs, no loop
    points = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [-0.4, 0.2, 1.5]])
    source = _save(tmp_path, "p.npy", points)
    run = jaccli("jvp", "--fn", f"{BATCHING}:cube_without_jvp", "--points", f"x=@{source}",
                 "--tangent", "[1.0, -2.0, 0.5]", "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "computed vmap(vjp(vjp)) instead" in run.stderr
    assert "point by point" not in run.stderr
    t = np.array([1.0, -2.0, 0.5])  # y = x³·Σx: J·t = 3x²·t·Σx + x³·Σt
    expected = [3 * x**2 * t * x.sum() + x**3 * t.sum() for x in points]
    np.testing.assert_allclose(values_of(run.json()["jvp"]["y"]), expected, rtol=1e-12)


@pytest.mark.parametrize(("command", "modes"), [("vjp", ("vjp", "vᵀ·jacfwd")),
                                                ("jvp", ("jvp", "vjp(vjp)"))])  # fmt: skip
def test_both_kernels_of_a_product_give_the_same_products(command, modes) -> None:
    import torch

    from jaccli.engine import prepare, run_jvp, run_vjp
    from jaccli.engine.many import _vectorized_chunk, kernel_modes
    from jaccli.functions import PRESETS
    from jaccli.spec import ArrayData

    assert kernel_modes(None, command) == modes  # type: ignore[arg-type]
    problem = prepare(PRESETS["matmul"], shape_options=[("a", (2, 3)), ("b", (3, 2))],
                      wrt=("a", "b"), dtype="float64")  # fmt: skip
    points = {"a": torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator())}
    shapes = problem.output_shapes if command == "vjp" else {"a": (2, 3), "b": (3, 2)}
    directions = {n: torch.randn(s, dtype=torch.float64) for n, s in shapes.items()}
    given = {n: ArrayData(tuple(v.shape), v.numpy()) for n, v in directions.items()}
    run = run_vjp if command == "vjp" else run_jvp

    def single(point):
        return run(point, given)

    products = []
    for mode in modes:
        chunk = _vectorized_chunk(problem, command, points, single, directions, 0, mode)
        arrays = chunk.arrays
        products.append([np.asarray(p) for p in arrays.products])
    for first, second in zip(*products, strict=True):
        np.testing.assert_allclose(first, second, rtol=1e-12, atol=1e-14)


def test_points_of_a_scalar_input_are_the_entries_of_a_1d_file(jaccli, tmp_path) -> None:
    # one point of a 1-D .npy or JSON list is a number: it was an internal error
    xs = np.array([0.5, 1.0, 2.0])
    for source in (_save(tmp_path, "p.npy", xs), str(tmp_path / "p.json")):
        (tmp_path / "p.json").write_text(json.dumps(xs.tolist()))
        run = jaccli("jacobian", "--expr", "x.sin()", "--points", f"x=@{source}", "--dtype",
                     "float64", "--json")  # fmt: skip
        assert run.exit_code == 0, run.stderr
        np.testing.assert_allclose(values_of(run.json()["jacobian"]["y"]["x"]), np.cos(xs))


def test_a_stacked_document_writes_each_number_as_the_points_documents_do() -> None:
    """--json of many points writes each array once for every point (values_deferred): the
    numbers, NaN, ±Infinity, -0 and float32's shortest digits are those of each point's own
    document."""
    from jaccli.render.document import stacked_document, tensor_entry, values_deferred

    rng = np.random.default_rng(0)
    points = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(4)]
    points[1][0, 0], points[2][1, 2], points[3][0, 1] = np.nan, -np.inf, -0.0
    shared = np.arange(3.0)

    def document(k: int) -> dict:
        return {
            "inputs": {"x": tensor_entry(points[k]), "a": tensor_entry(shared)},
            "jacobian": {"y": {"x": tensor_entry(points[k].astype(np.float64) * 0.1)}},
            "guard": None if k else {"largest": tensor_entry(np.float64(k))},
        }

    plain = stacked_document([document(k) for k in range(4)], ["x"])
    with values_deferred():
        deferred_parts = [document(k) for k in range(4)]
    assert stacked_document(deferred_parts, ["x"]) == plain
    assert plain["inputs"]["x"]["values"][1][0][0] == "NaN" and plain["points"] == 4


def test_a_batch_of_lines_read_with_one_json_call_gives_what_line_by_line_gives() -> None:
    from jaccli.arrays import parse_json_array
    from jaccli.points import _flat_rows

    lines = [b"[1.5, -2.25]", b" [1e-3,2E5 ] ", b"[1, 2]", b"[0.1, 2]", b"[[1.0, 2.0]]",
             b"[1e999, 0.5]", b"[-0.0, 3.0]", b"[0.1, 0.2, 0.3]", b"[1.0, oops]", None,
             b"[0.30000000000000004, 5e-324]", b"[1.0, 2.0], [3.0"]  # fmt: skip
    found = _flat_rows(lines)
    assert [k for k, point in enumerate(found) if point is not None] == [0, 1, 5, 6, 10]
    for line, point in zip(lines, found, strict=True):
        if point is not None:
            alone = parse_json_array(line.decode(), what="line")
            assert point.shape == alone.shape and point.values.dtype == alone.values.dtype
            assert point.values.tobytes() == alone.values.tobytes()


def test_a_piped_stream_refuses_a_point_past_float32_among_many_read_together() -> None:
    lines = "".join(f"[1.0, {k / 100}]\n" for k in range(50)).replace("[1.0, 0.2]", "[1e300, 0.2]")
    run = subprocess.run([*jaccli_command(), "jacobian", "--fn", "polar", "--points", "x=@-",
                          "--jsonl", "--keep-going"], input=lines, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert [a["point"] for a in answers] == list(range(50))
    assert [a["point"] for a in answers if "error" in a] == [20]
    assert "line 21: 1e+300 is past float32's range" in answers[20]["error"]["message"]


def test_a_piped_stream_writes_what_the_same_points_from_a_file_write(tmp_path) -> None:
    # the stream reads its waiting lines with one JSON call and writes its answers a batch at
    # a time: the text is the same, byte for byte, as that of a .jsonl file read line by line
    rng = np.random.default_rng(12)
    lines = "".join(f"[{r!r}, {t!r}]\n" for r, t in rng.uniform(0.5, 3.0, (600, 2)).tolist())
    lines = lines.replace("\n[", "\n[1, 2]\n[", 1)  # an integer point, read alone
    (tmp_path / "p.jsonl").write_text(lines)
    command = [*jaccli_command(), "jacobian", "--fn", "polar", "--jsonl"]
    piped = subprocess.run([*command, "--points", "x=@-"], input=lines, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    from_file = subprocess.run([*command, "--points", f"x=@{tmp_path / 'p.jsonl'}"],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0 and from_file.returncode == 0, piped.stderr + from_file.stderr
    assert len(piped.stdout.splitlines()) == 601
    assert piped.stdout == from_file.stdout


@pytest.mark.parametrize("shown", [["--json"], [], ["--out", "j.npy"]])
def test_a_point_past_the_first_that_is_not_finite_is_said(jaccli, tmp_path, shown) -> None:
    # every point's warnings were the first point's: NaN at point 2 of 4 went unsaid
    points = np.array([[1.0, 4.0], [2.0, 9.0], [-1.0, 4.0], [0.5, 1.0]])
    source = _save(tmp_path, "p.npy", points)
    args = [a if a != "j.npy" else str(tmp_path / a) for a in shown]
    run = jaccli("hvp", "--expr", "sqrt(x).sum()", "--points", f"x=@{source}", *args)
    assert run.exit_code == 0, run.stderr
    said = [
        "point 2: output y is not finite (NaN)",
        "point 2: H·v for x has 1 of 2 entries not finite (1 NaN): x[0]",
    ]
    assert [line for line in run.stderr.splitlines() if "warning" in line] == [
        f"hvp: warning: {line}" for line in said
    ]
    if shown == ["--json"]:
        document = run.json()
        assert document["warnings"] == said
        hvp = values_of(document["hvp"]["x"])
        assert np.isnan(hvp[2, 0]) and np.isfinite(np.delete(hvp, 2, axis=0)).all()
        np.testing.assert_allclose(hvp[[0, 1, 3]], -0.25 * points[[0, 1, 3]] ** -1.5, rtol=1e-6)
