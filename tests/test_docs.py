"""The documentation stands: README.md and every page of docs/, with their set-up commands, their
links, and every shell example on them run as written, printing what they show.

The examples are the `$ ` lines of fenced `sh` blocks, run in order in a scratch directory per
block, the venv's `bin` first on PATH (as after `source .venv/bin/activate`), 100 columns wide
and without colour:
- `$ cat FILE` followed by lines writes FILE.
- `  # …` after a command is a note; a note `# exit N` says the command exits N (else 0).
- The lines under a command are what it prints: those starting with `NAME: ` (NAME its jaccli
  command) or `{"error"` are its stderr, the others its stdout (for a pipeline into `jq`, jq's
  output). A stream shown must be the output exactly, except that a line `⋮` (perhaps with a
  note in brackets) stands for lines left out, a line may carry a `  # note`, and a line ending
  in ` …` stands for any line starting with what comes before. A failing example that shows
  only its stderr must print nothing on stdout.
- A pipeline into `jq` must read keys the documents have (`.jacobian.x.values` of a document
  keyed `.jacobian.y.x` printed `null`): every path in its filter is looked up in the JSON (of
  `--jsonl`, in some line), and where `jq` is installed its output is compared as JSON, numbers
  within float32's rounding.
- A plain `jaccli ARGS` runs forked from a Python that has imported torch (tests/fork_runner.py),
  as a new process would run it; anything with shell syntax runs with bash.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INDEX = ROOT / "docs" / "README.md"
SETUP = [
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 . && "
    ".venv/bin/jaccli jacobian --fn expsum --shape 2x3",
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[test]' && "
    ".venv/bin/python -m pytest",
]
VENV_BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "COLUMNS": "100",
    "NO_COLOR": "1",
}
TIMEOUT_SECONDS = 300
FORK_RUNNER = Path(__file__).with_name("fork_runner.py")
WORKERS = 2


def _page_name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


# --- examples -----------------------------------------------------------------------------------


@dataclass
class Example:
    command: str
    note: str
    shown: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        declared = re.search(r"\bexit (\d+)", self.note)
        return int(declared[1]) if declared else 0

    @property
    def name(self) -> str:
        """The jaccli command it runs (`jacobian`), whose name starts its lines on stderr."""
        found = re.search(r"\bjaccli\s+(\w+)", self.command)
        return found[1] if found else ""

    def is_stderr(self, line: str) -> bool:
        return bool(self.name) and line.startswith((f"{self.name}: ", '{"error"'))


@dataclass
class Block:
    page: str
    examples: list[Example]


def _blocks(page: Path) -> list[Block]:
    """The examples of each fenced sh block of `page`, in order."""
    blocks = []
    text = page.read_text(encoding="utf-8")
    for body in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        examples: list[Example] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                command, _, note = line[2:].partition("  #")
                examples.append(Example(command.strip(), note.strip()))
            elif examples:
                examples[-1].shown.append(line)
        if examples:
            blocks.append(Block(_page_name(page), examples))
    return blocks


ELISION = re.compile(r"^\s*⋮(\s+\(.*\))?\s*$")
"""A shown line standing for output left out: `⋮`, or `⋮   (24 lines in all)`."""


def same_line(shown: str, real: str) -> bool:
    """Whether a shown line is `real`, perhaps with a `  # note`, or its start and ` …`."""
    shown, real = shown.rstrip(), real.rstrip()
    if shown == real or shown.partition("  # ")[0].rstrip() == real:
        return True
    return shown.endswith(" …") and real.startswith(shown[:-1])


def shows(shown: list[str], real: list[str]) -> bool:
    """Whether the shown lines are the real output, with `⋮` lines standing for lines left out."""
    while real and not real[-1].strip():
        real = real[:-1]
    parts: list[list[str]] = [[]]
    for line in shown:
        if ELISION.match(line):
            parts.append([])
        else:
            parts[-1].append(line)
    if len(parts) == 1:
        return len(shown) == len(real) and all(map(same_line, shown, real))
    first, *middle, last = parts
    if len(first) + len(last) > len(real):
        return False
    if not all(map(same_line, first, real)) or not all(
        map(same_line, last, real[len(real) - len(last) :])
    ):
        return False
    start, end = len(first), len(real) - len(last)
    for part in middle:
        found = next(
            (
                at
                for at in range(start, end - len(part) + 1)
                if all(map(same_line, part, real[at : at + len(part)]))
            ),
            None,
        )
        if found is None:
            return False
        start = found + len(part)
    return True


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
    """Equal JSON, numbers within float32's rounding (a page shows a real run's output)."""
    if isinstance(shown, bool) or isinstance(got, bool):
        return shown == got
    if isinstance(shown, int | float) and isinstance(got, int | float):
        return abs(shown - got) <= 1e-6 + 1e-5 * abs(shown)
    if isinstance(shown, list) and isinstance(got, list):
        return len(shown) == len(got) and all(map(same_json, shown, got))
    if isinstance(shown, dict) and isinstance(got, dict):
        return shown.keys() == got.keys() and all(same_json(shown[k], got[k]) for k in shown)
    return shown == got


def _json_lines_same(shown: list[str], got: list[str]) -> bool:
    try:
        return len(shown) == len(got) and all(
            same_json(json.loads(a), json.loads(b)) for a, b in zip(shown, got, strict=True)
        )
    except json.JSONDecodeError:
        return shown == got


# --- running ------------------------------------------------------------------------------------


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


SHELL_SYNTAX = set("|&;<>()$`*?[]{}~\\")


def forkable(command: str) -> list[str] | None:
    """The arguments of a plain `jaccli ARGS`, or None when the shell has work to do."""
    unquoted, quote = [], ""
    for char in command:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            unquoted.append(char)
    words = shlex.split(command)
    if SHELL_SYNTAX & set(unquoted) or words[:1] != ["jaccli"] or words[1:] in (["--help"], ["-h"]):
        return None  # `jaccli --help` alone is drawn before the CLI starts
    return words[1:]


class ForkedJaccli:
    """A Python that has imported torch and forks a fresh `jaccli` for each run."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        with open(scratch / "runner.log", "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(FORK_RUNNER), str(requests_read), str(replies_write)],
                pass_fds=(requests_read, replies_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=ENV,
            )
        os.close(requests_read)
        os.close(replies_write)
        self.requests = open(requests_write, "w", encoding="utf-8")  # noqa: SIM115 (see close)
        self.replies = open(replies_read, encoding="utf-8")  # noqa: SIM115

    def run(self, args: list[str], workdir: Path) -> Done:
        stdout, stderr = self.scratch / "stdout", self.scratch / "stderr"
        request = {
            "args": args,
            "cwd": str(workdir),
            "env": ENV,
            "stdin": os.devnull,
            "stdout": str(stdout),
            "stderr": str(stderr),
            "timeout": TIMEOUT_SECONDS,
        }
        self.requests.write(json.dumps(request) + "\n")
        self.requests.flush()
        reply = self.replies.readline()
        if not reply:
            log = (self.scratch / "runner.log").read_text(errors="replace")
            pytest.fail(f"tests/fork_runner.py ended: {log[-2000:]}")
        return Done(
            json.loads(reply)["exit"],
            stdout.read_text(encoding="utf-8", errors="replace"),
            stderr.read_text(encoding="utf-8", errors="replace"),
        )

    def close(self) -> None:
        self.requests.close()
        self.replies.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def runners(tmp_path_factory) -> Iterator[queue.Queue[ForkedJaccli]]:
    """One forking runner for each worker thread, taken from the queue and given back."""
    assert (VENV_BIN / "jaccli").exists(), "run the README's set-up first"
    pool: queue.Queue[ForkedJaccli] = queue.Queue()
    started = [ForkedJaccli(tmp_path_factory.mktemp("runner")) for _ in range(WORKERS)]
    for runner in started:
        pool.put(runner)
    yield pool
    for runner in started:
        runner.close()


