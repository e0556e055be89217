"""``--packing stream`` files: the pieces of every row, read back from ``step_sequence``
and ``step_reset``, and the rules those two datasets obey.

A piece is a run of one sequence in a row, cut where ``step_reset`` is 1. The piece at
time 0 of a row continues at the row's ``offset``; a piece that starts later in the row
starts its sequence (step 0), so its ``step_reset`` must be 1.
"""

from __future__ import annotations

import h5py
import numpy as np

from tbptt_cli.plan import Segments
from tbptt_cli.validate.common import Index, listed, slab_ranges

STEP_DATASETS = ("step_reset", "step_sequence")


def read_segments(f: h5py.File, index: Index) -> tuple[Segments | None, list[str]]:
    """The pieces of every row, and what is wrong with the per-step datasets."""
    absent = [name for name in STEP_DATASETS if not isinstance(f.get(name), h5py.Dataset)]
    if absent:
        return None, [f"--packing stream without dataset(s) {', '.join(absent)}"]
    shape = f["mask"].shape
    wrong = [name for name in STEP_DATASETS if f[name].shape != shape]
    if wrong:
        return None, [f"{name} is {f[name].shape}, mask {shape}" for name in wrong]
    samples = shape[0]
    bad = {kind: np.zeros(samples, dtype=bool) for kind in KINDS}
    empty = np.zeros(0, dtype=np.int64)
    found: list[tuple[np.ndarray, ...]] = [(empty, empty, empty, empty, empty.astype(bool))]
    for start, stop in slab_ranges(f["step_sequence"]):
        sequence = f["step_sequence"][start:stop].astype(np.int64)
        reset = f["step_reset"][start:stop].astype(np.int64)
        mask = f["mask"][start:stop]
        pieces, flags = slab_pieces(sequence, reset, mask, index, start)
        found.append(pieces)
        for kind, rows in flags.items():
            bad[kind][start:stop] = rows
    row, column, sequence, length, later = (
        np.concatenate(parts) for parts in zip(*found, strict=True)
    )
    offset = np.where(later, 0, index.offset[row])
    problems = [line for kind, say in KINDS.items() for line in listed(bad[kind], say, kind)]
    return Segments(row, column, sequence, offset, length), problems


KINDS = {
    "samples whose mask disagrees with step_sequence": (
        lambda r: f"sample {r}: mask and step_sequence disagree (mask is 1 where it is not -1)"
    ),
    "samples with a bad step_reset": (
        lambda r: f"sample {r}: step_reset holds values other than 0 and 1, or 1 on padding"
    ),
    "samples whose first step disagrees with sequence/offset": (
        lambda r: (
            f"sample {r}: time 0 of step_sequence (and step_reset) disagree with the row's "
            f"sequence and offset"
        )
    ),
    "samples where a sequence starts without step_reset": (
        lambda r: f"sample {r}: a sequence starts inside the row without step_reset = 1"
    ),
}


def slab_pieces(
    sequence: np.ndarray, reset: np.ndarray, mask: np.ndarray, index: Index, start: int
) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
    """(row, column, sequence, length, starts later than time 0) of the pieces of some
    rows, and per row which rule it breaks."""
    n, window = sequence.shape
    real = sequence >= 0
    before = np.concatenate([np.full((n, 1), -1), sequence[:, :-1]], axis=1)
    begins = real & ((sequence != before) | (reset == 1))
    # A piece runs to the next piece or to the padding; one column of sentinels ends rows.
    stops = np.concatenate([begins | ~real, np.ones((n, 1), dtype=bool)], axis=1).ravel()
    row, column = np.nonzero(begins)
    flat = row * (window + 1) + column
    ends = np.flatnonzero(stops)
    length = ends[np.searchsorted(ends, flat, side="right")] - flat
    rows = slice(start, start + n)
    head = real[:, 0]
    first_ok = ~head | (
        (sequence[:, 0] == index.sequence[rows]) & (reset[:, 0] == (index.offset[rows] == 0))
    )
    later = column > 0
    unreset = np.zeros(n, dtype=bool)
    unreset[row[later & (reset[row, column] != 1)]] = True
    flags = {
        "samples whose mask disagrees with step_sequence": ((mask != 0) != real).any(axis=1),
        "samples with a bad step_reset": ((reset > 1) | ((reset == 1) & ~real)).any(axis=1),
        "samples whose first step disagrees with sequence/offset": ~first_ok
        | (real.any(axis=1) & ~head),
        "samples where a sequence starts without step_reset": unreset,
    }
    return (row + start, column, sequence[row, column], length, later), flags
