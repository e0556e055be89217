"""An input read as parts by Dask workers, joined as a local run reads the same files.

Pass 1 (`scan_part`, one task per part) reads a part with the local readers: the
`table.Layout` decided once on the first part (`decide`, on the driver), an assembler of
its own per part. The part's rows, grouped by sequence and in time order within the part,
go straight to files beside the output; the driver gets back the ids, rows per id, time
ranges and findings.

The driver joins them (`join`) as the local reader joins the files of one input: ids
numbered by first appearance over the parts in order, the rows of one id in part order,
then stably in time order. What takes whole sequences (duplicate times, ``--freq`` gaps,
``--nan ffill|drop``) and the columns a planner reads are done by `finish_group` tasks
over groups of whole sequences, with the readers' own steps (`table.regular`,
`readers.repair_missing`), and pass 2 (`load`) does the same again for the sequences
one shard holds; when nothing changes rows and the parts of every id follow each other in
time, it loads only the rows the shard writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from tbptt_cli import atomic
from tbptt_cli.errors import InputDataError, TbpttError, UsageError
from tbptt_cli.options import TABLE, InputOptions, parse_target
from tbptt_cli.readers import finish, parse_size, prepare, read_input, repair_missing
from tbptt_cli.readers.columns import Roles
from tbptt_cli.readers.inputs import Part, given_paths, shown
from tbptt_cli.readers.repairs import REPAIRS, Repairs, missing_cells, reported
from tbptt_cli.readers.source import Source
from tbptt_cli.readers.spill import order
from tbptt_cli.readers.steps import Changes, RowFinder, Rows
from tbptt_cli.readers.table import (
    ARRAYS,
    Layout,
    OrderWatch,
    as_sequences,
    check_columns,
    id_warnings,
    open_source,
    regular,
    unordered_warning,
)
from tbptt_cli.sequences import FileInfo, SequenceSet, SourceInfo

FIRST_FEATURE = ""  # a planning column: the first feature, whatever it is called
GROUP_BYTES = 256 << 20  # rows of whole sequences a `finish_group` task holds, about


def list_parts(opts: InputOptions) -> list[Part]:
    """The parts of INPUT as the local readers find them, after the checks a local read
    makes before any work."""
    if "-" in given_paths(opts):
        raise UsageError("--engine dask reads files every worker can open, not stdin; give a path")
    return prepare(opts)[0]


def decide(parts: list[Part], opts: InputOptions, keep: Sequence[str]) -> Layout | None:
    """How every part is read, from the first part (as a local run decides it); None for
    NPY/NPZ, one array file read whole by one worker."""
    from tbptt_cli.readers import table

    if parts[0].format not in TABLE:
        return None
    opener = partial(open_source, opts=opts, stdin=sys.stdin.buffer, tee=None, tick=None)
    with table.first_with_rows(parts, opener) as first:
        return table.decide(first, opts, keep, parts)


@contextlib.contextmanager
def named_as_given(renames: dict[str, str]) -> Iterator[None]:
    """Errors name every part as the user named it: a worker opens it by its absolute path
    (it has a current folder of its own)."""
    try:
        yield
    except TbpttError as e:
        renamed = type(e)(as_given(str(e), renames))
        renamed.__dict__.update(e.__dict__)  # an InputDataError's check
        raise renamed from None


def as_given(text: str, renames: dict[str, str]) -> str:
    for absolute in sorted(renames, key=len, reverse=True):  # part-10 before part-1
        text = text.replace(absolute, renames[absolute])
    return text


@dataclass(frozen=True)
class PartTask:
    """Pass 1 for one part: read it, its rows to files ``spill.<array>``."""

    part: Part  # its path absolute, as the workers open it
    shown: str  # the path as the user named it
    opts: InputOptions
    layout: Layout | None  # None: NPY/NPZ
    keep: tuple[str, ...]
    spill: str
    values_dtype: str  # a table's values, as a local run keeps them (`core.values_dtype`)


@dataclass(frozen=True)
class PartScan:
    """What pass 1 found in one part: small, sent back to the driver."""

    path: str
    format: str
    size: int
    sha256: str
    warnings: list[str]
    ids: list[str]  # in the part's order (first appearance)
    rows: np.ndarray  # int64, rows of each id in this part
    first_time: np.ndarray | None  # per id, with a time column (as read: numbers or us)
    last_time: np.ndarray | None
    repeats: bool  # a time repeats within an id of this part
    repairs: Repairs  # its NaN/inf features and targets (for --nan ffill|zero|drop)
    watch: OrderWatch | None  # without --time-col: the likely time column's order
    layout: Layout | None  # NPY/NPZ: the columns as read
    shapes: list[tuple[int, str]]  # each of its files: columns and dtype of a row


def scan_part(task: PartTask) -> PartScan:
    """Pass 1, on a worker."""
    temp = f"{task.spill}.{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this attempt's
    try:
        with named_as_given({task.part.path: task.shown}):
            if task.layout is None:
                rows, info, warnings, watch, layout = _read_array(task)
            else:
                rows, info, warnings, watch = _read_table(task, task.layout, temp)
                layout = task.layout
        _place(task.spill, temp, rows.arrays)
    except OSError as e:  # the readers name their own; this is writing the rows
        raise atomic.write_error(Path(task.spill).parent, e) from None
    values, rest, time = rows.arrays
    starts = np.cumsum(rows.lengths) - rows.lengths
    first = last = None
    repeats = False
    if time.shape[1]:
        first, last = time[starts, 0], time[starts + rows.lengths - 1, 0]
        same = np.diff(time[:, 0]) == 0
        same[starts[1:] - 1] = False  # a sequence's first row repeats nothing
        repeats = bool(same.any())
    repairs = Repairs()
    if task.opts.nan in REPAIRS:
        target = [layout.roles.target] if layout.roles.target else []
        cells = missing_cells([values, rest[:, : len(target)]])
        repairs = Repairs.counted([*feature_names(layout.roles), *target], cells, len(values))
    return PartScan(
        path=task.shown,
        format=task.part.format,
        size=info.size,
        sha256=info.sha256,
        warnings=[as_given(w, {task.part.path: task.shown}) for w in warnings],
        ids=rows.ids,
        rows=rows.lengths.astype(np.int64),
        first_time=first,
        last_time=last,
        repeats=repeats,
        repairs=repairs,
        watch=watch,
        layout=layout if task.layout is None else None,
        shapes=[(a.shape[1], a.dtype.str) for a in rows.arrays],
    )


def _read_table(
    task: PartTask, layout: Layout, spill_to: str
) -> tuple[Rows, FileInfo, list[str], OrderWatch | None]:
    """The part through the table core, as one part of a local read; its rows go straight
    to files ``spill_to.<array>``."""
    opts = task.opts
    with open_source(task.part, opts, sys.stdin.buffer, None, None) as source:
        check_columns(source, layout)
        folder = os.path.dirname(task.spill)
        budget = parse_size(opts.memory_limit)
        assembler = layout.assembler(
            opts, budget, folder, source.rows_hint(), dtype=task.values_dtype, spill_to=spill_to
        )
        try:
            assembler.read(source)
            rows = assembler.rows()
            info = source.file_info()
        finally:
            assembler.close()
        return rows, info, source.warnings, assembler.watch


def _read_array(task: PartTask) -> tuple[Rows, FileInfo, list[str], None, Layout]:
    """An NPY/NPZ file read whole; ``--nan`` repairs and ``--target next`` wait for the
    join, as for tables."""
    opts = task.opts
    ahead = parse_target(opts.target, opts.horizon).kind == "next"
    raw = replace(
        opts,
        path=task.part.path,
        target="none" if ahead else opts.target,
        horizon=1 if ahead else opts.horizon,
        nan="error" if opts.nan == "error" else "keep",
    )
    checks: list[Future[bool]] = []
    data, source = read_input(raw, keep=task.keep, checks=checks)
    for check in checks:
        check.result()
    columns = [] if data.targets is None else [np.asarray(data.targets, dtype=np.float64)]
    columns += [np.asarray(data.extra[name], dtype=np.float64)[:, None] for name in task.keep]
    rest = np.hstack(columns) if columns else np.zeros((len(data.values), 0))
    rows = Rows([data.values, rest, np.zeros((len(rest), 0))], data.lengths, data.ids, False)
    target = data.target_names[0] if data.target_names else None
    roles = Roles(None, None, data.feature_names, target, list(task.keep))
    return rows, source.files[0], list(source.warnings), None, Layout(roles, None, [], [])


def _place(prefix: str, temp: str, arrays: list[np.ndarray]) -> None:
    """Each array as file ``prefix.<array>`` (raw rows) for pass 2: the file the reader
    spilled it to, renamed, or else (rows regrouped, an array file's) written. Written
    under names of this attempt first, so a task Dask runs again after its worker died
    leaves no half-written file."""
    for name, array in zip(ARRAYS, arrays, strict=True):
        spilled, final = f"{temp}.{name}", f"{prefix}.{name}"
        if not (isinstance(array, np.memmap) and array.filename == os.path.abspath(spilled)):
            with open(spilled, "wb") as stream:
                np.ascontiguousarray(array).tofile(stream)
        os.replace(spilled, final)


@dataclass(frozen=True)
class Pieces:
    """Where the rows of each sequence are: piece k holds ``rows[k]`` rows of sequence
    ``sequence[k]`` from row ``start[k]`` of part ``part[k]``'s rows; the pieces of one
    sequence are in part order."""

    sequence: np.ndarray
    part: np.ndarray
    start: np.ndarray
    rows: np.ndarray

    def select(self, sequences: np.ndarray) -> Pieces:
        """The pieces of ``sequences`` (sorted), renumbered 0.. in that order."""
        keep = np.isin(self.sequence, sequences)
        renumbered = np.searchsorted(sequences, self.sequence[keep])
        return Pieces(renumbered, self.part[keep], self.start[keep], self.rows[keep])

    def window(self, begin: np.ndarray, end: np.ndarray) -> Pieces:
        """Only rows ``begin[i]:end[i]`` of each sequence i (counted over its pieces)."""
        before = np.cumsum(self.rows) - self.rows  # rows before each piece, all sequences
        first = np.searchsorted(self.sequence, self.sequence)  # its sequence's first piece
        at = before - before[first]  # the piece's first row within its sequence
        low = np.maximum(begin[self.sequence], at)
        high = np.minimum(end[self.sequence], at + self.rows)
        keep = high > low
        return Pieces(
            self.sequence[keep], self.part[keep], (self.start + low - at)[keep], (high - low)[keep]
        )


@dataclass(frozen=True)
class Reading:
    """How the parts were read, what every `load` needs."""

    opts: InputOptions
    layout: Layout
    parts: list[Part]  # absolute paths (a duplicate time is located by reading them again)
    renames: dict[str, str]  # absolute path -> as given
    spills: list[str]
    shapes: list[list[tuple[int, str]]]  # each part's spilled arrays: columns, dtype of a row
    in_order: bool  # the parts of every id follow each other in time: no sort needed


@dataclass(frozen=True)
class Load:
    """Rows of some sequences as read: ``whole`` sequences are sorted by time and made
    regular and repaired as the local reader does; windows of them are taken as they are
    (only when that changes nothing)."""

    reading: Reading
    pieces: Pieces  # sequences numbered 0..
    ids: list[str]
    whole: bool


@dataclass(frozen=True)
class Loaded:
    data: SequenceSet
    changes: Changes
    owner: np.ndarray  # the loaded sequence each sequence of ``data`` comes from
    longest: int  # the longest sequence before --nan drop
    repairs: Repairs


def load(spec: Load) -> Loaded:
    """The sequences' rows, ``--nan`` repaired (``--target next`` is the caller's)."""
    reading, pieces = spec.reading, spec.pieces
    count = len(spec.ids)
    lengths = np.bincount(pieces.sequence, weights=pieces.rows, minlength=count).astype(np.int64)
    # The time only for whole sequences (to sort, check and fill them): a window is written.
    loaded = ARRAYS if spec.whole else ARRAYS[:2]
    arrays = [_gather(reading, k, pieces) for k in range(len(loaded))]
    arrays += [np.zeros((len(arrays[0]), 0))] * (len(ARRAYS) - len(loaded))
    rows = Rows(arrays, lengths, spec.ids, repeats=True)
    if spec.whole and reading.layout.roles.time and not reading.in_order:
        permutation = order(np.repeat(np.arange(count), lengths), arrays[2][:, 0])
        rows = replace(rows, arrays=[a[permutation] if a.shape[1] else a for a in arrays])
    changes = Changes()
    if spec.whole:
        opts, layout = reading.opts, reading.layout
        reopen = partial(_reopen, opts=opts)
        finder = partial(RowFinder, reading.parts, reopen, layout.roles, layout.time_kind)
        budget = parse_size(opts.memory_limit)
        folder = os.path.dirname(reading.spills[0])
        with named_as_given(reading.renames):
            rows = regular(rows, layout, opts, finder, changes, budget, folder)
    data = as_sequences(rows, reading.layout)
    longest = int(data.lengths.max(initial=0))
    repairs = Repairs.clean(data)
    if reading.opts.nan in REPAIRS and data.count:
        data, repairs = repair_missing(reading.opts.nan, shown(reading.opts), data)
    owner = rows.owner if rows.owner is not None else np.arange(len(rows.lengths))
    return Loaded(data, changes, owner, longest, repairs)


def _reopen(part: Part, opts: InputOptions) -> Source:
    return open_source(part, opts, sys.stdin.buffer, None, None)


def _gather(reading: Reading, array: int, pieces: Pieces) -> np.ndarray:
    """The pieces' rows of one of the parts' spilled arrays, end to end, at the widest
    dtype of the parts' (a part whose values float32 could not hold kept float64, as a
    local read does from then on). Read into place: a memory map would take a page fault
    per 4 KiB, which doubled the time on a VM."""
    width = reading.shapes[0][array][0]
    dtypes = [np.dtype(shapes[array][1]) for shapes in reading.shapes]
    out = np.empty((int(pieces.rows.sum()), width), dtype=np.result_type(*dtypes))
    if not width:
        return out
    opened: dict[int, int] = {}
    try:
        at = 0
        for p, s, n in zip(pieces.part.tolist(), pieces.start.tolist(), pieces.rows.tolist(),
                           strict=True):  # fmt: skip
            if p not in opened:
                opened[p] = os.open(f"{reading.spills[p]}.{ARRAYS[array]}", os.O_RDONLY)
            same = dtypes[p] == out.dtype
            piece = out[at : at + n] if same else np.empty((n, width), dtypes[p])
            flat = piece.reshape(-1).view(np.uint8)
            if os.preadv(opened[p], [flat.data], s * width * dtypes[p].itemsize) != flat.size:
                raise OSError(f"{reading.spills[p]}.{ARRAYS[array]}: shorter than expected")
            if not same:
                out[at : at + n] = piece  # exactly: every narrower value fits the wider
            at += n
    finally:
        for fd in opened.values():
            os.close(fd)
    return out


@dataclass(frozen=True)
class GroupTask:
    """Whole sequences made regular and repaired; the columns a planner reads."""

    load: Load
    planning: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    """The sequences of one group as the local reader has them (``owner``: the group's
    sequence each comes from), what was changed, the planning columns."""

    lengths: np.ndarray
    ids: list[str]
    owner: np.ndarray
    changes: Changes
    columns: dict[str, np.ndarray]
    longest: int  # before --nan drop
    repairs: Repairs


def finish_group(task: GroupTask) -> Finished | InputDataError:
    """On a worker. A data error is returned, not raised: the driver reports the one a
    local read meets first (see `errors.InputDataError`), whichever group it is in."""
    try:
        loaded = load(task.load)
    except InputDataError as error:
        return error
    data = loaded.data
    columns = {name: planning_column(data, name) for name in task.planning}
    return Finished(data.lengths, data.ids, loaded.owner, loaded.changes, columns,
                    loaded.longest, loaded.repairs)  # fmt: skip


def planning_column(data: SequenceSet, name: str) -> np.ndarray:
    """A feature or kept column of every row, float64."""
    if name == FIRST_FEATURE:
        name = data.feature_names[0]
    if name in data.extra:
        return np.asarray(data.extra[name], dtype=np.float64)
    return np.ascontiguousarray(data.values[:, data.feature_names.index(name)], np.float64)


@dataclass
class Joined:
    """The parts joined on the driver: the input's sequences (values a stand-in but for the
    columns a planner reads), where their rows are and what the manifest says of them.

    A sequence as read (a "raw" one) may become several (``--gaps split``); the rows of raw
    sequence i, as the local reader has them, are ``raw_starts[i] : + raw_rows[i]`` of
    the whole input's rows, and its sequences lie there end to end."""

    reading: Reading
    pieces: Pieces
    ids: list[str]  # of the raw sequences
    raw_rows: np.ndarray
    source: SourceInfo
    repairs: Repairs  # what --nan repairs: counted in each part, or in each finished group
    finishing: bool  # rows may change, or a whole-sequence check is due: `finish_group`
    data: SequenceSet | None = None
    changes: Changes | None = None

    @property
    def raw_starts(self) -> np.ndarray:
        return np.cumsum(self.raw_rows) - self.raw_rows

    @property
    def missing(self) -> bool:
        return self.repairs.cells > 0

    @property
    def windowed(self) -> bool:
        """Whether a shard may load only the rows it writes of a sequence: not when rows
        must be sorted by time, merged, inserted or filled from earlier ones first."""
        nan = self.reading.opts.nan in ("ffill", "drop") and self.missing
        changed = self.changes is not None and self.changes.rows
        return self.reading.in_order and not nan and not changed

    def load(self, sequences: np.ndarray, begin: np.ndarray, end: np.ndarray) -> Load:
        """Rows ``begin[i]:end[i]`` of each of the (sorted) raw ``sequences``."""
        pieces = self.pieces.select(sequences)
        if self.windowed:
            pieces = pieces.window(begin, end)
        ids = [self.ids[i] for i in sequences.tolist()]
        return Load(self.reading, pieces, ids, whole=not self.windowed)

    def groups(self, planning: tuple[str, ...]) -> list[GroupTask]:
        """Whole raw sequences in order, about GROUP_BYTES of rows a task."""
        row_bytes = 8 * (len(self.reading.layout.roles.floats) + 1)
        ends = np.cumsum(self.raw_rows * row_bytes)
        cuts = [0]
        while cuts[-1] < len(ends):
            done = ends[cuts[-1] - 1] if cuts[-1] else 0
            cuts.append(max(cuts[-1] + 1, int(np.searchsorted(ends, done + GROUP_BYTES, "right"))))
        tasks = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            sequences = np.arange(a, b)
            spec = Load(self.reading, self.pieces.select(sequences),
                        self.ids[a:b], whole=True)  # fmt: skip
            tasks.append(GroupTask(spec, planning))
        return tasks

    def finished(self, tasks: list[GroupTask], results: list[Finished | InputDataError]) -> None:
        """The sequences as the `finish_group` tasks made them."""
        errors = [r for r in results if isinstance(r, InputDataError)]
        if errors:
            raise min(errors, key=lambda error: error.check)  # the first of the earliest check
        done = [r for r in results if isinstance(r, Finished)]
        first = np.cumsum([0] + [len(task.load.ids) for task in tasks[:-1]])
        owner = np.concatenate([f.owner + at for f, at in zip(done, first, strict=True)])
        lengths = np.concatenate([f.lengths for f in done]).astype(np.int64)
        self.raw_rows = np.bincount(owner, lengths, len(self.ids)).astype(np.int64)
        self.changes = sum((f.changes for f in done), Changes())
        self.repairs = sum((f.repairs for f in done), Repairs())
        ids = [name for f in done for name in f.ids]
        planning = tasks[0].planning
        columns = {n: np.concatenate([f.columns[n] for f in done]) for n in planning}
        longest = max(f.longest for f in done)
        self._warn([*self.changes.warnings(self.reading.opts)], len(ids), longest)
        self.data = self._stand_in(lengths, ids, columns)

    def planned(self) -> None:
        """The sequences as read, when no `finish_group` was needed."""
        self._warn([], len(self.ids), int(self.raw_rows.max(initial=0)))
        self.data = self._stand_in(self.raw_rows, self.ids, {})

    def _warn(self, warnings: list[str], sequences: int, longest: int) -> None:
        """What the local reader says once it has every sequence, and what it repaired."""
        warnings += id_warnings(self.reading.layout.roles, sequences, longest)
        source = replace(self.source, warnings=(*self.source.warnings, *warnings))
        self.source = reported(source, self.repairs, self.reading.opts.nan)

    def _stand_in(
        self, lengths: np.ndarray, ids: list[str], columns: dict[str, np.ndarray]
    ) -> SequenceSet:
        """What a planner sees: the lengths, the names, the columns it reads (the features
        among them in their place, zeros elsewhere), ``--target next`` applied."""
        roles, opts = self.reading.layout.roles, self.reading.opts
        names = feature_names(roles)
        total = int(lengths.sum())
        features = {
            (0 if n == FIRST_FEATURE else names.index(n)): c
            for n, c in columns.items()
            if n in names or n == FIRST_FEATURE
        }
        data = SequenceSet(
            values=_values(total, len(names), features),
            starts=(np.cumsum(lengths) - lengths).astype(np.int64),
            lengths=lengths.astype(np.int64),
            ids=ids,
            feature_names=list(names),
            targets=_zeros(total, 1) if roles.target else None,
            target_names=[roles.target] if roles.target else [],
            extra={n: c for n, c in columns.items() if n not in names and n != FIRST_FEATURE},
        )
        return finish(data, opts, shown(opts), may_have_missing=False)[0]  # --target next[:COL]


