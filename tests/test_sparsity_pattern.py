"""Sparsity pattern detection against dense Jacobians: the pattern found by tracing one call
holds every non-zero of J (by torch.autograd, float64) at several random points, and equals
their union where every rule is exact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st

from jaccli.engine.evaluate import call_function
from jaccli.engine.problem import Problem, prepare
from jaccli.engine.sparse.call import Call, Found
from jaccli.engine.sparse.moves import move
from jaccli.engine.sparse.pattern import SparsityPattern, detect_pattern, hessian_pattern
from jaccli.errors import ResourceError, UsageError
from jaccli.functions.model import Function, InputSpec

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

POINTS = 3
"""Random points J is computed at, for each function."""


@dataclass(frozen=True)
class Case:
    """A function of named inputs, their shapes, and what its pattern should be."""

    name: str
    call: Callable[..., Any]
    shapes: dict[str, tuple[int, ...]]
    equal: bool = True
    """The pattern equals the union of J's non-zeros over the points (else: contains it)."""
    exact: bool = True
    value_dependent: bool = False
    wrt: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    """Text each of which some note must contain."""


def problem_of(case: Case, seed: int) -> Problem:
    function = Function(  # the user's own code: a guest, given fresh copies of its inputs
        case.name,
        case.name,
        tuple(InputSpec(n, s) for n, s in case.shapes.items()),
        case.call,
        may_break_graph=True,
    )
    return prepare(function, wrt=case.wrt, seed=seed, dtype="float64")


def dense_jacobian(problem: Problem) -> np.ndarray:
    """J as one matrix (outputs flattened × wrt inputs flattened), by torch.autograd."""
    fixed = {n: t for n, t in problem.inputs.items() if n not in problem.wrt}

    def flat(*xs: torch.Tensor) -> torch.Tensor:
        inputs = {**fixed, **dict(zip(problem.wrt, xs, strict=True))}
        outputs = call_function(problem.function, inputs)
        return torch.cat([outputs[name].reshape(-1) for name in problem.output_shapes])

    primals = tuple(problem.inputs[n] for n in problem.wrt)
    blocks = torch.autograd.functional.jacobian(flat, primals)
    m = problem.output_count
    return torch.cat([b.reshape(m, -1) for b in blocks], dim=1).numpy()


def check(case: Case) -> SparsityPattern:
    """The pattern at the first point contains J's non-zeros at every point (at the first
    only for a value-dependent one), and equals their union where the case says so."""
    pattern = detect_pattern(problem_of(case, 0))
    found = pattern.matrix.toarray()
    seen = np.zeros_like(found)
    for seed in range(1 if case.value_dependent else POINTS):
        nonzero = dense_jacobian(problem_of(case, seed)) != 0
        missed = np.argwhere(nonzero & ~found)
        assert not len(missed), (
            f"{case.name}: J is non-zero at {missed[:5].tolist()}, not in the pattern"
        )
        seen |= nonzero
    if case.equal:
        extra = np.argwhere(found & ~seen)
        assert not len(extra), f"{case.name}: the pattern holds {extra[:5].tolist()}, zero in J"
    assert pattern.exact == case.exact, pattern.notes
    assert pattern.value_dependent == case.value_dependent, pattern.notes
    for text in case.notes:
        assert any(text in note for note in pattern.notes), pattern.notes
    return pattern


# The functions.


