"""A run spread over workers: pass 1 reads the input's parts, the driver plans as a local
run does, pass 2 writes every shard of every output, and the driver writes the virtual
file over them (`shards.py`). The workers are reached through an `Executor` (Dask's
client, `cluster.py`); everything here is plain functions on picklable tasks.

What a local run computes from every value on the driver is computed by tasks that each
load some rows (`parts.load`) and merged on the driver the same way: the ``--scale``
parameters (`scaling.block_statistics` of the same blocks, merged in order) and the
largest value written, which a dry run checks against ``--dtype``.

The output's folder must be shared by the driver and every worker (the shards, and the
parts' rows between the two passes, are written there).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from tbptt_cli import atomic, hdf5, materialize, parts, scaling, shards
from tbptt_cli.config import Config
from tbptt_cli.core import values_dtype
from tbptt_cli.errors import OutputError
from tbptt_cli.params import DomainAcfParams
from tbptt_cli.plan import Plan
from tbptt_cli.progress import BYTES, SAMPLES
from tbptt_cli.sequences import SequenceSet, SourceInfo, column_view

if TYPE_CHECKING:
    from tbptt_cli.core import Target

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``function`` on every task somewhere; results in task order. A task whose
    worker dies is run again; the first error (in task order) is raised."""

    description: dict[str, Any]

    def map(
        self,
        function: Callable[[T], R],
        tasks: Sequence[T],
        done: Callable[[int], None] | None = None,  # called with each finished task's index
    ) -> list[R]: ...

    def close(self) -> None: ...


def planning_columns(config: Config) -> tuple[str, ...]:
    """The columns a strategy reads to plan (not only the lengths), and the feature whose
    correlogram a ``--report`` page draws."""
    params = config.params
    names: list[str | None] = []
    if config.strategy == "domain-acf" or config.output.report is not None:
        analysed = params if isinstance(params, DomainAcfParams) else DomainAcfParams()
        names.append(analysed.feature or parts.FIRST_FEATURE)
    if config.strategy == "domain-segments":
        gap = config.input.time_col if params.max_gap is not None else None
        names += [params.boundary_feature, params.boundary_col, gap]
    return tuple(dict.fromkeys(n for n in names if n is not None))


