"""The Typer app: parse options, call spec, functions, engine and render, map errors to exit codes.

The only module that imports Typer. torch is imported inside the commands that compute, so
`jaccli --help` and `jaccli presets` never pay for it.
"""

from __future__ import annotations

import inspect
import sys
import traceback as traceback_module
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import RenderableType
from typer.core import TyperGroup

from jaccli import memory, messages, spec
from jaccli.errors import ExitCode, Interrupt, JaccliError, UsageError
from jaccli.functions import PRESETS, resolve
from jaccli.functions.presets import square_jacobian
from jaccli.output import (
    emit_json,
    emit_rich,
    report_error,
    result_console,
    results_kept_apart,
    write,
    write_result,
)
from jaccli.overview import COMMANDS, DESCRIPTION, VERSION_HELP
from jaccli.spec import ArrayData
from jaccli.timeout import (
    Expired,
    TimedOut,
    Timeout,
    clock_pending,
    parse_timeout,
    start_clock,
    time_limit,
    timeout_error,
)

if TYPE_CHECKING:
    from jaccli.engine import Problem

# Click's base exception, found through Typer so it works whether Typer vendors Click or not.
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class JaccliGroup(TyperGroup):
    """Turns Click's own usage errors into the one-line form every other error has."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
        try:
            status = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                write(sys.stderr, error.format_message() + "\n")
                sys.exit(ExitCode.USAGE)
            report_error("jaccli", "usage", error.format_message(), "--json" in argv)
            sys.exit(getattr(error, "exit_code", ExitCode.USAGE))
        except typer.Abort:
            sys.exit(ExitCode.INTERRUPTED)
        sys.exit(status if isinstance(status, int) else ExitCode.OK)


app = typer.Typer(
    cls=JaccliGroup,
    name="jaccli",
    help=DESCRIPTION,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


EXAMPLES = {
    "jacobian": [
        "jaccli jacobian --fn expsum --shape 2x3",
        'jaccli jacobian --expr "x.sin() * a" --shape x=3 --shape a=3 --wrt x --json',
        "jaccli jacobian --fn model.py:f --shape 64x16 --view heatmap --out j.png",
    ],
    "det": [
        "jaccli det --fn spherical --value 'x=[2, 0.5, 1]' --dtype float64",
        "jaccli det --fn planar_flow --shape x=4096x16 --batched",
    ],
    "vjp": [
        "jaccli vjp --fn matmul --wrt a",
        "jaccli vjp --fn matmul --cotangent '[[1, 0], [0, 0]]' --json",
    ],
    "jvp": [
        "jaccli jvp --fn expsum --tangent ones",
        "jaccli jvp --fn polar --tangent '[1, 0]' --check",
    ],
    "hessian": [
        "jaccli hessian --fn logsumexp --shape 4",
        'jaccli hessian --expr "(x ** 4).sum()" --shape 50 --view sparsity',
    ],
    "hvp": [
        "jaccli hvp --fn logsumexp --vector ones",
        'jaccli hvp --expr "(x.sin() * x).sum()" --shape 1000000 --out hv.npy',
    ],
    "check_command": [
        "jaccli check --fn expsum",
        "jaccli check --fn model.py:f --shape 8x4 --wrt x",
    ],
    "presets": ["jaccli presets", "jaccli presets --json"],
}
"""Shown at the end of each command's help."""


def _examples(command: str) -> str:
    """The command's examples as a help epilog (Rich markup: brackets escaped)."""
    lines = (line.replace("[", "\\[") for line in EXAMPLES[command])
    return "Examples:\n\n" + "\n\n".join(lines)


def _show_version(asked: bool) -> None:
    """`jaccli --version`: jaccli's, torch's and Python's versions, without importing torch."""
    if not asked:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from jaccli import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    with reporting("jaccli", False, False):
        write_result(
            f"jaccli {__version__}, torch {torch_version}, Python {platform.python_version()}\n"
        )
    raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help=VERSION_HELP,
        ),
    ] = False,
) -> None:
    """The app's own options; its help text is `overview.DESCRIPTION`."""


@contextmanager
def reporting(
    command: str, as_json: bool, show_traceback: bool, computing: Computing | None = None
) -> Iterator[None]:
    """The error boundary: JaccliError becomes one line and its exit code, never a traceback.

    Inside it the result is written to stdout by jaccli alone (NOTE [only jaccli writes to
    stdout] in output.py), and the run stops at `computing`'s --timeout. Python warnings raised
    meanwhile (torch's, numpy's, the user's) are held back and printed as one-line jaccli
    warnings, without the install paths Python's own form shows.
    """
    limit = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            with _error_boundary(command, as_json, show_traceback, lambda: limit):
                limit = computing.time_limit() if computing is not None else None
                with results_kept_apart(), time_limit(limit):
                    yield
        finally:
            memory.release()
            for text in dict.fromkeys(_warning_line(w) for w in caught if _worth_showing(w)):
                write(sys.stderr, f"{command}: warning: {text}\n")


def _worth_showing(caught: warnings.WarningMessage) -> bool:
    """A warning about the user's code or data, not torch's notes on its own internals."""
    return not issubclass(caught.category, DeprecationWarning | FutureWarning)


