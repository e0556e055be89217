"""Where every chunk of a stateful layout goes: pieces, ranks, rows and batches.

A *piece* is the unit a layout places: a contiguous part of one sequence that fills one
row over consecutive batches, state carried, starting with a reset. Without
``--streams`` a piece is a whole sequence; with ``--streams S`` each sequence is cut into
S parts of whole chunks (their chunk counts differ by at most one), as torch's
``batchify`` cuts one token stream, so they can be laid side by side as S rows.

Pieces are taken longest first (most chunks; for ``stream`` most steps; ties in input
order): each is dealt to the rank with the least work so far, and every rank lays its
pieces into its B rows in that order, so pieces of similar length share a block and the
rows of lanes and stream packing end together (the longest-processing-time rule). A given
batch size gives one layout, whether chosen by ``--batch-size auto`` or passed:

- ``block``: B pieces side by side; the block spans as many batches as its longest piece.
- ``lanes``: each row a queue of pieces; a row takes the next piece when its own ends.
- ``stream``: each row a queue of steps; the next piece starts right after the previous
  one, inside the same chunk (``position`` is then a step of the row, not a batch).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tbptt_cli.plan import BatchChoice, choose_batch, ragged_arange, within

STREAM_ROWS = 32  # --streams auto aims at this many rows per rank ...
MIN_STREAM_CHUNKS = 8  # ... while every stream keeps at least this many chunks


@dataclass(frozen=True)
class Pieces:
    sequence: np.ndarray  # int64 [P]
    start: np.ndarray  # int64 [P]: the piece's first step in its sequence
    steps: np.ndarray  # int64 [P]
    part: np.ndarray  # int64 [P]: which part of its sequence (0 without --streams)
    counts: np.ndarray  # int64 [P]: chunks of the nominal length
    last: np.ndarray  # bool [P]: holds its sequence's end, where --remainder applies

    def __len__(self) -> int:
        return len(self.sequence)

    def take(self, index: np.ndarray) -> Pieces:
        return Pieces(*(getattr(self, name)[index] for name in self.__dataclass_fields__))


def cut(lengths: np.ndarray, units: np.ndarray, length: int, streams: int) -> Pieces:
    """Each sequence as ``min(streams, units)`` parts of whole chunks; ``units`` are its
    chunks under the remainder rule. A part's steps end where the next part begins; the
    last part keeps the tail (padded or dropped by the remainder rule)."""
    parts = np.minimum(streams, units)
    sequence = np.repeat(np.arange(len(lengths), dtype=np.int64), parts)
    part = ragged_arange(parts)
    whole, extra = units // np.maximum(parts, 1), units % np.maximum(parts, 1)
    counts = whole[sequence] + (part < extra[sequence])
    before = np.cumsum(counts) - counts  # chunks before the piece, counted from sequence 0
    start = (before - (np.cumsum(units) - units)[sequence]) * length
    last = part == parts[sequence] - 1
    steps = np.where(last, lengths[sequence] - start, counts * length)
    return Pieces(sequence, start.astype(np.int64), steps, part, counts, last)


def deal(weights: np.ndarray, ranks: int) -> np.ndarray:
    """The rank of every piece, in turn, each to the rank with the least weight so far
    (ties: the lowest rank)."""
    rank = np.zeros(len(weights), dtype=np.int64)
    if ranks == 1:
        return rank
    load = [(0, r) for r in range(ranks)]
    for i, weight in enumerate(weights.tolist()):
        total, r = load[0]
        rank[i] = r
        heapq.heapreplace(load, (total + weight, r))
    return rank


def lane_schedule(
    count_at: Callable[[int, int], int], pieces: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Piece i goes to the row that frees first (ties: lowest row), where it takes
    ``count_at(i, first)`` batches (or steps): returns (row, first, count) per piece."""
    rows, first, counts = (np.empty(pieces, dtype=np.int64) for _ in range(3))
    free = [(0, row) for row in range(batch_size)]
    for i in range(pieces):
        batch, row = free[0]
        count = count_at(i, batch)
        rows[i], first[i], counts[i] = row, batch, count
        heapq.heapreplace(free, (batch + count, row))
    return rows, first, counts


