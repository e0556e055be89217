"""An input read as parts on many machines: pass 1 scans each part, the driver joins
what the scans found into the one `SequenceSet` a planner needs, and pass 2 loads the
rows of just the sequences one shard holds.

The parts are joined exactly as one file holding them end to end is read: sequences
numbered by first appearance over the parts in order, the rows of one id in part order,
then ordered by ``--time-col`` (a stable sort), ``--nan`` repaired and ``--target next``
applied per whole sequence. So the rows and values are those of a local run.

This is the seam between the readers and the Dask engine: a part is read by
`readers.read_input` (CSV, TSV, NPY, NPZ), one file at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from tbptt_cli.errors import InputDataError, TbpttError, UsageError
from tbptt_cli.options import InputOptions, parse_target
from tbptt_cli.sequences import FileInfo, SequenceSet, SourceInfo

FIRST_FEATURE = ""  # a planning column: the first feature, whatever it is called


def list_parts(opts: InputOptions) -> list[str]:
    """The files of INPUT, found and ordered as the local readers find them
    (`readers.inputs.resolve`: a file, a folder walked in natural order with names
    starting with . or _ skipped, a glob, several paths)."""
    from tbptt_cli.readers.inputs import resolve

    if opts.path == "-":
        raise UsageError("--engine dask reads files every worker can open, not stdin; give a path")
    return [part.path for part in resolve(opts)]


@dataclass(frozen=True)
class PartTask:
    """Pass 1 for one part: read it, spill its rows under ``spill`` (unless None)."""

    opts: InputOptions  # path: the part, as the user named it
    absolute: str  # the part where the workers open it (they have another current folder)
    keep: tuple[str, ...]
    planning: tuple[str, ...]  # columns the planner reads (features or kept columns)
    spill: str | None


@dataclass(frozen=True)
class PartScan:
    """What pass 1 found in one part: small, sent back to the driver."""

    path: str
    format: str
    size: int
    sha256: str
    feature_names: list[str]
    target_names: list[str]
    ids: list[str]  # in the part's order (first appearance)
    rows: np.ndarray  # int64, rows of each id in this part (after --nan drop)
    first_time: np.ndarray | None  # float64 per id, with --time-col
    last_time: np.ndarray | None
    planning: dict[str, np.ndarray]  # the planning columns, rows as spilled
    time: np.ndarray | None  # the time column, rows as spilled, when planning needs it


def scan_part(task: PartTask) -> PartScan:
    """Pass 1, on a worker: read one part as the readers do, except that ``--nan`` repairs
    other than drop (row by row: the same in a part as in the whole) and ``--target next``
    wait for the whole sequence (pass 2)."""
    from tbptt_cli.readers import read_input

    opts = task.opts
    path = str(opts.path)
    ahead = parse_target(opts.target, opts.horizon).kind == "next"
    raw = replace(
        opts,
        path=task.absolute,
        target="none" if ahead else opts.target,
        horizon=1 if ahead else opts.horizon,
        nan=opts.nan if opts.nan in ("error", "drop") else "keep",
    )
    checks: list[Future[bool]] = []
    try:
        data, source = read_input(raw, keep=task.keep, checks=checks)
        for check in checks:
            check.result()
    except TbpttError as e:  # a worker has its own current folder: name the path as given
        raise type(e)(str(e).replace(task.absolute, path)) from None
    time = data.extra.get(opts.time_col) if opts.time_col else None
    if task.spill is not None:
        _spill(task.spill, data, time)
    first = last = None
    if time is not None:
        first = _per_sequence(np.minimum, time, data)
        last = _per_sequence(np.maximum, time, data)
    return PartScan(
        path=path,
        format=source.format,
        size=source.size,
        sha256=source.sha256,
        feature_names=list(data.feature_names),
        target_names=list(data.target_names),
        ids=list(data.ids),
        rows=np.asarray(data.lengths, dtype=np.int64),
        first_time=first,
        last_time=last,
        planning={name: _column(data, name) for name in task.planning},
        time=np.asarray(time) if time is not None and task.planning else None,
    )


def _per_sequence(ufunc: np.ufunc, column: np.ndarray, data: SequenceSet) -> np.ndarray:
    out = np.full(data.count, np.nan)
    filled = np.flatnonzero(data.lengths > 0)
    if len(filled):
        out[filled] = ufunc.reduceat(np.asarray(column, dtype=np.float64), data.starts[filled])
    return out


def _column(data: SequenceSet, name: str) -> np.ndarray:
    if name == FIRST_FEATURE:
        name = data.feature_names[0]
    if name in data.extra:
        return np.asarray(data.extra[name], dtype=np.float64)
    return np.asarray(data.values[:, data.feature_names.index(name)], dtype=np.float64)


SPILLED = ("values", "targets", "time")


def _spill(prefix: str, data: SequenceSet, time: np.ndarray | None) -> None:
    """The part's rows as .npy files pass 2 maps; written under temp names and renamed,
    so a task Dask runs again after its worker died leaves no half-written file."""
    arrays = {"values": data.values, "targets": data.targets, "time": time}
    for name, array in arrays.items():
        if array is None:
            continue
        final = f"{prefix}.{name}.npy"  # absolute: see sharded.ShardedEngine.read
        temp = f"{final}.tmp.{os.getpid()}"
        with open(temp, "wb") as stream:
            np.save(stream, np.asarray(array))
        os.replace(temp, final)


@dataclass(frozen=True)
class Pieces:
    """Where the rows of each sequence are: piece k holds ``rows[k]`` rows of sequence
    ``sequence[k]`` from row ``start[k]`` of part ``part[k]``'s spill; the pieces of one
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
class Joined:
    """The parts joined: the sequences as a local run reads them (values a stand-in unless
    the planner reads them), where their rows are, and what the manifest says of the input."""

    data: SequenceSet
    source: SourceInfo
    pieces: Pieces
    spills: list[str]
    in_order: bool  # no id's parts overlap in time: pass 2 need not sort
    rows: np.ndarray  # rows of each sequence as loaded (before --target next drops one)

    def windowed(self, opts: InputOptions) -> bool:
        """Whether pass 2 may load only the rows a shard reads of a sequence: not when the
        rows must be sorted by time, or forward-filled from earlier rows, first."""
        return self.in_order and opts.nan != "ffill"

    def load(
        self, sequences: np.ndarray, opts: InputOptions, begin: np.ndarray, end: np.ndarray
    ) -> Load:
        """Pass 2's input: rows ``begin[i]:end[i]`` of each of the (sorted) global
        ``sequences`` of one shard."""
        data = self.data
        return Load(
            opts,
            self.spills,
            self.pieces.select(sequences).window(begin, end),
            [data.ids[i] for i in sequences.tolist()],
            data.feature_names,
            data.target_names if data.target_features is None else [],
            self.in_order,
        )


