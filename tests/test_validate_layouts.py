"""``tbptt validate`` on files laid out for ranks and parallel streams: what it accepts
and the wrong layouts it catches; and the rebuild of one series from its streams."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.batches import BatchFile
from tbptt_cli.cli import run_main
from tbptt_cli.validate import validate_output

ROW_DATASETS = ("X", "y", "mask", "sequence", "offset", "length", "reset", "part")


def write(tmp_path: Path, lengths: list[int], *options: str) -> tuple[Path, Path]:
    """Sequences of distinct values (sequence i, step t holds 1000 i + t) as NPZ, split."""
    values = np.concatenate([1000.0 * i + np.arange(n) for i, n in enumerate(lengths)])
    source, out = tmp_path / "in.npz", tmp_path / "out.h5"
    np.savez(source, values=values[:, None], lengths=np.array(lengths))
    args = ["split", str(source), "--dtype", "float64", "-q", "-o", str(out), *options]
    assert run_main(args) == 0
    return source, out


def swap_rows(out: Path, a: slice, b: slice) -> None:
    """Exchange two groups of rows in every per-row dataset (a consistent file otherwise)."""
    with h5py.File(out, "r+") as f:
        for name in ROW_DATASETS:
            if name in f:
                data = f[name][()]
                data[a], data[b] = data[b].copy(), data[a].copy()
                f[name][...] = data


def state_problems(out: Path) -> list[str]:
    report = validate_output(str(out), None, None)
    return [p for p in report["problems"] if "state" in p or "row held" in p or "continues" in p]


def test_ranks_file_validates_and_each_rank_reads_continuously(tmp_path):
    lengths = [40, 12, 33, 25, 8, 19, 27]
    source, out = write(tmp_path, lengths, "--length", "5", "--batch-size", "2", "--ranks", "3")
    assert validate_output(str(out), None, str(source))["ok"]
    doc = json.loads(out.with_suffix(".manifest.json").read_text())
    assert (
        doc["layout"]["ranks"] == 3
        and doc["layout"]["batches_per_rank"] * 3 == (doc["layout"]["batches"])
    )
    with h5py.File(out) as f:
        assert (int(f.attrs["ranks"]), int(f.attrs["batch_size"])) == (3, 2)
    per_rank = [list(BatchFile(out, rank=r, world_size=3)) for r in range(3)]
    assert len({len(batches) for batches in per_rank}) == 1  # no rank waits for another
    seen = {}
    for batches in per_rank:
        state: dict[int, tuple[int, int]] = {}  # row -> (sequence, next step)
        for batch in batches:
            for row in range(batch.rows):
                s, o = int(batch.sequence[row]), int(batch.offset[row])
                if s < 0:
                    continue
                assert batch.reset[row] == (state.get(row) != (s, o)), (row, state, s, o)
                steps = batch.X[row, batch.mask[row] == 1, 0] - 1000.0 * s
                assert steps.tolist() == list(range(o, o + len(steps)))
                seen[s] = seen.get(s, 0) + len(steps)
                state[row] = (s, o + len(steps))
    assert seen == dict(enumerate(lengths))
    together = BatchFile(out)
    assert together.batch_size == 6 and len(together) == len(per_rank[0])


def test_a_ranks_file_read_as_one_rank_breaks_state(tmp_path):
    _, out = write(tmp_path, [40, 12, 33, 25], "--length", "5", "--batch-size", "1", "--ranks", "2")
    assert state_problems(out) == []
    with h5py.File(out, "r+") as f:
        f.attrs["ranks"] = 1
    assert any("starts without a reset but the row held" in p for p in state_problems(out))


def test_swapped_rank_batches_are_caught(tmp_path):
    _, out = write(tmp_path, [40, 12, 33, 25], "--length", "5", "--batch-size", "2", "--ranks", "2")
    swap_rows(out, slice(4, 6), slice(6, 8))  # batch 1 of rank 0 <-> batch 1 of rank 1
    found = state_problems(out)
    assert any("(batch 2, rank 0, row 0)" in p for p in found), found


def test_uneven_ranks_are_refused(tmp_path):
    _, out = write(tmp_path, [10, 12, 9], "--length", "5", "--batch-size", "3")
    with h5py.File(out, "r+") as f:
        samples = len(f["sequence"])
        f.attrs["ranks"] = 2
    problems = validate_output(str(out), None, None)["problems"]
    assert (
        f"{samples} samples do not give each of 2 ranks the same number of batches of 3" in problems
    )


@pytest.mark.parametrize("options", [[], ["--jitter", "2"], ["--packing", "lanes"]])
def test_one_series_as_streams_is_rebuilt_exactly(tmp_path, options):
    source, out = write(tmp_path, [997], "--length", "10", "--streams", "auto", *options)
    assert validate_output(str(out), None, str(source))["ok"]
    doc = json.loads(out.with_suffix(".manifest.json").read_text())
    parts = doc["parts"]
    assert doc["sequences"]["parts"] == [len(parts["part"])] == [doc["layout"]["streams"]]
    with h5py.File(out) as f:
        X, mask, part = f["X"][:, :, 0], f["mask"][()].astype(bool), f["part"][()]
    rebuilt = []
    for p, first, count, stride in zip(
        parts["part"], parts["first_sample"], parts["samples"], parts["stride"], strict=True
    ):
        rows = first + stride * np.arange(count)
        assert (part[rows] == p).all()
        rebuilt += X[rows][mask[rows]].tolist()
    assert rebuilt == list(range(997))  # the parts, in order, are the series


def test_a_wrong_parts_table_is_caught(tmp_path):
    _, out = write(tmp_path, [300, 200], "--length", "10", "--streams", "3", "--batch-size", "3")
    manifest = out.with_suffix(".manifest.json")
    doc = json.loads(manifest.read_text())
    doc["parts"]["first_sample"][1] += 1
    manifest.write_text(json.dumps(doc))
    problems = validate_output(str(out), None, None)["problems"]
    assert (
        "sequence '0', part 1: not in samples first_sample 2 + j * stride 3 with 100 steps from 100"
        in problems
    )
    with h5py.File(out, "r+") as f:
        del f["part"]
    problems = validate_output(str(out), None, None)["problems"]
    assert "the manifest lists parts of sequences but the file has no part dataset" in problems
