"""The direction of imports, read from the source: no rings, an engine without Typer or Rich,
Typer in the CLI alone, and nothing importing the CLI.

Every `import` statement counts, wherever it stands: at module level, inside a function (an
import put there to dodge a ring is still a ring) or under `if TYPE_CHECKING:`. Importing
`jaccli.engine.problem` from outside jaccli/engine also runs jaccli/engine/__init__.py, so that
counts as an import of the package too.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import jaccli

PACKAGE_ROOT = Path(jaccli.__file__).parent
CLI_MODULES = ("jaccli.cli",)
"""Where the command line lives: the jaccli/cli/ package. Only it may import Typer, and no other
module of jaccli may import it."""
PLAIN = ("jaccli.request", "jaccli.options", "jaccli.runner")
"""The request, the table it is parsed from, and the runner: the CLI and the Python API share
them, so they print nothing and draw nothing (no Typer, no Rich)."""
ENTRY_POINT = "jaccli.__main__"
"""`python -m jaccli` and the console script: it starts the CLI, so it alone may import it."""
ENGINE = "jaccli.engine"
TERMINAL_LIBRARIES = ("typer", "rich")


@dataclass(frozen=True)
class Import:
    """One module naming another in an import statement, at a line of its source."""

    importer: str
    imported: str
    line: int


@dataclass
class ImportGraph:
    """The modules of a package and the imports among them, with every library they import."""

    root: Path
    modules: dict[str, Path]
    imports: list[Import]
    libraries: dict[str, set[str]]
    """Top-level names of what each module imports from outside the package (`typer`, `rich`)."""

    def imported_by(self, importer: str) -> dict[str, int]:
        """The modules `importer` imports, each with the first line that does."""
        found: dict[str, int] = {}
        for edge in self.imports:
            if edge.importer == importer:
                found.setdefault(edge.imported, edge.line)
        return found

    def where(self, edge_importer: str, line: int) -> str:
        """`jaccli/engine/evaluate.py:35`."""
        return f"{self.modules[edge_importer].relative_to(self.root.parent)}:{line}"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_graph(root: Path) -> ImportGraph:
    """The import graph of the package in folder `root`, from its source files alone."""
    modules = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = ImportGraph(root, modules, [], {name: set() for name in modules})
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for imported in _named_by(node, importer, is_package):
                if imported.split(".")[0] != root.name:
                    graph.libraries[importer].add(imported.split(".")[0])
                    continue
                for target in _with_packages_run(_known(imported, modules), importer, modules):
                    if target != importer:
                        graph.imports.append(Import(importer, target, node.lineno))
    return graph


def _named_by(node: ast.AST, importer: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import statement imports: `from a import b` names a.b, which is the
    module a.b or else the name b in module a."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            here = importer.split(".") if is_package else importer.split(".")[:-1]
            base = ".".join([*here[: len(here) - node.level + 1], node.module or ""]).strip(".")
        else:
            base = node.module or ""
        yield from (f"{base}.{alias.name}" for alias in node.names)


def _known(name: str, modules: dict[str, Path]) -> str:
    """The module a dotted name is in: itself, or the package holding the attribute it names."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def _with_packages_run(target: str, importer: str, modules: dict[str, Path]) -> Iterator[str]:
    """`target` and each package whose __init__ importing it runs first: those the importer is
    not itself inside (its own packages are initialised before it is)."""
    yield target
    parts = target.split(".")
    for end in range(1, len(parts)):
        package = ".".join(parts[:end])
        if package in modules and not _inside(importer, package):
            yield package


def import_rings(graph: ImportGraph) -> list[tuple[list[str], list[str]]]:
    """Each group of modules that import one another, directly or around a longer loop: the
    shortest loop through its first module ([a, b, c, a]), and all its modules."""
    successors = {name: graph.imported_by(name) for name in graph.modules}
    return [
        (_loop_through(group, successors), sorted(group))
        for group in _strongly_connected(successors)
        if len(group) > 1
    ]


