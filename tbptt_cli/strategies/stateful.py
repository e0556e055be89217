"""The stateful layout shared by split, stepwise, domain acf and decoupled.

Chunk j of a sequence sits in the same row of the batch after chunk j-1's batch, so a
stateful RNN (Keras ``stateful=True``, a torch loop that carries ``h``) continues each
row's state from one batch to the next. Sequences are assigned a row and a first batch
(``block``: B sequences side by side; ``lanes``: each row a queue), then every chunk's
sample index is ``(first_batch + j) * B + row``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import StatefulParams
from tbptt_cli.plan import Plan, filler_rows, parse_batch_size, ragged_arange

MAX_AUTO_BATCH = 128
MIN_JITTER_LENGTH = 5
DRAW = 4096  # batch lengths drawn at a time


@dataclass(frozen=True)
class Chunking:
    """How sequences are cut: a fixed length, or per-batch lengths drawn AWD-LSTM style."""

    length: int
    jitter: float = 0.0
    p_half: float = 0.0
    seed: int = 0


class BatchLengths:
    """The chunk length of every batch, drawn lazily so any number of batches is covered."""

    def __init__(self, chunking: Chunking) -> None:
        self.chunking = chunking
        self.rng = np.random.default_rng(chunking.seed)
        self.cum = np.zeros(1, dtype=np.int64)  # cum[k] = steps before batch k

    def cumulative(self, batches: int) -> np.ndarray:
        """``cum[k]`` for k up to ``batches`` at least."""
        missing = batches + 1 - len(self.cum)
        if missing > 0:
            # Fixed-size draws keep the random stream independent of how much is asked for.
            draws = [self._draw(DRAW) for _ in range(-(-missing // DRAW))]
            steps = np.cumsum(np.concatenate(draws))
            self.cum = np.concatenate([self.cum, self.cum[-1] + steps])
        return self.cum

    def _draw(self, count: int) -> np.ndarray:
        c = self.chunking
        if c.jitter <= 0:
            return np.full(count, c.length, dtype=np.int64)
        half = self.rng.random(count) < c.p_half
        mean = np.where(half, c.length / 2, c.length)
        drawn = self.rng.normal(mean, c.jitter).astype(np.int64)
        return np.maximum(MIN_JITTER_LENGTH, drawn)


def chunk_counts(
    lengths: np.ndarray, length: int, remainder: str, ids: list[str], what: str = "chunk length"
) -> np.ndarray:
    """Chunks (or windows, one per ``what``) per sequence; the tail per ``remainder``."""
    if remainder == "error":
        bad = np.flatnonzero(lengths % length)
        if len(bad):
            i = int(bad[0])
            raise InputDataError(
                f"sequence {ids[i]!r} has {int(lengths[i])} steps, not a multiple of the "
                f"{what} {length}; pass --remainder pad or --remainder drop"
            )
    if remainder == "drop":
        return lengths // length
    return -(-lengths // length)


def lane_schedule(
    count_at: Callable[[int, int], int], sequences: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequence i goes to the row that frees first (ties: lowest row), where it takes
    ``count_at(i, first_batch)`` batches: returns (row, first batch, count) per sequence."""
    rows, first, counts = (np.empty(sequences, dtype=np.int64) for _ in range(3))
    free = [(0, row) for row in range(batch_size)]
    for i in range(sequences):
        batch, row = free[0]
        count = count_at(i, batch)
        rows[i], first[i], counts[i] = row, batch, count
        heapq.heapreplace(free, (batch + count, row))
    return rows, first, counts


