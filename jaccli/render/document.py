"""The JSON documents of DESIGN.md: one per run, always valid JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from jaccli.functions.model import Function
from jaccli.render.numbers import json_values
from jaccli.result import Evaluation, JacobianResult, VjpResult

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
        "output": tensor_entry(evaluation.output),
    }


def jacobian_document(result: JacobianResult) -> dict[str, Any]:
    """The `jacobian` command's document: J keyed by input, and the strategy used."""
    return {
        **_evaluation("jacobian", result.evaluation),
        "jacobian": {name: tensor_entry(j) for name, j in result.jacobians.items()},
        "strategy": result.strategy,
        "strategy_reason": result.strategy_reason,
    }


def vjp_document(result: VjpResult) -> dict[str, Any]:
    """The `vjp` command's document: the cotangent and vᵀ·J keyed by input."""
    return {
        **_evaluation("vjp", result.evaluation),
        "cotangent": tensor_entry(result.cotangent),
        "vjp": {name: tensor_entry(v) for name, v in result.vjps.items()},
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
