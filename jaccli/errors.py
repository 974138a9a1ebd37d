"""Errors a user can cause, each with the exit code the CLI turns it into.

Every layer raises these; only the CLI prints them. The message is one line that names the bad
value and what would be valid; the operation (`jacobian:`, `vjp:`) is prefixed by the CLI.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses, as docs/limits.md documents them."""

    OK = 0
    COMPUTATION = 1
    USAGE = 2
    RESOURCE = 3
    INTERRUPTED = 130


class JaccliError(Exception):
    """A failure to report as one line and an exit code, never as a traceback."""

    exit_code: ExitCode = ExitCode.COMPUTATION
    default_code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled whole, code included: a block computed in another process (a Dask worker)
        raises the same error there as here."""
        return (_rebuilt, (type(self), self.message, self.code))


def _rebuilt(kind: type[JaccliError], message: str, code: str) -> JaccliError:
    return kind(message, code=code)


class UsageError(JaccliError):
    """A bad option, name, shape or value: the user can fix the command line (exit 2)."""

    exit_code = ExitCode.USAGE
    default_code = "usage"


def needs_one_output(
    what: str, function_name: str, outputs: list[str], *, code: str | None = None
) -> UsageError:
    """The refusal of `what` for a function of several outputs, naming `--output` to pick one."""
    return UsageError(
        f"{what} needs a single output; {function_name} returns {', '.join(outputs)} "
        f"(pick one with --output {outputs[0]})",
        code=code,
    )


class MissingDependencyError(UsageError):
    """An option needs an optional extra that is not installed (exit 2); the message names the
    pip line that installs it."""

    default_code = "missing_dependency"


class ComputationError(JaccliError):
    """The computation failed: the function raised or returned something unusable (exit 1)."""

    exit_code = ExitCode.COMPUTATION
    default_code = "computation"


class ResourceError(JaccliError):
    """The result would exceed the memory budget, so nothing was computed (exit 3)."""

    exit_code = ExitCode.RESOURCE
    default_code = "resource"


class Interrupt:
    """Whether Ctrl-C has arrived in this process: set by the handler `jaccli.__main__` installs,
    so an interrupt that Python wrapped in another error still exits 130."""

    seen = False
    at = 0.0
    """When it arrived (time.monotonic)."""
