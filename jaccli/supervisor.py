"""The supervisor of a run that loads the user's code: jaccli forks a worker to run it, and stays
behind to say how it ended.

Imports nothing heavy (no torch, no Typer, no Rich): it costs a fork and a wait.

# NOTE [a worker that dies without saying why]
The user's code runs in jaccli's process and can end it: `os._exit(0)` would look like success
with an empty stdout, `os._exit(3)` like a refusal of the memory guard, a signal or the kernel
like nothing at all. So when `--fn` names the user's code, the process the user started forks
a worker that does the work (stdin, stdout and stderr are the same descriptors: streams and
coprocesses work as before) and declares its exit status on a pipe as its last act. The
supervisor exits with the declared status; a worker that ended without declaring one is
reported in the supervisor's own words: exit 1, naming the function. It also forwards Ctrl-C
(exit 130), and stops a worker that outlives its --timeout by a few seconds (stuck in C, or
swallowing TimedOut), with the traceback faulthandler dumps to say where it was.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jaccli.errors import ExitCode
from jaccli.messages import shown_path

STATUS = b"jaccli-worker-status "
"""What starts the worker's declaration of its exit status on the pipe."""
CLOCK = b"jaccli-worker-clock\n"
"""What the worker says on the pipe when --timeout's clock starts (after torch's start-up)."""
GRACE_SECONDS = 2.0
"""How long past --timeout the supervisor waits before it stops the worker itself."""
DUMP_SECONDS = 1.0
"""How long faulthandler gets to write the stopped worker's traceback."""
_FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Worker:
    """In the worker: the pipe its exit status is declared on."""

    status_fd: int | None = None


def user_code(argv: Sequence[str]) -> str | None:
    """The `--fn` of `argv` when it names the user's code (`file.py:func`, `pkg.mod:func`):
    presets have no colon. None where processes cannot fork (Windows): no supervisor there."""
    if not hasattr(os, "fork"):
        return None
    for index, word in enumerate(argv):
        if word == "--":
            return None
        value = None
        if word in ("--fn", "-f") and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith("--fn="):
            value = word[len("--fn=") :]
        elif word.startswith("-f") and not word.startswith("--") and len(word) > 2:
            value = word[2:]
        if value is not None and ":" in value:
            return value
    return None


def _option(argv: Sequence[str], name: str) -> str | None:
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(name + "="):
            return word[len(name) + 1 :]
    return None


def _timeout(argv: Sequence[str]) -> float | None:
    """--timeout's seconds, if given and valid (the worker reports an invalid one)."""
    try:
        seconds = float(_option(argv, "--timeout") or "nan")
    except ValueError:
        return None
    return seconds if 0 < seconds < 10**9 else None


def supervise(argv: Sequence[str], function: str, work: Callable[[], None]) -> NoReturn:
    """Run `work` in a forked worker and exit as NOTE [a worker that dies without saying why]
    says."""
    timeout = _timeout(argv)
    read_end, write_end = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)  # no signal between fork and handlers
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        _work(write_end, timeout is not None, work)
    os.close(write_end)
    forwarded: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        forwarded.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    said, status, stopped = _wait(pid, read_end, timeout)
    sys.exit(_verdict(argv, function, timeout, said, status, stopped, forwarded))


def _work(status_fd: int, dump: bool, work: Callable[[], None]) -> NoReturn:
    """The worker: run jaccli, then `leave` with its exit status."""
    _Worker.status_fd = status_fd
    if dump:
        import faulthandler

        faulthandler.register(signal.SIGUSR1, file=status_fd, all_threads=True)
    try:
        work()
        code = 0
    except SystemExit as error:
        code = exit_status(error.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = ExitCode.COMPUTATION
    finish(code)


def finish(code: int) -> NoReturn:
    """Flush what jaccli wrote, then `leave`: Python's own teardown (torch's modules, one by
    one) would cost a third of a second and run code the user left behind."""
    from jaccli.output import result_stream

    for stream in (result_stream(), sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    leave(code)


def clock_started() -> None:
    """Tell the supervisor, if there is one, that --timeout's clock has started."""
    if _Worker.status_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_Worker.status_fd, CLOCK)


def leave(code: int) -> NoReturn:
    """End the process at once with `code`, declared to the supervisor as jaccli's own choice
    if there is one; threads the user's code left running do not hold the process open."""
    if _Worker.status_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_Worker.status_fd, STATUS + str(code).encode() + b"\n")
    os._exit(code)


