"""Blocks as Dask tasks: `local[:N]` starts a LocalCluster of N worker processes on this
machine, `tcp://HOST:PORT` uses a scheduler already running (NOTE [blocks, tasks and the
store] in run.py).

# NOTE [what the workers must share]
A worker writes its block into the store itself, so the store's path must name the same folder
on every worker: before anything is computed, the client writes a probe file into the store,
and every worker reads it back and writes and reads one of its own (a path the workers cannot
reach, or reach as another folder, is refused in one line). A .zarr or .npy file of points is
read by the workers too, and checked the same way. A user's function travels with the job as
its bytes (job.py); a module named `pkg.mod:func` must be installed on the workers, as jaccli
itself must, at the client's version. A worker that dies (killed, out of memory) has its tasks
run again elsewhere by the scheduler, up to its `allowed-failures`; a run whose workers are all
gone for NO_WORKERS_GRACE seconds is refused rather than left waiting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

from jaccli.blocks import require, store
from jaccli.blocks.job import Job
from jaccli.blocks.run import BlockReport, compute_block
from jaccli.errors import ComputationError, UsageError
from jaccli.spec import ClusterSpec, parse_cluster

__all__ = ["ClusterSpec", "DaskExecutor", "parse_cluster", "reach_probe"]

CONNECT_SECONDS = 10.0
"""How long to wait for a scheduler to answer, and for it to have a worker."""
POLL_SECONDS = 2.0
"""How often a run with no task finishing looks whether it still has workers."""
NO_WORKERS_GRACE = 60.0


class DaskExecutor:
    """Blocks as tasks on a Dask cluster; a context manager that starts or connects to it and
    lets it go (a LocalCluster's workers end with it)."""

    def __init__(self, spec: ClusterSpec, connect_seconds: float = CONNECT_SECONDS) -> None:
        self.spec = spec
        self.connect_seconds = connect_seconds
        self.workers = spec.workers or os.cpu_count() or 1
        self.threads: int | None = None
        """torch's threads in each local worker: the cores shared out (None for a scheduler's
        workers, which have their own machines)."""
        self._cluster: Any = None
        self._client: Any = None

    def __enter__(self) -> DaskExecutor:
        distributed = require("distributed", "--cluster")
        if self.spec.address is None:
            # No profiler on the workers: a Dask worker samples its threads' stacks
            # every 10 ms for its dashboard's profile; on a block of Python-heavy points (a
            # looped function) that cost 8 % of the block (36.4 s against 33.4 s for 4000
            # points on one worker). The nannies hand this config to their workers.
            with require("dask", "--cluster").config.set(
                {"distributed.worker.profile.enabled": False}
            ):
                self._cluster = distributed.LocalCluster(
                    n_workers=self.workers,
                    processes=True,
                    threads_per_worker=1,
                    host="127.0.0.1",
                    dashboard_address=None,
                    # its HTTP server (health, metrics) on a free port, not 8787: where
                    # another cluster has 8787, distributed warned that it was in use, and
                    # the socket its failed bind left open was a ResourceWarning, on stderr
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR,
                )
            self.threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._client = distributed.Client(self._cluster)
            return self
        _require_listening(self.spec.address, self.connect_seconds)
        try:
            self._client = distributed.Client(
                self.spec.address, timeout=self.connect_seconds, set_as_default=False
            )
            self._client.wait_for_workers(1, timeout=self.connect_seconds)
        except Exception as error:  # a server that is not Dask fails anywhere
            # in Dask's protocol: a web server's first bytes read as a frame of exabytes
            why = (
                "it has no workers"
                if self._client is not None
                else str(error)
                if isinstance(error, (OSError, TimeoutError))
                else f"it does not answer as a Dask scheduler: {type(error).__name__}"
            )
            self.__exit__(None, None, None)
            raise UsageError(
                f"--cluster {self.spec.address}: cannot use the Dask scheduler there "
                f"({why.splitlines()[0] if why else type(error).__name__})"
            ) from None
        self.workers = len(self._client.scheduler_info().get("workers", {})) or 1
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        local = self._cluster is not None
        for part in (self._client, self._cluster):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        self._client = self._cluster = None
        if local:
            _release_semaphores()

    def prepare(self, job: Job) -> None:
        """Refuse a store (or points file) the workers cannot reach, and workers that lack
        jaccli or run another version of it (NOTE [what the workers must share])."""
        __version__ = _jaccli_version()
        token = uuid.uuid4().hex
        store.write_probe(job.store, token)
        points = None if job.points is None else job.points.path.partition("#")[0]
        try:
            answers = self._client.run(reach_probe, job.store, token, points)
        except Exception as error:  # the workers cannot even load jaccli's probe
            raise UsageError(
                f"--cluster: the Dask workers cannot run jaccli ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); install it there: "
                "pip install 'jaccli[dask]'"
            ) from None
        finally:
            store.remove_probes(job.store, token)
        for worker, (version, problem) in sorted(answers.items()):
            if problem is not None:
                raise UsageError(
                    f"--out {job.store}: the Dask worker at {worker} {problem}; give a path on "
                    "storage every worker shares, the same path on each machine"
                )
            if version != __version__:
                raise UsageError(
                    f"--cluster: the Dask worker at {worker} runs jaccli {version}, not "
                    f"{__version__}; install the same version on every worker"
                )

    def run(self, job: Job, indices: Sequence[int]) -> Iterator[BlockReport]:
        """Each block's report as its task finishes; the tasks still pending are cancelled
        when the run stops early (an error, Ctrl-C)."""
        distributed = require("distributed", "--cluster")
        if self.threads is not None:
            from dataclasses import replace

            job = replace(job, threads=self.threads)
        shared = self._client.scatter(job, broadcast=True, hash=False)
        futures = [
            self._client.submit(
                compute_block, shared, index, key=f"jaccli-{job.key}-{index}", pure=False
            )
            for index in indices
        ]
        pending = set(futures)
        alone_since: float | None = None
        try:
            while pending:
                try:
                    with self._client.as_current():  # wait() asks for the current client
                        finished, pending = distributed.wait(
                            pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED"
                        )
                except TimeoutError:
                    alone_since = self._require_workers(alone_since)
                    continue
                alone_since = None
                for future in finished:
                    yield _result(future, distributed)
        except BaseException:
            self._client.cancel(list(pending), force=True)
            raise

    def _require_workers(self, alone_since: float | None) -> float | None:
        """When the cluster has had no worker since `alone_since`, ComputationError past the
        grace; the new start of a time alone otherwise."""
        if self._client.scheduler_info().get("workers"):
            return None
        now = time.monotonic()
        if alone_since is None:
            return now
        if now - alone_since > NO_WORKERS_GRACE:
            raise ComputationError(
                f"--cluster: the Dask cluster has had no worker for {NO_WORKERS_GRACE:.0f} s; "
                "the blocks done are kept: start workers and run again with --resume"
            )
        return alone_since


def _require_listening(address: str, seconds: float) -> None:
    """UsageError at once where nothing can listen at the scheduler's `address`: a host name
    that does not resolve, a port where the connection is refused. Dask's client retries
    those until its timeout (10 s for `tcp://127.0.0.1:1`); a host that does not answer at
    all still takes `seconds`."""
    import socket

    host, _, port = address.partition("://")[2].rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        connection = socket.create_connection((host, int(port)), timeout=seconds)
    except socket.gaierror as error:
        why = f"cannot find host {host}: {error.strerror or error}"
    except TimeoutError:
        why = f"nothing answered at {host}:{port} within {seconds:g} s"
    except OSError as error:
        why = f"nothing listens at {host}:{port}: {error.strerror or error}"
    else:
        connection.close()
        return
    raise UsageError(f"--cluster {address}: cannot use the Dask scheduler there ({why})")


def _release_semaphores() -> None:
    """Unlink the semaphores of the closed LocalCluster's nannies now.

    # NOTE [the semaphores of a LocalCluster]
    Each nanny of a LocalCluster makes two multiprocessing queues to talk to its worker (a
    spawned process), and each queue's semaphores are registered with multiprocessing's
    resource tracker, a process of its own that shares jaccli's stderr. They are unregistered
    when the queues are collected, or by multiprocessing's exit handler; jaccli ends with
    os._exit (supervisor.py `leave`), which runs no exit handler, so whenever the queues were
    still referenced (a nanny not yet collected) the tracker printed `resource_tracker: There
    appear to be N leaked semaphore objects to clean up at shutdown` after jaccli's last line.
    The cluster is closed here and its workers gone: the queues are collected, and the
    finalizers of any still referenced run now, as the exit handler would have run them."""
    import gc
    import sys

    gc.collect()
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        with contextlib.suppress(Exception):
            util._run_finalizers(0)  # the exit handler's first step: semaphores, queues


def _result(future: Any, distributed: Any) -> BlockReport:
    """The task's report, or the error it raised; a block that killed worker after worker is
    named as such."""
    try:
        report: BlockReport = future.result()
    except distributed.KilledWorker as error:
        raise ComputationError(
            f"--cluster: a block killed every worker that tried it ({error}); it may need "
            "more memory than a worker has: lower --max-memory, or give workers more memory"
        ) from None
    return report


def _jaccli_version() -> str:
    """jaccli's installed version (the package's own `__version__` would import the API)."""
    from importlib.metadata import version

    return version("jaccli")


def reach_probe(path: str, token: str, points: str | None) -> tuple[str, str | None]:
    """On a worker: its jaccli version, and what it cannot do with the store at `path` (read
    the client's probe file holding `token`, write and read one of its own) or the points file
    (read it); None when it can do all of it."""
    __version__ = _jaccli_version()
    try:
        with open(os.path.join(path, f"{store.PROBE_PREFIX}{token}"), encoding="ascii") as file:
            if file.read() != token:
                return __version__, f"sees another folder at {path}"
        mine = os.path.join(path, f"{store.PROBE_PREFIX}{token}-{uuid.uuid4().hex}")
        with open(mine, "w", encoding="ascii") as file:
            file.write(token)
        with open(mine, encoding="ascii") as file:
            written = file.read()
        os.unlink(mine)
        if written != token:
            return __version__, f"cannot read back what it writes in {path}"
    except OSError as error:
        return __version__, f"cannot reach {path} ({error.strerror or error})"
    if points is not None and not os.access(points, os.R_OK):
        return __version__, f"cannot read the points file {points}"
    return __version__, None
