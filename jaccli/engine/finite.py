"""Warnings for outputs and derivatives that are not finite, and which NaN entries of J are
structurally zero (NOTE [a NaN that is a structural zero]).

# NOTE [a NaN that is a structural zero]
Outside a function's domain a backward pass multiplies 0 by ∞: for y = sqrt(x − 10) at
x = [1.3, 20, 3.1], the row of y[1] is (e₁ᵀ)·diag(1/(2·sqrt(x − 10))) = [0·NaN, 0.158, 0·NaN], so
∂y[1]/∂x[0] comes out NaN although y[1] does not depend on x[0] at all. torch is not wrong by
its rules, and the numbers are shown as computed; the warning says which NaNs are of this kind.

An entry J[i, j] is called structurally zero when y[i] is finite and stays bit-identical when
x[j] is set to NaN and, in another call, to +Infinity. IEEE arithmetic carries a NaN into every
result computed from it (0·NaN is NaN too, so a zero weight still shows the dependence), and
so do torch's elementary functions and reductions; an output that comes out unchanged did not
read x[j] arithmetically, so no derivative flows from x[j] to it and its true ∂y[i]/∂x[j] is 0.
The only ways around that are ops that test or discard values (comparisons, `where`,
`nan_to_num`, `nansum`, `fmax`), and the second call closes them: a NaN-discarding op gives back
the very same value for both NaN and +Infinity only if y[i] does not change with x[j], and a
test that rejects NaN accepts +Infinity (y = where(x > 10, sqrt(x − 10), 0) at x = 1.3 keeps y
for NaN and not for +Infinity, so its NaN derivative is reported, not explained: y does depend
on x past 10). A false "structural" would need an output that reads x[j] yet gives bit-identical
numbers for both poisons; a false "not structural" only leaves a NaN unexplained.

Cost: one pair of calls with every candidate column poisoned at once (a finite output unchanged
by it depends on none of them, which settles an elementwise function at once), then a pair per
column for the outputs that did change, at most POISONED_COLUMNS columns; the rest stay
unexplained. It runs for a dense J only, and only when J has a NaN at a finite output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from jaccli.engine.evaluate import evaluate, to_numpy
from jaccli.engine.problem import Problem
from jaccli.errors import ComputationError
from jaccli.result import (
    HessianResult,
    HvpResult,
    JacobianResult,
    JvpResult,
    Result,
    VjpResult,
)
from jaccli.spec import indexed

ENTRIES_NAMED = 4
"""Entries named in one warning before `…`."""
POISONED_COLUMNS = 8
"""Columns of J tested one by one (two calls each) after the joint test."""

Labeller = Callable[[tuple[int, ...]], str]


def nonfinite_notes(result: Result, problem: Problem | None = None) -> tuple[str, ...]:
    """A warning for each output and each computed array with entries that are not finite,
    counting them and naming the first few; with `problem`, the NaN entries of a dense J that
    are structurally zero are told apart (NOTE [a NaN that is a structural zero])."""
    notes = [
        _count_note(f"output {name}", values, lambda index, name=name: indexed(name, index))
        for name, values in result.evaluation.outputs.items()
    ]
    computed = [
        (key, _count_note(title, values, label), label)
        for key, title, values, label in _computed(result)
    ]
    structural: dict[tuple[str, str], np.ndarray] = {}
    dense = isinstance(result, JacobianResult) and result.per_sample is None
    if problem is not None and dense and any(note for _, note, _ in computed):
        structural = structural_nans(problem, result)  # type: ignore[arg-type]
    for key, note, label in computed:
        if note and key in structural and structural[key].any():
            note += _structural_clause(structural[key], label, key)
        notes.append(note)
    return tuple(note for note in notes if note)


def _count_note(title: str, values: np.ndarray, label: Labeller) -> str:
    """`title has 2 of 9 entries not finite (2 NaN): y[0], y[2]`, or '' when all are finite."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        return ""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum(dtype=np.float64)):
            return ""  # a NaN or ±Infinity anywhere would make the sum one too
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if not count:
        return ""
    nans = int(np.isnan(values).sum())
    kinds = ", ".join(
        f"{n} {kind}"
        for n, kind in ((nans, "NaN"), (count - nans, "infinite"))
        if n  # NaN first: it is the usual one
    )
    if values.size == 1:
        return f"{title} is not finite ({'NaN' if nans else 'infinite'})"
    return (
        f"{title} has {count} of {values.size} entries not finite ({kinds}): "
        f"{_listed(np.argwhere(bad), label, count)}"
    )


