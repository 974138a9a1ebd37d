"""A progress bar on stderr for long loops, shown after a second and only on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

DELAY_SECONDS = 1.0


class DelayedProgress:
    """Called with (done, total); shows a bar once the work has run for DELAY_SECONDS."""

    def __init__(self, description: str, enabled: bool, unit: str | None = None) -> None:
        self.description = description
        self.enabled = enabled
        self.unit = unit
        """With a unit (`points`), the bar also says how many a second."""
        self.started = time.monotonic()
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < DELAY_SECONDS:
                return
            # Rich's progress, only when a bar is drawn: a --json run would pay for it at start
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(self.description),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total)
        assert self.task is not None
        description = self.description
        if self.unit is not None:
            rate = done / max(time.monotonic() - self.started, 1e-9)
            shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"  # 0.43 blocks/s, not 0
            description = f"{self.description} {shown} {self.unit}/s"
        self.bar.update(self.task, completed=done, total=total, description=description)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextmanager
def progress_bar(description: str, unit: str | None = None) -> Iterator[DelayedProgress]:
    """A DelayedProgress that is stopped (and erased) however the work ends."""
    progress = DelayedProgress(description, enabled=sys.stderr.isatty(), unit=unit)
    try:
        yield progress
    finally:
        progress.stop()
