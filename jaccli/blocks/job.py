"""What a process needs to compute any block of one run, as plain picklable data: how to
rebuild the function (a user's file travels as its bytes), the options `prepare` takes, the
plan, the store and the points. A Dask worker rebuilds the Problem once and keeps it for every
block of the same run it is given.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jaccli.blocks.inputs import PointsSource
from jaccli.blocks.plan import BlockPlan
from jaccli.functions.user import looks_like_callable_reference, looks_like_file
from jaccli.spec import DEFAULT_VALUE_LIMIT, ArrayData, Shape

if TYPE_CHECKING:
    from jaccli.engine.problem import Problem
    from jaccli.functions.model import Function


@dataclass(frozen=True)
class FunctionSource:
    """How any process rebuilds the function: `--fn` (a preset, `pkg.mod:func` installed
    there too, or `file.py:func`, whose bytes travel in `file_bytes`) or `--expr`."""

    name: str | None = None
    expression: str | None = None
    given_names: tuple[str, ...] = ()
    file_bytes: bytes | None = None
    """The user's file as it was read when the run started (None for anything else)."""

    @classmethod
    def of(
        cls,
        name: str | None,
        expression: str | None = None,
        given_names: Sequence[str] = (),
        size_limit: int = DEFAULT_VALUE_LIMIT,
    ) -> FunctionSource:
        """The source of `--fn name` or `--expr expression`, reading a user's file now."""
        file_bytes = None
        if name is not None and looks_like_callable_reference(name):
            target = name.rpartition(":")[0]
            if looks_like_file(target):
                from jaccli.functions.user import read_source

                file_bytes = read_source(target, size_limit)
        return cls(name, expression, tuple(given_names), file_bytes)

    @property
    def digest(self) -> str:
        """sha256 of what defines the function: the user's file's bytes, or its name or
        expression (NOTE [what a store belongs to] in store.py)."""
        text = (
            self.file_bytes
            if self.file_bytes is not None
            else (f"{self.name}\0{self.expression}".encode())
        )
        return hashlib.sha256(text).hexdigest()

    def resolve(self) -> Function:
        """The Function in this process; a user's file is loaded from a private copy of the
        bytes it had when the run started, so a worker need not see the user's directory."""
        from jaccli.functions import resolve

        if self.file_bytes is None:
            return resolve(self.name, self.expression, self.given_names)
        assert self.name is not None
        target, _, attribute = self.name.rpartition(":")
        copy = _private_copy(os.path.basename(target), self.file_bytes, self.digest)
        return resolve(f"{copy}:{attribute}", None, self.given_names, len(self.file_bytes) + 1)


_COPIES: dict[str, str] = {}
"""The private folder of each user's file copied in this process, by digest."""


def _private_copy(basename: str, contents: bytes, digest: str) -> str:
    """A file of `contents` named `basename` in a new folder of this process's own
    (mkdtemp: no other user can have made it first)."""
    if digest not in _COPIES:
        folder = tempfile.mkdtemp(prefix="jaccli-fn-")
        with open(os.path.join(folder, basename), "wb") as copy:
            copy.write(contents)
        _COPIES[digest] = folder
    return os.path.join(_COPIES[digest], basename)


@dataclass(frozen=True)
class Job:
    """One run of blocks: everything a process needs to compute and store any of its blocks."""

    key: str
    """Unique to this run: the cache of rebuilt problems is keyed by it."""
    function: FunctionSource
    plan: BlockPlan
    store: str
    """The store's absolute path."""
    shape_options: tuple[tuple[str | None, Shape], ...] = ()
    value_options: tuple[tuple[str | None, ArrayData], ...] = ()
    wrt: tuple[str, ...] = ()
    seed: int = 0
    dtype: str = "float32"
    budget: int | None = None
    batch_axes: tuple[tuple[str | None, int], ...] = ()
    output: str | None = None
    points: PointsSource | None = None
    threads: int | None = None
    """torch's intra-op threads in a worker (None: torch's default)."""
    command: str = "jacobian"
    """jacobian, or hessian: the function's gradient is rebuilt from it in each process, and
    its J (H) computed in blocks."""
    notes: tuple[str, ...] = ()
    """Warnings of the planning (NOTE [the direction of the blocks] in run.py)."""


_PROBLEMS: dict[str, Problem] = {}
_PROBLEMS_LOCK = threading.Lock()


def remember(job: Job, problem: Problem) -> None:
    """Use `problem` for `job`'s blocks in this process (the process that planned the run has
    it already)."""
    with _PROBLEMS_LOCK:
        _PROBLEMS[job.key] = problem


def forget(job: Job) -> None:
    """Drop this process's problem of `job`."""
    with _PROBLEMS_LOCK:
        _PROBLEMS.pop(job.key, None)


def problem_of(job: Job) -> Problem:
    """The job's Problem in this process: rebuilt once from the job, then kept."""
    with _PROBLEMS_LOCK:
        if job.key in _PROBLEMS:
            return _PROBLEMS[job.key]
    from jaccli.engine.problem import prepare

    point_options: tuple[tuple[str, ArrayData], ...] = ()
    if job.points is not None:
        from jaccli.blocks.inputs import read_points

        first = read_points(job.points, 0, 1)[0]
        point_options = ((job.points.name, ArrayData(first.shape, first, from_file=True)),)
    problem = prepare(
        job.function.resolve(),
        shape_options=job.shape_options,
        value_options=job.value_options,
        point_options=point_options,
        wrt=job.wrt,
        seed=job.seed,
        dtype=job.dtype,
        budget=job.budget,
        batch_axes=job.batch_axes,
        output=job.output,
    )
    if job.command == "hessian":
        from jaccli.engine.hessian import gradient_problem

        problem = gradient_problem(problem)  # H is its J: rows are VJPs of the gradient
    with _PROBLEMS_LOCK:
        _PROBLEMS.clear()  # one run at a time in a worker: the last one's inputs go
        _PROBLEMS[job.key] = problem
    return problem