def _warning_line(caught: warnings.WarningMessage) -> str:
    text = str(caught.message).strip()
    return f"{caught.category.__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _interrupted(error: BaseException) -> bool:
    """Whether Ctrl-C is behind this error: Python wraps a KeyboardInterrupt that lands inside
    some machinery (a class body's __set_name__ during an import) in a RuntimeError."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _error_boundary(
    command: str,
    as_json: bool,
    show_traceback: bool,
    limit: Callable[[], Timeout | None] = lambda: None,
) -> Iterator[None]:
    try:
        yield
    except (typer.Exit, KeyboardInterrupt):
        raise
    except BrokenPipeError:  # the reader has all it wants (`| head`): end quietly
        raise typer.Exit(ExitCode.OK) from None
    except TimedOut as error:
        timeout = limit()
        assert timeout is not None
        _report(command, timeout_error(timeout, error.where), as_json, show_traceback)
    except Exception as error:
        if Interrupt.seen or _interrupted(error):
            raise KeyboardInterrupt from None
        timeout = limit()
        if timeout is not None and Expired.where is not None:  # TimedOut, wrapped in another
            error = timeout_error(timeout, Expired.where)
        _report(command, error, as_json, show_traceback)


def _report(command: str, error: Exception, as_json: bool, show_traceback: bool) -> NoReturn:
    """One line (and the JSON object) for the error, then its exit code."""
    if show_traceback:
        traceback_module.print_exc()
    if memory.out_of_memory(error):
        error = memory.refusal(error)
    if isinstance(error, JaccliError):
        report_error(command, error.code, error.message, as_json)
        raise typer.Exit(error.exit_code) from None
    message = (
        f"internal error: {type(error).__name__}: {messages.first_line(error)[:300]} "
        "(run with --traceback)"
    )
    report_error(command, "internal", message, as_json)
    raise typer.Exit(ExitCode.COMPUTATION) from None


def _layout(precision: int, full: bool) -> Any:
    from jaccli.render.tables import Layout

    console = result_console()
    return Layout(
        precision=precision,
        width=console.width,
        full=full,
        color=console.color_system is not None,
    )


def _complete_function(incomplete: str) -> list[str]:
    """Shell completion of --fn: the preset names that start with what was typed."""
    return [name for name in PRESETS if name.startswith(incomplete)]


def _choices(*choices: str) -> Callable[[str], list[str]]:
    """Shell completion of an option with fixed choices: those that start with what was typed."""

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


FnOption = Annotated[
    str | None,
    typer.Option(
        "--fn",
        "-f",
        autocompletion=_complete_function,
        help="A preset (see `jaccli presets`), path/to/file.py:func or package.module:func. "
        "A file or module runs with your rights, as `python file.py` would.",
        show_default=False,
        rich_help_panel="Function and inputs",
        metavar="FUNC",
    ),
]
ExprOption = Annotated[
    str | None,
    typer.Option(
        "--expr",
        "-e",
        help='A safe one-line expression of the inputs, such as "x.sin() * a" or "(x ** 2).sum()".',
        show_default=False,
        rich_help_panel="Function and inputs",
        metavar="EXPR",
    ),
]
ShapeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--shape",
        "-s",
        help="An input's shape: 2x3, 4, scalar; NAME=2x3 for a named input. Repeatable.",
        rich_help_panel="Function and inputs",
        metavar="[NAME=]SHAPE",
    ),
]
ValueOption = Annotated[
    list[str] | None,
    typer.Option(
        "--value",
        help="An input's values: NAME='[[1,2],[3,4]]' (JSON), NAME=@file (.npy, .pt, "
        ".safetensors, .json; @file#key picks a safetensors tensor), NAME=@- (JSON on stdin). "
        "Repeatable.",
        rich_help_panel="Function and inputs",
        metavar="NAME=VALUE",
    ),
]
WrtOption = Annotated[
    list[str] | None,
    typer.Option(
        "--wrt",
        help="Differentiate with respect to this input. Repeatable. \\[default: all]",
        rich_help_panel="Function and inputs",
        metavar="NAME",
    ),
]
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output",
        help="Keep only this output of a function that returns several (a tuple's y0, y1…, a "
        "dict's keys, nested ones as y0.1): its J, det, H or check alone.",
        show_default=False,
        rich_help_panel="Function and inputs",
        metavar="NAME",
    ),
]
SeedOption = Annotated[
    int,
    typer.Option(
        help="Seed of the standard-normal input values.",
        rich_help_panel="Function and inputs",
        metavar="INT",
    ),
]
DtypeOption = Annotated[
    str,
    typer.Option(
        help="float32 or float64.",
        autocompletion=_choices(*spec.DTYPES),
        rich_help_panel="Function and inputs",
        metavar="DTYPE",
    ),
]
PrecisionOption = Annotated[
    int,
    typer.Option(
        min=0, max=17, help="Decimals shown in tables.", rich_help_panel="Output", metavar="0-17"
    ),
]
FullOption = Annotated[
    bool, typer.Option("--full", help="Show every entry of large tables.", rich_help_panel="Output")
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON document instead of tables.", rich_help_panel="Output"
    ),
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="markdown (GitHub tables) or latex (bmatrix): the result as text to paste.",
        show_default=False,
        autocompletion=_choices(*spec.TEXT_FORMATS),
        rich_help_panel="Output",
        metavar="FORMAT",
    ),
]
MaxMemoryOption = Annotated[
    str | None,
    typer.Option(
        help="Refuse work estimated above this size, like 2GiB. "
        "\\[default: the smaller of 4 GiB and half the available memory]",
        show_default=False,
        rich_help_panel="Limits",
        metavar="SIZE",
    ),
]
BatchAxisOption = Annotated[
    list[str] | None,
    typer.Option(
        help="NAME=AXIS: f acts on each slice of NAME along AXIS alone, and the output's AXIS "
        "follows it (per-sample blocks for --batched, views). Verified before it is trusted. "
        "Repeatable. \\[default: a preset's own axes; an expression's from its syntax]",
        show_default=False,
        rich_help_panel="Function and inputs",
        metavar="NAME=AXIS",
    ),
]
PointsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--points",
        help="NAME=@FILE: many values of an input along a new leading axis (.npy, .pt, "
        ".safetensors, .json, .jsonl one point a line), or NAME=@- (JSON Lines on stdin, "
        "answered as they come). Results gain a leading point axis. Repeatable.",
        show_default=False,
        rich_help_panel="Many points",
        metavar="NAME=SOURCE",
    ),
]
JsonlOption = Annotated[
    bool,
    typer.Option(
        "--jsonl",
        help="With --points: one JSON document per point, a line each.",
        rich_help_panel="Many points",
    ),
]
KeepGoingOption = Annotated[
    bool,
    typer.Option(
        "--keep-going",
        help="With --jsonl: a failed point gets an error line and the rest go on.",
        rich_help_panel="Many points",
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        help="cpu, cuda, cuda:N or mps: where inputs, constants and the function's tensors "
        "live; results come back to the CPU. One not available here exits 2.",
        autocompletion=_choices("cpu", "cuda", "mps"),
        rich_help_panel="Function and inputs",
        metavar="DEVICE",
    ),
]
TracebackOption = Annotated[
    bool,
    typer.Option(
        "--traceback", help="Show the Python traceback of an error.", rich_help_panel="Output"
    ),
]


TimeoutOption = Annotated[
    str | None,
    typer.Option(
        help="Stop the computation after this many seconds, torch's start-up not counted "
        "(exit 1, saying where your function was). "
        "\\[default: no limit]",
        show_default=False,
        rich_help_panel="Limits",
        metavar="SECONDS",
    ),
]
MaxValueSizeOption = Annotated[
    str | None,
    typer.Option(
        help="Largest --value file or JSON text read, like 1GiB. \\[default: 256MiB]",
        show_default=False,
        rich_help_panel="Limits",
        metavar="SIZE",
    ),
]
OutOption = Annotated[
    str | None,
    typer.Option(
        help="Also write the result to a .npy, .pt, .safetensors or .csv file.",
        show_default=False,
        rich_help_panel="Output",
        metavar="FILE",
    ),
]
PictureOutOption = Annotated[
    str | None,
    typer.Option(
        "--out",
        help="Also write the result to a .npy, .pt, .safetensors or .csv file, or draw its "
        "heat map (its non-zeros with --view sparsity) to a .png, .svg or .pdf file.",
        show_default=False,
        rich_help_panel="Output",
        metavar="FILE",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="Let --out replace an existing file.", rich_help_panel="Output"),
]
ViewOption = Annotated[
    str | None,
    typer.Option(
        "--view",
        help="rows, cols or full: J rebuilt slice by slice along a separable axis; heatmap or "
        "sparsity: J drawn, or its non-zeros and structure. \\[default: full]",
        show_default=False,
        autocompletion=_choices(*spec.SLICE_VIEWS, *spec.PICTURE_VIEWS),
        rich_help_panel="What to compute",
        metavar="VIEW",
    ),
]
ProductViewOption = Annotated[
    str | None,
    typer.Option(
        "--view",
        help="rows, cols or full: the product rebuilt slice by slice along a separable axis. "
        "\\[default: the natural view of a single input, else full]",
        show_default=False,
        autocompletion=_choices(*spec.SLICE_VIEWS),
        rich_help_panel="What to compute",
        metavar="VIEW",
    ),
]
PictureViewOption = Annotated[
    str | None,
    typer.Option(
        "--view",
        help="heatmap or sparsity: J drawn, or its non-zeros and structure, instead of its "
        "numbers.",
        show_default=False,
        autocompletion=_choices(*spec.PICTURE_VIEWS),
        rich_help_panel="What to compute",
        metavar="VIEW",
    ),
]
CheckOption = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Verify the result by independent means; exit 1 if it fails.",
        rich_help_panel="What to compute",
    ),
]
RtolOption = Annotated[
    float | None,
    typer.Option(
        help="Relative tolerance of the check's comparisons. \\[default: by dtype and reference]",
        show_default=False,
        rich_help_panel="What to compute",
        metavar="FLOAT",
    ),
]
AtolOption = Annotated[
    float | None,
    typer.Option(
        help="Absolute tolerance of the check's comparisons, times max(1, |reference|). "
        "\\[default: by dtype and reference]",
        show_default=False,
        rich_help_panel="What to compute",
        metavar="FLOAT",
    ),
]
EpsOption = Annotated[
    float | None,
    typer.Option(
        help="The check's finite-difference step, times max(1, |x|). \\[default: 1e-6]",
        show_default=False,
        rich_help_panel="What to compute",
        metavar="FLOAT",
    ),
]


StrategyOption = Annotated[
    str,
    typer.Option(
        help="auto, loop, rev (reverse mode) or fwd (forward mode).",
        autocompletion=_choices("auto", "loop", "rev", "fwd"),
        rich_help_panel="What to compute",
        metavar="STRATEGY",
    ),
]
DIRECTION_IN_INPUTS_HELP = (
    "v in the shape of the input: ones, randn (seeded), a JSON array, a JSON object with an "
    'array for each --wrt input ({"a": [...], "b": [...]}), or @FILE as for --value (@- for '
    "JSON on stdin)."
)
"""The help of --tangent and --vector."""
PlanOption = Annotated[
    bool,
    typer.Option(
        "--plan",
        help="Show sizes, memory and the strategy, and why, without computing.",
        rich_help_panel="What to compute",
    ),
]


def _problem(
    fn: str | None,
    expr: str | None,
    shape: Sequence[str] | None,
    value: Sequence[str] | None,
    wrt: Sequence[str] | None,
    seed: int,
    dtype: str,
    budget: int | None,
    max_value_size: str | None,
    *,
    shapes_only: bool = False,
    batch_axis: Sequence[str] = (),
    values: Sequence[tuple[str, ArrayData]] = (),
    device: str = "cpu",
    output: str | None = None,
) -> Problem:
    """Parse the options every computing command shares and build the engine's Problem (this
    imports torch); `values` are inputs' values already read (the first of --points)."""
    value_limit = _value_limit(max_value_size)
    batch_axes = [spec.parse_batch_axis_option(text) for text in batch_axis]
    shape_options = [spec.parse_shape_option(text) for text in shape or ()]
    value_options = [spec.parse_value_option(text, value_limit) for text in value or ()]
    given_names = [name or "x" for name, _ in (*shape_options, *value_options, *values)]
    if clock_pending():
        import jaccli.engine  # noqa: F401 (torch's start-up is not the function's time)

        start_clock()
    function = resolve(fn, expr, given_names, value_limit)
    dtype_name = spec.parse_dtype(dtype)
    from jaccli.engine import prepare
    from jaccli.engine.device import on_device, resolve_device

    place = resolve_device(device)
    problem = prepare(
        function,
        shape_options=shape_options,
        value_options=value_options,
        point_options=values,
        wrt=wrt or (),
        seed=seed,
        dtype=dtype_name,
        budget=budget,
        shapes_only=shapes_only,
        batch_axes=batch_axes,
        output=output,
    )
    return problem if shapes_only else on_device(problem, place)


