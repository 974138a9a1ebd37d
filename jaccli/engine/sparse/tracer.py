"""The tracer of pattern detection: the function runs once, on its real values, under a torch
dispatch mode that sees every aten op and keeps, for every element the op writes, the set of
`wrt`-input elements it depends on.

# NOTE [dependencies live with storages]
Dependencies are kept for the elements of a storage, not of a tensor. A view (a slice, a
transpose, an expand, `.data`, a reshape that does not copy) reads its storage's rows through
its own strides, so views need no rule at all, and a write through a view (`u[1:-1] = …`,
`x[i] += …`, an `out=`) changes what every other view of that storage reads. A storage the
tracer has never written holds constants: it depends on nothing. The tracer holds storages
by weak reference only, so the function's temporaries are freed as they would be without it.

Each op is handled in three steps: its operands' dependencies are read (as they were before
the op: a rule sees an in-place op's operand as it was), the op runs on the real values,
then its rule (rules.py) gives each output's dependencies, which are written to the storage
positions the output covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from jaccli.engine.evaluate import call_fresh
from jaccli.engine.guard import require_within_budget
from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.call import Call, Rule, differentiable, everything, everything_rows
from jaccli.engine.sparse.dependencies import Dependencies
from jaccli.engine.sparse.rules import rule_for
from jaccli.errors import JaccliError
from jaccli.functions.model import Function

BYTES_PER_ENTRY = 24
"""What one entry of a dependency matrix costs while a rule builds it: its column index and
flag, the pair of indices it was built from, and the sort that merges duplicates."""
SWEEP_EVERY = 256
"""Writes between two sweeps of the storages that have been freed."""


@dataclass
class _Storage:
    """The dependencies of one storage's elements (rows in memory order)."""

    reference: StorageWeakRef
    itemsize: int
    rows: Dependencies | None
    """None: no element depends on anything."""
    varies: bool
    """Whether some element's value depends on the inputs' values, with or without a
    derivative (an index computed from x, a mask x > 0): such a tensor's zeros hold at this
    point only."""
    inputs: frozenset[str] = frozenset()
    """The inputs outside `wrt` whose values reached some element: its zeros, or the indices
    it holds, are those of these values only (another of --points may have others)."""


