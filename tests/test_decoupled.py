"""decoupled: TBPTT(k1, k2) windows, with and without overlap, and their loss masks."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.materialize import gather
from tbptt_cli.params import DecoupledParams
from tbptt_cli.plan import Plan
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.decoupled import plan_decoupled
from tbptt_cli.strategies.stateful import Chunking, stateful_plan


def ramp(lengths: list[int]) -> SequenceSet:
    """Sequence i holds 100 i + t at step t, so every value names its source step."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate([100.0 * i + np.arange(n) for i, n in enumerate(lengths)] + [[]])
    return SequenceSet.from_offsets(values, offsets, ids=[f"s{i}" for i in range(len(lengths))])


def rows(plan: Plan) -> list[tuple[int, ...]]:
    columns = (plan.sequence, plan.offset, plan.length, plan.lead, plan.reset)
    return [tuple(int(v) for v in row) for row in zip(*columns, strict=True)]


def trained(plan: Plan, lengths: np.ndarray) -> np.ndarray:
    """How often each source step of each sequence is a loss target, from the plan fields."""
    counts = [np.zeros(int(n), dtype=np.int64) for n in lengths]
    assert plan.loss_from is not None
    for seq, offset, length, lead in zip(
        plan.sequence, plan.offset, plan.length, plan.lead, strict=True
    ):
        if seq < 0:
            continue
        t = np.arange(max(plan.loss_from, lead), lead + length)
        np.add.at(counts[seq], offset + (t - lead), 1)
    return np.concatenate(counts + [np.zeros(0, dtype=np.int64)])


def test_overlap_rows_are_windows_ending_every_stride() -> None:
    plan = plan_decoupled(ramp([7, 5]), DecoupledParams(k1=4, k2=2, stride=2))
    # (sequence, offset, length, lead, reset): windows end at 2, 4, 6, 8 (past the end).
    assert rows(plan) == [
        (0, 0, 2, 2, 1),
        (0, 0, 4, 0, 1),
        (0, 2, 4, 0, 1),
        (0, 4, 3, 0, 1),
        (1, 0, 2, 2, 1),
        (1, 0, 4, 0, 1),
        (1, 2, 3, 0, 1),
    ]
    assert (plan.window, plan.loss_from, plan.stateful) == (4, 2, False)
    assert (plan.packing, plan.order, plan.batch_size) == (None, None, 7)
    assert plan.attrs == {"k1": 4, "k2": 2, "stride": 2, "grad_start": 2}
    assert plan.report["decoupled"]["overlap"] is True


def test_overlap_window_contents_and_loss_mask() -> None:
    data = ramp([7, 5])
    plan = plan_decoupled(data, DecoupledParams(k1=4, k2=2, stride=2))
    slab = gather(plan, data, 0, plan.samples, np.dtype("float64"))
    assert slab.X[:4, :, 0].tolist() == [[0, 0, 0, 1], [0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 0]]
    assert slab.mask[:4].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert slab.loss_mask is not None
    assert slab.loss_mask[:4].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0]]


def test_overlap_remainder_drop_and_error() -> None:
    data = ramp([7, 4])
    drop = plan_decoupled(data, DecoupledParams(k1=4, k2=2, stride=2, remainder="drop"))
    assert rows(drop) == [
        (0, 0, 2, 2, 1),
        (0, 0, 4, 0, 1),
        (0, 2, 4, 0, 1),
        (1, 0, 2, 2, 1),
        (1, 0, 4, 0, 1),
    ]
    with pytest.raises(InputDataError, match="'s0' has 7 steps, not a multiple of the stride 2"):
        plan_decoupled(data, DecoupledParams(k1=4, k2=2, stride=2, remainder="error"))


