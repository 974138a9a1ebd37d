"""The options of every command, in one table: which commands take each option, its help, its
default, how its value is parsed into the Request, and which combinations are refused.

The CLI builds each command's Typer parameters and help from `OPTIONS` (jaccli/cli/parameters.py);
the Python API takes the same options as keyword arguments (jaccli/api.py); both turn what they
were given into a Request with `parse`, which applies `REFUSALS`. An option every computing
command takes is one row here (commands=COMPUTING), the Request field it fills, and its use in
the runner. No Typer, Rich or torch here: `jaccli --help` imports this module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaccli import memory, spec
from jaccli.errors import UsageError
from jaccli.request import (
    STORE_SUFFIX,
    Compute,
    FunctionChoice,
    Inputs,
    Limits,
    Points,
    Request,
    Show,
)
from jaccli.timeout import parse_timeout

JACOBIAN, DET, VJP, JVP, HESSIAN, HVP, CHECK, PRESETS = (
    "jacobian", "det", "vjp", "jvp", "hessian", "hvp", "check", "presets",
)  # fmt: skip
COMPUTING = (JACOBIAN, DET, VJP, JVP, HESSIAN, HVP, CHECK)
"""The commands that compute (every command but `presets`)."""
SHOWING = (JACOBIAN, DET, VJP, JVP, HESSIAN, HVP)
"""The commands whose result has tables, text formats and files (not `check`)."""
PRODUCTS = (VJP, JVP, HVP)
DRAWING = (JACOBIAN, DET, HESSIAN)
STORING = (JACOBIAN, HESSIAN)
"""What --out NAME.zarr computes block by block: J, or H as the gradient's J."""
STORE_REFUSED = {
    DET: "one number a point, never too large for memory",
    VJP: "one vector a point, never larger than the inputs",
    JVP: "one vector a point, never larger than the outputs",
    HVP: "one vector a point, never larger than the inputs",
    CHECK: "a verdict, not an array",
}
"""Why a command's result has no use for a store (one line each)."""
"""The commands that draw J or H (--view heatmap|sparsity, --out j.png) and --plan it."""
SPARSE = (JACOBIAN, DET, HESSIAN, CHECK)
"""The commands that compute J (or H) as a sparse matrix with --sparse."""
STRATEGIES = ("auto", "loop", "rev", "fwd")
"""engine.Strategy's values, in its order."""

INPUTS, POINTS, COMPUTE, OUTPUT, LIMITS = (
    "Function and inputs", "Many points", "What to compute", "Output", "Limits",
)  # fmt: skip
"""The panels of a command's help, in the order they first appear."""
VIEW_FIELDS = ("compute.view", "compute.picture")
"""--view fills both: a per-slice view, or a picture."""


class Parsed:
    """The Request's fields parsed so far (`inputs.seed`, `show.json`…), each option parsed
    once, when first asked for; a field no option of the command fills reads as the Request's
    default."""

    def __init__(self, command: str, raw: Mapping[str, Any]) -> None:
        self.command = command
        self.raw = raw
        self.fields: dict[str, Any] = {}
        self._done: set[str] = set()

    def has(self, name: str) -> bool:
        """Whether the option was given (a repeatable one at least once)."""
        return bool(self.raw.get(name))

    def __getitem__(self, field: str) -> Any:
        if field not in self.fields:
            option = next((o for o in options_of(self.command) if field in o.fields), None)
            if option is None or option.name in self._done:
                return _default(field)
            self._parse(option)
        return self.fields[field]

    def _parse(self, option: Option) -> None:
        self._done.add(option.name)
        raw = self.raw.get(option.name, option.default)
        value = option.parse(raw, self) if option.parse is not None else raw
        values = value if len(option.fields) > 1 else (value,)
        self.fields.update(zip(option.fields, values, strict=True))


