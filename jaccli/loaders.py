"""Arrays from files for `--value NAME=@file`: .npy, .pt, .safetensors, .json, and `-` (stdin).

Nothing here runs code from a file: .npy loads without pickle and its header is checked against
the file's size before anything is allocated; .pt loads with `weights_only=True` and never falls
back; .safetensors holds no code by design.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaccli.errors import UsageError
from jaccli.spec import ArrayData, format_bytes, parse_json_array

SUFFIXES = (".npy", ".pt", ".safetensors", ".json")


def _error(where: str, text: str) -> UsageError:
    return UsageError(f"--value @{where}: {text}", code="bad_value_file")


def load_array(reference: str, size_limit: int) -> ArrayData:
    """The array that `path`, `path#key` (safetensors) or `-` (JSON on stdin) holds."""
    if reference == "-":
        text = sys.stdin.read(size_limit + 1)
        return parse_json_array(text, what="--value @-", size_limit=size_limit)
    path_text, _, key = reference.partition("#")
    path = Path(path_text)
    if not path_text:
        raise _error(reference, "no file named after @")
    if not path.exists():
        raise _error(path_text, "no such file")
    if path.is_dir():
        raise _error(path_text, "is a directory, not a file")
    if path.suffix not in SUFFIXES:
        raise _error(path_text, f"unknown kind of file (use {', '.join(SUFFIXES)})")
    if key and path.suffix != ".safetensors":
        raise _error(reference, "#key selects a tensor in a .safetensors file only")
    try:
        size = path.stat().st_size
        if size > size_limit:
            raise _error(
                path_text,
                f"{format_bytes(size)} is over the limit of {format_bytes(size_limit)}; "
                "raise it with --max-value-size",
            )
        with open(path, "rb"):
            pass
    except PermissionError:
        raise _error(path_text, "cannot be read (permission denied)") from None
    except OSError as error:
        raise _error(path_text, f"cannot be read ({error.strerror})") from None
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8", errors="replace")
        return parse_json_array(text, what=f"--value @{path_text}", size_limit=size_limit)
    if path.suffix == ".npy":
        array = _load_npy(path, path_text)
    elif path.suffix == ".pt":
        array = _load_pt(path, path_text)
    else:
        array = _load_safetensors(path, path_text, key)
    return _as_array(array, path_text)


def _load_npy(path: Path, where: str) -> np.ndarray:
    """A .npy array, after its header's shape and dtype are checked against the file size."""
    with open(path, "rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise _error(where, f".npy format version {version} is not supported")
        except ValueError as error:
            raise _error(where, f"not a valid .npy file ({error})") from None
        if dtype.hasobject:
            raise _error(where, "holds Python objects, which would need pickle; refused")
        _check_dtype_kind(dtype.kind, where)
        claimed = math.prod(shape) * dtype.itemsize
        present = os.fstat(file.fileno()).st_size - file.tell()
        if claimed != present:
            raise _error(
                where,
                f"header claims shape {tuple(shape)} of {dtype} ({format_bytes(claimed)}) but "
                f"the file holds {format_bytes(present)}; refused",
            )
    del fortran_order
    return np.load(path, allow_pickle=False)


def _load_pt(path: Path, where: str) -> Any:
    """A tensor saved with torch.save, loaded with weights_only=True and nothing else."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for users
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _error(
            where, f"not a plain tensor file; loading it safely (weights_only) failed: {reason}"
        ) from None
    if isinstance(loaded, dict) and len(loaded) == 1:
        (loaded,) = loaded.values()
    if not isinstance(loaded, torch.Tensor):
        raise _error(where, f"holds a {type(loaded).__name__}, not a single tensor")
    if loaded.is_complex():
        raise _error(where, "holds complex numbers; jaccli works with real tensors")
    if loaded.dtype == torch.bool:
        raise _error(where, "holds booleans, not numbers")
    if loaded.is_floating_point() and loaded.dtype not in (torch.float32, torch.float64):
        loaded = loaded.to(torch.float64)  # float16, bfloat16: numpy has no bfloat16
    return loaded.detach().numpy()


def _load_safetensors(path: Path, where: str, key: str) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            keys = list(file.keys())
            if key:
                if key not in keys:
                    raise _error(
                        f"{where}#{key}", f"no tensor {key!r} (tensors: {', '.join(keys)})"
                    )
                return file.get_tensor(key)
            if len(keys) != 1:
                raise _error(
                    where, f"holds {len(keys)} tensors ({', '.join(keys)}); pick one with @file#key"
                )
            return file.get_tensor(keys[0])
    except SafetensorError as error:
        raise _error(where, f"not a valid .safetensors file ({error})") from None
    except TypeError as error:  # dtypes numpy lacks, such as bfloat16
        raise _error(where, f"cannot be read as numbers ({error})") from None


def _check_dtype_kind(kind: str, where: str) -> None:
    if kind == "c":
        raise _error(where, "holds complex numbers; jaccli works with real tensors")
    if kind == "b":
        raise _error(where, "holds booleans, not numbers")
    if kind not in "iuf":
        raise _error(where, f"holds data of kind {kind!r}, not numbers")


def _as_array(array: Any, where: str) -> ArrayData:
    """The file's numbers as float32 or float64 (kept), other floats as float64, and integers
    as int64."""
    array = np.asarray(array)
    _check_dtype_kind(array.dtype.kind, where)
    if 0 in array.shape:
        raise _error(where, f"shape {array.shape} is empty; every dimension must be at least 1")
    if array.dtype.kind in "iu":
        if array.dtype == np.uint64 and array.size and int(array.max()) >= 2**63:
            raise _error(where, "holds unsigned integers past the range of int64")
        array = array.astype(np.int64)
    elif array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return ArrayData(shape=tuple(int(d) for d in array.shape), values=array, from_file=True)