def fixed_lanes(counts: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`lane_schedule` for fixed counts; equal counts are a plain round robin."""
    if len(counts) and np.all(counts == counts[0]):
        index = np.arange(len(counts))
        return index % batch_size, (index // batch_size) * counts[0]
    fixed = counts.tolist()
    rows, first, _ = lane_schedule(lambda i, _: fixed[i], len(fixed), batch_size)
    return rows, first


def block_batches(counts: np.ndarray, batch_size: int) -> np.ndarray:
    """The batches of each block of B pieces side by side: its longest piece's chunks."""
    padded = np.zeros(-(-len(counts) // batch_size) * batch_size, dtype=np.int64)
    padded[: len(counts)] = counts
    return padded.reshape(-1, batch_size).max(axis=1)


def fixed_blocks(counts: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, first batch) of B pieces side by side, each block as long as its longest."""
    index = np.arange(len(counts))
    batches = block_batches(counts, batch_size)
    return index % batch_size, (np.cumsum(batches) - batches)[index // batch_size]


def fixed_schedule(pieces: Pieces, batch_size: int, packing: str) -> tuple[np.ndarray, np.ndarray]:
    """(row, first) of one rank's pieces at the nominal chunk length: ``first`` is a batch,
    or for ``stream`` a step of the row."""
    if packing == "block":
        return fixed_blocks(pieces.counts, batch_size)
    return fixed_lanes(pieces.steps if packing == "stream" else pieces.counts, batch_size)


@dataclass(frozen=True)
class Dealt:
    """Pieces dealt to ranks: ``members[r]`` are rank r's pieces in the order they are
    laid (longest first, ties in input order) and ``own[r]`` those pieces themselves."""

    pieces: Pieces
    ranks: int
    rank: np.ndarray  # int64 [P]
    members: list[np.ndarray]
    own: list[Pieces]
    laid: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # `schedule`'s results: lanes are simulated once per batch size, not per question

    def schedule(self, rank: int, batch_size: int, packing: str) -> tuple[np.ndarray, np.ndarray]:
        """`fixed_schedule` of one rank's pieces."""
        key = (rank, batch_size, packing)
        if key not in self.laid:
            self.laid[key] = fixed_schedule(self.own[rank], batch_size, packing)
        return self.laid[key]

    @classmethod
    def of(cls, pieces: Pieces, ranks: int, packing: str) -> Dealt:
        weights = pieces.steps if packing == "stream" else pieces.counts
        order = np.argsort(-weights, kind="stable")
        rank = np.empty(len(pieces), dtype=np.int64)
        rank[order] = deal(weights[order], ranks)
        members = [order[rank[order] == r] for r in range(ranks)]
        return cls(pieces, ranks, rank, members, [pieces.take(m) for m in members])


def filler(dealt: Dealt, batch_size: int, packing: str, length: int) -> tuple[int, int]:
    """(filler rows, all rows) of the layout at the nominal chunk length."""
    batches, real = 0, 0
    for rank, mine in enumerate(dealt.own):
        if packing == "block":
            batches = max(batches, int(block_batches(mine.counts, batch_size).sum()))
            real += int(mine.counts.sum())
            continue
        rows, first = dealt.schedule(rank, batch_size, packing)
        if packing == "stream":
            ends = np.bincount(rows, weights=mine.steps, minlength=batch_size).astype(np.int64)
            batches = max(batches, -(-int(ends.max(initial=0)) // length))
            real += int((-(-ends // length)).sum())
        else:
            batches = max(batches, int((first + mine.counts).max(initial=0)))
            real += int(mine.counts.sum())
    total = batches * batch_size * dealt.ranks
    return total - real, total


def filler_bound(dealt: Dealt, batch_size: int, packing: str, length: int) -> tuple[int, int]:
    """A lower bound of `filler` (lanes, stream) that needs no simulation of the rows."""
    batches, real = 0, 0
    for mine in dealt.own:
        if packing == "stream":
            steps = int(mine.steps.sum())
            longest = max(-(-steps // batch_size), int(mine.steps.max(initial=0)))
            batches = max(batches, -(-longest // length))
            real += steps // length + batch_size  # each row's last chunk may be partial
        else:
            chunks = int(mine.counts.sum())
            batches = max(batches, -(-chunks // batch_size), int(mine.counts.max(initial=0)))
            real += chunks
    total = batches * batch_size * dealt.ranks
    return max(total - real, 0), total


def auto_batch(dealt: Dealt, packing: str, length: int, max_filler: float) -> int:
    """The largest B up to 128 (and up to the pieces per rank) within ``max_filler``."""
    return choose_batch(
        -(-len(dealt.pieces) // dealt.ranks),
        max_filler,
        lambda size: filler(dealt, size, packing, length),
        None if packing == "block" else lambda size: filler_bound(dealt, size, packing, length),
    )


def choose_streams(
    lengths: np.ndarray, units: np.ndarray, length: int, choice: BatchChoice, packing: str
) -> int:
    """``--streams auto``: enough parts for about 32 rows per rank, each part at least 8
    chunks long; among those the count that gives the largest batch within --max-filler
    (a given batch size: the fewest parts within it), ties to fewer parts."""
    live = units[units > 0]
    if not len(live):
        return 1
    wanted = -(-STREAM_ROWS * choice.ranks // len(live))
    most = min(wanted, int(np.median(live)) // MIN_STREAM_CHUNKS)
    if most <= 1:
        return 1
    best: tuple[tuple[bool, int, float, int], int] | None = None
    for streams in range(1, most + 1):
        dealt = Dealt.of(cut(lengths, units, length, streams), choice.ranks, packing)
        if len(dealt.pieces) < choice.ranks:
            continue
        size = choice.size or auto_batch(dealt, packing, length, choice.max_filler)
        fill, total = filler(dealt, size, packing, length)
        fits = within(fill, total, choice.max_filler)
        key = (fits, size, 0.0 if fits else -fill / max(total, 1), -streams)
        if best is None or key > best[0]:
            best = (key, streams)
    return best[1] if best else 1
