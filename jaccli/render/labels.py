"""How entries and slices are named for people: `y[1,0]`, `∂y[1] / ∂x[0,2]`, `b[:,1]`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaccli.messages import visible as visible  # where names are spelt for people
from jaccli.result import EntryError
from jaccli.spec import indexed


def index_label(name: str, shape: Sequence[int], flat_index: int) -> str:
    """`y[1,0]` for flat index 3 of a 2x2 y; plain `y` for a scalar."""
    return indexed(name, np.unravel_index(flat_index, tuple(shape)) if shape else ())


def slice_label(name: str, axis: int, ndim: int, index: int | str) -> str:
    """`a[0]` for a slice along axis 0, `b[:,1]` along axis 1."""
    if ndim == 1:
        return f"{name}[{index}]"
    return f"{name}[{','.join([':'] * axis + [str(index)])}]"


def entry_label(entry: EntryError) -> str:
    """`∂y[1] / ∂x[0,2]` for a Jacobian entry, `a.grad[0,2]` for a VJP entry."""
    x_label = indexed(entry.wrt, entry.input_index)
    if entry.output is None:
        return f"{entry.wrt}.grad{x_label[len(entry.wrt) :]}"
    assert entry.output_index is not None
    return f"∂{indexed(entry.output, entry.output_index)} / ∂{x_label}"