@dataclass(frozen=True, init=False)
class Option:
    """One command-line option, and the Python API's keyword argument of the same name."""

    flags: tuple[str, ...]
    fields: tuple[str, ...]
    """The Request fields it fills (`group.field`); `parse` returns a tuple when several."""
    commands: tuple[str, ...]
    panel: str
    """The panel of the command's help it is listed in."""
    help: str
    name: str
    """The keyword: the Typer callback's parameter and the API's argument."""
    annotation: Any
    """The raw value's type, as Typer parses it."""
    default: Any
    parse: Callable[[Any, Parsed], Any] | None
    """The raw value (Typer's, or the API's keyword argument) into the field's value; None
    when the raw value is the field's value."""
    metavar: str | None
    choices: tuple[str, ...]
    """What the option accepts, as shell completion offers it."""
    complete: Callable[[str], list[str]] | None
    """Shell completion beyond fixed choices (the preset names of --fn)."""
    limits: tuple[int, int] | None
    """(min, max) of an integer."""
    api: bool
    """Whether the Python API takes it (not the options of how the CLI prints)."""

    def __init__(
        self,
        flags: str | tuple[str, ...],
        fields: str | tuple[str, ...],
        commands: tuple[str, ...],
        panel: str,
        *,
        help: str,
        name: str | None = None,
        annotation: Any = None,
        default: Any = None,
        repeatable: bool = False,
        parse: Callable[[Any, Parsed], Any] | None = None,
        metavar: str | None = None,
        choices: tuple[str, ...] = (),
        complete: Callable[[str], list[str]] | None = None,
        limits: tuple[int, int] | None = None,
        api: bool = True,
    ) -> None:
        """`flags` and `fields` may be one string; `name` is the first flag's (`--max-memory`:
        max_memory); `annotation` follows from the default: a flag, a number or a word, an
        optional word (default None), or a list of words (`repeatable`)."""
        flags = (flags,) if isinstance(flags, str) else flags
        if annotation is None:
            optional = list[str] | None if repeatable else str | None
            annotation = optional if default is None else type(default)
        values = dict(
            flags=flags,
            fields=(fields,) if isinstance(fields, str) else fields,
            commands=commands,
            panel=panel,
            help=help,
            name=name or flags[0].lstrip("-").replace("-", "_"),
            annotation=annotation,
            default=default,
            parse=parse,
            metavar=metavar,
            choices=choices,
            complete=complete,
            limits=limits,
            api=api,
        )
        for key, value in values.items():
            object.__setattr__(self, key, value)


def options_of(command: str) -> Iterator[Option]:
    """The command's options, in the order its help lists them."""
    return (option for option in OPTIONS if command in option.commands)


def _default(field: str) -> Any:
    group, name = field.split(".")
    return {f.name: f for f in dataclasses.fields(_GROUPS[group])}[name].default


def _shapes(raw: Any, parsed: Parsed) -> tuple[tuple[str | None, spec.Shape], ...]:
    return tuple(spec.parse_shape_option(text) for text in raw or ())


def _named_values(raw: Any, parsed: Parsed) -> tuple[tuple[str | None, Any], ...]:
    """--value NAME=VALUE as (name, the text read later), or the API's (name, array) pairs."""
    return tuple(
        spec.split_named(item, "--value") if isinstance(item, str) else item for item in raw or ()
    )


def _points(raw: Any, parsed: Parsed) -> tuple[tuple[str, Any], ...]:
    return tuple(
        spec.parse_points_option(item) if isinstance(item, str) else item for item in raw or ()
    )


def _batch_axes(raw: Any, parsed: Parsed) -> tuple[tuple[str | None, int], ...]:
    return tuple(spec.parse_batch_axis_option(text) for text in raw or ())


def _strategy(raw: str, parsed: Parsed) -> str:
    if raw not in STRATEGIES:
        raise UsageError(f"unknown --strategy {raw!r} (choose {', '.join(STRATEGIES)})")
    return raw


def _view(raw: str | None, parsed: Parsed) -> tuple[str | None, str | None]:
    """(per-slice view, picture) out of --view, one of the command's choices."""
    option = next(o for o in options_of(parsed.command) if o.name == "view")
    if raw is not None and raw not in option.choices:
        if raw in spec.PICTURE_VIEWS:
            raise UsageError(
                f"--view {raw} draws J or H: use it with jaccli jacobian, det or hessian"
            )
        raise UsageError(f"unknown --view {raw!r} (choose {', '.join(option.choices)})")
    return (None, raw) if raw in spec.PICTURE_VIEWS else (raw, None)


