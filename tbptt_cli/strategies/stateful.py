"""The stateful layout shared by split, stepwise, domain acf, decoupled and grid.

Chunk j of a piece (a sequence, or one of its ``--streams`` parts) sits in the same row
of the batch after chunk j-1's batch, so a stateful RNN (Keras ``stateful=True``, a torch
loop that carries ``h``) continues each row's state from one batch to the next.
`packing` decides which row and first batch every piece gets, rank by rank; this module
cuts the sequences, chooses the batch size and the number of streams, and turns that
schedule into the Plan's index arrays. With R ranks, batch k of rank r is batch
``k*R + r`` of the file, so each rank reads a state-continuous file of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import StatefulParams
from tbptt_cli.plan import (
    BatchChoice,
    Plan,
    Segments,
    batch_choice,
    batch_one_warning,
    filler_rows,
    padding_warning,
    parse_batch_size,
    ragged_arange,
    within,
)
from tbptt_cli.strategies.packing import (
    MIN_STREAM_CHUNKS,
    Dealt,
    Pieces,
    auto_batch,
    choose_streams,
    cut,
    lane_schedule,
)

MIN_JITTER_LENGTH = 5
DRAW = 4096  # batch lengths drawn at a time


@dataclass(frozen=True)
class Chunking:
    """How sequences are cut: a fixed length, or per-batch lengths drawn AWD-LSTM style.
    ``shorter`` names the option that shortens the chunks, for the padding warning."""

    length: int
    jitter: float = 0.0
    p_half: float = 0.0
    seed: int = 0
    shorter: str = "a shorter --length"


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

    def covering(self, steps: int) -> np.ndarray:
        """``cum[: k + 1]`` for the fewest batches k that hold ``steps`` steps."""
        while self.cum[-1] < steps:
            self.cumulative(2 * len(self.cum))
        return self.cum[: int(np.searchsorted(self.cum, steps, side="left")) + 1]

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


def check_layout(
    params: StatefulParams, chunking: Chunking, choice: BatchChoice, streams: int | None
) -> None:
    """Combinations that cannot be laid out, refused before anything is planned
    (``streams`` None: auto)."""
    if params.order == "sequential":
        if choice.size not in (None, 1):
            raise UsageError(
                f"--order sequential puts a sequence's chunks one after another, which only "
                f"carries state correctly with batch size 1, not {choice.size}; use "
                f"--order interleaved"
            )
        if streams != 1:
            raise UsageError(
                "--streams lays the parts of a sequence side by side, --order sequential "
                "one after another in a single row; drop one of them"
            )
    if params.packing == "stream":
        if params.remainder != "pad":
            raise UsageError(
                f"--packing stream pads only the end of each row, so --remainder "
                f"{params.remainder} does not apply; drop it (or use --packing lanes)"
            )
        if streams != 1:
            raise UsageError(
                "--packing stream already queues sequences step after step in every row; "
                "--streams cuts sequences for block and lanes packing: drop one of them"
            )
    if chunking.jitter and params.remainder == "error":
        raise UsageError("--remainder error cannot be met with --jitter; use pad or drop")


def stateful_plan(
    lengths: np.ndarray, ids: list[str], chunking: Chunking, params: StatefulParams
) -> Plan:
    """Cut every sequence into chunks and lay them out for one batch size (per rank)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if chunking.length < 1:
        raise UsageError(f"the chunk length must be at least 1, not {chunking.length}")
    if chunking.jitter < 0 or not 0 <= chunking.p_half <= 1:
        raise UsageError("--jitter must be >= 0 and --p-half between 0 and 1")
    choice = batch_choice(params)
    requested = parse_batch_size(params.streams, "--streams")
    check_layout(params, chunking, choice, requested)
    if params.order == "sequential":
        choice = replace(choice, size=1)
    length, packing = chunking.length, params.packing
    units = chunk_counts(lengths, length, params.remainder, ids)
    streams = requested or choose_streams(lengths, units, length, choice, packing)
    pieces = cut(lengths, units, length, streams)
    if 0 < len(pieces) < choice.ranks:
        raise UsageError(
            f"--ranks {choice.ranks} needs at least {choice.ranks} sequences (or parts of "
            f"sequences), one for each rank, not {len(pieces)}; pass --streams {choice.ranks} "
            f"or fewer ranks"
        )
    dealt = Dealt.of(pieces, choice.ranks, packing)
    batch_lengths = BatchLengths(chunking)
    size = choice.size or auto_batch(dealt, packing, length, choice.max_filler)
    plan = _lay_out(dealt, size, params, batch_lengths)
    # auto judged the filler at the nominal length; drawn lengths change how many batches
    # each piece takes, so the laid-out plan is checked, and the batch made smaller if need be.
    while (
        choice.size is None
        and size > 1
        and not within(plan.filler_rows, plan.samples, choice.max_filler)
    ):
        size -= 1
        plan = _lay_out(dealt, size, params, batch_lengths)
    warnings = layout_warnings(units, pieces, params, choice, size, requested)
    plan = replace(plan, order=params.order, streams=streams)
    padded = padding_warning(plan, chunking.shorter)
    return replace(plan, warnings=tuple(warnings + ([padded] if padded else [])))


