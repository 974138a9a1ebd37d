"""The sparsity rules: for one call of an aten op, which input elements each element of its
outputs depends on, given what each element of its operands depends on (the tracer applies
them, NOTE [dependencies live with storages]).

| ops                                              | rule                                     |
|--------------------------------------------------|------------------------------------------|
| views (slice, select, view, expand, permute, …)  | none needed: they read their storage     |
| moves (cat, stack, roll, flip, pads, index,      | the op applied to element ids: exact     |
|   gather, index_select, tril, copy_, clone, …)   |                                          |
| index_put, index_add, scatter, put (and _ forms) | each written element from its source     |
|                                                  | elements (with the old one where summed) |
| pointwise (torch's pointwise tag)                | union over the broadcast operands        |
| mul by a constant                                | and none where the constant is exactly 0 |
| where, masked_fill                               | the chosen branch for a constant         |
|                                                  | condition, else both                     |
| floor, ceil, round, trunc, sign, x // y          | none: their derivative is 0              |
| reductions (sum, mean, prod, amax, norm, var, …) | union over what they reduce              |
| softmax, log_softmax, layer_norm (and backward)  | union along the dims they normalize      |
| cumsum, cumprod, logcumsumexp, cummax, cummin    | union over each prefix: a triangle       |
| sort, topk                                       | the element chosen: at this point only   |
| mm, bmm, mv, dot, addmm, baddbmm, addr, …        | structural product: a constant factor's  |
|                                                  | exact zeros are zeros                    |
| convolution (1-D to 3-D, strided, dilated,       | structural pattern, likewise             |
|   grouped, transposed)                           |                                          |
| factories and *_like (zeros_like, randn_like…)   | none                                     |
| anything else                                    | every output element depends on every    |
|                                                  | operand element: a superset, named in a  |
|                                                  | note                                     |

Integer and boolean outputs depend on nothing (they have no derivative); when an index,
mask or condition that a value of the inputs chose (argsort, x > 0, nonzero) selects
elements, the pattern holds at this point only, and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.utils._pytree as pytree

from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.dependencies import Dependencies

if TYPE_CHECKING:
    from jaccli.engine.sparse.tracer import Tracer

Found = list[Dependencies | None]
"""Each output's dependencies, in the order of Call.outputs."""
Rule = Callable[["Call"], Found]
SCALAR_TYPES = ("number", "Optional[number]")
METADATA_ONLY = {"set_", "resize_", "resize_as_", "record_stream", "_resize_output_"}


