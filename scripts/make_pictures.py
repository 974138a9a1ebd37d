"""Redraw the pictures the README shows, with jaccli itself: `python scripts/make_pictures.py`.

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


def main() -> None:
    jaccli = shutil.which("jaccli") or str(Path(sys.executable).parent / "jaccli")
    for name, args in PICTURES.items():
        command = [jaccli, *args, "--out", str(DOCS / name), "--force"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
