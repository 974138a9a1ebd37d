"""A safe one-line expression language: `--expr "x.exp().sum(dim=1)"`.

The text is parsed with Python's `ast` and checked node by node against an allowlist before
anything runs; it is then evaluated by walking that tree. User text never reaches `eval` or
`exec`. Free names are the inputs; calls reach only the torch functions listed here, written as
functions (`exp(x)`) or as tensor methods (`x.exp()`), with literal keyword values.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from jaccli.errors import ComputationError, UsageError
from jaccli.functions.expression_axes import separable_axes
from jaccli.functions.expression_shapes import ShapeWalk
from jaccli.functions.model import AxisPair, Function, InputSpec
from jaccli.spec import Shape

MAX_LENGTH = 500
MAX_NODES = 300
MAX_LITERAL = 1e6
MAX_FOLDED = 1e12
"""Largest magnitude of a constant sub-expression such as `1e6 * 1e6`."""
MAX_EXPONENT = 64
MAX_INDEX = 1_000_000
KEYWORDS = frozenset({"dim", "keepdim", "p"})


# Every name an expression may call, as a function or a tensor method, and what it runs.
_SAME_NAME_IN_TORCH = (
    "exp log sin cos tan tanh sinh cosh sigmoid relu softmax log_softmax logsumexp sum mean "
    "prod norm sqrt abs cumsum square log1p expm1 erf outer dot matmul diag trace"
)
CALLS = {
    **{name: f"torch.{name}" for name in _SAME_NAME_IN_TORCH.split()},
    "max": "torch.amax",
    "min": "torch.amin",
    "softplus": "torch.nn.functional.softplus",
    "det": "torch.linalg.det",
}
ALLOWED_CALLS = tuple(CALLS)
UNTRUSTED_DERIVATIVES = frozenset({"det"})
"""Calls whose torch derivative is wrong at some points (Function.untrusted_derivative)."""


def _torch_functions() -> dict[str, Callable[..., Any]]:
    import importlib

    resolved = {}
    for name, path in CALLS.items():
        module, _, attribute = path.rpartition(".")
        resolved[name] = getattr(importlib.import_module(module), attribute)
    return resolved


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.MatMult: operator.matmul,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_DESCRIBED = {
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
    ast.IfExp: "if/else",
    ast.NamedExpr: "an assignment",
    ast.Await: "await",
    ast.Starred: "*unpacking",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.List: "a list",
}


def _reject(text: str, code: str = "bad_expression") -> UsageError:
    return UsageError(f"--expr: {text}", code=code)


def compile_expression(text: str) -> Function:
    """A Function evaluating `text`, after every piece of it is checked against the allowlist."""
    if len(text) > MAX_LENGTH:
        raise _reject(f"expression of {len(text)} characters is longer than {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise _reject(f"syntax error at column {error.offset}: {error.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise _reject(f"expression has {len(nodes)} parts, more than {MAX_NODES}")
    names: list[str] = []
    _check(tree.body, names)
    if not names:
        raise _reject("the expression has no input (a free name such as x)")
    body = tree.body

    def call(**inputs: Any) -> Any:
        return _evaluate(body, inputs, _torch_functions())

    def output_shape(shapes: Mapping[str, Shape]) -> Shape:
        shape = ShapeWalk(shapes).shape(body)
        if shape is None:
            raise _reject("the expression is a constant; it needs an input")
        return shape

    def intermediate_elements(shapes: Mapping[str, Shape]) -> int:
        walk = ShapeWalk(shapes)
        walk.shape(body)
        return walk.elements

    def separable(shapes: Mapping[str, Shape]) -> dict[str, tuple[AxisPair, ...]]:
        return separable_axes(body, shapes)

    return Function(
        name="expr",
        formula=f"y = {ast.unparse(body)}",
        inputs=tuple(InputSpec(name, default_shape=None) for name in names),
        call=call,
        output_shape=output_shape,
        intermediate_elements=intermediate_elements,
        separable_axes=separable,
        untrusted_derivative=any(
            isinstance(node, ast.Call) and _called_name(node) in UNTRUSTED_DERIVATIVES
            for node in nodes
        ),
    )


def _called_name(node: ast.Call) -> str | None:
    """The name of the function or method a checked call reaches (`det` of `det(x)`)."""
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _literal_number(node: ast.expr) -> float | int | None:
    """The value of a number literal, or of a negated one; None for anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _literal_number(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    return None


def _folded(node: ast.expr) -> float | None:
    """The value of a constant sub-expression (numbers, + - * / ** and unary minus), computed
    in floats and refused past MAX_FOLDED; None when the node involves an input."""
    if isinstance(node, ast.Constant):
        return float(node.value) if type(node.value) in (int, float) else None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        inner = _folded(node.operand)
        return None if inner is None else float(_UNARY[type(node.op)](inner))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _folded(node.left), _folded(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise _reject(f"exponent {right:g} is past the bound of {MAX_EXPONENT}")
        try:
            value = float(_BINARY[type(node.op)](left, right))
        except (ArithmeticError, ValueError, TypeError):
            raise _reject(f"the constant {ast.unparse(node)} cannot be computed") from None
        if not abs(value) <= MAX_FOLDED:  # also NaN and complex powers of negatives
            raise _reject(f"the constant {ast.unparse(node)} is past the bound of {MAX_FOLDED:g}")
        return value
    return None


def _check_literal(node: ast.Constant) -> None:
    value = node.value
    if isinstance(value, bool) or value is None:
        raise _reject(f"{value!r} is not allowed here; only numbers are")
    if isinstance(value, str | bytes):
        raise _reject(f"string literal {value!r} is not allowed")
    if isinstance(value, complex):
        raise _reject("complex numbers are not allowed")
    if not isinstance(value, int | float) or abs(value) > MAX_LITERAL:
        raise _reject(f"number {value!r} is past the bound of {MAX_LITERAL:g}")


def _check(node: ast.AST, names: list[str]) -> None:
    """Raise UsageError naming the first piece of `node` not on the allowlist."""
    if type(node) in _DESCRIBED:
        raise _reject(f"{_DESCRIBED[type(node)]} is not allowed")
    if isinstance(node, ast.Constant):
        _check_literal(node)
    elif isinstance(node, ast.Name):
        if node.id in ALLOWED_CALLS:
            raise _reject(f"{node.id!r} is a function: call it, as in {node.id}(x)")
        if node.id not in names:
            names.append(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise _reject(f"operator {type(node.op).__name__} is not allowed (use + - * / ** @)")
        _check(node.left, names)
        _check(node.right, names)
        if isinstance(node.op, ast.Pow):
            exponent = _folded(node.right)
            if exponent is not None and abs(exponent) > MAX_EXPONENT:
                raise _reject(f"exponent {exponent:g} is past the bound of {MAX_EXPONENT}")
        _folded(node)  # a constant sub-expression is computed here, within bounds
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise _reject(f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, names)
    elif isinstance(node, ast.Call):
        _check_call(node, names)
    elif isinstance(node, ast.Attribute):
        if node.attr != "T":
            raise _reject(f"attribute {node.attr!r} is not allowed (only .T and method calls)")
        _check(node.value, names)
    elif isinstance(node, ast.Subscript):
        _check(node.value, names)
        _check_index(node.slice)
    elif isinstance(node, ast.Tuple):
        raise _reject("a tuple is not allowed here")
    else:
        raise _reject(f"{type(node).__name__} is not allowed")


def _check_call(node: ast.Call, names: list[str]) -> None:
    name = _called_name(node)
    if name is None:
        raise _reject("only named functions and tensor methods can be called")
    receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
    if name not in ALLOWED_CALLS:
        raise _reject(
            f"{name!r} is not an allowed function or method (allowed: {', '.join(ALLOWED_CALLS)})",
            code="forbidden_name",
        )
    if receiver is not None:
        _check(receiver, names)
    for argument in node.args:
        _check(argument, names)
    for keyword in node.keywords:
        if keyword.arg is None:
            raise _reject("**keyword unpacking is not allowed")
        if keyword.arg not in KEYWORDS:
            raise _reject(
                f"keyword {keyword.arg!r} is not allowed (allowed: {', '.join(sorted(KEYWORDS))})"
            )
        if _literal_number(keyword.value) is None and not (
            isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool)
        ):
            raise _reject(f"keyword {keyword.arg}= takes a literal number or True/False")
        if keyword.arg == "dim" and not isinstance(_literal_number(keyword.value), int):
            raise _reject("keyword dim= takes a literal integer")
        if isinstance(keyword.value, ast.Constant):
            if not isinstance(keyword.value.value, bool):
                _check_literal(keyword.value)
        else:
            _check(keyword.value, names)


def _check_index(node: ast.AST) -> None:
    parts = node.elts if isinstance(node, ast.Tuple) else [node]
    for part in parts:
        if isinstance(part, ast.Slice):
            for bound in (part.lower, part.upper, part.step):
                if bound is not None:
                    _check_index_integer(bound)
        else:
            _check_index_integer(part)


def _check_index_integer(node: ast.AST) -> None:
    value = _literal_number(node) if isinstance(node, ast.expr) else None
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_INDEX:
        raise _reject("indices and slices take literal integers only")


def _evaluate(
    node: ast.expr, inputs: dict[str, Any], functions: dict[str, Callable[..., Any]]
) -> Any:
    """Evaluate a checked tree: names are inputs, calls are the allowlisted torch functions."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return inputs[node.id]
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, inputs, functions)
        right = _evaluate(node.right, inputs, functions)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, inputs, functions))
    if isinstance(node, ast.Attribute):  # .T, the only attribute the check lets through
        return _tensor(_evaluate(node.value, inputs, functions), ".T").T
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, inputs, functions)[_index(node.slice)]
    if isinstance(node, ast.Call):
        args = [_evaluate(a, inputs, functions) for a in node.args]
        if isinstance(node.func, ast.Attribute):
            name = node.func.attr
            args.insert(0, _tensor(_evaluate(node.func.value, inputs, functions), f".{name}()"))
        else:
            assert isinstance(node.func, ast.Name)
            name = node.func.id
        keywords = {k.arg: _keyword_value(k.value) for k in node.keywords}
        return functions[name](*args, **keywords)
    raise AssertionError(f"unchecked node {type(node).__name__}")


def _keyword_value(node: ast.expr) -> Any:
    """The literal of a checked keyword: True/False or a (possibly negated) number."""
    if isinstance(node, ast.Constant):
        return node.value
    return _literal_number(node)


def _tensor(value: Any, where: str) -> Any:
    import torch

    if not isinstance(value, torch.Tensor):
        raise ComputationError(f"{where} needs a tensor, got {type(value).__name__}")
    return value


def _index(node: ast.AST) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_index(part) for part in node.elts)
    if isinstance(node, ast.Slice):
        bounds = (node.lower, node.upper, node.step)
        return slice(*(None if b is None else _literal_number(b) for b in bounds))
    return _literal_number(node)  # type: ignore[arg-type]
