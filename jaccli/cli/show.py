"""Printing an outcome: the JSON document, the --format text or the tables on stdout; the
warnings, the files written and what failed on stderr; the exit code of a failed check."""

from __future__ import annotations

import contextlib
import sys

import typer

from jaccli.errors import ExitCode, JaccliError
from jaccli.messages import visible
from jaccli.output import emit_json, emit_rich, report_error, result_console, write, write_result
from jaccli.render.layout import Layout
from jaccli.result import Result
from jaccli.runner import AtPoints, Computed, Listed, Outcome, Planned, Stored, Streamed


def show(outcome: Outcome) -> None:
    """Print the outcome as its request asks; exit 1 when a check or a view failed, 3 when a
    plan would not fit the memory budget."""
    if isinstance(outcome, Listed):
        _show_presets(outcome)
    elif isinstance(outcome, Planned):
        _show_plan(outcome)
    elif isinstance(outcome, Computed):
        _show_result(outcome)
    elif isinstance(outcome, AtPoints):
        _show_points(outcome)
    elif isinstance(outcome, Stored):
        _show_stored(outcome)
    else:
        _stream_lines(outcome)


def layout(precision: int = 4, full: bool = False) -> Layout:
    """How much of a result fits the terminal results go to."""
    console = result_console()
    return Layout(
        precision=precision, width=console.width, full=full, color=console.color_system is not None
    )


def _show_presets(outcome: Listed) -> None:
    if outcome.request.show.json:
        emit_json(outcome.document())
    else:
        from jaccli.render.tables import presets_renderable

        emit_rich(presets_renderable(outcome.functions, result_console().width))


def _show_plan(outcome: Planned) -> None:
    """What computing would take; exit 3 when it would not fit the budget."""
    request = outcome.request
    if request.show.json:
        emit_json(outcome.document())
    else:
        from jaccli.render.plan import plan_renderable

        emit_rich(plan_renderable(outcome.report, outcome.store))
    if outcome.refused is not None:
        report_error(request.command, "memory_budget", outcome.refused, request.show.json)
        raise typer.Exit(ExitCode.RESOURCE)


def _show_result(outcome: Computed) -> None:
    """Write --out, print the result (the JSON document, the --format text, or the tables with
    the picture asked for, fitted to the terminal), then the warnings."""
    request, result = outcome.request, outcome.result
    shown, command = request.show, request.command
    picture = None
    if not shown.json:  # measuring the terminal loads Rich, which a --json run never draws with
        fitted = layout(shown.precision, shown.full)
        if request.compute.picture is not None:
            from jaccli.render.picture import frame

            picture = outcome.picture(*frame(result, request.compute.picture, fitted))  # type: ignore[arg-type]
    out = outcome.write_out()
    if shown.json:
        emit_json(outcome.document())
    elif shown.text_format is not None:
        from jaccli.render.text_formats import formatted

        write_result(formatted(result, shown.text_format, shown.precision, shown.full))
    else:
        from jaccli.render.results import result_renderable

        emit_rich(result_renderable(command, result, fitted, picture), shown.full)
    _warnings(command, outcome.notes, out)
    if result.view is not None and not result.view.agrees:
        first = next(row for row in result.view.slices if not row.agrees)
        write(
            sys.stderr,
            f"{command}: view failed: slice {first.index} of {result.view.wrt} rebuilds the full "
            f"result only to within {first.max_difference:.3g}\n",
        )
        raise typer.Exit(ExitCode.COMPUTATION)
    if _check_failed(command, None, result):
        raise typer.Exit(ExitCode.COMPUTATION)


def _show_points(outcome: AtPoints) -> None:
    """--out of every point stacked, then one stacked document or the first point's tables."""
    request = outcome.request
    out = outcome.write_out()
    if request.show.json:
        emit_json(outcome.document())
    else:
        from jaccli.render.results import points_renderable

        fitted = layout(request.show.precision, request.show.full)
        emit_rich(points_renderable(request.command, outcome.results, fitted), request.show.full)
    _warnings(request.command, outcome.notes, out)
    failed = [
        k
        for k, result in outcome.results.made_one_by_one()
        if _check_failed(request.command, k, result)
    ]
    if failed:
        raise typer.Exit(ExitCode.COMPUTATION)


def _show_stored(outcome: Stored) -> None:
    """J is in the store: its warnings, then what was written, computed and kept, on stderr."""
    command = outcome.request.command
    _warnings(command, outcome.notes, None)
    write(sys.stderr, f"{command}: {visible(outcome.summary())}\n")


def _stream_lines(outcome: Streamed) -> None:
    """A JSON line per point, each written whole and flushed; a failed point's line is its
    error; the first failure ends the stream unless --keep-going."""
    command = outcome.request.command
    points = outcome.request.compute.points
    keep_going = points is not None and points.keep_going
    with contextlib.closing(outcome.outcomes):  # a progress bar the stream shows ends with it
        failed = _lines(command, outcome, keep_going)
    if failed is not None:
        raise typer.Exit(ExitCode.COMPUTATION)


LINES_HELD = 256
"""Answers held back at most, to be written together: one write a batch, not one a line."""


def _lines(command: str, outcome: Streamed, keep_going: bool) -> JaccliError | None:
    """Each point's line, written in one write with the lines before it when the source is
    about to wait for stdin, LINES_HELD are held, something goes to stderr, or the stream
    ends (the first point's at once): the same text, line for line."""
    from jaccli.render.document import dumps, point_document, point_error_document

    held: list[str] = []

    def flush() -> None:
        if held:
            text = "".join(held)
            held.clear()
            write_result(text)

    outcome.before_waiting.append(flush)
    failed: JaccliError | None = None
    try:
        for point in outcome.outcomes:
            if point.error is not None:
                error = point.error
                held.append(
                    dumps(point_error_document(point.index, error.code, error.message)) + "\n"
                )
                flush()
                report_error(command, error.code, f"point {point.index}: {error.message}", False)
                failed = failed or error
                if not keep_going:
                    raise typer.Exit(error.exit_code)
                continue
            assert point.result is not None
            held.append(
                dumps(point_document(point.index, outcome.document_of(point.result))) + "\n"
            )
            notes = point.result.notes if point.index == 0 else ()
            if notes or (point.result.check is not None and not point.result.check.passed):
                flush()
            if _check_failed(command, point.index, point.result):
                failed = failed or JaccliError("check failed")
            for note in notes:
                write(sys.stderr, f"{command}: warning: {visible(note)}\n")
            if len(held) >= LINES_HELD or point.index == 0:  # the first answer at once
                flush()
    except BaseException:  # the whole lines computed before it go out, then the failure
        with contextlib.suppress(OSError):
            flush()
        raise
    flush()
    return failed


def _warnings(command: str, notes: tuple[str, ...], out: object) -> None:
    for note in notes:
        write(sys.stderr, f"{command}: warning: {visible(note)}\n")
    if out is not None:
        write(sys.stderr, f"{command}: wrote {visible(str(out))}\n")


def _check_failed(command: str, index: int | None, result: Result) -> bool:
    """Whether the check failed; if so, a line on stderr says where (the point) and how."""
    if result.check is None or result.check.passed:
        return False
    from jaccli.render.checks import check_failure_line

    where = "" if index is None else f"point {index}: "
    write(sys.stderr, f"{command}: {where}{check_failure_line(result.check)}\n")
    return True
