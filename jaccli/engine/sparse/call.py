"""One call of an aten op as the sparsity rules see it (`Call`), the shapes of reductions,
and the safe rule every op falls back to: each output element depends on everything its
operands depend on."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.utils._pytree as pytree

from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.dependencies import Dependencies


class Tracer(Protocol):
    """What a rule may ask of the tracer (tracer.py's Tracer; named here so that rules need
    not import the module that calls them)."""

    columns: int

    def read(
        self, tensor: torch.Tensor, shape: Sequence[int] | None = None
    ) -> Dependencies | None: ...

    def varies(self, tensor: torch.Tensor) -> bool: ...

    def inputs_of(self, tensor: torch.Tensor) -> frozenset[str]: ...

    def require_entries(self, count: int, what: str) -> None: ...

    def columns_of(self, tensor: torch.Tensor) -> np.ndarray | None: ...

    def everything(
        self, sources: Sequence[np.ndarray | None], count: int, what: str
    ) -> Dependencies | None: ...

    def note(self, text: str, *, exact: bool = True, value_dependent: bool = False) -> None: ...


Found = list[Dependencies | None]
"""Each output's dependencies, in the order of Call.outputs."""
Rule = Callable[["Call"], Found]

METADATA_ONLY = {"set_", "resize_", "resize_as_", "record_stream", "_resize_output_"}


def differentiable(tensor: torch.Tensor) -> bool:
    """Whether a tensor has derivatives: floating or complex (integers and booleans not)."""
    return tensor.is_floating_point() or tensor.is_complex()


@dataclass(frozen=True)
class Signature:
    """What a call needs of an op's schema, read once per op (schemas are slow to walk)."""

    name: str
    arguments: tuple[tuple[str, bool, Any, bool], ...]
    """Each argument: its name, whether it has a default, the default, whether the op writes
    into it."""
    returns_fresh: tuple[bool, ...]
    """Each return: whether it is a new tensor (not a view or a written argument)."""
    writes_only: bool
    """An `out=` op: the arguments it writes are not read."""
    only_metadata: bool

    @staticmethod
    @functools.cache
    def of(func: torch._ops.OpOverload) -> Signature:
        schema = func._schema
        name = schema.name.split("::")[-1]
        return Signature(
            name,
            tuple(
                (
                    a.name,
                    a.has_default_value(),
                    a.default_value if a.has_default_value() else None,
                    a.alias_info is not None and a.alias_info.is_write,
                )
                for a in schema.arguments
            ),
            tuple(r.alias_info is None for r in schema.returns),
            torch.Tag.out in func.tags,
            torch.Tag.inplace_view in func.tags or name in METADATA_ONLY,
        )


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
        signature = Signature.of(func)
        self.signature = signature
        self.name = signature.name
        self.op_name = f"aten.{self.name}"
        self.only_metadata = signature.only_metadata
        self.arguments: dict[str, Any] = {}
        self.written: list[torch.Tensor] = []
        """The tensors the op writes into (in place, or `out=`)."""
        self.operands: list[torch.Tensor] = []
        """The tensors whose values the op reads."""
        for position, (name, has_default, default, is_write) in enumerate(signature.arguments):
            if position < len(args):
                value = args[position]
            elif name in kwargs:
                value = kwargs[name]
            elif has_default:
                value = default
            else:
                continue
            self.arguments[name] = value
            if isinstance(value, torch.Tensor):
                tensors = [value]
            elif isinstance(value, list | tuple):
                tensors = [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]
            else:
                continue
            if is_write:
                self.written.extend(tensors)
            if not (is_write and signature.writes_only):
                self.operands.extend(tensors)
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
        returns = self.signature.returns_fresh
        parts = [result] if len(returns) == 1 else list(result)
        for fresh, part in zip(returns, parts, strict=False):
            if isinstance(part, torch.Tensor):
                tensors = [part]
            else:
                tensors = [t for t in pytree.tree_leaves(part) if isinstance(t, torch.Tensor)]
            self.outputs.extend(tensors)
            self.fresh.extend([fresh] * len(tensors))

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
            if value.layout != torch.strided:  # a torch.sparse constant: see nonzero_positions
                return None
            mask = (self.values(value).detach() != 0).cpu()
            if shape is not None:
                mask = mask.expand(tuple(shape))
            nonzero = np.ascontiguousarray(mask.numpy()).reshape(-1)
            if not nonzero.all():
                self.depends_on_values([value], "uses the zeros of a constant")
            return nonzero
        if isinstance(value, int | float | bool | complex):
            size = int(np.prod(shape)) if shape is not None else 1
            return np.full(size, value != 0)
        return None

    def nonzero_positions(self, value: Any) -> np.ndarray | None:
        """The flat positions (logical order) of the elements that may be non-zero, read from
        a torch.sparse constant's indices without densifying it; None: every element."""
        if not isinstance(value, torch.Tensor) or self.varies(value):
            return None
        if value.layout == torch.strided:
            return np.flatnonzero(self.may_be_nonzero(value))
        stored = value.detach().to_sparse_coo().coalesce()
        if stored.dense_dim():  # blocks of dense values: every element of the shape, safely
            return None
        kept = (stored.values() != 0).cpu().numpy()
        indices = stored.indices().cpu().numpy()[:, kept]
        return np.ravel_multi_index(tuple(indices), tuple(value.shape)).astype(np.int64)

    def floating_operands(self) -> list[torch.Tensor]:
        return [t for t in self.operands if differentiable(t)]

    def depends_on_values(self, tensors: Sequence[Any], how: str) -> None:
        """Note that the pattern holds at this point only when one of `tensors` (indices, a
        mask, a constant's zeros) came from the values of the differentiated inputs, or of
        inputs outside `wrt` (which another of --points may change)."""
        tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
        if any(self.varies(t) for t in tensors):
            self.tracer.note(
                f"{self.op_name} {how} that depend on the differentiated inputs' values: the "
                "pattern holds at this point only",
                value_dependent=True,
            )
            return
        names = sorted(frozenset().union(*(self.tracer.inputs_of(t) for t in tensors)))
        if names:
            listed = ", ".join(names)
            self.tracer.note(
                f"{self.op_name} {how} that come from {listed} (not differentiated): the "
                f"pattern holds for these values of {listed} only",
                value_dependent=True,
            )