class ShardedEngine:
    """Reads like `readers.read_input` and writes a target like the local writer does,
    with the work done by ``executor``'s workers."""

    def __init__(
        self,
        executor: Executor,
        config: Config,
        output: Path | None,
        progress: Callable[[int, int], Callable[[int], None]] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.executor, self.config, self.output = executor, config, output
        self.progress = progress  # the CLI's bar factory: (total, kind) -> tick
        self.dry_run = dry_run
        self.joined: parts.Joined | None = None
        self.scratch: Path | None = None

    def read(self, keep: tuple[str, ...]) -> tuple[SequenceSet, SourceInfo]:
        """Pass 1: every part read, its rows kept beside the output for what follows; then,
        if needed, whole sequences made regular and the columns the planner reads."""
        opts = self.config.input
        found = parts.list_parts(opts)
        layout = parts.decide(found, opts, keep)
        output = self.output
        scratch = self._scratch(output.parent if output and output.parent.is_dir() else Path())
        here = [replace(p, path=os.path.abspath(p.path)) for p in found]  # as workers see it
        spills = [str(scratch / f"part-{i:05d}") for i in range(len(found))]
        dtype = values_dtype(self.config)
        tasks = [
            parts.PartTask(part, given.path, opts, layout, keep, spill, dtype)
            for part, given, spill in zip(here, found, spills, strict=True)
        ]
        sizes = [os.path.getsize(p.path) for p in found]
        scans = self.executor.map(parts.scan_part, tasks, self._ticks(sizes, BYTES))
        joined = parts.join(scans, opts, layout, here, spills)
        planning = planning_columns(self.config)
        if joined.finishing or planning:
            groups = joined.groups(planning)
            joined.finished(groups, self.executor.map(parts.finish_group, groups))
        else:
            joined.planned()
        self.joined = joined
        assert joined.data is not None
        source = joined.source
        return joined.data, replace(
            source, details={**source.details, "engine": self.executor.description}
        )

    def _ticks(self, amounts: list[int], kind: int) -> Callable[[int], None] | None:
        """A progress bar's tick per finished task (its bytes or rows), or None."""
        if self.progress is None:
            return None
        tick = self.progress(sum(amounts), kind)
        return lambda index: tick(amounts[index])

    def _scratch(self, beside: Path) -> Path:
        """A folder for the parts' rows, beside the output (a dry run without it: in the
        current folder), removed when the run ends (or, left by a killed run, by the next run
        holding the output's lock, see `atomic.recover`; a dry run holds no lock, so its
        folder is named for no output)."""
        output = None if self.dry_run else self.output
        prefix = atomic.temp_prefix(output) if output else ".tbptt-dry-run.tmp."
        try:
            folder = os.path.abspath(beside)  # workers have another current folder
            self.scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
        except OSError as e:
            raise OutputError(
                f"{beside}: cannot create a folder for the parts' rows ({e})"
            ) from None
        atomic.track(self.scratch)
        return self.scratch

    def fit(self, data: SequenceSet, method: str) -> tuple[SequenceSet, list[str]]:
        """`scaling.fit` with the statistics of the blocks of ``data``'s steps computed by
        the workers: the same blocks as a local fit, merged the same way."""
        if method == "none":
            return scaling.fit(data, method)
        first, last = scaling.covered(data.starts, data.lengths)
        count = -(-(last - first) // scaling.BLOCK_ROWS)
        row_bytes = 8 * max(data.features, 1)
        per = max(1, parts.GROUP_BYTES // (scaling.BLOCK_ROWS * row_bytes))  # blocks a task
        reach = data.starts + data.lengths
        tasks = []
        for block in range(0, count, per):
            low = first + block * scaling.BLOCK_ROWS
            high = min(low + per * scaling.BLOCK_ROWS, last)
            into = (data.starts < high) & (reach > low) & (data.lengths > 0)  # ranges there
            spec, skip = self._rows_between(low, high)
            blocks = range(block, min(block + per, count))
            ranges = (data.starts[into], data.lengths[into])
            tasks.append(ScaleTask(method, spec, skip, *ranges, first, blocks, low))
        found = self.executor.map(scale_blocks, tasks)
        return scaling.fit(data, method, [stats for task in found for stats in task])

    def _rows_between(self, low: int, high: int) -> tuple[parts.Load, int]:
        """What loads rows ``low:high`` of the input (as the local reader has them), and
        how many rows before ``low`` it loads too."""
        joined = self.joined
        assert joined is not None
        starts, rows = joined.raw_starts, joined.raw_rows
        needed = np.flatnonzero((starts < high) & (starts + rows > low))
        begin = np.clip(low - starts[needed], 0, rows[needed])
        end = np.clip(high - starts[needed], 0, rows[needed])
        first = int(starts[needed[0]]) + (int(begin[0]) if joined.windowed else 0)
        return joined.load(needed, begin, end), low - first

    def check(self, target: Target) -> None:
        """What writing ``target`` would refuse: a value its dtype cannot hold (a dry run)."""
        dtype = np.dtype(self.config.output.dtype)
        tasks = [CheckTask(shard, dtype) for shard in self._shards(target)]
        found = self.executor.map(largest_written, tasks)
        largest = [
            None if kind[0] is None else np.max(np.stack(kind), axis=0)  # type: ignore[arg-type]
            for kind in zip(*found, strict=True)
        ]
        error = materialize.too_large(target.data, dtype, largest) if found else None
        if error is not None:
            raise error

    def write(
        self,
        txn: atomic.Transaction,
        target: Target,
        params: dict[str, Any],
        attrs: dict[str, Any],
    ) -> hdf5.Written:
        """Pass 2 for one target: its shards by the workers, then its virtual file."""
        assert self.joined is not None
        output = self.config.output
        home = shards.folder(target.path)
        name = shards.token(params, self.joined.source.sha256)
        atomic.recover_inside(home)
        staged = txn.place_dir(home / name)
        for old in home.iterdir() if home.is_dir() else ():
            if old.name != name and not old.name.startswith("."):
                txn.obsolete.append(old)  # an earlier run's shards, once nothing reads them
        tasks = []
        for i, shard in enumerate(self._shards(target)):
            file = f"{home.name}/{name}/part-{i:05d}.h5"
            where = os.path.abspath(staged / Path(file).name)  # as the workers see it
            tasks.append(ShardTask(shard, where, file, output.dtype, output.compression))
        rows_done = self._ticks([t.rows.stop - t.rows.start for t in tasks], SAMPLES)
        try:
            written = self.executor.map(write_shard, tasks, rows_done)
        except materialize.TooLarge:
            self.check(target)  # the largest value of the whole output, as a local run says
            raise
        expected = {Path(t.path).name for t in tasks}
        for stray in staged.iterdir():  # the temp file of a worker that died mid-write
            if stray.name not in expected:
                stray.unlink()
        place = txn.place(target.path)
        rows = hdf5.plan_rows(target.plan, target.data)
        return hdf5.write_virtual_file(place, target.path, rows, output.dtype, attrs, written)

    def _shards(self, target: Target) -> list[ShardRows]:
        rows = hdf5.plan_rows(target.plan, target.data)
        row_bytes = max(
            1, rows.window * rows.features * np.dtype(self.config.output.dtype).itemsize
        )
        return [self._rows(target, a, b) for a, b in shards.ranges(target.plan, row_bytes)]

    def _rows(self, target: Target, start: int, stop: int) -> ShardRows:
        """Rows ``start:stop`` of ``target``, and where they are in the rows its task loads:
        only the rows they read (and the targets' shift) when `parts.Joined.windowed`, so a
        shard of one long series holds its own part of it in memory, not the whole series."""
        joined, data = self.joined, target.data
        assert joined is not None
        plan = shards.sub_plan(target.plan, start, stop)
        pieces = plan.pieces(0, plan.samples)  # every real run of steps, packed rows too
        real = (pieces.sequence >= 0) & (pieces.length > 0)
        used, local = np.unique(pieces.sequence[real], return_inverse=True)
        raw_starts = joined.raw_starts
        whole = np.searchsorted(raw_starts, data.starts[used], side="right") - 1
        needed, which = np.unique(whole, return_inverse=True)
        # Where each used sequence starts in the rows of its raw sequence; the rows of the
        # raw sequences to load.
        inside = data.starts[used] - raw_starts[whole]
        begin, end = np.zeros(len(needed), dtype=np.int64), joined.raw_rows[needed].copy()
        if joined.windowed and len(used):
            first = np.full(len(used), np.iinfo(np.int64).max)
            last = np.zeros(len(used), dtype=np.int64)
            np.minimum.at(first, local, pieces.offset[real])
            np.maximum.at(last, local, pieces.offset[real] + pieces.length[real])
            begin[:] = np.iinfo(np.int64).max
            np.minimum.at(begin, which, inside + first)
            end[:] = 0
            np.maximum.at(end, which, inside + last + data.target_shift)
        loaded = end - begin
        return ShardRows(
            start=start,
            stop=stop,
            plan=plan,
            used=used,
            starts=((np.cumsum(loaded) - loaded)[which] + inside - begin[which]).astype(np.int64),
            # The steps of each sequence that were loaded (an overflow error names its
            # column from them).
            lengths=np.minimum(data.lengths[used], end[which] - inside - data.target_shift),
            target_shift=data.target_shift,
            target_features=data.target_features,
            scaling=data.scaling,
            load=joined.load(needed, begin, end),
        )

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            atomic.untrack(self.scratch)
        self.executor.close()


@dataclass(frozen=True)
class ShardRows:
    """Rows ``start:stop`` of an output: their plan, and the rows they read."""

    start: int
    stop: int
    plan: Plan  # the rows, sequences numbered as in the output
    used: np.ndarray  # the sequences they read ...
    starts: np.ndarray  # ... where each starts in the loaded rows ...
    lengths: np.ndarray  # ... and how many of its steps are there
    target_shift: int
    target_features: list[int] | None  # --target next[:COL]: the features the targets repeat
    scaling: scaling.Scaling | None
    load: parts.Load

    def data(self) -> SequenceSet:
        """On a worker: the rows loaded, as a set indexed by the output's sequence numbers
        (step_sequence records them); the sequences not read start anywhere, they are never
        gathered."""
        loaded = parts.load(self.load).data
        count = int(self.used.max()) + 1 if len(self.used) else 1
        starts, lengths = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
        starts[self.used], lengths[self.used] = self.starts, self.lengths
        targets = loaded.targets
        if self.target_features is not None:
            targets = column_view(loaded.values, self.target_features)
        return SequenceSet(
            values=loaded.values,
            starts=starts,
            lengths=lengths,
            ids=[""] * count,
            feature_names=loaded.feature_names,
            targets=targets,
            target_names=loaded.target_names,
            target_shift=self.target_shift,
            target_features=self.target_features,
            scaling=self.scaling,
        )


@dataclass(frozen=True)
class ShardTask:
    """Pass 2 for one shard, written to ``path``."""

    rows: ShardRows
    path: str
    file: str  # as the virtual file names it
    dtype: str
    compression: str


def write_shard(task: ShardTask) -> shards.Shard:
    """On a worker: load the rows, write the shard under a temp name, rename it."""
    data = task.rows.data()
    final = Path(task.path)
    temp = atomic.temp_file(final)
    try:
        rows = hdf5.plan_rows(task.rows.plan, data)
        written = hdf5.write_file(temp, final, rows, task.dtype, task.compression, {})
        temp.replace(final)
    finally:
        temp.unlink(missing_ok=True)
    shard = task.rows
    return shards.Shard(task.file, shard.start, shard.stop, written.size, written.sha256)


@dataclass(frozen=True)
class CheckTask:
    rows: ShardRows
    dtype: np.dtype


def largest_written(task: CheckTask) -> list[np.ndarray | None]:
    """On a worker: the largest value of each column the shard's rows write."""
    return materialize.largest_written(task.rows.plan, task.rows.data(), task.dtype)


@dataclass(frozen=True)
class ScaleTask:
    """The `scaling.block_statistics` of ``blocks`` (counted from row ``origin`` of the
    input), over the ranges ``starts``/``lengths``; the load holds rows from row ``base``
    on, after ``skip`` rows before it."""

    method: str
    load: parts.Load
    skip: int
    starts: np.ndarray
    lengths: np.ndarray
    origin: int
    blocks: range
    base: int


def scale_blocks(task: ScaleTask) -> list[scaling.Statistics]:
    values = parts.load(task.load).data.values[task.skip :]
    steps = scaling.steps_in_blocks(
        values, task.starts, task.lengths, task.origin, task.blocks, task.base
    )
    return scaling.block_statistics(task.method, steps)
