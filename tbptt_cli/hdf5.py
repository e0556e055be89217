"""Stream a Plan into an HDF5 file laid out as the output contract says (format 1)."""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli import atomic
from tbptt_cli.digest import Worker, in_background, sha256_file
from tbptt_cli.errors import InternalError, UsageError
from tbptt_cli.materialize import Slab, gather, release
from tbptt_cli.plan import Plan
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.streaming import StreamHash, Writeback, early_allocation

FORMAT_VERSION = 1
CHUNK_TARGET = 1 << 20  # bytes: aim for 1 MiB chunks ...
CHUNK_MAX = 4 << 20  # ... and never more than 4 MiB unless a single row is bigger
SLAB_TARGET = 32 << 20  # bytes of X gathered, hashed and written at a time ...
SLABS_AHEAD = 4  # ... in this many reused buffers


def parse_compression(text: str) -> tuple[str | None, int | None]:
    """``none``, ``lzf`` or ``gzip[:N]`` as h5py's (compression, compression_opts)."""
    name, _, level = text.partition(":")
    if name == "none" and not level:
        return None, None
    if name == "lzf" and not level:
        return "lzf", None
    if name == "gzip":
        if not level:
            return "gzip", 4
        if level.isdigit() and 0 <= int(level) <= 9:
            return "gzip", int(level)
    raise UsageError(f"--compression must be none, lzf or gzip[:0-9], not {text!r}")


