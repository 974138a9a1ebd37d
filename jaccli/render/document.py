"""The JSON documents (schema/document-2.schema.json): one per run, always valid JSON."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from jaccli.functions.model import Function
from jaccli.messages import format_bytes
from jaccli.render.labels import entry_label
from jaccli.render.numbers import json_values
from jaccli.result import (
    Check,
    Determinant,
    Evaluation,
    FunctionReference,
    Guard,
    HessianResult,
    HvpResult,
    JacobianResult,
    JvpResult,
    Plan,
    PlanReport,
    PointsPlan,
    Result,
    SparseHessianResult,
    SparseJacobianResult,
    Structure,
    View,
    VjpResult,
    computed_arrays,
    direction_arrays,
)

if TYPE_CHECKING:
    from scipy.sparse import csr_array

    from jaccli.blocks.plan import StorePlan

SCHEMA_VERSION = 2
"""Bumped when an existing key changes meaning; the JSON Schemas in schema/ describe it."""


class _Deferred:
    """An array whose JSON values are not written yet (`values_deferred`)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


_deferring = False


@contextlib.contextmanager
def values_deferred() -> Iterator[None]:
    """Documents made inside leave each array's values as the array itself, for
    `stacked_document` to write once for every point: ten thousand points' small arrays,
    written one by one, cost a hundred times the computation (polar, 10,000 points)."""
    global _deferring
    before, _deferring = _deferring, True
    try:
        yield
    finally:
        _deferring = before


def tensor_entry(array: np.ndarray) -> dict[str, Any]:
    """`{"shape": [...], "values": [...]}` for one array."""
    if _deferring:
        array = np.asarray(array)
        return {"shape": list(array.shape), "values": _Deferred(array)}
    return {"shape": list(array.shape), "values": json_values(array)}


def _written(tree: Any) -> Any:
    """`tree` with every deferred array's values written."""
    if isinstance(tree, _Deferred):
        return json_values(tree.array)
    if isinstance(tree, dict):
        return {key: _written(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_written(value) for value in tree]
    return tree


def _stacked_values(values: list[Any]) -> Any:
    """The values of one array at every point: the points' arrays stacked and written at once
    when deferred (each number is written as alone: json_values works entry by entry)."""
    if all(isinstance(v, _Deferred) for v in values):
        arrays = [v.array for v in values]
        first = arrays[0]
        if all(a.shape == first.shape and a.dtype == first.dtype for a in arrays):
            return json_values(np.stack(arrays))
    return [_written(v) for v in values]


def structure_document(structure: Structure) -> dict[str, Any]:
    """The structure of J as a matrix (rows = outputs, columns = inputs), for --view pictures."""
    blocks = structure.blocks
    return {
        "rows": structure.rows,
        "columns": structure.columns,
        "nonzeros": structure.nonzeros,
        "density": structure.density,
        "lower_bandwidth": structure.lower_bandwidth,
        "upper_bandwidth": structure.upper_bandwidth,
        "form": structure.form,
        "diagonal": structure.diagonal,
        "triangular": structure.triangular,
        "block_diagonal": None
        if blocks is None
        else {
            "count": blocks.count,
            "row_sizes": list(blocks.row_sizes),
            "column_sizes": list(blocks.column_sizes),
            "axis": blocks.axis,
            "hint": blocks.hint,
        },
        "rank": structure.rank,
        "rank_tolerance": structure.rank_tolerance,
        "rank_skipped": structure.rank_skipped,
    }


def evaluation_entry(command: str, evaluation: Evaluation, notes: Iterable[str]) -> dict[str, Any]:
    """What every computing command's document starts with: the function, the point (inputs
    and outputs, each keyed by name), what was differentiated, and the warnings."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "function": {"name": evaluation.function_name, "formula": evaluation.formula},
        "dtype": evaluation.dtype,
        "wrt": list(evaluation.wrt),
        "inputs": {
            value.name: {
                **tensor_entry(value.values),
                "dtype": str(value.values.dtype),
                "differentiated": value.differentiated,
                "constant": not value.differentiable,
            }
            for value in evaluation.inputs
        },
        "outputs": {name: tensor_entry(output) for name, output in evaluation.outputs.items()},
        "warnings": list(notes),
    }


def guard_entry(guard: Guard | None) -> dict[str, Any] | None:
    """The correctness guard's verdict: both probes, the tolerance, and the methods it rejected."""
    if guard is None:
        return None
    return {
        "passed": guard.passed,
        "method": guard.method,
        "reference": guard.reference,
        "value": _number(guard.value),
        "reference_value": None if guard.skipped else _number(guard.reference_value),
        "tolerance": None if guard.skipped else _number(guard.tolerance),
        "rows_probed": guard.rows_probed,
        "rejected": list(guard.rejected),
        "skipped": guard.skipped,
        "function_reference": function_reference_entry(guard.function_reference),
    }


def function_reference_entry(reference: FunctionReference | None) -> dict[str, Any] | None:
    """The result against the function's own central differences (NOTE [the function as the
    reference])."""
    if reference is None:
        return None
    skipped = reference.skipped is not None
    return {
        "passed": reference.passed,
        "quantity": reference.quantity,
        "value": _number(reference.value),
        "difference": None if skipped else _number(reference.difference),
        "estimated_error": None if skipped else _number(reference.estimated_error),
        "tolerance": None if skipped else _number(reference.tolerance),
        "step": None if skipped else _number(reference.step),
        "skipped": reference.skipped,
        "off_point": reference.off_point,
    }


def _number(value: float) -> float | str:
    """One number as json_values writes a float64 (-0.0 as 0, NaN and ±Infinity spelt)."""
    number = float(value)
    if math.isfinite(number):
        return number + 0.0
    return "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")


