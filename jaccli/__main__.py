"""`python -m jaccli` and the `jaccli` console script."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from jaccli.errors import Interrupt


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    Interrupt.seen = True
    raise KeyboardInterrupt


def main() -> None:
    """Run jaccli; Ctrl-C exits 130 at any point, even while the imports are still loading."""
    signal.signal(signal.SIGINT, _on_interrupt)
    if sys.argv[1:] == ["--help"]:  # the command list alone: no command needs building
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