def chunk_rows(batch_size: int, row_bytes: int) -> int:
    """Rows per chunk: whole batches, about 1 MiB; a divisor of B if one batch is too big."""
    batch_bytes = batch_size * row_bytes
    if batch_bytes <= CHUNK_MAX:
        return batch_size * max(1, min(CHUNK_TARGET, CHUNK_MAX) // batch_bytes)
    fitting = [
        d for d in range(1, batch_size + 1) if batch_size % d == 0 and d * row_bytes <= CHUNK_MAX
    ]
    return fitting[-1] if fitting else 1


def mask_chunk_rows(rows_per_chunk: int, window: int) -> int:
    """A multiple of X's chunk rows that makes a uint8 ``[rows, K]`` chunk about 1 MiB too,
    so masks are not cut into thousands of tiny chunks and slabs stay aligned to both."""
    chunk_bytes = rows_per_chunk * max(window, 1)
    return rows_per_chunk * max(1, CHUNK_TARGET // chunk_bytes)


@dataclass(frozen=True)
class Rows:
    """What one file holds: its shape, its per-row (and per-batch) ``index`` datasets in
    the order they are written, and ``gather(start, stop, dtype, buffer)``, which makes
    rows ``start:stop`` of X, y and the masks. A plan over a `SequenceSet` is one source
    of rows (`plan_rows`); the shards of a virtual file being merged are another."""

    samples: int
    window: int
    batch_size: int
    features: int
    targets: int | None  # features of y, None without a target
    loss: bool  # whether there is a loss_mask
    steps: bool  # whether there are per-step step_reset and step_sequence (--packing stream)
    index: dict[str, np.ndarray]
    gather: Callable[[int, int, np.dtype, np.ndarray | None], Slab]


def plan_rows(plan: Plan, data: SequenceSet, index: bool = True) -> Rows:
    """The rows of ``plan``, gathered from ``data``; without ``index``, X, y and masks only."""

    def rows(start: int, stop: int, dtype: np.dtype, buffer: np.ndarray | None) -> Slab:
        part = gather(plan, data, start, stop, dtype, buffer)
        release(data.values, data.targets)  # here, so it never drops pages being gathered
        return part

    return Rows(
        samples=plan.samples,
        window=plan.window,
        batch_size=plan.batch_size,
        features=data.features,
        targets=None if data.targets is None else int(data.targets.shape[1]),
        loss=plan.loss_from is not None,
        steps=plan.segments is not None,
        index=index_datasets(plan) if index else {},
        gather=rows,
    )


INDEX_DATASETS = ("sequence", "offset", "length", "reset", "part", "batch_length")  # file order


def index_datasets(plan: Plan) -> dict[str, np.ndarray]:
    """The [samples] datasets: where each row comes from, and (--streams) which part; then
    (variable-length BPTT) each batch's length. In the order of ``INDEX_DATASETS``."""
    index: dict[str, np.ndarray] = {
        "sequence": plan.sequence.astype(np.int64),
        "offset": plan.offset.astype(np.int64),
        "length": plan.length.astype(np.int32),
        "reset": plan.reset.astype(np.uint8),
    }
    if plan.part is not None:
        index["part"] = plan.part.astype(np.int32)
    if plan.batch_length is not None:
        index["batch_length"] = plan.batch_length
    return index


def write_h5(
    path: Path,
    rows: Rows | Plan,
    data: SequenceSet | None,
    dtype: str,
    compression: str,
    attrs: dict[str, Any],
    progress: Callable[[int], None] | None = None,
    digests: list[Callable[[], str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write every dataset and root attribute of ``rows`` (or of a plan over ``data``);
    returns the manifest's dataset table.

    Given ``digests``, an uncompressed file is hashed while it is written and a function
    that returns its sha256 (call it once the file is closed) is appended there. The same
    rows, dtype, compression and attributes always give the same bytes.
    """
    if isinstance(rows, Plan):
        assert data is not None
        rows = plan_rows(rows, data)
    np_dtype = np.dtype(dtype)
    comp, level = parse_compression(compression)
    samples, window = rows.samples, rows.window
    row_bytes = max(1, window * rows.features * np_dtype.itemsize)
    rows_per_chunk = min(max(samples, 1), chunk_rows(rows.batch_size, row_bytes))
    mask_rows = min(max(samples, 1), mask_chunk_rows(rows_per_chunk, window))
    storage = {"compression": comp, "compression_opts": level, "shuffle": comp is not None}
    # Uncompressed chunks can be hashed as they are written (see StreamHash).
    stream = digests is not None and comp is None and samples > 0

    with (
        atomic.hdf5_file(path, libver="earliest", track_order=False) as f,
        Writeback(path) as flush,
    ):
        created = []
        for name, (shape, dt) in shapes(rows, np_dtype).items():
            chunks = (rows_per_chunk if name in BY_X_CHUNKS else mask_rows, *shape[1:])
            extra: dict[str, Any] = dict(storage) if samples else {}
            if samples and stream:
                extra["dcpl"] = early_allocation()
            ds = f.create_dataset(
                name,
                shape=shape,
                dtype=dt,
                chunks=chunks if samples else None,
                track_times=False,
                **extra,
            )
            label(ds, LABELS[name])
            created.append(ds)
        write_index(f, rows.index, attrs)
        hasher = StreamHash.start(f, path, created) if stream else None
        try:
            _write_slabs(
                rows,
                np_dtype,
                created,
                row_bytes,
                mask_rows,
                flush,
                progress,
                raw=comp is None,
                hasher=hasher,
            )
        except BaseException:
            if hasher is not None:
                hasher.abort()
            raise
        if hasher is not None and digests is not None:
            digests.append(hasher.finish)
        return {name: describe(f[name]) for name in sorted(f)}


LABELS = {
    "X": ("sample", "time", "feature"),
    "y": ("sample", "time", "feature"),
    "mask": ("sample", "time"),
    "loss_mask": ("sample", "time"),
    "step_reset": ("sample", "time"),
    "step_sequence": ("sample", "time"),
    "batch_length": ("batch",),
}
BY_X_CHUNKS = ("X", "y", "step_sequence")  # chunked like X; the uint8 ones like mask


def shapes(rows: Rows, dtype: np.dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of the [samples, window, ...] datasets, in the order they are made."""
    samples, window = rows.samples, rows.window
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {
        "X": ((samples, window, rows.features), dtype)
    }
    if rows.targets is not None:
        found["y"] = ((samples, window, rows.targets), dtype)
    found["mask"] = ((samples, window), np.dtype(np.uint8))
    if rows.loss:
        found["loss_mask"] = ((samples, window), np.dtype(np.uint8))
    if rows.steps:  # --packing stream: sequences start inside rows
        found["step_reset"] = ((samples, window), np.dtype(np.uint8))
        found["step_sequence"] = ((samples, window), np.dtype(np.int64))
    return found


def write_index(f: h5py.File, index: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """The per-row (and per-batch) datasets and the root attributes."""
    for name, values in index.items():
        label(f.create_dataset(name, data=values, track_times=False), LABELS.get(name, ("sample",)))
    # Sorted: a file merged from shards, whose attributes are read back by name, then
    # writes them in the same order as the run that wrote it in one piece.
    for key in sorted(attrs):
        f.attrs[key] = attrs[key]


def label(ds: h5py.Dataset, labels: tuple[str, ...]) -> None:
    """Dimension labels (``sample, time, feature``), as readers of the file see them."""
    for axis, name in enumerate(labels):
        ds.dims[axis].label = name


@dataclass(frozen=True)
class Written:
    """A file as written, before its commit: where, its dataset table, sha256, size (and
    for a virtual file, its shards)."""

    path: Path
    datasets: dict[str, Any]
    sha256: str
    size: int
    shards: tuple[Any, ...] = ()


def write_file(
    temp: Path,
    final: Path,
    rows: Rows,
    dtype: str,
    compression: str,
    attrs: dict[str, Any],
    progress: Callable[[int], None] | None = None,
) -> Written:
    """Write, fsync and read back one file; an OSError names ``final``."""
    try:
        # An uncompressed file is hashed while it is written (streaming.StreamHash);
        # otherwise the hash runs in the background during the fsync and read-back.
        streamed: list[Callable[[], str]] = []
        datasets = write_h5(temp, rows, None, dtype, compression, attrs, progress, streamed)
        digest = in_background(streamed[0] if streamed else lambda: sha256_file(temp))
        atomic.fsync(temp)
        verify(temp, rows, datasets, dtype)
        return Written(temp, datasets, digest.result(), temp.stat().st_size)
    except OSError as e:
        raise atomic.write_error(final, e) from None


def write_virtual_file(
    temp: Path, final: Path, rows: Rows, dtype: str, attrs: dict[str, Any], shards: list[Any]
) -> Written:
    """A file of virtual datasets over ``shards`` (see `shards.py`), with the same index
    datasets and attributes as a regular file of ``rows``; fsynced and hashed."""
    from tbptt_cli.shards import write_virtual

    try:
        with atomic.hdf5_file(temp, libver="earliest", track_order=False) as f:
            made = shapes(rows, np.dtype(dtype))
            write_virtual(f, shards, made)
            for name in made:
                label(f[name], LABELS[name])
            write_index(f, rows.index, attrs)
            datasets = {name: describe(f[name]) for name in sorted(f)}
        atomic.fsync(temp)
        return Written(temp, datasets, sha256_file(temp), temp.stat().st_size, tuple(shards))
    except OSError as e:
        raise atomic.write_error(final, e) from None


def _write_slabs(
    rows: Rows,
    dtype: np.dtype,
    datasets: list[Any],
    row_bytes: int,
    mask_rows: int,
    flush: Writeback,
    progress: Callable[[int], None] | None,
    raw: bool,
    hasher: StreamHash | None,
) -> None:
    """Write slab by slab. Uncompressed chunks go to the file as they are (``raw``:
    HDF5's direct chunk write, no selection or conversion work), and the slab is offered
    to ``hasher`` while it is written; its buffer is reused only once that hash is done."""
    # Slabs are whole chunks of every dataset, so each chunk is written exactly once.
    slab = max(mask_rows, SLAB_TARGET // row_bytes // mask_rows * mask_rows)
    hashed: dict[int, Future[None]] = {}  # by slab start, until its buffer is reused

    def reusing(start: int) -> None:
        if start in hashed:
            hashed.pop(start).result()

    by_name = {ds.name: ds for ds in datasets}
    # h5py asks HDF5 for a dataset's chunks and shape on every access: once, not per chunk.
    chunk_rows = {name: ds.chunks[0] for name, ds in by_name.items()}
    zeros = {name: (0,) * (ds.ndim - 1) for name, ds in by_name.items()}
    for start, stop, part in _gathered(rows, slab, dtype, slab * row_bytes, reusing):
        atomic.raise_swallowed()
        arrays = {
            "/X": part.X,
            "/y": part.y,
            "/mask": part.mask,
            "/loss_mask": part.loss_mask,
            "/step_reset": part.step_reset,
            "/step_sequence": part.step_sequence,
        }
        pairs = [(name, a) for name in by_name if (a := arrays[name]) is not None]
        if raw:
            chunks = {
                (name, row): chunk
                for name, a in pairs
                for row, chunk in _chunks(chunk_rows[name], start, a)
            }
            if hasher is not None:
                hashed[start] = hasher.offer(start, chunks)
            for (name, row), chunk in chunks.items():
                by_name[name].id.write_direct_chunk((row, *zeros[name]), chunk)
            del chunks
        else:
            for name, a in pairs:
                by_name[name][start:stop] = a
        del part, arrays, pairs  # the slab's X lives on in the gather's buffer only
        flush.wrote((stop - start) * row_bytes)
        if progress:
            progress(stop - start)


def _chunks(rows: int, start: int, values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, bytes)`` of the chunks of ``rows`` rows that rows ``start:`` fill;
    the last chunk of the dataset, if rows run out part-way, padded with zeros."""
    for begin in range(0, len(values), rows):
        chunk = values[begin : begin + rows]
        if len(chunk) < rows:
            whole = np.zeros((rows, *values.shape[1:]), dtype=values.dtype)
            whole[: len(chunk)] = chunk
            chunk = whole
        yield start + begin, chunk


def _gathered(
    rows: Rows,
    slab: int,
    dtype: np.dtype,
    slab_bytes: int,
    reusing: Callable[[int], None],
) -> Iterator[tuple[int, int, Slab]]:
    """``(start, stop, rows)`` slab by slab, gathered on a thread of their own up to
    ``SLABS_AHEAD - 1`` slabs ahead of the caller. So the copies, the output hash and the
    writes overlap on two cores, and a write that waits for the disk does not stall the
    others. An error in the worker is raised here, unchanged.

    X goes into ``SLABS_AHEAD`` reused buffers in turn (fresh arrays would cost a page
    fault per 4 KiB every slab). Slab k reuses the buffer of slab k - SLABS_AHEAD, which
    the caller has written by then; ``reusing(its start)`` is called first, to wait for
    anything else still reading it.
    """
    samples = rows.samples
    starts = range(0, samples, slab)
    buffers = [np.empty(slab_bytes, dtype=np.uint8) for _ in range(min(SLABS_AHEAD, len(starts)))]
    worker = Worker("tbptt-gather")
    ahead: deque[Future[Slab]] = deque()  # submitted, not yet handed to the caller

    def work(index: int) -> Slab:
        start = starts[index]
        reusing(start - len(buffers) * slab)
        buffer = buffers[index % len(buffers)]
        return rows.gather(start, min(samples, start + slab), dtype, buffer)

    submitted = 0
    try:
        for start in starts:
            while submitted < len(starts) and len(ahead) < len(buffers):
                ahead.append(worker.submit(partial(work, submitted)))
                submitted += 1
            part = ahead.popleft().result()
            yield start, min(samples, start + slab), part
            del part
    finally:
        worker.close()
        for pending in ahead:  # stopped early (an error or a signal): let them finish
            with contextlib.suppress(BaseException):
                pending.result()


def describe(ds: h5py.Dataset) -> dict[str, Any]:
    return {
        "shape": list(ds.shape),
        "dtype": str(ds.dtype),
        "chunks": list(ds.chunks) if ds.chunks else None,
        "compression": ds.compression,
    }


def root_attrs(
    plan: Plan, data: SequenceSet, strategy: str, params: dict[str, Any]
) -> dict[str, Any]:
    from tbptt_cli import __version__

    attrs: dict[str, Any] = {
        "format": "tbptt",
        "format_version": FORMAT_VERSION,
        "strategy": strategy,
        "window": plan.window,
        "batch_size": plan.batch_size,
        "stateful": int(plan.stateful),
        "packing": plan.packing or "",
        "order": plan.order or "",
        "ranks": plan.ranks,
        "streams": plan.streams,
        "features": json.dumps(data.feature_names),
        "targets": json.dumps(data.target_names),
        "params": json.dumps(params, sort_keys=True),
        "tool_version": __version__,
    }
    if data.scaling is not None:
        attrs["scale"] = json.dumps(data.scaling.document(data), sort_keys=True)
    attrs.update(plan.attrs)
    return attrs


def verify(path: Path, rows: Rows, expected: dict[str, dict[str, Any]], dtype: str) -> None:
    """Read the closed file back: every dataset present with its shape, and the last
    rows of X and mask equal to what was gathered (a short write reads back as zeros)."""
    with h5py.File(path, "r") as f:
        found = {name: describe(f[name]) for name in sorted(f)}
        if found != expected:
            raise InternalError(f"{path}: read-back found {found}, expected {expected}")
        if rows.samples:
            start = max(0, rows.samples - rows.batch_size)
            again = rows.gather(start, rows.samples, np.dtype(dtype), None)
            # equal_nan: a NaN the background input check has not reported yet is still
            # read back as written (it fails the run later, with exit 65, not here).
            same = np.array_equal(f["X"][start:], again.X, equal_nan=True)
            if not (same and np.array_equal(f["mask"][start:], again.mask)):
                raise InternalError(
                    f"{path}: read-back of the last batch differs from what was written"
                )
