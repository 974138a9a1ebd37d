"""One run of jaccli as a plain value: the command, the function, its inputs, what to compute,
how to show it, and the limits.

The CLI parses its options into a Request once (jaccli/options.py holds the table of options it
is parsed from); the Python API builds the same Request from keyword arguments; the runner
(jaccli/runner) turns it into an outcome. No Typer, Rich or torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaccli.spec import DEFAULT_VALUE_LIMIT, ArrayData, Direction, Shape

if TYPE_CHECKING:
    from jaccli.spec import ClusterSpec

STORE_SUFFIX = ".zarr"
"""--out NAME.zarr: J (hessian: H, the gradient's J) computed in blocks into a zarr store
(jaccli/blocks)."""
GivenValue = str | ArrayData
"""An input's values: the text of a --value (JSON, or @file), read by the runner within the
limits once the memory budget holds; or an array the Python API was given."""
GivenPoints = str | ArrayData
"""An input's points along a leading axis: a --points source (`@file`, `@-` for a stream),
read by the runner; or an array the Python API was given."""
GivenDirection = str | Direction
"""The vector of a product: the text of --cotangent, --tangent or --vector (ones, randn, JSON,
@file), read by the runner; or a Direction the Python API was given."""


@dataclass(frozen=True)
class FunctionChoice:
    """The function to differentiate: `--fn` (a preset, file.py:func, pkg.mod:func), `--expr`,
    or a Python callable given to the API."""

    name: str | None = None
    expression: str | None = None
    callable: Callable[..., Any] | None = None

    @property
    def label(self) -> str:
        """How messages name it (--timeout's)."""
        if self.name is not None:
            return self.name
        if self.callable is not None:
            return getattr(self.callable, "__name__", "the function")
        return "the --expr expression"


@dataclass(frozen=True)
class Inputs:
    """The inputs: their shapes and values, which are differentiated, and how they are drawn."""

    shapes: tuple[tuple[str | None, Shape], ...] = ()
    """--shape: (name, or None for the only input; shape)."""
    values: tuple[tuple[str | None, GivenValue], ...] = ()
    wrt: tuple[str, ...] = ()
    """--wrt: empty for every input."""
    output: str | None = None
    """--output: the one output kept of several."""
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    batch_axes: tuple[tuple[str | None, int], ...] = ()
    """--batch-axis: (name, axis) pairs."""


@dataclass(frozen=True)
class Points:
    """--points: many values of some inputs, and how their results are printed."""

    sources: tuple[tuple[str, GivenPoints], ...] = ()
    jsonl: bool = False
    keep_going: bool = False


@dataclass(frozen=True)
class Compute:
    """What to compute, beyond the command itself."""

    strategy: str = "auto"
    """auto, loop, rev or fwd (engine.Strategy's values)."""
    view: str | None = None
    """A per-slice view (rows, cols, full), or None."""
    picture: str | None = None
    """heatmap or sparsity: J (or H) drawn, and its structure; or None."""
    batched: bool = False
    check: bool = False
    rtol: float | None = None
    atol: float | None = None
    eps: float | None = None
    plan: bool = False
    direction: GivenDirection | None = None
    """The vector of vjp (cotangent), jvp (tangent) or hvp (vector); None for the others."""
    points: Points | None = None
    """None without --points."""
    sparse: bool = False
    """--sparse (or --sparsity): J or H as a sparse matrix from its pattern and colouring."""
    sparsity: str | None = None
    """--sparsity: the path of a file (.npz, .mtx) giving J's pattern, read by the runner;
    None to detect the pattern by tracing the function."""
    resume: bool = False
    """--resume: complete the --out .zarr store of a run that stopped."""
    cluster: ClusterSpec | None = None
    """--cluster: where the blocks of --out .zarr run; None for this process."""


@dataclass(frozen=True)
class Show:
    """How the result is shown, and where it is written."""

    json: bool = False
    text_format: str | None = None
    """--format: markdown or latex."""
    precision: int = 4
    full: bool = False
    out: Path | None = None
    """--out, checked up front (a file exists only with --force; its suffix is known)."""
    force: bool = False
    traceback: bool = False

    @property
    def to_store(self) -> bool:
        """Whether --out is a .zarr store that J is computed into block by block."""
        return self.out is not None and self.out.suffix == STORE_SUFFIX


@dataclass(frozen=True)
class Limits:
    """What the run may use."""

    budget: int | None = None
    """--max-memory in bytes, no more than the machine has; None for the default."""
    budget_note: str | None = None
    """The warning when --max-memory was reduced to the memory available now."""
    value_limit: int = DEFAULT_VALUE_LIMIT
    """--max-value-size: the most bytes of a --value, --points or vector file read."""
    timeout: float | None = None
    """--timeout in seconds; None for no limit."""


@dataclass(frozen=True)
class Request:
    """Everything one run needs, parsed: nothing in it is read from the command line again."""

    command: str
    function: FunctionChoice = field(default_factory=FunctionChoice)
    inputs: Inputs = field(default_factory=Inputs)
    compute: Compute = field(default_factory=Compute)
    show: Show = field(default_factory=Show)
    limits: Limits = field(default_factory=Limits)