def _strongly_connected(successors: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in successors[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set()
            while not group or node not in group:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
            groups.append(group)

    for node in sorted(successors):
        if node not in index:
            visit(node)
    return groups


def _loop_through(group: set[str], successors: dict[str, dict[str, int]]) -> list[str]:
    """The shortest loop from the group's first module back to itself (breadth first)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(successors[node]):
                if successor == start:
                    loop = [start, node]
                    while loop[-1] != start:
                        loop.append(came_from[loop[-1]])
                    return loop[::-1] if len(loop) > 2 else [start, start]
                if successor in group and successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no loop through {sorted(group)}")


def describe_ring(loop: list[str], graph: ImportGraph) -> str:
    """`p.a -> p.b (p/a.py:12) -> p.a (p/b.py:3)`: each import of the loop with its line."""
    steps = [loop[0]]
    for importer, imported in itertools.pairwise(loop):
        line = graph.imported_by(importer)[imported]
        steps.append(f"{imported} ({graph.where(importer, line)})")
    return " -> ".join(steps)


def _is_cli(module: str) -> bool:
    return any(_inside(module, cli) for cli in CLI_MODULES)


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return import_graph(PACKAGE_ROOT)


def test_the_graph_sees_the_imports_it_checks(graph: ImportGraph) -> None:
    """A parser that found nothing would pass every check below."""
    assert len(graph.modules) > 50
    assert "jaccli.engine.evaluate" in graph.imported_by("jaccli.engine.problem")
    assert "typer" in graph.libraries["jaccli.cli"]
    assert any(_is_cli(name) for name in graph.modules)


def test_no_modules_import_each_other(graph: ImportGraph) -> None:
    rings = [
        f"{describe_ring(loop, graph)}\n  (the ring: {', '.join(members)})"
        for loop, members in import_rings(graph)
    ]
    assert not rings, "import rings (move the shared piece to the module it belongs in):\n" + (
        "\n".join(rings)
    )


def test_the_engine_imports_neither_typer_nor_rich(graph: ImportGraph) -> None:
    offenders = sorted(
        f"{name} imports {library}"
        for name, libraries in graph.libraries.items()
        if _inside(name, ENGINE)
        for library in libraries & set(TERMINAL_LIBRARIES)
    )
    assert not offenders, offenders


def test_typer_is_imported_only_by_the_cli(graph: ImportGraph) -> None:
    offenders = sorted(
        name
        for name, libraries in graph.libraries.items()
        if "typer" in libraries and not _is_cli(name)
    )
    assert not offenders, f"{offenders} import typer outside {CLI_MODULES}"


def test_nothing_imports_the_cli(graph: ImportGraph) -> None:
    offenders = sorted(
        f"{edge.importer} imports {edge.imported} ({graph.where(edge.importer, edge.line)})"
        for edge in graph.imports
        if _is_cli(edge.imported) and not _is_cli(edge.importer) and edge.importer != ENTRY_POINT
    )
    assert not offenders, offenders


def test_the_request_and_the_runner_import_neither_typer_nor_rich(graph: ImportGraph) -> None:
    offenders = sorted(
        f"{name} imports {library}"
        for name, libraries in graph.libraries.items()
        if any(_inside(name, plain) for plain in PLAIN)
        for library in libraries & set(TERMINAL_LIBRARIES)
    )
    assert not offenders, offenders


def test_a_run_loads_neither_typer_nor_rich() -> None:
    """What the request and the runner import when a command runs, in a fresh process (the
    modules above may import others that do, inside functions the run never calls)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from jaccli.options import parse\n"
        "from jaccli.runner import run\n"
        "for command, given in [('jacobian', {'fn': 'matmul', 'view': 'heatmap'}),\n"
        "                       ('vjp', {'fn': 'polar', 'points': ['x=@-']}),\n"
        "                       ('hessian', {'fn': 'logsumexp', 'plan': True})]:\n"
        "    outcome = run(parse(command, given))\n"
        "    list(outcome.outcomes) if hasattr(outcome, 'outcomes') else outcome.document()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'click', 'rich'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input="[1, 2]\n[3, 4]\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_a_json_run_and_a_coprocess_point_load_neither_rich_nor_torch_dynamo() -> None:
    """What a script waits for (issue 22): `--json` draws nothing, so it loads no Rich, and a
    coprocess's first point is answered without torch.func's start-up (torch._dynamo, ~1 s)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from jaccli.cli import app\n"
        "runner = CliRunner()\n"
        "one = runner.invoke(app, ['jacobian', '--fn', 'expsum', '--shape', '2x3', '--json'])\n"
        "streamed = runner.invoke(app, ['jacobian', '--fn', 'polar', '--points', 'x=@-',\n"
        "                               '--jsonl'], input='[0.5, 1.0]\\n')\n"
        "assert one.exit_code == 0 and streamed.exit_code == 0, (one.output, streamed.output)\n"
        "assert streamed.output.count('\\n') == 1, streamed.output\n"
        "print(sorted({'rich', 'torch._dynamo'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def _write_package(root: Path, files: Iterable[tuple[str, str]]) -> Path:
    package = root / "pkg"
    for relative, source in files:
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return package


def test_a_ring_through_a_function_level_import_is_found_and_named(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        [
            ("__init__.py", ""),
            ("a.py", "from pkg.b import f\n"),
            ("b.py", "import os\n\n\ndef f():\n    from pkg import c\n    return c\n"),
            ("c.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"),
            ("d.py", "from pkg import a\n"),
        ],
    )
    graph = import_graph(package)
    ((loop, members),) = import_rings(graph)
    assert members == ["pkg.a", "pkg.b", "pkg.c"]
    named = "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.c (pkg/b.py:5) -> pkg.a (pkg/c.py:3)"
    assert describe_ring(loop, graph) == named
    assert graph.libraries["pkg.b"] == {"os"}


def test_importing_a_submodule_from_outside_runs_its_package(tmp_path: Path) -> None:
    """`import pkg.sub.x` from pkg.y runs pkg/sub/__init__.py, which imports pkg.y back."""
    package = _write_package(
        tmp_path,
        [
            ("__init__.py", ""),
            ("sub/__init__.py", "from pkg.sub.x import X\n"),
            ("sub/x.py", "from pkg.sub.z import Z\n"),
            ("sub/z.py", "from pkg.y import Y\n"),
            ("y.py", "import os\n\n\ndef g():\n    import pkg.sub.x\n"),
        ],
    )
    graph = import_graph(package)
    ((loop, _),) = import_rings(graph)
    named = (
        "pkg.sub -> pkg.sub.x (pkg/sub/__init__.py:1) -> pkg.sub.z (pkg/sub/x.py:1) "
        "-> pkg.y (pkg/sub/z.py:1) -> pkg.sub (pkg/y.py:5)"
    )
    assert describe_ring(loop, graph) == named
    assert "pkg.sub" not in graph.imported_by("pkg.sub.x")  # its own package is already running


def test_forward_mode_of_a_scalar_product_neither_loads_torch_dynamo_nor_changes_a_number() -> None:
    """`2 * x` in forward mode goes through torch's Python reference for mul, whose first call
    imported torch._dynamo (1.1-1.4 s of a 10⁶-unknown --sparse run's 5 s): jvp, --sparse's
    JVPs, hvp's forward-over-reverse and J by vmapped jacfwd now leave it unloaded, with the
    closed forms' numbers."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from jaccli.cli import app\n"
        "expr, cube = '2 * x + 1.5 * x**2 - x / 0.5 + 3', '(x**3).sum() * 2'\n"
        "runs = [['jvp', '--expr', expr, '--value', 'x=[1.0, -2.0, 0.5]',\n"
        "         '--tangent', '[0.5, 1.0, -2.0]'],\n"
        "        ['jacobian', '--expr', expr, '--value', 'x=[1.0, -2.0]', '--sparse'],\n"
        "        ['hvp', '--expr', cube, '--value', 'x=[1.0, -2.0]'],\n"
        "        ['jacobian', '--expr', expr, '--value', 'x=[1.0, -2.0]', '--strategy', 'fwd']]\n"
        "done = [CliRunner().invoke(app, [*r, '--dtype', 'float64', '--json']) for r in runs]\n"
        "assert all(d.exit_code == 0 for d in done), [d.output for d in done]\n"
        "documents = [json.loads(d.output) for d in done]\n"
        "print(json.dumps([documents, 'torch._dynamo' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    (jvp, sparse, hvp, forward), dynamo_loaded = json.loads(done.stdout)
    assert dynamo_loaded is False
    # d/dx (2x + 1.5x² − 2x + 3) = 3x elementwise; H of 2·Σx³ is diag(12x)
    assert jvp["jvp"]["y"]["values"] == pytest.approx([1.5, -6.0, -3.0], rel=1e-12)
    assert sparse["jacobian"]["y"]["x"]["values"] == pytest.approx([3.0, -6.0], rel=1e-12)
    assert sparse["jacobian"]["y"]["x"]["indices"] == [[0, 1], [0, 1]]
    assert hvp["hvp"]["x"]["values"] == pytest.approx([12.0, -24.0], rel=1e-12)
    assert forward["strategy"] == "fwd"
    rows = forward["jacobian"]["y"]["x"]["values"]
    assert [value for row in rows for value in row] == pytest.approx(
        [3.0, 0.0, 0.0, -6.0], rel=1e-12
    )


def test_hvp_by_forward_over_reverse_runs_no_python_reference_and_matches_the_closed_form() -> None:
    """H·v's backward pass, seeded with a plain 1, sent every tangent product through torch's
    zero tensors and its Python references' prims (0.45 of logsumexp's 0.7 ms): seeded with a
    dual 1 whose tangent is a real 0, none runs, and H·v of logsumexp is still (diag p − p pᵀ) v."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from jaccli.engine import prepare, run_hvp
    from jaccli.functions import PRESETS
    from jaccli.spec import read_value

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[str] = set()

        def __torch_dispatch__(
            self, func: object, types: object, args: tuple = (), kwargs: dict | None = None
        ) -> object:
            self.seen.add(str(func))
            return func(*args, **(kwargs or {}))  # type: ignore[operator]

    problem = prepare(
        PRESETS["logsumexp"], value_options=[("x", read_value("[0.5, -1.0, 2.0, 0.25]"))],
        dtype="float64",
    )  # fmt: skip
    with Ops() as ops:
        result = run_hvp(problem, read_value("[1.0, -2.0, 0.5, 3.0]"))
    assert result.method == "forward-over-reverse"
    slow = sorted(op for op in ops.seen if op.startswith("prims.") or "zerotensor" in op)
    assert slow == []
    assert "aten.logsumexp.default" in ops.seen or "aten.exp.default" in ops.seen  # it watched
    x = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    p = torch.softmax(x, 0)
    expected = (torch.diag(p) - torch.outer(p, p)) @ v
    np.testing.assert_allclose(result.hvps["x"], expected.numpy(), rtol=1e-12, atol=1e-15)