def _lay_out(dealt: Dealt, size: int, params: StatefulParams, batch_lengths: BatchLengths) -> Plan:
    """The plan of ``dealt`` laid out in batches of ``size`` rows."""
    if params.packing == "stream":
        rows, position = _schedule(dealt, size, params, batch_lengths)[1:]
        return _emit_stream(dealt, rows, position, size, batch_lengths)
    counts, rows, first = _schedule(dealt, size, params, batch_lengths)
    return _emit_chunks(dealt, counts, rows, first, size, batch_lengths, params.packing)


def layout_warnings(
    units: np.ndarray,
    pieces: Pieces,
    params: StatefulParams,
    choice: BatchChoice,
    size: int,
    requested: int | None,
) -> list[str]:
    """What the run says about the layout: ``requested`` is the --streams given."""
    warnings = list(choice.warnings)
    if choice.size is None and size == 1 and int(pieces.counts.sum()) > choice.ranks:
        cures = batch_cures(pieces, params, choice, requested, int(units.max()))
        warnings.append(batch_one_warning(choice.max_filler, cures))
    dropped = int(np.count_nonzero(units == 0))
    if dropped:
        warnings.append(f"{dropped} sequence(s) shorter than one chunk produced no sample")
    if requested:
        fewer = int(np.count_nonzero((units > 0) & (units < requested)))
        if fewer:
            warnings.append(
                f"{fewer} sequence(s) have fewer than {requested} chunks, so fewer than "
                f"--streams {requested} parts (one per chunk)"
            )
    return warnings


def batch_cures(
    pieces: Pieces, params: StatefulParams, choice: BatchChoice, requested: int | None, chunks: int
) -> str:
    """What gives a batch larger than 1: more rows to fill it, or more filler allowed
    (``requested``: the --streams given, None for auto; ``chunks``: the longest
    sequence's)."""
    streams = requested == 1 and params.order == "interleaved"
    if len(pieces) <= choice.ranks:  # one piece per rank: only parallel streams help
        # --streams auto keeps MIN_STREAM_CHUNKS chunks per stream: too short for it, or
        # it was given and found none, only a --streams S of the user's makes a batch.
        if requested is None or (streams and chunks < 2 * MIN_STREAM_CHUNKS):
            return (
                "one sequence fills one row, too short for --streams auto "
                f"({MIN_STREAM_CHUNKS} or more chunks per stream); pass --streams S (S <= its "
                "chunks) or a shorter --length"
            )
        if streams:
            return "one sequence fills one row; --streams auto cuts it into parallel streams"
        return "one sequence fills one row; pass more --streams"
    cures = ["pass --batch-size B", "a larger --max-filler"]
    if params.packing == "block":
        cures.append("--packing lanes")
    if streams:
        cures.append("--streams auto (each sequence as parallel streams)")
    return ", ".join(cures[:-1]) + " or " + cures[-1]


def _schedule(
    dealt: Dealt, size: int, params: StatefulParams, batch_lengths: BatchLengths
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunks, row, first) of every piece, each rank laid out on its own."""
    pieces = dealt.pieces
    counts = pieces.counts.copy()
    rows = np.zeros(len(pieces), dtype=np.int64)
    first = np.zeros(len(pieces), dtype=np.int64)
    jittered = batch_lengths.chunking.jitter > 0 and params.packing != "stream"
    for rank, (members, mine) in enumerate(zip(dealt.members, dealt.own, strict=True)):
        if jittered:
            drop = mine.last & (params.remainder == "drop")
            laid = _jittered_schedule(mine, drop, size, params.packing, batch_lengths)
            counts[members], rows[members], first[members] = laid
        else:
            rows[members], first[members] = dealt.schedule(rank, size, params.packing)
    return counts, rows, first


def _jittered_schedule(
    pieces: Pieces, drop: np.ndarray, batch_size: int, packing: str, batch_lengths: BatchLengths
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-batch lengths: a piece's chunk count depends on the batch it starts in."""

    def count_from(start: int, steps: np.ndarray, drop: np.ndarray) -> np.ndarray:
        need = start + int(steps.max(initial=0)) // MIN_JITTER_LENGTH + 2
        cum = batch_lengths.cumulative(need)
        ends = cum[start] + steps
        padded = np.searchsorted(cum, ends, side="left") - start
        return np.where(drop, np.searchsorted(cum, ends, side="right") - 1 - start, padded)

    steps = pieces.steps
    counts = np.zeros(len(steps), dtype=np.int64)
    rows = np.zeros(len(steps), dtype=np.int64)
    first = np.zeros(len(steps), dtype=np.int64)
    if packing == "block":
        start = 0
        for block in range(0, len(steps), batch_size):
            members = slice(block, block + batch_size)
            counts[members] = count_from(start, steps[members], drop[members])
            rows[members] = np.arange(len(counts[members]))
            first[members] = start
            start += int(counts[members].max(initial=0))
    else:
        rows, first, counts = lane_schedule(
            lambda i, start: max(int(count_from(start, steps[i : i + 1], drop[i : i + 1])[0]), 0),
            len(steps),
            batch_size,
        )
    return np.maximum(counts, 0), rows, first


