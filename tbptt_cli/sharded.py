"""A run spread over workers: pass 1 scans the input's parts, the driver plans as a local
run does, pass 2 writes every shard of every output, and the driver writes the virtual
file over them (`shards.py`). The workers are reached through an `Executor` (Dask's
client, `distributed.py`); everything here is plain functions on picklable tasks.

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

from tbptt_cli import atomic, hdf5, parts, shards
from tbptt_cli.config import Config
from tbptt_cli.errors import OutputError
from tbptt_cli.plan import Plan
from tbptt_cli.progress import BYTES, SAMPLES
from tbptt_cli.sequences import SequenceSet, SourceInfo, column_view

if TYPE_CHECKING:
    from tbptt_cli.core import Target
    from tbptt_cli.scaling import Scaling

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
    """The columns a strategy reads to plan (not only the lengths)."""
    params = config.params
    if config.strategy == "domain-acf":
        return (params.feature or parts.FIRST_FEATURE,)
    if config.strategy == "domain-segments":
        gap = config.input.time_col if params.max_gap is not None else None
        return tuple(n for n in (params.boundary_feature, params.boundary_col, gap) if n)
    return ()


class ShardedEngine:
    """Reads like `readers.read_input` and writes a target like the local writer does,
    with the work done by ``executor``'s workers."""

    def __init__(
        self,
        executor: Executor,
        config: Config,
        output: Path | None,
        progress: Callable[[int, int], Callable[[int], None]] | None = None,
    ) -> None:
        self.executor, self.config, self.output = executor, config, output
        self.progress = progress  # the CLI's bar factory: (total, kind) -> tick
        self.joined: parts.Joined | None = None
        self.scratch: Path | None = None

    def read(self, keep: tuple[str, ...], spill: bool) -> tuple[SequenceSet, SourceInfo]:
        """Pass 1: every part scanned (and its rows spilled for pass 2 if ``spill``)."""
        opts = self.config.input
        paths = parts.list_parts(opts)
        prefixes: list[str | None] = [None] * len(paths)
        if spill and self.output is not None:
            self.scratch = self._scratch(self.output)
            prefixes = [str(self.scratch / f"part-{i:05d}") for i in range(len(paths))]
        planning = planning_columns(self.config)
        tasks = [
            parts.PartTask(replace(opts, path=p), os.path.abspath(p), keep, planning, prefix)
            for p, prefix in zip(paths, prefixes, strict=True)
        ]
        sizes = [os.path.getsize(p) for p in paths]
        scans = self.executor.map(parts.scan_part, tasks, self._ticks(sizes, BYTES))
        self.joined = parts.join(scans, opts, [p or "" for p in prefixes], planning)
        source = self.joined.source
        details = {**source.details, "engine": self.executor.description}
        return self.joined.data, replace(source, details=details)

    def _ticks(self, amounts: list[int], kind: int) -> Callable[[int], None] | None:
        """A progress bar's tick per finished task (its bytes or rows), or None."""
        if self.progress is None:
            return None
        tick = self.progress(sum(amounts), kind)
        return lambda index: tick(amounts[index])

    def _scratch(self, output: Path) -> Path:
        """A folder beside the output for the parts' rows, removed when the run ends (or by
        the next run holding the output's lock, see `atomic.recover`)."""
        try:
            folder = os.path.abspath(output.parent)  # workers have another current folder
            made = Path(tempfile.mkdtemp(prefix=atomic.temp_prefix(output), dir=folder))
        except OSError as e:
            raise OutputError(
                f"{output}: cannot create a folder in {output.parent} ({e})"
            ) from None
        atomic.track(made)
        return made

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
        rows = hdf5.plan_rows(target.plan, target.data)
        row_bytes = max(1, rows.window * rows.features * np.dtype(output.dtype).itemsize)
        tasks = []
        for i, (start, stop) in enumerate(shards.ranges(target.plan, row_bytes)):
            file = f"{home.name}/{name}/part-{i:05d}.h5"
            where = os.path.abspath(staged / Path(file).name)  # as the workers see it
            task = self._task(target, start, stop, where, file)
            tasks.append(task)
        rows_done = self._ticks([t.stop - t.start for t in tasks], SAMPLES)
        written = self.executor.map(write_shard, tasks, rows_done)
        expected = {Path(t.path).name for t in tasks}
        for stray in staged.iterdir():  # the temp file of a worker that died mid-write
            if stray.name not in expected:
                stray.unlink()
        place = txn.place(target.path)
        return hdf5.write_virtual_file(place, target.path, rows, output.dtype, attrs, written)

    def _task(self, target: Target, start: int, stop: int, path: str, file: str) -> ShardTask:
        """Rows ``start:stop`` of ``target``, and where pass 2 puts the sequences they read
        in the rows it loads: only the rows they read (and the targets' shift) when
        `parts.Joined.windowed`, so a shard of one long series holds its own part of it
        in memory, not the whole series."""
        assert self.joined is not None
        joined, data = self.joined, target.data
        plan = shards.sub_plan(target.plan, start, stop)
        pieces = plan.pieces(0, plan.samples)  # every real run of steps, packed rows too
        real = (pieces.sequence >= 0) & (pieces.length > 0)
        used, local = np.unique(pieces.sequence[real], return_inverse=True)
        whole = np.searchsorted(joined.data.starts, data.starts[used], side="right") - 1
        needed, which = np.unique(whole, return_inverse=True)
        # Where each used sequence starts in its whole (joined) sequence; the rows of the
        # whole sequences to load.
        inside = data.starts[used] - joined.data.starts[whole]
        begin, end = np.zeros(len(needed), dtype=np.int64), joined.rows[needed].copy()
        if joined.windowed(self.config.input) and len(used):
            first = np.full(len(used), np.iinfo(np.int64).max)
            last = np.zeros(len(used), dtype=np.int64)
            np.minimum.at(first, local, pieces.offset[real])
            np.maximum.at(last, local, pieces.offset[real] + pieces.length[real])
            begin[:] = np.iinfo(np.int64).max
            np.minimum.at(begin, which, inside + first)
            end[:] = 0
            np.maximum.at(end, which, inside + last + data.target_shift)
        loaded = end - begin
        output = self.config.output
        return ShardTask(
            path=path,
            file=file,
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
            load=joined.load(needed, self.config.input, begin, end),
            dtype=output.dtype,
            compression=output.compression,
        )

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            atomic.untrack(self.scratch)
        self.executor.close()


