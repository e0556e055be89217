"""The fast path for long CSV/TSV files: pyarrow's streaming reader, bounded memory.

pyarrow parses 16 MiB blocks in C on every core and rounds every number correctly
(``fast_float``), so its float64 values are bit for bit those of Python's ``float()``
that the precise reader uses: the output does not depend on which reader ran. It
cannot say on which line a bad cell sits, so whenever it rejects a block (a bad number,
a wrong field count, a NaN under ``--nan error``, bytes that are not UTF-8) this reader
gives up and `delimited` reads the file again with the precise reader, which names
``path:line:col``. Errors cost a second read; clean files never pay for it.

Parsed rows stay in memory up to ``--memory-limit``; beyond that they go to an
anonymous temporary file beside the output (``spill_dir``), memory-mapped at the end.
Rows of one sequence need not be contiguous: spilled rows are grouped (and sorted by
``--time-col``) through bucket files, one bucket in memory at a time (`_regrouped`).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import hashlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any

import numpy as np

from tbptt_cli.materialize import release
from tbptt_cli.options import InputOptions
from tbptt_cli.sequences import SequenceSet, SourceInfo

BLOCK_SIZE = 2 << 20  # pyarrow reads ahead many blocks: small ones bound the memory
MISSING = ["", "NA"]  # the precise reader's missing cells, nothing more
CODES_BUDGET = 16 << 20  # bytes of int32 sequence codes held before they spill
REORDER_ROWS = 1 << 20  # rows read per step when grouping through the spill file ...
MAX_BUCKETS = 64  # ... into at most this many buckets (three files each)

Tick = Callable[[int], None]


class Rejected(Exception):
    """pyarrow cannot read this file the way the precise reader would: use that one."""


@dataclass
class Columns:
    """Physical column numbers by role; ``floats`` is the spill order: features first."""

    names: list[str]
    features: list[int]
    target: int | None
    time: int | None
    keep: list[int]
    id: int | None

    @property
    def others(self) -> list[int]:
        return [c for c in (self.target, self.time) if c is not None] + self.keep


class Tap:
    """A binary file that hashes, counts and checks every byte pyarrow reads from it."""

    def __init__(self, stream: IO[bytes], tick: Tick | None) -> None:
        self.stream, self.tick = stream, tick
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, count: int = -1) -> bytes:
        block = self.stream.read(count)
        self.digest.update(block)
        self.size += len(block)
        if b"\0" in block or not block.isascii() and not _utf8(block):
            raise Rejected("NUL byte or bad UTF-8")
        if self.tick:
            self.tick(len(block))
        return block

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.stream.close()

    @property
    def closed(self) -> bool:
        return self.stream.closed


def _utf8(block: bytes) -> bool:
    # A block may end inside a character: up to 3 trailing bytes are checked with the next.
    for cut in range(4):
        try:
            block[: len(block) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


@dataclass
class Store:
    """Float rows kept in memory until they pass the budget, then in a spill file."""

    width: int
    budget: int
    spill_dir: str | None
    parts: list[np.ndarray] = field(default_factory=list)
    held: int = 0
    file: IO[bytes] | None = None
    rows: int = 0

    def add(self, block: np.ndarray) -> None:
        self.rows += len(block)
        if not self.width:
            # A zero-width slice is a view that would keep the whole parsed block alive.
            return
        if self.file is None and self.held + block.nbytes > self.budget:
            self.file = spill_file(self.spill_dir)
            for part in self.parts:
                part.tofile(self.file)
            self.parts, self.held = [], 0
        if self.file is not None:
            block.tofile(self.file)
        else:
            self.parts.append(block)
            self.held += block.nbytes

    def array(self) -> np.ndarray:
        """The rows, once: the parts held in memory are let go."""
        if self.file is None:
            parts, self.parts = self.parts, []
            if not parts:
                return np.zeros((self.rows if not self.width else 0, self.width))
            return np.concatenate(parts)
        return mapped(self.file, self.rows, self.width)

    def close(self) -> None:
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
        self.last: tuple[int, float] | None = None  # (code, time) of the previous row

    def add(self, codes: np.ndarray, time: np.ndarray | None) -> None:
        if not len(codes):
            return
        self._keep(codes)
        self.rows += len(codes)
        self._count(codes)
        if self.grouped:
            self.grouped = _grouped(codes, time, self.last)
            self.last = (int(codes[-1]), float(time[-1]) if time is not None else 0.0)

    def _count(self, codes: np.ndarray) -> None:
        low, high = int(codes.min()), int(codes.max())
        if high >= len(self.lengths):
            self.lengths = np.concatenate(
                [
                    self.lengths,
                    np.zeros(max(high + 1 - len(self.lengths), len(self.lengths)), dtype=np.int64),
                ]
            )
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


def _grouped(codes: np.ndarray, time: np.ndarray | None, last: tuple[int, float] | None) -> bool:
    """Rows of a sequence are contiguous (codes are numbered by first appearance, so that
    is "never decreasing") and, with a time column, in time order within a sequence."""
    if last is not None:
        codes = np.concatenate([[last[0]], codes])
        time = np.concatenate([[last[1]], time]) if time is not None else None
    steps = np.diff(codes)
    if not bool((steps >= 0).all()):
        return False
    return time is None or bool((np.diff(time)[steps == 0] >= 0).all())


def spill_file(directory: str | None) -> IO[bytes]:
    """An unnamed temporary file: nothing is left behind, whatever ends the run."""
    return tempfile.TemporaryFile(dir=directory or None, prefix=".tbptt-spill-")


def mapped(file: IO[bytes], rows: int, width: int) -> np.ndarray:
    """The spill file as a read-only memmap; the map keeps the unnamed file alive."""
    with file:
        file.flush()
        if rows == 0 or width == 0:
            return np.zeros((rows, width))
        return np.memmap(file, dtype=np.float64, mode="r", shape=(rows, width))


def read_long(
    opts: InputOptions,
    path: str,
    fmt: str,
    delimiter: str,
    columns: Columns,
    budget: int,
    spill_dir: str | None,
    tick: Tick | None,
) -> tuple[SequenceSet, SourceInfo]:
    """Parse the file; raises `Rejected` where the precise reader must take over."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(len(columns.names))]
    types: dict[str, Any] = {names[c]: pa.float64() for c in columns.features + columns.others}
    if columns.id is not None:
        types[names[columns.id]] = pa.string()
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=list(types),
        null_values=MISSING,
        strings_can_be_null=False,
        quoted_strings_can_be_null=True,
    )
    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=BLOCK_SIZE)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    features = Store(len(columns.features), budget // 2, spill_dir)
    others = Store(len(columns.others), budget // 2, spill_dir)
    codes = Codes(spill_dir)
    ids: dict[str, int] = {}
    checked = len(columns.features) + (columns.target is not None)
    with open(path, "rb") as stream:
        tap = Tap(stream, tick)
        try:
            reader = pacsv.open_csv(
                tap, read_options=read, parse_options=parse, convert_options=convert
            )
            for batch in reader:
                block = _floats(batch, [names[c] for c in columns.features + columns.others])
                if opts.nan == "error" and not np.isfinite(block[:, :checked]).all():
                    raise Rejected("a missing or non-finite value")
                if columns.time is not None and not np.isfinite(block[:, checked]).all():
                    raise Rejected("a missing time")
                features.add(np.ascontiguousarray(block[:, : len(columns.features)]))
                others.add(np.ascontiguousarray(block[:, len(columns.features) :]))
                codes.add(
                    _codes(batch.column(names[columns.id]), ids)
                    if columns.id is not None
                    else np.zeros(len(block), dtype=np.int32),
                    block[:, checked] if columns.time is not None else None,
                )
                del batch, block  # before pyarrow parses the next block
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            _close(features, others, codes)
            raise Rejected(str(exc)) from None
        except BaseException:
            _close(features, others, codes)
            raise
    if features.rows == 0:
        codes.close()
        raise Rejected("no data rows")  # the precise reader words this one
    del reader
    give_back_memory()  # before the regrouping below allocates its buckets
    lengths = codes.lengths[: max(len(ids), 1)]
    values, rest = features.array(), others.array()  # closes the spill files (maps stay)
    time_column = checked - len(columns.features)  # the time follows the target in ``rest``
    if not codes.grouped:
        time = time_column if columns.time is not None else None
        if isinstance(values, np.memmap) or isinstance(rest, np.memmap):
            values, rest = _regrouped(values, rest, codes, lengths, time, spill_dir, budget)
        else:
            order = _order(codes.array(), rest[:, time] if time is not None else None)
            if order is not None:
                values, rest = values[order], rest[order]
            del order
    codes.close()
    data = SequenceSet.from_offsets(
        values=values,
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        ids=list(ids) if columns.id is not None else ["0"],
        feature_names=[columns.names[c] for c in columns.features],
        targets=rest[:, :1] if columns.target is not None else None,
        target_names=[columns.names[columns.target]] if columns.target is not None else (),
    )
    position = {c: j for j, c in enumerate(columns.others)}
    extra_cols = columns.keep + ([columns.time] if columns.time is not None else [])
    extra = {columns.names[c]: rest[:, position[c]] for c in extra_cols}
    data = replace(data, extra=extra)
    info = SourceInfo(path=path, format=fmt, size=tap.size, digest=tap.digest.hexdigest())
    return data, info


def give_back_memory() -> None:
    """Hand what the parse freed back to the system. glibc keeps freed blocks in its heap
    and pyarrow's allocator keeps its own: after a 380 MB CSV that was 270 MB resident
    for nothing through the whole write."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def _close(*stores: Store | Codes) -> None:
    for store in stores:
        store.close()


def _floats(batch: Any, names: Sequence[str]) -> np.ndarray:
    """The batch's float columns side by side; nulls (missing cells) become NaN."""
    out = np.empty((batch.num_rows, len(names)))
    for j, name in enumerate(names):
        out[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    return out


def _codes(column: Any, ids: dict[str, int]) -> np.ndarray:
    """Sequence number of every row, numbered by first appearance across the whole file."""
    encoded = column.dictionary_encode()  # the batch's ids in first-appearance order
    local = encoded.dictionary.to_pylist()
    table = np.array([ids.setdefault(text, len(ids)) for text in local], dtype=np.int32)
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


def _order(sequence: np.ndarray, time: np.ndarray | None) -> np.ndarray | None:
    """The stable permutation that groups rows by sequence (then time), or None if sorted."""
    steps = np.diff(sequence)
    grouped = bool((steps >= 0).all())
    if time is not None:
        timed = np.asarray(time)
        same = steps == 0
        grouped = grouped and bool((np.diff(timed)[same] >= 0).all())
        if not grouped:
            return np.lexsort((timed, sequence))
    if grouped:
        return None
    return np.argsort(sequence, kind="stable")


def _regrouped(
    values: np.ndarray,
    rest: np.ndarray,
    codes: Codes,
    lengths: np.ndarray,
    time: int | None,
    spill_dir: str | None,
    budget: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Spilled rows grouped by sequence (then time) in two sequential passes, so neither
    a permutation of every row nor the pages of the whole spill file are ever held.

    Consecutive sequences are dealt into buckets of about ``budget / 4`` bytes (a longer
    sequence gets one of its own; the sort holds a bucket twice, and the writer's slabs
    come on top). The first pass reads the rows in file order and appends each to its
    bucket's files; the second sorts one bucket at a time in memory (stably, as one
    sort of every row would) and appends it to the grouped files.
    """
    arrays = (values, rest)
    row_bytes = 8 * (values.shape[1] + rest.shape[1]) + 4  # and an int32 code
    first_byte = (np.cumsum(lengths) - lengths) * row_bytes
    total = int(first_byte[-1] + lengths[-1] * row_bytes)
    target = max(budget // 4, total // MAX_BUCKETS + 1, 1)
    # Bucket numbers 0..K-1 without gaps, as int16: a stable argsort of those is a radix sort.
    bucket_of = np.unique(first_byte // target, return_inverse=True)[1].astype(np.int16)
    buckets = [[spill_file(spill_dir) for _ in range(3)] for _ in range(int(bucket_of.max()) + 1)]
    step = max(1, min(REORDER_ROWS, budget // 4 // row_bytes))
    try:
        start = 0
        for piece in codes.pieces(step):
            stop = start + len(piece)
            parts = [np.asarray(array[start:stop]) for array in arrays] + [piece]
            release(values, rest)  # read once, in order: no page of them is needed again
            which = bucket_of[piece]
            order = np.argsort(which, kind="stable")
            bounds = np.searchsorted(which[order], np.arange(len(buckets) + 1))
            for k in np.flatnonzero(np.diff(bounds)):
                rows = order[bounds[k] : bounds[k + 1]]
                for part, file in zip(parts, buckets[k], strict=True):
                    part[rows].tofile(file)
            start = stop
        grouped = [spill_file(spill_dir) for _ in arrays]
        for files in buckets:
            for file in files:
                file.flush()
                file.seek(0)
            sequence = np.fromfile(files[2], dtype=np.int32)
            held = [np.fromfile(f, np.float64).reshape(len(sequence), -1) for f in files[:2]]
            for file in files:
                file.close()
            order = (
                np.lexsort((held[1][:, time], sequence))
                if time is not None
                else np.argsort(sequence, kind="stable")
            )
            for part, file in zip(held, grouped, strict=True):
                part[order].tofile(file)
            del held, order
    finally:
        for files in buckets:
            for file in files:
                file.close()
    grouped_values, grouped_rest = grouped
    return (
        mapped(grouped_values, codes.rows, values.shape[1]),
        mapped(grouped_rest, codes.rows, rest.shape[1]),
    )


def header_columns(path: str, delimiter: str) -> list[str] | None:
    """The header's names when its first line is the whole header; None for the unusual
    (a blank first line, a quoted name spanning lines), which the precise reader handles."""
    try:
        with open(path, "rb") as stream:
            first = stream.readline()
    except OSError:
        return None
    text = first.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    # A lone CR (old Mac line ends) inside the "line" means readline saw no line end.
    if not text.strip() or text.count('"') % 2 or "\r" in text.rstrip("\r\n"):
        return None
    try:
        return [name.strip() for name in next(csv.reader([text], delimiter=delimiter))]
    except csv.Error:
        return None
