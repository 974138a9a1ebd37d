"""Run `jaccli ARGS` as its console script does, each time in a process forked from this one,
which has already imported torch: the same entry point, descriptors, environment and exit status
as a new process, without the 1.5 s every new process spends importing torch.

`python tests/fork_runner.py REQUESTS REPLIES` reads one JSON request a line from descriptor
REQUESTS (`args`, `cwd`, `env`, `stdin`, `stdout`, `stderr` paths, `timeout` seconds) and writes
`{"exit": N}` for each on REPLIES once that run has ended; tests/test_docs.py starts it.

Note [as fresh as a new process]: this process imports only what every computing run imports
(torch, jaccli's CLI and entry point) and runs nothing. torch.func in particular stays unloaded:
once it is loaded jaccli prefers vectorized methods (engine: `vectorized_start_up_paid`), so a
process that had run one example would print another's strategy differently from a new one.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

POLL_SECONDS = 0.005


def _run(request: dict[str, Any]) -> NoReturn:
    """In the forked child: become `jaccli ARGS` run from a shell, and end with its exit status."""
    os.setpgid(0, 0)  # its own process group, so a run past its timeout is stopped whole
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams = (
        (0, request["stdin"], os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    )
    for descriptor, path, flags in streams:
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, descriptor)
        os.close(opened)
    sys.argv = [str(Path(sys.executable).with_name("jaccli")), *request["args"]]
    from jaccli.__main__ import main

    code = 0
    try:
        main()  # every run ends the process itself; `--help` alone returns
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else int(error.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    """The exit status of child `pid` (negative: the signal that ended it), stopping it past
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(POLL_SECONDS)


def serve(requests_fd: int, replies_fd: int) -> None:
    """Answer each request with the exit status of a `jaccli` forked to run it."""
    for module in ("torch", "jaccli.cli", "jaccli.__main__"):  # what every run imports
        importlib.import_module(module)
    with open(requests_fd, encoding="utf-8") as requests, open(replies_fd, "w") as replies:
        for line in requests:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                os.close(requests_fd)
                os.close(replies_fd)
                _run(request)
            replies.write(json.dumps({"exit": _wait(pid, request["timeout"])}) + "\n")
            replies.flush()
    os._exit(0)  # no teardown of torch's modules: a third of a second spent on nothing


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
