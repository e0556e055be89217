"""The layout rules: bounds, masks and fillers, state continuity, and coverage (nothing
overlaps, nothing is lost)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from tbptt_cli.validate.common import Index, attr, listed, slabs

# --- layout: bounds, masks, fillers, first resets --------------------------------------


def row_runs(ds: h5py.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a [samples, window] mask: (count of 1s, first 1, one run, only 0 and 1)."""
    samples, window = ds.shape
    count = np.zeros(samples, dtype=np.int64)
    first = np.zeros(samples, dtype=np.int64)
    one_run = np.ones(samples, dtype=bool)
    binary = np.ones(samples, dtype=bool)
    for start, block in slabs(ds):
        rows = slice(start, start + len(block))
        on = block != 0
        binary[rows] = (block <= 1).all(axis=1)
        count[rows] = on.sum(axis=1)
        first[rows] = np.where(count[rows] > 0, on.argmax(axis=1), 0)
        last = window - 1 - on[:, ::-1].argmax(axis=1)
        one_run[rows] = (count[rows] == 0) | (last - first[rows] + 1 == count[rows])
    return count, first, one_run, binary


def read_index(f: h5py.File, doc: dict[str, Any] | None) -> tuple[Index, list[str]]:
    """Load the index datasets and check the invariants that hold for every file."""
    count, lead, one_run, binary = row_runs(f["mask"])
    table = (doc or {}).get("sequences") or {}
    ids, lengths = table.get("id"), table.get("length")
    index = Index(
        sequence=f["sequence"][()].astype(np.int64),
        offset=f["offset"][()].astype(np.int64),
        length=f["length"][()].astype(np.int64),
        reset=f["reset"][()].astype(np.int64),
        lead=lead,
        window=int(attr(f, "window", f["mask"].shape[1])),
        batch_size=max(1, int(attr(f, "batch_size", 1))),
        stateful=bool(attr(f, "stateful", 0)),
        ids=[str(i) for i in ids] if isinstance(ids, list) else None,
        lengths=np.asarray(lengths, dtype=np.int64) if isinstance(lengths, list) else None,
    )
    problems = bounds_problems(index)
    problems += listed(
        ~binary,
        lambda r: f"sample {r}: mask holds values other than 0 and 1",
        "samples with such a mask",
    )
    problems += listed(
        count != index.length,
        lambda r: f"sample {r}: mask has {count[r]} real steps but length says {index.length[r]}",
        "samples whose mask disagrees with length",
    )
    problems += listed(
        ~one_run,
        lambda r: f"sample {r}: mask is not one contiguous run",
        "samples with a broken mask",
    )
    first_batch = slice(0, index.batch_size)
    no_reset = (index.sequence[first_batch] >= 0) & (index.reset[first_batch] == 0)
    problems += listed(
        no_reset,
        lambda r: f"sample {r}: in the first batch but reset is 0",
        "first-batch rows without reset",
    )
    if isinstance(f.get("batch_length"), h5py.Dataset):
        problems += batch_length_problems(index, f["batch_length"][()].astype(np.int64))
    return index, problems


def bounds_problems(index: Index) -> list[str]:
    seq, offset, length, reset = index.sequence, index.offset, index.length, index.reset
    count = len(index.lengths) if index.lengths is not None else None
    outside = (seq < -1) | (seq >= count if count is not None else False)
    checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
        (outside, lambda r: f"sample {r}: sequence {seq[r]} is not a sequence of the input"),
        (offset < 0, lambda r: f"sample {r}: offset {offset[r]} is negative"),
        (
            (length < 0) | (length > index.window),
            lambda r: f"sample {r}: length {length[r]} is outside the window of {index.window}",
        ),
        (
            (seq == -1) & (length != 0),
            lambda r: f"sample {r}: a filler row (sequence -1) with length {length[r]}",
        ),
        ((reset != 0) & (reset != 1), lambda r: f"sample {r}: reset is {reset[r]}, not 0 or 1"),
    ]
    return [line for bad, say in checks for line in listed(bad, say, "samples like this")]


