"""Blocks as tasks on a real Dask cluster: a scheduler and workers started with the `dask`
command on 127.0.0.1 (random free ports, bounded in time, always torn down); results equal the
in-memory J, a worker killed mid-run changes nothing, an interrupted run resumes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from jaccli.blocks import store
from jaccli.blocks.cluster import DaskExecutor, parse_cluster, reach_probe
from jaccli.blocks.job import FunctionSource
from jaccli.blocks.run import Progress, make_job, run_job
from jaccli.engine import compute_jacobian, prepare
from jaccli.engine.blocks import joined_matrix
from jaccli.errors import UsageError

DASK = str(Path(sys.executable).with_name("dask"))
START_SECONDS = 90.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_worker(address: str) -> subprocess.Popen[bytes]:
    """A worker process of its own (no nanny), so that killing it kills the worker."""
    return subprocess.Popen(
        [
            DASK,
            "worker",
            address,
            "--nthreads",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--death-timeout",
            "60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout=START_SECONDS) as client:
        client.wait_for_workers(count, timeout=START_SECONDS)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()  # nothing to keep: the stores are the tests' own
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """`dask scheduler` and two `dask worker`s on 127.0.0.1; the workers list may grow."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        processes += [_start_worker(address) for _ in range(2)]
        _wait_for_workers(address, 2)
        yield address, processes
    finally:
        for process in reversed(processes):
            _stop(process)


MODEL = """\
import time
import torch

def f(x):
    return torch.tanh(x).cumsum(0) * x.sum()

def slow(x):
    time.sleep(0.05)
    return torch.sin(x).cumsum(0) * x.square().sum()
"""


def _run_on(address: str, source: FunctionSource, out: Path, shapes: list, **options: object):
    problem = prepare(source.resolve(), shape_options=shapes, dtype="float64")
    with DaskExecutor(parse_cluster(address)) as executor:
        job = make_job(
            problem,
            source,
            str(out),
            budget=2**30,
            shape_options=shapes,
            workers=executor.workers,
            largest_block=3 * 8 * 32,
        )
        outcome = run_job(job, problem, executor=executor, **options)  # type: ignore[arg-type]
    return problem, outcome


def _equal_to_in_memory(problem, out: Path) -> None:  # type: ignore[no-untyped-def]
    expected = joined_matrix(problem, compute_jacobian(problem)).numpy()
    np.testing.assert_allclose(zarr.open_group(str(out), mode="r")["J"][...], expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["preset", "expression", "user file"])
def test_blocks_on_a_scheduler_equal_the_in_memory_j(
    scheduler: tuple[str, list], tmp_path: Path, kind: str
) -> None:
    address, _ = scheduler
    if kind == "preset":
        source, shapes = FunctionSource.of("matmul"), [("a", (4, 4)), ("b", (4, 8))]
    elif kind == "expression":
        source, shapes = FunctionSource.of(None, "softmax(x, dim=0)"), [("x", (32,))]
    else:
        model = tmp_path / "model.py"
        model.write_text(MODEL, encoding="utf-8")
        source, shapes = FunctionSource.of(f"{model}:f"), [("x", (32,))]
    problem = prepare(source.resolve(), shape_options=shapes, dtype="float64")
    if kind == "user file":
        os.unlink(tmp_path / "model.py")  # the workers get its bytes, not its path
    _, outcome = _run_on(address, source, tmp_path / "j.zarr", shapes)
    assert outcome.plan.count > 2 and outcome.computed == outcome.plan.count
    _equal_to_in_memory(problem, tmp_path / "j.zarr")


def test_a_worker_killed_mid_run_changes_nothing(
    scheduler: tuple[str, list], tmp_path: Path
) -> None:
    address, processes = scheduler
    doomed = _start_worker(address)
    processes.append(doomed)
    _wait_for_workers(address, 3)
    model = tmp_path / "model.py"
    model.write_text(MODEL, encoding="utf-8")
    source = FunctionSource.of(f"{model}:slow")

    def kill_once(progress: Progress) -> None:
        if progress.done == 1 and doomed.poll() is None:
            os.kill(doomed.pid, signal.SIGKILL)

    problem, outcome = _run_on(
        address, source, tmp_path / "j.zarr", [("x", (32,))], on_progress=kill_once
    )
    assert doomed.poll() == -signal.SIGKILL
    assert outcome.computed == outcome.plan.count
    _equal_to_in_memory(problem, tmp_path / "j.zarr")


