"""The layout rules: bounds, masks and fillers, state continuity, and coverage (nothing
overlaps, nothing is lost)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from tbptt_cli.validate.common import Index, attr, listed, slabs
from tbptt_cli.validate.stream import read_segments

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
        ranks=int(attr(f, "ranks", 1)),
        part=f["part"][()].astype(np.int64) if isinstance(f.get("part"), h5py.Dataset) else None,
    )
    problems = bounds_problems(index) + rank_problems(index)
    if attr(f, "packing") == "stream":
        index.segments, found = read_segments(f, index)
        problems += found
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
    first_batch = slice(0, index.batch_size * max(index.ranks, 1))  # of every rank
    no_reset = (index.sequence[first_batch] >= 0) & (index.reset[first_batch] == 0)
    problems += listed(
        no_reset,
        lambda r: f"sample {r}: in the first batch (of its rank) but reset is 0",
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


def rank_problems(index: Index) -> list[str]:
    """R ranks of B rows: every rank as many batches, so the file holds whole R*B groups."""
    if index.ranks < 1:
        return [f"attribute ranks is {index.ranks}, not a positive integer"]
    group = index.ranks * index.batch_size
    if index.ranks > 1 and len(index.sequence) % group:
        return [
            f"{len(index.sequence)} samples do not give each of {index.ranks} ranks the same "
            f"number of batches of {index.batch_size}"
        ]
    return []


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
    """Row r of a rank's batch k carries row r of its batch k-1's state unless its reset
    is 1. With R ranks batch k of rank r is batch k*R + r of the file, so rows R*B apart
    carry state."""
    size, ranks = index.batch_size, max(index.ranks, 1)
    step = size * ranks
    if len(index.sequence) % step:
        return [f"a stateful file holds whole batches: {len(index.sequence)} samples, batch {size}"]
    head_seq, head_offset, tail_seq, tail_end = (a.reshape(-1, step) for a in index.ends())
    reset = index.reset.reshape(-1, step)
    carried = (head_seq[1:] >= 0) & (reset[1:] == 0)
    foreign = (carried & (head_seq[1:] != tail_seq[:-1])).ravel()
    expected = tail_end[:-1].ravel()
    same = carried & (head_seq[1:] == tail_seq[:-1])
    jump = same.ravel() & (head_offset[1:].ravel() != expected)
    row_of = np.arange(len(foreign)) + step  # flat position in groups 1.. -> sample index

    def where(s: int) -> str:
        batch, row = s // size, s % size
        rank = f", rank {batch % ranks}" if ranks > 1 else ""
        return f"sample {s} (batch {batch}{rank}, row {row})"

    def takes_over(i: int) -> str:
        s = row_of[i]
        return (
            f"{where(s)}: {index.name(int(head_seq.flat[s]))} starts without a reset but "
            f"the row held {index.name(int(tail_seq.flat[s - step]))}"
        )

    def skips(i: int) -> str:
        s = row_of[i]
        return (
            f"{where(s)}: {index.name(int(head_seq.flat[s]))} continues at step "
            f"{head_offset.flat[s]}, expected {expected[i]}"
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
        pieces = index.pieces()
        return interval_problems(
            index, pieces.sequence, pieces.offset, pieces.length, pieces.row, mode, "steps"
        )
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
    rows = np.arange(len(start))
    return problems + interval_problems(index, index.sequence, start, count, rows, mode, "targets")


def interval_problems(
    index: Index,
    sequence: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
    sample: np.ndarray,
    mode: str,
    what: str,
) -> list[str]:
    """Piece p (in row ``sample[p]``) covers ``[start[p], start[p] + count[p])`` of its
    sequence: no overlap, and (by ``mode``) no gap, nothing before step 0 is lost,
    nothing past the end."""
    live = np.flatnonzero((sequence >= 0) & (count > 0))
    order = live[np.lexsort((start[live], sequence[live]))]
    seq, lo, hi = sequence[order], start[order], start[order] + count[order]
    where = sample[order]
    same = seq[1:] == seq[:-1]
    problems = listed(
        same & (lo[1:] < hi[:-1]),
        lambda i: (
            f"{index.name(seq[i])}: {what} {lo[i + 1]}..{min(hi[i], hi[i + 1]) - 1} are "
            f"in both sample {where[i]} and sample {where[i + 1]}"
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
            f"{index.name(seq[i])}: sample {where[i]} covers {what} up to {hi[i] - 1}, "
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