def fixed_lanes(counts: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`lane_schedule` for fixed chunk counts; equal counts are a plain round robin."""
    if len(counts) and np.all(counts == counts[0]):
        index = np.arange(len(counts))
        return index % batch_size, (index // batch_size) * counts[0]
    fixed = counts.tolist()
    rows, first, _ = lane_schedule(lambda i, _: fixed[i], len(fixed), batch_size)
    return rows, first


def lane_waste(counts: np.ndarray, batch_size: int) -> int:
    rows, first = fixed_lanes(counts, batch_size)
    batches = int((first + counts).max()) if len(counts) else 0
    return batches * batch_size - int(counts.sum())


def choose_batch_size(counts: np.ndarray, packing: str) -> int:
    """The batch size up to 128 with the fewest filler rows, ties to the larger.

    B = 1 never needs filler, so this is the largest B without filler; for lanes a cheap
    lower bound skips the sizes that cannot reach zero before simulating the rest.
    """
    limit = max(1, min(MAX_AUTO_BATCH, len(counts)))
    total, longest = int(counts.sum()), int(counts.max(initial=0))
    for size in range(limit, 1, -1):
        if packing == "block":
            # No filler: every block full (N a multiple of B) and even inside.
            if total and len(counts) % size == 0:
                blocks = counts.reshape(-1, size)
                if (blocks == blocks[:, :1]).all():
                    return size
        elif total % size == 0 and total // size >= longest and lane_waste(counts, size) == 0:
            return size
    return 1


def stateful_plan(
    lengths: np.ndarray, ids: list[str], chunking: Chunking, params: StatefulParams
) -> Plan:
    """Cut every sequence into chunks and lay them out for one batch size."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if chunking.length < 1:
        raise UsageError(f"the chunk length must be at least 1, not {chunking.length}")
    if chunking.jitter < 0 or not 0 <= chunking.p_half <= 1:
        raise UsageError("--jitter must be >= 0 and --p-half between 0 and 1")
    if chunking.jitter and params.remainder == "error":
        raise UsageError("--remainder error cannot be met with --jitter; use pad or drop")
    counts = chunk_counts(lengths, chunking.length, params.remainder, ids)
    warnings: list[str] = []
    requested = parse_batch_size(params.batch_size)
    if params.order == "sequential":
        if requested not in (None, 1):
            raise UsageError(
                f"--order sequential puts a sequence's chunks one after another, which only "
                f"carries state correctly with batch size 1, not {requested}; use "
                f"--order interleaved"
            )
        requested = 1
    live = np.flatnonzero(counts > 0)
    if requested is None:
        batch_size = choose_batch_size(counts[live], params.packing)
        if batch_size == 1 and len(live) > 1:
            warnings.append(
                "--batch-size auto chose 1, the only size without filler rows; pass "
                "--batch-size B to train faster (--packing lanes needs the fewest fillers)"
            )
    else:
        batch_size = requested
    dropped = len(lengths) - len(live)
    if dropped:
        warnings.append(f"{dropped} sequence(s) shorter than one chunk produced no sample")
    batch_lengths = BatchLengths(chunking)
    if chunking.jitter:
        counts, rows, first = _jittered_schedule(lengths, live, batch_size, params, batch_lengths)
    else:
        counts, rows, first = _fixed_schedule(counts, live, batch_size, params.packing)
    return _emit(lengths, live, counts, rows, first, batch_size, batch_lengths, params, warnings)


def _fixed_schedule(
    counts: np.ndarray, live: np.ndarray, batch_size: int, packing: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = counts[live]
    if packing == "lanes":
        rows, first = fixed_lanes(counts, batch_size)
        return counts, rows, first
    index = np.arange(len(counts))
    padded = np.zeros(-(-len(counts) // batch_size) * batch_size, dtype=np.int64)
    padded[: len(counts)] = counts
    block_batches = padded.reshape(-1, batch_size).max(axis=1)
    block_first = np.concatenate([[0], np.cumsum(block_batches)[:-1]])
    return counts, index % batch_size, block_first[index // batch_size]


def _jittered_schedule(
    lengths: np.ndarray,
    live: np.ndarray,
    batch_size: int,
    params: StatefulParams,
    batch_lengths: BatchLengths,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-batch lengths: a sequence's chunk count depends on the batch it starts in."""
    side: Literal["left", "right"] = "right" if params.remainder == "drop" else "left"
    shift = 1 if params.remainder == "drop" else 0

    def count_from(start: int, steps: np.ndarray) -> np.ndarray:
        need = start + int(steps.max(initial=0)) // MIN_JITTER_LENGTH + 2
        cum = batch_lengths.cumulative(need)
        return np.searchsorted(cum, cum[start] + steps, side=side) - shift - start

    live_lengths = lengths[live]
    counts = np.zeros(len(live), dtype=np.int64)
    rows = np.zeros(len(live), dtype=np.int64)
    first = np.zeros(len(live), dtype=np.int64)
    if params.packing == "block":
        start = 0
        for block in range(0, len(live), batch_size):
            members = slice(block, block + batch_size)
            counts[members] = count_from(start, live_lengths[members])
            rows[members] = np.arange(len(counts[members]))
            first[members] = start
            start += int(counts[members].max(initial=0))
    else:
        rows, first, counts = lane_schedule(
            lambda i, start: max(int(count_from(start, live_lengths[i : i + 1])[0]), 0),
            len(live),
            batch_size,
        )
    return np.maximum(counts, 0), rows, first


def _emit(
    lengths: np.ndarray,
    live: np.ndarray,
    counts: np.ndarray,
    rows: np.ndarray,
    first: np.ndarray,
    batch_size: int,
    batch_lengths: BatchLengths,
    params: StatefulParams,
    warnings: list[str],
) -> Plan:
    batches = int((first + counts).max(initial=0))
    cum = batch_lengths.cumulative(batches)[: batches + 1]
    per_batch = np.diff(cum)
    plan = filler_rows(batches * batch_size)
    chunk = ragged_arange(counts)
    seq = np.repeat(live, counts)
    batch = np.repeat(first, counts) + chunk
    sample = batch * batch_size + np.repeat(rows, counts)
    offset = cum[batch] - np.repeat(cum[first], counts)
    plan["sequence"][sample] = seq
    plan["offset"][sample] = offset
    plan["length"][sample] = np.minimum(per_batch[batch], lengths[seq] - offset)
    plan["reset"][sample[chunk == 0]] = 1
    # Keras resets whole batches: the first batch of every block resets every row.
    if params.packing == "block":  # ``first`` is sorted: blocks start where it changes
        starts = first[np.flatnonzero(np.diff(first, prepend=-1))]
    else:
        starts = np.zeros(min(batches, 1), dtype=np.int64)
    plan["reset"][(starts[:, None] * batch_size + np.arange(batch_size)).ravel()] = 1
    jittered = batch_lengths.chunking.jitter > 0
    window = int(per_batch.max(initial=1)) if jittered else batch_lengths.chunking.length
    return Plan(
        **plan,
        window=window,
        batch_size=batch_size,
        stateful=True,
        packing=params.packing,
        order=params.order,
        batch_length=per_batch.astype(np.int32) if jittered else None,
        warnings=tuple(warnings),
    )
