"""jaccli: Jacobians, their determinants, VJPs, JVPs, Hessians and HVPs by PyTorch autograd,
from the command line (`jaccli jacobian --fn expsum`) or from Python (`jaccli.jacobian(f,
x=x)`, jaccli/api.py).

Importing jaccli is cheap: the API (and torch, when it computes) loads on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("jacobian", "det", "vjp", "jvp", "hessian", "hvp", "check", "Result", "JaccliWarning")
_ERRORS = ("JaccliError", "UsageError", "ComputationError", "ResourceError")
__all__ = [*_API, *_ERRORS, "__version__"]


def __getattr__(name: str) -> Any:
    """The API's functions and errors, imported when first asked for."""
    if name in _API:
        from jaccli import api

        return getattr(api, name)
    if name in _ERRORS:
        from jaccli import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'jaccli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
