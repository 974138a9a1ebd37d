"""Redraw the pictures the README shows, with jaccli itself: `.venv/bin/python scripts/make_pictures.py`.

Each picture is `jaccli jacobian ... --out docs/NAME.png --force`, so it is exactly what a user
gets from the same command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
PICTURES = {
    "heatmap-matmul.png": ["jacobian", "--fn", "matmul", "--shape", "a=8x6", "--shape", "b=6x5"],
}
HOW_TO_RUN = (
    "run it with the project's environment, after the README's set-up: "
    ".venv/bin/python scripts/make_pictures.py"
)


def _jaccli() -> str:
    """The jaccli installed beside this Python (or on PATH); exit 1 saying how to run this
    script when there is none."""
    beside = Path(sys.executable).parent / "jaccli"
    found = str(beside) if beside.exists() else shutil.which("jaccli")
    if found is None:
        sys.exit(f"make_pictures: jaccli is not installed for {sys.executable}; {HOW_TO_RUN}")
    return found


def main() -> None:
    jaccli = _jaccli()
    for name, args in PICTURES.items():
        command = [jaccli, *args, "--out", str(DOCS / name), "--force"]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:  # jaccli's own one-line error (no matplotlib, say)
            sys.exit(f"make_pictures: {done.stderr.strip()} ({HOW_TO_RUN})")


if __name__ == "__main__":
    main()
