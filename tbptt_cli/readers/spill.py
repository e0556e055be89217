"""Bounded memory for the table core: rows held until ``--memory-limit``, then spilled.

Parsed rows stay in memory up to the budget; beyond it they go to an anonymous temporary
file beside the output (``spill_dir``), memory-mapped at the end. Rows of one sequence
need not be contiguous: spilled rows are grouped (and sorted by time) through bucket
files, one bucket in memory at a time (`regrouped`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from tbptt_cli.materialize import release

CODES_BUDGET = 16 << 20  # bytes of int32 sequence codes held before they spill
REORDER_ROWS = 1 << 20  # rows read per step when grouping through the spill file ...
MAX_BUCKETS = 64  # ... into at most this many buckets (one file per array, and the codes)


def spill_file(directory: str | None) -> IO[bytes]:
    """An unnamed temporary file: nothing is left behind, whatever ends the run."""
    return tempfile.TemporaryFile(dir=directory or None, prefix=".tbptt-spill-")


def mapped(file: IO[bytes], rows: int, width: int, dtype: Any = np.float64) -> np.ndarray:
    """The spill file as a read-only memmap; the map keeps the unnamed file alive."""
    with file:
        file.flush()
        if rows == 0 or width == 0:
            return np.zeros((rows, width), dtype=dtype)
        return np.memmap(file, dtype=dtype, mode="r", shape=(rows, width))


@dataclass
class Store:
    """Rows of ``width`` values kept in memory until they pass the budget, then in a file.

    In memory they fill one buffer, sized from ``expected`` rows (a reader's estimate)
    and grown by half when that was short: no list of parts joined at the end, which
    held every row twice. Given a ``path``, they spill to that file (raw, no header)."""

    width: int
    budget: int
    spill_dir: str | None
    dtype: Any = np.float64
    expected: int = 0
    path: str | None = None
    buffer: np.ndarray | None = None
    file: IO[bytes] | None = None
    rows: int = 0

    def add(self, block: np.ndarray) -> None:
        count = len(block)
        if self.width and count:
            row_bytes = self.width * np.dtype(self.dtype).itemsize
            # Spill at once when the rows expected will not fit: filling memory first only
            # to copy it all to the file costs a second copy and the memory's page faults.
            needed = max(self.rows + count, self.expected if self.buffer is None else 0)
            if self.file is None and needed * row_bytes > self.budget:
                self._spill()
            if self.file is not None:
                np.ascontiguousarray(block, dtype=self.dtype).tofile(self.file)
            else:
                self._fit(self.rows + count, row_bytes)
                assert self.buffer is not None
                self.buffer[self.rows : self.rows + count] = block
        self.rows += count

    def _fit(self, rows: int, row_bytes: int) -> None:
        held = 0 if self.buffer is None else len(self.buffer)
        if held >= rows:
            return
        capacity = max(rows, held + held // 2, min(self.expected, self.budget // row_bytes))
        grown = np.empty((capacity, self.width), dtype=self.dtype)
        if self.buffer is not None:
            grown[: self.rows] = self.buffer[: self.rows]
        self.buffer = grown

    def _spill(self) -> None:
        path = self.path
        self.file = spill_file(self.spill_dir) if path is None else open(path, "w+b")  # noqa: SIM115
        if self.buffer is not None:
            self.buffer[: self.rows].tofile(self.file)
        self.buffer = None

    def array(self) -> np.ndarray:
        """The rows, once: the buffer is let go (trimmed if the estimate was far off)."""
        if self.file is not None:
            return mapped(self.file, self.rows, self.width, self.dtype)
        buffer, self.buffer = self.buffer, None
        if buffer is None:
            return np.zeros((self.rows if not self.width else 0, self.width), self.dtype)
        if len(buffer) > self.rows + self.rows // 4:
            return buffer[: self.rows].copy()
        return buffer[: self.rows]

    def close(self) -> None:
        self.buffer = None
        if self.file is not None:
            self.file.close()


class Codes:
    """Every row's sequence number, spilled as int32, with what the end needs counted on
    the way: rows per sequence and whether the rows already come grouped (and in time
    order). A grouped file, the usual case, never reads the codes back, so memory does
    not grow with the number of rows."""

    def __init__(self, spill_dir: str | None, budget: int | None = None) -> None:
        self.spill_dir = spill_dir
        self.budget = CODES_BUDGET if budget is None else budget
        self.parts: list[np.ndarray] = []  # held until they pass the budget
        self.file: IO[bytes] | None = None
        self.rows = 0
        self.lengths = np.zeros(0, dtype=np.int64)
        self.grouped = True
        self.repeats = False  # a time repeats within a sequence (known while grouped)
        self.last: tuple[np.ndarray, np.ndarray | None] | None = None  # the previous row

    def add(self, codes: np.ndarray, time: np.ndarray | None) -> None:
        if not len(codes):
            return
        self._keep(codes)
        self.rows += len(codes)
        self._count(codes)
        if self.grouped:
            self.grouped, repeats = _grouped(codes, time, self.last)
            self.repeats |= repeats
            self.last = (codes[-1:], time[-1:] if time is not None else None)

    def _count(self, codes: np.ndarray) -> None:
        low, high = int(codes.min()), int(codes.max())
        if high >= len(self.lengths):
            grow = max(high + 1 - len(self.lengths), len(self.lengths))
            self.lengths = np.concatenate([self.lengths, np.zeros(grow, dtype=np.int64)])
        if high - low <= len(codes):  # a narrow range (grouped rows): one cheap bincount
            self.lengths[low : high + 1] += np.bincount(codes - low, minlength=high - low + 1)
        else:
            used, counts = np.unique(codes, return_counts=True)
            self.lengths[used] += counts

    def _keep(self, codes: np.ndarray) -> None:
        if self.file is None and (self.rows + len(codes)) * codes.itemsize > self.budget:
            self.file = spill_file(self.spill_dir)
            for part in self.parts:
                part.tofile(self.file)
            self.parts = []
        if self.file is not None:
            codes.tofile(self.file)
        else:
            self.parts.append(codes)

    def array(self) -> np.ndarray:
        """All the codes, read back (only for in-memory rows that must be regrouped)."""
        return np.concatenate(list(self.pieces(self.rows))) if self.rows else np.zeros(0, np.int32)

    def pieces(self, rows: int) -> Iterator[np.ndarray]:
        """The codes in file order, ``rows`` at a time."""
        if self.file is None:
            held = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.int32)
            for start in range(0, len(held), rows):
                yield held[start : start + rows]
            return
        self.file.flush()
        self.file.seek(0)
        for start in range(0, self.rows, rows):
            yield np.fromfile(self.file, dtype=np.int32, count=min(rows, self.rows - start))

    def close(self) -> None:
        self.parts = []
        if self.file is not None:
            self.file.close()


def _grouped(
    codes: np.ndarray,
    time: np.ndarray | None,
    last: tuple[np.ndarray, np.ndarray | None] | None,
) -> tuple[bool, bool]:
    """Whether rows of a sequence are contiguous (codes are numbered by first appearance,
    so that is "never decreasing") and, with a time column, in time order within a
    sequence; and whether a time repeats within a sequence."""
    if last is not None:
        codes = np.concatenate([last[0], codes])
        time = np.concatenate([last[1], time]) if time is not None and last[1] is not None else time
    steps = np.diff(codes)
    if not bool((steps >= 0).all()):
        return False, False
    if time is None:
        return True, False
    forward = np.diff(time)[steps == 0]
    return bool((forward >= 0).all()), bool((forward == 0).any())


def order(sequence: np.ndarray, time: np.ndarray | None) -> np.ndarray:
    """The stable permutation that groups rows by sequence, then time."""
    if time is None:
        return np.argsort(sequence, kind="stable")
    return np.lexsort((time, sequence))


def regrouped(
    arrays: list[np.ndarray],
    codes: Codes,
    lengths: np.ndarray,
    time: int | None,
    spill_dir: str | None,
    budget: int,
) -> list[np.ndarray]:
    """Rows grouped by sequence (then by ``arrays[time]``), each array in the same order.

    Rows held in memory are sorted at once. Spilled rows go through two sequential
    passes, so neither a permutation of every row nor the pages of the whole spill file
    are ever held: consecutive sequences are dealt into buckets of about ``budget / 4``
    bytes (a longer sequence gets one of its own; the sort holds a bucket twice, and the
    writer's slabs come on top). The first pass reads the rows in file order and appends
    each to its bucket's files; the second sorts one bucket at a time in memory (stably,
    as one sort of every row would) and appends it to the grouped files.
    """
    if not any(isinstance(a, np.memmap) for a in arrays):
        permutation = order(codes.array(), arrays[time][:, 0] if time is not None else None)
        return [a[permutation] if a.shape[1] else a for a in arrays]
    row_bytes = sum(a.itemsize * a.shape[1] for a in arrays) + 4  # and an int32 code
    first_byte = (np.cumsum(lengths) - lengths) * row_bytes
    total = int(first_byte[-1] + lengths[-1] * row_bytes)
    target = max(budget // 4, total // MAX_BUCKETS + 1, 1)
    # Bucket numbers 0..K-1 without gaps, as int16: a stable argsort of those is a radix sort.
    bucket_of = np.unique(first_byte // target, return_inverse=True)[1].astype(np.int16)
    count = int(bucket_of.max()) + 1
    buckets = [[spill_file(spill_dir) for _ in range(len(arrays) + 1)] for _ in range(count)]
    step = max(1, min(REORDER_ROWS, budget // 4 // row_bytes))
    try:
        _deal(arrays, codes, bucket_of, buckets, step)
        return _sort_buckets(arrays, buckets, codes.rows, time, spill_dir)
    finally:
        for files in buckets:
            for file in files:
                file.close()


def _deal(
    arrays: list[np.ndarray],
    codes: Codes,
    bucket_of: np.ndarray,
    buckets: list[list[IO[bytes]]],
    step: int,
) -> None:
    """Append every row, in file order, to the files of its sequence's bucket."""
    start = 0
    for piece in codes.pieces(step):
        stop = start + len(piece)
        parts = [np.asarray(array[start:stop]) for array in arrays] + [piece]
        release(*arrays)  # read once, in order: no page of them is needed again
        which = bucket_of[piece]
        permutation = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[permutation], np.arange(len(buckets) + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            rows = permutation[bounds[k] : bounds[k + 1]]
            for part, file in zip(parts, buckets[k], strict=True):
                part[rows].tofile(file)
        start = stop


def _sort_buckets(
    arrays: list[np.ndarray],
    buckets: list[list[IO[bytes]]],
    rows: int,
    time: int | None,
    spill_dir: str | None,
) -> list[np.ndarray]:
    grouped = [spill_file(spill_dir) for _ in arrays]
    for files in buckets:
        for file in files:
            file.flush()
            file.seek(0)
        sequence = np.fromfile(files[-1], dtype=np.int32)
        held = [
            np.fromfile(f, a.dtype).reshape(len(sequence), a.shape[1])
            for f, a in zip(files, arrays, strict=False)
        ]
        for file in files:
            file.close()
        permutation = order(sequence, held[time][:, 0] if time is not None else None)
        for part, file in zip(held, grouped, strict=True):
            part[permutation].tofile(file)
        del held, permutation
    return [
        mapped(file, rows, a.shape[1], a.dtype) for file, a in zip(grouped, arrays, strict=True)
    ]
