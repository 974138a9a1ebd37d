"""Where the computation runs: `--device cpu|cuda|cuda:N|mps`, refused when it is not here."""

from __future__ import annotations

from dataclasses import replace

import torch

from jaccli.engine.problem import Problem
from jaccli.errors import UsageError


def available_devices() -> list[str]:
    """The devices this machine offers: cpu, then each CUDA device, then mps."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str) -> torch.device:
    """The torch device named, or UsageError (exit 2) naming those there are."""
    available = available_devices()
    if name.strip() not in available:
        raise UsageError(
            f"--device {name!r} is not available here (available: {', '.join(available)})",
            code="bad_device",
        )
    return torch.device(name.strip())


def on_device(problem: Problem, device: torch.device) -> Problem:
    """The problem with its inputs (constants too) on `device`; results come back through
    `to_numpy`, which copies to the CPU."""
    if device.type == "cpu":
        return problem
    return replace(problem, inputs={n: t.to(device) for n, t in problem.inputs.items()})
