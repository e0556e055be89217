"""Ranks and parallel streams against a naive reference, the layout's properties, and
``--batch-size auto`` against brute force over every batch size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.errors import UsageError
from tbptt_cli.params import StatefulParams
from tbptt_cli.plan import MAX_AUTO_BATCH
from tbptt_cli.strategies.stateful import Chunking, stateful_plan

Row = tuple[int, int, int, int]  # (sequence or -1, offset, real steps, reset)
FILLER: Row = (-1, 0, 0, 0)


def naive_pieces(lengths: list[int], k: int, streams: int, remainder: str) -> list[list[Row]]:
    """Each sequence's chunks (seq, offset, steps, reset 0), cut into `streams` parts of
    whole chunks: the first parts one chunk longer when they do not divide evenly."""
    pieces = []
    for i, n in enumerate(lengths):
        chunks = [(i, o, min(k, n - o), 0) for o in range(0, n, k)]
        if remainder == "drop":
            chunks = [c for c in chunks if c[2] == k]
        parts = min(streams, len(chunks))
        start = 0
        for p in range(parts):
            size = len(chunks) // parts + (1 if p < len(chunks) % parts else 0)
            pieces.append(chunks[start : start + size])
            start += size
    return pieces


def naive_ranks(pieces: list[list[Row]], ranks: int) -> list[list[list[Row]]]:
    """Longest first (ties in input order), each to the rank with the fewest chunks (ties:
    the lower rank); every rank keeps its pieces in that order."""
    load, owner = [0] * ranks, {}
    longest_first = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
    for i in longest_first:
        r = min(range(ranks), key=lambda r: (load[r], r))
        owner[i], load[r] = r, load[r] + len(pieces[i])
    return [[pieces[i] for i in longest_first if owner[i] == r] for r in range(ranks)]


def naive_rank_batches(pieces: list[list[Row]], b: int, packing: str) -> list[list[Row]]:
    """One rank's batches of b rows, built batch by batch."""
    batches: list[list[Row]] = []
    if packing == "block":
        for start in range(0, len(pieces), b):
            block = pieces[start : start + b]
            for c in range(max(len(p) for p in block)):
                batch = [
                    block[r][c] if r < len(block) and c < len(block[r]) else FILLER
                    for r in range(b)
                ]
                batches.append([(s, o, n, int(c == 0)) for s, o, n, _ in batch])
        return batches
    queue, lanes = list(pieces), [None] * b
    while queue or any(lanes):
        for r in range(b):
            if lanes[r] is None and queue:
                lanes[r] = [queue.pop(0), 0]
        batch = []
        for r in range(b):
            lane = lanes[r]
            if lane is None:
                batch.append((-1, 0, 0, int(not batches)))
                continue
            s, o, n, _ = lane[0][lane[1]]
            batch.append((s, o, n, int(lane[1] == 0 or not batches)))
            lane[1] += 1
            if lane[1] == len(lane[0]):
                lanes[r] = None
        batches.append(batch)
    return batches


def naive_layout(lengths, k, b, packing, ranks, streams, remainder="pad") -> list[Row]:
    """Every rank's batches, padded with filler batches to the longest, then batch k of
    rank r written as batch k * ranks + r."""
    dealt = naive_ranks(naive_pieces(lengths, k, streams, remainder), ranks)
    per_rank = [naive_rank_batches(p, b, packing) if p else [] for p in dealt]
    most = max(len(batches) for batches in per_rank)
    rows: list[Row] = []
    for batch in range(most):
        for batches in per_rank:
            rows += batches[batch] if batch < len(batches) else [FILLER] * b
    return rows


def make(lengths, k, b, packing="block", ranks=1, streams=1, remainder="pad", **extra):
    params = StatefulParams(
        batch_size=str(b),
        packing=packing,
        ranks=ranks,
        streams=streams,
        remainder=remainder,
        **extra,
    )
    ids = [f"s{i}" for i in range(len(lengths))]
    return stateful_plan(np.array(lengths, dtype=np.int64), ids, Chunking(k), params)


def rows_of(plan) -> list[Row]:
    columns = (plan.sequence, plan.offset, plan.length, plan.reset)
    return list(zip(*(c.tolist() for c in columns), strict=True))


layouts = st.fixed_dictionaries(
    {
        "lengths": st.lists(st.integers(0, 40), min_size=1, max_size=9),
        "k": st.integers(1, 7),
        "b": st.integers(1, 4),
        "packing": st.sampled_from(["block", "lanes"]),
        "ranks": st.integers(1, 3),
        "streams": st.integers(1, 3),
        "remainder": st.sampled_from(["pad", "drop"]),
    }
)


def plan_or_none(case: dict):
    """The plan, or None when the input has fewer pieces than ranks (refused, exit 2)."""
    try:
        return make(**case)
    except UsageError as e:
        assert f"--ranks {case['ranks']} needs at least" in str(e)
        return None