def view_entry(view: View) -> dict[str, Any]:
    """`{"wrt", "name", "axis", "output_axis", ..., "slices": [...]}` of a per-slice view."""
    slices = []
    for row in view.slices:
        entry: dict[str, Any] = {
            "index": row.index,
            "input": tensor_entry(row.input_slice),
            "output": tensor_entry(row.output_slice),
            "jacobian": tensor_entry(row.jacobian),
        }
        if row.vector is not None:
            entry["cotangent" if view.product == "vjp" else "tangent"] = tensor_entry(row.vector)
        entry |= {
            "product": tensor_entry(row.product),
            "full": tensor_entry(row.full_slice),
            "max_difference": _number(row.max_difference),
            "agrees": row.agrees,
        }
        slices.append(entry)
    return {
        "wrt": view.wrt,
        "output": view.output,
        "name": view.name,
        "axis": view.input_axis,
        "output_axis": view.output_axis,
        "rtol": view.rtol,
        "atol": view.atol,
        "agrees": view.agrees,
        "slices": slices,
    }


def check_entry(check: Check) -> dict[str, Any]:
    """`{"passed", "comparisons": [...]}`: what was compared, tolerances, largest errors, where."""
    return {
        "passed": check.passed,
        "comparisons": [
            {
                "name": c.name,
                "reference": c.reference,
                "rtol": c.rtol,
                "atol": c.atol,
                "step": c.step,
                "max_abs_error": None if c.skipped else _number(c.max_abs_error),
                "max_rel_error": None if c.skipped else _number(c.max_rel_error),
                "largest_error_entry": None
                if c.largest_error_entry is None
                else entry_label(c.largest_error_entry),
                "worst_entries": [
                    {
                        "entry": entry_label(e),
                        "output": e.output,
                        "wrt": e.wrt,
                        "output_index": None if e.output_index is None else list(e.output_index),
                        "input_index": list(e.input_index),
                        "value": _number(e.value),
                        "reference": _number(e.reference),
                        "abs_error": _number(e.abs_error),
                        "rel_error": _number(e.rel_error),
                    }
                    for e in c.worst_entries
                ],
                "passed": c.passed,
                "skipped": c.skipped,
            }
            for c in check.comparisons
        ],
    }


