"""The stateful layout against a deliberately naive batch-by-batch reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import StatefulParams
from tbptt_cli.strategies.stateful import Chunking, stateful_plan


def chunks_of(length: int, k: int, remainder: str) -> list[tuple[int, int]]:
    full = [(j * k, k) for j in range(length // k)]
    tail = length % k
    return full + ([(length - tail, tail)] if tail and remainder == "pad" else [])


def naive_layout(lengths: list[int], k: int, b: int, packing: str, remainder: str) -> list[tuple]:
    """Rows (sequence, offset, length, reset) built the slow obvious way, batch by batch,
    the sequences taken longest first (ties in input order)."""
    chunks = {i: chunks_of(n, k, remainder) for i, n in enumerate(lengths)}
    live = sorted((i for i in chunks if chunks[i]), key=lambda i: -len(chunks[i]))
    rows: list[tuple] = []
    if packing == "block":
        for start in range(0, len(live), b):
            block = live[start : start + b]
            for c in range(max(len(chunks[s]) for s in block)):
                for r in range(b):
                    if r < len(block) and c < len(chunks[block[r]]):
                        offset, n = chunks[block[r]][c]
                        rows.append((block[r], offset, n, int(c == 0)))
                    else:
                        rows.append((-1, 0, 0, int(c == 0)))
        return rows
    queue, lanes, first = list(live), [None] * b, True
    while queue or any(lane is not None for lane in lanes):
        for r in range(b):
            if lanes[r] is None and queue:
                lanes[r] = [queue.pop(0), 0]
        if all(lane is None for lane in lanes):
            break
        for r in range(b):
            lane = lanes[r]
            if lane is None:
                rows.append((-1, 0, 0, int(first)))
                continue
            seq, c = lane
            offset, n = chunks[seq][c]
            rows.append((seq, offset, n, int(c == 0 or first)))
            lane[1] += 1
            if lane[1] == len(chunks[seq]):
                lanes[r] = None
        first = False
    return rows


def plan_rows(plan) -> list[tuple]:
    return list(
        zip(
            plan.sequence.tolist(),
            plan.offset.tolist(),
            plan.length.tolist(),
            plan.reset.tolist(),
            strict=True,
        )
    )


def make(lengths, k, b, packing="block", remainder="pad", **extra):
    params = StatefulParams(batch_size=str(b), packing=packing, remainder=remainder, **extra)
    ids = [f"s{i}" for i in range(len(lengths))]
    return stateful_plan(np.array(lengths, dtype=np.int64), ids, Chunking(k), params)


def test_interleaved_not_sequence_major():
    # A0 B0 | A1 B1 | A2 B2: chunk j+1 of a sequence sits in its row of the next batch.
    plan = make([9, 9], 3, 2)
    assert plan.sequence.tolist() == [0, 1, 0, 1, 0, 1]
    assert plan.offset.tolist() == [0, 0, 3, 3, 6, 6]
    assert plan.reset.tolist() == [1, 1, 0, 0, 0, 0]


def test_block_takes_sequences_longest_first_and_fills_with_filler():
    plan = make([10, 4, 7], 3, 2)  # 4, 2 and 3 chunks: blocks (0, 2) and (1, filler)
    assert plan.sequence.reshape(-1, 2).tolist() == [
        [0, 2],
        [0, 2],
        [0, 2],
        [0, -1],
        [1, -1],
        [1, -1],
    ]
    assert plan.length.reshape(-1, 2).tolist() == [[3, 3], [3, 3], [3, 1], [1, 0], [3, 0], [1, 0]]
    assert plan.offset.reshape(-1, 2)[:, 0].tolist() == [0, 3, 6, 9, 0, 3]
    assert plan.reset.reshape(-1, 2).tolist() == [[1, 1], [0, 0], [0, 0], [0, 0], [1, 1], [0, 0]]


def test_lanes_take_the_next_sequence_with_a_row_reset():
    plan = make([10, 4, 7, 3], 3, 2, packing="lanes")  # 4, 2, 3, 1 chunks: 0, 2, 1, 3
    assert plan.sequence.reshape(-1, 2).tolist() == [[0, 2], [0, 2], [0, 2], [0, 1], [3, 1]]
    assert plan.reset.reshape(-1, 2).tolist() == [[1, 1], [0, 0], [0, 0], [0, 1], [1, 0]]


def test_a_given_batch_size_gives_the_layout_auto_chooses():
    lengths = [120, 30, 300, 75, 210, 60, 280, 45, 150, 90]
    for packing in ("block", "lanes", "stream"):
        chosen = make(lengths, 20, "auto", packing=packing)
        given_ = make(lengths, 20, chosen.batch_size, packing=packing)
        assert chosen.batch_size > 1
        assert plan_rows(chosen) == plan_rows(given_)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    k=st.integers(1, 9),
    b=st.integers(1, 5),
    packing=st.sampled_from(["block", "lanes"]),
    remainder=st.sampled_from(["pad", "drop"]),
)
def test_matches_naive_reference(lengths, k, b, packing, remainder):
    plan = make(lengths, k, b, packing, remainder)
    assert plan_rows(plan) == naive_layout(lengths, k, b, packing, remainder)
    assert plan.samples % b == 0


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=10),
    k=st.integers(1, 8),
    b=st.integers(1, 4),
    packing=st.sampled_from(["block", "lanes"]),
)
def test_every_step_once_and_state_continuity(lengths, k, b, packing):
    plan = make(lengths, k, b, packing)
    seen = [np.zeros(n, dtype=int) for n in lengths]
    for s, o, n in zip(plan.sequence, plan.offset, plan.length, strict=True):
        if s >= 0:
            seen[s][o : o + n] += 1
    assert all((counts == 1).all() for counts in seen)
    rows = plan.sequence.reshape(-1, b)
    offsets, lengths_ = plan.offset.reshape(-1, b), plan.length.reshape(-1, b)
    resets = plan.reset.reshape(-1, b)
    for k_batch in range(1, rows.shape[0]):
        for r in range(b):
            if rows[k_batch, r] >= 0 and not resets[k_batch, r]:
                assert rows[k_batch - 1, r] == rows[k_batch, r]
                assert offsets[k_batch, r] == offsets[k_batch - 1, r] + lengths_[k_batch - 1, r]
            if rows[k_batch, r] >= 0 and rows[k_batch - 1, r] != rows[k_batch, r]:
                assert resets[k_batch, r] == 1


@pytest.mark.parametrize(
    ("lengths", "k", "expected"),
    [
        ([50] * 100, 5, 100),
        ([12] * 7, 4, 7),
        ([8, 8, 8, 8, 4, 4], 4, 2),
        ([5, 9, 13], 4, 1),
        ([20], 5, 1),
    ],
)
def test_auto_batch_size_is_largest_without_filler(lengths, k, expected):
    plan = make(lengths, k, "auto")
    assert plan.batch_size == expected
    assert (plan.sequence >= 0).all()


def test_auto_batch_size_is_capped_at_128():
    lengths = [3] * 1000  # 3 chunks of 1 step each
    assert make(lengths, 1, "auto").batch_size == 128  # 24 filler rows of 1024: 2.3%
    assert make(lengths, 1, "auto", max_filler=0).batch_size == 125
    assert make([3] * 256, 1, "auto", packing="lanes").batch_size == 128


def test_lanes_need_fewer_samples_than_block_for_ragged_input():
    lengths = np.random.default_rng(1).integers(10, 400, size=64).tolist()
    block, lanes = make(lengths, 20, 8, "block"), make(lengths, 20, 8, "lanes")
    assert lanes.samples < block.samples
    assert (lanes.sequence >= 0).sum() == (block.sequence >= 0).sum()


def test_remainder_error_names_the_sequence():
    with pytest.raises(
        InputDataError, match="sequence 's1' has 7 steps, not a multiple of the chunk length 3"
    ):
        make([6, 7], 3, 1, remainder="error")


def test_drop_warns_about_sequences_without_samples():
    plan = make([2, 9], 3, 1, remainder="drop")
    assert plan.sequence.tolist() == [1, 1, 1]
    assert any("1 sequence(s) shorter than one chunk" in w for w in plan.warnings)


def test_sequential_order_needs_batch_size_one():
    with pytest.raises(UsageError, match="only carries state correctly with batch size 1, not 4"):
        make([9, 9], 3, 4, order="sequential")
    plan = make([6, 3], 3, "auto", order="sequential")
    assert plan.batch_size == 1
    assert plan.sequence.tolist() == [0, 0, 1]


@pytest.mark.parametrize("packing", ["block", "lanes"])
def test_jitter_is_seeded_and_continuous(packing):
    def jittered(seed):
        params = StatefulParams(batch_size="3", packing=packing, seed=seed)
        return stateful_plan(
            np.array([300, 180, 240, 90]), list("abcd"), Chunking(20, 4.0, 0.2, seed), params
        )

    plan, again, other = jittered(7), jittered(7), jittered(8)
    assert plan.batch_length is not None and plan.window == plan.batch_length.max()
    assert np.array_equal(plan.batch_length, again.batch_length)
    assert not np.array_equal(plan.batch_length[:5], other.batch_length[:5])
    assert plan.batch_length.min() >= 5 and len(set(plan.batch_length.tolist())) > 3
    per_row = plan.length.reshape(-1, 3)
    assert (per_row <= plan.batch_length[:, None]).all()
    covered = np.zeros(4, dtype=int)
    for s, o, n in zip(plan.sequence, plan.offset, plan.length, strict=True):
        if s >= 0:
            assert o == covered[s]
            covered[s] += n
    assert covered.tolist() == [300, 180, 240, 90]


@pytest.mark.parametrize("packing", ["block", "lanes"])
def test_auto_batch_keeps_max_filler_with_drawn_lengths(packing):
    """auto judges the filler at the nominal length; with --jitter the drawn lengths change
    the chunks of each part (7 steps at 6: parts of 6 and 1 steps, but the first batch draws
    5), so the laid-out plan must be within --max-filler too."""
    params = StatefulParams(batch_size="auto", packing=packing, streams="2")
    plan = stateful_plan(np.array([7]), ["a"], Chunking(6, 0.5, 0.2, 0), params)
    assert plan.batch_length.tolist()[:2] == [5, 6]
    assert plan.filler_rows <= 0.1 * plan.samples
    assert plan.batch_size == 1 and plan.sequence.tolist() == [0, 0, 0]