def batch_length_problems(index: Index, batch_length: np.ndarray) -> list[str]:
    batches = -(-len(index.sequence) // index.batch_size)
    if len(batch_length) != batches:
        return [f"batch_length has {len(batch_length)} entries for {batches} batches"]
    limit = np.repeat(batch_length, index.batch_size)[: len(index.length)]
    return listed(
        index.length > limit,
        lambda r: f"sample {r}: length {index.length[r]} exceeds its batch's length {limit[r]}",
        "samples longer than their batch",
    )


# --- state continuity ------------------------------------------------------------------


def check_state(index: Index) -> list[str]:
    """Row r of batch k carries row r of batch k-1's state unless its reset is 1."""
    size = index.batch_size
    if len(index.sequence) % size:
        return [f"a stateful file holds whole batches: {len(index.sequence)} samples, batch {size}"]
    seq, offset, length, reset = (
        a.reshape(-1, size) for a in (index.sequence, index.offset, index.length, index.reset)
    )
    carried = (seq[1:] >= 0) & (reset[1:] == 0)
    foreign = (carried & (seq[1:] != seq[:-1])).ravel()
    expected = (offset[:-1] + length[:-1]).ravel()
    jump = (carried & (seq[1:] == seq[:-1])).ravel() & (offset[1:].ravel() != expected)
    row_of = np.arange(len(foreign)) + size  # flat position in batches 1.. -> sample index

    def takes_over(i: int) -> str:
        s = row_of[i]
        return (
            f"sample {s} (batch {s // size}, row {s % size}): {index.name(index.sequence[s])} "
            f"starts without a reset but the row held {index.name(index.sequence[s - size])}"
        )

    def skips(i: int) -> str:
        s = row_of[i]
        return (
            f"sample {s} (batch {s // size}, row {s % size}): {index.name(index.sequence[s])} "
            f"continues at step {index.offset[s]}, expected {expected[i]}"
        )

    return listed(foreign, takes_over, "rows that take over another row's state") + listed(
        jump, skips, "rows that skip or repeat steps"
    )


# --- coverage: nothing overlaps, nothing is lost ---------------------------------------


def coverage_mode(doc: dict[str, Any] | None) -> str:
    """exact: every step once; prefix: the first steps of each, once; partial: any, once."""
    params = (doc or {}).get("params") or {}
    strategy = params.get("strategy")
    own = params.get(strategy) if isinstance(strategy, str) else None
    if not isinstance(own, dict):
        return "exact"
    if strategy == "domain-segments" and own.get("overflow") in ("truncate", "drop"):
        return "partial"
    if own.get("remainder") == "drop" or (strategy == "asis" and own.get("truncate")):
        return "prefix"
    return "exact"


def check_coverage(f: h5py.File, index: Index, doc: dict[str, Any] | None) -> list[str]:
    """Real steps (or, for overlapping windows, trained targets) cover each sequence once."""
    mode = coverage_mode(doc)
    k1, stride = attr(f, "k1"), attr(f, "stride")
    if k1 is None or stride is None or int(stride) >= int(k1):
        return interval_problems(index, index.offset, index.length, mode, "steps")
    # Overlapping windows repeat steps by design; each target must be trained once.
    if not isinstance(f.get("loss_mask"), h5py.Dataset):
        return ["the windows overlap (stride < k1) but the file has no loss_mask"]
    count, first, one_run, binary = row_runs(f["loss_mask"])
    problems = listed(
        ~binary | ~one_run,
        lambda r: f"sample {r}: loss_mask is not one contiguous run of 1s",
        "samples with a broken loss_mask",
    )
    outside = (count > 0) & ((first < index.lead) | (first + count > index.lead + index.length))
    problems += listed(
        outside,
        lambda r: f"sample {r}: loss_mask marks padded steps",
        "samples whose loss_mask marks padding",
    )
    start = index.offset + first - index.lead
    return problems + interval_problems(index, start, count, mode, "targets")


def interval_problems(
    index: Index, start: np.ndarray, count: np.ndarray, mode: str, what: str
) -> list[str]:
    """Row r covers ``[start[r], start[r] + count[r])`` of its sequence: no overlap, and
    (by ``mode``) no gap, nothing before step 0 is lost, nothing past the end."""
    rows = np.flatnonzero((index.sequence >= 0) & (count > 0))
    order = rows[np.lexsort((start[rows], index.sequence[rows]))]
    seq, lo, hi = index.sequence[order], start[order], start[order] + count[order]
    same = seq[1:] == seq[:-1]
    problems = listed(
        same & (lo[1:] < hi[:-1]),
        lambda i: (
            f"{index.name(seq[i])}: {what} {lo[i + 1]}..{min(hi[i], hi[i + 1]) - 1} are "
            f"in both sample {order[i]} and sample {order[i + 1]}"
        ),
        "overlaps",
    )
    lengths = index.lengths
    if lengths is None:
        return problems
    total = np.append(lengths, 0)[np.minimum(seq, len(lengths))]
    problems += listed(
        hi > total,
        lambda i: (
            f"{index.name(seq[i])}: sample {order[i]} covers {what} up to {hi[i] - 1}, "
            f"past its {total[i]} steps"
        ),
        "samples past their sequence's end",
    )
    if mode == "partial":
        return problems
    heads = np.r_[True, ~same] if len(seq) else np.zeros(0, dtype=bool)
    tails = np.r_[~same, True] if len(seq) else np.zeros(0, dtype=bool)
    problems += listed(
        np.r_[False, same & (lo[1:] > hi[:-1])] if len(seq) else heads,
        lambda i: f"{index.name(seq[i])}: {what} {hi[i - 1]}..{lo[i] - 1} are in no sample",
        "gaps",
    )
    problems += listed(
        heads & (lo > 0),
        lambda i: f"{index.name(seq[i])}: {what} 0..{lo[i] - 1} are in no sample",
        "sequences that lose their first steps",
    )
    if mode == "exact":
        problems += listed(
            tails & (hi < total),
            lambda i: f"{index.name(seq[i])}: {what} {hi[i]}..{total[i] - 1} are in no sample",
            "sequences that lose their last steps",
        )
        covered = np.zeros(len(lengths), dtype=bool)
        covered[seq[seq < len(lengths)]] = True
        problems += listed(
            ~covered & (lengths > 0),
            lambda i: f"{index.name(i)}: none of its {lengths[i]} {what} is in any sample",
            "sequences in no sample",
        )
    return problems
