"""--target next:COL[,COL] and --horizon H: y[t] = x[t+H] of chosen features, which stay
inputs; every sequence loses its last H steps."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.options import Target, parse_target, target_column
from tbptt_cli.sequences import SequenceSet


def ragged(path: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    series = [rng.normal(size=(n, 4)) for n in (17, 9, 30, 3, 12)]
    np.savez(path, values=np.concatenate(series), lengths=[len(s) for s in series])
    return series


def rows(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {name: f[name][:] for name in f} | {"targets": json.loads(f.attrs["targets"])}


@pytest.mark.parametrize(
    ("target", "columns"), [("next", [0, 1, 2, 3]), ("next:x2", [2]), ("next:x3,x0", [3, 0])]
)
@pytest.mark.parametrize("horizon", [1, 2, 5])
def test_every_row_holds_x_and_the_value_h_steps_ahead(tmp_path, tbptt, target, columns, horizon):
    series = ragged(tmp_path / "in.npz")
    out = tmp_path / "o.h5"
    result = tbptt(
        "split", tmp_path / "in.npz", "--length", 4, "--target", target, "--horizon", horizon,
        "--batch-size", 2, "--dtype", "float64", "-o", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    f = rows(out)
    prefix = "next_" if horizon == 1 else f"next{horizon}_"
    assert f["targets"] == [f"{prefix}x{j}" for j in columns]
    assert f["X"].shape[2] == 4 and f["y"].shape[2] == len(columns)
    for r in range(len(f["X"])):  # the naive way, row by row, step by step
        seq, offset, length = f["sequence"][r], f["offset"][r], f["length"][r]
        if seq < 0:
            assert not f["X"][r].any() and not f["y"][r].any()
            continue
        s = series[seq]
        for t in range(f["X"].shape[1]):
            if t < length:
                assert np.array_equal(f["X"][r, t], s[offset + t])
                assert np.array_equal(f["y"][r, t], s[offset + t + horizon, columns])
            else:
                assert not f["X"][r, t].any() and not f["y"][r, t].any()
    lengths = json.loads(out.with_name("o.manifest.json").read_text())["sequences"]["length"]
    assert lengths == [max(len(s) - horizon, 0) for s in series]
    if horizon > 1:
        assert result.stderr.startswith(
            f"target {', '.join(f['targets'])}: y[t] = x[t+{horizon}]; each sequence loses "
            f"its last {horizon} steps\n"
        )
    else:
        assert "target" not in result.stderr
    assert tbptt("validate", out, "--against", tmp_path / "in.npz").code == 0


def test_a_csv_keeps_the_target_columns_as_inputs(tmp_path, tbptt):
    csv = tmp_path / "in.csv"
    csv.write_text("id,t,temp,hum\n" + "".join(f"a,{t},{t},{100 - t}\n" for t in range(10)))
    out = tmp_path / "o.h5"
    args = ("asis", csv, "--id-col", "id", "--time-col", "t", "-o", out)
    assert tbptt(*args, "--target", "next:hum", "--horizon", 3).code == 0
    f = rows(out)
    assert f["X"][0, :, 1].tolist() == [100 - t for t in range(7)]
    assert f["y"][0, :, 0].tolist() == [100 - t for t in range(3, 10)]
    assert f["targets"] == ["next3_hum"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--horizon", 2], 2, "--horizon applies to --target next or next:COL, not --target none"),
        (["--target", "x0", "--horizon", 2], 2, "not --target x0; to predict a column ahead"),
        (["--target", "next", "--horizon", 0], 2, "--horizon must be a positive integer, not 0"),
        (["--target", "next:"], 2, "--target next: names no column; write next:COL[,COL]"),
        (
            ["--target", "next:x9"],
            65,
            "--target next:x9: 'x9' is not a feature (the features are x0, x1, x2, x3)",
        ),
    ],
)
def test_misuse_is_refused(tmp_path, tbptt, args, code, message):
    ragged(tmp_path / "in.npz")
    result = tbptt("split", tmp_path / "in.npz", "--length", 4, "-n", *args)
    assert result.code == code and message in result.stderr and result.stderr.count("\n") == 1


def test_parse_target():
    assert parse_target("next") == Target("next", None, 1)
    assert parse_target("next: a , b,a", 3) == Target("next", ("a", "b"), 3)
    assert parse_target("label") == Target("column", ("label",), 1)
    assert parse_target("none") == Target("none")
    assert [target_column(t) for t in ("none", "next", "next:a", "label")] == [
        None, None, None, "label",
    ]  # fmt: skip


def test_evenly_spaced_target_columns_are_a_view_of_a_mapped_input(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(60.0).reshape(10, 6))
    values = np.load(tmp_path / "v.npy", mmap_mode="r")
    data = SequenceSet.from_offsets(values, np.array([0, 4, 10]))
    for columns in ([1], [0, 2, 4], [5, 3]):
        shifted = data.with_next_target(columns, horizon=2)
        assert np.shares_memory(shifted.targets, values) == (columns != [5, 3])
        assert np.array_equal(shifted.targets, np.asarray(values)[:, columns])
        assert shifted.lengths.tolist() == [2, 4] and shifted.target_shift == 2
