"""tbptt_cli.torch: whole rows per DataLoader worker, state carried per row, exact resets.

The strongest check runs one fixed LSTM through the loader, carrying state with
`RowStates` and cutting windows with `reset_segments`, and compares every sequence's
outputs with the same LSTM run over that sequence alone from a zero state. A wrong row,
a missed or misplaced reset, or a batch out of order changes the numbers.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.batches import BatchFile, reset_segments
from tbptt_cli.cli import run_main

if os.environ.get("CI"):
    import torch  # CI installs the test extra, which pins torch: missing must fail, not skip
else:
    torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from tbptt_cli.torch import BatchDataset, RowStates, worker_rows, zero_rows  # noqa: E402

LENGTHS = np.array([23, 7, 30, 12, 6, 18, 25, 9, 14, 40, 11, 5, 20])
WINDOW, BATCH, HIDDEN = 6, 4, 5
pytestmark = [
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:This DataLoader will create .* worker processes:UserWarning"
    ),
]


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(LENGTHS.sum(), 2)), rng.normal(size=(LENGTHS.sum(), 1))


@pytest.fixture(scope="module")
def files(tmp_path_factory, source) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loader")
    values, targets = source
    np.savez(root / "in.npz", values=np.hstack([values, targets]), lengths=LENGTHS)

    def split(name: str, *options: object) -> Path:
        out = root / f"{name}.h5"
        args = ["split", root / "in.npz", "--target", "x2", "--length", WINDOW, *options]
        assert run_main([str(a) for a in (*args, "-q", "-o", out)]) == 0
        return out

    return {
        "block": split("block", "--batch-size", BATCH),
        "lanes": split("lanes", "--batch-size", BATCH, "--packing", "lanes"),
        "jitter": split("jitter", "--batch-size", BATCH, "--jitter", 2, "--seed", 1),
        "stream": split("stream", "--batch-size", BATCH, "--packing", "stream"),
        "ranked": split("ranked", "--batch-size", BATCH, "--packing", "lanes", "--ranks", 2),
    }


@pytest.fixture(scope="module")
def lstm() -> torch.nn.LSTM:
    torch.manual_seed(0)
    return torch.nn.LSTM(2, HIDDEN, batch_first=True)


def direct(lstm, values: np.ndarray) -> dict[int, np.ndarray]:
    """Every sequence run alone from a zero state: the outputs a stateful loop must match."""
    starts = np.concatenate([[0], np.cumsum(LENGTHS)])
    with torch.no_grad():
        return {
            i: lstm(torch.tensor(values[starts[i] : starts[i + 1]], dtype=torch.float32)[None])[0][
                0
            ].numpy()
            for i in range(len(LENGTHS))
        }


def through_loader(lstm, loader: DataLoader, batch_size: int, states=None) -> dict[int, np.ndarray]:
    """Run the loader's items with the state carried per row; each sequence's outputs in
    order, assembled from wherever its steps were (batch, then step)."""
    states = states or RowStates(
        torch.zeros(1, batch_size, HIDDEN), torch.zeros(1, batch_size, HIDDEN)
    )
    records = []
    with torch.no_grad():
        for batch in loader:
            state = states.start(batch)
            pieces = []
            for start, stop in reset_segments(batch.step_reset, batch.length):
                if start and batch.step_reset is not None:
                    state = zero_rows(state, batch.step_reset[:, start].bool())
                out, state = lstm(batch.X[:, start:stop].float(), state)
                pieces.append(out)
            states.end(batch, state)
            out = torch.cat(pieces, dim=1).numpy()
            if batch.step_sequence is not None:
                sequence = batch.step_sequence.numpy()
            else:
                sequence = np.where(batch.mask.numpy() == 1, batch.sequence.numpy()[:, None], -1)
            for row, step in zip(*np.nonzero(sequence >= 0), strict=True):
                records.append((int(sequence[row, step]), batch.index, int(step), out[row, step]))
    records.sort(key=lambda r: r[:3])
    outputs: dict[int, list[np.ndarray]] = {}
    for sequence, _, _, vector in records:
        outputs.setdefault(sequence, []).append(vector)
    return {s: np.stack(v) for s, v in outputs.items()}


def assert_same(got: dict[int, np.ndarray], expected: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for sequence, outputs in expected.items():
        np.testing.assert_allclose(
            got[sequence], outputs, atol=2e-5, err_msg=f"sequence {sequence}"
        )


@pytest.mark.parametrize("name", ["block", "lanes", "jitter", "stream"])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_sequence_gets_exactly_its_own_state(files, source, lstm, name, workers):
    loader = DataLoader(
        BatchDataset(str(files[name])),
        batch_size=None,
        num_workers=workers,
        in_order=workers == 0,  # out of order: each worker's rows are still in order
        multiprocessing_context="fork" if workers else None,
    )
    assert_same(through_loader(lstm, loader, BATCH), direct(lstm, source[0]))


def test_each_rank_reads_its_own_rows_and_together_they_read_all(files, source, lstm):
    expected = direct(lstm, source[0])
    seen: dict[int, np.ndarray] = {}
    for rank in (0, 1):
        dataset = BatchDataset(str(files["ranked"]), rank=rank, world_size=2)
        assert dataset.batches.batch_size == BATCH
        part = through_loader(lstm, DataLoader(dataset, batch_size=None), BATCH)
        assert not set(part) & set(seen)  # no sequence is on both ranks
        seen.update(part)
    assert_same(seen, expected)
    # One reader (world_size 1) takes both ranks' rows of each step: still continuous.
    whole = BatchDataset(str(files["ranked"]))
    assert whole.batches.batch_size == 2 * BATCH
    assert_same(through_loader(lstm, DataLoader(whole, batch_size=None), 2 * BATCH), expected)


def test_batch_k_of_rank_r_is_rows_k_times_r_plus_r(files):
    with h5py.File(files["ranked"]) as f:
        stored = {name: f[name][:] for name in ("X", "reset", "sequence")}
        assert (int(f.attrs["ranks"]), int(f.attrs["batch_size"])) == (2, BATCH)
    ranks = [BatchFile(files["ranked"], rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(stored["X"]) // (2 * BATCH)
    for k in range(len(ranks[0])):
        for r, ranked in enumerate(ranks):
            rows = slice((k * 2 + r) * BATCH, (k * 2 + r + 1) * BATCH)
            batch = ranked[k]
            assert np.array_equal(batch.X, stored["X"][rows])
            assert np.array_equal(batch.reset, stored["reset"][rows] == 1)
            assert np.array_equal(batch.sequence, stored["sequence"][rows])
    assert "rank=1, world_size=2" in repr(ranks[1])
    alone = BatchFile(files["ranked"], rank=1)  # the world size is the file's ranks
    assert alone.world_size == 2 and np.array_equal(alone[3].X, ranks[1][3].X)


def test_rank_arguments_are_checked(files):
    with pytest.raises(
        ValueError,
        match=r"laid out for 2 data-parallel rank\(s\); world_size 3 "
        r"does not divide that: use one of 1, 2",
    ):
        BatchFile(files["ranked"], world_size=3)
    with pytest.raises(ValueError, match=r"laid out for 1 data-parallel rank\(s\); world_size 2"):
        BatchDataset(str(files["lanes"]), rank=1, world_size=2)
    with pytest.raises(ValueError, match=r"^rank 2 is out of range for world_size 2$"):
        BatchFile(files["ranked"], rank=2, world_size=2)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_read_whole_rows_of_every_batch_in_order(files, workers):
    dataset = BatchDataset(str(files["lanes"]))
    items = list(
        DataLoader(dataset, batch_size=None, num_workers=workers, multiprocessing_context="fork")
    )
    count = len(dataset.batches)
    assert len(items) == count * min(workers, BATCH)
    for worker in range(workers):
        mine = [b for b in items if b.worker == worker]
        share = worker_rows(BATCH, worker, workers)
        assert [b.index for b in mine] == list(range(count))  # every batch, in order
        assert all(b.row_slice == share for b in mine)
        for b in mine:
            whole = dataset.batches[b.index]
            assert np.array_equal(b.X.numpy(), whole.X[share])
            assert np.array_equal(b.reset.numpy(), whole.reset[share])
    # The default in-order DataLoader hands batch k's rows over before batch k+1's.
    assert [b.index for b in items[:workers]] == [0] * workers


def test_worker_shares_cover_the_rows_once():
    for rows in (1, 4, 7, 32):
        for workers in (1, 2, 3, 5):
            shares = [worker_rows(rows, w, workers) for w in range(workers)]
            covered = np.concatenate([np.arange(rows)[s] for s in shares])
            assert covered.tolist() == list(range(rows))
            sizes = [s.stop - s.start for s in shares]
            assert max(sizes) - min(sizes) <= 1


def test_more_workers_than_rows_leaves_the_extra_ones_idle(files):
    dataset = BatchDataset(str(files["lanes"]))
    items = list(
        DataLoader(dataset, batch_size=None, num_workers=5, multiprocessing_context="fork")
    )
    assert sorted({b.worker for b in items}) == [0, 1, 2, 3]
    assert all(b.rows == 1 for b in items)


def test_the_dataset_pickles_without_an_open_file(files):
    dataset = BatchDataset(str(files["lanes"]), start=2)
    first = next(iter(dataset))  # the file is open in this process now
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.batches._file is None and copy.start == 2
    assert np.array_equal(next(iter(copy)).X.numpy(), first.X.numpy())
    # An item leaves a worker as numpy arrays and arrives as the same tensors.
    item = pickle.loads(pickle.dumps(first))
    assert type(item) is type(first) and (item.index, item.worker) == (2, 0)
    assert item.reset.dtype == torch.bool and item.step_reset is None
    assert all(torch.equal(getattr(item, n), getattr(first, n)) for n in ("X", "y", "mask"))


@pytest.mark.parametrize("name", ["lanes", "stream"])
def test_a_resumed_epoch_replays_to_the_state_it_had(files, lstm, name):
    """Stop before batch k, start again: replaying from replay_from(k) without training
    gives every carried row the state an uninterrupted pass had at k."""
    path = str(files[name])
    batches = BatchFile(path)
    # The last batch whose resumption replays more than one batch (from a batch before k,
    # so a start one batch late leaves a recent sequence start out: an LSTM forgets).
    k = next(k for k in range(len(batches) - 1, 0, -1) if 0 < batches.replay_from(k) < k - 1)
    carried = batches.carried(k)
    assert carried.any()  # some rows continue a sequence at k
    assert np.array_equal(carried, ~batches[k].reset)

    def states_before(start: int) -> RowStates:
        states = RowStates(torch.zeros(1, BATCH, HIDDEN), torch.zeros(1, BATCH, HIDDEN))
        loader = DataLoader(BatchDataset(path, start=start, stop=k), batch_size=None)
        through_loader(lstm, loader, BATCH, states)
        return states

    uninterrupted, replayed = states_before(0), states_before(batches.replay_from(k))
    assert 0 < batches.replay_from(k) < k
    for full, resumed in zip(uninterrupted.saved, replayed.saved, strict=True):
        np.testing.assert_allclose(resumed[:, carried], full[:, carried], atol=1e-6)
    late = states_before(batches.replay_from(k) + 1)  # one batch too late: some row is wrong
    assert not all(
        np.allclose(a[:, carried], b[:, carried], atol=1e-6)
        for a, b in zip(uninterrupted.saved, late.saved, strict=True)
    )
    resumed = list(BatchDataset(path, start=k))
    assert [b.index for b in resumed] == list(range(k, len(batches)))


def test_a_block_start_needs_no_state(files):
    batches = BatchFile(files["block"])
    starts = [k for k in range(len(batches)) if batches[k].reset.all()]
    assert len(starts) > 1
    for k in starts:
        assert not batches.carried(k).any() and batches.replay_from(k) == k
    inside = starts[1] + 1
    assert batches.carried(inside).all() and batches.replay_from(inside) == starts[1]


def test_batch_ranges_are_checked(files):
    count = len(BatchFile(files["lanes"]))
    with pytest.raises(
        ValueError, match=rf"batches 3 to 2 are not a range of .*lanes.h5's {count}"
    ):
        BatchDataset(str(files["lanes"]), start=3, stop=2)
    with pytest.raises(ValueError, match=rf"pick 0 <= start <= stop <= {count}$"):
        BatchDataset(str(files["lanes"]), stop=count + 1)
    assert list(BatchDataset(str(files["lanes"]), start=count)) == []