def _show_plan(
    command: str,
    problem: Problem,
    strategy: Any,
    budget: int | None,
    batched: bool,
    json_: bool,
    points: tuple[Problem, int] | None = None,
) -> None:
    """Print what computing J would take (at each of `points`: the problem at the first, and
    how many); exit 3 when it would not fit the budget."""

    from jaccli.engine import plan_report

    report = plan_report(problem, strategy, budget=budget, batched=batched)
    if points is not None:
        from jaccli.engine.many import plan_points

        at_first, count = points
        report = replace(report, points=plan_points(at_first, command, count, budget))
    if json_:
        from jaccli.render.plan import plan_document

        emit_json(plan_document(report, command))
    else:
        from jaccli.render.plan import plan_renderable

        emit_rich(plan_renderable(report))
    refused = report.plan.refused or (report.points.refused if report.points else None)
    if refused is not None:
        report_error(command, "memory_budget", refused, json_)
        raise typer.Exit(ExitCode.RESOURCE)


def _value_limit(max_value_size: str | None) -> int:
    return spec.DEFAULT_VALUE_LIMIT if max_value_size is None else spec.parse_bytes(max_value_size)


def _check_options(rtol: float | None, atol: float | None, eps: float | None) -> Any:
    from jaccli.engine.check import CheckOptions

    return CheckOptions(rtol, atol, eps)


