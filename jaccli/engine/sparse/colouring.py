"""Colourings of J's columns and rows: which of them can share one forward or reverse pass.

# NOTE [colouring J]
Columns of J that have no row in common can be seeded together: one JVP along the sum of their
unit vectors gives each of them in the rows where it alone is non-zero. So a colouring of the
columns in which no two columns of a colour share a row (a distance-2 colouring of the bipartite
graph of J's pattern) gives J in one JVP per colour; colouring the rows the same way gives it in
one VJP per colour. Both are coloured, and the mode with fewer colours is chosen (forward on a
tie: a JVP keeps no graph of the function).

Each mode takes the fewest colours of:
- the greedy in natural order, and where the conflicts are not a stencil's, in largest-first
  order (by a bound on each column's number of neighbours: Σ over its rows of their other
  non-zeros; a stencil's columns all look alike): each column in turn gets the
  smallest colour none of its neighbours has. scipy's compiled `group_columns` does it, the
  grouping of Curtis, Powell and Reid that scipy's `least_squares` uses for sparse differences;
  building the whole groups one after another, it gives what the one-column-at-a-time greedy
  in the same order gives, in C. A band of half-width b gets 2b + 1 colours, the optimum;
- periodic colourings, colour(j) = g(j mod P): where J's columns conflict only at a few
  offsets (the column differences within a row: a stencil's), a colouring of the residues
  mod P in which residues that differ by an offset differ in colour is a colouring of the
  columns. The residues are few (P ≤ MAX_PERIOD), so DSATUR colours them in Python at no cost,
  and every candidate is checked on the whole pattern before it is kept. This is what brings
  a 2-D 5-point stencil to 5 or 6 colours, where every greedy order gives 7.

Smallest-last order is not tried: it needs a sequential peel of the column graph, a Python loop
per column. The greedy's cost grows with colours × columns, so a mode whose lower bound (the
most non-zeros in one row, for columns) makes that past GREEDY_WORK is given one colour per
column without trying.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

MAX_PERIOD = 64
"""The longest period of the periodic colourings tried."""
OFFSET_ROWS = 4096
"""Rows read (evenly spaced) to find the offsets at which columns conflict."""
MAX_ROW_NONZEROS = 16
"""Rows with more non-zeros than this are not read for offsets."""
MAX_OFFSETS = 64
"""Past this many distinct offsets the conflicts are not a stencil's: no periodic colouring."""
GREEDY_WORK = 500_000_000
"""Colours × columns past which the greedy is not run (about a second in C)."""


@dataclass(frozen=True)
class Colouring:
    """A colour for each column (mode `fwd`) or row (mode `rev`) of J, no two of one colour
    sharing a row (a column): one JVP (VJP) per colour gives J."""

    mode: str
    colours: np.ndarray
    """int64, one per column (fwd) or row (rev), from 0 to `count` − 1."""
    count: int
    method: str
    """How it was found: `natural order`, `largest-first order`, `periodic (P = 18)`, …"""

    def __repr__(self) -> str:
        what = "columns" if self.mode == "fwd" else "rows"
        size = len(self.colours)
        return f"Colouring({self.mode}, {self.count} colours of {size} {what}, {self.method})"


@dataclass(frozen=True)
class ColouredPattern:
    """J's pattern (rows: outputs flattened, columns: `wrt` inputs flattened and concatenated)
    with the colouring of the mode chosen, and the other mode's number of colours."""

    pattern: sp.csr_array
    colouring: Colouring
    other_count: int
    """How many colours the other mode needed (or would at least need, if not coloured)."""
    reason: str

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.pattern.shape
        return int(rows), int(columns)

    def __repr__(self) -> str:
        rows, columns = self.shape
        return (
            f"ColouredPattern({rows}×{columns}, nnz={self.pattern.nnz}, "
            f"{self.colouring.count} colours, {self.colouring.mode})"
        )


def as_pattern(matrix: sp.sparray | sp.spmatrix) -> sp.csr_array:
    """The pattern as a canonical boolean CSR array (sorted indices, no duplicates), True where
    `matrix` stores an entry, whatever its value."""
    if isinstance(matrix, sp.csr_array) and matrix.dtype == bool and matrix.has_canonical_format:
        return matrix
    csr = sp.csr_array(matrix, copy=True)
    csr.sum_duplicates()
    csr.sort_indices()
    return sp.csr_array((np.ones(csr.nnz, dtype=bool), csr.indices, csr.indptr), shape=csr.shape)