class Call:
    """One call of an aten op as a rule sees it: its arguments by name (defaults filled in),
    its operands' dependencies as they were before it ran, and its outputs."""

    def __init__(
        self,
        tracer: Tracer,
        func: torch._ops.OpOverload,
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> None:
        self.tracer = tracer
        self.func = func
        self.args = tuple(args)
        self.kwargs = kwargs
        schema = func._schema
        self.name = schema.name.split("::")[-1]
        self.op_name = f"aten.{self.name}"
        given = dict(zip((a.name for a in schema.arguments), args, strict=False)) | kwargs
        self.arguments: dict[str, Any] = {}
        self.written: list[torch.Tensor] = []
        """The tensors the op writes into (in place, or `out=`)."""
        self.operands: list[torch.Tensor] = []
        """The tensors whose values the op reads."""
        writes_only = torch.Tag.out in func.tags
        for argument in schema.arguments:
            if argument.name in given:
                value = given[argument.name]
            elif argument.has_default_value():
                value = argument.default_value
            else:
                continue
            self.arguments[argument.name] = value
            tensors = [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]
            is_write = argument.alias_info is not None and argument.alias_info.is_write
            if is_write:
                self.written.extend(tensors)
            if not (is_write and writes_only):
                self.operands.extend(tensors)
        self.only_metadata = torch.Tag.inplace_view in func.tags or self.name in METADATA_ONLY
        read = {id(t) for t in self.operands}
        self._before = {
            id(t): t.clone() for t in self.written if id(t) in read and not tracer.varies(t)
        }
        """The constants the op overwrites, as they were: a rule may read their zeros."""
        self.outputs: list[torch.Tensor] = []
        self.fresh: list[bool] = []
        """For each output, whether it is a new tensor rather than a view or an argument."""

    def finish(self, result: Any) -> None:
        """Take the op's result: its tensors are the outputs."""
        returns = self.func._schema.returns
        parts = [result] if len(returns) == 1 else list(result)
        for value, part in zip(returns, parts, strict=False):
            tensors = [t for t in pytree.tree_leaves(part) if isinstance(t, torch.Tensor)]
            self.outputs.extend(tensors)
            self.fresh.extend([value.alias_info is None] * len(tensors))

    # What rules read.

    def argument(self, name: str, default: Any = None) -> Any:
        value = self.arguments.get(name, default)
        return default if value is None else value

    def read(self, tensor: torch.Tensor, shape: Sequence[int] | None = None) -> Dependencies | None:
        """`tensor`'s dependencies, broadcast to `shape`; None where it depends on nothing."""
        return self.tracer.read(tensor, shape)

    def varies(self, value: Any) -> bool:
        """Whether a tensor's values depend on the inputs' (a number's never do)."""
        return isinstance(value, torch.Tensor) and self.tracer.varies(value)

    def values(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor`'s values before the op ran."""
        return self._before.get(id(tensor), tensor)

    def may_be_nonzero(self, value: Any, shape: Sequence[int] | None = None) -> np.ndarray | None:
        """For each element (broadcast to `shape`), whether it can be non-zero: False only at
        a constant's exact zeros; None when every element can."""
        if self.varies(value):
            return None
        if isinstance(value, torch.Tensor):
            mask = (self.values(value).detach() != 0).cpu()
            if shape is not None:
                mask = mask.expand(tuple(shape))
            return np.ascontiguousarray(mask.numpy()).reshape(-1)
        if isinstance(value, int | float | bool | complex):
            size = int(np.prod(shape)) if shape is not None else 1
            return np.full(size, value != 0)
        return None

    def floating_operands(self) -> list[torch.Tensor]:
        return [t for t in self.operands if t.is_floating_point() or t.is_complex()]

    def depends_on_values(self, tensors: Sequence[Any], how: str) -> None:
        """Note that the pattern holds at this point only when one of `tensors` (indices, a
        mask) was chosen by the inputs' values."""
        if any(self.varies(t) for t in tensors):
            self.tracer.note(
                f"{self.op_name} {how} that depend on the inputs' values: the pattern holds at "
                "this point only",
                value_dependent=True,
            )


# The rules.


def nothing(call: Call) -> Found:
    """Outputs that depend on no input element: factories, `*_like`, zero derivatives."""
    return [None] * len(call.outputs)


def pointwise(call: Call) -> Found:
    """Each output element depends on the same element of every operand, broadcast."""
    found: Found = []
    for output in call.outputs:
        parts = [call.read(t, output.shape) for t in call.floating_operands()]
        found.append(deps.union(parts))
    return found


def multiply(call: Call) -> Found:
    """Pointwise, except that a constant factor's exact zeros take its partner's
    dependencies away there (the derivative c·dx is 0 where c is 0)."""
    output = call.outputs[0]
    factors = (call.arguments["self"], call.arguments["other"])
    parts = []
    for this, partner in (factors, factors[::-1]):
        if not isinstance(this, torch.Tensor):
            continue
        rows = call.read(this, output.shape)
        if rows is None:
            continue
        nonzero = call.may_be_nonzero(partner, output.shape)
        parts.append(rows if nonzero is None or nonzero.all() else deps.keep_rows(rows, nonzero))
    return [deps.union(parts)]


def where(call: Call) -> Found:
    """The chosen branch where the condition is a constant (exact everywhere); both branches
    where the inputs' values choose (each at some point)."""
    condition = call.arguments.get("condition", call.arguments.get("mask"))
    return pointwise(call) if call.varies(condition) else move(call)


def reduction(call: Call) -> Found:
    """Each output element depends on every element it reduces (`dim`, or all)."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None] * len(call.outputs)
    dims = _dims(call.arguments.get("dim"), source.dim())
    groups, count = _groups(tuple(source.shape), dims)
    reduced = deps.group_union(rows, groups, count)
    return [reduced if o.is_floating_point() else None for o in call.outputs]


def loss(call: Call) -> Found:
    """A loss: pointwise with reduction='none', else every element of its operands."""
    if call.argument("reduction", 1) == 0:
        return pointwise(call)
    shape = torch.broadcast_shapes(*(t.shape for t in call.floating_operands()))
    rows = deps.union([call.read(t, shape) for t in call.floating_operands()])
    if rows is None:
        return [None] * len(call.outputs)
    everything = deps.group_union(rows, np.zeros(rows.shape[0], dtype=np.int64), 1)
    return [everything] + [None] * (len(call.outputs) - 1)


def along_dim(call: Call) -> Found:
    """softmax and its kin: each element depends on its whole line along `dim`."""
    output = call.outputs[0]
    return [_within_groups(call, output, _dims(call.arguments["dim"], output.dim()))]


def layer_norm(call: Call) -> Found:
    """Each element depends on its whole normalized block (the last dims) and its weight and
    bias; the mean and 1/σ on their block."""
    source = call.arguments["input"]
    kept = source.dim() - len(call.arguments["normalized_shape"])
    dims = list(range(kept, source.dim()))
    output = call.outputs[0]
    normalized = _within_groups(call, output, dims, operands=[source])
    affine = [
        call.read(t, output.shape)
        for t in (call.argument("weight"), call.argument("bias"))
        if isinstance(t, torch.Tensor)
    ]
    rows = call.read(source)
    statistic = None
    if rows is not None:
        groups, count = _groups(tuple(source.shape), dims)
        statistic = deps.group_union(rows, groups, count)
    return [deps.union([normalized, *affine]), statistic, statistic][: len(call.outputs)]


def prefix(call: Call) -> Found:
    """cumsum and its kin: element i along `dim` depends on elements 0…i there."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None] * len(call.outputs)
    shape = tuple(source.shape) or (1,)
    dim = _dims(call.arguments["dim"], len(shape))[0]
    length = shape[dim]
    lines = np.moveaxis(np.arange(source.numel(), dtype=np.int64).reshape(shape), dim, -1)
    lines = lines.reshape(-1, length)
    count = lines.shape[0] * length * (length + 1) // 2
    call.tracer.require_entries(count, f"{call.op_name}'s triangle")
    later, earlier = np.tril_indices(length)
    pairs = (lines[:, later].reshape(-1), lines[:, earlier].reshape(-1))
    call.tracer.require_entries(deps.entries_bound(pairs[1], rows), call.op_name)
    found = deps.combine(pairs, source.numel(), rows)
    return [found if o.is_floating_point() else None for o in call.outputs]


def sorted_values(call: Call) -> Found:
    """sort, topk: each value depends on the element it was taken from, which the values
    chose: exact at this point only."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None, None]
    call.tracer.note(
        f"{call.op_name} chooses elements by their values: the pattern holds at this point only",
        value_dependent=True,
    )
    if source.dim() == 0:
        return [rows, None]
    indices = call.outputs[1].cpu()
    dim = _dims(call.argument("dim", -1), source.dim())[0]
    chosen = torch.arange(source.numel()).reshape(source.shape).gather(dim, indices)
    return [deps.take_rows(rows, chosen.reshape(-1).numpy()), None]


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
        [t for t in call.operands if not (t.is_floating_point() or t.is_complex())],
        "selects with indices or masks",
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
        if not output.is_floating_point():
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
        if not isinstance(value, torch.Tensor) or not (
            value.is_floating_point() or value.is_complex()
        ):
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
        dim = _dims(call.arguments["dim"], target.dim())[0] if target.dim() else 0
        index = call.arguments["index"]
        destination = (
            ids.index_select(dim, index.cpu()) if target.dim() else ids.reshape(1)[index.cpu()]
        )
        source = call.arguments["source"]
        positions = np.arange(source.numel(), dtype=np.int64)
        summed = base != "index_copy"
        selectors = [index]
    elif base in ("scatter", "scatter_add", "scatter_reduce"):
        dim = _dims(call.arguments["dim"], target.dim())[0] if target.dim() else 0
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


PRODUCT_OPERANDS = {
    "mm": ("self", "mat2", None),
    "bmm": ("self", "mat2", None),
    "addmm": ("mat1", "mat2", "self"),
    "_addmm_activation": ("mat1", "mat2", "self"),
    "baddbmm": ("batch1", "batch2", "self"),
    "addbmm": ("batch1", "batch2", "self"),
    "mv": ("self", "vec", None),
    "addmv": ("mat", "vec", "self"),
    "dot": ("self", "tensor", None),
    "vdot": ("self", "other", None),
    "addr": ("vec1", "vec2", "self"),
}
"""Each product's factors A and B and the term it adds, by argument name."""


def product(call: Call) -> Found:
    """mm, bmm, mv, dot and their `add…` forms: C[i, j] depends on A[i, l] where B[l, j]
    can be non-zero and on B[l, j] where A[i, l] can (for every l), and on the added term."""
    name = call.name.rstrip("_")
    first_name, second_name, added_name = PRODUCT_OPERANDS[name]
    first, second = call.arguments[first_name], call.arguments[second_name]
    if first.dim() == 3:  # batches of m×k times k×n
        batch, m, k = first.shape
        n = second.shape[-1]
    elif name == "addr":  # u vᵀ: m×1 times 1×n
        batch, m, k, n = 1, first.numel(), 1, second.numel()
    else:  # a matrix or a row (a vector on the left) times a matrix or a column
        batch, m, k = 1, (first.shape[0] if first.dim() == 2 else 1), first.shape[-1]
        n = second.shape[-1] if second.dim() == 2 else 1
    rows = _batched_product(call, first, second, (batch, m, k, n))
    if rows is not None and name == "addbmm":  # the batches' products summed
        rows = deps.group_union(rows, np.tile(np.arange(m * n, dtype=np.int64), batch), m * n)
    parts = [rows]
    if added_name is not None and call.argument("beta", 1) != 0:
        parts.append(call.read(call.arguments[added_name], call.outputs[0].shape))
    return [deps.union(parts)] + [None] * (len(call.outputs) - 1)


def _batched_product(
    call: Call, first: torch.Tensor, second: torch.Tensor, shape: tuple[int, int, int, int]
) -> Dependencies | None:
    """Dependencies of C = A B (batches of m×k times k×n), rows in C's (b, i, j) order."""
    batch, m, k, n = shape
    rows = batch * m * n
    parts = []
    for tensor, partner, from_first in ((second, first, False), (first, second, True)):
        own = call.read(tensor)
        if own is None:
            continue
        nonzero = call.may_be_nonzero(partner)
        if from_first:  # C[b,i,j] ← A[b,i,s] where B[b,s,j] may be non-zero
            b, s, j = _nonzero_positions(nonzero, (batch, k, n))
            out = (b * m * n + j)[:, None] + (np.arange(m, dtype=np.int64) * n)[None, :]
            source = (b * m * k + s)[:, None] + (np.arange(m, dtype=np.int64) * k)[None, :]
        else:  # C[b,i,j] ← B[b,s,j] where A[b,i,s] may be non-zero
            b, i, s = _nonzero_positions(nonzero, (batch, m, k))
            out = ((b * m + i) * n)[:, None] + np.arange(n, dtype=np.int64)[None, :]
            source = ((b * k + s) * n)[:, None] + np.arange(n, dtype=np.int64)[None, :]
        call.tracer.require_entries(out.size, f"{call.op_name}'s product")
        source = source.reshape(-1)
        call.tracer.require_entries(deps.entries_bound(source, own), call.op_name)
        parts.append(deps.combine((out.reshape(-1), source), rows, own))
    return deps.union(parts)


def _nonzero_positions(
    nonzero: np.ndarray | None, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (batch, row, column) of each element that may be non-zero (every one for None)."""
    if nonzero is None:
        grid = np.indices(shape, dtype=np.int64).reshape(3, -1)
        return grid[0], grid[1], grid[2]
    b, i, j = np.nonzero(nonzero.reshape(shape))
    return b.astype(np.int64), i.astype(np.int64), j.astype(np.int64)


def _convolution_triples(
    call: Call,
    input_shape: Sequence[int],
    weight: torch.Tensor,
    output_shape: Sequence[int],
    weight_nonzero: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output, input, weight) flat positions of every product a convolution sums, for the
    weights that may be non-zero (all for None)."""
    transposed = bool(call.arguments["transposed"])
    groups = int(call.arguments["groups"])
    spatial = len(input_shape) - 2
    stride = _per_dim(call.arguments["stride"], spatial)
    padding = _per_dim(call.arguments["padding"], spatial)
    dilation = _per_dim(call.arguments["dilation"], spatial)
    kernel = tuple(weight.shape[2:])
    taps = int(np.prod(kernel))
    batch, in_channels = input_shape[0], input_shape[1]
    out_channels = output_shape[1]
    in_sizes, out_sizes = tuple(input_shape[2:]), tuple(output_shape[2:])
    # A kernel offset joins position o of the strided side with p = o·s − pad + k·d of the
    # other: the output is the strided side of a convolution, the input of a transposed one.
    strided, other = (in_sizes, out_sizes) if transposed else (out_sizes, in_sizes)
    first, second, offset = _nonzero_positions(
        weight_nonzero, (weight.shape[0], weight.shape[1], taps)
    )
    in_per_group, out_per_group = in_channels // groups, out_channels // groups
    if transposed:
        in_channel = first
        out_channel = (first // in_per_group) * out_per_group + second
    else:
        out_channel = first
        in_channel = (first // out_per_group) * in_per_group + second
    weight_flat = (first * weight.shape[1] + second) * taps + offset
    in_count, out_count = int(np.prod(in_sizes)), int(np.prod(out_sizes))
    images = np.arange(batch, dtype=np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k, (strided_at, other_at) in enumerate(
        _spatial_pairs(strided, other, kernel, stride, padding, dilation)
    ):
        here = offset == k
        count = int(here.sum())
        if not count or not len(strided_at):
            continue
        out_at, in_at = (other_at, strided_at) if transposed else (strided_at, other_at)
        call.tracer.require_entries(batch * count * len(out_at), "a convolution")
        o = (images[:, None] * out_channels + out_channel[here][None, :]) * out_count
        i = (images[:, None] * in_channels + in_channel[here][None, :]) * in_count
        w = np.broadcast_to(weight_flat[here][None, :, None], (batch, count, len(out_at)))
        found.append(
            (
                (o[:, :, None] + out_at[None, None, :]).reshape(-1),
                (i[:, :, None] + in_at[None, None, :]).reshape(-1),
                w.reshape(-1),
            )
        )
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    outs, ins, weights = (np.concatenate(part) for part in zip(*found, strict=True))
    return outs, ins, weights


def _summed_products(
    call: Call,
    rows: int,
    targets: np.ndarray,
    factors: tuple[tuple[Any, np.ndarray], tuple[Any, np.ndarray]],
) -> Dependencies | None:
    """Dependencies of T[t] = Σ A[a]·B[b] over the triples (t, a, b): each factor's elements
    where the other may be non-zero."""
    parts = []
    for (tensor, positions), (partner, partner_positions) in (factors, factors[::-1]):
        own = call.read(tensor) if isinstance(tensor, torch.Tensor) else None
        if own is None:
            continue
        nonzero = call.may_be_nonzero(partner)
        kept = slice(None) if nonzero is None else nonzero[partner_positions]
        at, source = targets[kept], positions[kept]
        call.tracer.require_entries(deps.entries_bound(source, own), call.op_name)
        parts.append(deps.combine((at, source), rows, own))
    return deps.union(parts)


def _channel_sums(call: Call, grad: torch.Tensor) -> Dependencies | None:
    """Dependencies of the per-channel sums of a batch of images (dim 1): a bias's gradient."""
    rows = call.read(grad)
    if rows is None:
        return None
    groups, count = _groups(tuple(grad.shape), [d for d in range(grad.dim()) if d != 1])
    return deps.group_union(rows, groups, count)


def convolution(call: Call) -> Found:
    """Each output element depends on the input elements its kernel covers where the weight
    may be non-zero, on those weights where the input may be non-zero, and on its bias."""
    source, weight = call.arguments["input"], call.arguments["weight"]
    output = call.outputs[0]
    full = call.read(weight) is not None
    outs, ins, weights = _convolution_triples(
        call, source.shape, weight, output.shape, None if full else call.may_be_nonzero(weight)
    )
    parts = [_summed_products(call, output.numel(), outs, ((source, ins), (weight, weights)))]
    bias = call.argument("bias")
    if isinstance(bias, torch.Tensor):
        channels = _groups(tuple(output.shape), [d for d in range(output.dim()) if d != 1])[0]
        from_bias = call.read(bias)
        if from_bias is not None:
            parts.append(deps.take_rows(from_bias, channels))
    return [deps.union(parts)]


def convolution_backward(call: Call) -> Found:
    """The gradients of a convolution, for the Hessian: grad_input[i] sums grad_out[o]·w over
    the same (o, i, w) products as the convolution, grad_weight[w] sums grad_out[o]·x[i], and
    grad_bias sums grad_out per channel."""
    grad, source, weight = (call.arguments[n] for n in ("grad_output", "input", "weight"))
    wanted = list(call.arguments["output_mask"])
    full = wanted[1] or call.read(weight) is not None
    outs, ins, weights = _convolution_triples(
        call, source.shape, weight, grad.shape, None if full else call.may_be_nonzero(weight)
    )
    found: Found = []
    if wanted[0]:
        factors = ((grad, outs), (weight, weights))
        found.append(_summed_products(call, source.numel(), ins, factors))
    if wanted[1]:
        factors = ((grad, outs), (source, ins))
        found.append(_summed_products(call, weight.numel(), weights, factors))
    if wanted[2]:
        found.append(_channel_sums(call, grad))
    return found


def _per_dim(values: Sequence[int], count: int) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    return values * count if len(values) == 1 else values


def _spatial_pairs(
    strided: Sequence[int],
    other: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each kernel offset (flat, row-major), the flat positions (o, p) it joins."""
    per_dim = []
    for size, other_size, taps, s, pad, d in zip(
        strided, other, kernel, stride, padding, dilation, strict=True
    ):
        offsets = []
        o = np.arange(size, dtype=np.int64)
        for k in range(taps):
            p = o * s - pad + k * d
            valid = (p >= 0) & (p < other_size)
            offsets.append((o[valid], p[valid]))
        per_dim.append(offsets)
    pairs = []
    for combination in np.ndindex(*kernel):
        strided_flat = np.zeros(1, dtype=np.int64)
        other_flat = np.zeros(1, dtype=np.int64)
        for dim, k in enumerate(combination):
            o, p = per_dim[dim][k]
            strided_flat = (strided_flat[:, None] * strided[dim] + o[None, :]).reshape(-1)
            other_flat = (other_flat[:, None] * other[dim] + p[None, :]).reshape(-1)
        pairs.append((strided_flat, other_flat))
    return pairs


def _window_pairs(
    call: Call, input_shape: Sequence[int], output_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(output, input) flat positions of every pooling window's elements, over the last
    len(kernel_size) dims, each plane (the dims before) on its own."""
    kernel = tuple(int(k) for k in call.arguments["kernel_size"])
    spatial = len(kernel)
    stride = _per_dim(call.arguments.get("stride") or kernel, spatial)
    padding = _per_dim(call.argument("padding", [0]), spatial)
    dilation = _per_dim(call.argument("dilation", [1]), spatial)
    in_sizes, out_sizes = tuple(input_shape[-spatial:]), tuple(output_shape[-spatial:])
    pairs = _spatial_pairs(out_sizes, in_sizes, kernel, stride, padding, dilation)
    outs = np.concatenate([o for o, _ in pairs])
    ins = np.concatenate([i for _, i in pairs])
    planes = np.arange(int(np.prod(input_shape[:-spatial])), dtype=np.int64)
    in_count, out_count = int(np.prod(in_sizes)), int(np.prod(out_sizes))
    call.tracer.require_entries(len(planes) * len(outs), "a pooling window")
    return (
        (planes[:, None] * out_count + outs[None, :]).reshape(-1),
        (planes[:, None] * in_count + ins[None, :]).reshape(-1),
    )


def pooling(call: Call) -> Found:
    """max_pool, avg_pool: each output element depends on its window (for max_pool, every
    element of it: which one is the largest changes from point to point)."""
    source, output = call.arguments["self"], call.outputs[0]
    rows = call.read(source)
    if rows is None:
        return [None] * len(call.outputs)
    outs, ins = _window_pairs(call, source.shape, output.shape)
    call.tracer.require_entries(deps.entries_bound(ins, rows), call.op_name)
    return [deps.combine((outs, ins), output.numel(), rows)] + [None] * (len(call.outputs) - 1)


def pooling_backward(call: Call) -> Found:
    """The gradient of a pooling: each input element's from the windows it lies in."""
    grad, source = call.arguments["grad_output"], call.arguments["self"]
    rows = call.read(grad)
    if rows is None:
        return [None]
    outs, ins = _window_pairs(call, source.shape, grad.shape)
    call.tracer.require_entries(deps.entries_bound(outs, rows), call.op_name)
    return [deps.combine((ins, outs), source.numel(), rows)]


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


def layer_norm_backward(call: Call) -> Found:
    """The gradients of layer_norm: the input's from its whole block (of the gradient, the
    input, the statistics and the weight), the weight's and bias's from every block."""
    grad, source = call.arguments["grad_out"], call.arguments["input"]
    kept = source.dim() - len(call.arguments["normalized_shape"])
    dims = list(range(kept, source.dim()))
    operands = [
        t
        for t in (
            grad,
            source,
            call.argument("weight"),
            call.arguments["mean"],
            call.arguments["rstd"],
        )
        if isinstance(t, torch.Tensor)
    ]
    block = _within_groups(call, source, dims, operands=operands)
    across, count = _groups(tuple(source.shape), list(range(kept)))
    found: Found = []
    wanted = list(call.arguments["output_mask"])
    if wanted[0]:
        found.append(block)
    if wanted[1]:
        found.append(None if block is None else deps.group_union(block, across, count))
    if wanted[2]:
        rows = call.read(grad, source.shape)
        found.append(None if rows is None else deps.group_union(rows, across, count))
    return found


def everything_rows(call: Call, count: int) -> Dependencies | None:
    """`count` rows, each depending on every element any operand depends on."""
    sources = [call.read(t) for t in call.operands]
    return call.tracer.everything(sources, count, f"{call.op_name} without a sparsity rule")


def everything(call: Call) -> Found:
    """Each floating output element depends on every element its operands depend on."""
    return [
        everything_rows(call, o.numel()) if o.is_floating_point() else None for o in call.outputs
    ]


def unknown(call: Call) -> Found:
    """An op without a rule: `everything`, and a note naming it."""
    found = everything(call)
    if any(rows is not None for rows in found):
        call.tracer.note(
            f"{call.op_name} has no sparsity rule: its outputs depend on all of its inputs' "
            "elements",
            exact=False,
        )
    return found


def _dims(dim: Any, ndim: int) -> list[int]:
    """The dims a `dim` argument names, non-negative; all of them for None or []."""
    if dim is None:
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return list(range(ndim))
    size = max(ndim, 1)
    return sorted({d % size for d in dims})


def _groups(shape: tuple[int, ...], dims: Sequence[int]) -> tuple[np.ndarray, int]:
    """For each element of a tensor of `shape` (logical order), the group it falls in when
    `dims` are reduced, and the number of groups."""
    kept = tuple(1 if d in dims else size for d, size in enumerate(shape))
    count = int(np.prod(kept))
    ids = np.arange(count, dtype=np.int64).reshape(kept)
    return np.broadcast_to(ids, shape).reshape(-1), count


def _within_groups(
    call: Call, output: torch.Tensor, dims: Sequence[int], operands: Sequence[Any] | None = None
) -> Dependencies | None:
    """Each element of `output` depends on every operand element (broadcast) of its group
    along `dims`."""
    tensors = call.floating_operands() if operands is None else operands
    rows = deps.union([call.read(t, output.shape) for t in tensors])
    if rows is None:
        return None
    groups, count = _groups(tuple(output.shape), dims)
    lines = deps.group_union(rows, groups, count)
    call.tracer.require_entries(deps.entries_bound(groups, lines), f"{call.op_name}'s lines")
    return deps.take_rows(lines, groups)


NOTHING = (
    "empty_like zeros_like ones_like full_like rand_like randn_like randint_like new_empty "
    "new_empty_strided new_zeros new_ones new_full bernoulli floor ceil round trunc sign sgn "
    "floor_divide div.Tensor_mode div.Scalar_mode div_.Tensor_mode div_.Scalar_mode "
    "_local_scalar_dense"
)
POINTWISE = (
    "_to_copy lift_fresh_copy _conj _neg_view native_dropout mse_loss_backward "
    "smooth_l1_loss_backward huber_loss_backward soft_margin_loss_backward "
    "binary_cross_entropy_backward elu_backward leaky_relu_backward hardtanh_backward "
    "softplus_backward log_sigmoid_forward log_sigmoid_backward mish_backward "
    "hardsigmoid_backward hardswish_backward hardswish _prelu_kernel relu6"
)
MOVES = (
    "cat stack roll flip rot90 constant_pad_nd reflection_pad1d reflection_pad2d "
    "reflection_pad3d replication_pad1d replication_pad2d replication_pad3d repeat "
    "repeat_interleave index index_select gather take masked_select masked_scatter "
    "index_fill fill zero copy slice_scatter select_scatter diagonal_scatter "
    "as_strided_scatter tril triu diag_embed diag _unsafe_view _unsafe_index slice_backward "
    "select_backward diagonal_backward unfold_backward embedding upsample_nearest1d "
    "upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d "
    "_upsample_nearest_exact3d pixel_shuffle pixel_unshuffle channel_shuffle "
    "native_channel_shuffle im2col narrow_copy clone contiguous alias_copy"
)
SCATTERED = (
    "index_put _index_put_impl _unsafe_index_put index_add index_copy index_reduce scatter "
    "scatter_add scatter_reduce put"
)
REDUCTIONS = "median nanmedian kthvalue mode"
LOSSES = (
    "mse_loss l1_loss smooth_l1_loss huber_loss soft_margin_loss binary_cross_entropy "
    "binary_cross_entropy_with_logits"
)
ALONG_DIM = "_softmax _log_softmax _softmax_backward_data _log_softmax_backward_data"
PREFIXES = "cumsum cumprod logcumsumexp cummax cummin"
POOLINGS = "max_pool2d_with_indices max_pool3d_with_indices avg_pool2d avg_pool3d"
UNMOVES = (
    "reflection_pad1d_backward reflection_pad2d_backward reflection_pad3d_backward "
    "replication_pad1d_backward replication_pad2d_backward replication_pad3d_backward "
    "upsample_nearest1d_backward upsample_nearest2d_backward upsample_nearest3d_backward "
    "_upsample_nearest_exact1d_backward _upsample_nearest_exact2d_backward "
    "_upsample_nearest_exact3d_backward unfold_backward embedding_dense_backward col2im"
)
PRODUCTS = "mm bmm mv dot vdot addmm addmv baddbmm addbmm addr _addmm_activation"

RULES: dict[str, Rule] = {
    **dict.fromkeys(NOTHING.split(), nothing),
    **dict.fromkeys(POINTWISE.split(), pointwise),
    **dict.fromkeys(MOVES.split(), move),
    **dict.fromkeys(SCATTERED.split(), scattered),
    **dict.fromkeys(REDUCTIONS.split(), reduction),
    **dict.fromkeys(LOSSES.split(), loss),
    **dict.fromkeys(ALONG_DIM.split(), along_dim),
    **dict.fromkeys(PREFIXES.split(), prefix),
    **dict.fromkeys(PRODUCTS.split(), product),
    "mul": multiply,
    "where": where,
    "masked_fill": where,
    "sort": sorted_values,
    "topk": sorted_values,
    "native_layer_norm": layer_norm,
    "convolution": convolution,
    "convolution_backward": convolution_backward,
    "native_layer_norm_backward": layer_norm_backward,
    **dict.fromkeys(POOLINGS.split(), pooling),
    **dict.fromkeys((f"{name}_backward" for name in POOLINGS.split()), pooling_backward),
    **dict.fromkeys(UNMOVES.split(), unmove),
    "scatter.value": move,
}


def rule_for(func: torch._ops.OpOverload) -> Rule:
    """The rule of an op: by its name (an in-place form by its functional one's), else by
    torch's tags (pointwise, reduction, view_copy), else `unknown`."""
    name = func._schema.name.split("::")[-1]
    functional = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    for key in (
        f"{name}.{func._overloadname}",
        f"{functional}.{func._overloadname}",
        name,
        functional,
    ):
        if key in RULES:
            return RULES[key]
    if torch.Tag.pointwise in func.tags:
        return pointwise
    if torch.Tag.reduction in func.tags:
        return reduction
    if torch.Tag.view_copy in func.tags:
        return move
    return unknown
