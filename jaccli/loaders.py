"""Arrays from files for `--value NAME=@file`: .npy, .pt, .safetensors, .json, and `-` (stdin).

Nothing here runs code from a file: .npy loads without pickle and its header is checked against
the file's size before anything is allocated; .pt loads with `weights_only=True` and never falls
back; .safetensors holds no code by design.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaccli.arrays import MAX_NDIM, ArrayData, parse_json_array
from jaccli.errors import UsageError
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line, format_bytes

SUFFIXES = (".npy", ".pt", ".safetensors", ".json")
READ_CHUNK = 1024**2


def _error(where: str, text: str, option: str = "--value @") -> UsageError:
    return UsageError(f"{option}{where}: {text}", code="bad_value_file")


def load_array(reference: str, size_limit: int) -> ArrayData:
    """The array that `path`, `path#key` (safetensors) or `-` (JSON on stdin) holds.

    Only a regular file is read (a FIFO or a device would block or never end), and no more than
    `size_limit` bytes of it; the numbers it claims to hold are counted against the same limit
    before any of them is made.
    """
    if reference == "-":
        return parse_json_array(_read_stdin(size_limit), what="--value @-", size_limit=size_limit)
    path_text, _, key = reference.partition("#")
    path = Path(path_text)
    if not path_text:
        raise _error(reference, "no file named after @")
    if path.suffix == ".zarr":  # a directory of chunks, read by zarr (jaccli[zarr])
        return _load_zarr(path_text, key, size_limit)
    if path.suffix not in SUFFIXES:
        if _is_dir(path):
            raise _error(path_text, "is a directory, not a file")
        raise _error(path_text, f"unknown kind of file (use {', '.join(SUFFIXES)})")
    if key and path.suffix != ".safetensors":
        raise _error(
            reference, "#key selects a tensor in a .safetensors file or a .zarr group only"
        )
    data = _read_regular_file(path, path_text, size_limit)
    if path.suffix == ".json":
        text = data.decode("utf-8", errors="replace")
        return parse_json_array(text, what=f"--value @{path_text}", size_limit=size_limit)
    if path.suffix == ".npy":
        array = _load_npy(data, path_text, size_limit)
    elif path.suffix == ".pt":
        array = _load_pt(data, path_text, size_limit)
    else:
        array = _load_safetensors(data, path_text, key, size_limit)
    return as_array_data(array, path_text)


def _read_stdin(size_limit: int) -> str:
    """Standard input as text, read a chunk at a time and at most `size_limit` + 1 characters
    of it (one more tells the parser it is over the limit)."""
    if sys.stdin is None:
        raise _error("-", "standard input is closed (<&-); give the JSON on stdin or in a file")
    chunks = []
    total = 0
    while total <= size_limit and (
        chunk := sys.stdin.read(min(READ_CHUNK, size_limit + 1 - total))
    ):
        chunks.append(chunk)
        total += len(chunk)
    return "".join(chunks)


def read_regular_file(path_text: str, size_limit: int, option: str = "--value @") -> bytes:
    """The bytes of a regular file, no more than `size_limit` of them (as for --value); errors
    name the file after `option` (`--fn ` for a user's source file)."""
    return _read_regular_file(Path(path_text), path_text, size_limit, option)


def read_json_text(reference: str, size_limit: int) -> str:
    """The text of a .json file, or of stdin for `-`, read as `--value @…` reads them."""
    if reference == "-":
        return _read_stdin(size_limit)
    return read_regular_file(reference, size_limit).decode("utf-8", errors="replace")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _read_regular_file(path: Path, where: str, size_limit: int, option: str = "--value @") -> bytes:
    """The bytes of a regular file, at most `size_limit` of them, read while checking: a
    directory, a FIFO (which would block) or a device (/dev/zero never ends) is refused
    before a byte is read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise _error(where, _os_reason(error), option) from None
    status = os.fstat(descriptor)
    refusal = None
    if stat.S_ISDIR(status.st_mode):
        refusal = "is a directory, not a file"
    elif not stat.S_ISREG(status.st_mode):
        refusal = "is not a regular file (a pipe, socket or device); refused"
    elif status.st_size > size_limit:
        refusal = _too_large_text(f"{format_bytes(status.st_size)}", size_limit)
    if refusal is not None:
        os.close(descriptor)
        raise _error(where, refusal, option)
    with os.fdopen(descriptor, "rb") as file:
        chunks = []
        total = 0
        try:
            while chunk := file.read(READ_CHUNK):
                total += len(chunk)
                if total > size_limit:  # it grew while being read
                    text = _too_large_text(f"more than {format_bytes(size_limit)}", size_limit)
                    raise _error(where, text, option)
                chunks.append(chunk)
        except OSError as error:
            raise _error(where, _os_reason(error), option) from None
    return b"".join(chunks)


def _os_reason(error: OSError) -> str:
    reasons = {
        errno.ENOENT: "no such file",
        errno.EACCES: "cannot be read (permission denied)",
        errno.ELOOP: "is a loop of symbolic links",
        errno.ENAMETOOLONG: "the file name is too long",
        errno.ENOTDIR: "a part of the path is not a directory",
    }
    return reasons.get(error.errno or 0, f"cannot be read ({error.strerror})")


def _too_large_text(size: str, size_limit: int) -> str:
    return f"{size} is over the limit of {format_bytes(size_limit)}; raise it with --max-value-size"


def check_count(where: str, shape: tuple[int, ...], itemsize: int, size_limit: int) -> None:
    """Refuse a shape with too many dimensions, or more numbers than the limit allows, before
    any of them is made (a 1.5 KB .pt can hold a view of 10¹² numbers)."""
    if len(shape) > MAX_NDIM:
        raise _error(where, f"has {len(shape)} dimensions (at most {MAX_NDIM})")
    if any(d < 0 for d in shape):
        raise _error(where, f"claims a negative dimension in shape {tuple(shape)}")
    count = math.prod(shape)
    if count * max(itemsize, 4) > size_limit:
        raise _error(
            where,
            f"holds {count} numbers ({format_bytes(count * max(itemsize, 4))}), over the limit "
            f"of {format_bytes(size_limit)}; raise it with --max-value-size",
        )


def _load_npy(data: bytes, where: str, size_limit: int) -> np.ndarray:
    """A .npy array, after its header's shape and dtype are checked against the file size."""
    file = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(file)
        else:
            raise _error(where, f".npy format version {version} is not supported")
    except Exception as error:  # numpy's header parser raises many kinds on a hostile header
        raise_if_out_of_memory(error)
        raise _error(where, f"not a valid .npy file ({first_line(error)[:120]})") from None
    if not all(type(d) is int for d in shape):  # numpy takes (True,) for (1,)
        raise _error(where, f"header's shape {shape!r} is not a tuple of sizes; refused")
    if dtype.hasobject:
        raise _error(where, "holds Python objects, which would need pickle; refused")
    _check_dtype_kind(dtype.kind, where)
    check_count(where, tuple(shape), dtype.itemsize, size_limit)
    claimed = math.prod(shape) * dtype.itemsize
    present = len(data) - file.tell()
    if claimed != present:
        raise _error(
            where,
            f"header claims shape {tuple(shape)} of {dtype} ({format_bytes(claimed)}) but "
            f"the file holds {format_bytes(present)}; refused",
        )
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise _error(where, f"not a valid .npy file ({first_line(error)[:120]})") from None


def _weights_only_reason(error: Exception) -> str:
    """Why weights-only loading refused a file: torch's own reason, not its advice to turn the
    protection off."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:160]


def _load_pt(data: bytes, where: str, size_limit: int) -> Any:
    """A tensor saved with torch.save, loaded with weights_only=True and nothing else."""
    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for users
            warnings.simplefilter("ignore")
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or hostile archive: any failure is the file's
        raise_if_out_of_memory(error)
        reason = _weights_only_reason(error)
        raise _error(
            where,
            f"refused by weights-only loading, which runs no code from the file: {reason}",
        ) from None
    if isinstance(loaded, dict) and len(loaded) == 1:
        (loaded,) = loaded.values()
    if not isinstance(loaded, torch.Tensor):
        raise _error(where, f"holds a {type(loaded).__name__}, not a single tensor")
    if loaded.layout != torch.strided:
        raise _error(where, f"holds a {loaded.layout} tensor; save a dense one (.to_dense())")
    if loaded.is_quantized:
        raise _error(where, "holds a quantized tensor; save a dense one (.dequantize())")
    if loaded.device.type != "cpu":
        raise _error(where, f"holds a tensor on the {loaded.device.type} device, with no values")
    if loaded.is_complex():
        raise _error(where, "holds complex numbers; jaccli works with real tensors")
    if loaded.dtype == torch.bool:
        raise _error(where, "holds booleans, not numbers")
    check_count(where, tuple(loaded.shape), loaded.element_size(), size_limit)
    if loaded.is_floating_point() and loaded.dtype not in (torch.float32, torch.float64):
        loaded = loaded.to(torch.float64)  # float16, bfloat16: numpy has no bfloat16
    return loaded.detach().numpy()


def _load_safetensors(data: bytes, where: str, key: str, size_limit: int) -> np.ndarray:
    """One tensor of a .safetensors file (which holds no code by design)."""
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as error:  # a corrupt header, or a dtype numpy lacks (bfloat16, F8, F4)
        raise_if_out_of_memory(error)
        raise _error(
            where, f"not a readable .safetensors file ({first_line(error)[:160]})"
        ) from None
    keys = sorted(tensors)
    if key:
        if key not in tensors:
            raise _error(f"{where}#{key}", f"no tensor {key!r} (tensors: {', '.join(keys)})")
        array = tensors[key]
    elif len(keys) != 1:
        raise _error(
            where, f"holds {len(keys)} tensors ({', '.join(keys)}); pick one with @file#key"
        )
    else:
        array = tensors[keys[0]]
    check_count(where, tuple(array.shape), array.dtype.itemsize, size_limit)
    return array


def _check_dtype_kind(kind: str, where: str) -> None:
    if kind == "c":
        raise _error(where, "holds complex numbers; jaccli works with real tensors")
    if kind == "b":
        raise _error(where, "holds booleans, not numbers")
    if kind not in "iuf":
        raise _error(where, f"holds data of kind {kind!r}, not numbers")


def as_array_data(array: Any, where: str) -> ArrayData:
    """The file's numbers as float32 or float64 (kept), other floats as float64, and integers
    as int64; the count was checked before."""
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


def _load_zarr(path_text: str, key: str, size_limit: int) -> ArrayData:
    """`--value NAME=@x.zarr` (or `x.zarr#name` in a group): the whole array, refused before
    it is read when it holds more than `size_limit` bytes."""
    from jaccli.blocks.arrays import open_array

    array = open_array(path_text, key, "--value @")
    where = path_text + (f"#{key}" if key else "")
    check_count(where, tuple(array.shape), array.dtype.itemsize, size_limit)
    return as_array_data(array[...], where)