def _listed(indices: np.ndarray, label: Labeller, count: int) -> str:
    named = ", ".join(label(tuple(int(i) for i in index)) for index in indices[:ENTRIES_NAMED])
    return named + (", …" if count > ENTRIES_NAMED else "")


def _structural_clause(mask: np.ndarray, label: Labeller, key: tuple[str, str]) -> str:
    output, wrt = key
    count = int(mask.sum())
    them = "1 is" if count == 1 else f"{count} are"
    return (
        f"; {them} NaN only from 0·∞ in the backward pass, "
        f"{'a structural zero' if count == 1 else 'structural zeros'} "
        f"({_listed(np.argwhere(mask), label, count)}): each such {output} entry stays "
        f"bit-identical when that {wrt} entry is set to NaN or Infinity, so it does not depend "
        "on it and its true derivative is 0"
    )


def _computed(result: Result) -> Iterator[tuple[tuple[str, str], str, np.ndarray, Labeller]]:
    """Each array the result computed: a key, a title, the values and a label for an index."""
    if isinstance(result, JacobianResult):
        for y, by_wrt in result.jacobians.items():
            for x, j in by_wrt.items():
                yield (y, x), f"∂{y}/∂{x}", j, _jacobian_labeller(result, y, x)
    elif isinstance(result, VjpResult):
        for x, v in result.vjps.items():
            yield ("", x), f"vᵀ·J for {x}", v, lambda index, x=x: indexed(f"{x}.grad", index)
    elif isinstance(result, JvpResult):
        for y, v in result.jvps.items():
            yield ("", y), f"J·v of {y}", v, lambda index, y=y: indexed(y, index)
    elif isinstance(result, HvpResult):
        for x, v in result.hvps.items():
            yield ("", x), f"H·v for {x}", v, lambda index, x=x: indexed(x, index)
    elif isinstance(result, HessianResult):
        for y, by_a in result.hessians.items():
            for a, by_b in by_a.items():
                for b, h in by_b.items():
                    label = _hessian_labeller(result, y, a, b)
                    yield (y, f"{a},{b}"), f"∂²{y}/∂{a}∂{b}", h, label


def _hessian_labeller(result: HessianResult, y: str, a: str, b: str) -> Labeller:
    """`∂²y/∂x[0]∂x[1]` for an entry of H."""
    y_end = result.evaluation.outputs[y].ndim
    a_end = y_end + _input_ndim(result, a)
    return lambda index: (
        f"∂²{indexed(y, index[:y_end])}/∂{indexed(a, index[y_end:a_end])}"
        f"∂{indexed(b, index[a_end:])}"
    )


def _input_ndim(result: Result, name: str) -> int:
    return next(v.values.ndim for v in result.evaluation.inputs if v.name == name)


def _jacobian_labeller(result: JacobianResult, y: str, x: str) -> Labeller:
    """`∂y[1]/∂x[0]` for an entry of J; for a per-sample block, the indices in the full y and x."""
    y_ndim = result.evaluation.outputs[y].ndim
    if result.per_sample is None:
        return lambda index: f"∂{indexed(y, index[:y_ndim])}/∂{indexed(x, index[y_ndim:])}"
    input_axis, output_axis = result.per_sample[x]

    def label(index: tuple[int, ...]) -> str:
        sample, rest = index[0], list(index[1:])
        y_index = rest[: y_ndim - 1]
        x_index = rest[y_ndim - 1 :]
        y_index.insert(output_axis, sample)
        x_index.insert(input_axis, sample)
        return f"∂{indexed(y, y_index)}/∂{indexed(x, x_index)}"

    return label