def _view_and_check(result: Result) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if result.view is not None:
        extra["view"] = view_entry(result.view)
    if result.check is not None:
        extra["check"] = check_entry(result.check)
    return extra


def jacobian_document(result: JacobianResult) -> dict[str, Any]:
    """The `jacobian` command's document (or `det`'s, with det J): J keyed by output, then
    input, and the strategy."""
    per_sample = result.per_sample
    command = "jacobian" if result.determinant is None else "det"
    return {
        **evaluation_entry(command, result.evaluation, result.notes),
        "layout": "dense" if per_sample is None else "per-sample",
        "jacobian": {
            output: {
                wrt: tensor_entry(j)
                if per_sample is None
                else {
                    **tensor_entry(j),
                    "axis": per_sample[wrt][0],
                    "output_axis": per_sample[wrt][1],
                }
                for wrt, j in by_wrt.items()
            }
            for output, by_wrt in result.jacobians.items()
        },
        "strategy": result.strategy,
        "strategy_reason": result.strategy_reason,
        "guard": guard_entry(result.guard),
        **_view_and_check(result),
        **({} if result.determinant is None else {"det": determinant_entry(result.determinant)}),
    }


def determinant_entry(det: Determinant) -> dict[str, Any]:
    """`{"wrt", "size", "sign", "logabsdet", "det", "trace", "condition", "singular"}`: scalars,
    or (B,) per sample."""
    return {
        "wrt": list(det.wrt),
        "size": det.size,
        "sign": tensor_entry(det.sign),
        "logabsdet": tensor_entry(det.logabsdet),
        "det": tensor_entry(det.det),
        "trace": tensor_entry(det.trace),
        "condition": tensor_entry(det.condition),
        "singular": {"shape": list(det.singular.shape), "values": det.singular.tolist()},
    }


def check_document(result: JacobianResult) -> dict[str, Any]:
    """The `check` command's document: the point, the strategy and the check (not J itself)."""
    assert result.check is not None
    return {
        **evaluation_entry("check", result.evaluation, result.notes),
        "strategy": result.strategy,
        "guard": guard_entry(result.guard),
        "check": check_entry(result.check),
    }


def vjp_document(result: VjpResult) -> dict[str, Any]:
    """The `vjp` command's document: the cotangent keyed by output, vᵀ·J keyed by input."""
    return {
        **evaluation_entry("vjp", result.evaluation, result.notes),
        "cotangent": {name: tensor_entry(v) for name, v in result.cotangents.items()},
        "vjp": {name: tensor_entry(v) for name, v in result.vjps.items()},
        "guard": guard_entry(result.guard),
        **_view_and_check(result),
    }


def jvp_document(result: JvpResult) -> dict[str, Any]:
    """The `jvp` command's document: the tangent keyed by input, J·v keyed by output."""
    return {
        **evaluation_entry("jvp", result.evaluation, result.notes),
        "tangent": {name: tensor_entry(v) for name, v in result.tangents.items()},
        "jvp": {name: tensor_entry(v) for name, v in result.jvps.items()},
        "method": result.method,
        "method_reason": result.method_reason,
        "guard": guard_entry(result.guard),
        **_view_and_check(result),
    }


def hessian_document(result: HessianResult) -> dict[str, Any]:
    """The `hessian` command's document: H keyed by output, then input, then input."""
    return {
        **evaluation_entry("hessian", result.evaluation, result.notes),
        "hessian": {
            y: {a: {b: tensor_entry(h) for b, h in by_b.items()} for a, by_b in by_a.items()}
            for y, by_a in result.hessians.items()
        },
        "symmetry_error": _number(result.symmetry_error),
        "strategy": result.strategy,
        "strategy_reason": result.strategy_reason,
        "guard": guard_entry(result.guard),
        **_view_and_check(result),
    }