def dims_of(dim: Any, ndim: int) -> list[int]:
    """The dims a `dim` argument names, non-negative; all of them for None or []."""
    if dim is None:
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return list(range(ndim))
    size = max(ndim, 1)
    return sorted({d % size for d in dims})


def groups_of(shape: tuple[int, ...], dims: Sequence[int]) -> tuple[np.ndarray, int]:
    """For each element of a tensor of `shape` (logical order), the group it falls in when
    `dims` are reduced, and the number of groups."""
    kept = tuple(1 if d in dims else size for d, size in enumerate(shape))
    count = int(np.prod(kept))
    ids = np.arange(count, dtype=np.int64).reshape(kept)
    return np.broadcast_to(ids, shape).reshape(-1), count


def within_groups(
    call: Call, output: torch.Tensor, dims: Sequence[int], operands: Sequence[Any] | None = None
) -> Dependencies | None:
    """Each element of `output` depends on every operand element (broadcast) of its group
    along `dims`."""
    tensors = call.floating_operands() if operands is None else operands
    rows = deps.union([call.read(t, output.shape) for t in tensors])
    if rows is None:
        return None
    groups, count = groups_of(tuple(output.shape), dims)
    lines = deps.group_union(rows, groups, count)
    call.tracer.require_entries(deps.entries_bound(groups, lines), f"{call.op_name}'s lines")
    return deps.take_rows(lines, groups)


def everything_rows(call: Call, count: int) -> Dependencies | None:
    """`count` rows, each depending on every element any operand depends on."""
    sources = [call.tracer.columns_of(t) for t in call.operands]
    return call.tracer.everything(sources, count, f"{call.op_name} without a sparsity rule")


def everything(call: Call) -> Found:
    """Each floating output element depends on every element its operands depend on."""
    return [everything_rows(call, o.numel()) if differentiable(o) else None for o in call.outputs]
