"""Many points of one input for `--points NAME=SOURCE`: a file of points along a leading axis, or
a stream of JSON Lines on stdin, one point a line, read as they come.

A stream is read in batches of the lines already waiting, so a pipe full of points is computed
many at once while a coprocess that sends one line and waits for its answer gets it at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from jaccli.errors import UsageError
from jaccli.spec import ArrayData, format_shape, parse_json_array, split_named

STREAM = "-"
READ_BYTES = 1 << 16
BATCH_BYTES = 4 * 1024**2
"""Text a batch of waiting lines may hold: parsed, a number's few characters become a 32-byte
float and then an array entry, so 4,096 long lines (4,000 of 25,000 numbers: 400 MB of text)
would be gigabytes before the first point is computed."""


@dataclass(frozen=True)
class PointError:
    """A point that could not be read: its index and why (its error line, under --keep-going)."""

    index: int
    error: UsageError


Batch = list[tuple[int, ArrayData | PointError]]
"""Points by index, in order, each the values of one point or why it could not be read."""


def parse_points_option(text: str) -> tuple[str, str]:
    """One `--points NAME=SOURCE`: the input's name and `@file` or `@-`."""
    name, source = split_named(text, "--points")
    if name is None or not source.startswith("@") or len(source) < 2:
        raise UsageError(
            f"bad --points {text[:60]!r}: expected NAME=@FILE (.npy, .pt, .safetensors, .json, "
            ".jsonl) or NAME=@- (JSON Lines on stdin)"
        )
    return name, source[1:]


def load_points(name: str, reference: str, size_limit: int) -> ArrayData:
    """Every point a file holds, along its leading axis: an array file, or .jsonl."""
    from jaccli.loaders import load_array, read_regular_file

    if reference.endswith(".jsonl"):
        with _speaking_of_points(name):
            raw = read_regular_file(reference, size_limit)
        data = raw.decode("utf-8", errors="replace")
        points = []
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                points.append(
                    _point(line, f"--points {name}=@{reference} line {number}", size_limit)
                )
        if not points:
            raise UsageError(f"--points {name}=@{reference}: no points in the file")
        return _stacked(name, reference, points)
    with _speaking_of_points(name):
        data = load_array(reference, size_limit)
    if not data.shape or data.shape[0] == 0:
        raise UsageError(
            f"--points {name}=@{reference}: the points run along the leading axis; got shape "
            f"{format_shape(data.shape)}"
        )
    return data


@contextlib.contextmanager
def _speaking_of_points(name: str) -> Iterator[None]:
    """The loaders' errors, which speak of --value, as errors of --points NAME."""
    try:
        yield
    except UsageError as error:
        message = error.message.replace("--value @", f"--points {name}=@", 1)
        raise UsageError(message, code=error.code) from None


def _point(line: str, what: str, size_limit: int) -> ArrayData:
    return parse_json_array(line, what=what, size_limit=size_limit)


def _stacked(name: str, reference: str, points: list[ArrayData]) -> ArrayData:
    shape = points[0].shape
    for index, point in enumerate(points):
        if point.shape != shape:
            raise UsageError(
                f"--points {name}=@{reference}: point {index} has shape "
                f"{format_shape(point.shape)}, point 0 has {format_shape(shape)}"
            )
    integer = all(p.is_integer for p in points)
    values = np.stack([p.values for p in points]).astype(np.int64 if integer else np.float64)
    return ArrayData(shape=(len(points), *shape), values=values)


class PointStream:
    """Points from JSON Lines on stdin, one a line, in batches of the lines already waiting."""

    def __init__(
        self, name: str, size_limit: int, max_batch: int = 4096, max_bytes: int = BATCH_BYTES
    ) -> None:
        self.name = name
        self.size_limit = size_limit
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        try:
            self._fd: int | None = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor
            self._fd = None
        self._pending = b""
        self._ended = False
        self._next_index = 0

    def batches(self) -> Iterator[Batch]:
        """Each batch holds at least one point; it ends when stdin does."""
        while True:
            lines = self._lines()
            if not lines:
                return
            batch: Batch = []
            for line in lines:
                index, self._next_index = self._next_index, self._next_index + 1
                what = f"--points {self.name}=@- line {index + 1}"
                try:
                    text = line.decode("utf-8")
                    batch.append((index, _point(text, what, self.size_limit)))
                except UnicodeDecodeError:
                    batch.append((index, PointError(index, UsageError(f"{what}: not UTF-8"))))
                except UsageError as error:
                    batch.append((index, PointError(index, error)))
            yield batch

    def _lines(self) -> list[bytes]:
        """The complete, non-blank lines waiting, blocking until there is one; more that are
        already readable join them, up to max_batch. Empty when stdin has ended."""
        if self._fd is None:  # a stdin without a descriptor (embedded): a line at a time
            return self._line_by_line()
        while not self._ended and b"\n" not in self._pending:
            self._read()
        lines = self._complete()
        while (
            not self._ended
            and len(lines) < self.max_batch
            and sum(map(len, lines)) + len(self._pending) < self.max_bytes
            and self._readable(0)
        ):
            self._read()
            lines += self._complete()
        if self._ended and self._pending.strip():
            lines.append(self._pending)
            self._pending = b""
        if not lines and not self._ended:
            return self._lines()  # only blank lines so far
        return lines

    def _line_by_line(self) -> list[bytes]:
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        while True:
            line = stream.readline(self.size_limit + 1)
            if not line:
                return []
            if isinstance(line, str):
                line = line.encode("utf-8")
            if len(line) > self.size_limit:
                raise UsageError(
                    f"--points {self.name}=@-: a line longer than --max-value-size "
                    f"({self.size_limit} bytes)"
                )
            if line.strip():
                return [line.rstrip(b"\n")]

    def _complete(self) -> list[bytes]:
        """Take the complete lines off the pending bytes."""
        complete, newline, rest = self._pending.rpartition(b"\n")
        if not newline:
            return []
        self._pending = rest
        return [line for line in complete.split(b"\n") if line.strip()]

    def _readable(self, timeout: float | None) -> bool:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        return bool(ready)

    def _read(self) -> None:
        self._readable(None)
        chunk = os.read(self._fd, READ_BYTES)
        if not chunk:
            self._ended = True
        elif len(self._pending) + len(chunk) > self.size_limit:
            raise UsageError(
                f"--points {self.name}=@-: a line longer than --max-value-size "
                f"({self.size_limit} bytes)"
            )
        self._pending += chunk