def _text_format(raw: str | None, parsed: Parsed) -> str | None:
    if raw is not None and raw not in spec.TEXT_FORMATS:
        raise UsageError(f"unknown --format {raw!r} (choose {', '.join(spec.TEXT_FORMATS)})")
    return raw


def _out(raw: str | None, parsed: Parsed) -> Any:
    """--out, checked before any work (not with --plan, which writes nothing but tells how a
    .zarr store would be split); a .zarr store's replacement is the store's to check; with
    --sparse, a file that holds a sparse matrix."""
    if raw is None:
        return None
    if is_store(raw):
        if parsed.command not in STORING:
            raise UsageError(
                f"--out {raw!r}: a .zarr store holds J or H computed block by block (rows or "
                f"columns of a matrix too large for memory), by jaccli jacobian or hessian; "
                f"{parsed.command}'s result is {STORE_REFUSED[parsed.command]}: write it to .npy, "
                ".pt, .safetensors or .csv",
                code="bad_out",
            )
        from jaccli.blocks import require

        require("zarr", f"--out {raw}")  # before any work: exit 2 with the pip line
        return Path(os.path.abspath(raw.rstrip("/")))
    if parsed["compute.plan"]:
        return None
    from jaccli.render.files import checked_out_path

    pictures = parsed.command in DRAWING
    if not parsed["compute.sparse"]:
        return checked_out_path(raw, parsed["show.force"], pictures=pictures)
    from jaccli.render.sparse_files import SPARSE_SUFFIXES, require_sparse_suffix

    require_sparse_suffix(Path(raw), pictures=pictures)
    return checked_out_path(raw, parsed["show.force"], pictures=pictures, more=SPARSE_SUFFIXES)


def _sparse(raw: bool, parsed: Parsed) -> bool:
    """--sparse, which --sparsity implies."""
    return bool(raw) or parsed["compute.sparsity"] is not None


def is_store(path: str) -> bool:
    """Whether --out names a zarr store (a directory `NAME.zarr`) rather than a file."""
    return path.rstrip("/").endswith(STORE_SUFFIX)


def _cluster(raw: str | None, parsed: Parsed) -> Any:
    """--cluster as a ClusterSpec; Dask's distributed scheduler is imported now, so that a
    missing extra is refused before any work (`jaccli --help` imports none of it)."""
    if raw is None:
        return None
    from jaccli.blocks import require

    require("distributed", "--cluster")  # before any work: exit 2 with the pip line
    return spec.parse_cluster(raw)


