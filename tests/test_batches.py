"""BatchFile: an output .h5 read back batch by batch, in stored order, in any process."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.batches import Batch, BatchFile
from tbptt_cli.errors import InputDataError, InputMissingError

# 6 sequences of 20 steps, 2 features; every value tells where it came from.
SEQUENCES, STEPS = 6, 20


def source() -> np.ndarray:
    i, t = np.meshgrid(np.arange(SEQUENCES), np.arange(STEPS), indexing="ij")
    return np.stack([1000.0 * i + t, -(1000.0 * i + t)], axis=-1)


@pytest.fixture
def written(tmp_path, tbptt):
    """``written(*options)``: split the source with these options; the .h5 path."""

    def write(*options: object, name: str = "out.h5") -> Path:
        np.save(tmp_path / "data.npy", source())
        out = tmp_path / name
        result = tbptt("split", tmp_path / "data.npy", "--length", 6, *options, "-q", "-o", out)
        assert result.code == 0, result.stderr
        return out

    return write


def test_batches_come_in_stored_order_with_their_rows(written):
    path = written("--batch-size", 4, "--target", "x1")
    batches = BatchFile(path)
    with h5py.File(path) as f:
        stored = {name: f[name][:] for name in ("X", "y", "mask", "reset", "sequence", "offset")}
    assert len(batches) == len(stored["X"]) // 4 == 8
    seen = list(batches)
    assert [b.index for b in seen] == list(range(8))
    for name in ("X", "y", "mask", "sequence", "offset"):
        assert np.array_equal(np.concatenate([getattr(b, name) for b in seen]), stored[name])
    reset = np.concatenate([b.reset for b in seen])
    assert reset.dtype == bool and np.array_equal(reset, stored["reset"] == 1)
    first = seen[0]
    assert first.rows == 4 and first.length == 6 and first.loss_mask is None
    assert first.X.shape == (4, 6, 1) and first.y is not None and first.y.shape == (4, 6, 1)
    # Row r of batch 1 continues row r of batch 0: same sequence, 6 steps further, no reset.
    second = seen[1]
    assert np.array_equal(second.sequence, first.sequence)
    assert np.array_equal(second.offset, first.offset + 6) and not second.reset.any()
    assert first.reset.all()
    assert second.X[:, 0, 0].tolist() == [1000.0 * s + 6 for s in second.sequence]


def test_reset_rows_are_where_a_lane_takes_a_new_sequence(tmp_path, tbptt):
    lengths = np.array([20, 6, 12, 6, 18, 6])
    np.savez(
        tmp_path / "ragged.npz",
        values=np.arange(lengths.sum(), dtype=float)[:, None],
        lengths=lengths,
    )
    out = tmp_path / "lanes.h5"
    result = tbptt(
        "split",
        tmp_path / "ragged.npz",
        "--length",
        6,
        "--batch-size",
        2,
        "--packing",
        "lanes",
        "-q",
        "-o",
        out,
    )
    assert result.code == 0, result.stderr
    batches = list(BatchFile(out))
    assert [b.reset.astype(int).tolist() for b in batches] == [
        [1, 1],
        [0, 0],
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
    ]
    # Longest first (4, 3, 2 and 1 chunks): lane 1 runs sequences 4, 2, 5 back to back,
    # lane 0 sequences 0, 1, 3; a reset row starts a sequence.
    assert [int(b.sequence[1]) for b in batches] == [4, 4, 4, 2, 2, 5]
    assert [int(b.sequence[0]) for b in batches] == [0, 0, 0, 0, 1, 3]
    for batch in batches:
        real = batch.sequence >= 0
        assert np.array_equal(batch.reset[real], batch.offset[real] == 0)
    assert batches[3].X[:, 0, 0].tolist() == [18.0, 26.0]  # sequence 2 starts at step 26


def test_attributes_and_indexing(written):
    batches = BatchFile(written("--batch-size", 2))
    assert batches.batch_size == 2 and batches.window == 6 and batches.stateful
    assert batches.attrs["format"] == "tbptt" and batches.attrs["features"] == ["x0", "x1"]
    assert batches.attrs["strategy"] == "split" and batches.attrs["params"]["split"]["length"] == 6
    assert not batches.has_target and batches[0].y is None
    last = batches[len(batches) - 1]
    assert batches[-1].index == last.index == len(batches) - 1
    assert np.array_equal(batches[-1].X, last.X)
    with pytest.raises(IndexError, match=r"batch 12 out of range: .* has 12 batches"):
        batches[len(batches)]
    with pytest.raises(IndexError):
        batches[-13]
    assert repr(batches).endswith("batches=12, batch_size=2)")


def test_variable_length_batches_are_trimmed(written):
    path = written("--batch-size", 2, "--jitter", 2, "--seed", 3)
    batches = BatchFile(path)
    with h5py.File(path) as f:
        batch_length, X, mask = f["batch_length"][:], f["X"][:], f["mask"][:]
    assert len(set(batch_length.tolist())) > 1, "the seed should draw different lengths"
    assert batches.batch_length is not None and len(batches) == len(batch_length)
    for batch in batches:
        k, steps = batch.index, int(batch_length[batch.index])
        assert batch.length == steps and batch.X.shape == (2, steps, 2)
        assert np.array_equal(batch.X, X[2 * k : 2 * k + 2, :steps])
        assert np.array_equal(batch.mask, mask[2 * k : 2 * k + 2, :steps])
    # Nothing real is cut off: the trimmed masks hold every real step of the file.
    assert sum(int(b.mask.sum()) for b in batches) == int(mask.sum())


def relabel(path: Path, target: Path, **attrs: object) -> Path:
    """A copy of ``path`` with some root attributes changed."""
    shutil.copy(path, target)
    with h5py.File(target, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
    return target


def test_a_partial_last_batch_is_yielded_as_is(written, tmp_path):
    path = relabel(written("--batch-size", 4), tmp_path / "five.h5", batch_size=5)
    batches = BatchFile(path)
    assert len(batches) == 7  # 32 rows in batches of 5
    assert [b.rows for b in batches] == [5] * 6 + [2]
    assert batches[-1].X.shape == (2, 6, 2)


def test_loss_mask_is_read_when_present(written, tmp_path):
    path = written("--batch-size", 4, "--target", "x1")
    with h5py.File(path, "a") as f:
        loss = f["mask"][:]
        loss[:, :4] = 0
        f.create_dataset("loss_mask", data=loss)
    batch = BatchFile(path)[1]
    assert batch.loss_mask is not None and batch.loss_mask.shape == (4, 6)
    assert np.array_equal(batch.loss_mask, loss[4:8])


def test_the_file_is_opened_lazily_and_pickles_before_and_after_use(written):
    batches = BatchFile(written("--batch-size", 4))
    assert batches._file is None  # __init__ read the attributes and closed the file
    fresh = pickle.loads(pickle.dumps(batches))
    assert np.array_equal(fresh[3].X, batches[3].X)
    assert batches._file is not None
    used = pickle.loads(pickle.dumps(batches))  # the live handle is not part of the pickle
    assert used._file is None and np.array_equal(used[5].mask, batches[5].mask)
    with batches:
        batches[0]
    assert batches._file is None
    assert np.array_equal(batches[2].X, fresh[2].X)  # reopened on demand


def _read_in_child(batches: BatchFile, k: int, queue: multiprocessing.Queue) -> None:
    batch = batches[k]
    queue.put((batch.index, batch.X, batches._pid))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_worker_opens_its_own_handle(written):
    batches = BatchFile(written("--batch-size", 4))
    expected = batches[6].X  # the parent has the file open before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(batches, 6, queue))
    child.start()
    index, X, pid = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert index == 6 and np.array_equal(X, expected) and pid == child.pid
    assert np.array_equal(batches[7].X, BatchFile(batches.path)[7].X)  # the parent still reads


def test_batch_is_a_plain_dataclass():
    batch = Batch(
        0,
        np.zeros((1, 2, 1)),
        None,
        np.ones((1, 2), np.uint8),
        None,
        np.ones(1, bool),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        2,
    )
    assert batch.rows == 1 and pickle.loads(pickle.dumps(batch)).length == 2


def test_files_that_are_not_ours_are_refused(tmp_path, written):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["X"] = np.zeros((2, 3, 1))
    with pytest.raises(
        InputDataError,
        match=r"foreign.h5: not a tbptt output \(root attribute "
        r"format is None, expected 'tbptt'\)",
    ):
        BatchFile(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    with pytest.raises(InputDataError, match=r"notes.h5: not an HDF5 file"):
        BatchFile(text)
    with pytest.raises(InputMissingError, match=r"missing.h5: no such file"):
        BatchFile(tmp_path / "missing.h5")
    newer = relabel(written(), tmp_path / "newer.h5", format_version=2)
    with pytest.raises(InputDataError, match=r"format_version 2 is not supported .*upgrade"):
        BatchFile(newer)


def test_a_damaged_output_is_named_as_such(tmp_path, written):
    bad_json = relabel(written(), tmp_path / "bad_json.h5", features="[x0")
    with pytest.raises(
        InputDataError,
        match=r"bad_json.h5: attribute features is not JSON; "
        r"the file is damaged, write it again",
    ):
        BatchFile(bad_json)
    no_reset = relabel(written(), tmp_path / "no_reset.h5")
    with h5py.File(no_reset, "a") as f:
        del f["reset"]
    with pytest.raises(InputDataError, match=r"no_reset.h5: tbptt output without reset; "):
        BatchFile(no_reset)


def test_the_reader_needs_numpy_and_h5py_only():
    """tbptt_cli.batches imports with the CLI's other dependencies and every framework
    blocked; the framework loaders import theirs only when asked for."""
    blocked = ["click", "yaml", "pyarrow", "torch", "keras", "tensorflow", "jax"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # an import of it raises ImportError\n"
        "import tbptt_cli, tbptt_cli.batches\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'h5py'))[:1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['h5py']"
