"""`python -m jaccli` and the `jaccli` console script."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from jaccli.errors import ExitCode, Interrupt
from jaccli.overview import COMMANDS
from jaccli.supervisor import exit_status, finish, leave, supervise, user_code
from jaccli.timeout import importing_torch

SAME_INTERRUPT_SECONDS = 1.0
"""A second SIGINT this soon after the first is the same Ctrl-C: the terminal sends it to the
supervisor and the worker, and the supervisor passes it on."""


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    now = time.monotonic()
    if Interrupt.seen and now - Interrupt.at < SAME_INTERRUPT_SECONDS:
        return  # already on its way out
    Interrupt.seen, Interrupt.at = True, now
    if importing_torch(frame):  # nothing is printed or written yet: leave at once
        leave(ExitCode.INTERRUPTED)
    raise KeyboardInterrupt


def _standard_descriptors_taken() -> None:
    """Put /dev/null on any of descriptors 0, 1 and 2 that was closed (`<&-`, `>&-`), so that
    no file jaccli opens takes a standard stream's number; Python has already made that stream
    None, which is how the stream's reader or writer learns it was closed."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != descriptor:
                os.dup2(null, descriptor)
                os.close(null)
    if sys.stderr is None:  # nowhere to say anything: the exit status still tells
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 (open until the process ends)


def _run() -> None:
    try:
        from jaccli.cli import run

        run()
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)


def main() -> None:
    """Run jaccli; Ctrl-C exits 130 at any point, even while the imports are still loading."""
    signal.signal(signal.SIGINT, _on_interrupt)
    _standard_descriptors_taken()
    if sys.argv[1:] in (["--help"], ["-h"]):  # the command list alone: no command needs building
        from jaccli.overview import print_overview

        print_overview()
        return
    if len(sys.argv) == 3 and sys.argv[1] in COMMANDS and sys.argv[2] in ("--help", "-h"):
        from jaccli.help import print_command_help  # drawn from the table: no Typer, no Rich

        print_command_help(sys.argv[1])
        return
    function = user_code(sys.argv[1:])
    if function is not None:
        supervise(sys.argv[1:], function, _run)
    try:
        _run()
    except SystemExit as error:
        finish(exit_status(error.code))


if __name__ == "__main__":
    main()