def test_an_interrupted_cluster_run_resumes(scheduler: tuple[str, list], tmp_path: Path) -> None:
    address, _ = scheduler
    source = FunctionSource.of(None, "softmax(x, dim=0)")

    def interrupt(progress: Progress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run_on(address, source, tmp_path / "j.zarr", [("x", (32,))], on_progress=interrupt)
    kept = store.done_blocks(str(tmp_path / "j.zarr")).sum()
    assert kept >= 1
    problem, outcome = _run_on(address, source, tmp_path / "j.zarr", [("x", (32,))], resume=True)
    assert outcome.kept >= kept and outcome.kept + outcome.computed == outcome.plan.count
    _equal_to_in_memory(problem, tmp_path / "j.zarr")


def test_a_store_the_workers_see_elsewhere_is_refused(tmp_path: Path) -> None:
    # the worker's side of the probe, where the client's probe file is not in the folder
    _, problem = reach_probe(str(tmp_path), "token-written-elsewhere", None)
    assert problem is not None and problem.startswith("cannot reach")
    store.write_probe(str(tmp_path), "a-token")
    assert reach_probe(str(tmp_path), "a-token", None)[1] is None
    assert "cannot read the points file" in str(
        reach_probe(str(tmp_path), "a-token", str(tmp_path / "missing.npy"))[1]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local:0", "must be 1 to"),
        ("http://x:1", "expected local, local:N"),
        ("lcl", "bad"),
        ("tcp://127.0.0.1:99999", "the port must be 1 to 65535"),
        ("tcp://127.0.0.1:0", "the port must be 1 to 65535"),
        ("tcp://[::1:8786", "expected local, local:N"),  # was an internal ValueError
        ("tcp://a\x1b[31mb:1", "expected local, local:N"),  # no escapes reach the terminal
    ],
)
def test_bad_cluster_names_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_cluster(text)


def test_an_unreachable_scheduler_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match="cannot use the Dask scheduler there"):
        DaskExecutor(parse_cluster(f"tcp://127.0.0.1:{_free_port()}"), 2.0).__enter__()


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("tcp://127.0.0.1:{port}", "nothing listens at 127.0.0.1:{port}: Connection refused"),
        ("tcp://jaccli-no-such-host.invalid:8786", "cannot find host jaccli-no-such-host.invalid"),
    ],
)
def test_a_scheduler_address_where_nothing_listens_is_refused_before_dask_tries(
    address: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask's client retried a refused connection until its timeout (10 s under the CLI)
    before saying so; the refusal now names the cause, and Dask's client is never made."""
    import distributed

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("Dask's client was asked to connect")

    monkeypatch.setattr(distributed, "Client", never)
    port = _free_port()
    with pytest.raises(UsageError, match="cannot use the Dask scheduler there") as refused:
        DaskExecutor(parse_cluster(address.format(port=port)), 600.0).__enter__()
    assert says.format(port=port) in refused.value.message


def test_a_server_that_is_not_dask_is_refused_in_one_line() -> None:
    """A web server where the scheduler should be: its first bytes, read as Dask's frame
    count, asked for exabytes, and the run ended as a memory refusal (exit 3)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        for _ in range(4):
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            connection.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(UsageError, match="cannot use the Dask scheduler there") as refused:
            DaskExecutor(parse_cluster(address), 2.0).__enter__()
        assert "\n" not in refused.value.message
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["preset", "expression", "user file"])
def test_the_cli_on_a_scheduler_equals_the_in_memory_j(
    scheduler: tuple[str, list],
    tmp_path: Path,
    jaccli,
    kind: str,  # type: ignore[no-untyped-def]
) -> None:
    address, _ = scheduler
    if kind == "preset":
        function, shapes = ["--fn", "matmul"], [("a", (4, 4)), ("b", (4, 8))]
    elif kind == "expression":
        function, shapes = ["--expr", "softmax(x, dim=0)"], [("x", (32,))]
    else:
        model = tmp_path / "model.py"
        model.write_text(MODEL, encoding="utf-8")
        function, shapes = ["--fn", f"{model}:f"], [("x", (32,))]
    source = FunctionSource.of(function[1] if kind != "expression" else None,
                               function[1] if kind == "expression" else None)  # fmt: skip
    problem = prepare(source.resolve(), shape_options=shapes, dtype="float64")
    shape_options = [f"--shape={name}={'x'.join(map(str, s))}" for name, s in shapes]
    out = tmp_path / "j.zarr"
    run = jaccli(
        "jacobian", *function, *shape_options, "--dtype", "float64", "--out", str(out),
        "--cluster", address,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert re.search(r"computed on [23] workers", run.stderr)  # the scheduler's, not this process
    _equal_to_in_memory(problem, out)


def test_a_hessian_on_a_scheduler_equals_the_in_memory_hessian(
    scheduler: tuple[str, list],
    tmp_path: Path,
    jaccli,  # type: ignore[no-untyped-def]
) -> None:
    """The workers rebuild the gradient of a user's function from the file's bytes the job
    carries: H's blocks equal the engine's in-memory Hessian."""
    from jaccli.engine import run_hessian

    address, _ = scheduler
    model = tmp_path / "model.py"
    model.write_text(MODEL, encoding="utf-8")
    source = FunctionSource.of(f"{model}:f")
    problem = prepare(source.resolve(), shape_options=[("x", (12,))], dtype="float64")
    ((h,),) = [tuple(by_b.values()) for by_b in run_hessian(problem).hessians["y"].values()]
    out = tmp_path / "h.zarr"
    run = jaccli("hessian", "--fn", f"{model}:f", "--shape", "12", "--dtype", "float64",
                 "--out", str(out), "--cluster", address)  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert re.search(r"wrote .*: H 144x12 float64 in \d+ blocks .* computed on [23] workers",
                     run.stderr)  # fmt: skip
    stored = zarr.open_group(str(out), mode="r")["J"][...]
    np.testing.assert_allclose(stored, np.asarray(h).reshape(144, 12), rtol=1e-12, atol=1e-14)
