"""The commands, by family. Each is the same three steps: parse its options into a Request
(jaccli/options.py), run it (jaccli/runner), show the outcome (show.py); its options come from
the table, and its help is its docstring and examples."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from jaccli.cli.boundary import reporting
from jaccli.cli.parameters import with_options
from jaccli.options import parse
from jaccli.output import write
from jaccli.request import Request

EXAMPLES: dict[str, list[str]] = {}
"""Each command's examples, shown at the end of its help (and run by the tests)."""
CALLBACKS: dict[str, Callable[..., None]] = {}
"""Each command's callback, by name."""


def run_command(command: str, given: dict[str, Any]) -> None:
    """Parse → run → show, inside the error boundary."""
    with reporting(command, given.get("json_", False), given.get("traceback", False)) as boundary:
        request = parse(command, given)
        with boundary.running(request), _resumable(request):
            from jaccli.cli.show import show
            from jaccli.runner import run

            show(run(request, _progress_bar))


@contextlib.contextmanager
def _resumable(request: Request) -> Iterator[None]:
    """Ctrl-C during a run into a .zarr store says how to finish it (the exit is still 130)."""
    try:
        yield
    except KeyboardInterrupt:
        out = request.show.out
        if request.show.to_store and out is not None and out.exists():
            write(
                sys.stderr,
                f"{request.command}: interrupted; the blocks done are kept in {out}: run the "
                "same command with --resume to compute the rest\n",
            )
        raise


def _progress_bar(description: str, unit: str | None = None) -> Any:
    """A progress bar on stderr for a long computation (Rich's progress loads when one runs)."""
    from jaccli.render.progress import progress_bar

    return progress_bar(description, unit)


def _command(*examples: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A command, with the examples its help ends with; its options come from the table."""

    def described(callback: Callable[..., None]) -> Callable[..., None]:
        EXAMPLES[callback.__name__] = list(examples)
        CALLBACKS[callback.__name__] = with_options(callback.__name__, callback)
        return callback

    return described


# First order


@_command(
    "jaccli jacobian --fn expsum --shape 2x3",
    'jaccli jacobian --expr "x.sin() * a" --shape x=3 --shape a=3 --wrt x --json',
    "jaccli jacobian --fn model.py:f --shape 64x16 --view heatmap --out j.png",
)
def jacobian(**options: Any) -> None:
    """Compute y = f(x) and its Jacobian J.

    J.shape == y.shape + x.shape, and J\\[i…, j…] = ∂y\\[i…]/∂x\\[j…].
    """
    run_command("jacobian", options)


@_command(
    "jaccli det --fn spherical --value 'x=[2, 0.5, 1]' --dtype float64",
    "jaccli det --fn planar_flow --shape x=4096x16 --batched",
)
def det(**options: Any) -> None:
    """Compute J and det J of a square Jacobian.

    With det J come its sign, log|det J| (no overflow) and the trace (the divergence). J must be
    square once flattened (y.numel() == x.numel()); with several --wrt, the joint J.
    """
    run_command("det", options)


@_command("jaccli check --fn expsum", "jaccli check --fn model.py:f --shape 8x4 --wrt x")
def check(**options: Any) -> None:
    """Gradient-check a function in float64.

    AD against the other mode and finite differences. Exits 0 when every comparison passes and
    1 when one fails, so it can run in CI.
    """
    run_command("check", options)


# Products


@_command(
    "jaccli vjp --fn matmul --wrt a", "jaccli vjp --fn matmul --cotangent '[[1, 0], [0, 0]]' --json"
)
def vjp(**options: Any) -> None:
    """Compute the vector-Jacobian product vᵀ·J.

    It is the x.grad that y.backward(v) leaves.
    """
    run_command("vjp", options)


@_command(
    "jaccli jvp --fn expsum --tangent ones", "jaccli jvp --fn polar --tangent '[1, 0]' --check"
)
def jvp(**options: Any) -> None:
    """Compute the Jacobian-vector product J·v.

    By forward mode: how y changes along v. With several --wrt inputs the products add up,
    J·v = Σₖ Jₖ·vₖ, as torch.func.jvp has it.
    """
    run_command("jvp", options)


@_command(
    "jaccli hvp --fn logsumexp --vector ones",
    'jaccli hvp --expr "(x.sin() * x).sum()" --shape 1000000 --out hv.npy',
)
def hvp(**options: Any) -> None:
    """Compute the Hessian-vector product H·v.

    Of a scalar output, without forming H: the JVP of the gradient (forward-over-reverse), in
    the memory of a few gradients.
    """
    run_command("hvp", options)


# Second order


@_command(
    "jaccli hessian --fn logsumexp --shape 4",
    'jaccli hessian --expr "(x ** 4).sum()" --shape 50 --view sparsity',
)
def hessian(**options: Any) -> None:
    """Compute the Hessian H = ∂²y/∂a∂b.

    For each output and every pair of --wrt inputs, H.shape == y.shape + a.shape + b.shape: the
    Jacobian of the gradient. --strategy fwd is forward-over-reverse (jacfwd of jacrev), rev
    and loop reverse-over-reverse.
    """
    run_command("hessian", options)


# The presets


@_command("jaccli presets", "jaccli presets --json")
def presets(**options: Any) -> None:
    """List the preset functions.

    Name, formula, inputs with their default shapes, and whether J is square.
    """
    run_command("presets", options)