def colour_pattern(pattern: sp.csr_array, mode: str = "auto") -> ColouredPattern:
    """The colouring of J's columns (`fwd`), rows (`rev`), or (`auto`) of the two the one with
    fewer colours (NOTE [colouring J])."""
    pattern = as_pattern(pattern)
    columns = _colour(pattern, "fwd") if mode in ("auto", "fwd") else None
    rows = None
    # the rows need at least as many colours as a column has non-zeros: where the columns'
    # colours are no more, colouring the rows cannot win (a band: 10⁶ rows, 0.5 s saved)
    wanted = columns is None or columns.count > lower_bound(pattern.T)
    if mode in ("auto", "rev") and wanted:
        rows = _colour(as_pattern(pattern.T), "rev")
    if columns is not None and (rows is None or columns.count <= rows.count):
        other = rows.count if rows is not None else lower_bound(pattern.T)
        chosen = columns
    else:
        assert rows is not None
        other = columns.count if columns is not None else lower_bound(pattern)
        chosen = rows
    if mode != "auto":
        reason = f"requested: {chosen.count} {_passes(chosen)}"
    elif chosen.mode == "fwd":
        reason = f"{chosen.count} JVPs (columns coloured) ≤ {other} VJPs (rows coloured)"
    else:
        reason = f"{chosen.count} VJPs (rows coloured) < {other} JVPs (columns coloured)"
    return ColouredPattern(pattern, chosen, other, reason)


def _passes(colouring: Colouring) -> str:
    return "JVPs (columns coloured)" if colouring.mode == "fwd" else "VJPs (rows coloured)"


def lower_bound(pattern: sp.csr_array | sp.csc_array) -> int:
    """The most non-zeros in one row: columns sharing a row all need colours of their own."""
    csr = sp.csr_array(pattern)
    return int(np.diff(csr.indptr).max(initial=0))


def colour_columns(pattern: sp.csr_array) -> Colouring:
    """The columns coloured so that no two of a colour share a row (NOTE [colouring J])."""
    return _colour(as_pattern(pattern), "fwd")


def colour_rows(pattern: sp.csr_array) -> Colouring:
    """The rows coloured so that no two of a colour share a column (NOTE [colouring J])."""
    return _colour(as_pattern(sp.csr_array(pattern).T), "rev")


def _colour(pattern: sp.csr_array, mode: str) -> Colouring:
    """The fewest-colour colouring found of the columns of `pattern` (bool CSR)."""
    columns = pattern.shape[1]
    bound = max(lower_bound(pattern), 1 if columns else 0)
    if columns == 0 or pattern.nnz == 0:
        return Colouring(mode, np.zeros(columns, dtype=np.int64), min(columns, 1), "no conflicts")
    if bound * columns > GREEDY_WORK:
        return Colouring(mode, np.arange(columns, dtype=np.int64), columns, "one each")
    csc = sp.csc_array(pattern)
    colours = greedy(csc)
    best = Colouring(mode, colours, int(colours.max()) + 1, "natural order")
    if best.count == bound:
        return best
    offsets = conflict_offsets(pattern)
    if offsets is not None:  # conflicts at a few offsets: a stencil, whose columns look alike
        periodic = _periodic(pattern, offsets, bound, best.count)
        if periodic is not None:
            best = Colouring(mode, periodic[0], int(periodic[0].max()) + 1, periodic[1])
        return best
    order = np.argsort(-_neighbour_bound(pattern, csc), kind="stable")
    colours = greedy(csc, order)
    if int(colours.max()) + 1 < best.count:
        best = Colouring(mode, colours, int(colours.max()) + 1, "largest-first order")
    return best


def greedy(csc: sp.csc_array, order: np.ndarray | None = None) -> np.ndarray:
    """The greedy colouring of the columns taken in `order` (natural without one): each gets the
    smallest colour no column sharing a row with it has, by scipy's compiled grouping of Curtis,
    Powell and Reid (the kernel of `scipy.optimize._numdiff.group_columns`, called directly so
    that the natural order costs no permuted copy)."""
    from scipy.optimize._group_columns import group_sparse

    rows, columns = csc.shape
    if order is None:
        return np.asarray(group_sparse(rows, columns, csc.indices, csc.indptr), dtype=np.int64)
    permuted = csc[:, order]
    groups = group_sparse(rows, columns, permuted.indices, permuted.indptr)
    colours = np.empty(columns, dtype=np.int64)
    colours[order] = groups
    return colours


def _neighbour_bound(pattern: sp.csr_array, csc: sp.csc_array) -> np.ndarray:
    """For each column, Σ over its rows of their other non-zeros: at least its number of
    neighbours (columns sharing a row with it), more where they share several."""
    others = (np.diff(pattern.indptr) - 1)[csc.indices]
    return _sums(others, csc.indptr)


