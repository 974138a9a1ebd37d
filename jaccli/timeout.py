"""`--timeout SECONDS`: a run that takes longer is stopped where it was, and says where.

No torch here: the supervisor (jaccli/supervisor.py) reads the same option.

# NOTE [stopping a run that takes too long]
The clock starts once torch has loaded (its start-up, a second or more, is not the function's
time). A timer (SIGALRM) then interrupts the main thread wherever it is, between two Python
instructions: `TimedOut` is raised there, a BaseException so that the user's `except
Exception` cannot keep it, and the innermost frame of the user's code is remembered for the
message. A function that swallows even that, or that is stuck inside one call to C, is stopped
by the supervisor a few seconds later (NOTE [a worker that dies without saying why]).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from jaccli.errors import ComputationError, UsageError
from jaccli.messages import shown_path
from jaccli.supervisor import clock_started

REPEAT_SECONDS = 0.5
"""After the first, TimedOut is raised again this often, in case the user's code caught it."""


@dataclass(frozen=True)
class Timeout:
    """How long the run may take, and the function it runs, to name in the message."""

    seconds: float
    function: str


class TimedOut(BaseException):
    """The run passed its --timeout; `where` is the user's file:line it was at, if known."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


class Expired:
    """Whether --timeout has passed in this process, and where the run was: set by the timer,
    so that a TimedOut which other machinery wrapped in another error is still reported as
    the timeout."""

    where: str | None = None


def parse_timeout(text: str | None) -> float | None:
    """`--timeout`'s seconds: a positive number (fractions allowed), or None for no limit."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 10**9:
        raise UsageError(
            f"bad --timeout {text[:40]!r}: expected a number of seconds above 0 and below 1e9, "
            "like 30 or 0.5",
            code="bad_timeout",
        )
    return seconds


def timeout_error(limit: Timeout, where: str | None) -> ComputationError:
    """The one line of a run stopped by --timeout."""
    at = f" (it was at {where})" if where else ""
    return ComputationError(
        f"{limit.function} did not finish within --timeout {limit.seconds:g}s{at}; stopped",
        code="timeout",
    )


class _Clock:
    """The limit `time_limit` installed, until `start_clock` starts its timer."""

    pending: Timeout | None = None


@contextlib.contextmanager
def time_limit(limit: Timeout | None) -> Iterator[None]:
    """Raise TimedOut in the main thread once `limit` has passed since `start_clock` (NOTE
    [stopping a run that takes too long]); no limit off the main thread, where signals cannot
    be handled."""
    Expired.where = None
    if limit is not None and not hasattr(signal, "setitimer"):
        raise UsageError("--timeout needs POSIX timers, not found here", code="bad_timeout")
    if limit is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        if importing_torch(frame):  # an exception there aborts the process: a moment later
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        if Expired.where is None:
            Expired.where = user_location(frame) or ""
        signal.setitimer(signal.ITIMER_REAL, REPEAT_SECONDS)
        raise TimedOut(Expired.where)

    previous = signal.signal(signal.SIGALRM, expire)
    _Clock.pending = limit
    try:
        yield
    finally:
        _Clock.pending = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def clock_pending() -> bool:
    """Whether a --timeout waits for `start_clock`."""
    return _Clock.pending is not None


def start_clock() -> None:
    """Start --timeout's clock: once torch has loaded (its start-up is not the function's
    time), before the function is first loaded or called."""
    if _Clock.pending is not None:
        signal.setitimer(signal.ITIMER_REAL, _Clock.pending.seconds)
        _Clock.pending = None
        clock_started()


def importing_torch(frame: FrameType | None) -> bool:
    """Whether torch's own import is under way (its __init__ is on the stack): Python code of
    torch's import runs inside its C++ initialisers, where an exception aborts the process
    ("terminate called … KeyboardInterrupt")."""
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("torch", "__init__.py")):
            return True
        frame = frame.f_back
    return False


def _folders(*keys: str) -> tuple[str, ...]:
    """Python's own folders (sysconfig's `stdlib`, `purelib`, …), each ending in a separator."""
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(os.path.join(paths[key], "") for key in keys if key in paths)


def user_location(frame: FrameType | None) -> str | None:
    """`file.py:12 in f`: where in the user's code the run was. Among the frames jaccli called
    (those inside its innermost own frame), the innermost of a file of the user's own; else
    the outermost of an installed package's (`--fn package.module:f`); None when the run was
    in jaccli's or torch's code."""
    jaccli_folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")
    called = []
    while frame is not None and not frame.f_code.co_filename.startswith(jaccli_folder):
        called.append(frame)
        frame = frame.f_back
    python = _folders("stdlib", "platstdlib")
    torch_file = getattr(sys.modules.get("torch"), "__file__", None)
    if torch_file:
        python += (os.path.join(os.path.dirname(torch_file), ""),)
    installed = _folders("purelib", "platlib")
    candidates = [f for f in called if not f.f_code.co_filename.startswith(("<", *python))]
    own = [f for f in candidates if not f.f_code.co_filename.startswith(installed)]
    chosen = own[0] if own else (candidates[-1] if candidates else None)
    if chosen is None:
        return None
    filename = shown_path(chosen.f_code.co_filename)
    return f"{filename}:{chosen.f_lineno} in {chosen.f_code.co_name}"