def _bash(command: str, workdir: Path) -> Done:
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=workdir,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def _run(command: str, workdir: Path, runner: ForkedJaccli) -> Done:
    args = forkable(command)
    return _bash(command, workdir) if args is None else runner.run(args, workdir)


def _check(example: Example, workdir: Path, runner: ForkedJaccli) -> list[str]:
    """Run one example; what is wrong with what it did."""
    command = example.command
    before, piped, jq = command.partition(" | jq ")
    done = _run(before if piped else command, workdir, runner)
    stdout_shown = [line for line in example.shown if not example.is_stderr(line)]
    stderr_shown = [line for line in example.shown if example.is_stderr(line)]
    problems = []
    if "Traceback" in done.stderr:
        return [f"{command}: traceback\n{done.stderr[-1500:]}"]
    if done.returncode != example.exit_code:
        problems.append(f"{command}: exit {done.returncode}, not {example.exit_code}")
    if stderr_shown and not shows(stderr_shown, done.stderr.splitlines()):
        problems.append(f"{command}: printed on stderr\n{done.stderr}")
    if piped and done.stdout.strip():
        filter_text = shlex.split(jq)[-1]
        documents = done.stdout.splitlines() if " --jsonl" in before else [done.stdout]
        missing = [set(jq_paths_missing(filter_text, json.loads(line))) for line in documents]
        for path in sorted(set.intersection(*missing)):
            problems.append(f"{command}: no document has {path}")
        if shutil.which("jq") is not None:
            filtered = subprocess.run(
                ["jq", *shlex.split(jq)], input=done.stdout, capture_output=True, text=True
            )
            got = filtered.stdout.splitlines()
            if filtered.returncode != 0 or not _json_lines_same(stdout_shown, got):
                problems.append(f"{command}: jq printed\n{filtered.stdout}{filtered.stderr}")
    elif stdout_shown and not shows(stdout_shown, done.stdout.splitlines()):
        problems.append(f"{command}: printed\n{done.stdout}")
    elif stderr_shown and not stdout_shown and example.exit_code and done.stdout:
        problems.append(f"{command}: failed, yet printed on stdout\n{done.stdout}")
    return problems


