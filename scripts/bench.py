"""Benchmarks of jaccli's engine against torch's Jacobian methods, and of whole-process start-up.

Run: .venv/bin/python scripts/bench.py [--repeats 5] [--quick]

Every dense case is timed in one process, after one warm-up call of each method (so torch.func's
one-off start-up is not counted), as the median of several runs; ratios compare methods measured
in the same run. A method whose estimated peak memory passes the budget is reported as such and
not run. Whole-process figures are medians of interleaved cold runs. Not imported by the package,
never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jaccli.messages import format_bytes

if TYPE_CHECKING:
    import torch

# torch and the engine are imported in main(), after the whole-process runs: a child forked
# from a process holding big tensors would report the parent's peak memory as its own.

ROOT = Path(__file__).resolve().parents[1]
JACCLI = str(Path(sys.executable).with_name("jaccli"))


def tanh_linear(n_in: int, n_out: int) -> tuple:
    from jaccli.functions import PRESETS
    from jaccli.functions.model import Function, InputSpec

    function = Function(
        "tanh_linear",
        "y = tanh(W @ x)",
        (InputSpec("x", (n_in,)), InputSpec("W", (n_out, n_in), differentiable=False)),
        PRESETS["tanh_linear"].call,
    )
    return function, [("x", (n_in,)), ("W", (n_out, n_in))], ()


def preset(name: str, shapes: list, wrt: tuple[str, ...] = ()) -> Callable[[], tuple]:
    def build() -> tuple:
        from jaccli.functions import PRESETS

        return PRESETS[name], shapes, wrt

    return build


# matmul is differentiated with respect to a, as in the earlier measurements of torch methods
CASES: list[tuple[str, Callable[[], tuple]]] = [
    ("expsum 2×3", preset("expsum", [("x", (2, 3))])),
    ("expsum 256×256", preset("expsum", [("x", (256, 256))])),
    ("expsum 1024×256", preset("expsum", [("x", (1024, 256))])),
    ("matmul 2×3·3×2 wrt a", preset("matmul", [("a", (2, 3)), ("b", (3, 2))], ("a",))),
    (
        "matmul 128×128·128×128 wrt a",
        preset("matmul", [("a", (128, 128)), ("b", (128, 128))], ("a",)),
    ),
    (
        "matmul 512×512·512×64 wrt a",
        preset("matmul", [("a", (512, 512)), ("b", (512, 64))], ("a",)),
    ),
    ("tanh(Wx) 512→512", lambda: tanh_linear(512, 512)),
    ("tanh(Wx) 64→4096", lambda: tanh_linear(64, 4096)),
    ("tanh(Wx) 4096→64", lambda: tanh_linear(4096, 64)),
]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first-call imports and allocations are not what we compare
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


STATISTIC: Callable[[list[float]], float] = statistics.median
"""What interleaved_medians reports of each run's times: the median, or with --fastest the
minimum (on a busy machine the run least delayed by other processes)."""


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each run's median seconds (STATISTIC) after a warm-up call of each, the runs taken in
    turn so that the machine's drift hits them all alike."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: STATISTIC(t) for name, t in times.items()}


SMALL_CASE = 1e-3
"""Below this (the fastest torch method's seconds), a case's target is time added, not a ratio."""
RATIO_TARGET = 1.5
ADDED_TARGET = 0.3e-3
POINTS_TARGET = 1.3
"""The engine over many points against vmap(jacrev(f)) alone."""


def against_target(ours: float, fastest: float) -> tuple[str, str]:
    """The target a computing case is held to (issue 22) and how it fares: ≤ 1.5× the fastest
    torch method above 1 ms, ≤ 0.3 ms added below."""
    if fastest > SMALL_CASE:
        verdict = "met" if ours <= RATIO_TARGET * fastest else "missed"
        return f"≤ {RATIO_TARGET}×", verdict
    added = ours - fastest
    verdict = "met" if added <= ADDED_TARGET else "missed"
    return f"≤ +{ADDED_TARGET * 1e3:.1f} ms", f"+{added * 1e3:.2f} ms, {verdict}"


def torch_methods(problem) -> dict[str, tuple[Callable[[], object], int]]:
    """The four torch methods on f of the wrt inputs, each with its estimated peak bytes."""
    import torch

    fixed = {n: t for n, t in problem.inputs.items() if n not in problem.wrt}
    call = problem.function.call

    def f(*xs: torch.Tensor) -> torch.Tensor:
        return call(**fixed, **dict(zip(problem.wrt, xs, strict=True)))

    xs = tuple(problem.inputs[n] for n in problem.wrt)
    argnums = tuple(range(len(xs)))
    item = problem.torch_dtype.itemsize
    n_out, n_in = problem.output_count, problem.input_count
    result = n_out * n_in * item
    # vmapped passes hold a batch of tangents or cotangents the size of every intermediate
    reverse_batch = n_out * (n_in + n_out) * item
    forward_batch = n_in * (n_in + n_out) * item
    af = torch.autograd.functional.jacobian
    return {
        "af default": (lambda: af(f, xs), 2 * result),
        "af vectorize": (lambda: af(f, xs, vectorize=True), result + reverse_batch),
        "jacrev": (lambda: torch.func.jacrev(f, argnums=argnums)(*xs), result + reverse_batch),
        "jacfwd": (lambda: torch.func.jacfwd(f, argnums=argnums)(*xs), result + forward_batch),
    }


def dense_table(repeats: int, budget: int) -> list[str]:
    from jaccli.engine import prepare, run_jacobian

    header = (
        "| case | jaccli auto | method | af default | af vectorize | jacrev | jacfwd | "
        "auto ÷ fastest | af default ÷ auto | target | verdict |"
    )
    rows = [header, "|" + "---|" * 11]
    for name, build in CASES:
        function, shapes, wrt = build()
        problem = prepare(function, shape_options=shapes, wrt=wrt, budget=budget)
        runs: dict[str, Callable[[], object]] = {}
        timings: dict[str, float | str] = {}
        for method, (run, peak) in torch_methods(problem).items():
            if peak > budget:
                timings[method] = f"needs ~{format_bytes(peak)}"
            else:
                runs[method] = run
        try:  # the call the CLI makes
            chosen = run_jacobian(problem, budget=budget).strategy
            runs["auto"] = lambda p=problem: run_jacobian(p, budget=budget)
        except Exception as error:  # the guard's refusal is a result too
            chosen = "—"
            timings["auto"] = f"refused ({type(error).__name__})"
        slow = problem.output_count * problem.input_count > 50_000_000
        timings.update(interleaved_medians(runs, 3 if slow else repeats))
        auto = timings.pop("auto")
        measured = [t for t in timings.values() if isinstance(t, float)]
        fastest = min(measured) if measured else None
        ratio = f"{auto / fastest:.2f}" if isinstance(auto, float) and fastest else "—"
        target, verdict = (
            against_target(auto, fastest) if isinstance(auto, float) and fastest else ("—", "—")
        )
        default = timings["af default"]
        speedup = (
            f"{default / auto:.2g}×"
            if isinstance(auto, float) and isinstance(default, float)
            else "—"
        )

        def cell(t: float | str) -> str:
            return f"{t * 1e3:.3g} ms" if isinstance(t, float) else t

        rows.append(
            f"| {name} | {cell(auto)} | {chosen} | "
            + " | ".join(
                cell(timings[m]) for m in ("af default", "af vectorize", "jacrev", "jacfwd")
            )
            + f" | {ratio} | {speedup} | {target} | {verdict} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def batched_table(repeats: int, budget: int) -> list[str]:
    from jaccli.engine import prepare, run_jacobian

    rows = [
        "| case | per-sample (--batched) | fastest dense | dense ÷ per-sample |",
        "|---|---|---|---|",
    ]
    for name, build in CASES:
        if "expsum" not in name and "matmul" not in name:
            continue
        function, shapes, wrt = build()
        problem = prepare(function, shape_options=shapes, wrt=wrt, budget=budget)
        per_sample = median_seconds(
            lambda p=problem: run_jacobian(p, budget=budget, batched=True), repeats
        )
        dense = []
        for run, peak in torch_methods(problem).values():
            if peak <= budget:
                dense.append(median_seconds(run, 3))
        fastest = min(dense) if dense else None
        rows.append(
            f"| {name} | {per_sample * 1e3:.3g} ms | "
            + (
                f"{fastest * 1e3:.3g} ms | {fastest / per_sample:.2g}× |"
                if fastest
                else "over budget | — |"
            )
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def guard_table(repeats: int, budget: int) -> list[str]:
    """What the correctness guard costs: compute_jacobian with it and with the probe replaced
    by a stub that passes, interleaved run by run in this process."""
    from jaccli.engine import compute_jacobian, prepare
    from jaccli.engine import jacobian as jacobian_module
    from jaccli.result import Guard

    real_probe = jacobian_module.probe_jacobians

    def no_probe(*args: object, **kwargs: object) -> Guard:
        return Guard("stub", "none", 0.0, 0.0, 0.0, True)

    rows = [
        "| case | method | with guard | without | guard's share |",
        "|---|---|---|---|---|",
    ]
    for name, build in CASES:
        function, shapes, wrt = build()
        problem = prepare(function, shape_options=shapes, wrt=wrt, budget=budget)
        try:
            method = compute_jacobian(problem, budget=budget).strategy
        except Exception as error:  # refused over the budget: nothing to time
            rows.append(f"| {name} | refused ({type(error).__name__}) | — | — | — |")
            continue
        count = 3 if problem.output_count * problem.input_count > 50_000_000 else repeats
        guarded, bare = [], []
        compute_jacobian(problem, budget=budget)  # warm-up
        for _ in range(count):
            for probe, times in ((real_probe, guarded), (no_probe, bare)):
                jacobian_module.probe_jacobians = probe
                start = time.perf_counter()
                compute_jacobian(problem, budget=budget)
                times.append(time.perf_counter() - start)
        jacobian_module.probe_jacobians = real_probe
        with_guard, without = statistics.median(guarded), statistics.median(bare)
        rows.append(
            f"| {name} | {method} | {with_guard * 1e3:.3g} ms | {without * 1e3:.3g} ms | "
            f"{(with_guard - without) / without:+.1%} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def reference_table(repeats: int, budget: int) -> list[str]:
    """What the function as the reference costs (five calls of the function and a bounded read
    of J, no backward pass): run_jacobian of each case as a preset (not checked), and the check
    a user's function would get on its result, timed alone, interleaved run by run."""
    from dataclasses import replace

    from jaccli.engine import prepare, run_jacobian
    from jaccli.engine.reference import check_jacobian_result

    rows = [
        "| case | method | jacobian | the reference alone | reference's share |",
        "|---|---|---|---|---|",
    ]
    for name, build in CASES:
        function, shapes, wrt = build()
        plain = prepare(function, shape_options=shapes, wrt=wrt, budget=budget)
        checked = replace(plain, function=replace(plain.function, may_break_graph=True))
        try:
            result = run_jacobian(plain, budget=budget)  # also the warm-up
        except Exception as error:  # refused over the budget: nothing to time
            rows.append(f"| {name} | refused ({type(error).__name__}) | — | — | — |")
            continue
        check_jacobian_result(checked, result)
        count = 3 if plain.output_count * plain.input_count > 50_000_000 else repeats
        computing, checking = [], []
        for _ in range(count):
            start = time.perf_counter()
            result = run_jacobian(plain, budget=budget)
            computing.append(time.perf_counter() - start)
            start = time.perf_counter()
            check_jacobian_result(checked, result)
            checking.append(time.perf_counter() - start)
        bare, check = statistics.median(computing), statistics.median(checking)
        rows.append(
            f"| {name} | {result.strategy} | {bare * 1e3:.3g} ms | {check * 1e3:.3g} ms | "
            f"{check / bare:+.1%} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def run_process(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed")
    return elapsed, usage.ru_maxrss * 1024


HELP_TARGET = 1.5
"""Every command's --help against `python -c "import typer, rich"`."""
COLD_TARGET = 1.10
"""A one-shot run against `python -c "import torch"`."""


def cold_table(repeats: int) -> list[str]:
    """Whole processes against the imports they cannot avoid, as medians of interleaved pairs."""
    from jaccli.overview import COMMANDS

    python = sys.executable
    import_torch = ('python -c "import torch"', [python, "-c", "import torch"])
    import_typer_rich = ('python -c "import typer, rich"', [python, "-c", "import typer, rich"])
    pairs = [
        (
            "jaccli jacobian --fn expsum --shape 2x3 --json",
            [JACCLI, "jacobian", "--fn", "expsum", "--shape", "2x3", "--json"],
            *import_torch,
            f"≤ {COLD_TARGET}",
        ),
        ("jaccli --help", [JACCLI, "--help"], *import_typer_rich, f"≤ {HELP_TARGET}"),
        *(
            (
                f"jaccli {name} --help",
                [JACCLI, name, "--help"],
                *import_typer_rich,
                f"≤ {HELP_TARGET}",
            )
            for name in COMMANDS
        ),
        (
            "jaccli jacobian --fn expsum --shape 1024x256 --batched --json",
            [JACCLI, "jacobian", "--fn", "expsum", "--shape", "1024x256", "--batched", "--json"],
            *import_torch,
            "—",
        ),
    ]
    rows = [
        "| command | median s | peak RSS | baseline | median s | peak RSS | ratio (target) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, command, base_name, base, target in pairs:
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            ours.append(run_process(command))
            theirs.append(run_process(base))
        t_ours = statistics.median(t for t, _ in ours)
        t_base = statistics.median(t for t, _ in theirs)
        rss_ours = statistics.median(r for _, r in ours)
        rss_base = statistics.median(r for _, r in theirs)
        rows.append(
            f"| `{name}` | {t_ours:.3f} | {format_bytes(rss_ours)} | `{base_name}` | {t_base:.3f} | "
            f"{format_bytes(rss_base)} | {t_ours / t_base:.2f} ({target}) |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


FIRST_ANSWER_TARGET = 1.1
"""A coprocess's first answer against a `--value` run of the same point."""
EXIT_TARGET = 0.1
"""Seconds from closing a coprocess's stdin to its exit."""
STREAM_RATE_TARGET = 10_000
"""Points per second of a stream after start-up."""


def coprocess_table(repeats: int) -> list[str]:
    """A Newton loop's coprocess (`--points x=@- --jsonl`): its first answer against a
    `--value` run of the same point, and its exit once its stdin closes, as medians of
    interleaved runs."""
    one = [JACCLI, "jacobian", "--fn", "polar", "--value", "x=[0.5, 1.0]", "--json"]
    streamed = [JACCLI, "jacobian", "--fn", "polar", "--points", "x=@-", "--jsonl"]
    t_one, t_first, t_exit = [], [], []
    for _ in range(repeats):
        t_one.append(run_process(one)[0])
        start = time.perf_counter()
        process = subprocess.Popen(
            streamed, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("[0.5, 1.0]\n")
        process.stdin.flush()
        answer = process.stdout.readline()
        t_first.append(time.perf_counter() - start)
        start = time.perf_counter()
        process.stdin.close()
        process.wait()
        t_exit.append(time.perf_counter() - start)
        assert process.returncode == 0 and '"jacobian"' in answer, answer
    m_one, m_first, m_exit = (statistics.median(t) for t in (t_one, t_first, t_exit))
    rows = [
        "| measurement | median | target |",
        "|---|---|---|",
        f"| `--value x=[0.5, 1.0] --json` (polar), whole process | {m_one:.3f} s | |",
        f"| coprocess `--points x=@- --jsonl`: first answer | {m_first:.3f} s | |",
        f"| first answer ÷ `--value` run | {m_first / m_one:.2f} | ≤ {FIRST_ANSWER_TARGET} |",
        f"| exit after stdin closes | {m_exit:.3f} s | ≤ {EXIT_TARGET} s |",
    ]
    for row in rows[2:]:
        print(row, file=sys.stderr, flush=True)
    return rows


def _stream_timing(command: list[str], source: Path, count: int) -> tuple[float, float, float]:
    """A stream of `count` points piped at once from `source`: seconds to its first answer and
    to its end, and the points per second after the first answer (the lines that came with it
    not counted), read off stdout's descriptor as the answers arrive."""
    start = time.perf_counter()
    with source.open("rb") as stdin:
        process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE)
        assert process.stdout is not None
        descriptor = process.stdout.fileno()
        chunk = os.read(descriptor, 1 << 20)
        first = time.perf_counter()
        with_first = chunk.count(b"\n")
        lines = with_first
        while chunk:
            chunk = os.read(descriptor, 1 << 20)
            lines += chunk.count(b"\n")
        end = time.perf_counter()
        process.wait()
    assert process.returncode == 0 and lines == count, (process.returncode, lines)
    return first - start, end - start, (count - with_first) / max(end - first, 1e-9)


def points_process_table(repeats: int, workdir: Path) -> list[str]:
    """Whole processes over many points against one point, and the stream's rate, as medians of
    interleaved runs."""
    import json

    import numpy as np

    points = np.random.default_rng(0).standard_normal((10_000, 2))
    np.save(workdir / "pts.npy", points)
    stream = "".join(json.dumps(list(p)) + "\n" for p in points)
    many = [JACCLI, "jacobian", "--fn", "polar", "--points", f"x=@{workdir / 'pts.npy'}",
            "--out", str(workdir / "j.npy"), "--force"]  # fmt: skip
    one = [JACCLI, "jacobian", "--fn", "polar", "--value", "x=[0.5, 1.0]",
           "--out", str(workdir / "j1.npy"), "--force"]  # fmt: skip
    streamed = [JACCLI, "jacobian", "--fn", "polar", "--points", "x=@-", "--jsonl"]
    (workdir / "pts.jsonl").write_text(stream)
    t_many, t_one, t_stream, t_first, steady = [], [], [], [], []
    for _ in range(repeats):
        t_many.append(run_process(many)[0])
        t_one.append(run_process(one)[0])
        first, total, rate_after = _stream_timing(streamed, workdir / "pts.jsonl", 10_000)
        t_first.append(first)
        t_stream.append(total)
        steady.append(rate_after)
    m_many, m_one, m_stream = (statistics.median(t) for t in (t_many, t_one, t_stream))
    m_first, m_steady = statistics.median(t_first), statistics.median(steady)
    rate = 10_000 / max(m_stream - m_one, 1e-9)
    per_point_many = m_many / 10_000
    return [
        "| measurement | median | target |",
        "|---|---|---|",
        f"| 10,000 points of polar, `--points x=@pts.npy --out j.npy` | {m_many:.3f} s | |",
        f"| one point, `--value x=[0.5, 1.0] --out j1.npy` | {m_one:.3f} s | |",
        f"| ratio | {m_many / m_one:.2f} | ≤ 1.3 |",
        f"| 10,000 points of polar streamed as JSON Lines, `--points x=@- --jsonl` | "
        f"{m_stream:.3f} s | |",
        f"| stream's first answer | {m_first:.3f} s | |",
        f"| stream rate after its first answer, points after it ÷ time after it | "
        f"{m_steady:,.0f} points/s | ≥ {STREAM_RATE_TARGET:,} |",
        f"| stream rate against a one-point run, 10,000 / (stream − one point) | "
        f"{rate:,.0f} points/s | |",
        f"| points per second, one run of 10,000 against a process per point | "
        f"{m_one / per_point_many:,.0f}× | ≥ 1,000× |",
    ]


def points_compute_table(repeats: int, budget: int) -> list[str]:
    """The engine over 10,000 points (the computation and the chunk's checks), and the same with
    every point's result object made as the CLI makes them today, against
    torch.func.vmap(jacrev(f)) in this process, interleaved run by run."""
    import torch

    from jaccli.engine import Problem, prepare, run_jacobian
    from jaccli.engine.many import run_points
    from jaccli.functions import PRESETS, resolve
    from jaccli.result import Result

    mlp_file = ROOT / "tests" / "fixtures" / "batching.py"
    cases = [
        ("polar", PRESETS["polar"], [("x", (2,))], (2,)),
        ("MLP 16→64→8 (tests/fixtures/batching.py:mlp)",
         resolve(f"{mlp_file}:mlp", None, ["x", "W1", "W2"]),
         [("x", (16,)), ("W1", (16, 64)), ("W2", (64, 8))], (16,)),
    ]  # fmt: skip
    rows = ["| 10,000 points of | jaccli | vmap(jacrev(f)) | ratio | target | verdict |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, function, shapes, point_shape in cases:
        problem = prepare(function, shape_options=shapes, wrt=("x",), budget=budget)
        points = torch.randn(10_000, *point_shape)
        fixed = {n: t for n, t in problem.inputs.items() if n != "x"}

        def single(point: Problem) -> Result:
            return run_jacobian(point, budget=budget)

        def engine(problem=problem, points=points) -> None:
            for _ in run_points(problem, "jacobian", {"x": points}, single, budget=budget):
                pass

        def with_results(problem=problem, points=points) -> None:
            chunks = run_points(problem, "jacobian", {"x": points}, single, budget=budget)
            for outcome in (o for chunk in chunks for o in chunk):
                assert outcome.result is not None  # made as the CLI makes it

        def reference(function=function, fixed=fixed, points=points) -> object:
            return torch.func.vmap(torch.func.jacrev(lambda x: function.call(x=x, **fixed)))(points)

        runs = {"engine": engine, "results": with_results, "vmap": reference}
        timings = interleaved_medians(runs, repeats)
        theirs = timings["vmap"]
        ours = timings["engine"]
        verdict = "met" if ours <= POINTS_TARGET * theirs else "missed"
        rows.append(
            f"| {name}: the engine | {ours * 1e3:.1f} ms | {theirs * 1e3:.1f} ms | "
            f"{ours / theirs:.2f} | ≤ {POINTS_TARGET}× | {verdict} |"
        )
        made = timings["results"]
        rows.append(
            f"| {name}: and each point's result object, as the CLI makes them | "
            f"{made * 1e3:.1f} ms | {theirs * 1e3:.1f} ms | {made / theirs:.2f} | — | — |"
        )
        print("\n".join(rows[-2:]), file=sys.stderr, flush=True)
    return rows


def pictures_table(repeats: int, budget: int) -> list[str]:
    """What --view heatmap|sparsity adds to a jacobian run: pooling J to an 80-column frame and
    finding its structure (rank included up to 2048×2048), against computing J, in-process."""
    from jaccli.engine import prepare, run_jacobian
    from jaccli.engine.structure import picture_of
    from jaccli.functions import PRESETS, resolve

    cases = [
        ("expsum 256×256 (256×65536 J)", PRESETS["expsum"], (256, 256)),
        ("sin(x) 4096 (4096×4096 J, diagonal)", resolve(None, "x.sin()"), (4096,)),
        ("softmax 1024 (1024×1024 J, dense, rank)", PRESETS["softmax"], (1024,)),
    ]
    rows = [
        "| J | compute J | heat map + structure | share |",
        "|---|---|---|---|",
    ]
    for label, function, shape in cases:
        problem = prepare(function, shape_options=[(None, shape)], budget=budget)
        result = run_jacobian(problem, budget=budget)
        t_j = median_seconds(lambda p=problem: run_jacobian(p, budget=budget), repeats)
        t_p = median_seconds(lambda r=result: picture_of(r, "heatmap", 48, 70), repeats)
        rows.append(f"| {label} | {t_j * 1e3:.3g} ms | {t_p * 1e3:.3g} ms | {t_p / t_j:.2f}× |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _burgers(u: torch.Tensor) -> torch.Tensor:
    dx = 1e-3
    return u[1:-1] * (u[2:] - u[:-2]) / (2 * dx) - (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2


def _reaction_diffusion(u: torch.Tensor) -> torch.Tensor:
    lap = u[1:-1, 2:] + u[1:-1, :-2] + u[2:, 1:-1] + u[:-2, 1:-1] - 4 * u[1:-1, 1:-1]
    return lap - u[1:-1, 1:-1] ** 3 + 0.5 * u[1:-1, 1:-1]


def _reaction_diffusion_conv(u: torch.Tensor) -> torch.Tensor:
    import torch

    kernel = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=u.dtype)[None, None]
    lap = torch.nn.functional.conv2d(u[None, None], kernel, padding=1)[0, 0]
    return lap - u**3 + 0.5 * u


def _rosenbrock(u: torch.Tensor) -> torch.Tensor:
    return (100 * (u[1:] - u[:-1] ** 2) ** 2 + (1 - u[:-1]) ** 2).sum()


def pattern_table(repeats: int, budget: int) -> list[str]:
    """Sparsity pattern detection (one traced call of f), float64, against one plain call."""
    from jaccli.engine import prepare
    from jaccli.engine.evaluate import evaluate
    from jaccli.engine.sparse.pattern import detect_pattern, hessian_pattern
    from jaccli.functions.model import Function, InputSpec

    cases = [
        ("Burgers residual", _burgers, (10_000,), detect_pattern),
        ("Burgers residual", _burgers, (100_000,), detect_pattern),
        ("Burgers residual", _burgers, (1_000_000,), detect_pattern),
        ("2-D reaction-diffusion, slices", _reaction_diffusion, (1000, 1000), detect_pattern),
        ("2-D reaction-diffusion, conv2d", _reaction_diffusion_conv, (1000, 1000), detect_pattern),
        ("chained Rosenbrock, Hessian", _rosenbrock, (100_000,), hessian_pattern),
    ]
    rows = [
        "| f | unknowns | pattern | nnz | detection | one call of f | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, call, shape, detect in cases:
        function = Function(label, label, (InputSpec("u", shape),), call)
        problem = prepare(function, shape_options=[(None, shape)], dtype="float64", budget=budget)
        pattern = detect(problem, budget)
        t_detect = median_seconds(lambda p=problem, d=detect: d(p, budget), repeats)
        t_call = median_seconds(lambda p=problem: evaluate(p.function, p.inputs), repeats)
        unknowns = problem.input_count
        rows.append(
            f"| {label} | {unknowns:,} | {pattern.shape[0]:,}×{pattern.shape[1]:,} | "
            f"{pattern.nnz:,} | {t_detect * 1e3:.4g} ms | {t_call * 1e3:.3g} ms | "
            f"{t_detect / t_call:.0f}× |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def derivatives_table(repeats: int, budget: int) -> list[str]:
    """det, jvp, hessian and hvp by jaccli's engine (the call the CLI makes) against the torch
    methods that compute the same thing, timed in this process after a warm-up of each,
    interleaved run by run, each with its target beside it."""
    import torch

    from jaccli.engine import prepare, run_det, run_hessian, run_hvp, run_jvp
    from jaccli.functions import PRESETS

    af = torch.autograd.functional
    func = torch.func

    def of_x(name: str, shape: tuple[int, ...]):
        problem = prepare(PRESETS[name], shape_options=[("x", shape)], budget=budget)
        fixed = {n: t for n, t in problem.inputs.items() if n != "x"}

        def f(x: torch.Tensor) -> torch.Tensor:
            return PRESETS[name].call(x=x, **fixed)

        return problem, f, problem.inputs["x"]

    def slogdet_of(j: torch.Tensor, d: int) -> object:
        return torch.linalg.slogdet(j.reshape(-1, d, d) if j.ndim > 2 else j.reshape(d, d))

    cases: list[tuple[str, Callable[[], object], dict[str, Callable[[], object]]]] = []
    for name, shape in (("affine", (64,)), ("spherical", (3,))):
        problem, f, x = of_x(name, shape)
        d = x.numel()
        cases.append(
            (
                f"det {name} {'×'.join(map(str, shape))}",
                lambda p=problem: run_det(p, budget=budget),
                {
                    "af.jacobian + slogdet": lambda f=f, x=x, d=d: slogdet_of(af.jacobian(f, x), d),
                    "jacfwd + slogdet": lambda f=f, x=x, d=d: slogdet_of(func.jacfwd(f)(x), d),
                    "jacrev + slogdet": lambda f=f, x=x, d=d: slogdet_of(func.jacrev(f)(x), d),
                },
            )
        )
    problem, f, x = of_x("planar_flow", (4096, 16))
    one = lambda r, f=f: f(r.unsqueeze(0)).squeeze(0)  # noqa: E731
    cases.append(
        (
            "det --batched planar_flow 4096×16",
            lambda p=problem: run_det(p, budget=budget, batched=True),
            {
                "vmap(jacrev) + slogdet": lambda x=x: torch.linalg.slogdet(
                    func.vmap(func.jacrev(one))(x)
                ),
                "vmap(jacfwd) + slogdet": lambda x=x: torch.linalg.slogdet(
                    func.vmap(func.jacfwd(one))(x)
                ),
            },
        )
    )
    for name, shape in (("expsum", (1024, 256)), ("softmax", (512,))):
        problem, f, x = of_x(name, shape)
        v = torch.ones_like(x)
        cases.append(
            (
                f"jvp {name} {'×'.join(map(str, shape))}",
                lambda p=problem: run_jvp(p, "ones", budget=budget),
                {
                    "func.jvp": lambda f=f, x=x, v=v: func.jvp(f, (x,), (v,)),
                    "af.jvp (double backward)": lambda f=f, x=x, v=v: af.jvp(f, x, v),
                },
            )
        )
    for shape in ((16,), (256,)):
        problem, f, x = of_x("logsumexp", shape)
        cases.append(
            (
                f"hessian logsumexp {shape[0]}",
                lambda p=problem: run_hessian(p, budget=budget),
                {
                    "af.hessian": lambda f=f, x=x: af.hessian(f, x),
                    "af.hessian vectorize": lambda f=f, x=x: af.hessian(f, x, vectorize=True),
                    "func.hessian": lambda f=f, x=x: func.hessian(f)(x),
                },
            )
        )
    for size in (1000, 1_000_000):
        problem, f, x = of_x("logsumexp", (size,))
        v = torch.ones_like(x)
        cases.append(
            (
                f"hvp logsumexp {size}",
                lambda p=problem: run_hvp(p, "ones"),
                {
                    "af.hvp (double backward)": lambda f=f, x=x, v=v: af.hvp(f, x, v),
                    "jvp(grad)": lambda f=f, x=x, v=v: func.jvp(func.grad(f), (x,), (v,)),
                },
            )
        )
    rows = [
        "| case | jaccli | torch methods | jaccli ÷ fastest | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name, ours, theirs in cases:
        timings = interleaved_medians({"jaccli": ours, **theirs}, repeats)
        mine = timings.pop("jaccli")
        fastest = min(timings.values())
        listed = ", ".join(f"{m} {t * 1e3:.3g} ms" for m, t in timings.items())
        target, verdict = against_target(mine, fastest)
        rows.append(
            f"| {name} | {mine * 1e3:.3g} ms | {listed} | {mine / fastest:.2f} | {target} | "
            f"{verdict} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def burgers_pattern(n: int):
    """The pattern of the 1-D Burgers residual: row i depends on u[i], u[i+1], u[i+2]."""
    import numpy as np
    import scipy.sparse as sp

    rows = np.repeat(np.arange(n - 2), 3)
    columns = (np.arange(n - 2)[:, None] + np.arange(3)).ravel()
    return sp.csr_array((np.ones(rows.size, dtype=bool), (rows, columns)), shape=(n - 2, n))


def stencil_pattern(side: int):
    """The 5-point stencil on a side × side grid, flattened row by row."""
    import numpy as np
    import scipy.sparse as sp

    index = np.arange(side * side).reshape(side, side)
    pairs = [(index, index), (index[1:], index[:-1]), (index[:-1], index[1:])]
    pairs += [(index[:, 1:], index[:, :-1]), (index[:, :-1], index[:, 1:])]
    rows = np.concatenate([a.ravel() for a, _ in pairs])
    columns = np.concatenate([b.ravel() for _, b in pairs])
    shape = (side * side, side * side)
    return sp.csr_array((np.ones(rows.size, dtype=bool), (rows, columns)), shape=shape)


def sparse_table(repeats: int, budget: int) -> list[str]:
    """Sparse J given its pattern (engine/sparse), float64, in-process: colouring both modes,
    then the whole compressed computation (passes, guard, warnings), and its peak memory above
    the process before it against the plan."""
    import torch

    from jaccli import memory
    from jaccli.engine import prepare
    from jaccli.engine.sparse.colouring import colour_pattern
    from jaccli.engine.sparse.compressed import (
        compute_sparse_hessian,
        compute_sparse_jacobian,
        plan_sparse_jacobian,
    )
    from jaccli.functions.model import Function, InputSpec

    def burgers(u: torch.Tensor) -> torch.Tensor:
        dx = 1e-3
        return u[1:-1] * (u[2:] - u[:-2]) / (2 * dx) - (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2

    def reaction_diffusion(u: torch.Tensor) -> torch.Tensor:
        p = torch.nn.functional.pad(u, (1, 1, 1, 1))
        return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * u + u * (1 - u**2)

    def rosenbrock(u: torch.Tensor) -> torch.Tensor:
        return (100 * (u[1:] - u[:-1] ** 2) ** 2 + (1 - u[:-1]) ** 2).sum()

    cases = [
        ("Burgers, n = 10⁶", burgers, (10**6,), burgers_pattern(10**6), "J"),
        (
            "reaction–diffusion, 1000×1000",
            reaction_diffusion,
            (1000, 1000),
            stencil_pattern(1000),
            "J",
        ),
        ("chained Rosenbrock H, n = 10⁵", rosenbrock, (10**5,), None, "H"),
    ]
    rows = [
        "| case | non-zeros | colouring (both modes) | colours | compressed J or H, in all | peak above start (plan) |",
        "|---|---|---|---|---|---|",
    ]
    for label, call, shape, pattern, what in cases:
        function = Function(label, label, (InputSpec("u", shape),), call)
        problem = prepare(function, dtype="float64", budget=budget)
        if pattern is None:
            import scipy.sparse as sp

            n = shape[0]
            pattern = sp.csr_array(
                sp.diags_array([1.0, 1.0, 1.0], offsets=[-1, 0, 1], shape=(n, n)) != 0
            )
            compute = lambda p=problem, q=pattern: compute_sparse_hessian(p, q, budget=budget)  # noqa: E731
        else:
            compute = lambda p=problem, q=pattern: compute_sparse_jacobian(p, q, budget=budget)  # noqa: E731
        coloured = colour_pattern(pattern)
        t_colour = median_seconds(lambda q=pattern: colour_pattern(q), repeats)
        plan = plan_sparse_jacobian(problem, coloured, budget).plan
        before = memory.resident_bytes() or 0
        memory.reset_peak()
        result = compute()
        peak = (memory.peak_resident_bytes() or 0) - before
        del result
        t_all = median_seconds(compute, repeats)
        colours = coloured.colouring.count if what == "J" else compute().colours
        rows.append(
            f"| {label} | {pattern.nnz:,} | {t_colour * 1e3:.0f} ms | {colours} "
            f"({'HVPs' if what == 'H' else coloured.colouring.mode}) | {t_all:.2f} s | "
            f"{format_bytes(peak)} ({format_bytes(plan.peak_bytes)}) |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


SPARSE_FNS = str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sparse_fns.py")


def _plan_json(args: list[str]) -> dict:
    """The --plan --json document of a jaccli command."""
    done = subprocess.run([JACCLI, *args, "--plan", "--json"], capture_output=True, text=True)
    return json.loads(done.stdout)


def targets_table(repeats: int, workdir: Path) -> list[str]:
    """The issue's targets for --sparse, whole processes through the CLI (medians of CPU
    seconds, user + system), each with the target beside the measured figure; ratios are of
    runs made in the same loop."""
    import numpy as np
    import torch

    def fn(name: str, shape: str) -> list[str]:
        return ["--fn", f"{SPARSE_FNS}:{name}", "--shape", f"u={shape}", "--dtype", "float64"]

    def median_run(command: list[str], count: int = repeats) -> tuple[float, int]:
        """Median CPU seconds (user + system: the machine is shared, wall time is not ours)
        and peak RSS."""
        runs = [_cpu_process(command) for _ in range(count)]
        return statistics.median(t for t, _ in runs), int(statistics.median(r for _, r in runs))

    out = str(workdir / "j.npz")
    rows = ["| target | measured | goal |", "|---|---|---|"]

    def row(target: str, measured: str, goal: str) -> None:
        rows.append(f"| {target} | {measured} | {goal} |")
        print(rows[-1], file=sys.stderr, flush=True)

    burgers = ["jacobian", *fn("burgers", "1000000"), "--sparse"]
    t, rss = median_run([JACCLI, *burgers, "--out", out, "--force"])
    passes = _plan_json(burgers)["sparse"]["passes"]
    row("Burgers n = 10⁶ `--sparse --out j.npz`, whole process", f"{t:.1f} s, {passes} passes, "
        f"{format_bytes(rss)}", "≤ 5 s, ≤ 4 passes")  # fmt: skip

    small = ["jacobian", *fn("burgers", "10000"), "--out", str(workdir / "d.npy"), "--force"]
    t_dense, rss_dense = median_run([JACCLI, *small], 1)
    small_sparse = [JACCLI, *small[:-3], "--sparse", "--out", out, "--force"]
    t_sparse, rss_sparse = median_run(small_sparse)
    inside = _burgers_in_process(repeats)
    row("Burgers n = 10⁴, dense ÷ sparse, in-process (the engine's whole computation: "
        "pattern, colouring, passes, guard, the function's own check; after a warm-up)",
        f"{inside['dense_s'] / inside['sparse_s']:.0f}× faster ({inside['dense_s']:.2f} s / "
        f"{inside['sparse_s']:.3f} s CPU), {inside['dense_peak'] / inside['sparse_peak']:.0f}× "
        f"less peak above the process before it ({format_bytes(inside['dense_peak'])} / "
        f"{format_bytes(inside['sparse_peak'])})", "≥ 100×, ≥ 20×")  # fmt: skip
    row("Burgers n = 10⁴, dense ÷ sparse, whole processes", f"{t_dense / t_sparse:.0f}× faster "
        f"({t_dense:.1f} s / {t_sparse:.2f} s), {rss_dense / rss_sparse:.1f}× less peak "
        f"({format_bytes(rss_dense)} / {format_bytes(rss_sparse)}): torch's start-up in both",
        "(in-process above)")  # fmt: skip

    diffusion = ["jacobian", *fn("reaction_diffusion", "1000x1000"), "--sparse",
                 "--max-memory", "2GiB"]  # fmt: skip
    t, rss = median_run([JACCLI, *diffusion, "--out", out, "--force"])
    colours = _plan_json(diffusion)["sparse"]["passes"]
    row("reaction–diffusion 1000², `--max-memory 2GiB`", f"{t:.1f} s, {colours} colours, "
        f"{format_bytes(rss)}", "≤ 15 s, ≤ 6 colours")  # fmt: skip

    mlp = ["jacobian", "--fn", f"{SPARSE_FNS}:mlp", "--shape", "x=512", "--dtype", "float64"]
    t_auto, _ = median_run([JACCLI, *mlp, "--out", str(workdir / "m.npy"), "--force"])
    t_mlp, _ = median_run([JACCLI, *mlp, "--sparse", "--out", out, "--force"])
    row("MLP 512 → 512, `--sparse` ÷ `auto`, whole processes", f"{t_mlp / t_auto:.2f}× "
        f"({t_mlp:.2f} s / {t_auto:.2f} s)", "≤ 1.5×")  # fmt: skip
    t_sparse_mlp, t_auto_mlp = _mlp_in_process(repeats)
    row("MLP 512 → 512, `--sparse` ÷ `auto`, in-process (tracing, the dense route, the guard, "
        "the function's own check; after a warm-up)", f"{t_sparse_mlp / t_auto_mlp:.2f}× "
        f"({t_sparse_mlp:.3f} s / {t_auto_mlp:.3f} s CPU)", "≤ 1.5×")  # fmt: skip

    rosenbrock = ["hessian", "--fn", f"{SPARSE_FNS}:rosenbrock", "--shape", "x=100000",
                  "--dtype", "float64", "--sparse"]  # fmt: skip
    t, _ = median_run([JACCLI, *rosenbrock, "--out", out, "--force"])
    products = _plan_json(rosenbrock)["sparse"]["passes"]
    row("hessian Rosenbrock n = 10⁵", f"{products} HVPs, {t:.1f} s", "≤ 5 HVPs")

    points = workdir / "points.npy"
    np.save(points, np.random.default_rng(0).standard_normal((10_000, 100)))
    many = ["jacobian", *fn("tridiagonal", "100"), "--sparse", "--points", f"u=@{points}",
            "--jsonl"]  # fmt: skip
    t_points, _ = median_run([JACCLI, *many], 1)
    t_engine, t_vmap = _sparse_points_in_process(torch, 10_000, repeats)
    t_engine_1, t_vmap_1 = _one_thread(lambda: _sparse_points_in_process(torch, 10_000, repeats))
    row("10,000 points, 100-unknown tridiagonal, `--points --sparse`", f"in-process "
        f"{t_engine:.3f} s (J at every point, guarded) against {t_vmap:.3f} s for the bare vmap "
        f"of the compressed JVPs: {t_engine / t_vmap:.2f}×; on one thread {t_engine_1:.3f} s / "
        f"{t_vmap_1:.3f} s = {t_engine_1 / t_vmap_1:.2f}×; the whole process with --jsonl "
        f"{t_points:.1f} s", "≤ 2×")  # fmt: skip
    return rows


BURGERS_IN_PROCESS = """
import json, statistics, sys, time
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[1]).parent))
from sparse_fns import burgers
from jaccli import memory
from jaccli.engine import prepare
from jaccli.engine.run import run_jacobian
from jaccli.engine.sparse.run import prepare_pattern, run_sparse_jacobian
from jaccli.functions.model import Function, InputSpec

mode, repeats = sys.argv[3], int(sys.argv[2])
def problem(n):
    return prepare(Function("burgers", "burgers", (InputSpec("u", (n,)),), burgers), dtype="float64")
def run(p):
    if mode == "sparse":
        return run_sparse_jacobian(p, prepare_pattern(p, None))
    return run_jacobian(p)
run(problem(100))  # warm-up at a small n: first-call imports are not what is compared
large = problem(10_000)
before = memory.resident_bytes() or 0
memory.reset_peak()
times = []
for _ in range(repeats):
    start = time.process_time()
    result = run(large)
    times.append(time.process_time() - start)
    del result
print(json.dumps({"seconds": statistics.median(times),
                  "peak": (memory.peak_resident_bytes() or 0) - before}))
"""
"""The sparse or the dense (argv[3]) J of Burgers at n = 10⁴ in a process of its own, after a
warm-up at n = 100: median CPU seconds of argv[2] runs and the peak resident memory above the
process before them (VmHWM)."""


def _burgers_in_process(repeats: int) -> dict[str, float]:
    """BURGERS_IN_PROCESS for both: the dense once (a run takes tens of seconds), the sparse
    `repeats` times."""
    figures = {}
    for mode, count in (("sparse", repeats), ("dense", 1)):
        done = subprocess.run(
            [sys.executable, "-c", BURGERS_IN_PROCESS, SPARSE_FNS, str(count), mode],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        measured = json.loads(done.stdout)
        figures[f"{mode}_s"], figures[f"{mode}_peak"] = measured["seconds"], measured["peak"]
    return figures


def _mlp_in_process(repeats: int) -> tuple[float, float]:
    """CPU seconds (medians, interleaved, after a warm-up of each) of the sparse J of the MLP
    fixture at n = 512 (pattern traced, then the dense route) against plain auto."""
    sys.path.insert(0, str(Path(SPARSE_FNS).parent))
    from sparse_fns import mlp

    from jaccli.engine import prepare
    from jaccli.engine.run import run_jacobian
    from jaccli.engine.sparse.run import prepare_pattern, run_sparse_jacobian
    from jaccli.functions.model import Function, InputSpec

    problem = prepare(Function("mlp", "mlp", (InputSpec("x", (512,)),), mlp), dtype="float64")
    runs = {
        "sparse": lambda: run_sparse_jacobian(problem, prepare_pattern(problem, None)),
        "auto": lambda: run_jacobian(problem),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return statistics.median(times["sparse"]), statistics.median(times["auto"])


def _cpu_process(command: list[str]) -> tuple[float, int]:
    """CPU seconds (user + system) and peak RSS (bytes) of one whole process."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _sparse_points_in_process(torch, count: int, repeats: int) -> tuple[float, float]:
    """CPU seconds (medians, interleaved in one process) of the engine's sparse J at `count`
    points of the 100-unknown tridiagonal residual (the compressed JVPs vmapped over the
    points, the guard at every point, the single-point engine at a chunk's first and last
    points; every chunk's outcomes made, each point's result object when it is asked for)
    against the bare vmap over the points of its 3 compressed JVPs."""
    sys.path.insert(0, str(Path(SPARSE_FNS).parent))
    from sparse_fns import tridiagonal

    from jaccli.engine import prepare
    from jaccli.engine.many import run_points
    from jaccli.engine.sparse.run import prepare_pattern, run_sparse_jacobian, sparse_points
    from jaccli.functions.model import Function, InputSpec

    u = torch.randn(count, 100, dtype=torch.float64)
    seeds = torch.stack([(torch.arange(100) % 3 == c).to(torch.float64) for c in range(3)])

    def compressed(x):
        return torch.func.vmap(lambda s: torch.func.jvp(tridiagonal, (x,), (s,))[1])(seeds)

    function = Function("tridiagonal", "tridiagonal", (InputSpec("u", (100,)),), tridiagonal)
    problem = prepare(function, dtype="float64")
    prepared = prepare_pattern(problem, None)
    kernel = sparse_points(problem, prepared)
    assert kernel is not None

    def engine() -> None:
        def single(point):
            return run_sparse_jacobian(point, prepared)

        chunks = list(run_points(problem, "jacobian", {"u": u}, single, sparse=True,
                                 sparse_points=kernel))  # fmt: skip
        assert sum(len(c) for c in chunks) == count
        assert chunks[0][count // 2].result.strategy == "sparse-fwd-vmap"

    times: dict[str, list[float]] = {"engine": [], "vmap": []}
    runs = {"engine": engine, "vmap": lambda: torch.func.vmap(compressed)(u)}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return statistics.median(times["engine"]), statistics.median(times["vmap"])


def _one_thread(measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """`measure` with torch on one thread: on a shared machine, threads waiting for each other
    spin and count as CPU time, more for the engine's many small ops than for one vmap."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure()
    finally:
        torch.set_num_threads(threads)


BLOCKS_RUN = """
import sys, time
import numpy as np
from jaccli import memory
from jaccli.engine import compute_jacobian, prepare
from jaccli.blocks.job import FunctionSource
from jaccli.blocks.run import make_job, run_job

mode, n, out, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
source = FunctionSource.of(None, "softmax(x, dim=0)")
problem = prepare(source.resolve(), shape_options=[("x", (n,))], dtype="float32", budget=budget)
memory.hold(budget)  # as the CLI holds --max-memory
start = time.perf_counter()
if mode == "memory":
    result = compute_jacobian(problem, budget=budget)
    np.save(out, result.jacobians["y"]["x"])
else:
    job = make_job(problem, source, out, budget=budget, shape_options=[("x", (n,))])
    outcome = run_job(job, problem)
print(time.perf_counter() - start)
"""


def blocks_table(repeats: int, workdir: Path, sizes: list[int]) -> list[str]:
    """Softmax's dense J to zarr in blocks under a 1 GiB budget against J in memory saved as
    .npy (budget 4 GiB), each a whole process: seconds of compute and write (median), ns an
    entry, and peak RSS above a plain run's (the same process computing a 64² J)."""
    import shutil

    python = sys.executable
    gib = 1024**3

    def one(mode: str, n: int, budget: int) -> tuple[float, int]:
        out = workdir / ("j.npy" if mode == "memory" else "j.zarr")
        command = [python, "-c", BLOCKS_RUN, mode, str(n), str(out), str(budget)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdout is not None
        seconds = float(process.stdout.read().decode() or "nan")
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{mode} {n} failed")
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        return seconds, usage.ru_maxrss * 1024

    _, baseline = one("memory", 64, 4 * gib)
    rows = [
        f"Plain run's peak RSS (softmax 64², in memory): {format_bytes(baseline)}",
        "",
        "| J (float32) | where | budget | seconds | ns / entry | peak RSS above plain |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        modes = [("zarr", gib)] + ([("memory", 4 * gib)] if n * n * 4 * 2 < 4 * gib else [])
        for mode, budget in modes:
            runs = [one(mode, n, budget) for _ in range(repeats)]
            seconds = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            where = "j.zarr, blocks" if mode == "zarr" else "j.npy, in memory"
            rows.append(
                f"| {n}×{n} | {where} | {format_bytes(budget)} | {seconds:.1f} | "
                f"{seconds / (n * n) * 1e9:.2f} | {format_bytes(peak - baseline)} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


LOOPED = """\
import torch

def bounce(x):
    # data-dependent Python control flow: vmap cannot run it, so the points engine loops
    y = x
    for _ in range(20):
        y = torch.sin(y) * 1.5 if float(y.sum()) > 0 else torch.cos(y) - 0.5
    return y
"""


def _cli(args: list[str], workdir: Path) -> tuple[float, int, str]:
    """`jaccli ARGS` as a whole process: wall seconds, the largest peak RSS of it and of every
    process it waited for (LocalCluster workers included), and its stderr."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [JACCLI, *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"jaccli {' '.join(args)} failed: {stderr.strip()[-300:]}")
    return seconds, usage.ru_maxrss * 1024, stderr


def store_targets_table(repeats: int, workdir: Path, n: int, points: int, polar: int) -> list[str]:
    """Issue 21's targets through the CLI, target beside measured (medians of `repeats`)."""
    import shutil

    import numpy as np

    gib = 1024**3
    rows = ["| target | wanted | measured |", "|---|---|---|"]

    def median_run(args: list[str], store: str | None) -> tuple[float, int, str]:
        runs = []
        for _ in range(repeats):
            if store is not None:
                shutil.rmtree(workdir / store, ignore_errors=True)
            runs.append(_cli(args, workdir))
        return statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2]

    _, baseline, _ = _cli(["jacobian", "--expr", "softmax(x, dim=0)", "--shape", "64"], workdir)
    softmax = ["jacobian", "--expr", "softmax(x, dim=0)", "--shape", str(n)]
    zarr_s, zarr_peak, _ = median_run(
        [*softmax, "--max-memory", "1GiB", "--out", "j.zarr"], "j.zarr"
    )
    rows.append(_sampled_row(workdir / "j.zarr", n))
    print(rows[-1], file=sys.stderr, flush=True)
    shutil.rmtree(workdir / "j.zarr", ignore_errors=True)
    m = min(n, 20000)
    npy_s, _, _ = median_run(
        ["jacobian", "--expr", "softmax(x, dim=0)", "--shape", str(m), "--out", "j.npy",
         "--force", "--max-memory", "8GiB"], None,
    )  # fmt: skip
    per_zarr, per_npy = zarr_s / n**2 * 1e9, npy_s / m**2 * 1e9
    rows.append(
        f"| softmax {n}² float32 → j.zarr, --max-memory 1GiB: peak RSS above a plain run "
        f"| ≤ 1 GiB | {format_bytes(zarr_peak - baseline)} |"
    )
    rows.append(
        f"| time an entry, j.zarr ({n}²) ÷ in-memory j.npy ({m}²) | ≤ 1.5 "
        f"| {per_zarr:.2f} ns ÷ {per_npy:.2f} ns = {per_zarr / per_npy:.2f} |"
    )
    print("\n".join(rows[-2:]), file=sys.stderr, flush=True)

    if points:
        rows.append(cluster_row(repeats, workdir, points))
        print(rows[-1], file=sys.stderr, flush=True)
    if not polar:
        return rows

    import zarr

    zarr.create_array(str(workdir / "polar.zarr"), shape=(polar, 2), chunks=(65536, 2),
                      dtype="f8", overwrite=True)[...] = np.abs(
        np.random.default_rng(1).standard_normal((polar, 2))) + 0.1  # fmt: skip
    budget = 256 * 1024**2
    _, polar_peak, _ = median_run(
        ["jacobian", "--fn", "polar", "--points", "x=@polar.zarr", "--out", "polarj.zarr",
         "--cluster", "local:2", "--max-memory", "256MiB"], "polarj.zarr",
    )  # fmt: skip
    rows.append(
        f"| {polar} polar points .zarr → .zarr, --cluster local:2, --max-memory 256MiB: the "
        f"largest peak RSS of any process, above a plain run | ≤ {format_bytes(budget)} "
        f"| {format_bytes(max(0, polar_peak - baseline))} |"
    )
    print(rows[-1], file=sys.stderr, flush=True)
    rows.append(_resume_row(workdir, gib))
    print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _sampled_row(path: Path, n: int, count: int = 50) -> str:
    """`count` random rows of softmax's stored J against the closed form diag(y) − y yᵀ in
    float64: the largest error relative to the row's largest entry."""
    import numpy as np
    import zarr

    stored = zarr.open_group(str(path), mode="r")
    x = stored["inputs/x"][...].astype(np.float64)
    y = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    worst = 0.0
    for row in np.random.default_rng(2).choice(n, size=count, replace=False):
        expected = -y[row] * y
        expected[row] += y[row]
        error = np.abs(stored["J"][int(row)].astype(np.float64) - expected).max()
        worst = max(worst, float(error / np.abs(expected).max()))
    return (
        f"| softmax {n}² → j.zarr: {count} sampled rows against the closed form, largest error "
        f"relative to the row's largest entry | float32 rounding | {worst:.1e} |"
    )


def cluster_row(repeats: int, workdir: Path, points: int) -> str:
    """A function the points engine must loop over (data-dependent control flow), `points`
    points from .npy into a store: points a second with --cluster local:2 ÷ one process, whole
    runs (cluster start-up included), the two alternated so that they share the load, medians."""
    import shutil

    import numpy as np

    (workdir / "bounce.py").write_text(LOOPED, encoding="utf-8")
    np.save(workdir / "p.npy", np.random.default_rng(0).standard_normal((points, 8)))
    looped = ["jacobian", "--fn", "bounce.py:bounce", "--points", "x=@p.npy", "--out", "pj.zarr"]
    one, two = [], []
    for _ in range(repeats):
        for args, runs in ((looped, one), ([*looped, "--cluster", "local:2"], two)):
            shutil.rmtree(workdir / "pj.zarr", ignore_errors=True)
            runs.append(_cli(args, workdir)[0])
    one_s, two_s = statistics.median(one), statistics.median(two)
    return (
        f"| looped points function ({points} points), --cluster local:2 ÷ one process, "
        f"points/s (whole runs, cluster start-up included, alternated, medians of {repeats}) "
        f"| ≥ 1.6 | {one_s / two_s:.2f} ({points / one_s:.0f} vs {points / two_s:.0f} points/s) |"
    )


def _resume_row(workdir: Path, gib: int) -> str:
    """SIGKILL at a random moment, then --resume: blocks recomputed against those in flight."""
    import random
    import re
    import shutil
    import signal

    import zarr

    shutil.rmtree(workdir / "r.zarr", ignore_errors=True)
    args = ["jacobian", "--expr", "softmax(x, dim=0)", "--shape", "8000", "--max-memory",
            "128MiB", "--out", "r.zarr"]  # fmt: skip
    running = subprocess.Popen([JACCLI, *args], cwd=workdir, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(8.0, 20.0))  # torch's start-up, then some blocks
    running.send_signal(signal.SIGKILL)
    running.wait()
    done = zarr.open_group(str(workdir / "r.zarr"), mode="r")["done"][...]
    kept = int(done.sum())
    _, _, stderr = _cli([*args, "--resume"], workdir)
    computed = int(re.search(r"(\d+) computed", stderr).group(1))  # type: ignore[union-attr]
    return (
        f"| SIGKILL at a random moment ({kept} of {done.size} blocks marked done), then "
        f"--resume: blocks computed again beyond those not marked | ≤ blocks in flight (1) "
        f"| {computed - (done.size - kept)} ({computed} computed, {kept} kept) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-repeats", type=int, default=11)
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--guard-only", action="store_true", help="only the guard's cost")
    parser.add_argument(
        "--reference-only", action="store_true", help="only the function reference's cost"
    )
    parser.add_argument(
        "--derivatives-only", action="store_true", help="only det, jvp, hessian and hvp"
    )
    parser.add_argument("--points-only", action="store_true", help="only many points")
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="only the in-process rows held to a target: det, jvp, hessian, hvp, many points",
    )
    parser.add_argument("--cold-only", action="store_true", help="only whole processes")
    parser.add_argument("--pictures-only", action="store_true", help="only --view heatmap")
    parser.add_argument(
        "--fastest",
        action="store_true",
        help="in-process rows interleaved run by run report the fastest run, not the median",
    )
    parser.add_argument("--pattern-only", action="store_true", help="only sparsity patterns")
    parser.add_argument("--sparse-only", action="store_true", help="only sparse J and H")
    parser.add_argument(
        "--sparse-targets-only",
        action="store_true",
        help="only the --sparse targets, whole processes",
    )
    parser.add_argument(
        "--blocks-only",
        type=int,
        nargs="*",
        metavar="N",
        help="only J to zarr in blocks against J in memory, for N×N softmax (default 20000)",
    )
    parser.add_argument(
        "--store-targets-only",
        type=int,
        nargs=3,
        metavar=("N", "POINTS", "POLAR"),
        help="only issue 21's targets through the CLI (0 skips a row: POLAR 0 the polar and "
        "resume rows): softmax N² to zarr (the issue: 50000), "
        "POINTS looped points on local:2, POLAR polar points zarr to zarr (the issue: 1000000)",
    )
    parser.add_argument(
        "--cluster-only",
        type=int,
        metavar="POINTS",
        help="only issue 21's speed-up: POINTS points of a looped function, one process "
        "against --cluster local:2, alternated in the same run (e.g. 4000)",
    )
    args = parser.parse_args()
    if args.cluster_only is not None:
        import tempfile

        print(f"load: {os.getloadavg()[0]:.2f}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="jaccli-bench-") as workdir:
            row = cluster_row(args.repeats, Path(workdir), args.cluster_only)
        print(f"{row}\nload after: {os.getloadavg()[0]:.2f}")
        return
    if args.fastest:
        global STATISTIC
        STATISTIC = min
    if args.store_targets_only is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="jaccli-bench-") as workdir:
            rows = store_targets_table(args.repeats, Path(workdir), *args.store_targets_only)
        print("\n".join(rows))
        return
    if args.blocks_only is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="jaccli-bench-") as workdir:
            rows = blocks_table(args.repeats, Path(workdir), args.blocks_only or [20000])
        print("\n".join(rows))
        return
    if args.cold_only:
        print("\n".join(cold_table(args.cold_repeats)) + "\n")
        print("\n".join(coprocess_table(args.cold_repeats)))
        return
    only = (
        args.guard_only
        or args.reference_only
        or args.derivatives_only
        or args.points_only
        or args.pictures_only
        or args.pattern_only
        or args.sparse_only
        or args.sparse_targets_only
        or args.targets_only
    )
    points_rows: list[str] = []
    if args.points_only or not only:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            points_rows = points_process_table(args.cold_repeats, Path(workdir))
    cold = [] if only else [*cold_table(args.cold_repeats), "", *coprocess_table(args.cold_repeats)]
    import torch

    from jaccli.memory import default_budget

    budget = default_budget()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); memory budget "
        f"{format_bytes(budget)}; in-process {'fastest' if args.fastest else 'medians'} of "
        f"{args.repeats} runs (3 for the slowest), "
        f"float32; whole-process medians of {args.cold_repeats} interleaved runs.\n"
    )
    if args.guard_only:
        print("\n".join(guard_table(args.repeats, budget)))
        return
    if args.reference_only:
        print("\n".join(reference_table(args.repeats, budget)))
        return
    if args.derivatives_only:
        print("\n".join(derivatives_table(args.repeats, budget)))
        return
    if args.pictures_only:
        print("\n".join(pictures_table(args.repeats, budget)))
        return
    if args.targets_only:
        print("\n".join(derivatives_table(args.repeats, budget)) + "\n")
        print("\n".join(points_compute_table(args.repeats, budget)))
        return
    if args.pattern_only:
        print("\n".join(pattern_table(args.repeats, budget)))
        return
    if args.sparse_only:
        print("\n".join(sparse_table(args.repeats, budget)))
        return
    if args.sparse_targets_only:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            print("\n".join(targets_table(args.repeats, Path(workdir))))
        return
    if args.points_only:
        print("\n".join(points_rows) + "\n")
        print("\n".join(points_compute_table(args.repeats, budget)))
        return
    print("\n".join(cold) + "\n")
    print("\n".join(guard_table(args.repeats, budget)) + "\n")
    print("\n".join(reference_table(args.repeats, budget)) + "\n")
    if not args.skip_dense:
        print("\n".join(dense_table(args.repeats, budget)) + "\n")
        print("\n".join(batched_table(args.repeats, budget)) + "\n")
        print("\n".join(derivatives_table(args.repeats, budget)) + "\n")
        print("\n".join(pattern_table(args.repeats, budget)) + "\n")
        print("\n".join(sparse_table(args.repeats, budget)) + "\n")
        print("\n".join(points_rows) + "\n")
        print("\n".join(points_compute_table(args.repeats, budget)))


if __name__ == "__main__":
    main()
