"""The README stands alone: its set-up commands, its links, and every shell example in it run.

Each `$ ` line of a fenced `sh` block is run with bash in a scratch directory, the venv's `bin`
first on PATH (as after `source .venv/bin/activate`); `$ cat FILE` followed by lines writes FILE.
An example whose shown output starts with `COMMAND:` is an error example and must fail with a
one-line error; every other must succeed. A pipeline into `jq` must read keys the documents
have (`.jacobian.x.values` of a document keyed `.jacobian.y.x` printed `null`): every path in
its filter is looked up in the JSON before `jq`, and where `jq` is installed its output must be
the output shown, numbers within float32's rounding.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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


def _run(command: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


JQ_PATH = re.compile(r"(?<![\w\]\)])((?:\.[A-Za-z_]\w*)+)")
"""A key path in a jq filter: `.jacobian.y.x` in `[.point, .jacobian.y.x.values][:3]`."""


def jq_paths_missing(filter_text: str, document: object) -> list[str]:
    """The key paths of a jq filter that the document does not have."""
    missing = []
    for path in JQ_PATH.findall(filter_text):
        node = document
        for key in path.split(".")[1:]:
            if not isinstance(node, dict) or key not in node:
                missing.append(path)
                break
            node = node[key]
    return missing


def same_json(shown: object, got: object) -> bool:
    """Equal JSON, numbers within float32's rounding (the README shows a real run's output)."""
    if isinstance(shown, bool) or isinstance(got, bool):
        return shown == got
    if isinstance(shown, int | float) and isinstance(got, int | float):
        return abs(shown - got) <= 1e-6 + 1e-5 * abs(shown)
    if isinstance(shown, list) and isinstance(got, list):
        return len(shown) == len(got) and all(map(same_json, shown, got))
    if isinstance(shown, dict) and isinstance(got, dict):
        return shown.keys() == got.keys() and all(same_json(shown[k], got[k]) for k in shown)
    return shown == got


def _jq_problems(
    example: Example, command: str, workdir: Path, env: dict[str, str]
) -> tuple[list[str], subprocess.CompletedProcess]:
    """Run the pipeline's JSON side, look its filter's paths up, then (with jq) compare."""
    before, _, jq = command.partition(" | jq ")
    done = _run(before, workdir, env)
    if done.returncode != 0:
        return [], done
    filter_text = shlex.split(jq)[-1]
    problems = []
    for line in done.stdout.splitlines() if " --jsonl" in before else [done.stdout]:
        for path in jq_paths_missing(filter_text, json.loads(line)):
            problems.append(f"{command}: the document has no {path}")
    if shutil.which("jq") is not None:
        piped = _run(command, workdir, env)
        got = piped.stdout.splitlines()
        if len(got) != len(example.shown) or not all(
            same_json(json.loads(a), json.loads(b)) for a, b in zip(example.shown, got, strict=True)
        ):
            problems.append(f"{command}: printed {got[:3]}, the README shows {example.shown[:3]}")
    return problems, done


def _run_block(examples: list[Example], workdir: Path, env: dict[str, str]) -> list[str]:
    """Run a block's examples in order; the problems found."""
    problems = []
    for example in examples:
        command = example.command.split("  #")[0].strip()
        if command.startswith("cat "):
            (workdir / command.split()[1]).write_text("\n".join(example.shown) + "\n")
            continue
        if " | jq " in command:
            found, done = _jq_problems(example, command, workdir, env)
            problems += found
        else:
            done = _run(command, workdir, env)
        name = command.split("jaccli ", 1)[-1].split()[0]
        error_example = bool(example.shown) and example.shown[0].startswith(f"{name}:")
        if "Traceback" in done.stderr:
            problems.append(f"{command}: traceback\n{done.stderr[-800:]}")
        elif error_example:
            if done.returncode in (0, 127) or len(done.stderr.strip().splitlines()) != 1:
                problems.append(f"{command}: expected one error line, got {done.returncode}")
        elif done.returncode != 0:
            problems.append(f"{command}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return problems


def test_jq_paths_are_looked_up_in_the_document() -> None:
    document = {"jacobian": {"y": {"x": {"values": [[1]]}}}, "point": 0}
    assert jq_paths_missing(".jacobian.x.values", document) == [".jacobian.x.values"]
    assert jq_paths_missing("[.point, .jacobian.y.x.values][:3]", document) == []
    assert not same_json([[0.8775825618903728]], None)  # what jq printed for a missing key


def test_builtins_named_in_the_readme_run_as_written() -> None:
    """The prose names builtins with their options (`--fn torch:sin --shape 3`): each runs."""
    text = README.read_text(encoding="utf-8")
    examples = re.findall(r"`(--fn torch[\w.]*:\w+[^`]*)`", text)
    assert len(examples) >= 3
    jaccli = Path(sys.executable).parent / "jaccli"
    for example in examples:
        done = subprocess.run(
            [str(jaccli), "jacobian", *shlex.split(example), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{example}: {done.stderr}"


def test_no_readme_command_turns_the_editable_install_into_a_copy() -> None:
    """`pip install '.[plot]'` into the editable set-up silently replaced it with a copy."""
    text = README.read_text(encoding="utf-8")
    for command in re.findall(r"pip install[^`\n]*\.\[\w+\][^`\n]*", text):
        assert " -e " in f" {command} ", command


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