def join(
    scans: Sequence[PartScan], opts: InputOptions, spills: list[str], planning: tuple[str, ...]
) -> Joined:
    """The driver's half of pass 1."""
    from tbptt_cli.readers import finish

    first = scans[0]
    for scan in scans[1:]:
        if (scan.feature_names, scan.target_names) != (first.feature_names, first.target_names):
            raise InputDataError(
                f"{scan.path}: features {', '.join(scan.feature_names)} differ from "
                f"{first.path}'s ({', '.join(first.feature_names)}); give --features"
            )
    number: dict[str, int] = {}
    for scan in scans:
        for name in scan.ids:
            number.setdefault(name, len(number))
    owner = np.concatenate([[number[n] for n in s.ids] for s in scans]).astype(np.int64)
    part = np.concatenate([np.full(len(s.ids), p) for p, s in enumerate(scans)]).astype(np.int64)
    rows = np.concatenate([s.rows for s in scans])
    start = np.concatenate([np.cumsum(s.rows) - s.rows for s in scans]).astype(np.int64)
    order = np.argsort(owner, kind="stable")  # by sequence, then part
    pieces = Pieces(owner[order], part[order], start[order], rows[order])
    lengths = np.bincount(pieces.sequence, weights=pieces.rows, minlength=len(number))
    lengths = lengths.astype(np.int64)
    data = SequenceSet(
        values=_stand_in(lengths, first.feature_names, scans, pieces, opts, planning),
        starts=(np.cumsum(lengths) - lengths).astype(np.int64),
        lengths=lengths,
        ids=list(number),
        feature_names=first.feature_names,
        targets=None,
        target_names=first.target_names,
    )
    if first.target_names:  # a --target column: its values are loaded in pass 2
        data = replace(data, targets=_zeros(int(lengths.sum()), len(first.target_names)))
    data = replace(data, extra=_planning_extra(scans, pieces, opts, planning))
    data = finish(data, opts, str(opts.path), may_have_missing=False)  # --target next[:COL]
    in_order = _in_order(scans, pieces, order)
    return Joined(data, _source(scans, str(opts.path)), pieces, spills, in_order, lengths)