@settings(max_examples=200, deadline=None)
@given(layouts)
def test_ranks_and_streams_match_the_naive_reference(case):
    plan = plan_or_none(case)
    if plan is not None:
        assert rows_of(plan) == naive_layout(**case)


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_nothing_lost_or_repeated_and_every_rank_state_continuous(case):
    plan = plan_or_none(case)
    if plan is None:
        return
    lengths, k, b, ranks = case["lengths"], case["k"], case["b"], case["ranks"]
    kept = [n - n % k if case["remainder"] == "drop" else n for n in lengths]
    seen = [np.zeros(n, dtype=int) for n in lengths]
    for s, o, n, _ in rows_of(plan):
        if s >= 0:
            seen[s][o : o + n] += 1
    for counts, n in zip(seen, kept, strict=True):
        assert (counts[:n] == 1).all() and (counts[n:] == 0).all()
    # Every rank the same number of whole batches; rank r's batch j is file batch j*R + r.
    assert plan.samples % (b * ranks) == 0 and (plan.ranks, plan.batch_size) == (ranks, b)
    part = plan.part if plan.part is not None else np.zeros(plan.samples, dtype=int)
    grid = np.stack([plan.sequence, part, plan.offset, plan.length, plan.reset], axis=1)
    grid = grid.reshape(-1, ranks, b, 5)
    for r in range(ranks):
        for row in range(b):
            check_lane(grid[:, r, row].tolist(), k)


def check_lane(lane: list[list[int]], k: int) -> None:
    """One row of one rank over its batches: reset exactly where a piece (a sequence or
    one of its parts) starts, otherwise the same piece at the next step."""
    for j, (s, part, o, n, reset) in enumerate(lane):
        assert n <= k
        if s < 0:
            continue
        before = lane[j - 1] if j else [-1, -1, 0, 0, 0]
        same_piece = before[:2] == [s, part]
        assert reset == int(not same_piece), (j, lane)
        if same_piece:
            assert before[2] + before[3] == o, (j, lane)


def test_streams_cut_one_series_into_parts_side_by_side():
    # 10 chunks of 3 steps (the last one 1 step) as 4 parts of 3, 3, 2 and 2 chunks.
    plan = make([28], 3, 4, streams=4)
    assert plan.streams == 4 and plan.part is not None
    assert plan.sequence.reshape(-1, 4).tolist() == [[0, 0, 0, 0]] * 2 + [[0, 0, -1, -1]]
    assert plan.offset.reshape(-1, 4).tolist() == [[0, 9, 18, 24], [3, 12, 21, 27], [6, 15, 0, 0]]
    assert plan.length.reshape(-1, 4).tolist() == [[3, 3, 3, 3], [3, 3, 3, 1], [3, 3, 0, 0]]
    assert plan.reset.reshape(-1, 4).tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert plan.part.reshape(-1, 4).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, -1, -1]]


def test_ranks_balance_chunks_longest_first():
    # Chunks 5, 1, 4, 3, 3 longest first: 5 to rank 0, 4 to rank 1, 3 to rank 1 (7 > 5),
    # 3 to rank 0 (8), 1 to rank 1 (8).
    plan = make([10, 2, 8, 6, 6], 2, 1, ranks=2)
    by_rank = plan.sequence.reshape(-1, 2)
    assert [sorted(set(by_rank[:, r].tolist()) - {-1}) for r in (0, 1)] == [[0, 4], [1, 2, 3]]
    assert plan.samples == 16 and plan.filler_rows == 0


def brute_force_batch(case: dict, max_filler: float) -> int:
    """The largest B up to 128 (and the pieces per rank) within max_filler, else 1."""
    pieces = len(naive_pieces(case["lengths"], case["k"], case["streams"], case["remainder"]))
    best = 1
    for b in range(1, min(MAX_AUTO_BATCH, -(-pieces // case["ranks"])) + 1):
        plan = make(**{**case, "b": b})
        if plan.filler_rows <= max_filler * plan.samples:
            best = b
    return best


@settings(max_examples=120, deadline=None)
@given(
    layouts.filter(lambda case: any(case["lengths"])),
    st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]),
    st.sampled_from(["block", "lanes", "stream"]),
)
def test_auto_batch_size_is_the_brute_force_choice(case, max_filler, packing):
    case = {**case, "packing": packing, "b": "auto"}
    if packing == "stream":
        case.update(streams=1, remainder="pad")
    plan = plan_or_none({**case, "max_filler": max_filler})
    if plan is None:
        return
    assert plan.batch_size == brute_force_batch(case, max_filler)


def test_auto_batch_size_for_a_ragged_panel_is_not_one():
    lengths = np.random.default_rng(3).integers(200, 900, size=40).tolist()  # 4..18 chunks
    # Longest first: blocks of similar lengths, queues whose rows end together.
    for packing, size in (("block", 6), ("lanes", 25), ("stream", 27)):
        plan = make(lengths, 50, "auto", packing=packing)
        assert (plan.batch_size, plan.warnings) == (size, ()) and plan.filler_share <= 0.1
    assert make(lengths, 50, "auto", max_filler=0.3).batch_size == 23
    none = make(lengths, 50, "auto", max_filler=0)  # every block holds a shorter sequence
    assert none.batch_size == 1 and "--packing lanes" in none.warnings[0]


def test_auto_streams_make_a_useful_batch_of_one_series():
    plan = make([1000], 10, "auto", streams="auto")
    assert plan.streams == plan.batch_size >= 8 and plan.filler_share <= 0.1
    assert plan.warnings == ()
    alone = make([1000], 10, "auto")
    assert alone.batch_size == 1 and "--streams auto" in alone.warnings[0]


def test_a_given_batch_size_takes_the_fewest_streams_that_fill_it():
    plan = make([960], 10, 8, streams="auto")  # 96 chunks: 8 streams of 12 fill 8 rows
    assert (plan.streams, plan.filler_rows) == (8, 0)


def test_a_filler_share_equal_to_max_filler_is_allowed():
    # Chunks 2 and 1 side by side: 1 filler row of 4 is exactly 25%.
    assert make([2, 1], 1, "auto", max_filler=0.25).batch_size == 2
    assert make([2, 1], 1, "auto", max_filler=0.24).batch_size == 1