def test_overlap_batch_size_and_ignored_layout_options() -> None:
    plan = plan_decoupled(
        ramp([6]), DecoupledParams(k1=3, k2=2, stride=1, batch_size=4, packing="lanes")
    )
    # Six windows padded with two filler rows to whole batches of 4.
    assert (plan.samples, plan.batch_size, plan.packing) == (8, 4, None)
    assert plan.sequence.tolist()[6:] == [-1, -1] and plan.length.tolist()[6:] == [0, 0]
    assert any("--packing and --order" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "layout",
    [{}, {"packing": "lanes", "batch_size": 2}, {"remainder": "drop"}, {"order": "sequential"}],
)
def test_no_overlap_is_the_stateful_split_with_a_loss_mask(layout: dict) -> None:
    data = ramp([9, 4, 7])
    params = DecoupledParams(k1=3, k2=1, **layout)
    plan = plan_decoupled(data, params)
    reference = stateful_plan(data.lengths, data.ids, Chunking(3), params)
    for field in fields(Plan):
        if field.name not in ("loss_from", "attrs", "report"):
            expected, found = getattr(reference, field.name), getattr(plan, field.name)
            assert (
                np.array_equal(found, expected)
                if isinstance(found, np.ndarray)
                else (found == expected)
            ), field.name
    assert (plan.loss_from, plan.stateful) == (2, True)
    assert plan.attrs == {"k1": 3, "k2": 1, "stride": 3, "grad_start": 2}


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"k2": 2}, "needs --k1"),
        ({"k1": 4}, "needs --k1"),
        ({"k1": 4, "k2": 5}, "--k2 5 is longer than --k1 4"),
        ({"k1": 4, "k2": 2, "stride": 3}, "--stride 3 with overlapping windows"),
        ({"k1": 4, "k2": 2, "stride": 5}, "--stride 5 is longer than --k1 4"),
        ({"k1": 0, "k2": 0}, "--k1 must be at least 1"),
        ({"k1": 4, "k2": 2, "stride": 0}, "--stride must be at least 1"),
    ],
)
def test_bad_windows_are_usage_errors(params: dict, phrase: str) -> None:
    with pytest.raises(UsageError, match=phrase.replace("-", r"\-")):
        plan_decoupled(ramp([8]), DecoupledParams(**params))


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    k1=st.integers(2, 10),
    data=st.data(),
)
def test_overlap_trains_every_target_exactly_once(lengths: list[int], k1: int, data) -> None:
    k2 = data.draw(st.integers(1, k1))
    stride = data.draw(st.integers(1, min(k2, k1 - 1)))
    remainder = data.draw(st.sampled_from(["pad", "drop"]))
    sequences = ramp(lengths)
    plan = plan_decoupled(
        sequences, DecoupledParams(k1=k1, k2=k2, stride=stride, remainder=remainder)
    )
    counts = trained(plan, sequences.lengths)
    step = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(0, dtype=np.int64)])
    limit = np.repeat([n if remainder == "pad" else n // stride * stride for n in lengths], lengths)
    assert np.array_equal(counts, (step < limit).astype(np.int64))
    assert np.all(plan.reset == 1) and np.all(plan.lead <= plan.loss_from)
    # Window contents: the real steps of every row are the source steps it names.
    slab = gather(plan, sequences, 0, plan.samples, np.dtype("float64"))
    t = np.arange(k1)
    source = plan.offset[:, None] + t - plan.lead[:, None]
    expected = np.where(slab.mask == 1, 100.0 * plan.sequence[:, None] + source, 0.0)
    assert np.array_equal(slab.X[:, :, 0], expected)
    assert np.array_equal(slab.mask.sum(axis=1), plan.length)


def npy(tmp_path: Path, array: np.ndarray) -> Path:
    path = tmp_path / "in.npy"
    np.save(path, array)
    return path


def test_cli_overlap_writes_loss_mask_and_attributes(tmp_path: Path, tbptt) -> None:
    source = npy(tmp_path, np.arange(20, dtype=np.float32).reshape(2, 10))
    out = tmp_path / "dec.h5"
    result = tbptt("decoupled", source, "--k1", 6, "--k2", 3, "--stride", 3, "-o", out)
    assert result.code == 0, result.stderr
    with h5py.File(out) as f:
        names = ("k1", "k2", "stride", "grad_start", "stateful")
        assert [int(f.attrs[k]) for k in names] == [6, 3, 3, 3, 0]
        assert f["X"].shape == (8, 6, 1)
        assert f["X"][1, :, 0].tolist() == [0, 1, 2, 3, 4, 5]
        assert f["X"][3, :, 0].tolist() == [6, 7, 8, 9, 0, 0]
        assert f["loss_mask"][3].tolist() == [0, 0, 0, 1, 0, 0]
        assert f["loss_mask"][:, :3].sum() == 0
        assert int(f["loss_mask"][:].sum()) == 20  # every step of both sequences, once
        assert f["reset"][:].tolist() == [1] * 8
    doc = json.loads((tmp_path / "dec.manifest.json").read_text())
    assert doc["decoupled"] == {
        "k1": 6,
        "k2": 3,
        "stride": 3,
        "grad_start": 3,
        "loss_from": 3,
        "overlap": True,
    }


def test_cli_no_overlap_is_stateful_with_the_last_k2_steps_trained(tmp_path: Path, tbptt) -> None:
    source = npy(tmp_path, np.arange(24, dtype=np.float32).reshape(2, 12))
    out = tmp_path / "dec.h5"
    result = tbptt("decoupled", source, "--k1", 4, "--k2", 1, "--batch-size", 2, "-o", out)
    assert result.code == 0, result.stderr
    with h5py.File(out) as f:
        assert (int(f.attrs["stateful"]), int(f.attrs["batch_size"])) == (1, 2)
        assert int(f.attrs["grad_start"]) == 3
        assert f["sequence"][:].tolist() == [0, 1, 0, 1, 0, 1]
        assert f["X"][2, :, 0].tolist() == [4, 5, 6, 7]
        assert f["loss_mask"][:].tolist() == [[0, 0, 0, 1]] * 6


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--k1", "4", "--k2", "6"], "--k2 6 is longer than --k1 4"),
        (["--k1", "8", "--k2", "2", "--stride", "4"], "--stride 4 with overlapping windows"),
        (["--k2", "2"], "needs --k1"),
    ],
)
def test_cli_bad_windows_exit_2(tmp_path: Path, tbptt, flags: list[str], phrase: str) -> None:
    source = npy(tmp_path, np.zeros((2, 10)))
    result = tbptt("decoupled", source, *flags, "-o", tmp_path / "out.h5")
    assert result.code == 2
    assert phrase in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out.h5").exists()
