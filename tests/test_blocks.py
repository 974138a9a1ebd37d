"""J in blocks stored in zarr, in this process: equal to the in-memory J, resumable after
SIGKILL, refused where the store belongs to another run; inputs read from .zarr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from jaccli.blocks import store
from jaccli.blocks.inputs import points_source, read_points
from jaccli.blocks.job import FunctionSource
from jaccli.blocks.run import Outcome, make_job, run_job
from jaccli.engine import compute_jacobian, prepare
from jaccli.engine.blocks import joined_matrix
from jaccli.engine.problem import Problem
from jaccli.errors import ComputationError, MissingDependencyError, UsageError
from jaccli.loaders import load_array

USER_FILE = """\
import torch

def f(x):
    return torch.tanh(x).cumsum(0) * x.sum()

def wide(x):
    return torch.cat([x.sin(), x.cos() * x.sum(), x ** 3])

def tall_force(x):
    energy = (x ** 3).sum() / 3 + (x[1:] * x[:-1]).sum()
    (g,) = torch.autograd.grad(energy, x, create_graph=True)
    return torch.cat([g, g.sin(), x * g])
"""


def _user_file(tmp_path: Path) -> str:
    path = tmp_path / "model.py"
    path.write_text(USER_FILE, encoding="utf-8")
    return str(path)


def _stored(path: Path | str, array: str = "J") -> np.ndarray:
    return zarr.open_group(str(path), mode="r")[array][...]


def _run(
    source: FunctionSource,
    out: Path,
    shapes: list[tuple[str | None, tuple[int, ...]]],
    *,
    largest_block: int,
    kind: str = "auto",
    resume: bool = False,
    force: bool = False,
    dtype: str = "float64",
) -> tuple[Problem, Outcome]:
    problem = prepare(source.resolve(), shape_options=shapes, dtype=dtype)
    job = make_job(
        problem,
        source,
        str(out),
        budget=2**30,
        kind=kind,
        shape_options=shapes,
        largest_block=largest_block,
    )
    return problem, run_job(job, problem, resume=resume, force=force)


def _softmax_24(out: Path, **options: bool) -> tuple[Problem, Outcome]:
    """J of softmax over 24 numbers into `out`, in blocks of 4 rows (6 blocks)."""
    return _run(
        FunctionSource.of(None, "softmax(x, dim=0)"),
        out,
        [("x", (24,))],
        largest_block=4 * 8 * 24,
        **options,
    )


def _in_memory(problem: Problem) -> np.ndarray:
    return joined_matrix(problem, compute_jacobian(problem)).numpy()


@pytest.mark.parametrize(
    ("name", "expression", "shapes"),
    [
        ("matmul", None, [("a", (3, 4)), ("b", (4, 5))]),
        (None, "softmax(x, dim=0)", [("x", (40,))]),
        ("USER:f", None, [("x", (30,))]),
    ],
)
def test_row_blocks_equal_the_in_memory_j(
    tmp_path: Path, name: str | None, expression: str | None, shapes: list
) -> None:
    if name == "USER:f":
        name = f"{_user_file(tmp_path)}:f"
    source = FunctionSource.of(name, expression, [n for n, _ in shapes])
    problem, outcome = _run(source, tmp_path / "j.zarr", shapes, largest_block=3 * 8 * 32)
    assert outcome.plan.kind == "rows" and outcome.plan.count > 2
    assert (outcome.computed, outcome.kept) == (outcome.plan.count, 0)
    np.testing.assert_allclose(_stored(tmp_path / "j.zarr"), _in_memory(problem), rtol=1e-12)
    header = store.read_header(str(tmp_path / "j.zarr"))
    assert header["complete"] and header["command"] == "jacobian"
    assert header["function"]["formula"] == problem.function.formula
    guard = _stored(tmp_path / "j.zarr", "guard")
    assert np.all(np.abs(guard[:, 0] - guard[:, 1]) <= guard[:, 2])  # every block was probed


def test_column_blocks_of_a_tall_j_equal_the_in_memory_j(tmp_path: Path) -> None:
    source = FunctionSource.of(f"{_user_file(tmp_path)}:wide")
    problem, outcome = _run(source, tmp_path / "j.zarr", [("x", (20,))], largest_block=60 * 8 * 3)
    assert outcome.plan.kind == "columns" and outcome.plan.count == 7
    np.testing.assert_allclose(_stored(tmp_path / "j.zarr"), _in_memory(problem), rtol=1e-12)


def test_a_tall_j_forward_mode_cannot_run_is_stored_in_rows(tmp_path: Path) -> None:
    """torch.autograd.grad inside: forward mode finds no graph, so the blocks are rows."""
    source = FunctionSource.of(f"{_user_file(tmp_path)}:tall_force")
    problem, outcome = _run(source, tmp_path / "j.zarr", [("x", (20,))], largest_block=60 * 8 * 3)
    assert outcome.plan.kind == "rows" and outcome.plan.count > 2
    assert any("forward mode cannot compute tall_force's columns" in n for n in outcome.notes)
    stored = _stored(tmp_path / "j.zarr")
    np.testing.assert_allclose(stored, _in_memory(problem), rtol=1e-12)
    x = problem.inputs["x"].numpy()  # H of the energy: diag(2x) + ones beside the diagonal
    hessian = np.diag(2 * x) + np.eye(20, k=1) + np.eye(20, k=-1)
    np.testing.assert_allclose(stored[:20], hessian, rtol=1e-12)
    with pytest.raises(ComputationError):  # --strategy fwd is taken at its word
        _run(source, tmp_path / "f.zarr", [("x", (20,))], largest_block=1 << 20, kind="columns")


@pytest.mark.parametrize("kind", ["rows", "columns"])
def test_h_in_blocks_equals_the_in_memory_hessian(tmp_path: Path, kind: str) -> None:
    """Rows of H are VJPs of the gradient, columns its JVPs (forward over reverse); either
    way, block by block, H equals the engine's in-memory Hessian."""
    from jaccli.engine import run_hessian
    from jaccli.engine.hessian import gradient_problem

    source = FunctionSource.of(f"{_user_file(tmp_path)}:f")
    function = prepare(source.resolve(), shape_options=[("x", (16,))], dtype="float64")
    problem = gradient_problem(function)
    job = make_job(problem, source, str(tmp_path / "h.zarr"), budget=2**30, kind=kind,
                   shape_options=[("x", (16,))], largest_block=16 * 8 * 16 * 3,
                   command="hessian")  # fmt: skip
    outcome = run_job(job, problem, function=function)
    assert outcome.plan.kind == kind and outcome.plan.count > 2
    ((h,),) = [tuple(by_b.values()) for by_b in run_hessian(function).hessians["y"].values()]
    np.testing.assert_allclose(_stored(tmp_path / "h.zarr"), np.asarray(h).reshape(256, 16),
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    assert store.read_header(str(tmp_path / "h.zarr"))["command"] == "hessian"


def test_the_store_keeps_the_point_and_f_there(tmp_path: Path) -> None:
    source = FunctionSource.of(None, "x.exp().sum(dim=1)")
    problem, _ = _run(source, tmp_path / "j.zarr", [("x", (3, 4))], largest_block=1 << 20)
    np.testing.assert_array_equal(_stored(tmp_path / "j.zarr", "inputs/x"), problem.inputs["x"])
    np.testing.assert_allclose(
        _stored(tmp_path / "j.zarr", "outputs/y"), problem.inputs["x"].exp().sum(dim=1)
    )
    header = store.read_header(str(tmp_path / "j.zarr"))
    assert header["matrix"]["rows"] == [{"output": "y", "shape": [3], "start": 0, "stop": 3}]


def test_points_from_zarr_to_a_store_equal_each_points_j(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(0.5, 2.0, size=(50, 2))
    zarr.create_array(str(tmp_path / "p.zarr"), shape=points.shape, dtype="float64")[...] = points
    source = FunctionSource.of("polar")
    points_file = points_source("x", str(tmp_path / "p.zarr"))
    np.testing.assert_array_equal(read_points(points_file, 10, 13), points[10:13])
    problem = prepare(
        source.resolve(), point_options=[], shape_options=[("x", (2,))], dtype="float64"
    )
    job = make_job(
        problem,
        source,
        str(tmp_path / "j.zarr"),
        budget=2**30,
        points=points_file,
        shape_options=[("x", (2,))],
        largest_block=16 * 4 * 8,
    )
    outcome = run_job(job, problem)
    assert outcome.plan.kind == "points" and outcome.plan.count == 4
    stored = _stored(tmp_path / "j.zarr")
    r, theta = points[:, 0], points[:, 1]
    closed_form = np.stack(
        [
            np.stack([np.cos(theta), -r * np.sin(theta)], 1),
            np.stack([np.sin(theta), r * np.cos(theta)], 1),
        ],
        1,
    )
    np.testing.assert_allclose(stored, closed_form, rtol=1e-12, atol=1e-15)


def test_value_from_zarr_reads_the_array_or_a_named_one(tmp_path: Path) -> None:
    values = np.arange(6.0).reshape(2, 3)
    zarr.create_array(str(tmp_path / "x.zarr"), shape=(2, 3), dtype="float64")[...] = values
    np.testing.assert_array_equal(load_array(str(tmp_path / "x.zarr"), 1 << 20).values, values)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=(2, 3), dtype="float64")[...] = values
    with pytest.raises(UsageError, match=r"a group of 2 arrays; name one as .*#NAME"):
        load_array(str(tmp_path / "g.zarr"), 1 << 20)
    assert load_array(f"{tmp_path / 'g.zarr'}#b", 1 << 20).shape == (2, 3)
    with pytest.raises(UsageError, match="over the limit"):
        load_array(str(tmp_path / "x.zarr"), 16)


def _uncompressed(path: Path) -> Path:
    """x = [1, 2, 3, 4] in a store of one raw chunk, c/0."""
    array = zarr.create_array(str(path), shape=(4,), chunks=(4,), dtype="<f4", compressors=None)
    array[...] = np.arange(1.0, 5.0)
    return path


@pytest.mark.parametrize(
    ("replace", "target", "message"),
    [
        ("c/0", "secret", "c/0 is a link; a store's files must be its own"),  # read another file
        ("c/0", "/dev/zero", "c/0 is a link"),  # read until memory ran out (exit 3)
        ("zarr.json", "fifo", "zarr.json is not a regular file"),  # waited for ever
        ("c/0", "large", "c/0 holds 1000000 bytes, more than a chunk of this array can"),
    ],
)
def test_a_zarr_input_reads_only_its_own_files(
    tmp_path: Path, replace: str, target: str, message: str
) -> None:
    store = _uncompressed(tmp_path / "x.zarr")
    entry = store / replace
    entry.unlink()
    if target == "secret":
        (tmp_path / "secret").write_bytes(np.full(4, 9.0, dtype="<f4").tobytes())
        entry.symlink_to(tmp_path / "secret")
    elif target == "fifo":
        os.mkfifo(entry)
    elif target == "large":
        entry.write_bytes(bytes(10**6))
    else:
        entry.symlink_to(target)
    for read in (
        lambda: load_array(str(store), 1 << 20),
        lambda: points_source("x", str(store)),
    ):
        with pytest.raises(UsageError, match=message):
            read()


def test_an_existing_store_is_refused_without_resume_or_force(tmp_path: Path) -> None:
    source = FunctionSource.of(None, "softmax(x, dim=0)")
    shapes = [("x", (8,))]
    _run(source, tmp_path / "j.zarr", shapes, largest_block=1 << 20)
    with pytest.raises(UsageError, match="exists; add --resume to complete it, or --force"):
        _run(source, tmp_path / "j.zarr", shapes, largest_block=1 << 20)
    _, outcome = _run(source, tmp_path / "j.zarr", shapes, largest_block=1 << 20, force=True)
    assert outcome.computed == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(UsageError, match="not a store jaccli wrote"):
        _run(source, tmp_path / "mine", shapes, largest_block=1 << 20, force=True)
    assert (tmp_path / "mine" / "notes.txt").exists()
    # a store's attributes are no licence to remove what else the folder holds
    (tmp_path / "j.zarr" / "notes.txt").write_text("keep me too", encoding="utf-8")
    with pytest.raises(UsageError, match=r"holds files jaccli did not write \(notes.txt\)"):
        _run(source, tmp_path / "j.zarr", shapes, largest_block=1 << 20, force=True)
    assert (tmp_path / "j.zarr" / "notes.txt").exists()


@pytest.mark.parametrize(
    ("expression", "dtype", "shape", "reason"),
    [
        ("softmax(x, dim=0) * 2", "float64", (8,), "holds the Jacobian of y = softmax"),
        ("softmax(x, dim=0)", "float32", (8,), "has dtype float64, not float32"),
        ("softmax(x, dim=0)", "float64", (9,), "has input x of shape"),
    ],
)
def test_a_store_of_another_run_is_refused_by_resume(
    tmp_path: Path, expression: str, dtype: str, shape: tuple[int, ...], reason: str
) -> None:
    _run(
        FunctionSource.of(None, "softmax(x, dim=0)"),
        tmp_path / "j.zarr",
        [("x", (8,))],
        largest_block=1 << 20,
    )
    with pytest.raises(UsageError, match=reason) as refused:
        _run(
            FunctionSource.of(None, expression),
            tmp_path / "j.zarr",
            [("x", shape)],
            largest_block=1 << 20,
            resume=True,
            dtype=dtype,
        )
    assert "\n" not in refused.value.message


def test_a_changed_user_file_is_refused_by_resume(tmp_path: Path) -> None:
    name = f"{_user_file(tmp_path)}:f"
    _run(FunctionSource.of(name), tmp_path / "j.zarr", [("x", (5,))], largest_block=1 << 20)
    with open(name.rpartition(":")[0], "a", encoding="utf-8") as file:
        file.write("\n# edited\n")
    with pytest.raises(UsageError, match="other contents of f's file"):
        _run(
            FunctionSource.of(name),
            tmp_path / "j.zarr",
            [("x", (5,))],
            largest_block=1 << 20,
            resume=True,
        )


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    source = FunctionSource.of(None, "softmax(x, dim=0)")
    shapes = [("x", (24,))]
    problem = prepare(source.resolve(), shape_options=shapes, dtype="float64")
    job = make_job(
        problem,
        source,
        str(tmp_path / "j.zarr"),
        budget=2**30,
        shape_options=shapes,
        largest_block=4 * 8 * 24,
    )

    def stop_after_two(progress: object) -> None:
        if progress.done == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(job, problem, on_progress=stop_after_two)
    assert store.done_blocks(str(tmp_path / "j.zarr")).sum() == 2
    assert not store.read_header(str(tmp_path / "j.zarr"))["complete"]
    unwritten = _stored(tmp_path / "j.zarr")[8:]
    assert np.isnan(unwritten).all()  # never zeros that could pass for J
    outcome = run_job(job, problem, resume=True)
    assert (outcome.kept, outcome.computed) == (2, 4)
    np.testing.assert_allclose(_stored(tmp_path / "j.zarr"), _in_memory(problem), rtol=1e-12)


def _blocked_store(tmp_path: Path) -> tuple[Problem, Path]:
    """softmax's 24×24 J stored in 6 blocks of 4 rows, every block done."""
    problem, outcome = _softmax_24(tmp_path / "j.zarr")
    assert outcome.computed == 6
    return problem, tmp_path / "j.zarr"


def test_a_done_marker_without_its_block_is_computed_again(tmp_path: Path) -> None:
    problem, path = _blocked_store(tmp_path)
    chunks = sorted((path / "J" / "c").iterdir())
    assert len(chunks) == 6
    import shutil

    shutil.rmtree(chunks[3])  # block 3's chunk gone, its done marker still set
    _, outcome = _softmax_24(path, resume=True)
    assert (outcome.kept, outcome.computed) == (5, 1)
    stored = _stored(path)
    assert not np.isnan(stored).any()  # never the NaN of an unwritten block, called complete
    np.testing.assert_allclose(stored, _in_memory(problem), rtol=1e-12)


def test_a_done_block_edited_afterwards_is_computed_again(tmp_path: Path) -> None:
    """A block marked done whose values changed after it was written (one entry set to NaN,
    one nudged by a part in a million) is not kept by --resume: its digest tells."""
    problem, path = _blocked_store(tmp_path)
    j = zarr.open_group(str(path), mode="r+")["J"]
    j[9, 5] = np.nan  # block 2 (rows 8 to 11)
    j[21, 0] = j[21, 0] * (1 + 1e-6)  # block 5
    _, outcome = _softmax_24(path, resume=True)
    assert (outcome.kept, outcome.computed) == (4, 2)
    assert any(note.startswith("2 blocks marked done had changed") for note in outcome.notes)
    np.testing.assert_allclose(_stored(path), _in_memory(problem), rtol=1e-12)


def test_a_store_whose_description_was_edited_is_described_again_by_resume(
    tmp_path: Path,
) -> None:
    """The point J was computed at, f there, and where each output lies in J's rows, edited
    after a complete run: --resume kept them and called the store complete, so a reader took
    J at a point it was not computed at. Now they are written again, with a warning."""
    import json

    problem, path = _blocked_store(tmp_path)
    written = zarr.open_group(str(path), mode="r")
    before = {name: written[name][...] for name in ("inputs/x", "outputs/y")}
    header = store.read_header(str(path))
    edited = zarr.open_group(str(path), mode="r+")
    edited["inputs/x"][0] = 123.0
    edited["outputs/y"][5] = 7.0
    metadata = path / "zarr.json"
    meta = json.loads(metadata.read_text(encoding="utf-8"))
    meta["attributes"]["jaccli"]["matrix"]["rows"][0]["stop"] = 5
    meta["attributes"]["jaccli"]["blocks"]["count"] = 2
    metadata.write_text(json.dumps(meta), encoding="utf-8")
    _, outcome = _softmax_24(path, resume=True)
    assert (outcome.kept, outcome.computed) == (6, 0)
    assert any(
        "attribute blocks, attribute matrix, inputs/x, outputs/y had changed" in note
        for note in outcome.notes
    ), outcome.notes
    for name, values in before.items():
        np.testing.assert_array_equal(_stored(path, name), values)
    np.testing.assert_array_equal(_stored(path, "inputs/x"), problem.inputs["x"])
    assert store.read_header(str(path)) == header
    np.testing.assert_allclose(_stored(path), _in_memory(problem), rtol=1e-12)


def test_an_unchanged_store_is_resumed_without_a_warning(tmp_path: Path) -> None:
    _, path = _blocked_store(tmp_path)
    _, outcome = _softmax_24(path, resume=True)
    assert (outcome.kept, outcome.computed, outcome.notes) == (6, 0, ())


def test_a_store_of_the_previous_layout_resumes(tmp_path: Path) -> None:
    """A store as the previous version wrote it (J's chunks in Blosc-lz4, no digests), stopped
    after three of its six blocks: --resume keeps them, computes the rest with J's own codec,
    and the result equals the in-memory J."""
    from zarr.codecs import BloscCodec

    problem, new = _blocked_store(tmp_path)
    written = zarr.open_group(str(new), mode="r")
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    old.attrs.update(dict(written.attrs))
    j = old.create_array(
        "J", shape=(24, 24), chunks=(4, 24), dtype=np.float64, fill_value=np.nan,
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )  # fmt: skip
    j[:12] = written["J"][:12]
    done = old.create_array("done", shape=(6,), chunks=(1,), dtype=np.uint8, fill_value=0)
    done[:3] = 1
    guard = old.create_array("guard", shape=(6, 3), chunks=(1, 3), dtype=np.float64)
    guard[:3] = written["guard"][:3]
    for name in ("inputs/x", "outputs/y"):
        old.create_array(name, data=written[name][...])
    _, outcome = _softmax_24(tmp_path / "old.zarr", resume=True)
    assert (outcome.kept, outcome.computed) == (3, 3)
    stored = zarr.open_group(str(tmp_path / "old.zarr"), mode="r")
    assert "digest" not in stored and stored["J"].compressors[0].cname.value == "lz4"
    np.testing.assert_allclose(stored["J"][...], _in_memory(problem), rtol=1e-12)


@pytest.mark.parametrize(
    ("array", "edit"),
    [
        ("J", lambda meta: meta.update(data_type="float16")),
        ("J", lambda meta: meta["chunk_grid"]["configuration"].update(chunk_shape=[24, 24])),
        ("done", lambda meta: meta.update(data_type="float64")),
        ("guard", lambda meta: meta.update(shape=[5, 3])),
        (".", lambda meta: meta["attributes"]["jaccli"]["blocks"].update(size=5)),
    ],
)
def test_resume_refuses_a_store_whose_arrays_were_edited(
    tmp_path: Path, array: str, edit: object
) -> None:
    import json

    _, path = _blocked_store(tmp_path)
    metadata = path / array / "zarr.json"
    meta = json.loads(metadata.read_text(encoding="utf-8"))
    edit(meta)  # type: ignore[operator]
    metadata.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(UsageError, match="does not hold the blocks its attributes describe"):
        _softmax_24(path, resume=True)


def test_a_full_disk_is_one_line_and_leaves_the_store_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under a store was "internal error: OSError: [Errno 28] …"."""
    import errno

    problem, path = _blocked_store(tmp_path)
    (path / "done" / "c" / "2").unlink()  # block 2 to compute again
    opened = zarr.open_group

    def full(*args: object, mode: str = "a", **options: object) -> object:
        if mode == "r+":
            raise OSError(errno.ENOSPC, "No space left on device")
        return opened(*args, mode=mode, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(zarr, "open_group", full)
    with pytest.raises(ComputationError, match=r"cannot write --out .*: No space left on device; "
                       r"the blocks written so far are kept") as refused:  # fmt: skip
        _softmax_24(path, resume=True)
    assert refused.value.code == "cannot_write"
    monkeypatch.setattr(zarr, "open_group", opened)
    _, outcome = _softmax_24(path, resume=True)
    assert (outcome.kept, outcome.computed) == (5, 1)
    np.testing.assert_allclose(_stored(path), _in_memory(problem), rtol=1e-12)


HOLDER = """\
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_a_store_another_run_is_writing_is_neither_replaced_nor_resumed(tmp_path: Path) -> None:
    """--force of a store under a running job replaced it, and the job went on writing its
    blocks, marked done, into the new run's store: another function's numbers."""
    _, path = _blocked_store(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for way in ({"force": True}, {"resume": True}):
            with pytest.raises(UsageError, match="is being written by another jaccli run"):
                _run(
                    FunctionSource.of(None, "softmax(x, dim=0) * 2"),
                    path,
                    [("x", (24,))],
                    largest_block=4 * 8 * 24,
                    **way,  # type: ignore[arg-type]
                )
    finally:
        holder.kill()
        holder.wait()
    _, outcome = _softmax_24(path, resume=True)
    assert (outcome.kept, outcome.computed) == (6, 0)
    assert not store._HELD  # released at the end of the run


KILLED_RUN = """\
import sys
from jaccli.blocks.job import FunctionSource
from jaccli.blocks.run import make_job, run_job
from jaccli.engine import prepare

source = FunctionSource.of(sys.argv[1] + ":slow")
problem = prepare(source.resolve(), shape_options=[("x", (40,))], dtype="float64")
job = make_job(problem, source, sys.argv[2], budget=2**30, shape_options=[("x", (40,))],
               largest_block=4 * 8 * 40, kind=sys.argv[3])
run_job(job, problem, resume=True)
"""
SLOW_FILE = """\
import time
import torch

def slow(x):
    time.sleep(0.02)
    return torch.sin(x).cumsum(0) * x.square().sum()
"""


def test_a_run_killed_at_any_moment_resumes_to_the_same_j(tmp_path: Path) -> None:
    model = tmp_path / "slow.py"
    model.write_text(SLOW_FILE, encoding="utf-8")
    out = tmp_path / "j.zarr"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN, encoding="utf-8")
    running = subprocess.Popen(
        [sys.executable, str(script), str(model), str(out), "rows"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and running.poll() is None:
            if out.exists() and store.done_blocks(str(out)).sum() >= 3:
                break
            time.sleep(0.02)
        assert running.poll() is None, running.stderr.read().decode()  # type: ignore[union-attr]
        os.kill(running.pid, signal.SIGKILL)
    finally:
        running.kill()
        running.wait(timeout=30)
    marked = store.done_blocks(str(out))
    chunks = {p.name for p in (out / "J" / "c").iterdir()}
    in_flight = {name for name in chunks if not marked[int(name)]}
    assert len(in_flight) <= 1  # one block at a time: only it can be written but unmarked
    source = FunctionSource.of(f"{model}:slow")
    problem, outcome = _run(
        source, out, [("x", (40,))], largest_block=4 * 8 * 40, kind="rows", resume=True
    )
    assert outcome.kept == marked.sum() >= 3
    assert outcome.computed == outcome.plan.count - marked.sum()
    np.testing.assert_allclose(_stored(out), _in_memory(problem), rtol=1e-12)


def test_missing_zarr_names_the_pip_line(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["zarr"] = None  # as if it were not installed
        from jaccli.errors import MissingDependencyError
        from jaccli.loaders import load_array
        try:
            load_array(sys.argv[1], 1 << 20)
        except MissingDependencyError as error:
            print(error.exit_code, error.message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == (
        f"2 --value @{tmp_path / 'x.zarr'} needs zarr, which is not installed: "
        "pip install 'jaccli[zarr]'"
    )
    assert issubclass(MissingDependencyError, UsageError)


def test_a_plain_run_imports_neither_zarr_nor_dask() -> None:
    code = (
        "import sys\n"
        "from jaccli.cli import app\n"
        "try:\n"
        "    app(args=['jacobian', '--fn', 'expsum', '--shape', '2x3', '--json'],"
        " prog_name='jaccli')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    modules = set(done.stderr.split())
    assert "jaccli.engine" in modules  # it really computed
    assert not modules & {"zarr", "dask", "distributed"}


OUT_OF_CORE = """\
import sys
from jaccli import memory
from jaccli.blocks.job import FunctionSource
from jaccli.blocks.run import make_job, run_job
from jaccli.engine import prepare

budget = int(sys.argv[2])
peaks = []
reset_peak = memory.reset_peak

def kept_reset_peak():  # the engine restarts the kernel's count for each block: keep each
    peaks.append(memory.peak_resident_bytes())
    return reset_peak()

memory.reset_peak = kept_reset_peak

def run(n, out):
    source = FunctionSource.of(None, "softmax(x, dim=0)")
    problem = prepare(source.resolve(), shape_options=[("x", (n,))], dtype="float32")
    job = make_job(problem, source, out, budget=budget, shape_options=[("x", (n,))])
    return run_job(job, problem)

run(64, sys.argv[1] + "/warm.zarr")  # a plain run's baseline: everything loaded, a tiny J
baseline = memory.peak_resident_bytes()
memory.trim()
memory.reset_peak()
peaks.clear()
outcome = run(6000, sys.argv[1] + "/j.zarr")
print(baseline, max([memory.peak_resident_bytes(), *peaks]), outcome.plan.count)
"""


def test_an_out_of_core_j_peaks_within_the_budget(tmp_path: Path) -> None:
    budget = 32 * 1024**2  # J is 6000² float32 numbers: 137 MiB
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_CORE, str(tmp_path), str(budget)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    baseline, peak, blocks = (int(word) for word in done.stdout.split())
    assert blocks > 4
    assert peak - baseline <= budget  # the kernel's VmHWM, above the resident baseline
    stored = zarr.open_group(str(tmp_path / "j.zarr"), mode="r")
    x = stored["inputs/x"][...].astype(np.float64)
    y = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    for row in (0, 2999, 5999):  # rows of different blocks against J = diag(y) − y yᵀ
        expected = -y[row] * y
        expected[row] += y[row]
        np.testing.assert_allclose(stored["J"][row], expected, rtol=1e-4, atol=1e-9)


def test_resume_refuses_a_store_jaccli_did_not_write(tmp_path: Path) -> None:
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["jaccli"] = {"blocks": 0}
    with pytest.raises(UsageError, match="is not a store jaccli wrote; use --force"):
        _run(
            FunctionSource.of("softmax"),
            tmp_path / "other.zarr",
            [("x", (4,))],
            largest_block=1 << 20,
            resume=True,
        )


WRONG_BACKWARD = """\
import torch

class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * g  # should be 2 x g

def f(x):
    return Square.apply(x).cumsum(0)
"""


def test_a_block_that_disagrees_with_the_function_is_never_stored(tmp_path: Path) -> None:
    model = tmp_path / "wrong.py"
    model.write_text(WRONG_BACKWARD, encoding="utf-8")
    with pytest.raises(ComputationError, match="disagrees with the function's own central"):
        _run(
            FunctionSource.of(f"{model}:f"),
            tmp_path / "j.zarr",
            [("x", (12,))],
            largest_block=4 * 8 * 12,
        )
    assert not store.done_blocks(str(tmp_path / "j.zarr")).any()
    assert np.isnan(_stored(tmp_path / "j.zarr")).all()
