"""Values from files (and stdin), and results to files, as a user hands data between programs."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from tests.conftest import values_of

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])


def _jacobian_with_value(jaccli, value: str, *extra: str, input: str | None = None):
    return jaccli(
        "jacobian",
        "--fn",
        "expsum",
        "--value",
        value,
        "--dtype",
        "float64",
        "--json",
        *extra,
        input=input,
    )


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors", ".json"])
def test_each_file_kind_gives_the_same_point(jaccli, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, X)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(X), path)
    elif suffix == ".safetensors":
        save_file({"x": X}, str(path))
    else:
        path.write_text(json.dumps(X.tolist()))
    run = _jacobian_with_value(jaccli, f"x=@{path}")
    assert run.exit_code == 0, run.stderr
    np.testing.assert_array_equal(values_of(run.json()["inputs"]["x"]), X)


def test_json_on_stdin(jaccli) -> None:
    run = _jacobian_with_value(jaccli, "x=@-", input=json.dumps(X.tolist()))
    assert run.exit_code == 0, run.stderr
    np.testing.assert_array_equal(values_of(run.json()["inputs"]["x"]), X)


def test_safetensors_key_picks_one_of_several(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "many.safetensors"
    save_file({"x": X, "other": X * 2}, str(path))
    several = _jacobian_with_value(jaccli, f"x=@{path}")
    assert several.exit_code == 2
    assert "holds 2 tensors (other, x); pick one with @file#key" in several.stderr
    picked = _jacobian_with_value(jaccli, f"x=@{path}#other")
    np.testing.assert_array_equal(values_of(picked.json()["inputs"]["x"]), X * 2)
    missing = _jacobian_with_value(jaccli, f"x=@{path}#nope")
    assert missing.exit_code == 2 and "no tensor 'nope' (tensors: other, x)" in missing.stderr


def test_integer_data_becomes_the_float_dtype(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "ints.npy"
    np.save(path, np.arange(6, dtype=np.int32).reshape(2, 3))
    run = jaccli("jacobian", "--fn", "expsum", "--value", f"x=@{path}", "--json")
    assert run.json()["dtype"] == "float32"
    assert run.json()["inputs"]["x"]["values"] == [[0, 1, 2], [3, 4, 5]]


def test_a_pickled_pt_payload_is_refused_and_runs_nothing(jaccli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as file:
        pickle.dump(Payload(), file)
    run = _jacobian_with_value(jaccli, f"x=@{path}")
    assert run.exit_code == 2
    line, document = run.stderr.splitlines()  # the line, and the JSON error object of --json
    assert "refused by weights-only loading, which runs no code from the file: Unsupported" in line
    assert json.loads(document)["error"]["code"] == "bad_value_file"
    assert not marker.exists()


def test_an_npy_object_array_is_refused(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    run = _jacobian_with_value(jaccli, f"x=@{path}")
    assert run.exit_code == 2
    assert "holds Python objects, which would need pickle; refused" in run.stderr


def test_an_npy_header_claiming_a_huge_shape_is_refused_before_allocation(
    jaccli, tmp_path: Path
) -> None:
    path = tmp_path / "huge.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)}
        )
        file.write(b"\0" * 48)
    run = _jacobian_with_value(jaccli, f"x=@{path}")
    assert run.exit_code == 2
    assert "holds 10000000000 numbers (74.5 GiB), over the limit of 256.0 MiB" in run.stderr
    raised = _jacobian_with_value(jaccli, f"x=@{path}", "--max-value-size", "1TiB")
    assert raised.exit_code == 2
    assert "header claims shape (100000, 100000) of float64 (74.5 GiB)" in raised.stderr


def test_complex_and_boolean_data_are_refused(jaccli, tmp_path: Path) -> None:
    complex_path, bool_path = tmp_path / "c.npy", tmp_path / "b.pt"
    np.save(complex_path, np.ones((2, 3), dtype=np.complex64))
    torch.save(torch.ones(2, 3, dtype=torch.bool), bool_path)
    assert "complex numbers" in _jacobian_with_value(jaccli, f"x=@{complex_path}").stderr
    assert "booleans, not numbers" in _jacobian_with_value(jaccli, f"x=@{bool_path}").stderr


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("missing.npy", "no such file"),
        (".", "is a directory, not a file"),
        ("x.bin", "unknown kind of file"),
        ("", "no file named after @"),
    ],
)
def test_missing_directory_and_unknown_files_are_usage_errors(
    jaccli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\0")
    run = jaccli("jacobian", "--fn", "expsum", "--value", f"x=@{reference}")
    assert run.exit_code == 2
    assert message in run.stderr and len(run.stderr.splitlines()) == 1


def test_an_unreadable_file_is_a_usage_error(
    jaccli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked.npy"
    np.save(path, X)
    real_open = os.open

    def deny(file, *args, **kwargs):  # root reads every file, so deny it here
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("os.open", deny)
    run = _jacobian_with_value(jaccli, f"x=@{path}")
    assert run.exit_code == 2
    assert "cannot be read (permission denied)" in run.stderr


def test_the_size_cap_can_be_raised(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, X)
    capped = _jacobian_with_value(jaccli, f"x=@{path}", "--max-value-size", "100B")
    assert capped.exit_code == 2 and "raise it with --max-value-size" in capped.stderr
    assert _jacobian_with_value(jaccli, f"x=@{path}", "--max-value-size", "1KiB").exit_code == 0
    text = jaccli(
        "jacobian",
        "--fn",
        "expsum",
        "--value",
        f"x={json.dumps(X.tolist())}",
        "--max-value-size",
        "10B",
    )
    assert text.exit_code == 2 and "over the limit" in text.stderr


# --- --out ---------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".pt":
        loaded = torch.load(path, weights_only=True)
        return (
            {k: v.numpy() for k, v in loaded.items()}
            if isinstance(loaded, dict)
            else loaded.numpy()
        )
    if path.suffix == ".safetensors":
        return load_file(str(path))
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    return rows  # type: ignore[return-value]


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors"])
def test_out_round_trips_the_json_numbers(jaccli, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"j{suffix}"
    run = jaccli("jacobian", "--fn", "expsum", "--json", "--out", str(path))
    assert run.exit_code == 0, run.stderr
    assert run.stderr == f"jacobian: wrote {path}\n"
    expected = values_of(run.json()["jacobian"]["y"]["x"])
    written = _read(path)
    array = written["x"] if isinstance(written, dict) else written
    assert array.dtype == np.float32
    # the JSON holds each float32 with its shortest digits: they read back to the same float32
    np.testing.assert_array_equal(array, expected.astype(np.float32))


def test_out_csv_flattens_a_jacobian_with_labelled_rows_and_columns(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "j.csv"
    run = jaccli("jacobian", "--fn", "expsum", "--dtype", "float64", "--json", "--out", str(path))
    j = values_of(run.json()["jacobian"]["y"]["x"])
    rows = _read(path)
    assert rows[0] == ["", "x[0,0]", "x[0,1]", "x[0,2]", "x[1,0]", "x[1,1]", "x[1,2]"]
    assert [row[0] for row in rows[1:]] == ["y[0]", "y[1]"]
    np.testing.assert_array_equal(
        np.array([[float(v) for v in row[1:]] for row in rows[1:]]), j.reshape(2, 6)
    )


def test_out_safetensors_keeps_every_block_by_name(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "vjp.safetensors"
    run = jaccli("vjp", "--fn", "matmul", "--json", "--out", str(path))
    document = run.json()
    written = _read(path)
    assert set(written) == {"a", "b"}
    for name in ("a", "b"):
        np.testing.assert_array_equal(
            written[name], values_of(document["vjp"][name]).astype(np.float32)
        )


def test_out_keeps_an_existing_file_unless_forced(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "j.npy"
    path.write_bytes(b"keep me")
    run = jaccli("jacobian", "--fn", "expsum", "--out", str(path))
    assert run.exit_code == 2
    assert "exists; add --force to replace it" in run.stderr
    assert run.stdout == "" and path.read_bytes() == b"keep me"
    forced = jaccli("jacobian", "--fn", "expsum", "--out", str(path), "--force")
    assert forced.exit_code == 0
    assert np.load(path).shape == (2, 2, 3)


def test_out_refuses_a_single_array_format_for_several_arrays_before_computing(
    jaccli, tmp_path: Path
) -> None:
    path = tmp_path / "j.npy"
    run = jaccli("jacobian", "--fn", "matmul", "--out", str(path))
    assert run.exit_code == 2
    assert "the result has 2 arrays (a, b) and a .npy file holds one" in run.stderr
    assert run.stdout == "" and not path.exists()


def test_a_failed_run_leaves_no_file_behind(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "j.npy"
    fixtures = Path(__file__).parent / "fixtures" / "userfns.py"
    run = jaccli("jacobian", "--fn", f"{fixtures}:raises", "--shape", "3", "--out", str(path))
    assert run.exit_code == 1
    assert list(tmp_path.iterdir()) == []
