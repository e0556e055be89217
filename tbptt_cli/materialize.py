"""Gather the rows of a Plan from a SequenceSet, one slab of samples at a time.

Most rows of a split are full windows: ``K`` consecutive steps of one sequence with no
padding. Those are copied as whole rows of ``K * F`` values (see `_windows`); only padded,
offset or filler rows take the per-step scatter path.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tbptt_cli.errors import InputDataError
from tbptt_cli.plan import Plan, Segments, ragged_arange
from tbptt_cli.sequences import SequenceSet

Transform = Callable[[np.ndarray], np.ndarray]  # raw values -> scaled, float64
CONVERT_BYTES = 16 << 20  # input bytes copied per piece when the dtype changes
PIECE_BYTES = 2 << 20  # windows gathered per temporary when copying into a buffer


class TooLarge(InputDataError):
    """A value beyond what the output dtype can hold."""


@dataclass(frozen=True)
class Slab:
    X: np.ndarray  # [n, K, F]
    y: np.ndarray | None  # [n, K, Ft]
    mask: np.ndarray  # uint8 [n, K]
    loss_mask: np.ndarray | None  # uint8 [n, K]
    step_reset: np.ndarray | None = None  # uint8 [n, K], --packing stream
    step_sequence: np.ndarray | None = None  # int64 [n, K], --packing stream


def gather(
    plan: Plan,
    data: SequenceSet,
    start: int,
    stop: int,
    dtype: np.dtype,
    buffer: np.ndarray | None = None,
) -> Slab:
    """Rows ``start:stop`` of the output; padded steps hold 0 in X, y and mask.

    Given ``buffer`` (uint8, at least the bytes of X), X may be written into it instead
    of fresh memory: a writer reusing two buffers saves faulting in 64 MiB per slab.
    A value the output dtype cannot hold is an `InputDataError` naming its column, never
    an inf in the output (numpy flags the overflow of a cast; it costs nothing here).
    """
    try:
        with np.errstate(over="raise"):
            return _gather(plan, data, start, stop, dtype, buffer)
    except FloatingPointError:
        pass
    check_fits(plan, data, dtype)  # names the largest value the plan writes
    raise TooLarge(f"a value is too large for {dtype}")


def _gather(
    plan: Plan,
    data: SequenceSet,
    start: int,
    stop: int,
    dtype: np.dtype,
    buffer: np.ndarray | None,
) -> Slab:
    n, window = stop - start, plan.window
    pieces = plan.pieces(start, stop)  # one per row, or several (--packing stream)
    first_step = data.starts[np.maximum(pieces.sequence, 0)] + pieces.offset
    is_full = (pieces.length == window) & (pieces.sequence >= 0)  # a whole row
    full, partial = np.flatnonzero(is_full), np.flatnonzero(~is_full & (pieces.length > 0))
    full_rows = pieces.row[full]
    on_values, on_targets = transforms(data)
    X = _filled(data.values, first_step[full], full_rows, n, window, dtype, buffer, on_values)
    mask = np.zeros((n, window), dtype=np.uint8)
    mask[full_rows] = 1
    # The scatter path: one index per real step of the pieces that are not whole rows.
    counts = pieces.length[partial]
    step = ragged_arange(counts)
    local_row = np.repeat(pieces.row[partial], counts)
    column = np.repeat(pieces.column[partial], counts) + step
    source = np.repeat(first_step[partial], counts) + step
    X[local_row, column] = _scaled(_take(data.values, source), on_values)
    mask[local_row, column] = 1
    y = None
    if data.targets is not None:
        shifted = first_step[full] + data.target_shift
        y = _filled(data.targets, shifted, full_rows, n, window, dtype, None, on_targets)
        y[local_row, column] = _scaled(_take(data.targets, source + data.target_shift), on_targets)
    loss_mask = None
    if plan.loss_from is not None:
        loss_mask = mask.copy()
        loss_mask[:, : plan.loss_from] = 0
    if plan.segments is None:
        return Slab(X, y, mask, loss_mask)
    return Slab(X, y, mask, loss_mask, *step_datasets(pieces, n, window))


def step_datasets(pieces: Segments, rows: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``step_reset`` (1 at a sequence's first step) and ``step_sequence`` (-1: padding)."""
    step_sequence = np.full((rows, window), -1, dtype=np.int64)
    real = np.flatnonzero(pieces.length > 0)
    counts = pieces.length[real]
    local_row = np.repeat(pieces.row[real], counts)
    column = np.repeat(pieces.column[real], counts) + ragged_arange(counts)
    step_sequence[local_row, column] = np.repeat(pieces.sequence[real], counts)
    step_reset = np.zeros((rows, window), dtype=np.uint8)
    begins = real[pieces.offset[real] == 0]
    step_reset[pieces.row[begins], pieces.column[begins]] = 1
    return step_reset, step_sequence


