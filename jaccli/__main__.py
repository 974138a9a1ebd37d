"""`python -m jaccli` and the `jaccli` console script."""

from __future__ import annotations

import sys


def main() -> None:
    """Run jaccli; Ctrl-C exits 130 at any point, even while the imports are still loading."""
    try:
        from jaccli.cli import run

        run()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