def _cost(block: Block) -> int:
    """A rough measure of how long a block takes: a new process costs as much as three forks."""
    return sum(1 if forkable(example.command) else 3 for example in block.examples)


def _check_block(block: Block, workdir: Path, runners: queue.Queue[ForkedJaccli]) -> list[str]:
    """Run a block's examples in order; the problems found, each naming its page."""
    runner = runners.get()
    try:
        problems = []
        for example in block.examples:
            if example.command.startswith("cat "):
                (workdir / example.command.split()[1]).write_text("\n".join(example.shown) + "\n")
                continue
            problems += [f"{block.page}: {problem}" for problem in _check(example, workdir, runner)]
        return problems
    finally:
        runners.put(runner)


def test_every_example_on_every_page_runs_and_prints_what_it_shows(tmp_path, runners) -> None:
    blocks = [block for page in PAGES for block in _blocks(page)]
    assert sum(len(block.examples) for block in blocks) >= 60
    blocks.sort(key=_cost, reverse=True)  # the longest first, so that the two workers end together
    assert {block.page for block in blocks} >= {"README.md", "docs/functions.md"}
    directories = [tmp_path / f"block{index}" for index in range(len(blocks))]
    for directory in directories:
        directory.mkdir()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        found = pool.map(
            lambda args: _check_block(*args, runners), zip(blocks, directories, strict=True)
        )
        problems = [problem for block in found for problem in block]
    if problems:
        pytest.fail("\n\n".join(problems))


