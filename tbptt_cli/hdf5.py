"""Stream a Plan into an HDF5 file laid out as the output contract says (format 1)."""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli import atomic
from tbptt_cli.digest import Worker
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


def write_h5(
    path: Path,
    plan: Plan,
    data: SequenceSet,
    dtype: str,
    compression: str,
    attrs: dict[str, Any],
    progress: Callable[[int], None] | None = None,
    digests: list[Callable[[], str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write every dataset and root attribute; returns the manifest's dataset table.

    Given ``digests``, an uncompressed file is hashed while it is written and a function
    that returns its sha256 (call it once the file is closed) is appended there.
    """
    np_dtype = np.dtype(dtype)
    comp, level = parse_compression(compression)
    samples, window = plan.samples, plan.window
    row_bytes = max(1, window * data.features * np_dtype.itemsize)
    rows_per_chunk = min(max(samples, 1), chunk_rows(plan.batch_size, row_bytes))
    mask_rows = min(max(samples, 1), mask_chunk_rows(rows_per_chunk, window))
    storage = {"compression": comp, "compression_opts": level, "shuffle": comp is not None}
    # Uncompressed chunks can be hashed as they are written (see StreamHash).
    stream = digests is not None and comp is None and samples > 0

    with (
        atomic.hdf5_file(path, libver="earliest", track_order=False) as f,
        Writeback(path) as flush,
    ):

        def dataset(
            name: str, shape: tuple[int, ...], dt: Any, labels: tuple[str, ...], rows: int
        ) -> Any:
            chunks = (rows, *shape[1:]) if samples else None
            extra: dict[str, Any] = dict(storage) if chunks else {}
            if chunks and stream:
                extra["dcpl"] = early_allocation()
            ds = f.create_dataset(
                name, shape=shape, dtype=dt, chunks=chunks, track_times=False, **extra
            )
            for axis, label in enumerate(labels):
                ds.dims[axis].label = label
            return ds

        sample_time = ("sample", "time", "feature")
        X = dataset("X", (samples, window, data.features), np_dtype, sample_time, rows_per_chunk)
        y = None
        if data.targets is not None:
            ft = data.targets.shape[1]
            y = dataset("y", (samples, window, ft), np_dtype, sample_time, rows_per_chunk)
        mask = dataset("mask", (samples, window), np.uint8, ("sample", "time"), mask_rows)
        loss = None
        if plan.loss_from is not None:
            loss = dataset("loss_mask", (samples, window), np.uint8, ("sample", "time"), mask_rows)
        step_reset = step_sequence = None
        if plan.segments is not None:  # --packing stream: sequences start inside rows
            per_step = (samples, window)
            step_reset = dataset("step_reset", per_step, np.uint8, ("sample", "time"), mask_rows)
            step_sequence = dataset(
                "step_sequence", per_step, np.int64, ("sample", "time"), rows_per_chunk
            )
        for name, values in index_datasets(plan):
            f.create_dataset(name, data=values, track_times=False)
            f[name].dims[0].label = "sample"
        if plan.batch_length is not None:
            f.create_dataset("batch_length", data=plan.batch_length, track_times=False)
            f["batch_length"].dims[0].label = "batch"

        for key, value in attrs.items():
            f.attrs[key] = value
        hasher = None
        per_row = (X, y, mask, loss, step_reset, step_sequence)  # the order of a Slab's arrays
        if stream:
            hasher = StreamHash.start(f, path, [ds for ds in per_row if ds is not None])
        try:
            _write_slabs(
                plan,
                data,
                np_dtype,
                per_row,
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


def _write_slabs(
    plan: Plan,
    data: SequenceSet,
    dtype: np.dtype,
    datasets: tuple[Any, ...],
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

    by_name = {ds.name: ds for ds in datasets if ds is not None}
    # h5py asks HDF5 for a dataset's chunks and shape on every access: once, not per chunk.
    chunk_rows = {name: ds.chunks[0] for name, ds in by_name.items()}
    zeros = {name: (0,) * (ds.ndim - 1) for name, ds in by_name.items()}
    names = [ds.name if ds is not None else "" for ds in datasets]
    for start, stop, part in _gathered(plan, data, slab, dtype, slab * row_bytes, reusing):
        atomic.raise_swallowed()
        arrays = (part.X, part.y, part.mask, part.loss_mask, part.step_reset, part.step_sequence)
        pairs = [(name, a) for name, a in zip(names, arrays, strict=True) if a is not None]
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
    plan: Plan,
    data: SequenceSet,
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
    starts = range(0, plan.samples, slab)
    buffers = [np.empty(slab_bytes, dtype=np.uint8) for _ in range(min(SLABS_AHEAD, len(starts)))]
    worker = Worker("tbptt-gather")
    ahead: deque[Future[Slab]] = deque()  # submitted, not yet handed to the caller

    def work(index: int) -> Slab:
        start = starts[index]
        reusing(start - len(buffers) * slab)
        buffer = buffers[index % len(buffers)]
        part = gather(plan, data, start, min(plan.samples, start + slab), dtype, buffer)
        release(data.values, data.targets)  # here, so it never drops pages being gathered
        return part

    submitted = 0
    try:
        for start in starts:
            while submitted < len(starts) and len(ahead) < len(buffers):
                ahead.append(worker.submit(partial(work, submitted)))
                submitted += 1
            part = ahead.popleft().result()
            yield start, min(plan.samples, start + slab), part
            del part
    finally:
        worker.close()
        for pending in ahead:  # stopped early (an error or a signal): let them finish
            with contextlib.suppress(BaseException):
                pending.result()


def index_datasets(plan: Plan) -> list[tuple[str, np.ndarray]]:
    """The [samples] datasets: where each row comes from, and (--streams) which part."""
    index: list[tuple[str, np.ndarray]] = [
        ("sequence", plan.sequence.astype(np.int64)),
        ("offset", plan.offset.astype(np.int64)),
        ("length", plan.length.astype(np.int32)),
        ("reset", plan.reset.astype(np.uint8)),
    ]
    if plan.part is not None:
        index.append(("part", plan.part.astype(np.int32)))
    return index


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
    for key, value in plan.attrs.items():
        attrs[key] = value
    return attrs


def verify(
    path: Path, plan: Plan, expected: dict[str, dict[str, Any]], data: SequenceSet, dtype: str
) -> None:
    """Read the closed file back: every dataset present with its shape, and the last
    rows of X and mask equal to what was gathered (a short write reads back as zeros)."""
    with h5py.File(path, "r") as f:
        found = {name: describe(f[name]) for name in sorted(f)}
        if found != expected:
            raise InternalError(f"{path}: read-back found {found}, expected {expected}")
        if plan.samples:
            start = max(0, plan.samples - plan.batch_size)
            again = gather(plan, data, start, plan.samples, np.dtype(dtype))
            # equal_nan: a NaN the background input check has not reported yet is still
            # read back as written (it fails the run later, with exit 65, not here).
            same = np.array_equal(f["X"][start:], again.X, equal_nan=True)
            if not (same and np.array_equal(f["mask"][start:], again.mask)):
                raise InternalError(
                    f"{path}: read-back of the last batch differs from what was written"
                )