@dataclass(frozen=True)
class ShardTask:
    """Pass 2 for one shard: rows ``start:stop`` of an output, written to ``path``."""

    path: str
    file: str  # as the virtual file names it
    start: int
    stop: int
    plan: Plan  # the shard's rows, sequences numbered as in the output
    used: np.ndarray  # the sequences they read ...
    starts: np.ndarray  # ... where each starts in the loaded rows ...
    lengths: np.ndarray  # ... and how many of its steps are there
    target_shift: int
    target_features: list[int] | None  # --target next[:COL]: the features the targets repeat
    scaling: Scaling | None
    load: parts.Load
    dtype: str
    compression: str


def write_shard(task: ShardTask) -> shards.Shard:
    """On a worker: load the rows, write the shard under a temp name, rename it."""
    loaded = parts.load(task.load)
    # Indexed by the output's sequence numbers (step_sequence records them); the
    # sequences this shard does not read start anywhere, they are never gathered.
    count = int(task.used.max()) + 1 if len(task.used) else 1
    starts, lengths = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    starts[task.used], lengths[task.used] = task.starts, task.lengths
    targets = loaded.targets
    if task.target_features is not None:
        targets = column_view(loaded.values, task.target_features)
    data = SequenceSet(
        values=loaded.values,
        starts=starts,
        lengths=lengths,
        ids=[""] * count,
        feature_names=loaded.feature_names,
        targets=targets,
        target_names=loaded.target_names,
        target_shift=task.target_shift,
        target_features=task.target_features,
        scaling=task.scaling,
    )
    final = Path(task.path)
    temp = atomic.temp_file(final)
    try:
        rows = hdf5.plan_rows(task.plan, data)
        written = hdf5.write_file(temp, final, rows, task.dtype, task.compression, {})
        temp.replace(final)
    finally:
        temp.unlink(missing_ok=True)
    return shards.Shard(task.file, task.start, task.stop, written.size, written.sha256)