def _in_order(scans: Sequence[PartScan], pieces: Pieces, order: np.ndarray) -> bool:
    """Whether each id's pieces follow each other in time (a part per day or month), so
    that joining them in part order is already time order. ``order``: pieces from scans."""
    if scans[0].first_time is None:
        return True
    first = np.concatenate([s.first_time for s in scans])[order]  # type: ignore[misc]
    last = np.concatenate([s.last_time for s in scans])[order]  # type: ignore[misc]
    filled = pieces.rows > 0
    sequence, first, last = pieces.sequence[filled], first[filled], last[filled]
    same = sequence[1:] == sequence[:-1]
    return bool(np.all(last[:-1][same] <= first[1:][same]))


def _zeros(rows: int, columns: int) -> np.ndarray:
    """A read-only array of zeros that takes no memory."""
    return np.broadcast_to(np.zeros((1, columns)), (rows, columns))


def _stand_in(
    lengths: np.ndarray,
    names: list[str],
    scans: Sequence[PartScan],
    pieces: Pieces,
    opts: InputOptions,
    planning: tuple[str, ...],
) -> np.ndarray:
    """The values a planner sees: zeros, except the one feature it reads (ACF, segment
    boundaries), which every column then shows (a strided view, one column of memory)."""
    total = int(lengths.sum())
    features = [name for name in planning if name in names or name == FIRST_FEATURE]
    if not features:
        return _zeros(total, len(names))
    column = _joined_column(features[0], scans, pieces, lengths, opts)
    return np.lib.stride_tricks.as_strided(column, shape=(total, len(names)), strides=(8, 0))


def _planning_extra(
    scans: Sequence[PartScan], pieces: Pieces, opts: InputOptions, planning: tuple[str, ...]
) -> dict[str, np.ndarray]:
    lengths = np.bincount(pieces.sequence, weights=pieces.rows).astype(np.int64)
    names = [n for n in planning if n not in scans[0].feature_names and n != FIRST_FEATURE]
    return {n: _joined_column(n, scans, pieces, lengths, opts, repair=False) for n in names}


def _joined_column(
    name: str,
    scans: Sequence[PartScan],
    pieces: Pieces,
    lengths: np.ndarray,
    opts: InputOptions,
    repair: bool = True,
) -> np.ndarray:
    """One column of every sequence end to end, in time order and repaired as a local
    run has it."""
    columns = [s.planning[name] for s in scans]
    times = [s.time for s in scans] if opts.time_col else None
    values, time = _gather_pieces(columns, times, pieces)
    data = SequenceSet(
        values=values[:, None],
        starts=np.cumsum(lengths) - lengths,
        lengths=lengths,
        ids=[str(i) for i in range(len(lengths))],
        feature_names=[name],
    )
    data = _in_time_order(data, time)
    if repair and opts.nan in ("ffill", "zero"):
        from tbptt_cli.readers import repair_missing

        data = repair_missing(opts.nan, str(opts.path), data)
    return np.ascontiguousarray(data.values[:, 0], dtype=np.float64)