def structural_nans(problem: Problem, result: JacobianResult) -> dict[tuple[str, str], np.ndarray]:
    """For each (output, wrt), the NaN entries of J at a finite output that are structurally
    zero (NOTE [a NaN that is a structural zero])."""
    outputs = result.evaluation.outputs
    candidates = {
        (y, x): ~np.isfinite(j) & _rows(np.isfinite(outputs[y]), j.ndim)
        for y, by_wrt in result.jacobians.items()
        for x, j in by_wrt.items()
    }
    columns = {
        x: sorted(
            {
                int(c)
                for (_, w), mask in candidates.items()
                if w == x
                for c in np.flatnonzero(_columns(mask, problem.inputs[x].ndim))
            }
        )
        for x in problem.wrt
    }
    if not any(columns.values()):
        return {}
    try:
        baseline = _outputs(problem, {})
    except ComputationError:
        return {}
    if any(not np.array_equal(baseline[y], outputs[y], equal_nan=True) for y in outputs):
        return {}  # the function does not give the same numbers twice: nothing can be told
    unchanged_by_all = _unchanged(problem, baseline, columns)
    found = {
        key: mask & _rows(unchanged_by_all[key[0]], mask.ndim) for key, mask in candidates.items()
    }
    singles = [(x, c) for x, cs in columns.items() for c in cs][:POISONED_COLUMNS]
    for x, column in singles:
        pending = [y for y in outputs if (candidates[(y, x)] & ~found[(y, x)]).any()]
        if not pending:
            continue
        unchanged = _unchanged(problem, baseline, {x: [column]})
        for y in pending:
            mask = np.zeros_like(candidates[(y, x)])
            flat = mask.reshape(outputs[y].size, -1)
            flat[:, column] = unchanged[y].reshape(-1)
            found[(y, x)] |= candidates[(y, x)] & mask
    return found


def _rows(mask_of_y: np.ndarray, ndim: int) -> np.ndarray:
    """A mask over y broadcast along the input axes of J."""
    return mask_of_y.reshape(mask_of_y.shape + (1,) * (ndim - mask_of_y.ndim))


def _columns(mask: np.ndarray, x_ndim: int) -> np.ndarray:
    """The flat input indices with any entry of the mask set."""
    x_size = math.prod(mask.shape[mask.ndim - x_ndim :])
    return mask.reshape(-1, x_size).any(axis=0)


def _outputs(problem: Problem, poisoned: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    outputs = evaluate(problem.function, {**problem.inputs, **poisoned})
    return {name: to_numpy(y) for name, y in outputs.items()}


def _unchanged(
    problem: Problem, baseline: dict[str, np.ndarray], columns: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """For each output, where it is finite and bit-identical with the given columns of the
    inputs set to NaN, and again to +Infinity; all False when the function fails."""
    unchanged = {y: np.isfinite(values) for y, values in baseline.items()}
    for poison in (math.nan, math.inf):
        poisoned = {}
        for x, cs in columns.items():
            if cs:
                tensor = problem.inputs[x].clone()
                tensor.view(-1)[cs] = poison
                poisoned[x] = tensor
        try:
            outputs = _outputs(problem, poisoned)
        except ComputationError:
            return {y: np.zeros_like(mask) for y, mask in unchanged.items()}
        for y, mask in unchanged.items():
            if outputs[y].shape != baseline[y].shape or outputs[y].dtype != baseline[y].dtype:
                mask[...] = False
            else:
                mask &= _bits(outputs[y]) == _bits(baseline[y])
    return unchanged


def _bits(values: np.ndarray) -> np.ndarray:
    """The numbers' bit patterns, to compare them exactly (−0.0 is not 0.0 here)."""
    values = np.array(values, order="C")
    return values.view(np.dtype(f"i{values.itemsize}"))
