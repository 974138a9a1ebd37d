"""The README stands alone: its set-up commands, its links, and every shell example in it run.

Each `$ ` line of a fenced `sh` block is run with bash in a scratch directory, the venv's `bin`
first on PATH (as after `source .venv/bin/activate`); `$ cat FILE` followed by lines writes FILE.
An example whose shown output starts with `COMMAND:` is an error example and must fail with a
one-line error; every other must succeed. Where `jq` is not installed, a pipeline into it runs
without it and its output must be JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETUP = [
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 . && "
    ".venv/bin/jaccli jacobian --fn expsum --shape 2x3",
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[test]' && "
    ".venv/bin/python -m pytest",
]


@dataclass
class Example:
    command: str
    shown: list[str]


def _blocks() -> list[list[Example]]:
    """The examples of each fenced sh block, in order."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for body in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        examples: list[Example] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                examples.append(Example(line[2:], []))
            elif examples:
                examples[-1].shown.append(line)
        if examples:
            blocks.append(examples)
    return blocks


def test_readme_starts_with_the_two_set_up_commands_and_ci_runs_the_second() -> None:
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```sh\n(.*?)^```", text, re.S | re.M)
    assert first is not None and first[1].splitlines() == SETUP
    assert SETUP[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_points_nowhere_outside_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    assert "../" not in text
    assert not re.search(r"(?<![\w.])/(work|home|root|tmp)/", text)
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def _run_block(examples: list[Example], workdir: Path, env: dict[str, str]) -> list[str]:
    """Run a block's examples in order; the problems found."""
    problems = []
    for example in examples:
        command = example.command.split("  #")[0].strip()
        if command.startswith("cat "):
            (workdir / command.split()[1]).write_text("\n".join(example.shown) + "\n")
            continue
        piped_to_jq = " | jq " in command
        if piped_to_jq and shutil.which("jq") is None:
            command = command.split(" | jq ")[0]
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        name = command.split("jaccli ", 1)[-1].split()[0]
        error_example = bool(example.shown) and example.shown[0].startswith(f"{name}:")
        if "Traceback" in done.stderr:
            problems.append(f"{command}: traceback\n{done.stderr[-800:]}")
        elif error_example:
            if done.returncode in (0, 127) or len(done.stderr.strip().splitlines()) != 1:
                problems.append(f"{command}: expected one error line, got {done.returncode}")
        elif done.returncode != 0:
            problems.append(f"{command}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
        elif piped_to_jq and shutil.which("jq") is None:
            for line in done.stdout.splitlines():
                json.loads(line)
    return problems


def test_every_shell_example_in_the_readme_runs(tmp_path) -> None:
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "jaccli").exists(), "run the README's set-up first"
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "100",
        "NO_COLOR": "1",
    }
    blocks = _blocks()
    assert sum(len(block) for block in blocks) >= 15
    directories = []
    for index in range(len(blocks)):
        directories.append(tmp_path / f"block{index}")
        directories[-1].mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda args: _run_block(*args, env), zip(blocks, directories, strict=True))
        problems = [problem for block in found for problem in block]
    if problems:
        pytest.fail("\n".join(problems))