def _emit_chunks(
    dealt: Dealt,
    counts: np.ndarray,
    rows: np.ndarray,
    first: np.ndarray,
    batch_size: int,
    batch_lengths: BatchLengths,
    packing: str,
) -> Plan:
    """Chunk j of piece p at batch ``first[p] + j`` of its rank, in its row."""
    pieces, ranks = dealt.pieces, dealt.ranks
    batches = int((first + counts).max(initial=0))  # per rank
    cum = batch_lengths.cumulative(batches)[: batches + 1]
    per_batch = np.diff(cum)
    plan = filler_rows(batches * ranks * batch_size)

    def each(values: np.ndarray) -> np.ndarray:  # a piece's value for each of its chunks
        return np.repeat(values, counts)

    chunk = ragged_arange(counts)
    batch = each(first) + chunk
    sample = batch * ranks * batch_size + each(dealt.rank * batch_size + rows)
    offset = cum[batch] - each(cum[first])  # within the piece
    plan["sequence"][sample] = each(pieces.sequence)
    plan["offset"][sample] = each(pieces.start) + offset
    plan["length"][sample] = np.minimum(per_batch[batch], each(pieces.steps) - offset)
    plan["reset"][sample[chunk == 0]] = 1
    part = None
    if pieces.part.any():  # --streams: which part of its sequence each row holds
        part = np.full(len(plan["sequence"]), -1, dtype=np.int32)
        part[sample] = each(pieces.part)
    # Keras resets whole batches: the first batch of every block (lanes: of the rank's
    # file) resets every row.
    if packing == "block":  # the first piece of each block: members B apart in each rank
        heads = np.concatenate([members[::batch_size] for members in dealt.members])
        whole = first[heads] * ranks + dealt.rank[heads]
        whole = whole[whole < batches * ranks]
    else:
        whole = np.arange(ranks if batches else 0)
    plan["reset"][(whole[:, None] * batch_size + np.arange(batch_size)).ravel()] = 1
    return _stateful(plan, cum, batch_size, ranks, batch_lengths, packing, part=part)


def _emit_stream(
    dealt: Dealt,
    rows: np.ndarray,
    position: np.ndarray,
    batch_size: int,
    batch_lengths: BatchLengths,
) -> Plan:
    """Each row one queue of steps: piece p holds steps ``position[p]...`` of its row,
    cut into the batches' chunks wherever they fall."""
    pieces, ranks = dealt.pieces, dealt.ranks
    end = position + pieces.steps
    cum = batch_lengths.covering(int(end.max(initial=0)))
    batches = len(cum) - 1
    first = np.searchsorted(cum, position, side="right") - 1
    last = np.searchsorted(cum, end - 1, side="right") - 1
    count = last - first + 1
    piece = np.repeat(np.arange(len(pieces)), count)
    batch = first[piece] + ragged_arange(count)
    low = np.maximum(position[piece], cum[batch])
    high = np.minimum(end[piece], cum[batch + 1])
    sample = (batch * ranks + dealt.rank[piece]) * batch_size + rows[piece]
    column = low - cum[batch]
    order = np.lexsort((column, sample))  # by row, then column
    segments = Segments(
        sample[order],
        column[order],
        pieces.sequence[piece][order],
        (pieces.start[piece] + low - position[piece])[order],
        (high - low)[order],
    )
    begins = (low == position[piece])[order]
    plan = filler_rows(batches * ranks * batch_size)
    heads = np.flatnonzero(np.diff(segments.row, prepend=-1))
    head_rows = segments.row[heads]
    plan["sequence"][head_rows] = segments.sequence[heads]
    plan["offset"][head_rows] = segments.offset[heads]
    plan["length"][:] = np.bincount(
        segments.row, weights=segments.length, minlength=len(plan["length"])
    )
    plan["reset"][head_rows[begins[heads]]] = 1
    plan["reset"][: min(batches, 1) * ranks * batch_size] = 1  # every rank's first batch
    return _stateful(plan, cum, batch_size, ranks, batch_lengths, "stream", segments=segments)


def _stateful(
    plan: dict[str, Any],
    cum: np.ndarray,
    batch_size: int,
    ranks: int,
    batch_lengths: BatchLengths,
    packing: str,
    **extra: Any,
) -> Plan:
    per_batch = np.diff(cum)
    jittered = batch_lengths.chunking.jitter > 0
    window = int(per_batch.max(initial=1)) if jittered else batch_lengths.chunking.length
    return Plan(
        **plan,
        window=window,
        batch_size=batch_size,
        stateful=True,
        packing=packing,
        batch_length=np.repeat(per_batch, ranks).astype(np.int32) if jittered else None,
        ranks=ranks,
        **extra,
    )
