"""asis, split and stepwise: plans, the seed's worked examples and the files they make."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tbptt_cli.errors import InputDataError
from tbptt_cli.params import AsisParams
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.basic import plan_asis


def ragged(lengths: list[int], features: int = 1) -> SequenceSet:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.arange(offsets[-1] * features, dtype=np.float64).reshape(-1, features)
    return SequenceSet.from_offsets(values, offsets)


@pytest.mark.parametrize(("side", "lead"), [("post", [0, 0, 0]), ("pre", [2, 0, 4])])
def test_asis_pads_to_the_longest(side, lead):
    plan = plan_asis(ragged([3, 5, 1]), AsisParams(pad_side=side))
    assert plan.window == 5 and plan.samples == 3 and not plan.stateful
    assert plan.length.tolist() == [3, 5, 1]
    assert plan.lead.tolist() == lead
    assert plan.reset.tolist() == [1, 1, 1]


def test_asis_pad_to_and_truncate():
    with pytest.raises(
        InputDataError, match=r"sequence '1' has 5 steps, more than --pad-to 4; pass --truncate"
    ):
        plan_asis(ragged([3, 5]), AsisParams(pad_to=4))
    plan = plan_asis(ragged([3, 5]), AsisParams(pad_to=4, truncate=True))
    assert plan.length.tolist() == [3, 4] and plan.window == 4


@pytest.mark.parametrize("pad_to", [None, 3])
def test_asis_of_empty_sequences_is_refused_as_data(tmp_path, tbptt, pad_to):
    """One step each and --target next leaves nothing: exit 65 saying so, not exit 2
    about a --pad-to nobody passed, nor a file of padding."""
    np.savez(tmp_path / "in.npz", values=np.ones((2, 1)), lengths=[1, 1])
    extra = ["--pad-to", pad_to] if pad_to else []
    result = tbptt("asis", tmp_path / "in.npz", "--target", "next", *extra, "-o", tmp_path / "o.h5")
    assert result.code == 65 and not (tmp_path / "o.h5").exists()
    assert result.stderr.endswith(
        "error: the input has no steps to write: every sequence is empty once --target next "
        "takes 1 off each\n"
    )


def test_asis_says_which_rows_are_padding_alone(tmp_path, tbptt):
    """A sequence left with no step (here by --target next) keeps its row, so that sample
    i is sequence i, and the run says that row holds nothing."""
    np.savez(tmp_path / "in.npz", values=np.arange(6.0)[:, None], lengths=[3, 1, 2])
    result = tbptt("asis", tmp_path / "in.npz", "--target", "next", "-o", tmp_path / "o.h5")
    assert result.code == 0, result.stderr
    assert (
        "warning: 1 sequence(s) have no steps once --target next takes 1 off each: each "
        "is a row of padding alone (mask 0)" in result.stderr
    )
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["mask"][:].sum(axis=1).tolist() == [2, 0, 1]
        assert f["sequence"][:].tolist() == [0, 1, 2]


def test_asis_warns_beyond_400_steps():
    plan = plan_asis(ragged([401]), AsisParams())
    assert "longer than 400 steps" in plan.warnings[0] and "tbptt split" in plan.warnings[0]


def test_worked_example_asis(tmp_path, tbptt):
    np.save(tmp_path / "in.npy", np.random.default_rng(0).normal(size=(100, 25)).astype(np.float32))
    result = tbptt("asis", tmp_path / "in.npy", "-o", tmp_path / "out.h5")
    assert result.code == 0, result.stderr
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["X"].shape == (100, 25, 1)
        assert f["mask"][:].all() and f["reset"][:].all()
        assert f.attrs["stateful"] == 0


def test_worked_example_split(tmp_path, tbptt):
    data = np.random.default_rng(1).normal(size=(100, 50_000)).astype(np.float32)
    np.save(tmp_path / "in.npy", data)
    result = tbptt("split", tmp_path / "in.npy", "--length", 500, "-o", tmp_path / "out.h5")
    assert result.code == 0, result.stderr
    assert "10000 x 500 x 1 float32, batch 100 (100 batches, 0.0% filler), 100 resets" in (
        result.stderr
    )
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["X"].shape == (10000, 500, 1)
        assert f.attrs["batch_size"] == 100
        reset = f["reset"][:].reshape(100, 100)
        assert reset[0].all() and not reset[1:].any()  # one reset per block
        # Row 7 of batch 3 is chunk 3 of sequence 7: the interleaved order.
        assert np.array_equal(f["X"][3 * 100 + 7, :, 0], data[7, 1500:2000])
        assert f["sequence"][3 * 100 + 7] == 7 and f["offset"][3 * 100 + 7] == 1500
        assert f["X"].chunks[0] % 100 == 0
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["layout"]["reset_every"] == 100
    assert manifest["batch_size_hints"] == {"recommended": 100, "required": 100}
    assert manifest["sequences"]["stride"][:3] == [100, 100, 100]
    assert manifest["sequences"]["first_sample"][:3] == [0, 1, 2]


def test_worked_example_stepwise(tmp_path, tbptt):
    data = np.random.default_rng(2).normal(size=(100, 50)).astype(np.float32)
    np.save(tmp_path / "in.npy", data)
    result = tbptt("stepwise", tmp_path / "in.npy", "-o", tmp_path / "out.h5")
    assert result.code == 0, result.stderr
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["X"].shape == (5000, 1, 1)
        assert np.array_equal(f["X"][:, 0, 0].reshape(50, 100).T, data)
        assert f["reset"][:100].all() and not f["reset"][100:].any()


def test_split_ragged_masks_and_targets(tmp_path, tbptt):
    values = np.arange(10, dtype=np.float32)
    np.savez(tmp_path / "in.npz", values=values, lengths=np.array([7, 3]))
    result = tbptt(
        "split",
        tmp_path / "in.npz",
        "--length",
        3,
        "--batch-size",
        2,
        "--target",
        "next",
        "-o",
        tmp_path / "out.h5",
    )
    assert result.code == 0, result.stderr
    with h5py.File(tmp_path / "out.h5") as f:
        # Sequence 0 is 0..6 (loses its last step to the target), sequence 1 is 7..9.
        assert f["X"][:, :, 0].tolist() == [[0, 1, 2], [7, 8, 0], [3, 4, 5], [0, 0, 0]]
        assert f["y"][:, :, 0].tolist() == [[1, 2, 3], [8, 9, 0], [4, 5, 6], [0, 0, 0]]
        assert f["mask"][:].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 0]]
        assert f["sequence"][:].tolist() == [0, 1, 0, -1]


def test_jitter_writes_batch_length(tmp_path, tbptt):
    np.save(tmp_path / "in.npy", np.zeros((4, 400), dtype=np.float32))
    result = tbptt(
        "split",
        tmp_path / "in.npy",
        "--length",
        30,
        "--jitter",
        5,
        "--seed",
        3,
        "-o",
        tmp_path / "out.h5",
    )
    assert result.code == 0, result.stderr
    with h5py.File(tmp_path / "out.h5") as f:
        lengths = f["batch_length"][:]
        assert lengths.sum() >= 400 and f["X"].shape[1] == lengths.max()
        assert (
            f["mask"][:].reshape(-1, 4, lengths.max()).sum(axis=2).max(axis=1).tolist()
            == np.minimum(lengths, 400 - np.concatenate([[0], np.cumsum(lengths)[:-1]])).tolist()
        )


@pytest.mark.parametrize("by", ["sequence", "time"])
def test_validation_split(tmp_path, tbptt, by):
    np.save(tmp_path / "in.npy", np.arange(10 * 100, dtype=np.float32).reshape(10, 100))
    result = tbptt(
        "split",
        tmp_path / "in.npy",
        "--length",
        10,
        "--val-fraction",
        0.2,
        "--val-by",
        by,
        "-o",
        tmp_path / "train.h5",
        "--json",
    )
    assert result.code == 0, result.stderr
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    val = json.loads((tmp_path / "train.val.manifest.json").read_text())
    with h5py.File(tmp_path / "train.h5") as f, h5py.File(tmp_path / "train.val.h5") as g:
        train_steps, val_steps = int(f["mask"][:].sum()), int(g["mask"][:].sum())
        assert train_steps + val_steps == 1000
        if by == "sequence":
            assert manifest["val"]["sequences"] == 2 and val_steps == 200
            assert not set(manifest["sequences"]["id"]) & set(val["sequences"]["id"])
        else:
            assert val_steps == 200 and g["offset"][:].min() == 0
            # Each row's steps in its input sequence: first_step[sequence] + offset.
            assert val["val"]["first_step"] == [80] * 10
            sequence, offset = g["sequence"][:], g["offset"][:]
            rows = sequence >= 0
            first = np.array(val["val"]["first_step"])[sequence[rows]] + offset[rows]
            expected = sequence[rows] * 100 + first  # in.npy's value at (sequence, step)
            assert (g["X"][:, 0, 0][rows] == expected).all()
            train_x = f["X"][:, :, 0][f["mask"][:] == 1]
            val_x = g["X"][:, :, 0][g["mask"][:] == 1]
            assert (train_x % 100 < 80).all() and (val_x % 100 >= 80).all()
