"""Stream a Plan into an HDF5 file laid out as the output contract says (format 1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli.errors import InternalError, UsageError
from tbptt_cli.materialize import gather
from tbptt_cli.plan import Plan
from tbptt_cli.sequences import SequenceSet

FORMAT_VERSION = 1
CHUNK_TARGET = 1 << 20  # bytes: aim for 1 MiB chunks ...
CHUNK_MAX = 4 << 20  # ... and never more than 4 MiB unless a single row is bigger
SLAB_TARGET = 64 << 20  # bytes of X gathered and written per h5py call


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
    fitting = [d for d in range(1, batch_size + 1) if batch_size % d == 0 and d * row_bytes <= CHUNK_MAX]
    return fitting[-1] if fitting else 1


def write_h5(
    path: Path,
    plan: Plan,
    data: SequenceSet,
    dtype: str,
    compression: str,
    attrs: dict[str, Any],
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write every dataset and root attribute; returns the manifest's dataset table."""
    np_dtype = np.dtype(dtype)
    comp, level = parse_compression(compression)
    samples, window = plan.samples, plan.window
    row_bytes = max(1, window * data.features * np_dtype.itemsize)
    rows_per_chunk = min(max(samples, 1), chunk_rows(plan.batch_size, row_bytes))
    storage = {"compression": comp, "compression_opts": level, "shuffle": comp is not None}

    with h5py.File(path, "w", libver="earliest", track_order=False) as f:

        def dataset(name: str, shape: tuple[int, ...], dt: Any, labels: tuple[str, ...]) -> Any:
            chunks = (rows_per_chunk, *shape[1:]) if samples else None
            ds = f.create_dataset(
                name, shape=shape, dtype=dt, chunks=chunks, track_times=False,
                **(storage if chunks else {}),
            )
            for axis, label in enumerate(labels):
                ds.dims[axis].label = label
            return ds

        X = dataset("X", (samples, window, data.features), np_dtype, ("sample", "time", "feature"))
        y = None
        if data.targets is not None:
            ft = data.targets.shape[1]
            y = dataset("y", (samples, window, ft), np_dtype, ("sample", "time", "feature"))
        mask = dataset("mask", (samples, window), np.uint8, ("sample", "time"))
        loss = None
        if plan.loss_from is not None:
            loss = dataset("loss_mask", (samples, window), np.uint8, ("sample", "time"))
        for name, values in (
            ("sequence", plan.sequence.astype(np.int64)),
            ("offset", plan.offset.astype(np.int64)),
            ("length", plan.length.astype(np.int32)),
            ("reset", plan.reset.astype(np.uint8)),
        ):
            f.create_dataset(name, data=values, track_times=False)
            f[name].dims[0].label = "sample"
        if plan.batch_length is not None:
            f.create_dataset("batch_length", data=plan.batch_length, track_times=False)
            f["batch_length"].dims[0].label = "batch"

        slab = max(rows_per_chunk, SLAB_TARGET // row_bytes // rows_per_chunk * rows_per_chunk)
        for start in range(0, samples, slab):
            stop = min(samples, start + slab)
            part = gather(plan, data, start, stop, np_dtype)
            X[start:stop] = part.X
            mask[start:stop] = part.mask
            if y is not None and part.y is not None:
                y[start:stop] = part.y
            if loss is not None and part.loss_mask is not None:
                loss[start:stop] = part.loss_mask
            if progress:
                progress(stop - start)
        for key, value in attrs.items():
            f.attrs[key] = value
        return {name: describe(f[name]) for name in sorted(f)}


def describe(ds: h5py.Dataset) -> dict[str, Any]:
    return {
        "shape": list(ds.shape),
        "dtype": str(ds.dtype),
        "chunks": list(ds.chunks) if ds.chunks else None,
        "compression": ds.compression,
    }


def root_attrs(plan: Plan, data: SequenceSet, strategy: str, params: dict[str, Any]) -> dict[str, Any]:
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
        "features": json.dumps(data.feature_names),
        "targets": json.dumps(data.target_names),
        "params": json.dumps(params, sort_keys=True),
        "tool_version": __version__,
    }
    for key, value in plan.attrs.items():
        attrs[key] = value
    return attrs


def verify(path: Path, plan: Plan, expected: dict[str, dict[str, Any]], data: SequenceSet, dtype: str) -> None:
    """Read the closed file back: every dataset present with its shape, and the last
    rows of X and mask equal to what was gathered (a short write reads back as zeros)."""
    with h5py.File(path, "r") as f:
        found = {name: describe(f[name]) for name in sorted(f)}
        if found != expected:
            raise InternalError(f"{path}: read-back found {found}, expected {expected}")
        if plan.samples:
            start = max(0, plan.samples - plan.batch_size)
            again = gather(plan, data, start, plan.samples, np.dtype(dtype))
            if not (np.array_equal(f["X"][start:], again.X) and np.array_equal(f["mask"][start:], again.mask)):
                raise InternalError(f"{path}: read-back of the last batch differs from what was written")
