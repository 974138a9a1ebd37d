"""A sparse J or H written to a file without densifying it: .npz (what scipy.sparse.load_npz
reads), .mtx (Matrix Market), .pt (a torch sparse COO tensor) or .safetensors (its indices and
values, the shape in the metadata). The file holds the joint matrix: rows are the outputs
flattened in order (for H, the `wrt` inputs), columns the `wrt` inputs flattened and
concatenated in order. Written like every --out file (render/files.py `publish`): under a
temporary name, then published, never half-written, an existing file replaced only with --force.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaccli.errors import UsageError
from jaccli.render.files import IMAGE_SUFFIXES, publish
from jaccli.render.labels import visible
from jaccli.result import SparseHessianResult, SparseJacobianResult

if TYPE_CHECKING:
    from scipy.sparse import csr_array

SPARSE_SUFFIXES = (".npz", ".mtx", ".pt", ".safetensors")


def require_sparse_suffix(path: Path, *, pictures: bool = False) -> None:
    """Refuse, before any work, an --out file that cannot hold a sparse matrix (.npy, .csv)."""
    allowed = SPARSE_SUFFIXES + (IMAGE_SUFFIXES if pictures else ())
    if path.suffix not in allowed:
        raise UsageError(
            f"--out {str(path)!r}: a sparse J is written as {', '.join(allowed)}"
            + (" (or drop --sparse for a dense file)" if path.suffix in (".npy", ".csv") else ""),
            code="bad_out",
        )


def describe_axes(result: SparseJacobianResult | SparseHessianResult) -> tuple[str, str]:
    """What the rows and the columns of the joint matrix are, for the file's own notes."""
    evaluation = result.evaluation
    columns = ", ".join(evaluation.wrt)
    if isinstance(result, SparseHessianResult):
        return f"inputs {columns} flattened", f"inputs {columns} flattened"
    return f"outputs {', '.join(evaluation.outputs)} flattened", f"inputs {columns} flattened"


def write_sparse_out(
    path: Path, result: SparseJacobianResult | SparseHessianResult, force: bool = False
) -> None:
    """Write the result's sparse matrix to `path` in the format its suffix names."""
    require_sparse_suffix(path)
    rows, columns = describe_axes(result)
    what = "H" if isinstance(result, SparseHessianResult) else "J"
    note = visible(
        f"jaccli: {what} of {result.evaluation.function_name}; rows: {rows}; columns: {columns}"
    )
    writer = _WRITERS[path.suffix]
    publish(path, lambda temporary: writer(temporary, result.matrix, note), force)


def _write_npz(path: Path, matrix: csr_array, note: str) -> None:
    import scipy.sparse as sp

    with open(path, "wb") as file:  # a file object: save_npz adds no suffix of its own
        sp.save_npz(file, sp.csr_array(matrix), compressed=False)


def _write_mtx(path: Path, matrix: csr_array, note: str) -> None:
    import scipy.io

    with open(path, "wb") as file:
        scipy.io.mmwrite(file, matrix.tocoo(), comment=note, field="real")


def _coo_parts(matrix: csr_array) -> tuple[np.ndarray, np.ndarray]:
    """The (2, nnz) int64 indices, row by row, and the values."""
    coo = matrix.tocoo()
    return np.stack([coo.row, coo.col]).astype(np.int64), np.ascontiguousarray(coo.data)


def _write_pt(path: Path, matrix: csr_array, note: str) -> None:
    import torch

    indices, values = _coo_parts(matrix)
    tensor = torch.sparse_coo_tensor(
        torch.from_numpy(indices),
        torch.from_numpy(values),
        tuple(matrix.shape),
        check_invariants=True,
    ).coalesce()
    torch.save(tensor, path)


def _write_safetensors(path: Path, matrix: csr_array, note: str) -> None:
    from safetensors.numpy import save_file

    indices, values = _coo_parts(matrix)
    metadata = {"format": "coo", "shape": json.dumps(list(matrix.shape)), "note": note}
    save_file({"indices": indices, "values": values}, str(path), metadata=metadata)


_WRITERS = {
    ".npz": _write_npz,
    ".mtx": _write_mtx,
    ".pt": _write_pt,
    ".safetensors": _write_safetensors,
}