def _filled(
    values: np.ndarray,
    first: np.ndarray,
    rows: np.ndarray,
    n: int,
    window: int,
    dtype: np.dtype,
    buffer: np.ndarray | None = None,
    transform: Transform | None = None,
) -> np.ndarray:
    """``[n, window, F]`` zeros with the windows starting at ``first`` copied into
    ``rows`` (distinct, ascending), transformed by ``--scale`` if given."""
    if len(rows) == n and values.dtype == dtype and transform is None:
        return _windows(values, first, window, buffer)  # the common case: one copy
    shape = (n, window, values.shape[1])
    size = int(np.prod(shape)) * dtype.itemsize
    if buffer is not None and len(buffer) >= size:
        out = buffer[:size].view(dtype).reshape(shape)
        out.fill(0)
    else:
        out = np.zeros(shape, dtype=dtype)
    # Converting (float64 CSV values to float32) goes piece by piece: a whole slab copied
    # at the input's width first would double the slab's memory, and the pages of a
    # memory-mapped input are let go after each piece instead of after the slab.
    step = max(1, CONVERT_BYTES // max(window * values.shape[1] * values.itemsize, 1))
    for begin in range(0, len(rows), step):
        part = slice(begin, begin + step)
        out[rows[part]] = _scaled(_windows(values, first[part], window), transform)
        if values.dtype != dtype:
            release(values)
    return out


def transforms(data: SequenceSet) -> tuple[Transform | None, Transform | None]:
    """What ``--scale`` does to the values and to the targets on their way out."""
    scaling = data.scaling
    return (scaling.features, scaling.targets) if scaling else (None, None)


def _scaled(values: np.ndarray, transform: Transform | None) -> np.ndarray:
    return values if transform is None else transform(values)


def check_fits(plan: Plan, data: SequenceSet, dtype: np.dtype) -> None:
    """Raise what `gather` would raise for a value ``dtype`` cannot hold, without
    gathering (a dry run): only the steps the plan writes are looked at."""
    error = too_large(data, dtype, largest_written(plan, data, dtype))
    if error is not None:
        raise error


def largest_written(plan: Plan, data: SequenceSet, dtype: np.dtype) -> list[np.ndarray | None]:
    """The largest magnitude the plan writes (as written: scaled) of each feature and each
    target column; None for those no value of which can be beyond ``dtype``."""
    from tbptt_cli.scaling import steps_in_blocks

    real = plan.sequence >= 0
    starts = data.starts[plan.sequence[real]] + plan.offset[real]
    lengths = plan.length[real]
    limit = float(np.finfo(dtype).max)
    found: list[np.ndarray | None] = []
    for names, source, shift, transform in zip(
        (data.feature_names, data.target_names),
        (data.values, data.targets),
        (0, data.target_shift),
        transforms(data),
        strict=True,
    ):
        if source is None or not _may_exceed(source, limit, transform):
            found.append(None)
            continue
        largest = np.zeros(len(names))
        for block in steps_in_blocks(source, starts + shift, lengths):
            written = np.abs(_scaled(block, transform))
            largest = np.maximum(largest, written.max(axis=0, initial=0))
        found.append(largest)
    return found


def too_large(
    data: SequenceSet, dtype: np.dtype, largest: list[np.ndarray | None]
) -> TooLarge | None:
    """The column holding the largest value beyond ``dtype`` (`largest_written`), if any."""
    limit = float(np.finfo(dtype).max)
    for kind, names, values in zip(
        ("feature", "target"), (data.feature_names, data.target_names), largest, strict=True
    ):
        if values is not None and np.any(values > limit):
            j = int(np.argmax(values))
            scaled = f" after --scale {data.scaling.method}" if data.scaling else ""
            wider = [d for d in ("float32", "float64") if np.dtype(d).itemsize > dtype.itemsize]
            fix = f"--dtype {wider[0]}" + (f" (or {wider[1]})" if len(wider) > 1 else "")
            fix += "" if data.scaling else ", or --scale standard"
            return TooLarge(
                f"{kind} '{names[j]}' holds {values[j]:.6g}{scaled}, more than {dtype} can "
                f"hold (largest {limit:.6g}); pass {fix}"
            )
    return None


def _may_exceed(source: np.ndarray, limit: float, transform: Transform | None) -> bool:
    """False when no value of ``source`` can be beyond ``limit``: its own type is no wider."""
    kind = source.dtype.kind
    return transform is not None or kind != "f" or float(np.finfo(source.dtype).max) > limit


def _windows(
    values: np.ndarray, first: np.ndarray, window: int, buffer: np.ndarray | None = None
) -> np.ndarray:
    """``values[first[i] : first[i] + window]`` for every i, as ``[len(first), window, F]``
    (in ``buffer`` if it is given and big enough)."""
    features = values.shape[1]
    if not len(first):
        return np.zeros((0, window, features), dtype=values.dtype)
    row_bytes = features * values.itemsize
    contiguous = values.strides == (row_bytes, values.itemsize) and values.flags.c_contiguous
    if contiguous and int(first.max()) + window <= len(values):
        # Every window as one row of window * F values starting at any step: fancy
        # indexing then copies each window whole. (As items of a void dtype they would be
        # copied as fast, but numpy holds the GIL for those, which starved the hashing
        # threads down to a tenth of their speed.)
        windows = np.lib.stride_tricks.as_strided(
            values.reshape(-1),
            shape=(len(values) - window + 1, window * features),
            strides=(row_bytes, values.itemsize),
            writeable=False,
        )
        size = len(first) * window * row_bytes
        if buffer is None or len(buffer) < size:
            picked = windows[first]
        else:
            # Fancy indexing has no `out=` (and np.take copies an overlapping view whole),
            # so windows go through small temporaries that malloc hands back warm.
            picked = buffer[:size].view(values.dtype).reshape(len(first), -1)
            step = max(1, PIECE_BYTES // (window * row_bytes))
            for begin in range(0, len(first), step):
                picked[begin : begin + step] = windows[first[begin : begin + step]]
        return picked.reshape(len(first), window, features)
    return np.asarray(values[first[:, None] + np.arange(window)])


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` that reads a memory map in one pass when the index is one run."""
    if len(index) and index[-1] - index[0] + 1 == len(index) and np.all(np.diff(index) == 1):
        return np.asarray(values[int(index[0]) : int(index[-1]) + 1])
    return np.asarray(values[index])


def release(*arrays: np.ndarray | None) -> None:
    """Drop the pages of memory-mapped inputs from this process (the page cache keeps them).

    Reading a mapped file maps every page it touches, and those pages count towards the
    resident memory until the map is closed; after a slab is written none is needed again.
    """
    for array in arrays:
        base: object = array
        while isinstance(base, np.ndarray):
            base = base.base
        if isinstance(base, mmap.mmap) and not base.closed:
            base.madvise(mmap.MADV_DONTNEED)
