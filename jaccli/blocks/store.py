"""The store: J (or J at many points) in a zarr group on disk, one chunk a block, with the
run described in its attributes and a marker for each block that is written.

# NOTE [the store's layout]
    result.zarr/              a zarr v3 group; attributes["jaccli"]: what the JSON document
                              says about the run (schema_version, command, function, dtype,
                              wrt, inputs' and outputs' shapes, points), where each output and
                              input lies in J's matrix, the blocks, and whether it is complete
      J                       rows × columns of J as a matrix (NOTE [J as a matrix]), or
                              points × rows × columns; one chunk a block; NaN where unwritten
      done                    one uint8 a block, one chunk each: 1 once the block is written
      guard                   one row a block: the guard's value, reference and tolerance
      digest                  one int64 a block: crc32 of its chunk's values, written before
                              its done marker (NOTE [a block changed since it was written])
      inputs/NAME, outputs/NAME   the point J was computed at, and f there (one point only)

# NOTE [a block is done only once it is written]
Each writer writes its block's chunk of J, then its guard row, then its `done` chunk. zarr's
local store writes a chunk to a temporary file and renames it into place, so a chunk is never
half there; a process killed at any moment leaves every marked block complete and at worst an
unmarked block whose chunk is already there, which a resume computes again. Blocks are chunks of
their own, so writers in several processes never touch the same file. The store itself is
built in a temporary folder beside it and renamed into place, so it exists whole or not at all.

# NOTE [a block changed since it was written]
A done block whose values were edited afterwards (set to NaN through zarr, a chunk file
damaged or swapped for another's) would be kept by a resume and reported complete. So each
block's values have a digest, crc32 of their bytes (19 ms a 64 MiB block on this machine,
sha256 43 ms; written on the writer thread, beside the next block's computation), written
after the chunk and before the done marker. `--resume` reads every block it would keep and
computes again the ones whose digest differs or whose chunk cannot be read, with a warning
naming how many; that costs reading the store once (0.12 s of CPU a 64 MiB block from the
page cache, about an eighth of computing it; from disk, the disk's pace). A store of an
earlier version has no `digest` array: its blocks are kept as before.

# NOTE [a description changed since it was written]
The attribute and the `inputs/` and `outputs/` arrays say what J is: where each output and
input lies in its rows and columns, the blocks, the point and f there. A resume checks that
they belong to the same run (NOTE [what a store belongs to]) but kept the rest as found, so an
edited `matrix`, block count or `inputs/x` was reported complete. So a resume compares them
with what this run would write, writes again those that differ, and names them in a warning;
the point and f there cost one call of f, made anyway for the header.

# NOTE [J's chunks are not compressed]
A dense J's values are as good as random floats to a compressor: Blosc-lz4 with byte shuffle
(the codec of earlier versions) took a 64 MiB block of softmax's J to 57 MiB, 1.13 times
smaller, for about 0.1 s of CPU a block, and zarr's check that a chunk is not all fill value
(NaN) before writing it scanned each block again with three temporary arrays of its size. So
J's chunks are written raw and unchecked (`write_empty_chunks`): 3 times less CPU a block for
13 % more disk. A J with many zeros is a sparse J: --sparse stores only its non-zeros. Stores
of earlier versions name their codec in their metadata: zarr reads them, and a --resume
writes their remaining blocks with it.

# NOTE [one run writes a store at a time]
The process that runs a store's job holds an exclusive lock (flock) on the store's folder from
`start` to the end of the run; `--resume` or `--force` of a store another live run holds is
refused. Without it, a store replaced with --force under a running job received that job's
remaining blocks, marked done, under the new run's attributes: another function's numbers.
The workers of a cluster do not lock: they write the blocks of the job whose client holds it.

# NOTE [what a store belongs to]
`--resume` completes a store only for the same computation: the same command, function (its
formula and, for a user's file, sha256 of the file's bytes), dtype, wrt, output, the same
inputs (shapes, and sha256 of their values: given, or drawn from the seed) and points (sha256 of
every point). The first field that differs is named in a one-line refusal. The blocks are the
store's (its chunks): a resumed run keeps the kind and size of block it was started with, under
another --max-memory too, and says so; where one of them would not fit this run's budget it
refuses, naming the budget that fits (run.py _kept_layout), rather than mixing layouts. Its
arrays must be what that plan writes (shape, one chunk a block, dtype); a done marker is
believed only where the block's chunk of J and its guard row are on disk.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from jaccli.blocks import require
from jaccli.blocks.plan import KINDS, BlockPlan
from jaccli.errors import ComputationError, UsageError

if TYPE_CHECKING:
    import zarr

STORE_FORMAT = 1
"""The layout of NOTE [the store's layout]; bumped when it changes meaning."""
ATTRIBUTE = "jaccli"
COMPARED = ("command", "function", "dtype", "wrt", "output", "inputs", "outputs", "points")
"""The header's fields a resumed store must share with the run (NOTE [what a store belongs to])."""


def _zarr(path: str) -> Any:
    return require("zarr", f"--out {path}")


def _compressor() -> Any:
    """Blosc with lz4 and byte shuffle: the codec of J's chunks in stores of earlier versions
    (read and extended with it, as their metadata says); here it starts zarr's encoding
    threads (`start_threads`). J is now stored uncompressed: NOTE [J's chunks are not
    compressed]."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def start(
    path: str,
    plan: BlockPlan,
    header: dict[str, Any],
    *,
    resume: bool = False,
    force: bool = False,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> tuple[BlockPlan, list[int], int, tuple[str, ...]]:
    """The store at `path` ready for `plan`'s blocks, the blocks still to compute, how many
    of them were marked done but changed since (NOTE [a block changed since it was written]),
    and what of the store's description a resume found changed and wrote again: a new store
    (replacing one jaccli wrote with `force`), or with `resume` the existing store of the same
    run (NOTE [what a store belongs to]), whose plan is kept. `arrays`: `inputs/x`,
    `outputs/y` and such, written with a new store and checked by a resume. The store stays
    locked for this process until `release` (NOTE [one run writes a store at a time])."""
    try:
        return _start(path, plan, header, resume=resume, force=force, arrays=arrays)
    except BaseException:
        release(path)
        raise


def _start(
    path: str,
    plan: BlockPlan,
    header: dict[str, Any],
    *,
    resume: bool = False,
    force: bool = False,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> tuple[BlockPlan, list[int], int, tuple[str, ...]]:
    """The work of `start`."""
    if resume and force:
        raise UsageError(
            "give one of --resume and --force: resume keeps the store, force replaces it"
        )
    zarr = _zarr(path)
    exists = os.path.lexists(path)
    if exists and os.path.isdir(path):
        _hold(path)  # before reading or replacing it: another run may be writing it
    if exists and resume:
        _require_own_store_files(path)
        root = _open_jaccli_store(zarr, path)
        stored = root.attrs[ATTRIBUTE]
        _require_same_run(path, stored, header)
        plan = plan_of(path, stored, plan)
        _require_blocks_as_described(path, root, plan)
        done = np.asarray(root["done"][...], dtype=bool)
        kept = [i for i in map(int, np.flatnonzero(done)) if _written(path, root, plan, i)]
        changed = _changed_blocks(root, plan, kept)
        kept = [i for i in kept if i not in changed]
        missing = sorted(set(range(plan.count)) - set(kept))
        restored = _restore_description(path, root, plan, header, arrays or {}, bool(missing))
        return plan, missing, len(changed), restored
    if exists and not force:
        raise UsageError(
            f"--out {path} exists; add --resume to complete it, or --force to replace it",
            code="output_exists",
        )
    if exists:
        _require_replaceable(zarr, path)
    with _writing(path, created=False):
        _create(zarr, path, plan, header, arrays or {}, replace=exists)
    _hold(path)  # the new folder (the old one's lock, held through its removal, is let go)
    return plan, list(range(plan.count)), 0, ()


_HELD: dict[str, int] = {}
"""The stores this process is writing: an open descriptor of each, locked."""


def _hold(path: str) -> None:
    """Lock the store's folder for this run (NOTE [one run writes a store at a time]), or
    UsageError when another run holds it."""
    import fcntl

    key = os.path.abspath(path)
    release(key)
    descriptor = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise UsageError(
            f"--out {path} is being written by another jaccli run; let it finish (or stop it) "
            "first, then --resume",
            code="output_busy",
        ) from None
    _HELD[key] = descriptor


def release(path: str) -> None:
    """Unlock the store this process was writing (at the end of its run)."""
    descriptor = _HELD.pop(os.path.abspath(path), None)
    if descriptor is not None:
        os.close(descriptor)


def plan_of(path: str, stored: dict[str, Any], plan: BlockPlan) -> BlockPlan:
    """`plan` with the stored blocks' kind and size (UsageError where they make no sense)."""
    from dataclasses import replace

    blocks = stored.get("blocks")
    kind = blocks.get("kind") if isinstance(blocks, dict) else None
    size = blocks.get("size") if isinstance(blocks, dict) else None
    if kind not in KINDS or not isinstance(size, int) or size < 1:
        raise UsageError(
            f"--resume: {path} describes no blocks jaccli could have written; use --force to "
            "replace it",
            code="store_mismatch",
        )
    return replace(plan, kind=kind, size=size)


def _require_blocks_as_described(path: str, root: zarr.Group, plan: BlockPlan) -> None:
    """UsageError unless the store's arrays are the ones `plan` writes: J of its shape, dtype
    and one chunk a block, one done marker and one guard row a block. A resumed run writes
    into them as they are: a J edited to float16 would round every new block, and chunks that
    are not the blocks would make two workers rewrite the same chunk file, losing a block."""
    expected = {
        "J": (plan.shape, plan.chunks, np.dtype(np.float32 if plan.itemsize == 4 else np.float64)),
        "done": ((plan.count,), (1,), np.dtype(np.uint8)),
        "guard": ((plan.count, 3), (1, 3), np.dtype(np.float64)),
    }
    if "digest" in root:  # not in an earlier version's store
        expected["digest"] = ((plan.count,), (1,), np.dtype(np.int64))
    for name, (shape, chunks, dtype) in expected.items():
        try:
            array = root[name]
            found = (tuple(array.shape), tuple(array.chunks), np.dtype(array.dtype))
        except Exception:  # zarr's own errors: metadata it cannot read
            found = None
        if plan.count and found != (shape, chunks, dtype):
            raise UsageError(
                f"--resume: {path} does not hold the blocks its attributes describe (its "
                f"{name} array differs; damaged?); use --force to replace it",
                code="store_mismatch",
            )


def _written(path: str, root: zarr.Group, plan: BlockPlan, index: int) -> bool:
    """Whether block `index`'s chunk of J and its guard row are on disk. A done marker without
    them (a chunk deleted, copied in part) is not believed: the block is computed again, never
    left as the NaN that stands for unwritten (in stores of earlier versions, a block whose J
    was all NaN, a chunk equal to the fill value, was not written either)."""
    regions = zip(plan.region(index), plan.chunks, strict=True)
    chunk = tuple((region.start or 0) // size for region, size in regions)
    return all(
        os.path.isfile(os.path.join(path, name, root[name].metadata.encode_chunk_key(coords)))
        for name, coords in (("J", chunk), ("guard", (index, 0)))
    )


def digest(values: np.ndarray) -> int:
    """crc32 of a block's values as stored (NOTE [a block changed since it was written])."""
    import zlib

    return zlib.crc32(memoryview(np.ascontiguousarray(values)).cast("B"))


def _changed_blocks(root: zarr.Group, plan: BlockPlan, kept: list[int]) -> set[int]:
    """The blocks of `kept` whose values no longer have the digest written with them, or
    cannot be read; none in a store without digests (an earlier version's)."""
    if "digest" not in root:
        return set()
    digests = np.asarray(root["digest"][...])
    j = root["J"]
    changed = set()
    for index in kept:
        try:
            values = j[plan.region(index)]
        except Exception:  # zarr's own errors: a chunk it cannot decode
            changed.add(index)
            continue
        if digest(values) != int(digests[index]):
            changed.add(index)
        del values
    return changed


def _description(plan: BlockPlan, header: dict[str, Any], *, complete: bool) -> dict[str, Any]:
    """The store's attribute: the run's header, its blocks, whether every block is written."""
    blocks = {"kind": plan.kind, "size": plan.size, "count": plan.count, "shape": plan.shape}
    return _json({**header, "blocks": blocks, "complete": complete, "jaccli_store": STORE_FORMAT})


UPDATED_ON_RESUME = frozenset({"points_file", "complete"})
"""Fields of the description a resume may change without their having been damaged: the
points may be read from another path (their digest is the same), and the store is
incomplete again where blocks are missing."""


def _restore_description(
    path: str,
    root: zarr.Group,
    plan: BlockPlan,
    header: dict[str, Any],
    arrays: Mapping[str, np.ndarray],
    missing: bool,
) -> tuple[str, ...]:
    """The description of a resumed store (its attribute, and the point and f there in
    `arrays`) made this run's again, and the names of what had changed in it (NOTE [a
    description changed since it was written]); nothing is written where nothing changed."""
    stored = root.attrs[ATTRIBUTE]
    complete = bool(stored.get("complete")) and not missing
    expected = _description(plan, header, complete=complete)
    changed = [
        f"attribute {key}"
        for key in sorted(set(stored) | set(expected))
        if key not in UPDATED_ON_RESUME and stored.get(key) != expected.get(key)
    ]
    rewrite = [name for name, values in arrays.items() if not _holds(root, name, values)]
    changed += rewrite
    if stored == expected and not rewrite:
        return ()
    with _writing(path):
        writable = _zarr(path).open_group(store=path, mode="r+")
        for name in rewrite:
            values = arrays[name]
            array = writable.create_array(
                name, shape=values.shape, dtype=values.dtype, overwrite=True
            )
            array[...] = values
        writable.attrs[ATTRIBUTE] = expected
    return tuple(changed)


def _holds(root: zarr.Group, name: str, values: np.ndarray) -> bool:
    """Whether the store's array `name` holds `values` (NaN where they are NaN): the inputs
    exactly, f there within rounding (another thread count sums in another order)."""
    try:
        stored = np.asarray(root[name][...])
    except Exception:  # zarr's own errors: missing, or metadata or a chunk it cannot read
        return False
    if stored.shape != values.shape or stored.dtype != values.dtype:
        return False
    if values.dtype.kind != "f" or name.startswith("inputs/"):
        return bool(np.array_equal(stored, values, equal_nan=values.dtype.kind == "f"))
    finite = np.isfinite(values)
    if not np.array_equal(finite, np.isfinite(stored)) or not np.array_equal(
        values[~finite], stored[~finite], equal_nan=True
    ):
        return False
    rounding = 64 * np.finfo(values.dtype).eps
    scale = float(np.abs(values[finite]).max(initial=0.0))
    return bool(np.allclose(stored[finite], values[finite], rtol=rounding, atol=rounding * scale))


def _require_own_store_files(path: str) -> None:
    """UsageError unless every file of the store is a regular file of its own, before zarr
    reads any: a done marker or digest chunk that is a FIFO made --resume wait for ever, and
    a link would be read as another file's numbers (arrays.py require_own_files)."""
    from jaccli.blocks.arrays import require_own_files

    try:
        require_own_files(f"--resume: {path}", path)
    except UsageError as error:
        raise UsageError(
            f"{error.message}; use --force to replace the store", code="store_mismatch"
        ) from None


def _open_jaccli_store(zarr: Any, path: str) -> zarr.Group:
    """The group at `path` if jaccli wrote it, else UsageError saying what it is."""
    try:
        root = zarr.open_group(store=path, mode="r")
        header = root.attrs.get(ATTRIBUTE)
        has_arrays = all(name in root for name in ("J", "done", "guard"))
    except Exception as error:  # zarr's own errors: not a group, damaged metadata
        raise UsageError(
            f"--resume: {path} is not a store jaccli wrote ({type(error).__name__}); "
            "use --force to replace it",
            code="output_exists",
        ) from None
    if not isinstance(header, dict) or header.get("jaccli_store") != STORE_FORMAT or not has_arrays:
        raise UsageError(
            f"--resume: {path} is not a store jaccli wrote; use --force to replace it",
            code="output_exists",
        )
    return root


def _require_same_run(path: str, stored: dict[str, Any], header: dict[str, Any]) -> None:
    """UsageError naming the first field in which the stored run differs from this one."""
    for key in COMPARED:
        if stored.get(key) != _json(header.get(key)):
            raise UsageError(
                f"--resume: {path} {_difference(key, stored, header)}; use --force to replace it",
                code="store_mismatch",
            )


def _difference(key: str, stored: dict[str, Any], header: dict[str, Any]) -> str:
    """What differs, in words: `holds the Jacobian of y = x.exp(), not of y = sin(x)`."""
    was, now = stored.get(key), _json(header.get(key))
    if key == "function" and isinstance(was, dict) and isinstance(now, dict):
        if was.get("formula") != now.get("formula"):
            return f"holds the Jacobian of {was.get('formula')}, not of {now.get('formula')}"
        return f"was computed with other contents of {now.get('name')}'s file (it has changed)"
    if key == "command":
        return f"was written by {was}, not {now}"
    if key == "inputs" and isinstance(was, dict) and isinstance(now, dict):
        if set(was) != set(now):
            return f"has inputs {', '.join(was)}, not {', '.join(now)}"
        for name in was:
            shapes = was[name].get("shape"), now[name].get("shape")
            if shapes[0] != shapes[1]:
                return f"has input {name} of shape {shapes[0]}, not {shapes[1]}"
            if was[name] != now[name]:
                return f"was computed at other values of {name}"
    if key == "points" and isinstance(was, dict) and isinstance(now, dict):
        if was.get("count") != now.get("count"):
            return f"holds {was.get('count')} points, not {now.get('count')}"
        return "was computed at other points (their values differ)"
    return f"has {key} {was}, not {now}"


def _json(value: Any) -> Any:
    """`value` as it reads back from zarr's JSON attributes (tuples as lists)."""
    import json

    return json.loads(json.dumps(value))


def _require_replaceable(zarr: Any, path: str) -> None:
    """--force replaces only a store jaccli wrote (or an empty folder), never other files."""
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return
    from jaccli.blocks.arrays import METADATA_LIMIT

    metadata = os.path.join(path, "zarr.json")
    header = None
    own = os.path.isfile(metadata) and not os.path.islink(metadata)  # a FIFO would never end
    if own and os.path.getsize(metadata) <= METADATA_LIMIT:
        try:
            header = zarr.open_group(store=path, mode="r").attrs.get(ATTRIBUTE)
        except Exception:
            header = None
    if not isinstance(header, dict) or "jaccli_store" not in header:
        raise UsageError(
            f"--out {path} exists and is not a store jaccli wrote; --force replaces only those "
            "(remove it yourself, or choose another path)",
            code="output_exists",
        )
    others = sorted(
        name
        for name in os.listdir(path)
        if name not in STORE_ENTRIES and not name.startswith(PROBE_PREFIX)
    )
    if others:
        raise UsageError(
            f"--out {path} holds files jaccli did not write ({', '.join(others[:3])}"
            f"{', …' if len(others) > 3 else ''}); --force replaces only a store's own files "
            "(move them out, or choose another path)",
            code="output_exists",
        )


STORE_ENTRIES = frozenset({"zarr.json", "J", "done", "guard", "digest", "inputs", "outputs"})
"""What a store holds at its top (NOTE [the store's layout]): --force removes nothing else."""


def _create(
    zarr: Any,
    path: str,
    plan: BlockPlan,
    header: dict[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    replace: bool,
) -> None:
    """The empty store, built beside `path` and renamed into place (NOTE [a block is done only
    once it is written])."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        building = tempfile.mkdtemp(prefix=".jaccli-store-", dir=parent)
    except OSError as error:
        raise UsageError(f"--out {path}: cannot write in {parent} ({error.strerror})") from None
    try:
        root = zarr.open_group(store=building, mode="w")
        root.create_array(
            "J",
            shape=plan.shape,
            chunks=plan.chunks,
            dtype=np.float32 if plan.itemsize == 4 else np.float64,
            fill_value=np.nan,
            compressors=None,  # NOTE [J's chunks are not compressed]
        )
        root.create_array(
            "done", shape=(plan.count,), chunks=(1,), dtype=np.uint8, fill_value=0, compressors=None
        )
        root.create_array(
            "guard", shape=(plan.count, 3), chunks=(1, 3), dtype=np.float64, fill_value=np.nan
        )
        root.create_array(
            "digest", shape=(plan.count,), chunks=(1,), dtype=np.int64, fill_value=-1,
            compressors=None,
        )  # fmt: skip
        for name, values in arrays.items():
            stored = root.create_array(name, shape=values.shape, dtype=values.dtype)
            stored[...] = values
        root.attrs[ATTRIBUTE] = _description(plan, header, complete=False)
        if replace and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif replace:
            os.unlink(path)
        os.rename(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


ENCODING_THREADS = 2
"""zarr's threads that encode and decode chunks (one chunk a block: more would idle)."""


@functools.cache
def start_threads() -> None:
    """zarr's IO thread and its ENCODING_THREADS encoding threads, started now by writing a
    small compressed array in memory; once a process. Their stacks count as data: started
    before a block holds the budget (NOTE [the budget holds for real] in memory.py) they are
    part of a plain run's baseline, started under it they could fail a small budget ("can't
    start new thread"); zarr's default pool, a thread a core and four more, kept a heap each
    that grew the peak block by block."""
    zarr = _zarr("the store")
    from zarr.storage import MemoryStore

    zarr.config.set({"threading.max_workers": ENCODING_THREADS})
    chunks = 4 * ENCODING_THREADS
    array = zarr.create_array(
        MemoryStore(), shape=(chunks, 64), chunks=(1, 64), dtype=np.float32,
        compressors=_compressor(),
    )  # fmt: skip
    array[...] = np.ones((chunks, 64), dtype=np.float32)


@contextlib.contextmanager
def _writing(path: str, *, created: bool = True) -> Iterator[None]:
    """OSError (a full disk, a read-only folder, a lost mount) as the one line every --out
    format gives, exit 1 (it was an internal error); a created store stays resumable (NOTE [a
    block is done only once it is written])."""
    try:
        yield
    except OSError as error:
        after = (
            "the blocks written so far are kept (--resume once there is room)"
            if created
            else "nothing was written"
        )
        raise ComputationError(
            f"cannot write --out {path!r}: {error.strerror or error}; {after}",
            code="cannot_write",
        ) from None


def write_block(
    path: str, plan: BlockPlan, index: int, values: np.ndarray, guard: tuple[float, float, float]
) -> None:
    """Block `index`'s values into J, its guard row and digest, then its done marker, in that
    order (NOTE [a block is done only once it is written])."""
    zarr = _zarr(path)
    with _writing(path):
        root = zarr.open_group(store=path, mode="r+")
        j = root["J"].with_config({"write_empty_chunks": True})  # no scan for all-NaN
        j[plan.region(index)] = values
        root["guard"][index] = np.asarray(guard, dtype=np.float64)
        if "digest" in root:  # not in an earlier version's store
            root["digest"][index] = digest(values)
        root["done"][index] = 1


@functools.cache
def writer() -> Any:
    """The thread that writes one block while the next is computed (run.py NOTE [a block is
    written while the next is computed]), started now: its stack is the baseline's, as
    `start_threads` says of zarr's."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaccli-store-writer")
    pool.submit(lambda: None).result()
    return pool


def done_blocks(path: str) -> np.ndarray:
    """Which blocks are marked done (bool, one a block)."""
    root = _zarr(path).open_group(store=path, mode="r")
    return np.asarray(root["done"][...], dtype=bool)


def finish(path: str) -> None:
    """Mark the store complete: every block is written."""
    with _writing(path):
        root = _zarr(path).open_group(store=path, mode="r+")
        header = dict(root.attrs[ATTRIBUTE])
        header["complete"] = True
        root.attrs[ATTRIBUTE] = header


def read_header(path: str) -> dict[str, Any]:
    """The run the store describes (its attributes)."""
    return dict(_zarr(path).open_group(store=path, mode="r").attrs[ATTRIBUTE])


PROBE_PREFIX = ".jaccli-probe-"


def write_probe(path: str, token: str) -> str:
    """A probe file in the store holding `token`, for workers to read (cluster.py)."""
    probe = os.path.join(path, f"{PROBE_PREFIX}{token}")
    with open(probe, "w", encoding="ascii") as file:
        file.write(token)
    return probe


def remove_probes(path: str, token: str) -> None:
    """Every probe file of `token` in the store."""
    with contextlib.suppress(OSError):
        for name in os.listdir(path):
            if name.startswith(f"{PROBE_PREFIX}{token}"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(path, name))
