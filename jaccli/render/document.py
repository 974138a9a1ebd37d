"""The JSON documents of DESIGN.md: one per run, always valid JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from jaccli.functions.model import Function
from jaccli.render.labels import entry_label
from jaccli.render.numbers import json_values
from jaccli.result import Check, Evaluation, JacobianResult, View, VjpResult

SCHEMA_VERSION = 1


def tensor_entry(array: np.ndarray) -> dict[str, Any]:
    """`{"shape": [...], "values": [...]}` for one array."""
    return {"shape": list(array.shape), "values": json_values(array)}


def _evaluation(command: str, evaluation: Evaluation) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "function": {"name": evaluation.function_name, "formula": evaluation.formula},
        "dtype": evaluation.dtype,
        "inputs": {
            value.name: {**tensor_entry(value.values), "differentiable": value.differentiable}
            for value in evaluation.inputs
        },
        **_by_output("output", {n: tensor_entry(o) for n, o in evaluation.outputs.items()}),
    }


def _by_output(key: str, entries: dict[str, Any]) -> dict[str, Any]:
    """`{key: entry}` for a single output (the form of DESIGN.md); `{key + "s": {name: entry}}`
    for several outputs, keyed by output name."""
    if len(entries) == 1:
        return {key: next(iter(entries.values()))}
    return {f"{key}s": entries}


def _number(value: float) -> float | str:
    return json_values(np.asarray(value, dtype=np.float64))  # type: ignore[return-value]


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
        if row.cotangent is not None:
            entry["cotangent"] = tensor_entry(row.cotangent)
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


def _view_and_check(result: JacobianResult | VjpResult) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if result.notes:
        extra["warnings"] = list(result.notes)
    if result.view is not None:
        extra["view"] = view_entry(result.view)
    if result.check is not None:
        extra["check"] = check_entry(result.check)
    return extra


def jacobian_document(result: JacobianResult, command: str = "jacobian") -> dict[str, Any]:
    """The `jacobian` command's document: J keyed by input, and the strategy used."""
    if result.per_sample is not None:
        (by_wrt,) = result.jacobians.values()
        return {
            **_evaluation(command, result.evaluation),
            "layout": "per-sample",
            "jacobian": {
                wrt: {
                    **tensor_entry(blocks),
                    "axis": result.per_sample[wrt][0],
                    "output_axis": result.per_sample[wrt][1],
                }
                for wrt, blocks in by_wrt.items()
            },
            "strategy": result.strategy,
            "strategy_reason": result.strategy_reason,
        }
    return {
        **_evaluation(command, result.evaluation),
        "layout": "dense",
        **_by_output(
            "jacobian",
            {
                output: {wrt: tensor_entry(j) for wrt, j in by_wrt.items()}
                for output, by_wrt in result.jacobians.items()
            },
        ),
        "strategy": result.strategy,
        "strategy_reason": result.strategy_reason,
        **_view_and_check(result),
    }


def check_document(result: JacobianResult) -> dict[str, Any]:
    """The `check` command's document: the point, the strategy and the check (not J itself)."""
    assert result.check is not None
    return {
        **_evaluation("check", result.evaluation),
        "strategy": result.strategy,
        "check": check_entry(result.check),
    }


def vjp_document(result: VjpResult) -> dict[str, Any]:
    """The `vjp` command's document: the cotangent and vᵀ·J keyed by input."""
    return {
        **_evaluation("vjp", result.evaluation),
        **_by_output("cotangent", {n: tensor_entry(v) for n, v in result.cotangents.items()}),
        "vjp": {name: tensor_entry(v) for name, v in result.vjps.items()},
        **_view_and_check(result),
    }


def presets_document(functions: Iterable[Function]) -> dict[str, Any]:
    """Every preset with its formula and inputs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "presets",
        "presets": [
            {
                "name": function.name,
                "formula": function.formula,
                "inputs": [
                    {
                        "name": spec.name,
                        "default_shape": list(spec.default_shape),
                        "differentiable": spec.differentiable,
                        "shape_like": spec.shape_like,
                    }
                    for spec in function.inputs
                ],
            }
            for function in functions
        ],
    }


def error_document(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def dumps(document: dict[str, Any]) -> str:
    """The document as one line of strict JSON (no bare NaN or Infinity)."""
    return json.dumps(document, allow_nan=False, ensure_ascii=False)
