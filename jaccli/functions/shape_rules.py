"""Shape arithmetic shared by the presets' shape rules and the expression shape walk.

Each function answers None where the shapes cannot work together; the caller names the clash
in its own words.
"""

from __future__ import annotations

from jaccli.spec import Shape


def broadcast(left: Shape, right: Shape) -> Shape | None:
    """numpy's (and torch's) broadcasting of two shapes; None when they clash."""
    result = []
    for i in range(1, max(len(left), len(right)) + 1):
        a = left[-i] if i <= len(left) else 1
        b = right[-i] if i <= len(right) else 1
        if a != b and 1 not in (a, b):
            return None
        result.append(max(a, b))
    return tuple(reversed(result))


def matmul_inner(right: Shape) -> int:
    """The dimension of `right` that `left @ right` contracts with left's last one."""
    return right[-2] if len(right) >= 2 else right[0]


def matmul(left: Shape, right: Shape) -> Shape | None:
    """torch.matmul's result shape for tensors of at least one dimension whose contracted
    dimensions agree; None when the batch dimensions clash."""
    if len(left) == 1 and len(right) == 1:
        return ()
    if len(left) == 1:
        return (*right[:-2], right[-1])
    if len(right) == 1:
        return left[:-1]
    batch = broadcast(left[:-2], right[:-2])
    return None if batch is None else (*batch, left[-2], right[-1])