def _budget(max_memory: str | None) -> int | None:
    """--max-memory in bytes (None: the default), no more than the machine has."""
    return None if max_memory is None else memory.fit_to_machine(spec.parse_bytes(max_memory))[0]


def _hold_budget(budget: int | None) -> None:
    """Let the kernel hold the budget from here on (NOTE [the budget holds for real] in
    jaccli/memory.py); this imports torch."""
    from jaccli.engine.guard import budget_or_default

    memory.hold(budget_or_default(budget))


def _strategy(name: str) -> Any:
    from jaccli.engine import Strategy

    try:
        return Strategy(name)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise UsageError(f"unknown --strategy {name!r} (choose {choices})") from None


def _out_path(out: str | None, force: bool, *, pictures: bool = False) -> Path | None:
    if out is None:
        return None
    from jaccli.render.files import checked_out_path

    return checked_out_path(out, force, pictures=pictures)


def _picture(result: Any, view: str | None, layout: Any, batched_hint: str | None) -> Any:
    """The picture `--view heatmap|sparsity` asks for, fitted to the terminal; else None."""
    if view not in spec.PICTURE_VIEWS:
        return None
    from jaccli.engine.structure import picture_of
    from jaccli.render.picture import frame

    return picture_of(result, view, *frame(result, view, layout), batched_hint=batched_hint)


def _check_format(text_format: str | None, json_: bool, result_view: str | None) -> None:
    """--format, refused with the options that print the result otherwise."""
    if text_format is None:
        return
    if text_format not in spec.TEXT_FORMATS:
        choices = ", ".join(spec.TEXT_FORMATS)
        raise UsageError(f"unknown --format {text_format!r} (choose {choices})")
    if json_:
        raise UsageError(f"--format {text_format} and --json both print the result; pick one")
    if result_view not in (None, "full"):
        raise UsageError(f"--format {text_format} prints the numbers; drop --view {result_view}")


def _check_picture_file(out: Path | None, *conflicts: tuple[bool, str]) -> None:
    """--out j.png draws one whole J: refused up front beside what gives something else."""
    from jaccli.render.files import IMAGE_SUFFIXES

    if out is None or out.suffix not in IMAGE_SUFFIXES:
        return
    for given, option in conflicts:
        if given:
            raise UsageError(
                f"--out {str(out)!r} draws one whole J; drop {option}, or write .npy",
                code="bad_out",
            )


def _split_view(view: str | None, batched: bool) -> tuple[str | None, str | None]:
    """(picture view, per-slice view) out of --view: a picture is drawn of the whole J."""
    if view not in spec.PICTURE_VIEWS:
        return None, view
    if batched:
        raise UsageError(f"--view {view} draws the whole J; drop --batched")
    return view, None


def _picture_only(view: str | None) -> str | None:
    """--view of det and hessian: a picture, or nothing."""
    if view is not None and view not in spec.PICTURE_VIEWS:
        raise UsageError(f"unknown --view {view!r} (choose {', '.join(spec.PICTURE_VIEWS)})")
    return view


def _batched_hint(problem: Problem) -> str | None:
    """What computes only J's blocks along axis 0 of its single input, if anything does."""
    if len(problem.wrt) != 1 or len(problem.output_shapes) != 1:
        return None
    (wrt,) = problem.wrt
    (y_shape,) = problem.output_shapes.values()
    axes = problem.function.input(wrt).separable.axes(problem.inputs[wrt].ndim, len(y_shape))
    return "--batched" if axes[:1] == ((0, 0),) else f"--batched --batch-axis {wrt}=0"


def _with_structure(document: Callable[[], dict[str, Any]], picture: Any) -> Any:
    """The document, with the `structure` of J when a picture of it was asked for."""
    if picture is None:
        return document
    from jaccli.render.document import structure_document

    return lambda: {**document(), "structure": structure_document(picture.structure)}


def _finish(
    command: str,
    result: Any,
    as_json: bool,
    document: Callable[[], dict[str, Any]],
    renderable: Callable[[], RenderableType],
    *,
    text_format: str | None = None,
    precision: int = 4,
    full: bool = False,
    out: Path | None = None,
    force: bool = False,
    budget: int | None = None,
    picture_view: str | None = None,
) -> None:
    """Write --out (a picture file as `picture_view` draws it), print the result (the JSON
    document, refused past the memory budget, the --format text, or the tables), then
    warnings; exit 1 when a check or a view failed."""
    if out is not None:
        _write_out(out, result, force, picture_view)
    if as_json:
        from jaccli.engine.guard import JSON_BYTES_PER_NUMBER, require_within_budget
        from jaccli.render.document import document_numbers

        numbers = document_numbers(result, jacobians=command != "check")
        require_within_budget(
            f"--json of the result ({numbers} numbers)",
            numbers * JSON_BYTES_PER_NUMBER,
            budget,
            "use --out for the numbers, or --view full",
        )
        emit_json(document())
    elif text_format is not None:
        from jaccli.render.text_formats import formatted

        write_result(formatted(result, text_format, precision, full))
    else:
        emit_rich(renderable(), full)
    for note in result.notes:
        write(sys.stderr, f"{command}: warning: {note}\n")
    if out is not None:
        write(sys.stderr, f"{command}: wrote {out}\n")
    if result.view is not None and not result.view.agrees:
        first = next(row for row in result.view.slices if not row.agrees)
        write(
            sys.stderr,
            f"{command}: view failed: slice {first.index} of {result.view.wrt} rebuilds the full "
            f"result only to within {first.max_difference:.3g}\n",
        )
        raise typer.Exit(ExitCode.COMPUTATION)
    if result.check is not None and not result.check.passed:
        from jaccli.render.checks import check_failure_line

        write(sys.stderr, f"{command}: {check_failure_line(result.check)}\n")
        raise typer.Exit(ExitCode.COMPUTATION)