class Tracer(TorchDispatchMode):
    """Tracks, op by op, which of `columns` input elements every element depends on."""

    def __init__(self, columns: int, budget: int | None, *, unseen_vary: bool = False) -> None:
        super().__init__()
        self.columns = columns
        self.budget = budget
        self.unseen_vary = unseen_vary
        """Whether a tensor the tracer never wrote may hold values that vary (a backward
        pass's saved tensors), so that its zeros are never taken as structural."""
        self._storages: dict[int, _Storage] = {}
        self._sparse = WeakTensorKeyDictionary()
        """torch.sparse tensors built from tracked values: every column any of their elements
        may depend on (they have no storage to keep rows with)."""
        self._writes = 0
        self.exact = True
        self.value_dependent = False
        self.notes: dict[str, None] = {}
        """Warnings, in the order first met, each once."""
        self.refusal: JaccliError | None = None
        """A refusal (the pattern past the budget) raised inside the function's call, which
        the function may have caught or wrapped: it stands whatever the function did."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: torch would otherwise wrap __torch_dispatch__ to keep torch.compile out of
        it, importing torch._dynamo on the first op (2–3 s); nothing here is compiled."""
        return False

    # The inputs and the outputs.

    def watch(self, tensor: torch.Tensor, first_column: int) -> None:
        """Make element k of `tensor` (logical order) depend on column first_column + k."""
        count = tensor.numel()
        columns = np.arange(first_column, first_column + count, dtype=np.int64)
        rows = deps.from_pairs(np.arange(count, dtype=np.int64), columns, (count, self.columns))
        self._write(tensor, rows, varies=True)

    def watch_constant(self, tensor: torch.Tensor, name: str) -> None:
        """Remember that `tensor` holds the values of input `name`, not differentiated."""
        self._write(tensor, None, varies=False, inputs=frozenset({name}))

    def dependencies(self, tensor: torch.Tensor) -> Dependencies:
        """Each element's dependencies (rows in logical order); no entry for a constant."""
        rows = self.read(tensor)
        return deps.no_dependencies(tensor.numel(), self.columns) if rows is None else rows

    # What rules ask for.

    def read(self, tensor: torch.Tensor, shape: Sequence[int] | None = None) -> Dependencies | None:
        """The dependencies of `tensor`'s elements, broadcast to `shape` if given (rows in
        logical order); None where none depends on anything."""
        storage = self._storage(tensor)
        if storage is None or storage.rows is None:
            return None
        strides = list(tensor.stride())
        sizes = list(tensor.shape)
        if shape is not None and tuple(shape) != tuple(sizes):
            sizes, strides = _broadcast_strides(sizes, strides, shape)
        if storage.itemsize != tensor.element_size():
            return self._reinterpreted(storage, int(np.prod(sizes)), tensor)
        if _covers(tensor, storage.rows.shape[0]) and tuple(sizes) == tuple(tensor.shape):
            rows = storage.rows
        else:
            positions = deps.index_map(sizes, strides, tensor.storage_offset())
            rows = deps.take_rows(storage.rows, positions)
        return rows if rows.nnz else None

    def varies(self, tensor: torch.Tensor) -> bool:
        if tensor.layout != torch.strided:
            return tensor in self._sparse
        storage = self._storage(tensor)
        return self.unseen_vary if storage is None else storage.varies

    def inputs_of(self, tensor: torch.Tensor) -> frozenset[str]:
        """The inputs outside `wrt` whose values reached `tensor`'s storage."""
        storage = self._storage(tensor) if tensor.layout == torch.strided else None
        return frozenset() if storage is None else storage.inputs

    def tracked(self, tensor: torch.Tensor) -> bool:
        return (
            tensor in self._sparse
            if tensor.layout != torch.strided
            else bool(self._storage(tensor))
        )

    def require_entries(self, count: int, what: str) -> None:
        """Refuse (exit 3) a dependency matrix of `count` entries past the memory budget."""
        try:
            require_within_budget(
                f"the sparsity pattern ({what}: {count} dependencies)",
                count * BYTES_PER_ENTRY,
                self.budget,
                "the pattern is too dense for sparse differentiation; compute J densely",
            )
        except JaccliError as error:
            self.refusal = error
            raise

    def columns_of(self, tensor: torch.Tensor) -> np.ndarray | None:
        """Every column some element of `tensor` depends on; None: none."""
        if tensor.layout != torch.strided:
            return self._sparse.get(tensor)
        rows = self.read(tensor)
        return None if rows is None else rows.indices

    def everything(
        self, sources: Sequence[np.ndarray | None], count: int, what: str
    ) -> Dependencies | None:
        """`count` rows, each depending on every column in `sources` (None: on nothing),
        within the budget."""
        columns = [c for c in sources if c is not None and len(c)]
        if not columns:
            return None
        union = np.unique(np.concatenate(columns))
        self.require_entries(count * len(union), what)
        return deps.repeated_row(union, count, self.columns)

    def note(self, text: str, *, exact: bool = True, value_dependent: bool = False) -> None:
        """A warning; `exact=False` when the pattern may now hold more than J's non-zeros,
        `value_dependent` when it holds at this point only."""
        self.notes.setdefault(text)
        self.exact = self.exact and exact
        self.value_dependent = self.value_dependent or value_dependent

    # The dispatch mode.

    def call(self, function: Function, fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The function's outputs on `fresh`, traced; a refusal raised while tracing stands
        even where the function caught or wrapped it."""
        try:
            with self:
                outputs = call_fresh(function, fresh)
        except JaccliError:
            self.require_no_refusal()
            raise
        self.require_no_refusal()
        return outputs

    def require_no_refusal(self) -> None:
        """Raise the refusal met while tracing, if any."""
        if self.refusal is not None:
            raise self.refusal from None

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not any(self.tracked(t) for t in tensors):
            return func(*args, **kwargs)  # constants in, constants out
        call = Call(self, func, args, kwargs)
        result = func(*args, **kwargs)
        call.finish(result)
        self._record(call, rule_for(func), result)
        return result

    def _record(self, call: Call, rule: Rule, result: Any) -> None:
        """Write the dependencies `rule` gives each output of `call` where the output lies."""
        varies = any(self.varies(t) for t in call.operands)
        inputs = frozenset().union(*(self.inputs_of(t) for t in call.operands))
        if not call.outputs and result is not None:
            call.depends_on_values(
                call.operands, "makes a Python number (.item(), float(), an `if`) of values"
            )
        written = {id(t) for t in call.written}
        targets = [
            fresh or id(t) in written for t, fresh in zip(call.outputs, call.fresh, strict=True)
        ]
        if call.only_metadata or not any(targets):  # views read their storage: no rule
            return
        if any(t.layout != torch.strided and self.varies(t) for t in call.operands) or (
            varies and any(t.layout != torch.strided for t in call.outputs)
        ):
            self._record_sparse(call)
            return
        try:
            found = rule(call)
        except JaccliError:
            raise
        except Exception as error:  # a rule that cannot follow this call: safe, not exact
            found = everything(call)
            self.note(
                f"{call.op_name}: its sparsity rule failed ({type(error).__name__}), so its "
                "outputs depend on all of its inputs' elements",
                exact=False,
            )
        for output, rows, target in zip(call.outputs, found, targets, strict=True):
            if target:
                self._write(output, rows if differentiable(output) else None, varies, inputs)
        returned = {id(t) for t in call.outputs}
        for tensor in call.written:  # written, but not returned: be safe
            if id(tensor) not in returned:
                rows = everything_rows(call, tensor.numel()) if differentiable(tensor) else None
                self._write(tensor, rows, varies, inputs)

    def _record_sparse(self, call: Call) -> None:
        """An op on or making a torch.sparse tensor built from tracked values: every output
        element depends on everything the operands depend on (rows for a strided output,
        columns for a sparse one), a superset named in a note."""
        self.note(
            f"{call.op_name} works on a torch.sparse tensor built from the inputs: its outputs "
            "depend on all of its inputs' elements",
            exact=False,
        )
        sources = [self.columns_of(t) for t in call.operands]
        for output in call.outputs:
            if output.layout == torch.strided:
                self._write(output, self.everything(sources, output.numel(), call.op_name), True)
            else:
                self._sparse[output] = self.everything(sources, 1, call.op_name).indices  # type: ignore[union-attr]

    # Storage bookkeeping.

    def _storage(self, tensor: torch.Tensor) -> _Storage | None:
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            return None
        storage = tensor.untyped_storage()
        found = self._storages.get(storage._cdata)
        if found is None:
            return None
        elements = storage.nbytes() // found.itemsize
        if found.rows is not None and found.rows.shape[0] != elements:  # resized
            found.rows = _resized(found.rows, elements)
        return found

    def _write(
        self,
        tensor: torch.Tensor,
        rows: Dependencies | None,
        varies: bool,
        inputs: frozenset[str] = frozenset(),
    ) -> None:
        """Make the elements `tensor` covers depend on `rows` (None: on nothing)."""
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            return
        varies = varies or rows is not None
        storage = self._storage(tensor)
        if storage is None:
            if rows is None and not varies and not inputs:
                return
            untyped = tensor.untyped_storage()
            storage = _Storage(StorageWeakRef(untyped), tensor.element_size(), None, False)
            self._storages[untyped._cdata] = storage
            self._sweep()
        if storage.itemsize != tensor.element_size():
            self._write_reinterpreted(storage, tensor, rows)
        elif rows is not None or storage.rows is not None:
            elements = tensor.untyped_storage().nbytes() // storage.itemsize
            if _covers(tensor, elements):
                storage.rows = rows
            else:
                current = storage.rows
                if current is None:
                    current = deps.no_dependencies(elements, self.columns)
                positions = deps.index_map(tensor.shape, tensor.stride(), tensor.storage_offset())
                storage.rows = deps.replace_rows(current, positions, rows)
        storage.varies = storage.varies or varies
        storage.inputs = storage.inputs | inputs

    def _reinterpreted(self, storage: _Storage, count: int, tensor: torch.Tensor) -> Dependencies:
        """A tensor that reads a storage as another dtype: each of its elements may depend on
        anything the storage's elements depend on."""
        self.note(
            f"a {tensor.dtype} view of a storage of {storage.itemsize}-byte elements: its "
            "elements depend on all of the storage's",
            exact=False,
        )
        return self.everything([storage.rows.indices], count, "a reinterpreted storage")  # type: ignore[return-value]

    def _write_reinterpreted(
        self, storage: _Storage, tensor: torch.Tensor, rows: Dependencies | None
    ) -> None:
        """A write through a view of another dtype: the storage becomes one of that dtype whose
        every element depends on everything it or the write depended on."""
        self.note(
            f"a {tensor.dtype} view of a storage of {storage.itemsize}-byte elements was "
            "written: its elements depend on all of the storage's",
            exact=False,
        )
        elements = tensor.untyped_storage().nbytes() // tensor.element_size()
        storage.itemsize = tensor.element_size()
        sources = [None if r is None else r.indices for r in (storage.rows, rows)]
        storage.rows = self.everything(sources, elements, "a reinterpreted storage")

    def _sweep(self) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._storages = {
                key: s for key, s in self._storages.items() if not s.reference.expired()
            }


def _covers(tensor: torch.Tensor, elements: int) -> bool:
    """Whether `tensor` is its whole storage in memory order."""
    return tensor.storage_offset() == 0 and tensor.numel() == elements and tensor.is_contiguous()


def _broadcast_strides(
    sizes: list[int], strides: list[int], shape: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Sizes and strides of the tensor expanded to `shape` (torch's broadcasting)."""
    pad = len(shape) - len(sizes)
    sizes, strides = [1] * pad + sizes, [0] * pad + strides
    return list(shape), [
        0 if size == 1 and target != 1 else stride
        for size, stride, target in zip(sizes, strides, shape, strict=True)
    ]


def _resized(rows: Dependencies, elements: int) -> Dependencies:
    """`rows` for a storage resized to `elements`: kept where it was, empty past it."""
    if elements <= rows.shape[0]:
        return deps.take_rows(rows, np.arange(elements, dtype=np.int64))
    import scipy.sparse as sp

    extra = deps.no_dependencies(elements - rows.shape[0], rows.shape[1])
    return sp.vstack([rows, extra], format="csr")