def _sums(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """The sum of `values` in each segment indptr[k]:indptr[k + 1] (0 for an empty one)."""
    lengths = np.diff(indptr)
    filled = np.flatnonzero(lengths)
    sums = np.zeros(len(lengths), dtype=values.dtype)
    if filled.size:
        sums[filled] = np.add.reduceat(values, indptr[filled])
    return sums


def conflict_offsets(pattern: sp.csr_array) -> np.ndarray | None:
    """The distinct positive column differences within rows (read from up to OFFSET_ROWS rows
    evenly spaced), or None past MAX_OFFSETS of them or where no row could be read."""
    counts = np.diff(pattern.indptr)
    readable = np.flatnonzero((counts >= 2) & (counts <= MAX_ROW_NONZEROS))
    if readable.size == 0:
        return None
    spaced = np.linspace(0, readable.size - 1, min(OFFSET_ROWS, readable.size)).astype(np.int64)
    picked = readable[spaced]
    width = int(counts[picked].max())
    padded = np.full((picked.size, width), -1, dtype=np.int64)
    for k in range(width):
        has = counts[picked] > k
        padded[has, k] = pattern.indices[pattern.indptr[picked[has]] + k]
    differences = padded[:, :, None] - padded[:, None, :]
    valid = (padded[:, :, None] >= 0) & (padded[:, None, :] >= 0) & (differences > 0)
    offsets = np.unique(differences[valid])
    return None if offsets.size > MAX_OFFSETS else offsets


def _periodic(
    pattern: sp.csr_array, offsets: np.ndarray, bound: int, to_beat: int
) -> tuple[np.ndarray, str] | None:
    """The periodic colouring with the fewest colours (fewer than `to_beat`) that is valid on
    the whole pattern, with its description; None when none is."""
    columns = pattern.shape[1]
    best: tuple[np.ndarray, str] | None = None
    for period in range(max(bound, 2), MAX_PERIOD + 1):
        if (offsets % period == 0).any():
            continue
        residues = dsatur_residues(period, tuple(int(d) % period for d in offsets))
        count = max(residues) + 1
        if count >= to_beat:
            continue
        colours = np.asarray(residues, dtype=np.int64)[np.arange(columns) % period]
        if conflict_free(pattern, colours):
            best, to_beat = (colours, f"periodic (P = {period})"), count
            if count == bound:
                break
    return best


@functools.lru_cache(maxsize=256)
def dsatur_residues(period: int, offsets: tuple[int, ...]) -> tuple[int, ...]:
    """A colouring of the residues mod `period` in which residues that differ by an offset
    differ in colour, by DSATUR (Brélaz): the residue whose neighbours have the most colours
    goes next, ties to the most neighbours, then the smallest."""
    steps = {d % period for d in offsets} | {-d % period for d in offsets}
    neighbours = [{(a + s) % period for s in steps} - {a} for a in range(period)]
    colour = [-1] * period
    seen: list[set[int]] = [set() for _ in range(period)]
    for _ in range(period):
        vertex = max(
            (a for a in range(period) if colour[a] < 0),
            key=lambda a: (len(seen[a]), len(neighbours[a]), -a),
        )
        chosen = next(c for c in range(period + 1) if c not in seen[vertex])
        colour[vertex] = chosen
        for other in neighbours[vertex]:
            seen[other].add(chosen)
    return tuple(colour)


def conflict_free(pattern: sp.csr_array, colours: np.ndarray) -> bool:
    """Whether no two columns of one colour share a row of the (CSR) pattern."""
    if pattern.nnz == 0:
        return True
    count = int(colours.max()) + 1
    entry_colours = colours[pattern.indices]
    lengths = np.diff(pattern.indptr)
    if count <= 64:  # a bit a colour: a row is free of conflicts when its bits are all distinct
        bits = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))[entry_colours]
        filled = np.flatnonzero(lengths)
        masks = np.bitwise_or.reduceat(bits, pattern.indptr[filled])
        return bool((_popcount(masks) == lengths[filled]).all())
    row_of = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), lengths)
    keys = np.sort(row_of * count + entry_colours)
    return bool((np.diff(keys) != 0).all())


def _popcount(words: np.ndarray) -> np.ndarray:
    """The number of bits set in each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy 2
        return np.bitwise_count(words).astype(np.int64)
    return np.unpackbits(words.view(np.uint8)).reshape(-1, 64).sum(axis=1)


def symmetric_colouring(pattern: sp.csr_array) -> Colouring:
    """A colouring of the columns of a symmetric pattern (a Hessian's) from which H is read
    directly off one product per colour: the distance-2 colouring of its columns (NOTE
    [recovering H] in compressed.py)."""
    return colour_columns(pattern)
