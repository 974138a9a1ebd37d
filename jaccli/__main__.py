"""`python -m jaccli` and the `jaccli` console script."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from jaccli.errors import ExitCode, Interrupt


def _importing_torch(frame: FrameType | None) -> bool:
    """Whether torch's own import is under way (its __init__ is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("torch", "__init__.py")):
            return True
        frame = frame.f_back
    return False


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    Interrupt.seen = True
    if _importing_torch(frame):
        # Python code of torch's import runs inside its C++ initialisers, where an exception
        # aborts the process ("terminate called … KeyboardInterrupt"). Nothing is printed or
        # written yet, so leave at once.
        os._exit(ExitCode.INTERRUPTED)
    raise KeyboardInterrupt


def main() -> None:
    """Run jaccli; Ctrl-C exits 130 at any point, even while the imports are still loading."""
    signal.signal(signal.SIGINT, _on_interrupt)
    if sys.argv[1:] in (["--help"], ["-h"]):  # the command list alone: nothing to build
        from jaccli.overview import print_overview

        print_overview()
        return
    try:
        from jaccli.cli import run

        run()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
