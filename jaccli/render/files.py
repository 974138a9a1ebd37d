"""The main result written to a file for the next program: .npy, .pt, .safetensors or .csv,
or its picture for a person: .png, .svg or .pdf (render/image.py).

A file is written under a temporary name beside the target and renamed into place, so a failure
never leaves a half-written file, and an existing file is replaced only with --force.
"""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaccli.errors import ComputationError, UsageError
from jaccli.messages import first_line
from jaccli.render.labels import index_label, visible
from jaccli.render.numbers import json_values
from jaccli.result import HessianResult, HvpResult, JacobianResult, JvpResult, Result, VjpResult

SUFFIXES = (".npy", ".pt", ".safetensors", ".csv")
IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
SINGLE_ARRAY_SUFFIXES = (".npy", ".csv")


@dataclass(frozen=True)
class OutArray:
    """One array of a result, with what names its rows and columns in a flattened view."""

    key: str
    array: np.ndarray
    row_ndim: int
    """Leading axes that index rows (the output's, for J); the rest index columns."""
    row_name: str
    column_name: str


def _exists(path: Path) -> bool:
    """Whether anything, a dangling symbolic link included, has this name."""
    return os.path.lexists(path)


def checked_out_path(
    path_text: str, force: bool, *, pictures: bool = False, more: tuple[str, ...] = ()
) -> Path:
    """The `--out` path, refused before any work when it cannot or should not be written
    (checked again when the file is published: see `publish`). `pictures`: whether the command
    draws J, so .png, .svg and .pdf are welcome. The path is made absolute at once: the
    user's function may change the working directory before the file is written; `more`: other
    suffixes welcome (a sparse result's)."""
    path = Path(os.path.abspath(path_text))
    suffixes = SUFFIXES + more + (IMAGE_SUFFIXES if pictures else ())
    if path.suffix in IMAGE_SUFFIXES and not pictures:
        raise UsageError(
            f"--out {path_text!r}: pictures are drawn of J and H (jacobian, det, hessian); "
            f"use {', '.join(SUFFIXES)}",
            code="bad_out",
        )
    if path.suffix not in suffixes:
        raise UsageError(
            f"--out {path_text!r}: unknown kind of file (use {', '.join(suffixes)})",
            code="bad_out",
        )
    if path.suffix in IMAGE_SUFFIXES:
        from jaccli.render.image import require_matplotlib

        require_matplotlib(path_text)
    try:
        if path.is_dir():
            raise UsageError(f"--out {path_text!r} is a directory", code="bad_out")
        if not path.parent.is_dir():
            raise UsageError(
                f"--out {path_text!r}: no directory {str(path.parent)!r}", code="bad_out"
            )
        if _exists(path) and not force:
            raise UsageError(
                f"--out {path_text!r} exists; add --force to replace it", code="bad_out"
            )
    except OSError as error:  # a name too long, a loop of links
        raise UsageError(f"--out {path_text!r}: {error.strerror}", code="bad_out") from None
    return path


def check_array_count(path: Path, keys: list[str]) -> None:
    """A .npy or .csv file holds one array: refuse before computing when there are more."""
    if path.suffix in SINGLE_ARRAY_SUFFIXES and len(keys) > 1:
        raise UsageError(
            f"--out {str(path)!r}: the result has {len(keys)} arrays ({', '.join(keys)}) and a "
            f"{path.suffix} file holds one; use .safetensors or .pt, or one --wrt",
            code="bad_out",
        )


def jacobian_keys(outputs: list[str], wrt: list[str]) -> list[str]:
    """Names of J's blocks in a file: the input's name, or `output/input` for several outputs."""
    return [w if len(outputs) == 1 else f"{o}/{w}" for o in outputs for w in wrt]


def hessian_keys(outputs: list[str], wrt: list[str]) -> list[str]:
    """Names of H's blocks in a file: `a/b`, or `y/a/b` for several outputs."""
    pairs = [f"{a}/{b}" for a in wrt for b in wrt]
    return [p if len(outputs) == 1 else f"{o}/{p}" for o in outputs for p in pairs]


def result_arrays(result: Result) -> list[OutArray]:
    """The main result's arrays: J of each output for each input, vᵀ·J or H·v for each
    input, J·v for each output, or H for each output and pair of inputs."""
    if isinstance(result, HessianResult):
        outputs = list(result.hessians)
        keys = iter(hessian_keys(outputs, list(result.hessians[outputs[0]])))
        return [
            OutArray(next(keys), h, h.ndim - result_input_ndim(result, b), f"{y}/{a}", b)
            for y, by_a in result.hessians.items()
            for a, by_b in by_a.items()
            for b, h in by_b.items()
        ]
    if isinstance(result, HvpResult):
        return [
            OutArray(wrt, hvp, max(hvp.ndim - 1, 0), f"(H·v)_{wrt}", "")
            for wrt, hvp in result.hvps.items()
        ]
    if isinstance(result, JvpResult):
        return [
            OutArray(output, jvp, max(jvp.ndim - 1, 0), output, "")
            for output, jvp in result.jvps.items()
        ]
    if isinstance(result, VjpResult):
        return [
            OutArray(wrt, vjp, max(vjp.ndim - 1, 0), f"{wrt}.grad", "")
            for wrt, vjp in result.vjps.items()
        ]
    outputs = list(result.jacobians)
    keys = iter(jacobian_keys(outputs, list(result.jacobians[outputs[0]])))
    arrays = [
        OutArray(next(keys), j, result.evaluation.outputs[output].ndim, output, wrt)
        for output, by_wrt in result.jacobians.items()
        for wrt, j in by_wrt.items()
    ]
    return arrays + determinant_arrays(result)