def feature_names(roles: Roles) -> list[str]:
    """A wide table's steps are one feature, ``value``."""
    return roles.features if roles.layout == "long" else ["value"]


def _zeros(rows: int, columns: int) -> np.ndarray:
    """A read-only array of zeros that takes no memory."""
    return np.broadcast_to(np.zeros((1, columns)), (rows, columns))


def _values(rows: int, width: int, features: dict[int, np.ndarray]) -> np.ndarray:
    """Zeros but for the given feature columns; one column shown in every place (a strided
    view, one column of memory) when it is the only one."""
    if not features:
        return _zeros(rows, width)
    if len(features) == 1:
        column = np.ascontiguousarray(next(iter(features.values())), dtype=np.float64)
        return np.lib.stride_tricks.as_strided(column, shape=(rows, width), strides=(8, 0))
    values = np.zeros((rows, width))
    for j, column in features.items():
        values[:, j] = column
    return values


def join(
    scans: Sequence[PartScan],
    opts: InputOptions,
    layout: Layout | None,
    parts: list[Part],
    spills: list[str],
) -> Joined:
    """The driver's half of pass 1: the parts put together in order."""
    layout = layout or scans[0].layout
    assert layout is not None
    long = layout.roles.layout == "long"
    number: dict[object, int] = {}
    numbers = []
    for p, scan in enumerate(scans):
        keys = scan.ids if long else [(p, i) for i in range(len(scan.ids))]  # rows never join
        numbers.append(np.array([number.setdefault(k, len(number)) for k in keys], np.int64))
    ids = _names(number, scans, numbers)
    owner = np.concatenate(numbers)
    part = np.concatenate([np.full(len(s.ids), p) for p, s in enumerate(scans)]).astype(np.int64)
    rows = np.concatenate([s.rows for s in scans])
    start = np.concatenate([np.cumsum(s.rows) - s.rows for s in scans]).astype(np.int64)
    order = np.argsort(owner, kind="stable")  # by sequence, then part
    pieces = Pieces(owner[order], part[order], start[order], rows[order])
    raw_rows = np.bincount(pieces.sequence, weights=pieces.rows, minlength=len(ids))
    overlap = _overlap(scans, pieces, order)
    warnings = [*layout.warnings, *(w for s in scans for w in s.warnings)]
    hint = None
    watches = [s.watch for s in scans]
    if all(w is not None for w in watches):
        watch = OrderWatch.joined(watches, numbers)  # type: ignore[arg-type]
        code = watch.unordered()
        if code is not None:
            hint = watch.name
            warnings.append(unordered_warning(ids[code], watch.name))
    files = [FileInfo(s.path, s.size, s.sha256) for s in scans]
    formats = "+".join(dict.fromkeys(s.format for s in scans))
    source = SourceInfo.of_files(shown(opts), formats, files, warnings)
    source = replace(source, time_col_hint=hint)
    renames = {part.path: scan.path for part, scan in zip(parts, scans, strict=True)}
    shapes = [s.shapes for s in scans]
    reading = Reading(opts, layout, parts, renames, spills, shapes, not overlap)
    repairs = sum((s.repairs for s in scans), Repairs())
    missing = repairs.cells > 0
    # What needs whole sequences before the plan: rows of one id that may be out of time
    # order or at the same time (found sorted), --freq gaps, NaN to fill from before or drop.
    timed = layout.roles.time is not None
    irregular = timed and (overlap or opts.freq is not None or any(s.repeats for s in scans))
    finishing = irregular or (missing and opts.nan in ("ffill", "drop"))
    return Joined(reading, pieces, ids, raw_rows.astype(np.int64), source, repairs, finishing)


def _names(
    number: dict[object, int], scans: Sequence[PartScan], numbers: list[np.ndarray]
) -> list[str]:
    """Each sequence's id, in the order of the numbers."""
    names = [""] * len(number)
    for scan, codes in zip(scans, numbers, strict=True):
        for name, code in zip(scan.ids, codes.tolist(), strict=True):
            names[code] = name
    return names


def _overlap(scans: Sequence[PartScan], pieces: Pieces, order: np.ndarray) -> bool:
    """Whether the parts of some id overlap (or touch) in time: only parts that follow each
    other in time (a part per day or month) are already in time order joined end to end,
    with no time twice. ``order``: the pieces from the parts' ids."""
    if scans[0].first_time is None:
        return False
    first = np.concatenate([s.first_time for s in scans])[order]  # type: ignore[misc]
    last = np.concatenate([s.last_time for s in scans])[order]  # type: ignore[misc]
    same = pieces.sequence[1:] == pieces.sequence[:-1]
    return bool(np.any(last[:-1][same] >= first[1:][same]))