def _bytes(raw: str | int) -> int:
    """A size in bytes: text (`4GiB`) as on the command line, or from the API a positive int
    (a bool, a float, 0 or -5 B would be a budget no run fits, or a TypeError)."""
    if isinstance(raw, str):
        return spec.parse_bytes(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    raise UsageError(
        f"bad memory size {raw!r}; expected a size like 4GiB, 512MiB or 2G, or a positive int "
        "of bytes"
    )


def _budget(raw: str | int | None, parsed: Parsed) -> tuple[int | None, str | None]:
    """--max-memory in bytes, no more than the machine has, and the warning when reduced."""
    if raw is None:
        return None, None
    return memory.fit_to_machine(_bytes(raw))


def _value_limit(raw: str | int | None, parsed: Parsed) -> int:
    if raw is None:
        return spec.DEFAULT_VALUE_LIMIT
    return _bytes(raw)


def _sparsity(raw: Any, parsed: Parsed) -> str | None:
    """--sparsity FILE: a path (the API may give a str or a PathLike)."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, os.PathLike):
        return os.fspath(raw)  # type: ignore[return-value]
    raise UsageError(
        f"--sparsity: expected the path of a .npz or .mtx file, not {type(raw).__name__}",
        code="bad_sparsity_file",
    )


def _timeout(raw: str | float | None, parsed: Parsed) -> float | None:
    return parse_timeout(None if raw is None else str(raw))


def _dtype(raw: str, parsed: Parsed) -> str:
    return spec.parse_dtype(raw)


def _tuple(raw: Any, parsed: Parsed) -> tuple[str, ...]:
    return tuple(raw or ())


def _complete_function(incomplete: str) -> list[str]:
    """Shell completion of --fn: the preset names that start with what was typed."""
    from jaccli.functions.presets import PRESETS as PRESET_FUNCTIONS

    return [name for name in PRESET_FUNCTIONS if name.startswith(incomplete)]


DIRECTION_IN_INPUTS_HELP = (
    "v in the shape of the input: ones, randn (seeded), a JSON array, a JSON object with an "
    'array for each --wrt input ({"a": [...], "b": [...]}), or @FILE as for --value (@- for '
    "JSON on stdin)."
)
"""The help of --tangent and --vector."""


# fmt: off
OPTIONS: tuple[Option, ...] = (
    Option(("--fn", "-f"), "function.name", COMPUTING, INPUTS, metavar="FUNC",
           complete=_complete_function, api=False,
           help="A preset (see `jaccli presets`), path/to/file.py:func or package.module:func. "
           "A file or module runs with your rights, as `python file.py` would."),
    Option(("--expr", "-e"), "function.expression", COMPUTING, INPUTS, metavar="EXPR", api=False,
           help='A safe one-line expression of the inputs, such as "x.sin() * a" or '
           '"(x ** 2).sum()".'),
    Option(("--shape", "-s"), "inputs.shapes", COMPUTING, INPUTS, repeatable=True, parse=_shapes,
           metavar="[NAME=]SHAPE",
           help="An input's shape: 2x3, 4, scalar; NAME=2x3 for a named input. Repeatable."),
    Option("--value", "inputs.values", COMPUTING, INPUTS, repeatable=True, parse=_named_values,
           metavar="NAME=VALUE",
           help="An input's values: NAME='[[1,2],[3,4]]' (JSON), NAME=@file (.npy, .pt, "
           ".safetensors, .json; @file#key picks a safetensors tensor), NAME=@- (JSON on "
           "stdin). Repeatable."),
    Option("--wrt", "inputs.wrt", COMPUTING, INPUTS, repeatable=True, parse=_tuple,
           metavar="NAME",
           help="Differentiate with respect to this input. Repeatable. \\[default: all]"),
    Option("--output", "inputs.output", COMPUTING, INPUTS, metavar="NAME",
           help="Keep only this output of a function that returns several (a tuple's y0, y1…, "
           "a dict's keys, nested ones as y0.1): its J, det, H or check alone."),
    Option("--points", "points.sources", COMPUTING, POINTS, repeatable=True, parse=_points,
           metavar="NAME=SOURCE",
           help="NAME=@FILE: many values of an input along a new leading axis (.npy, .pt, "
           ".safetensors, .json, .jsonl one point a line), or NAME=@- (JSON Lines on stdin, "
           "answered as they come). Results gain a leading point axis. Repeatable."),
    Option("--jsonl", "points.jsonl", COMPUTING, POINTS, default=False, api=False,
           help="With --points: one JSON document per point, a line each."),
    Option("--keep-going", "points.keep_going", COMPUTING, POINTS, default=False, api=False,
           help="With --jsonl: a failed point gets an error line and the rest go on."),
    Option("--batch-axis", "inputs.batch_axes", (JACOBIAN, DET, VJP, JVP), INPUTS,
           repeatable=True, parse=_batch_axes, metavar="NAME=AXIS",
           help="NAME=AXIS: f acts on each slice of NAME along AXIS alone, and the output's "
           "AXIS follows it (per-sample blocks for --batched, views). Verified before it is "
           "trusted. Repeatable. \\[default: a preset's own axes; an expression's from its "
           "syntax]"),
    Option("--cotangent", "compute.direction", (VJP,), COMPUTE, default="ones", metavar="V",
           choices=("ones", "randn"),
           help="v in y's shape: ones, randn (seeded), a JSON array, a JSON object with an "
           'array for each output ({"y0": [...], "y1": [...]}), or @FILE as for --value '
           "(@- for JSON on stdin)."),
    Option("--tangent", "compute.direction", (JVP,), COMPUTE, default="ones", metavar="V",
           choices=("ones", "randn"), help=DIRECTION_IN_INPUTS_HELP),
    Option("--vector", "compute.direction", (HVP,), COMPUTE, default="ones", metavar="V",
           choices=("ones", "randn"), help=DIRECTION_IN_INPUTS_HELP),
    Option("--seed", "inputs.seed", COMPUTING, INPUTS, default=0, metavar="INT",
           help="Seed of the standard-normal input values."),
    Option("--dtype", "inputs.dtype", SHOWING, INPUTS, default="float32", parse=_dtype,
           metavar="DTYPE", choices=spec.DTYPES, help="float32 or float64."),
    Option("--strategy", "compute.strategy", DRAWING, COMPUTE, default="auto", parse=_strategy,
           metavar="STRATEGY", choices=STRATEGIES,
           help="auto, loop, rev (reverse mode) or fwd (forward mode)."),
    Option("--view", VIEW_FIELDS, (JACOBIAN,), COMPUTE, parse=_view, metavar="VIEW",
           choices=(*spec.SLICE_VIEWS, *spec.PICTURE_VIEWS),
           help="rows, cols or full: J rebuilt slice by slice along a separable axis; heatmap "
           "or sparsity: J drawn, or its non-zeros and structure. \\[default: full]"),
    Option("--view", VIEW_FIELDS, (VJP, JVP), COMPUTE, parse=_view, metavar="VIEW",
           choices=spec.SLICE_VIEWS,
           help="rows, cols or full: the product rebuilt slice by slice along a separable axis. "
           "\\[default: the natural view of a single input, else full]"),
    Option("--view", VIEW_FIELDS, (DET, HESSIAN), COMPUTE, parse=_view, metavar="VIEW",
           choices=spec.PICTURE_VIEWS,
           help="heatmap or sparsity: J drawn, or its non-zeros and structure, instead of its "
           "numbers."),
    Option("--check", "compute.check", SHOWING, COMPUTE, default=False,
           help="Verify the result by independent means; exit 1 if it fails."),
    Option("--rtol", "compute.rtol", COMPUTING, COMPUTE, annotation=float | None, metavar="FLOAT",
           help="Relative tolerance of the check's comparisons. \\[default: by dtype and "
           "reference]"),
    Option("--atol", "compute.atol", COMPUTING, COMPUTE, annotation=float | None, metavar="FLOAT",
           help="Absolute tolerance of the check's comparisons, times max(1, |reference|). "
           "\\[default: by dtype and reference]"),
    Option("--eps", "compute.eps", COMPUTING, COMPUTE, annotation=float | None, metavar="FLOAT",
           help="The check's finite-difference step, times max(1, |x|). \\[default: 1e-6]"),
    Option("--batched", "compute.batched", (JACOBIAN,), COMPUTE, default=False,
           help="Only the diagonal blocks along the function's separable axis, "
           "shape (B,) + y_sample + x_sample."),
    Option("--batched", "compute.batched", (DET,), COMPUTE, default=False,
           help="det of each diagonal block along the function's separable axis, shape (B,): "
           "the log|det J| of a normalizing flow, without the dense J."),
    Option("--sparse", "compute.sparse", SPARSE, COMPUTE, default=False, parse=_sparse,
           help="J (H for hessian) as a sparse matrix: its pattern traced through the function, "
           "one JVP or VJP per colour of its columns or rows, never densified. Tables list each "
           "row's non-zeros; --json gives COO blocks; --out writes .npz, .mtx, .pt or "
           ".safetensors."),
    Option("--sparsity", "compute.sparsity", SPARSE, COMPUTE, metavar="FILE", parse=_sparsity,
           help="J's sparsity pattern from a file (.npz as scipy.sparse.save_npz writes it, or "
           ".mtx), rows the outputs flattened, columns the --wrt inputs flattened; implies "
           "--sparse. A pattern that misses a non-zero is refused, never printed."),
    Option("--plan", "compute.plan", DRAWING, COMPUTE, default=False,
           help="Show sizes, memory and the strategy, and why, without computing."),
    Option("--precision", "show.precision", SHOWING, OUTPUT, default=4, metavar="0-17",
           limits=(0, 17), help="Decimals shown in tables."),
    Option("--full", "show.full", SHOWING, OUTPUT, default=False,
           help="Show every entry of large tables."),
    Option("--json", "show.json", (*COMPUTING, PRESETS), OUTPUT, name="json_", default=False,
           api=False, help="Print one JSON document instead of tables."),
    Option("--format", "show.text_format", SHOWING, OUTPUT, name="text_format",
           parse=_text_format, metavar="FORMAT", choices=spec.TEXT_FORMATS, api=False,
           help="markdown (GitHub tables) or latex (bmatrix): the result as text to paste."),
    Option("--out", "show.out", (JACOBIAN,), OUTPUT, parse=_out, metavar="FILE",
           help="Also write the result to a .npy, .pt, .safetensors or .csv file, or draw its "
           "heat map (its non-zeros with --view sparsity) to a .png, .svg or .pdf file; or "
           "compute J (at every --points) block by block into a .zarr store, within "
           "--max-memory whatever its size (pip install 'jaccli\\[zarr]')."),
    Option("--out", "show.out", (HESSIAN,), OUTPUT, parse=_out, metavar="FILE",
           help="Also write the result to a .npy, .pt, .safetensors or .csv file, or draw its "
           "heat map (its non-zeros with --view sparsity) to a .png, .svg or .pdf file; or "
           "compute H (at every --points) block by block into a .zarr store, within "
           "--max-memory whatever its size (pip install 'jaccli\\[zarr]')."),
    Option("--out", "show.out", (DET,), OUTPUT, parse=_out, metavar="FILE",
           help="Also write the result to a .npy, .pt, .safetensors or .csv file, or draw its "
           "heat map (its non-zeros with --view sparsity) to a .png, .svg or .pdf file."),
    Option("--out", "show.out", PRODUCTS, OUTPUT, parse=_out, metavar="FILE",
           help="Also write the result to a .npy, .pt, .safetensors or .csv file."),
    Option("--force", "show.force", SHOWING, OUTPUT, default=False,
           help="Let --out replace an existing file (a .zarr store only if jaccli wrote it)."),
    Option("--resume", "compute.resume", STORING, OUTPUT, default=False,
           help="Complete the --out .zarr store a stopped or killed run of the same computation "
           "left: its finished blocks are kept, the rest computed."),
    Option("--cluster", "compute.cluster", STORING, COMPUTE, parse=_cluster,
           metavar="CLUSTER",
           help="Compute the blocks of --out .zarr as Dask tasks: local:N, N worker processes here "
           "(local: one a core), or on the workers of a running scheduler "
           "(pip install 'jaccli\\[dask]')."),
    Option("--max-memory", ("limits.budget", "limits.budget_note"), COMPUTING, LIMITS,
           parse=_budget, metavar="SIZE",
           help="Refuse work estimated above this size, like 2GiB. "
           "\\[default: the smaller of 4 GiB and half the available memory]"),
    Option("--max-value-size", "limits.value_limit", COMPUTING, LIMITS, parse=_value_limit,
           metavar="SIZE",
           help="Largest --value file or JSON text read, like 1GiB. \\[default: 256MiB]"),
    Option("--timeout", "limits.timeout", COMPUTING, LIMITS, parse=_timeout, metavar="SECONDS",
           help="Stop the computation after this many seconds, torch's start-up not counted "
           "(exit 1, saying where your function was). \\[default: no limit]"),
    Option("--device", "inputs.device", COMPUTING, INPUTS, default="cpu", metavar="DEVICE",
           choices=("cpu", "cuda", "mps"),
           help="cpu, cuda, cuda:N or mps: where inputs, constants and the function's tensors "
           "live; results come back to the CPU. One not available here exits 2."),
    Option("--traceback", "show.traceback", COMPUTING, OUTPUT, default=False, api=False,
           help="Show the Python traceback of an error."),
)
# fmt: on
"""Every option, in the order each command's help lists them."""

FIXED: dict[str, dict[str, Any]] = {
    CHECK: {"inputs.dtype": "float64", "compute.check": True},
}
"""What a command sets that others leave to an option: `check` checks, in float64."""


@dataclass(frozen=True)
class Refusal:
    """A combination of options that cannot mean anything, refused before any work."""

    commands: tuple[str, ...]
    refused: Callable[[Parsed], str | None]
    """The one-line message, or None when the options go together."""
    code: str = "usage"


def _stdin_twice(parsed: Parsed) -> str | None:
    """A vector on stdin (`--cotangent @-`) beside a --value or --points that reads it too."""
    direction = parsed["compute.direction"]
    if not isinstance(direction, str) or direction.strip() != "@-":
        return None
    option = next(o for o in options_of(parsed.command) if "compute.direction" in o.fields)
    for source_option, name in (("--value", "value"), ("--points", "points")):
        for text in parsed.raw.get(name) or ():
            if isinstance(text, str) and text.rpartition("=")[2].strip() == "@-":
                return (
                    f"{option.flags[0]} @- and {source_option} {text} both read stdin; "
                    "give one a file"
                )
    return None


def _format_beside(parsed: Parsed) -> str | None:
    text_format = parsed["show.text_format"]
    if text_format is None:
        return None
    if parsed["show.json"]:
        return f"--format {text_format} and --json both print the result; pick one"
    view = parsed["compute.picture"] or parsed["compute.view"]
    if view not in (None, "full"):
        return f"--format {text_format} prints the numbers; drop --view {view}"
    return None


def _picture_batched(parsed: Parsed) -> str | None:
    picture = parsed["compute.picture"]
    if picture is not None and parsed["compute.batched"]:
        return f"--view {picture} draws the whole J; drop --batched"
    return None


def _batched_beside(parsed: Parsed) -> str | None:
    if not parsed["compute.batched"]:
        return None
    if parsed["compute.view"] is not None:
        return "--batched already shows J block by block; drop --view"
    if parsed["compute.check"]:
        return "--batched already shows J block by block; drop --check"
    return None


def _points_printing(parsed: Parsed) -> str | None:
    points, jsonl = parsed.has("points"), parsed["points.jsonl"]
    if parsed["points.keep_going"] and not jsonl:
        return "--keep-going goes on past a failed point of a --jsonl stream; add --jsonl"
    if jsonl and not points:
        return "--jsonl prints a line per point; give --points NAME=@FILE or NAME=@-"
    if jsonl and parsed["show.json"]:
        return "--jsonl and --json are two ways of printing; choose one"
    return None


def _points_sources(parsed: Parsed) -> str | None:
    sources = parsed["points.sources"]
    names = [name for name, _ in sources]
    streams = [name for name, source in sources if source == spec.STREAM]
    if streams and parsed["compute.plan"]:
        return "--plan with --points NAME=@- would read the stream; give a file"
    if len(set(names)) != len(names):
        return "--points given twice for the same input"
    if streams and len(sources) > 1:
        return "--points NAME=@- streams one input; give the others as files"
    return None


def _picture_file(parsed: Parsed) -> str | None:
    """--out j.png draws one whole J: refused beside what gives something else."""
    from jaccli.render.files import IMAGE_SUFFIXES

    out = parsed["show.out"]
    if out is None or out.suffix not in IMAGE_SUFFIXES:
        return None
    refused = [("--batched", parsed["compute.batched"]), ("--points", parsed.has("points"))]
    for option, given in refused:
        if given:
            return f"--out {str(out)!r} draws one whole J; drop {option}, or write .npy"
    return None


def _one_point_only(parsed: Parsed) -> str | None:
    """What works at one point, refused with --points (but for --plan, which reads one)."""
    if not parsed.has("points") or parsed["compute.plan"]:
        return None
    picture = parsed["compute.picture"]
    for given, option in (
        (parsed["compute.view"] not in (None, "full"), "--view"),
        (picture is not None, f"--view {picture}"),
        (parsed["show.text_format"] is not None, "--format"),
        (parsed["compute.batched"], "--batched"),
        (parsed["compute.check"] and parsed.command != CHECK,
         "--check (use jaccli check --points)"),
    ):  # fmt: skip
        if given:
            return f"{option} works at one point; drop it, or --points"
    return None


def _sparse_beside(parsed: Parsed) -> str | None:
    """What a sparse J cannot give: blocks, slices, dense text, a loop of passes."""
    if not parsed["compute.sparse"]:
        return None
    if parsed.command in (JACOBIAN, DET) and parsed["compute.batched"]:
        return "--sparse computes the whole J from its non-zeros; drop --batched"
    view = parsed["compute.view"]
    if view is not None:
        return f"--view {view} rebuilds J slice by slice; with --sparse use --view sparsity|heatmap"
    text_format = parsed["show.text_format"]
    if text_format is not None:
        return (
            f"--format {text_format} prints a dense J; with --sparse use --json (COO blocks) or "
            "--out j.mtx"
        )
    if parsed["points.sources"] and parsed["show.out"] is not None:
        return "--out holds one sparse J; with --points use --json or --jsonl (COO blocks)"
    if parsed.command in DRAWING and parsed["compute.strategy"] == "loop":
        return "--sparse makes one pass a colour; use --strategy auto, fwd or rev"
    return None


def _store_options(parsed: Parsed) -> str | None:
    """--resume and --cluster need --out .zarr; what needs the whole J in memory, or one
    process, is refused beside it."""
    out = parsed["show.out"]
    if out is None or out.suffix != STORE_SUFFIX:
        for option, given in (("--resume", parsed["compute.resume"]),
                              ("--cluster", parsed["compute.cluster"] is not None)):  # fmt: skip
            if given:
                return f"{option} works with --out NAME.zarr (J stored block by block); add one"
        return None
    if parsed["compute.resume"] and parsed["show.force"]:
        return "give one of --resume and --force: resume keeps the store, force replaces it"
    sources = parsed["points.sources"]
    matrix = "H" if parsed.command == HESSIAN else "J"
    in_memory = (
        (parsed["show.json"] and not parsed["compute.plan"], f"--json ({matrix} is in the store)"),
        (parsed["show.text_format"] is not None, "--format"),
        (parsed["compute.view"] is not None or parsed["compute.picture"] is not None, "--view"),
        (parsed["compute.check"], "--check (each block is guarded; see the store's guard)"),
        (parsed["compute.batched"], "--batched"),
        (parsed["compute.sparse"], "--sparse (a sparse J goes to .npz, .mtx or .pt)"),
        (parsed["compute.strategy"] == "loop", "--strategy loop"),
        (parsed["inputs.device"] != "cpu", "--device"),
        (parsed["points.jsonl"], "--jsonl"),
        (len(sources) > 1, "more than one --points"),
        (any(source == spec.STREAM for _, source in sources), "--points NAME=@-"),
    )
    for given, option in in_memory:
        if given:
            return f"--out {out.name} stores {matrix} block by block; {option} does not go with it"
    replaced = parsed["compute.plan"] or parsed["compute.resume"] or parsed["show.force"]
    if not replaced and os.path.lexists(out):
        return f"--out {out} exists; add --resume to complete it, or --force to replace it"
    return None


REFUSALS: tuple[Refusal, ...] = (
    Refusal(PRODUCTS, _stdin_twice),
    Refusal(SHOWING, _format_beside),
    Refusal((JACOBIAN, DET), _picture_batched),
    Refusal((JACOBIAN, DET), _batched_beside),
    Refusal(COMPUTING, _points_printing),
    Refusal(DRAWING, _picture_file, code="bad_out"),
    Refusal(COMPUTING, _one_point_only),
    Refusal(COMPUTING, _points_sources),
    Refusal(SPARSE, _sparse_beside),
    Refusal(STORING, _store_options, code="bad_out"),
)
"""Checked in this order, before the options they do not need are parsed: a combination that
cannot mean anything is named first, whatever else is wrong."""

_GROUPS = {
    "function": FunctionChoice,
    "inputs": Inputs,
    "points": Points,
    "compute": Compute,
    "show": Show,
    "limits": Limits,
}


def parse(command: str, given: Mapping[str, Any]) -> Request:
    """The Request `given` asks for: `given` maps option names to raw values (Typer's, or the
    API's keyword arguments); an option not given takes its default. The command's refusals
    are checked first (parsing what they look at), then every option, in the table's order."""
    parsed = Parsed(command, given)
    for field, value in FIXED.get(command, {}).items():
        parsed.fields[field] = value
    for refusal in REFUSALS:
        if command in refusal.commands:
            message = refusal.refused(parsed)
            if message is not None:
                raise UsageError(message, code=refusal.code)
    for option in options_of(command):
        parsed[option.fields[0]]
    return _request(command, parsed.fields)


def _request(command: str, fields: dict[str, Any]) -> Request:
    groups = {
        name: group(**{f.split(".")[1]: v for f, v in fields.items() if f.split(".")[0] == name})
        for name, group in _GROUPS.items()
    }
    points = groups.pop("points")
    compute = dataclasses.replace(groups.pop("compute"), points=points if points.sources else None)
    return Request(command, compute=compute, **groups)