def hvp_document(result: HvpResult) -> dict[str, Any]:
    """The `hvp` command's document: the vector and H·v, each keyed by input."""
    return {
        **evaluation_entry("hvp", result.evaluation, result.notes),
        "vector": {name: tensor_entry(v) for name, v in result.vectors.items()},
        "hvp": {name: tensor_entry(v) for name, v in result.hvps.items()},
        "method": result.method,
        "method_reason": result.method_reason,
        "guard": guard_entry(result.guard),
        **_view_and_check(result),
    }


def document_numbers(result: Result, *, jacobians: bool = True) -> int:
    """How many numbers the result's JSON document holds: its arrays and view slices (and J,
    unless `jacobians` is False, as in the check command's document)."""
    if isinstance(result, (SparseJacobianResult, SparseHessianResult)):
        return sparse_document_numbers(result)
    evaluation = result.evaluation
    arrays = [v.values for v in evaluation.inputs] + list(evaluation.outputs.values())
    arrays += direction_arrays(result)
    if jacobians or not isinstance(result, JacobianResult):
        arrays += computed_arrays(result)
    if isinstance(result, JacobianResult) and result.determinant is not None:
        det = result.determinant
        arrays += [det.sign, det.logabsdet, det.det, det.trace, det.condition, det.singular]
    if result.view is not None:
        for row in result.view.slices:
            arrays += [row.input_slice, row.output_slice, row.jacobian, row.product, row.full_slice]
            arrays += [] if row.vector is None else [row.vector]
    return sum(int(np.asarray(a).size) for a in arrays)


def presets_document(functions: Iterable[tuple[Function, bool]]) -> dict[str, Any]:
    """Every preset with its formula, its inputs, and whether its J is square."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "presets",
        "presets": [
            {
                "name": function.name,
                "formula": function.formula,
                "jacobian_formula": " ".join(function.jacobian_formula.split()),
                "square_jacobian": square,
                "inputs": [
                    {
                        "name": spec.name,
                        "default_shape": list(spec.default_shape),
                        "differentiable": spec.differentiable,
                        "shape_like": spec.shape_like,
                        "derived_shape": None
                        if spec.derived_shape is None
                        else f"{spec.derived_shape.shape}, {spec.derived_shape.symbols}",
                    }
                    for spec in function.inputs
                ],
            }
            for function, square in functions
        ],
    }


def point_document(index: int, document: dict[str, Any]) -> dict[str, Any]:
    """One line of --jsonl: the point's own document, headed by its index."""
    return {"point": index, **document}


def point_error_document(index: int, code: str, message: str) -> dict[str, Any]:
    """The line of a point that failed: `{"point": k, "error": {"code", "message"}}`."""
    return {"point": index, **error_document(code, message)}


SHARED_BY_POINTS = ("cotangent", "tangent", "vector")
"""Keys whose arrays every point shares (the direction of a product)."""


def stacked_document(documents: list[dict[str, Any]], varying: Iterable[str]) -> dict[str, Any]:
    """The documents of N points as one: every array that varies by point (those of the
    `varying` inputs, the outputs and results) gains a leading point axis of N; the shared
    inputs, the directions and everything else are the first point's; `points` says N."""
    varying = set(varying)

    def stacked(parts: list[Any], path: tuple[str, ...]) -> Any:
        first = parts[0]
        shared = path[:1] in {(key,) for key in SHARED_BY_POINTS} or (
            len(path) == 2 and path[0] == "inputs" and path[1] not in varying
        )
        if shared or not all(isinstance(p, dict) for p in parts):  # a guard's entry may be null
            return _written(first)
        if first.get("format") == "coo":
            return _stacked_coo([_written(p) for p in parts])
        if {"shape", "values"} <= set(first):
            return {
                **_written({key: v for key, v in first.items() if key != "values"}),
                "shape": [len(parts), *first["shape"]],
                "values": _stacked_values([p["values"] for p in parts]),
            }
        return {key: stacked([p[key] for p in parts], (*path, key)) for key in first}

    return {**stacked(documents, ()), "points": len(documents)}