def burgers(u: torch.Tensor) -> torch.Tensor:
    dx = 0.1
    return u[1:-1] * (u[2:] - u[:-2]) / (2 * dx) - (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2


def laplacian_2d(u: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian at the interior points of a grid."""
    return u[1:-1, 2:] + u[1:-1, :-2] + u[2:, 1:-1] + u[:-2, 1:-1] - 4 * u[1:-1, 1:-1]


def periodic_laplacian(u: torch.Tensor) -> torch.Tensor:
    rolled = (u.roll(s, d) for s in (1, -1) for d in (0, 1))
    return sum(rolled) - 4 * u


def reaction_diffusion(u: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gray–Scott on a periodic grid: two fields in, two residuals out."""
    feed, kill = 0.04, 0.06
    return {
        "fu": 0.2 * periodic_laplacian(u) - u * v**2 + feed * (1 - u),
        "fv": 0.1 * periodic_laplacian(v) + u * v**2 - (feed + kill) * v,
    }


def stencil_3d(u: torch.Tensor) -> torch.Tensor:
    centre = u[1:-1, 1:-1, 1:-1]
    neighbours = (
        u[2:, 1:-1, 1:-1] + u[:-2, 1:-1, 1:-1] + u[1:-1, 2:, 1:-1]
        + u[1:-1, :-2, 1:-1] + u[1:-1, 1:-1, 2:] + u[1:-1, 1:-1, :-2]
    )  # fmt: skip
    return neighbours - 6 * centre + centre**3


def in_place_residual(u: torch.Tensor) -> torch.Tensor:
    """A residual written into a buffer slice by slice, with in-place updates."""
    out = torch.zeros_like(u)
    out[1:-1] = u[2:] - u[:-2]
    out[0] += u[0] * u[1]
    out.mul_(2.0)
    out[-1] = u[-1].exp()
    out[2:4] += out[0]
    return out


def mutates_its_input(x: torch.Tensor) -> torch.Tensor:
    x.add_(x.roll(1))
    x[2:].mul_(x[:-2].clone())
    return x


class Cube(torch.autograd.Function):
    """x³ with a backward of its own."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class CubeInNumPy(torch.autograd.Function):
    """x³ computed by NumPy, where no tracer can see: only its backward tells."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.from_numpy(x.detach().numpy() ** 3)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class ShiftWithoutBackward(torch.autograd.Function):
    """x rolled by one, whose backward cannot run: the pattern must stay safe."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.roll(x.detach().numpy(), 1))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no backward here")


CUBE_IN_NUMPY = CubeInNumPy.apply  # bound before any tracing, as a library would


TRIDIAGONAL = torch.diag(torch.full((8,), -2.0, dtype=torch.float64)) + torch.diag(
    torch.ones(7, dtype=torch.float64), 1
) + torch.diag(torch.ones(7, dtype=torch.float64), -1)  # fmt: skip
GENERATOR = torch.Generator().manual_seed(5)
DENSE_3x4 = torch.randn(3, 4, generator=GENERATOR, dtype=torch.float64)
DENSE_4x5 = torch.randn(4, 5, generator=GENERATOR, dtype=torch.float64)
W1 = torch.randn(6, 5, generator=GENERATOR, dtype=torch.float64)
W2 = torch.randn(3, 6, generator=GENERATOR, dtype=torch.float64)
KERNEL_5POINT = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64)
MASK = torch.tensor([True, False, True, True, False, False, True, False])
_BAND = torch.arange(8)
LAPLACIAN_COO = torch.sparse_coo_tensor(
    torch.stack(
        [torch.cat([_BAND, _BAND[1:], _BAND[:-1]]), torch.cat([_BAND, _BAND[:-1], _BAND[1:]])]
    ),
    torch.cat([torch.full((8,), -2.0), torch.ones(14)]).double(),
    (8, 8),
    check_invariants=True,
).coalesce()


def sparse_matrix_of(x: torch.Tensor) -> torch.Tensor:
    """A torch.sparse matrix whose values are x's: a product with it depends on x."""
    indices = LAPLACIAN_COO.indices()
    values = torch.cat([x, x[1:], x[:-1]])
    matrix = torch.sparse_coo_tensor(indices, values, (8, 8), check_invariants=True)
    return matrix @ x.roll(3)


GATHER_INDEX = torch.tensor([[0, 4, 4], [1, 0, 2], [3, 3, 3], [2, 1, 0]])


def mlp(x: torch.Tensor) -> torch.Tensor:
    return W2 @ torch.tanh(W1 @ x + 1.0)


CASES = [
    Case("burgers", burgers, {"u": (12,)}),
    Case(
        "dirichlet laplacian by pad",
        lambda u: (lambda p: p[2:] - 2 * p[1:-1] + p[:-2])(F.pad(u, (1, 1))),
        {"u": (10,)},
    ),
    Case("2-D 5-point stencil", laplacian_2d, {"u": (6, 7)}),
    Case("2-D reaction-diffusion", reaction_diffusion, {"u": (5, 6), "v": (5, 6)}),
    Case("3-D 7-point stencil", stencil_3d, {"u": (4, 5, 4)}),
    Case("periodic roll", lambda u: u - u.roll(1) + u.roll(-2) ** 2, {"u": (9,)}),
    Case(
        "conv1d, constant kernel",
        lambda u: F.conv1d(
            u[None, None], torch.tensor([[[1.0, -2.0, 1.0]]], dtype=torch.float64), padding=1
        ),
        {"u": (10,)},
    ),
    Case(
        "conv2d, 5-point kernel (zero corners)",
        lambda u: F.conv2d(u[None, None], KERNEL_5POINT[None, None], padding=1),
        {"u": (5, 6)},
    ),
    Case(
        "conv2d of x, w and b: strided, grouped",
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
        {"x": (1, 4, 4, 4), "w": (4, 2, 2, 2), "b": (4,)},
    ),
    Case(
        "conv1d dilated, x and w",
        lambda x, w: F.conv1d(x, w, dilation=2),
        {"x": (1, 2, 9), "w": (3, 2, 3)},
    ),
    Case(
        "conv_transpose1d, stride 2",
        lambda x, w: F.conv_transpose1d(x, w, stride=2, padding=1),
        {"x": (1, 2, 5), "w": (2, 3, 3)},
    ),
    Case(
        "conv3d",
        lambda x: F.conv3d(x[None, None], DENSE_3x4.reshape(1, 1, 3, 2, 2)[:, :, :2]),
        {"x": (3, 4, 3)},
    ),
    Case("gather", lambda x: x.gather(1, GATHER_INDEX) * 2, {"x": (4, 5)}),
    Case(
        "index_select", lambda x: x.index_select(0, torch.tensor([0, 2, 2, 5])).sin(), {"x": (6, 3)}
    ),
    Case("advanced indexing", lambda x: x[[0, 3, 1]] * x[:, [1, 1, 0]][:3], {"x": (4, 3)}),
    Case("cumsum: a triangle", lambda x: x.cumsum(0), {"x": (8,)}),
    Case("cumprod along dim 1", lambda x: x.cumprod(1), {"x": (3, 4)}),
    Case(
        "sort",
        lambda x: x.sort().values * torch.arange(7.0, dtype=torch.float64),
        {"x": (7,)},
        value_dependent=True,
    ),
    Case("topk", lambda x: x.topk(2, dim=1).values.exp(), {"x": (3, 5)}, value_dependent=True),
    Case("softmax along dim 1", lambda x: x.softmax(1), {"x": (3, 4)}),
    Case("log_softmax along dim 0", lambda x: x.log_softmax(0), {"x": (3, 4)}),
    Case("per-sample map", lambda x: torch.tanh(x @ DENSE_4x5) @ DENSE_4x5.T, {"x": (3, 4)}),
    Case("banded constant matmul", lambda x: TRIDIAGONAL @ x + TRIDIAGONAL @ x**2, {"x": (8,)}),
    Case(
        "where, both branches",
        lambda x: torch.where(x > 0, x**2, x.roll(1).sin()),
        {"x": (8,)},
        equal=False,
    ),
    Case(
        "where, a constant condition",
        lambda x: torch.where(MASK, x**2, x.roll(1).sin()),
        {"x": (8,)},
    ),
    Case("custom autograd.Function", lambda x: Cube.apply(x[1:] - x[:-1]), {"x": (6,)}),
    Case(
        "custom autograd.Function computing in NumPy, bound early",
        lambda x: CUBE_IN_NUMPY(x.roll(2)) * x,
        {"x": (6,)},
    ),
    Case(
        "custom autograd.Function of a constant",
        lambda x: CUBE_IN_NUMPY(torch.ones(3, dtype=torch.float64, requires_grad=True)),
        {"x": (3,)},
    ),
    Case(
        # the backward multiplies by 3·relu(x)², 0 at this point where x < 0, not elsewhere
        "custom autograd.Function of relu(x)",
        lambda x: CUBE_IN_NUMPY(torch.relu(x)),
        {"x": (8,)},
        equal=False,
    ),
    Case(
        "custom autograd.Function computing in NumPy",
        lambda x: CubeInNumPy.apply(x[1:] - x[:-1]).roll(1),
        {"x": (6,)},
    ),
    Case(
        "an op without a rule (linear interpolation)",
        lambda x: F.interpolate(x[None, None], scale_factor=2, mode="linear").reshape(-1),
        {"x": (8,)},
        equal=False,
        exact=False,
        notes=("aten.upsample_linear1d has no sparsity rule",),
    ),
    Case(
        "max_pool2d",
        lambda x: F.max_pool2d(x[None], 2, stride=1, padding=1),
        {"x": (4, 5)},
        equal=False,
    ),
    Case(
        "avg_pool2d, strided",
        lambda x: F.avg_pool2d(x[None], 3, stride=2, padding=1),
        {"x": (5, 6)},
    ),
    Case("MLP: dense", mlp, {"x": (5,)}),
    Case(
        "several inputs and outputs",
        lambda a, b: (a.sum() * b, a[:2] * b[1:3]),
        {"a": (3,), "b": (4,)},
    ),
    Case("in-place writes into a buffer", in_place_residual, {"u": (8,)}),
    Case("a function that mutates its input", mutates_its_input, {"x": (6,)}),
    Case(
        "index_put with repeated indices, summed",
        lambda x: torch.zeros(4, dtype=torch.float64).index_put_(
            (torch.tensor([0, 2, 0, 3, 2]),), x, accumulate=True
        ),
        {"x": (5,)},
    ),
    Case(
        "setitem with repeated indices",
        lambda x: (lambda z: (z.__setitem__(torch.tensor([1, 1, 3]), x[:3]), z)[1])(x[3:].clone()),
        {"x": (7,)},
        equal=False,
    ),
    Case(
        "scatter_add",
        lambda x: torch.zeros(3, dtype=torch.float64).scatter_add(0, torch.tensor([2, 0, 2, 1]), x),
        {"x": (4,)},
    ),
    Case(
        "masked_fill and masked_select",
        lambda x: x.masked_fill(MASK, 0.5) + x.masked_select(MASK).sum(),
        {"x": (8,)},
    ),
    Case(
        "moves: cat, flip, transpose, reshape",
        lambda x: torch.cat(
            [x.flip(0).reshape(-1), x.T.reshape(-1)[:3], x.T.contiguous().reshape(-1)[::2]]
        ),
        {"x": (3, 4)},
    ),
    Case(
        "reductions along dim 0",
        lambda x: torch.stack(
            [x.sum(0), x.mean(0), x.norm(dim=0), x.var(0), x.prod(0), x.logsumexp(0)]
        ),
        {"x": (3, 4)},
    ),
    Case(
        "amax: every element it reduces",
        lambda x: x.amax(1) + x.max(0).values.sum(),
        {"x": (3, 4)},
        equal=False,
    ),
    Case(
        "layer_norm with weight and bias",
        lambda x, w, b: F.layer_norm(x, (4,), w, b),
        {"x": (3, 4), "w": (4,), "b": (4,)},
    ),
    Case(
        "reflect, replicate and circular pads",
        lambda u: (
            torch.cat(
                [
                    F.pad(u[None, None], (2, 2), mode=m).reshape(-1)
                    for m in ("reflect", "replicate", "circular")
                ]
            )
            * u.sum()
        ),
        {"u": (6,)},
    ),
    Case(
        "einsum with a banded constant",
        lambda x: torch.einsum("ij,jk->ik", TRIDIAGONAL[:5, :5], x),
        {"x": (5, 3)},
    ),
    Case("zero derivatives: floor and round", lambda x: x.floor() * x + x.round(), {"x": (6,)}),
    Case(
        "a constant factor's zeros",
        lambda x: x.roll(1) * MASK.double() + x * torch.tensor(0.0, dtype=torch.float64),
        {"x": (8,)},
    ),
    Case(
        "a number taken with .item()", lambda x: x * x[0].item(), {"x": (5,)}, value_dependent=True
    ),
    Case(
        "mse_loss, none and mean",
        lambda x, t: torch.cat([F.mse_loss(x, t, reduction="none"), F.mse_loss(x, t)[None]]),
        {"x": (4,), "t": (4,)},
    ),
    Case("dtype changes", lambda x: x.float().double() * x, {"x": (5,)}),
    Case(
        "complex intermediates: rfft",
        lambda x: torch.fft.rfft(x).abs(),
        {"x": (6,)},
        exact=False,
        notes=("aten._fft_r2c has no sparsity rule",),
    ),
    Case(
        "complex viewed as real",
        lambda x: torch.view_as_real(torch.complex(x, x.roll(1) ** 2)).sum(-1),
        {"x": (5,)},
        equal=False,
        exact=False,
        notes=("a torch.float64 view of a storage of 16-byte elements",),
    ),
    Case(
        "trace and block_diag",
        lambda x: torch.block_diag(x, x.T[:1]) + torch.trace(x),
        {"x": (2, 2)},
    ),
    Case(
        "nearest upsampling",
        lambda x: F.interpolate(x[None, None], scale_factor=2, mode="nearest").reshape(-1),
        {"x": (4,)},
    ),
    Case("sliding windows by unfold", lambda x: x.unfold(0, 3, 1).sum(-1), {"x": (7,)}),
    Case(
        "indices from an input outside wrt",
        lambda x, idx: x[idx.abs().long() % 5] * 2,
        {"x": (5,), "idx": (3,)},
        wrt=("x",),
        value_dependent=True,
        notes=("selects elements with indices or masks that come from idx (not differentiated)",),
    ),
    Case(
        "zeros of an input outside wrt",
        lambda x, a: torch.triu(a) @ x + a.sum() * x,
        {"x": (4,), "a": (4, 4)},
        wrt=("x",),
        value_dependent=True,
        notes=("uses the zeros of a constant that come from a (not differentiated)",),
    ),
    Case(
        "an input outside wrt without zeros",
        lambda x, a: a @ x,
        {"x": (3,), "a": (2, 3)},
        wrt=("x",),
    ),
    Case(
        "bmm with a constant",
        lambda x: torch.bmm(x, DENSE_4x5[None].expand(2, 4, 5)),
        {"x": (2, 3, 4)},
    ),
    Case("linear with bias", lambda x, b: F.linear(x, DENSE_3x4, b), {"x": (2, 4), "b": (3,)}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_pattern_holds_every_nonzero_of_J(case: Case) -> None:
    check(case)


def test_a_banded_pattern_is_the_band() -> None:
    """Burgers' residual: three non-zeros a row, on the band j = i … i + 2."""
    pattern = check(Case("burgers", burgers, {"u": (12,)}))
    rows, columns = pattern.matrix.nonzero()
    assert pattern.shape == (10, 12)
    assert pattern.nnz == 30
    assert set(columns - rows) == {0, 1, 2}
    assert repr(pattern) == "SparsityPattern(10×12, nnz=30, exact)"


def test_only_the_wrt_inputs_are_columns() -> None:
    case = Case(
        "x only",
        lambda x, w: F.conv1d(x, w, padding=1),
        {"x": (1, 1, 6), "w": (1, 1, 3)},
        wrt=("x",),
    )
    assert check(case).shape == (6, 6)


def test_a_rule_that_cannot_follow_its_op_is_safe_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jaccli.engine.sparse import rules

    def broken(call: Call) -> Found:
        raise IndexError("no")

    monkeypatch.setitem(rules.RULES, "roll", broken)
    pattern = check(
        Case(
            "roll",
            lambda u: u.roll(1),
            {"u": (5,)},
            equal=False,
            exact=False,
            notes=("aten.roll: its sparsity rule failed",),
        )
    )
    assert pattern.nnz == 25


def test_a_custom_function_whose_backward_fails_depends_on_everything() -> None:
    pattern = detect_pattern(problem_of(Case("shift", ShiftWithoutBackward.apply, {"x": (4,)}), 0))
    assert pattern.nnz == 16
    assert not pattern.exact
    assert any("the backward pass of shift failed" in note for note in pattern.notes)


def test_a_pattern_past_the_budget_is_refused_before_it_is_built() -> None:
    """cumsum of 10⁵ numbers has 5·10⁹ non-zeros: refused (exit 3), whatever the function
    does with the error."""

    def swallows(x: torch.Tensor) -> torch.Tensor:
        try:
            return x.cumsum(0)
        except Exception:
            return x

    problem = problem_of(Case("cumsum", swallows, {"x": (100_000,)}), 0)
    with pytest.raises(ResourceError, match="sparsity pattern"):
        detect_pattern(problem, budget=2**30)


def test_the_function_gets_copies_of_its_inputs() -> None:
    problem = problem_of(Case("mutates", mutates_its_input, {"x": (6,)}), 0)
    before = problem.inputs["x"].clone()
    detect_pattern(problem)
    assert torch.equal(problem.inputs["x"], before)


# The Hessian's pattern.


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def energy_2d(u: torch.Tensor) -> torch.Tensor:
    return (laplacian_2d(u) ** 2).sum() + (u**4).sum()


def dense_hessian(problem: Problem) -> np.ndarray:
    """H as one matrix (wrt inputs flattened, both ways), by torch.autograd."""
    fixed = {n: t for n, t in problem.inputs.items() if n not in problem.wrt}

    def scalar(*xs: torch.Tensor) -> torch.Tensor:
        inputs = {**fixed, **dict(zip(problem.wrt, xs, strict=True))}
        return next(iter(call_function(problem.function, inputs).values())).reshape(())

    xs = tuple(problem.inputs[n] for n in problem.wrt)
    blocks = torch.autograd.functional.hessian(scalar, xs)
    return torch.cat(
        [
            torch.cat([blocks[i][j].reshape(a.numel(), b.numel()) for j, b in enumerate(xs)], 1)
            for i, a in enumerate(xs)
        ]
    ).numpy()


@pytest.mark.parametrize(
    ("case", "nnz"),
    [
        (Case("chained Rosenbrock", rosenbrock, {"x": (10,)}), 10 + 2 * 9),
        (Case("energy of a 2-D stencil", energy_2d, {"u": (5, 6)}), None),
        (Case("softmax's log-sum-exp", lambda x: x.logsumexp(0), {"x": (4,)}), 16),
    ],
    ids=lambda value: value.name if isinstance(value, Case) else None,
)
def test_the_hessian_pattern_holds_every_nonzero_of_H(case: Case, nnz: int | None) -> None:
    pattern = hessian_pattern(problem_of(case, 0))
    found = pattern.matrix.toarray()
    assert (found == found.T).all()
    seen = np.zeros_like(found)
    for seed in range(POINTS):
        nonzero = dense_hessian(problem_of(case, seed)) != 0
        assert not (nonzero & ~found).any()
        seen |= nonzero
    assert (seen == found).all()
    if nnz is not None:
        assert pattern.nnz == nnz


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_hessian_pattern_of_each_function_s_energy_holds_H(case: Case) -> None:
    """The Hessian of Σ f(x)² traces the backward of every op above: its pattern holds H's
    non-zeros at every point (at the first only where f's pattern depends on the values)."""

    def energy(**inputs: torch.Tensor) -> torch.Tensor:
        leaves = pytree.tree_leaves(case.call(**inputs))
        return sum((leaf**2).sum() for leaf in leaves if isinstance(leaf, torch.Tensor))

    squared = replace(case, call=energy)
    pattern = hessian_pattern(problem_of(squared, 0))
    found = pattern.matrix.toarray()
    for seed in range(1 if case.value_dependent else 2):
        nonzero = dense_hessian(problem_of(squared, seed)) != 0
        missed = np.argwhere(nonzero & ~found)
        assert not len(missed), f"{case.name}: H is non-zero at {missed[:5].tolist()}"
    assert pattern.exact == case.exact, pattern.notes


def test_the_hessian_pattern_is_of_a_scalar_function() -> None:
    with pytest.raises(UsageError, match="scalar function"):
        hessian_pattern(problem_of(Case("burgers", burgers, {"u": (5,)}), 0))


# Random compositions of moves, writes and pointwise ops.


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(2, 5),
    columns=st.integers(2, 5),
    shifts=st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
    step=st.integers(1, 3),
    flip=st.booleans(),
    transpose=st.booleans(),
    start=st.integers(0, 1),
)
def test_random_moves_and_writes(
    rows: int,
    columns: int,
    shifts: tuple[int, int],
    step: int,
    flip: bool,
    transpose: bool,
    start: int,
) -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        y = x.roll(shifts, (0, 1))
        if flip:
            y = y.flip(1)
        if transpose:
            y = y.T
        out = torch.zeros_like(y)
        window = out[start::step]
        window += y[start::step].sin() * x.reshape(-1)[: window.shape[-1]]
        out[:, :1] = out[:, :1] * 3 + y[:, -1:]
        return out.reshape(-1)[::2]

    check(Case("moves", f, {"x": (rows, columns)}))


# scipy is for sparse paths only.


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["hessian", "--fn", "logsumexp", "--shape", "4", "--view", "sparsity"],
    ],
)
def test_help_and_dense_runs_never_import_scipy(args: list[str]) -> None:
    from tests.test_process import _modules_loaded_by

    modules = _modules_loaded_by(args)
    assert ("jaccli.engine" in modules) == (args[0] != "--help")  # the probe really ran
    assert not {m for m in modules if m.split(".")[0] == "scipy"}


def test_an_op_wrongly_listed_as_a_move_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """cumsum sums its ids: the second run with shifted ids shows it, and the pattern falls
    back to a safe superset instead of reading sums as ids."""
    from jaccli.engine.sparse import rules

    monkeypatch.setitem(rules.RULES, "cumsum", move)
    case = Case(
        "cumsum as a move",
        lambda x: x.cumsum(0),
        {"x": (6,)},
        equal=False,
        exact=False,
        notes=("aten.cumsum: its sparsity rule failed",),
    )
    assert check(case).nnz == 36


@pytest.mark.parametrize("seed", range(4))
def test_combine_of_full_or_empty_rows_equals_the_selector_product(seed: int) -> None:
    """dependencies.combine's short cut for rows that depend on everything or nothing (a dense
    layer's) gives the product of the selector with the matrix, entry for entry."""
    import scipy.sparse as sp

    from jaccli.engine.sparse import dependencies as deps

    rng = np.random.default_rng(seed)
    rows, sources, width = 7, 9, 5
    full = rng.random(sources) < 0.6
    matrix = deps.repeated_rows(full, width)
    pairs = (rng.integers(0, rows, 20), rng.integers(0, sources, 20))
    fast = deps.combine(pairs, rows, matrix)
    selector = deps.from_pairs(pairs[0], pairs[1], (rows, sources))
    slow = sp.csr_array(selector.astype(np.int64) @ matrix.astype(np.int64)) > 0
    np.testing.assert_array_equal(fast.toarray(), slow.toarray())
    assert fast.has_canonical_format