def result_input_ndim(result: HessianResult, name: str) -> int:
    (value,) = (v for v in result.evaluation.inputs if v.name == name)
    return value.values.ndim


DETERMINANT_KEYS = ("det.sign", "det.logabsdet", "det.det", "det.trace")


def determinant_arrays(result: JacobianResult) -> list[OutArray]:
    """det J's sign, log|det J|, det J and trace, when the result has them."""
    det = result.determinant
    if det is None:
        return []
    values = (det.sign, det.logabsdet, det.det, det.trace)
    return [
        OutArray(key, array, array.ndim, "sample", "")
        for key, array in zip(DETERMINANT_KEYS, values, strict=True)
    ]


def write_out(path: Path, arrays: list[OutArray], force: bool = False) -> None:
    """Write the arrays to `path` in the format its suffix names (see `publish`)."""
    publish(path, lambda temporary: _WRITERS[path.suffix](temporary, arrays), force)


def publish(path: Path, write: Callable[[Path], None], force: bool = False) -> None:
    """`write` a temporary file beside `path`, then publish it: without `force` by a hard
    link, which fails if anything has taken the name meanwhile (nothing is replaced); with
    `force` by a rename over the old file, keeping its permissions. The file gets the
    permissions the umask gives a new file; a failure leaves no partial file behind."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".jaccli-", suffix=path.suffix)
    except OSError as error:
        raise ComputationError(f"cannot write --out {str(path)!r}: {error.strerror}") from None
    os.close(handle)
    try:
        try:
            write(Path(temporary))
        except OSError:
            raise
        except Exception as error:  # torch.save, safetensors and matplotlib wrap a full disk
            raise OSError(first_line(error)[:200]) from error
        os.chmod(temporary, _mode_for(path, force))
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except FileExistsError:
        raise ComputationError(
            f"--out {str(path)!r} appeared while computing; nothing was replaced (add --force "
            "to replace it)",
            code="bad_out",
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ComputationError(f"cannot write --out {str(path)!r}: {reason}") from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _mode_for(path: Path, force: bool) -> int:
    """The replaced file's permissions with --force, else a new file's under the umask."""
    if force:
        try:
            return stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_npy(path: Path, arrays: list[OutArray]) -> None:
    with open(path, "wb") as file:
        np.save(file, arrays[0].array, allow_pickle=False)


def _write_pt(path: Path, arrays: list[OutArray]) -> None:
    import torch

    # np.ascontiguousarray would turn a 0-d array into shape (1,); asarray copies only if needed
    tensors = {a.key: torch.from_numpy(np.asarray(a.array, order="C")) for a in arrays}
    torch.save(tensors[arrays[0].key] if len(arrays) == 1 else tensors, path)


def _write_safetensors(path: Path, arrays: list[OutArray]) -> None:
    from safetensors.numpy import save_file

    save_file({a.key: np.asarray(a.array, order="C") for a in arrays}, str(path))


def _write_csv(path: Path, arrays: list[OutArray]) -> None:
    """Rows over the leading `row_ndim` axes, columns over the rest, both labelled by index."""
    (out,) = arrays
    row_shape = out.array.shape[: out.row_ndim]
    column_shape = out.array.shape[out.row_ndim :]
    matrix = out.array.reshape(int(np.prod(row_shape, dtype=np.int64)), -1)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        columns = (index_label(out.column_name, column_shape, j) for j in range(matrix.shape[1]))
        writer.writerow(["", *map(_csv_label, columns)])
        for i, row in enumerate(matrix):  # a row at a time: the text of J is never held whole
            label = _csv_label(index_label(out.row_name, row_shape, i))
            writer.writerow([label, *json_values(row)])  # type: ignore[misc]


CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell starting with one of these as a formula (OWASP: CSV injection)."""


def _csv_label(label: str) -> str:
    """A label a spreadsheet shows as text: a leading formula character gets a `'` before it
    (OWASP's advice), control and invisible characters are spelt out."""
    label = visible(label)
    return f"'{label}" if label.startswith(CSV_FORMULA_STARTS) else label


_WRITERS = {
    ".npy": _write_npy,
    ".pt": _write_pt,
    ".safetensors": _write_safetensors,
    ".csv": _write_csv,
}