def _write_out(out: Path, result: Any, force: bool, picture_view: str | None = None) -> None:
    """The result's arrays, or for .png, .svg and .pdf its heat map (a spy plot of its
    non-zeros with --view sparsity), written to --out."""
    from jaccli.render.files import IMAGE_SUFFIXES, publish, result_arrays, write_out

    if out.suffix not in IMAGE_SUFFIXES:
        write_out(out, result_arrays(result), force)
        return
    from jaccli.engine.structure import picture_of
    from jaccli.render.image import IMAGE_CELLS, draw_picture

    picture = picture_of(result, picture_view or "heatmap", IMAGE_CELLS, IMAGE_CELLS)
    publish(out, lambda path: draw_picture(picture, path, out.suffix[1:]), force)


@app.command(short_help=COMMANDS["jacobian"], epilog=_examples("jacobian"))
def jacobian(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    batch_axis: BatchAxisOption = None,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    strategy: StrategyOption = "auto",
    view: ViewOption = None,
    check: CheckOption = False,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    batched: Annotated[
        bool,
        typer.Option(
            "--batched",
            help="Only the diagonal blocks along the function's separable axis, "
            "shape (B,) + y_sample + x_sample.",
            rich_help_panel="What to compute",
        ),
    ] = False,
    plan: PlanOption = False,
    precision: PrecisionOption = 4,
    full: FullOption = False,
    json_: JsonOption = False,
    text_format: FormatOption = None,
    out: PictureOutOption = None,
    force: ForceOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Compute y = f(x) and its Jacobian J.

    J.shape == y.shape + x.shape, and J\\[i…, j…] = ∂y\\[i…]/∂x\\[j…].
    """
    _jacobian_command(
        "jacobian",
        Computing(
            fn,
            expr,
            shape,
            value,
            wrt,
            seed,
            dtype,
            max_memory,
            max_value_size,
            batch_axis,
            device,
            output,
            timeout,
        ),
        strategy,
        view=view,
        checking=(check, rtol, atol, eps),
        batched=batched,
        plan=plan,
        shown=(precision, full, json_, text_format),
        written=(out, force),
        traceback=traceback,
        points=(points, jsonl, keep_going),
    )


@dataclass(frozen=True)
class Computing:
    """The options every computing command shares: the function, its inputs and the limits."""

    fn: str | None
    expr: str | None
    shape: Sequence[str] | None
    value: Sequence[str] | None
    wrt: Sequence[str] | None
    seed: int
    dtype: str
    max_memory: str | None
    max_value_size: str | None
    batch_axis: Sequence[str] | None = None
    device: str = "cpu"
    output: str | None = None
    """--output: the one output kept of several."""
    timeout: str | None = None

    def time_limit(self) -> Timeout | None:
        """How long the run may take (--timeout), naming the function it runs."""
        seconds = parse_timeout(self.timeout)
        if seconds is None:
            return None
        return Timeout(seconds, self.fn if self.fn is not None else "the --expr expression")

    def problem(
        self,
        budget: int | None,
        *,
        shapes_only: bool = False,
        values: Sequence[tuple[str, ArrayData]] = (),
    ) -> Problem:
        """The Problem these options describe, with `values` for inputs already read, and
        the warning when --max-memory was reduced to the memory available."""
        _hold_budget(budget)
        problem = _problem(
            self.fn,
            self.expr,
            self.shape,
            self.value,
            self.wrt,
            self.seed,
            self.dtype,
            budget,
            self.max_value_size,
            shapes_only=shapes_only,
            batch_axis=self.batch_axis or (),
            values=values,
            device=self.device,
            output=self.output,
        )
        reduced = None
        if self.max_memory is not None:
            reduced = memory.fit_to_machine(spec.parse_bytes(self.max_memory))[1]
        return problem if reduced is None else replace(problem, notes=(reduced, *problem.notes))


def _points(points: Sequence[str] | None, jsonl: bool, keep_going: bool, json_: bool) -> Any:
    """The --points request, checked, or None when there are no points."""
    from jaccli.cli_points import PointsRequest, check_points_request

    request = PointsRequest(points or (), jsonl, keep_going)
    check_points_request(request, json_)
    return request if request.points else None


def _at_points(
    command: str,
    computing: Computing,
    request: Any,
    budget: int | None,
    single: Callable[[Problem, Any], Any],
    document: Callable[[Any], dict[str, Any]],
    renderable: Callable[[Any], RenderableType],
    *,
    shown: tuple[bool, bool],
    written: tuple[Path | None, bool],
    direction: Any = None,
    single_point_only: Sequence[tuple[bool, str]] = (),
) -> None:
    """The command at every point of --points (cli_points.py)."""
    from jaccli.cli_points import Printing, run_at_points

    for given, option in single_point_only:
        if given:
            raise UsageError(f"{option} works at one point; drop it, or --points")
    json_, full = shown
    out, force = written
    run_at_points(
        command,
        request,
        lambda values: computing.problem(budget, values=values),
        single,
        Printing(document, renderable, json_, full, out, force),
        direction=direction,
        budget=budget,
        size_limit=_value_limit(computing.max_value_size),
    )


def _jacobian_command(
    command: str,
    computing: Computing,
    strategy: str,
    *,
    view: str | None,
    checking: tuple[bool, float | None, float | None, float | None],
    batched: bool,
    plan: bool,
    shown: tuple[int, bool, bool, str | None],
    written: tuple[str | None, bool],
    traceback: bool,
    points: tuple[Sequence[str] | None, bool, bool] = (None, False, False),
) -> None:
    """`jacobian`, or `det` with det J under J: plan, or compute, then print and write."""
    check, rtol, atol, eps = checking
    precision, full, json_, text_format = shown
    out, force = written
    with reporting(command, json_, traceback, computing):
        if command == "det":
            _picture_only(view)
        picture_view, view = _split_view(view, batched)
        _check_format(text_format, json_, picture_view or view)
        out_path = None if plan else _out_path(out, force, pictures=True)
        budget = _budget(computing.max_memory)
        chosen = _strategy(strategy)
        check_options = _check_options(rtol, atol, eps)
        request = _points(*points, json_)
        _check_picture_file(out_path, (batched, "--batched"), (request is not None, "--points"))
        if request is not None and not plan:
            from jaccli.engine import run_det, run_jacobian
            from jaccli.render.document import jacobian_document
            from jaccli.render.tables import jacobian_renderable

            run = run_det if command == "det" else run_jacobian
            _at_points(
                command,
                computing,
                request,
                budget,
                lambda problem, _: run(problem, chosen, budget=budget),
                jacobian_document,
                lambda result: jacobian_renderable(result, _layout(precision, full)),
                shown=(json_, full),
                written=(out_path, force),
                single_point_only=[
                    (view not in (None, "full"), "--view"),
                    (picture_view is not None, f"--view {picture_view}"),
                    (text_format is not None, "--format"),
                    (batched, "--batched"),
                    (check, "--check (use jaccli check --points)"),
                ],
            )
            return
        first: list[tuple[str, ArrayData]] = []
        count = 0
        if plan and request is not None:
            from jaccli.cli_points import points_to_plan

            first, count = points_to_plan(request, _value_limit(computing.max_value_size))
        problem = computing.problem(budget, shapes_only=plan, values=first)
        determinant = command == "det"
        if determinant and problem.output_unknown is None:
            from jaccli.engine.det import require_square

            require_square(problem, batched)
        if plan:
            points_plan = (problem, count) if request is not None else None
            _show_plan(command, problem, chosen, budget, batched, json_, points_plan)
            return
        if out_path is not None:
            from jaccli.render.files import DETERMINANT_KEYS, check_array_count, jacobian_keys

            keys = jacobian_keys(list(problem.output_shapes), list(problem.wrt))
            check_array_count(out_path, keys + list(DETERMINANT_KEYS if determinant else ()))
        if json_:
            from jaccli.engine import require_json_fits

            require_json_fits(problem, budget, batched=batched)
        from jaccli.engine import run_det, run_jacobian
        from jaccli.render.progress import progress_bar

        with progress_bar(command) as progress:
            options = dict(budget=budget, check=check, batched=batched, progress=progress)
            if determinant:
                result = run_det(problem, chosen, **options, check_options=check_options)
            else:
                result = run_jacobian(
                    problem, chosen, **options, view=view, check_options=check_options
                )
        from jaccli.render.document import jacobian_document
        from jaccli.render.tables import jacobian_renderable

        layout = _layout(precision, full)
        picture = _picture(result, picture_view, layout, _batched_hint(problem))
        _finish(
            command,
            result,
            json_,
            _with_structure(lambda: jacobian_document(result), picture),
            lambda: jacobian_renderable(result, layout, picture),
            text_format=text_format,
            precision=precision,
            full=full,
            out=out_path,
            force=force,
            budget=budget,
            picture_view=picture_view,
        )


@app.command(short_help=COMMANDS["det"], epilog=_examples("det"))
def det(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    batch_axis: BatchAxisOption = None,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    strategy: StrategyOption = "auto",
    view: PictureViewOption = None,
    check: CheckOption = False,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    batched: Annotated[
        bool,
        typer.Option(
            "--batched",
            help="det of each diagonal block along the function's separable axis, shape (B,): "
            "the log|det J| of a normalizing flow, without the dense J.",
            rich_help_panel="What to compute",
        ),
    ] = False,
    plan: PlanOption = False,
    precision: PrecisionOption = 4,
    full: FullOption = False,
    json_: JsonOption = False,
    text_format: FormatOption = None,
    out: PictureOutOption = None,
    force: ForceOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Compute J and det J of a square Jacobian.

    With det J come its sign, log|det J| (no overflow) and the trace (the divergence). J must be
    square once flattened (y.numel() == x.numel()); with several --wrt, the joint J.
    """
    _jacobian_command(
        "det",
        Computing(
            fn,
            expr,
            shape,
            value,
            wrt,
            seed,
            dtype,
            max_memory,
            max_value_size,
            batch_axis,
            device,
            output,
            timeout,
        ),
        strategy,
        view=view,
        checking=(check, rtol, atol, eps),
        batched=batched,
        plan=plan,
        shown=(precision, full, json_, text_format),
        written=(out, force),
        traceback=traceback,
        points=(points, jsonl, keep_going),
    )


@dataclass(frozen=True)
class Product:
    """A product command: the vector it takes, how it runs, and how its result prints."""

    command: str
    option: str
    """`--cotangent`, `--tangent` or `--vector`."""
    part: str
    """Whose shapes the vector takes: `output` or `input`."""
    run: Callable[..., Any]
    """run_vjp, run_jvp or run_hvp: (problem, vector, **options) -> result."""
    document: Callable[[Any], dict[str, Any]]
    renderable: Callable[[Any, Any], RenderableType]
    """(result, layout) -> tables."""
    out_keys: Callable[[Problem], list[str]]
    options: Callable[..., dict[str, Any]]
    """The run's options beyond the check's, from (budget, view, progress)."""


def _product_command(
    product: Product,
    computing: Computing,
    vector: str,
    *,
    view: str | None,
    checking: tuple[bool, float | None, float | None, float | None],
    shown: tuple[int, bool, bool, str | None],
    written: tuple[str | None, bool],
    points: tuple[Sequence[str] | None, bool, bool],
    traceback: bool,
) -> None:
    """vjp, jvp or hvp: parse the vector, compute at one point or at --points, print, write."""
    check, rtol, atol, eps = checking
    precision, full, json_, text_format = shown
    out, force = written
    command = product.command
    with reporting(command, json_, traceback, computing):
        _check_format(text_format, json_, view)
        out_path = _out_path(out, force)
        limit = _value_limit(computing.max_value_size)
        _one_reader_of_stdin(
            product.option,
            vector,
            [
                *(("--value", v) for v in computing.value or ()),
                *(("--points", p) for p in points[0] or ()),
            ],
        )
        given = spec.parse_direction(vector, product.option, product.part, limit)
        check_options = _check_options(rtol, atol, eps)
        budget = _budget(computing.max_memory)

        def renderable(result: Any) -> RenderableType:
            return product.renderable(result, _layout(precision, full))

        request = _points(*points, json_)
        if request is not None:
            from jaccli.cli_points import DirectionRequest

            _at_points(
                command,
                computing,
                request,
                budget,
                lambda problem, vectors: product.run(
                    problem, vectors, **product.options(budget, "full", None)
                ),
                product.document,
                renderable,
                shown=(json_, full),
                written=(out_path, force),
                direction=DirectionRequest(given, product.option, product.part),
                single_point_only=[
                    (view not in (None, "full"), "--view"),
                    (text_format is not None, "--format"),
                    (check, "--check (use jaccli check --points)"),
                ],
            )
            return
        problem = computing.problem(budget)
        if out_path is not None:
            from jaccli.render.files import check_array_count

            check_array_count(out_path, product.out_keys(problem))
        from jaccli.render.progress import progress_bar

        with progress_bar(command) as progress:
            result = product.run(
                problem,
                given,
                check=check,
                check_options=check_options,
                **product.options(budget, view, progress),
            )
        _finish(
            command,
            result,
            json_,
            lambda: product.document(result),
            lambda: renderable(result),
            text_format=text_format,
            precision=precision,
            full=full,
            out=out_path,
            force=force,
            budget=budget,
        )


def _one_reader_of_stdin(option: str, vector: str, sources: Sequence[tuple[str, str]]) -> None:
    """Refuse `option @-` beside a --value or --points (`sources`) that reads stdin too."""
    if vector.strip() != "@-":
        return
    for source_option, source in sources:
        if source.rpartition("=")[2].strip() == "@-":
            raise UsageError(
                f"{option} @- and {source_option} {source} both read stdin; give one a file"
            )


def _vjp_product() -> Product:
    from jaccli.engine import run_vjp
    from jaccli.render.document import vjp_document
    from jaccli.render.tables import vjp_renderable

    return Product(
        "vjp",
        "--cotangent",
        "output",
        run_vjp,
        vjp_document,
        vjp_renderable,
        lambda problem: list(problem.wrt),
        lambda budget, view, progress: {"budget": budget, "view": view, "progress": progress},
    )


def _jvp_product() -> Product:
    from jaccli.engine import run_jvp
    from jaccli.render.document import jvp_document
    from jaccli.render.tables import jvp_renderable

    return Product(
        "jvp",
        "--tangent",
        "input",
        run_jvp,
        jvp_document,
        jvp_renderable,
        lambda problem: list(problem.output_shapes),
        lambda budget, view, progress: {"budget": budget, "view": view},
    )


def _hvp_product() -> Product:
    from jaccli.engine import run_hvp
    from jaccli.render.document import hvp_document
    from jaccli.render.second_order import hvp_renderable

    return Product(
        "hvp",
        "--vector",
        "input",
        run_hvp,
        hvp_document,
        hvp_renderable,
        lambda problem: list(problem.wrt),
        lambda budget, view, progress: {},
    )


@app.command(short_help=COMMANDS["vjp"], epilog=_examples("vjp"))
def vjp(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    batch_axis: BatchAxisOption = None,
    cotangent: Annotated[
        str,
        typer.Option(
            help="v in y's shape: ones, randn (seeded), a JSON array, a JSON object with an "
            'array for each output ({"y0": [...], "y1": [...]}), or @FILE as for --value '
            "(@- for JSON on stdin).",
            autocompletion=_choices("ones", "randn"),
            rich_help_panel="What to compute",
            metavar="V",
        ),
    ] = "ones",
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    view: ProductViewOption = None,
    check: CheckOption = False,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    precision: PrecisionOption = 4,
    full: FullOption = False,
    json_: JsonOption = False,
    text_format: FormatOption = None,
    out: OutOption = None,
    force: ForceOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Compute the vector-Jacobian product vᵀ·J.

    It is the x.grad that y.backward(v) leaves.
    """
    _product_command(
        _vjp_product(),
        Computing(
            fn,
            expr,
            shape,
            value,
            wrt,
            seed,
            dtype,
            max_memory,
            max_value_size,
            batch_axis,
            device,
            output,
            timeout,
        ),
        cotangent,
        view=view,
        checking=(check, rtol, atol, eps),
        shown=(precision, full, json_, text_format),
        written=(out, force),
        points=(points, jsonl, keep_going),
        traceback=traceback,
    )


@app.command(short_help=COMMANDS["jvp"], epilog=_examples("jvp"))
def jvp(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    batch_axis: BatchAxisOption = None,
    tangent: Annotated[
        str,
        typer.Option(
            help=DIRECTION_IN_INPUTS_HELP,
            autocompletion=_choices("ones", "randn"),
            rich_help_panel="What to compute",
            metavar="V",
        ),
    ] = "ones",
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    view: ProductViewOption = None,
    check: CheckOption = False,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    precision: PrecisionOption = 4,
    full: FullOption = False,
    json_: JsonOption = False,
    text_format: FormatOption = None,
    out: OutOption = None,
    force: ForceOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Compute the Jacobian-vector product J·v.

    By forward mode: how y changes along v. With several --wrt inputs the products add up,
    J·v = Σₖ Jₖ·vₖ, as torch.func.jvp has it.
    """
    _product_command(
        _jvp_product(),
        Computing(
            fn,
            expr,
            shape,
            value,
            wrt,
            seed,
            dtype,
            max_memory,
            max_value_size,
            batch_axis,
            device,
            output,
            timeout,
        ),
        tangent,
        view=view,
        checking=(check, rtol, atol, eps),
        shown=(precision, full, json_, text_format),
        written=(out, force),
        points=(points, jsonl, keep_going),
        traceback=traceback,
    )


@app.command(short_help=COMMANDS["hessian"], epilog=_examples("hessian"))
def hessian(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    strategy: StrategyOption = "auto",
    view: PictureViewOption = None,
    check: CheckOption = False,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    plan: PlanOption = False,
    precision: PrecisionOption = 4,
    full: FullOption = False,
    json_: JsonOption = False,
    text_format: FormatOption = None,
    out: PictureOutOption = None,
    force: ForceOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Compute the Hessian H = ∂²y/∂a∂b.

    For each output and every pair of --wrt inputs, H.shape == y.shape + a.shape + b.shape: the
    Jacobian of the gradient. --strategy fwd is forward-over-reverse (jacfwd of jacrev), rev
    and loop reverse-over-reverse.
    """
    computing = Computing(
        fn,
        expr,
        shape,
        value,
        wrt,
        seed,
        dtype,
        max_memory,
        max_value_size,
        device=device,
        output=output,
        timeout=timeout,
    )
    with reporting("hessian", json_, traceback, computing):
        picture_view = _picture_only(view)
        _check_format(text_format, json_, picture_view)
        out_path = None if plan else _out_path(out, force, pictures=True)
        budget = _budget(max_memory)
        chosen = _strategy(strategy)
        check_options = _check_options(rtol, atol, eps)
        request = _points(points, jsonl, keep_going, json_)
        _check_picture_file(out_path, (request is not None, "--points"))
        if request is not None and not plan:
            from jaccli.engine import run_hessian
            from jaccli.render.document import hessian_document
            from jaccli.render.second_order import hessian_renderable

            _at_points(
                "hessian",
                computing,
                request,
                budget,
                lambda problem, _: run_hessian(problem, chosen, budget=budget),
                hessian_document,
                lambda result: hessian_renderable(result, _layout(precision, full)),
                shown=(json_, full),
                written=(out_path, force),
                single_point_only=[
                    (check, "--check (use jaccli check --points)"),
                    (picture_view is not None, "--view"),
                    (text_format is not None, "--format"),
                ],
            )
            return
        first: list[tuple[str, ArrayData]] = []
        count = 0
        if plan and request is not None:
            from jaccli.cli_points import points_to_plan

            first, count = points_to_plan(request, _value_limit(computing.max_value_size))
        problem = computing.problem(budget, shapes_only=plan, values=first)
        from jaccli.engine.hessian import gradient_problem

        gradient = gradient_problem(problem)
        if plan:
            points_plan = (problem, count) if request is not None else None
            _show_plan("hessian", gradient, chosen, budget, False, json_, points_plan)
            return
        if out_path is not None:
            from jaccli.render.files import check_array_count, hessian_keys

            check_array_count(
                out_path, hessian_keys(list(problem.output_shapes), list(problem.wrt))
            )
        if json_:
            from jaccli.engine import require_json_fits

            require_json_fits(gradient, budget)
        from jaccli.engine import run_hessian
        from jaccli.render.progress import progress_bar

        with progress_bar("hessian") as progress:
            result = run_hessian(
                problem,
                chosen,
                budget=budget,
                check=check,
                progress=progress,
                check_options=check_options,
            )
        from jaccli.render.document import hessian_document
        from jaccli.render.second_order import hessian_renderable

        layout = _layout(precision, full)
        picture = _picture(result, picture_view, layout, None)
        _finish(
            "hessian",
            result,
            json_,
            _with_structure(lambda: hessian_document(result), picture),
            lambda: hessian_renderable(result, layout, picture),
            text_format=text_format,
            precision=precision,
            full=full,
            out=out_path,
            force=force,
            budget=budget,
            picture_view=picture_view,
        )


@app.command(short_help=COMMANDS["hvp"], epilog=_examples("hvp"))
def hvp(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    vector: Annotated[
        str,
        typer.Option(
            help=DIRECTION_IN_INPUTS_HELP,
            autocompletion=_choices("ones", "randn"),
            rich_help_panel="What to compute",
            metavar="V",
        ),
    ] = "ones",
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    check: CheckOption = False,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    precision: PrecisionOption = 4,
    full: FullOption = False,
    json_: JsonOption = False,
    text_format: FormatOption = None,
    out: OutOption = None,
    force: ForceOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Compute the Hessian-vector product H·v.

    Of a scalar output, without forming H: the JVP of the gradient (forward-over-reverse), in
    the memory of a few gradients.
    """
    _product_command(
        _hvp_product(),
        Computing(
            fn,
            expr,
            shape,
            value,
            wrt,
            seed,
            dtype,
            max_memory,
            max_value_size,
            None,
            device,
            output,
            timeout,
        ),
        vector,
        view=None,
        checking=(check, rtol, atol, eps),
        shown=(precision, full, json_, text_format),
        written=(out, force),
        points=(points, jsonl, keep_going),
        traceback=traceback,
    )


@app.command(
    "check",
    short_help=COMMANDS["check"],
    epilog=_examples("check_command"),
)
def check_command(
    fn: FnOption = None,
    expr: ExprOption = None,
    shape: ShapeOption = None,
    value: ValueOption = None,
    wrt: WrtOption = None,
    output: OutputOption = None,
    points: PointsOption = None,
    jsonl: JsonlOption = False,
    keep_going: KeepGoingOption = False,
    seed: SeedOption = 0,
    rtol: RtolOption = None,
    atol: AtolOption = None,
    eps: EpsOption = None,
    json_: JsonOption = False,
    max_memory: MaxMemoryOption = None,
    max_value_size: MaxValueSizeOption = None,
    timeout: TimeoutOption = None,
    device: DeviceOption = "cpu",
    traceback: TracebackOption = False,
) -> None:
    """Gradient-check a function in float64.

    AD against the other mode and finite differences. Exits 0 when every comparison passes and
    1 when one fails, so it can run in CI.
    """
    computing = Computing(
        fn,
        expr,
        shape,
        value,
        wrt,
        seed,
        "float64",
        max_memory,
        max_value_size,
        device=device,
        output=output,
        timeout=timeout,
    )
    with reporting("check", json_, traceback, computing):
        check_options = _check_options(rtol, atol, eps)
        budget = _budget(max_memory)
        request = _points(points, jsonl, keep_going, json_)
        if request is not None:
            from jaccli.engine import run_jacobian
            from jaccli.render.document import check_document
            from jaccli.render.tables import check_command_renderable

            _at_points(
                "check",
                computing,
                request,
                budget,
                lambda problem, _: run_jacobian(
                    problem, budget=budget, check=True, check_options=check_options
                ),
                check_document,
                lambda result: check_command_renderable(result, _layout(4, False)),
                shown=(json_, False),
                written=(None, False),
            )
            return
        problem = computing.problem(budget)
        from jaccli.engine import run_jacobian
        from jaccli.render.progress import progress_bar

        with progress_bar("check") as progress:
            result = run_jacobian(
                problem, budget=budget, check=True, progress=progress, check_options=check_options
            )
        from jaccli.render.document import check_document
        from jaccli.render.tables import check_command_renderable

        _finish(
            "check",
            result,
            json_,
            lambda: check_document(result),
            lambda: check_command_renderable(result, _layout(4, False)),
            budget=budget,
        )


@app.command(short_help=COMMANDS["presets"], epilog=_examples("presets"))
def presets(json_: JsonOption = False) -> None:
    """List the preset functions.

    Name, formula, inputs with their default shapes, and whether J is square.
    """
    functions = [(function, square_jacobian(function)) for function in PRESETS.values()]
    with reporting("presets", json_, False):
        if json_:
            from jaccli.render.document import presets_document

            emit_json(presets_document(functions))
        else:
            from jaccli.render.tables import presets_renderable

            emit_rich(presets_renderable(functions, result_console().width))


def _unwrap_help_paragraphs() -> None:
    """Each command's help is its docstring with the line breaks inside a paragraph joined:
    Typer's Rich help keeps them, which broke sentences mid-line at any terminal width."""
    for command in app.registered_commands:
        paragraphs = inspect.cleandoc(command.callback.__doc__ or "").split("\n\n")
        command.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


_unwrap_help_paragraphs()


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the app on `argv` (default sys.argv[1:]) and exit with its status."""
    app(args=list(argv) if argv is not None else None, prog_name="jaccli")
    raise AssertionError("unreachable: the app exits")
