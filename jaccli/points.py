"""Many points of one input for `--points NAME=SOURCE`: a file of points along a leading axis, or
a stream of JSON Lines on stdin, one point a line, read as they come.

A stream is read in batches of the lines already waiting, so a pipe full of points is computed
many at once while a coprocess that sends one line and waits for its answer gets it at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from jaccli.arrays import ArrayData, parse_json_array
from jaccli.errors import UsageError
from jaccli.spec import format_shape

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


Batch = list[tuple[int, int, ArrayData | PointError]]
"""Points by index, in order, each with its line number and the values of the point or why it
could not be read."""


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


_FLAT_ROW = re.compile(rb"\s*\[[-+0-9.eE, \t]*\]\s*")
"""A line that is one flat list of numbers: lines like it joined by commas are one JSON array
of as many rows, no line running into another."""


def _flat_rows(lines: list[bytes | None]) -> list[ArrayData | None]:
    """Each line that is a flat list of floats as its point, read with one JSON call for the
    whole batch (a call a line was most of a stream's reading); None for a line read alone, as
    before: anything else (integers, nesting, errors), so what is read is the same."""
    found: list[ArrayData | None] = [None] * len(lines)
    if len(lines) < 2:  # a line alone (a coprocess, a stdin without a descriptor): as before
        return found
    flat = [line is not None and _FLAT_ROW.fullmatch(line) is not None for line in lines]
    taken = [k for k, is_flat in enumerate(flat) if is_flat]
    if len(taken) < 2:
        return found
    try:
        rows = json.loads(b"[" + b",".join(lines[k] or b"" for k in taken) + b"]")
    except ValueError:
        return found
    if len(rows) != len(taken):  # pragma: no cover - each flat line is one row
        return found
    length = len(rows[0])
    floats = [
        (k, row)
        for k, row in zip(taken, rows, strict=True)
        if len(row) == length and length and int not in map(type, row)
    ]
    if not floats:
        return found
    values = np.array([row for _, row in floats], dtype=np.float64)
    for (k, _), row_values in zip(floats, values, strict=True):
        found[k] = ArrayData(shape=(length,), values=row_values)
    return found


class PointStream:
    """Points from JSON Lines on stdin, one a line, in batches of the lines already waiting.

    Lines are numbered as a text editor does, blank ones (keep-alives) included; a line past
    --max-value-size stands as its point's error, and the stream goes on at the next line."""

    def __init__(
        self, name: str, size_limit: int, max_batch: int = 4096, max_bytes: int = BATCH_BYTES
    ) -> None:
        self.name = name
        self.size_limit = size_limit
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        if sys.stdin is None:
            raise UsageError(
                f"--points {name}=@-: standard input is closed (<&-); give the points on stdin "
                "or in a file"
            )
        try:
            self._fd: int | None = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor
            self._fd = None
        self._pending = b""
        self._skipping = False
        """Whether the bytes up to the next newline belong to a line already refused as long."""
        self._ended = False
        self._line_number = 0
        self._next_index = 0
        self.before_waiting: list[Callable[[], None]] = []
        """Called before the stream waits for stdin: the reader of the points writes the
        answers it holds, so a coprocess that waits for its answer gets it."""

    def _before_waiting(self) -> None:
        for hook in self.before_waiting:
            hook()

    def batches(self) -> Iterator[Batch]:
        """Each batch holds at least one point; it ends when stdin does."""
        while True:
            lines = self._lines()
            if not lines:
                return
            batch: Batch = []
            quick = _flat_rows([line for _, line in lines])
            for k, (number, line) in enumerate(lines):
                index, self._next_index = self._next_index, self._next_index + 1
                if quick[k] is not None:
                    batch.append((index, number, quick[k]))
                    continue
                what = f"--points {self.name}=@- line {number}"
                try:
                    if line is None:
                        raise UsageError(
                            f"{what}: longer than --max-value-size ({self.size_limit} bytes)"
                        )
                    text = line.decode("utf-8")
                    batch.append((index, number, _point(text, what, self.size_limit)))
                except UnicodeDecodeError:
                    error = UsageError(f"{what}: not UTF-8")
                    batch.append((index, number, PointError(index, error)))
                except UsageError as error:
                    batch.append((index, number, PointError(index, error)))
            yield batch

    def _lines(self) -> list[tuple[int, bytes | None]]:
        """The complete, non-blank lines waiting (None for one too long), blocking until there is
        one; more that are already readable join them, up to max_batch. Empty when stdin has
        ended."""
        if self._fd is None:  # a stdin without a descriptor (embedded): a line at a time
            return self._line_by_line()
        lines: list[tuple[int, bytes | None]] = []
        waiting = 0  # bytes of the lines taken: a batch holds at most max_bytes of text
        while not lines and not self._ended:  # blank lines alone: wait for more
            self._read()
            lines += self._complete()
            waiting = sum(len(line or b"") for _, line in lines)
            while (
                not self._ended
                and len(lines) < self.max_batch
                and waiting + len(self._pending) < self.max_bytes
                and self._readable(0)
            ):
                self._read()
                more = self._complete()
                lines += more
                waiting += sum(len(line or b"") for _, line in more)
        if self._ended and (self._pending.strip() or self._skipping):
            self._line_number += 1
            lines.append((self._line_number, None if self._skipping else self._pending))
            self._pending, self._skipping = b"", False
        return lines

    def _line_by_line(self) -> list[tuple[int, bytes | None]]:
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        while True:
            self._before_waiting()
            line = stream.readline(self.size_limit + 1)
            if not line:
                return []
            if isinstance(line, str):
                line = line.encode("utf-8")
            self._line_number += 1
            if len(line) > self.size_limit:
                while line and not line.endswith(b"\n"):  # the rest of the long line
                    line = stream.readline(self.size_limit + 1)
                return [(self._line_number, None)]
            if line.strip():
                return [(self._line_number, line.rstrip(b"\n"))]

    def _complete(self) -> list[tuple[int, bytes | None]]:
        """Take the complete lines off the pending bytes, numbered; a partial line past the size
        limit is refused at once and its bytes dropped as they come."""
        lines: list[tuple[int, bytes | None]] = []
        *complete, self._pending = self._pending.split(b"\n")
        for line in complete:
            self._line_number += 1
            if self._skipping:
                self._skipping = False
                lines.append((self._line_number, None))
            elif len(line) > self.size_limit:
                lines.append((self._line_number, None))
            elif line.strip():
                lines.append((self._line_number, line))
        if len(self._pending) > self.size_limit:
            self._pending, self._skipping = b"", True
        elif self._skipping:
            self._pending = b""
        return lines

    def _readable(self, timeout: float | None) -> bool:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        return bool(ready)

    def _read(self) -> None:
        if not self._readable(0):  # about to wait: the answers so far go out first
            self._before_waiting()
            self._readable(None)
        chunk = os.read(self._fd, READ_BYTES)
        if not chunk:
            self._ended = True
        self._pending += chunk
