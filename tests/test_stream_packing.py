"""``--packing stream``: each row one queue of steps, sequences starting inside chunks,
against a naive step-by-step reference; and the written per-step datasets."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.cli import run_main
from tbptt_cli.errors import UsageError
from tbptt_cli.materialize import step_datasets
from tbptt_cli.params import StatefulParams
from tbptt_cli.strategies.stateful import Chunking, stateful_plan
from tbptt_cli.validate import validate_output

Step = tuple[int, int]  # (sequence, step), (-1, 0) on padding


def naive_queues(lengths: list[int], b: int, ranks: int) -> list[list[list[Step]]]:
    """Sequences longest first (ties in input order), each dealt to the rank with the
    fewest steps so far, then to the row of its rank with the fewest steps so far (ties:
    the lower rank, the lower row)."""
    load, owner = [0] * ranks, {}
    longest_first = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for i in longest_first:
        if lengths[i]:
            r = min(range(ranks), key=lambda r: (load[r], r))
            owner[i], load[r] = r, load[r] + lengths[i]
    queues = [[[] for _ in range(b)] for _ in range(ranks)]
    for i in (i for i in longest_first if i in owner):
        rows = queues[owner[i]]
        row = min(range(b), key=lambda r: (len(rows[r]), r))
        rows[row] += [(i, t) for t in range(lengths[i])]
    return queues


def naive_steps(lengths: list[int], k: int, b: int, ranks: int) -> list[list[Step]]:
    """Row i of rank r's batch j holds steps j*k..(j+1)*k of its queue, written as row
    i of file batch j*ranks + r; every rank padded to the same number of batches."""
    queues = naive_queues(lengths, b, ranks)
    batches = max(-(-len(q) // k) for rows in queues for q in rows)
    out = []
    for j in range(batches):
        for rows in queues:
            for queue in rows:
                part = queue[j * k : (j + 1) * k]
                out.append(part + [(-1, 0)] * (k - len(part)))
    return out


def plan_steps(plan) -> tuple[list[list[Step]], np.ndarray]:
    reset, sequence = step_datasets(plan.pieces(0, plan.samples), plan.samples, plan.window)
    step = np.zeros_like(sequence)
    pieces = plan.segments
    for row, column, offset, n in zip(
        pieces.row, pieces.column, pieces.offset, pieces.length, strict=True
    ):
        step[row, column : column + n] = np.arange(offset, offset + n)
    steps = [
        list(zip(s.tolist(), t.tolist(), strict=True)) for s, t in zip(sequence, step, strict=True)
    ]
    return [[(s, t if s >= 0 else 0) for s, t in row] for row in steps], reset


def make(lengths, k, b, ranks=1, **extra):
    params = StatefulParams(batch_size=str(b), packing="stream", ranks=ranks, **extra)
    ids = [f"s{i}" for i in range(len(lengths))]
    return stateful_plan(np.array(lengths, dtype=np.int64), ids, Chunking(k), params)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=9).filter(lambda x: sum(x) > 0),
    st.integers(1, 7),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_stream_rows_match_the_naive_queues(lengths, k, b, ranks):
    if sum(1 for n in lengths if n) < ranks:
        with pytest.raises(UsageError, match="needs at least"):
            make(lengths, k, b, ranks)
        return
    plan = make(lengths, k, b, ranks)
    steps, step_reset = plan_steps(plan)
    assert steps == naive_steps(lengths, k, b, ranks)
    # step_reset exactly at every sequence's first step; padding only at the end of a row.
    starts = {(s, t) for row in steps for s, t in row if s >= 0 and t == 0}
    flagged = {steps[r][c] for r, c in zip(*np.nonzero(step_reset), strict=True)}
    assert flagged == starts and len(starts) == sum(1 for n in lengths if n)
    real = np.array([[s >= 0 for s, _ in row] for row in steps])
    assert (plan.length == real.sum(axis=1)).all()
    # The row resets when its first step starts a sequence, or in each rank's first batch.
    heads = [row[0] for row in steps]
    expected = [int(t == 0 and s >= 0) for s, t in heads]
    expected[: ranks * b] = [1] * (ranks * b)
    assert plan.reset.tolist() == expected


def test_a_sequence_starts_inside_a_chunk():
    plan = make([5, 2, 4], 3, 1)  # queued longest first: 5, 4 and 2 steps
    steps, step_reset = plan_steps(plan)
    assert steps == [
        [(0, 0), (0, 1), (0, 2)],
        [(0, 3), (0, 4), (2, 0)],
        [(2, 1), (2, 2), (2, 3)],
        [(1, 0), (1, 1), (-1, 0)],
    ]
    assert step_reset.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert plan.reset.tolist() == [1, 0, 0, 1] and plan.length.tolist() == [3, 3, 3, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"remainder": "drop"}, "--packing stream pads only the end of each row"),
        ({"streams": 2}, "--packing stream already queues sequences"),
    ],
)
def test_refused_combinations(extra, message):
    with pytest.raises(UsageError, match=message):
        make([5, 4], 2, 1, **extra)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    lengths = [23, 5, 17, 9, 31, 2]
    sequences = [100.0 * (i + 1) + np.arange(n) for i, n in enumerate(lengths)]
    source = tmp_path / "in.npz"
    np.savez(source, values=np.concatenate(sequences)[:, None], lengths=np.array(lengths))
    out = tmp_path / "out.h5"
    args = ["split", str(source), "--length", "4", "--batch-size", "2", "--packing", "stream"]
    assert run_main([*args, "--jitter", "1.5", "--dtype", "float64", "-q", "-o", str(out)]) == 0
    return source, out, sequences


def test_the_file_rebuilds_every_sequence_from_its_row_streams(written):
    source, out, sequences = written
    with h5py.File(out) as f:
        assert f.attrs["packing"] == "stream" and f["step_sequence"].dtype == np.int64
        X, mask = f["X"][:, :, 0], f["mask"][()].astype(bool)
        step_sequence, step_reset = f["step_sequence"][()], f["step_reset"][()]
        batch_length, batch = f["batch_length"][()], int(f.attrs["batch_size"])
    assert (mask == (step_sequence >= 0)).all()
    found: dict[int, list[float]] = {}
    for row in range(batch):  # each row's steps over the batches, trimmed to their length
        lane = [(batch_length[k], k * batch + row) for k in range(len(batch_length))]
        ids = np.concatenate([step_sequence[s, :n] for n, s in lane])
        values = np.concatenate([X[s, :n] for n, s in lane])
        starts = np.concatenate([step_reset[s, :n] for n, s in lane])
        assert (np.flatnonzero(starts) == np.flatnonzero(np.diff(ids, prepend=-2) != 0)[:-1]).all()
        for i in np.unique(ids[ids >= 0]):
            assert i not in found
            found[int(i)] = values[ids == i].tolist()
    assert found == {i: s.tolist() for i, s in enumerate(sequences)}
    assert validate_output(str(out), None, str(source))["ok"]


def test_validate_finds_broken_per_step_datasets(written):
    source, out, _ = written
    with h5py.File(out, "r+") as f:
        reset, sequence = f["step_reset"][()], f["step_sequence"][()]
        inside = np.argwhere((reset == 0) & (sequence >= 0) & (np.arange(reset.shape[1]) > 0))
        row, column = inside[0]
        reset[row, column] = 1  # a second start inside one sequence
        mid = np.argwhere((reset == 1) & (np.arange(reset.shape[1]) > 0))
        row2, column2 = mid[mid[:, 0] != row][0]
        reset[row2, column2] = 0  # a sequence that starts inside a row without its flag
        f["step_reset"][...] = reset
    problems = validate_output(str(out), None, None)["problems"]
    assert f"sample {row2}: a sequence starts inside the row without step_reset = 1" in problems
    assert any("are in both sample" in p for p in problems)