def exit_status(code: object) -> int:
    """The status `sys.exit(code)` ends a process with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{code}\n")
    return 1


def _wait(pid: int, read_end: int, timeout: float | None) -> tuple[bytes, int, bool]:
    """What the worker wrote on the pipe, its wait status, and whether it was stopped for
    outliving its --timeout (counted from when the worker started its clock)."""
    said = b""
    deadline = None
    stopped = False
    process = _pidfd(pid)
    watched = [read_end] if process is None else [read_end, process]
    while True:
        wait = None if deadline is None else max(deadline - time.monotonic(), 0)
        ready, _, _ = select.select(watched, [], [], wait)
        if not ready:
            said += _stop(pid, read_end)
            stopped = True
            break
        if read_end in ready:
            chunk = os.read(read_end, 1 << 16)
            said += chunk
            if not chunk:
                break
            if deadline is None and timeout is not None and CLOCK in said:
                deadline = time.monotonic() + timeout + GRACE_SECONDS
            if process is None or process not in ready:
                continue
        if process is not None and process in ready:  # it ended; take what it left on the pipe
            os.set_blocking(read_end, False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read_end, 1 << 16):
                    said += chunk
            break
    _, status = os.waitpid(pid, 0)
    return said, status, stopped


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the worker ends (Linux); None elsewhere, where
    the end of the pipe tells."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None


def _stop(pid: int, read_end: int) -> bytes:
    """Ask the worker for its traceback (faulthandler), then kill it; the traceback."""
    said = b""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
    until = time.monotonic() + DUMP_SECONDS
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select([read_end], [], [], left)
        if not ready:
            break
        chunk = os.read(read_end, 1 << 16)
        said += chunk
        if not chunk or b"\n\n" in said:  # faulthandler ends with an empty line
            break
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return said


def _verdict(
    argv: Sequence[str],
    function: str,
    timeout: float | None,
    said: bytes,
    status: int,
    stopped: bool,
    forwarded: list[int],
) -> int:
    """The exit status: the worker's own declaration, or the supervisor's report of its end."""
    import re

    declared = re.search(rb"^" + re.escape(STATUS) + rb"(\d+)$", said, re.MULTILINE)
    if declared is not None and not stopped:
        return int(declared.group(1))
    interrupted = signal.SIGINT in forwarded or (
        os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT
    )
    if interrupted or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == ExitCode.INTERRUPTED):
        return ExitCode.INTERRUPTED
    if forwarded:  # SIGTERM or SIGHUP, passed on: end as the signal asks
        return 128 + forwarded[0]
    if stopped:
        where = _where_stopped(said, function)
        at = f" (it was at {where})" if where else ""
        message = f"{function} did not finish within --timeout {timeout:g}s{at}; stopped"
        code = "timeout"
    elif os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        cause = " (out of memory?)" if name == "SIGKILL" else ""
        message = f"{function} was running when jaccli's process was killed by {name}{cause}"
        code = "worker_died"
    else:
        message = (
            f"{function} ended jaccli's process itself (exit status "
            f"{os.WEXITSTATUS(status)}, as os._exit does) before jaccli finished; no result"
        )
        code = "worker_died"
    _report(argv, code, message)
    return ExitCode.COMPUTATION


def _where_stopped(said: bytes, function: str) -> str | None:
    """`file.py:12 in f`: the innermost frame of the user's file in faulthandler's dump."""
    import re

    frames = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<name>\S+)', re.M)
    path = function.rpartition(":")[0]
    wanted = os.path.abspath(path) if path.endswith(".py") else None
    for frame in frames.finditer(said.decode("utf-8", errors="replace")):
        filename = frame.group("file")
        if filename == wanted or (wanted is None and "jaccli" not in filename):
            return f"{shown_path(filename)}:{frame.group('line')} in {frame.group('name')}"
    return None


def _report(argv: Sequence[str], code: str, message: str) -> None:
    """The one line (and under --json the error object) on stderr, as the CLI writes them."""
    command = next((word for word in argv if not word.startswith("-")), "jaccli")
    lines = f"{command}: {message}\n"
    if "--json" in argv:
        import json

        error = {"error": {"code": code, "message": message}}
        lines += json.dumps(error, ensure_ascii=True) + "\n"
    with contextlib.suppress(Exception):
        sys.stderr.write(lines)
        sys.stderr.flush()