def test_builtins_named_in_the_prose_run_as_written(tmp_path, runners) -> None:
    """The prose names builtins with their options (`--fn torch:sin --shape 3`): each runs."""
    examples = [
        example
        for page in PAGES
        for example in re.findall(r"`(--fn torch[\w.]*:\w+[^`]*)`", page.read_text("utf-8"))
    ]
    assert len(examples) >= 3
    runner = runners.get()
    try:
        for example in examples:
            done = runner.run(["jacobian", *shlex.split(example), "--json"], tmp_path)
            assert done.returncode == 0, f"{example}: {done.stderr}"
    finally:
        runners.put(runner)


def test_forkable_commands_are_the_plain_ones() -> None:
    assert forkable("jaccli jacobian --expr 'x * 2' --value 'x=[1, 2]'") == [
        "jacobian",
        "--expr",
        "x * 2",
        "--value",
        "x=[1, 2]",
    ]
    for command in ("jaccli --help", "jaccli det --json > d.json", "X=1 jaccli presets"):
        assert forkable(command) is None, command


def test_shown_output_stands_for_the_real_one() -> None:
    real = ["Heat map", "  x", "y ██··", "  ··██", "one entry a cell", ""]
    assert shows(["Heat map", "  x", "y ██··", "  ··██", "one entry a cell"], real)
    assert shows(["⋮", "y ██··   # the first row", "⋮   (2 rows in all)", "one entry a cell"], real)
    assert not shows(["Heat map", "y ██··"], real)
    assert not shows(["⋮", "  ··██", "y ██··", "⋮"], real)
    assert shows(["allowed: exp, log, …"], ["allowed: exp, log, sin, cos"])


def test_jq_paths_are_looked_up_in_the_document() -> None:
    document = {"jacobian": {"y": {"x": {"values": [[1]]}}}, "point": 0}
    assert jq_paths_missing(".jacobian.x.values", document) == [".jacobian.x.values"]
    assert jq_paths_missing("[.point, .jacobian.y.x.values][:3]", document) == []
    assert not same_json([[0.8775825618903728]], None)  # what jq printed for a missing key


# --- the pages themselves -----------------------------------------------------------------------


def test_readme_starts_with_the_two_set_up_commands_and_ci_runs_the_second() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"^```sh\n(.*?)^```", text, re.S | re.M)
    assert first is not None and first[1].splitlines() == SETUP
    assert SETUP[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: `## Errors and exit codes` → `errors-and-exit-codes`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, repeats numbered as GitHub numbers them."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        name, count = anchor(heading), 1
        while name in found:
            name, count = f"{anchor(heading)}-{count}", count + 1
        found.add(name)
    return found


def links(page: Path) -> list[str]:
    """The targets of a page's Markdown links and images."""
    return re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=_page_name)
def test_every_link_and_anchor_resolves_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w.])/(work|home|root|tmp)/", text)
    for target in links(page):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{target} is outside the repository"
        assert resolved.exists(), f"{target}: no such file"
        if fragment:
            assert resolved.suffix == ".md", f"{target}: an anchor in a file that is not a page"
            assert fragment in anchors(resolved), f"{target}: no such heading in {resolved.name}"


def test_the_readme_leads_to_the_index_and_the_index_to_every_page() -> None:
    assert "docs/README.md" in links(ROOT / "README.md")
    linked = {(INDEX.parent / target.partition("#")[0]).resolve() for target in links(INDEX)}
    for page in PAGES:
        if page != INDEX:
            assert page in linked, f"docs/README.md does not link {_page_name(page)}"


def test_anchors_are_githubs() -> None:
    assert anchor("Errors and exit codes") == "errors-and-exit-codes"
    assert anchor("The derivative family: `det`, `jvp`") == "the-derivative-family-det-jvp"
    assert anchor("Many points (`--points`)") == "many-points---points"


def test_no_page_turns_the_editable_install_into_a_copy() -> None:
    """`pip install '.[plot]'` into the editable set-up silently replaced it with a copy."""
    for page in PAGES:
        for command in re.findall(r"pip install[^`\n]*\.\[\w+\][^`\n]*", page.read_text("utf-8")):
            assert " -e " in f" {command} ", f"{_page_name(page)}: {command}"