def _stacked_coo(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """COO blocks of N points as one over the union of their entries: a pattern traced again
    where it depends on the values differs by point, and one point's values read at another's
    indices would be numbers of other entries. An entry outside a point's pattern is 0 there
    (its derivative is structurally zero)."""
    first = parts[0]
    if all(p["indices"] == first["indices"] for p in parts):
        union = first["indices"]
        values = [p["values"] for p in parts]
    else:
        entries = sorted({pair for p in parts for pair in zip(*p["indices"], strict=True)})
        where = {pair: k for k, pair in enumerate(entries)}
        union = [[r for r, _ in entries], [c for _, c in entries]]
        values = []
        for p in parts:
            row: list[Any] = [0.0] * len(entries)
            for pair, value in zip(zip(*p["indices"], strict=True), p["values"], strict=True):
                row[where[pair]] = value
            values.append(row)
    return {**first, "shape": [len(parts), *first["shape"]], "indices": union, "values": values}


def error_document(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def dumps(document: dict[str, Any], *, ensure_ascii: bool = False) -> str:
    """The document as one line of strict JSON (no bare NaN or Infinity)."""
    return json.dumps(document, allow_nan=False, ensure_ascii=ensure_ascii)


LARGE_RESULT = 64 * 1024**2
"""Past this size, a dense J with diagonal blocks earns a suggestion of --batched."""


def batched_hint(report: PlanReport) -> list[str]:
    """A suggestion of --batched when the dense J is large and has diagonal blocks, in lines
    that fit 60 columns (none when it does not apply)."""
    per_sample = report.per_sample
    if report.batched or per_sample is None or per_sample.refused:
        return []
    if report.plan.result_bytes < LARGE_RESULT:
        return []
    return [
        "J is block-diagonal: --batched keeps only its blocks",
        f"({format_bytes(per_sample.result_bytes)} instead of "
        f"{format_bytes(report.plan.result_bytes)})",
    ]


def _plan_entry(plan: Plan) -> dict[str, Any]:
    return {
        "method": plan.method,
        "reason": plan.reason,
        "outputs": plan.n_out,
        "inputs": plan.n_in,
        "result_bytes": plan.result_bytes,
        "peak_bytes": plan.peak_bytes,
        "budget_bytes": plan.budget,
        "chunk_size": plan.chunk_size,
        "refused": plan.refused,
    }


def _points_entry(points: PointsPlan) -> dict[str, Any]:
    return {
        "count": points.count,
        "chunk_size": points.chunk_size,
        "per_point_bytes": points.per_point_bytes,
        "peak_bytes": points.peak_bytes,
        "budget_bytes": points.budget,
        "method": points.method,
        "refused": points.refused,
    }


def _store_entry(store: StorePlan) -> dict[str, Any]:
    blocks = store.blocks
    return {
        "kind": blocks.kind,
        "count": blocks.count,
        "size": blocks.size,
        "shape": list(blocks.shape),
        "block_bytes": blocks.block_bytes,
        "peak_bytes": blocks.peak_bytes,
        "budget_bytes": blocks.budget,
        "store_bytes": blocks.store_bytes,
        "workers": store.workers,
        "cluster": store.cluster,
        "refused": blocks.refused,
    }


def plan_document(
    report: PlanReport, command: str = "jacobian", store: StorePlan | None = None
) -> dict[str, Any]:
    """`{"command": "jacobian", "plan": {...}}`: the same facts for scripts."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "function": {"name": report.function_name, "formula": report.formula},
        "dtype": report.dtype,
        "wrt": list(report.wrt),
        "inputs": {name: {"shape": list(shape)} for name, shape in report.input_shapes.items()},
        "outputs": {name: {"shape": list(shape)} for name, shape in report.output_shapes.items()},
        "output_unknown": report.output_unknown,
        "layout": "sparse" if report.sparse else "per-sample" if report.batched else "dense",
        **({} if report.points is None else {"points": _points_entry(report.points)}),
        **({} if report.sparse is None else {"sparse": _sparse_plan_entry(report)}),
        **({} if store is None else {"store": _store_entry(store)}),
        "plan": {
            **_plan_entry(report.plan),
            "per_sample": None if report.per_sample is None else _plan_entry(report.per_sample),
            "suggestion": " ".join(batched_hint(report)) or None,
        },
    }


def _sparse_plan_entry(report: PlanReport) -> dict[str, Any]:
    """What --plan --sparse found: the pattern's non-zeros, the colouring and its passes."""
    sparse = report.sparse
    assert sparse is not None
    return {
        "nonzeros": sparse.nonzeros,
        "colouring": _colouring_entry(sparse.mode, sparse.colours, sparse.colouring),
        "passes": sparse.colours,
        "other_mode_colours": sparse.other_colours,
        "notes": list(report.notes),
    }


# Sparse results (--sparse): each block as {"format": "coo", "shape", "indices", "values"}.


def sparse_block(matrix: csr_array) -> dict[str, Any]:
    """`{"format": "coo", "shape": [m, n], "indices": [[rows…], [columns…]], "values": […]}`,
    entries row by row."""
    coo = matrix.tocoo()
    return {
        "format": "coo",
        "shape": [int(matrix.shape[0]), int(matrix.shape[1])],
        "indices": [coo.row.tolist(), coo.col.tolist()],
        "values": json_values(coo.data),
    }


def _colouring_entry(mode: str, colours: int, method: str) -> dict[str, Any]:
    return {"mode": mode, "colours": colours, "method": method}


def sparse_jacobian_document(result: SparseJacobianResult) -> dict[str, Any]:
    """The `jacobian --sparse` document (`det` with det J): each block of J, by output then
    input, as a COO block of (output elements × input elements)."""
    command = "jacobian" if result.determinant is None else "det"
    document = {
        **evaluation_entry(command, result.evaluation, result.notes),
        "layout": "sparse",
        "jacobian": {
            output: {wrt: sparse_block(block) for wrt, block in by_wrt.items()}
            for output, by_wrt in result.blocks().items()
        },
        "colouring": _colouring_entry(result.mode, result.colours, result.colouring),
        "strategy": result.strategy,
        "strategy_reason": result.strategy_reason,
        "guard": guard_entry(result.guard),
    }
    if result.determinant is not None:
        document["det"] = determinant_entry(result.determinant)
    if result.check is not None:
        document["check"] = check_entry(result.check)
    return document


def sparse_hessian_document(result: SparseHessianResult) -> dict[str, Any]:
    """The `hessian --sparse` document: H by output, then input, then input, each block a COO
    block of (a elements × b elements)."""
    return {
        **evaluation_entry("hessian", result.evaluation, result.notes),
        "layout": "sparse",
        "hessian": {
            y: {a: {b: sparse_block(h) for b, h in by_b.items()} for a, by_b in by_a.items()}
            for y, by_a in result.blocks().items()
        },
        "colouring": _colouring_entry("hvp", result.colours, result.colouring),
        "symmetry_error": json_values(np.asarray(result.symmetry_error, dtype=np.float64)),
        "strategy": result.strategy,
        "strategy_reason": result.strategy_reason,
        "guard": guard_entry(result.guard),
        **({} if result.check is None else {"check": check_entry(result.check)}),
    }


def sparse_document_numbers(result: SparseJacobianResult | SparseHessianResult) -> int:
    """How many numbers the document holds: the inputs and outputs, and three a non-zero
    (its row, column and value)."""
    evaluation = result.evaluation
    dense = sum(v.values.size for v in evaluation.inputs)
    dense += sum(y.size for y in evaluation.outputs.values())
    return int(dense + 3 * result.matrix.nnz)