def _gather_pieces(
    columns: Sequence[np.ndarray | None], times: Sequence[np.ndarray | None] | None, pieces: Pieces
) -> tuple[np.ndarray, np.ndarray | None]:
    """The pieces' rows of per-part arrays, concatenated in piece order."""
    take = [
        np.asarray(columns[p][s : s + n])  # type: ignore[index]
        for p, s, n in zip(pieces.part, pieces.start, pieces.rows, strict=True)
    ]
    values = np.concatenate(take) if take else np.zeros(0)
    time = None
    if times is not None:
        chosen = [
            np.asarray(times[p][s : s + n])  # type: ignore[index]
            for p, s, n in zip(pieces.part, pieces.start, pieces.rows, strict=True)
        ]
        time = np.concatenate(chosen) if chosen else np.zeros(0)
    return values, time


def _in_time_order(data: SequenceSet, time: np.ndarray | None) -> SequenceSet:
    """Rows of each sequence stably sorted by time (the parts of one id interleave)."""
    if time is None or not len(time):
        return data
    owner = np.repeat(np.arange(data.count), data.lengths)
    order = np.lexsort((time, owner))
    if np.array_equal(order, np.arange(len(order))):
        return data
    targets = None if data.targets is None else data.targets[order]
    return replace(data, values=data.values[order], targets=targets)


def _source(scans: Sequence[PartScan], path: str) -> SourceInfo:
    """The input as the manifest records it, as a local run of the same files does:
    every part with its size and sha256, and the sha256 of that listing (one file: its
    own)."""
    files = [FileInfo(s.path, s.size, s.sha256) for s in scans]
    formats = "+".join(dict.fromkeys(s.format for s in scans))
    return SourceInfo.of_files(path, formats, files)


@dataclass(frozen=True)
class Load:
    """Pass 2's input for one shard: the pieces of the sequences it holds and how the
    parts were read."""

    opts: InputOptions
    spills: list[str]
    pieces: Pieces  # sequences numbered 0.. for this shard
    ids: list[str]
    feature_names: list[str]
    target_names: list[str]  # of a --target column (none for next: they repeat features)
    in_order: bool  # the parts of every id follow each other in time: no sort needed


def load(spec: Load) -> SequenceSet:
    """The shard's sequences, rows in time order and ``--nan`` repaired (before ``next``)."""
    from tbptt_cli.readers import repair_missing

    def mapped(name: str) -> list[np.ndarray | None]:
        arrays: list[np.ndarray | None] = []
        for prefix in spec.spills:
            file = f"{prefix}.{name}.npy"
            arrays.append(np.load(file, mmap_mode="r") if os.path.exists(file) else None)
        return arrays

    sort = spec.opts.time_col is not None and not spec.in_order
    values, time = _gather_pieces(mapped("values"), mapped("time") if sort else None, spec.pieces)
    targets = None
    if spec.target_names:
        targets = _gather_pieces(mapped("targets"), None, spec.pieces)[0]
    count = len(spec.ids)
    lengths = np.bincount(spec.pieces.sequence, weights=spec.pieces.rows, minlength=count)
    lengths = lengths.astype(np.int64)
    data = SequenceSet(
        values=values.reshape(len(values), -1),
        starts=np.cumsum(lengths) - lengths,
        lengths=lengths,
        ids=spec.ids,
        feature_names=spec.feature_names,
        targets=None if targets is None else targets.reshape(len(targets), -1),
        target_names=spec.target_names,
    )
    data = _in_time_order(data, time)
    if spec.opts.nan in ("ffill", "zero"):
        data = repair_missing(spec.opts.nan, str(spec.opts.path), data)
    return data
