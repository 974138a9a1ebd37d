"""Rules for ops that move elements: each output element is a copy of one operand element
(or a fill), found by applying the op itself to element ids; scatters, whose writes may be
summed; and the backward of moves, which gathers from everywhere the move copied to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree

from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.call import Call, Found, differentiable, dims_of
from jaccli.engine.sparse.dependencies import Dependencies

SCALAR_TYPES = ("number", "Optional[number]")


def move(call: Call) -> Found:
    """Ops that only move, select, repeat or fill elements: the same op applied to each
    operand's element ids (0 for a constant or a fill value) tells exactly where every
    output element comes from."""
    stacked: list[Dependencies] = [deps.no_dependencies(1, call.tracer.columns)]
    first_id = 1
    identities: dict[int, tuple[int, torch.Tensor]] = {}
    for tensor in call.floating_operands():
        if id(tensor) in identities:
            continue
        rows = call.read(tensor)
        if rows is None:
            identities[id(tensor)] = (0, tensor)
            continue
        stacked.append(rows)
        identities[id(tensor)] = (first_id, tensor)
        first_id += tensor.numel()
    call.depends_on_values(
        [t for t in call.operands if not differentiable(t)],
        "selects elements with indices or masks",
    )
    if len(stacked) == 1:
        return [None] * len(call.outputs)
    dtype = torch.int64
    try:
        moved = _apply_to_ids(call, identities, dtype)
    except (RuntimeError, NotImplementedError):  # an op for floating tensors only
        dtype = torch.float64  # exact for ids below 2⁵³
        moved = _apply_to_ids(call, identities, dtype)
    # Every id shifted by the count of ids must come out shifted by as much, fills staying 0:
    # an op that sums or scales elements (a rule listed wrongly) is caught here, not trusted.
    shifted = _apply_to_ids(call, identities, dtype, shift=first_id)
    for ids, moved_again in zip(moved, shifted, strict=True):
        if not torch.equal(moved_again, torch.where(ids != 0, ids + first_id, ids)):
            raise RuntimeError(f"{call.op_name} does not only move elements")
    every = deps.stack(stacked)
    found: Found = []
    for output, ids in zip(call.outputs, moved, strict=True):
        if not differentiable(output):
            found.append(None)
            continue
        positions = ids.detach().reshape(-1).cpu().to(torch.int64).numpy()
        rows = deps.take_rows(every, positions)
        found.append(rows if rows.nnz else None)
    return found


def _apply_to_ids(
    call: Call,
    identities: dict[int, tuple[int, torch.Tensor]],
    dtype: torch.dtype,
    shift: int = 0,
) -> list[torch.Tensor]:
    """The op's outputs when each floating operand is replaced by its element ids (its first
    id onwards, plus `shift`; or zeros for a constant) and each number argument by 0."""

    def ids_of(value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or not differentiable(value):
            return value
        first, tensor = identities.get(id(value), (0, value))
        if first == 0:
            return torch.zeros(tensor.shape, dtype=dtype, device=tensor.device)
        first += shift
        ids = torch.arange(first, first + tensor.numel(), dtype=dtype, device=tensor.device)
        return ids.reshape(tensor.shape)

    replaced_ids: dict[int, torch.Tensor] = {}

    def replace(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and id(value) in replaced_ids:
            return replaced_ids[id(value)]
        new = ids_of(value)
        if isinstance(value, torch.Tensor):
            replaced_ids[id(value)] = new
        return new

    schema = call.func._schema
    args = list(call.args)
    for position, argument in enumerate(schema.arguments[: len(args)]):
        args[position] = _zero_number(argument, pytree.tree_map(replace, args[position]))
    kwargs = {
        name: _zero_number(_schema_argument(schema, name), pytree.tree_map(replace, value))
        for name, value in call.kwargs.items()
    }
    result = call.func(*args, **kwargs)
    moved = [t for t in pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]
    if len(moved) != len(call.outputs):
        raise RuntimeError("the op returned other outputs on ids")
    return moved


def _zero_number(argument: Any, value: Any) -> Any:
    """0 for a number argument (a fill value, a pad value), which is no element of any
    operand; anything else as it is."""
    if argument is not None and str(argument.type) in SCALAR_TYPES and value is not None:
        return 0
    return value


def _schema_argument(schema: Any, name: str) -> Any:
    return next((a for a in schema.arguments if a.name == name), None)


def scattered(call: Call) -> Found:
    """index_put, index_add, index_copy, scatter, put (and their in-place forms): each
    destination element depends on the source elements written there, and on its own old
    value where they are summed into it (or where several land on it, since which one wins
    is not defined)."""
    target = call.arguments["self"]
    destination, source, source_positions, summed, selectors = _scatter_geometry(call, target)
    call.depends_on_values(selectors, "writes at indices")
    own = call.read(target)
    written = None
    if isinstance(source, torch.Tensor):
        rows = call.read(source)
        if rows is not None:
            written = deps.take_rows(rows, source_positions)
    repeated = len(np.unique(destination)) != len(destination)
    if summed or repeated:
        landed = None
        if written is not None:
            pairs = (destination, np.arange(len(destination), dtype=np.int64))
            landed = deps.combine(pairs, target.numel(), written)
        found = deps.union([own, landed])
    else:
        base = own if own is not None else deps.no_dependencies(target.numel(), call.tracer.columns)
        found = deps.replace_rows(base, destination, written)
        found = found if found.nnz else None
    return [found] + [None] * (len(call.outputs) - 1)


def _scatter_geometry(
    call: Call, target: torch.Tensor
) -> tuple[np.ndarray, Any, np.ndarray, bool, list[Any]]:
    """(destination positions in `target`, the source, the source element written at each,
    whether writes are summed, the index tensors)."""
    ids = torch.arange(target.numel()).reshape(target.shape)
    base = call.name.rstrip("_").lstrip("_").removeprefix("unsafe_").removesuffix("_impl")
    if base == "index_put":
        indices = [None if i is None else i.cpu() for i in call.arguments["indices"]]
        destination = torch.ops.aten.index.Tensor(ids, indices)
        source = call.arguments["values"]
        positions = _broadcast_ids(source, destination.shape)
        summed = bool(call.argument("accumulate", False))
        selectors = [i for i in call.arguments["indices"] if i is not None]
    elif base in ("index_add", "index_copy", "index_reduce"):
        dim = dims_of(call.arguments["dim"], target.dim())[0] if target.dim() else 0
        index = call.arguments["index"]
        destination = (
            ids.index_select(dim, index.cpu()) if target.dim() else ids.reshape(1)[index.cpu()]
        )
        source = call.arguments["source"]
        positions = np.arange(source.numel(), dtype=np.int64)
        summed = base != "index_copy"
        selectors = [index]
    elif base in ("scatter", "scatter_add", "scatter_reduce"):
        dim = dims_of(call.arguments["dim"], target.dim())[0] if target.dim() else 0
        index = call.arguments["index"]
        destination = ids.gather(dim, index.cpu()) if target.dim() else ids
        source = call.arguments.get("src", call.arguments.get("value"))
        if isinstance(source, torch.Tensor):
            source_ids = torch.arange(source.numel()).reshape(source.shape)
            if source.dim():
                source_ids = source_ids[tuple(slice(0, n) for n in index.shape)]
            positions = source_ids.reshape(-1).numpy()
        else:
            positions = np.zeros(0, dtype=np.int64)
        summed = base != "scatter" or call.arguments.get("reduce") is not None
        selectors = [index]
    elif base == "put":
        index = call.arguments["index"]
        destination = ids.reshape(-1)[index.reshape(-1).cpu() % max(target.numel(), 1)]
        source = call.arguments["source"]
        positions = np.arange(source.numel(), dtype=np.int64)
        summed = bool(call.argument("accumulate", False))
        selectors = [index]
    else:
        raise NotImplementedError(call.name)
    return destination.reshape(-1).numpy(), source, positions, summed, selectors


def _broadcast_ids(source: Any, shape: Sequence[int]) -> np.ndarray:
    if not isinstance(source, torch.Tensor):
        return np.zeros(0, dtype=np.int64)
    ids = torch.arange(source.numel()).reshape(source.shape).expand(tuple(shape))
    return ids.reshape(-1).numpy()


def _forward_of_move(call: Call) -> tuple[torch.Tensor, torch.Tensor]:
    """For the backward of a move, the ids its forward move puts where its gradient comes
    from (ids of the input the backward returns, from 1; 0 for a fill), and the gradient."""
    name = call.name.rstrip("_").removesuffix("_backward")
    aten = torch.ops.aten

    def ids(shape: Sequence[int]) -> torch.Tensor:
        return torch.arange(1, int(np.prod(shape)) + 1, dtype=torch.float64).reshape(tuple(shape))

    if name.startswith(("reflection_pad", "replication_pad")):
        source = call.arguments["self"]
        moved = getattr(aten, name)(ids(source.shape), call.arguments["padding"])
        return moved, call.arguments["grad_output"]
    if "upsample_nearest" in name:
        scales = [v for k, v in call.arguments.items() if k.startswith("scales")]
        forward = getattr(aten, name).default
        moved = forward(ids(call.arguments["input_size"]), call.arguments["output_size"], *scales)
        return moved, call.arguments["grad_output"]
    if name == "unfold":
        size, step = call.arguments["size"], call.arguments["step"]
        moved = ids(call.arguments["input_sizes"]).unfold(call.arguments["dim"], size, step)
        return moved, call.arguments["grad_in"]
    if name == "embedding_dense":
        grad = call.arguments["grad_output"]
        table = ids((call.arguments["num_weights"], grad.shape[-1]))
        return aten.embedding(table, call.arguments["indices"].cpu()), grad
    if name == "col2im":
        columns = call.arguments["self"]
        kernel = call.arguments["kernel_size"]
        channels = columns.shape[-2] // int(np.prod(kernel))
        image = ids((*columns.shape[:-2], channels, *call.arguments["output_size"]))
        arguments = (call.arguments[n] for n in ("dilation", "padding", "stride"))
        return aten.im2col(image, kernel, *arguments), columns
    raise NotImplementedError(call.name)


def unmove(call: Call) -> Found:
    """The backward of a move (a pad's, an upsampling's, unfold's, embedding's; col2im, the
    adjoint of im2col): each element gathers the gradient from everywhere its forward move
    copied it to."""
    moved, grad = _forward_of_move(call)
    rows = call.read(grad)
    if rows is None:
        return [None]
    sources = moved.reshape(-1).to(torch.int64).numpy()
    kept = np.flatnonzero(sources)
    call.tracer.require_entries(deps.entries_bound(kept, rows), call.op_name)
    count = call.outputs[0].numel()
    return [deps.combine((sources[kept] - 1, kept), count, rows)]
