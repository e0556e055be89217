"""decoupled, domain segments, grid and domain acf against deliberately naive references.

Like test_reference.py (whose layouts this file reuses): plain Python loops over the
input, written from DESIGN.md alone, must agree exactly with the arrays the CLI wrote.
"""

from __future__ import annotations

import csv
import json
import math
import random
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reference import assert_recorded_hash, block_rows, lane_rows, ragged

from tbptt_cli.cli import run_main

# (sequence or -1, offset, real steps, reset, lead: padding before the first real step)
Row = tuple[int, int, int, int, int]
SETTINGS = settings(max_examples=50, deadline=None)
lengths_st = st.lists(st.integers(1, 12), min_size=1, max_size=5)


pytestmark = pytest.mark.usefixtures("one_batch_per_chunk_and_slab")


def read_h5(path: Path) -> dict:
    assert_recorded_hash(path)
    with h5py.File(path) as f:
        return {name: f[name][()] for name in f} | {"attrs": dict(f.attrs)}


def run(command: list[str], args: list[str], values: np.ndarray, lengths: list[int]) -> dict:
    """Write an NPZ, run ``command`` on it in-process, read back every dataset."""
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "in.npz", Path(folder) / "out.h5"
        np.savez(data, values=values, lengths=np.array(lengths))
        code = run_main([*command, str(data), *args, "-q", "--dtype", "float64", "-o", str(out)])
        assert code == 0
        return read_h5(out)


def padded(rows: list[tuple[int, int, int, int]]) -> list[Row]:
    """Rows of test_reference's layouts, which never pad on the left."""
    return [(*row, 0) for row in rows]


def expect(written: dict, rows: list[Row], steps: list, window: int, shift: int = 0) -> None:
    """Every row's real steps sit at ``lead .. lead+length``; shift 1: y is x one step on."""
    features = written["X"].shape[2]
    assert written["X"].shape[:2] == (len(rows), window)
    for n, (i, offset, length, reset, lead) in enumerate(rows):
        assert (written["sequence"][n], written["length"][n], written["reset"][n]) == (
            i,
            length,
            reset,
        ), n
        if i >= 0:
            assert written["offset"][n] == offset, n
        for t in range(window):
            real = lead <= t < lead + length
            assert written["mask"][n, t] == int(real), (n, t)
            x = steps[i][offset + t - lead] if real else [0.0] * features
            assert written["X"][n, t].tolist() == x, (n, t)
            if shift:
                y = steps[i][offset + t - lead + 1] if real else [0.0] * features
                assert written["y"][n, t].tolist() == y, (n, t)


def expect_loss(written: dict, loss_from: int) -> None:
    window = written["X"].shape[1]
    for n in range(len(written["mask"])):
        for t in range(window):
            trains = written["mask"][n, t] == 1 and t >= loss_from
            assert written["loss_mask"][n, t] == int(trains), (n, t)


# decoupled ---------------------------------------------------------------------------------


@SETTINGS
@given(
    lengths_st,
    st.integers(1, 5),
    st.data(),
    st.integers(1, 4),
    st.sampled_from(["block", "lanes"]),
    st.booleans(),
)
def test_decoupled_without_overlap_is_split_with_a_loss_mask(
    lengths, k1, data, batch, packing, explicit_stride
):
    k2 = data.draw(st.integers(1, k1))
    lengths = [n + 1 for n in lengths]  # --target next takes the last step off
    steps, values = ragged(lengths, 2)
    stride = ["--stride", str(k1)] if explicit_stride else []
    written = run(
        ["decoupled"],
        [
            "--k1",
            str(k1),
            "--k2",
            str(k2),
            *stride,
            "--batch-size",
            str(batch),
            "--packing",
            packing,
            "--target",
            "next",
        ],
        values,
        lengths,
    )
    layout = block_rows if packing == "block" else lane_rows
    expect(written, padded(layout([n - 1 for n in lengths], k1, batch)), steps, k1, shift=1)
    expect_loss(written, k1 - k2)
    attrs = written["attrs"]
    assert (attrs["k1"], attrs["k2"], attrs["stride"], attrs["grad_start"]) == (k1, k2, k1, k1 - k2)


def overlapping_rows(lengths: list[int], k1: int, stride: int, drop: bool) -> list[Row]:
    """Windows ending at S, 2S, ... of each sequence in turn; before step 0 is padding."""
    rows: list[Row] = []
    for i, length in enumerate(lengths):
        count = length // stride if drop else math.ceil(length / stride)
        for j in range(count):
            start = (j + 1) * stride - k1
            real = [start + t for t in range(k1) if 0 <= start + t < length]
            rows.append((i, real[0], len(real), 1, real[0] - start))
    return rows


@SETTINGS
@given(lengths_st, st.integers(2, 6), st.data(), st.sampled_from(["pad", "drop"]))
def test_decoupled_with_overlap_trains_every_target_once(lengths, k1, data, remainder):
    k2 = data.draw(st.integers(1, k1))
    stride = data.draw(st.integers(1, min(k1 - 1, k2)))
    lengths = [n + 1 for n in lengths]
    usable = [n - 1 for n in lengths]
    if remainder == "drop" and all(n < stride for n in usable):
        remainder = "pad"  # no window at all would leave nothing to write
    steps, values = ragged(lengths, 1)
    written = run(
        ["decoupled"],
        [
            "--k1",
            str(k1),
            "--k2",
            str(k2),
            "--stride",
            str(stride),
            "--remainder",
            remainder,
            "--target",
            "next",
        ],
        values,
        lengths,
    )
    rows = overlapping_rows(usable, k1, stride, remainder == "drop")
    expect(written, rows, steps, k1, shift=1)
    expect_loss(written, k1 - stride)
    trained = written["loss_mask"].sum(axis=1)
    for i, length in enumerate(usable):  # with pad, each target exactly once
        counted = int(trained[written["sequence"] == i].sum())
        assert counted == (length if remainder == "pad" else length // stride * stride)


# domain segments ---------------------------------------------------------------------------


def segments(seq: list[dict], mode: str, gap: int) -> list[list[int]]:
    """Step numbers of each segment of one sequence, by walking its steps."""
    found: list[list[int]] = []
    current: list[int] = []
    for s, step in enumerate(seq):
        if mode == "gap" and current and step["t"] - seq[s - 1]["t"] > gap:
            found.append(current)
            current = []
        current.append(s)
        if (mode == "col" and step["eos"]) or (mode == "feature" and step["b"] == 2):
            found.append(current)
            current = []
    return found + ([current] if current else [])


def segment_rows(
    table: list[list[dict]], mode: str, gap: int, pad_to: str, overflow: str, side: str
) -> tuple[list[Row], int]:
    pieces = [(i, seg) for i, seq in enumerate(table) for seg in segments(seq, mode, gap)]
    window = max(len(seg) for _, seg in pieces) if pad_to == "max" else int(pad_to)
    rows: list[Row] = []
    for i, seg in pieces:
        if overflow == "drop" and len(seg) > window:
            continue
        parts = [seg[k : k + window] for k in range(0, len(seg), window)]
        for part in parts[:1] if overflow == "truncate" else parts:
            lead = window - len(part) if side == "pre" else 0
            rows.append((i, part[0], len(part), 1, lead))
    return rows, window


def write_csv(path: Path, table: list[list[dict]], shuffle: random.Random) -> list[int]:
    """Rows in a random order; returns the sequences in order of first appearance."""
    lines = [{"id": f"s{i}", **step} for i, seq in enumerate(table) for step in seq]
    shuffle.shuffle(lines)  # --time-col puts each sequence's rows back in order
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "t", "a", "b", "eos"])
        writer.writeheader()
        writer.writerows(lines)
    return list({int(line["id"][1:]): None for line in lines})


step_st = st.fixed_dictionaries(
    {"dt": st.integers(1, 4), "b": st.integers(0, 2), "eos": st.integers(0, 1)}
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(step_st, min_size=1, max_size=10), min_size=1, max_size=4),
    st.sampled_from(["col", "feature", "gap"]),
    st.integers(1, 3),
    st.sampled_from(["max", "1", "2", "3", "5"]),
    st.sampled_from(["split", "truncate", "drop"]),
    st.sampled_from(["post", "pre"]),
    st.randoms(use_true_random=False),
)
def test_domain_segments(raw, mode, gap, pad_to, overflow, side, shuffle):
    table, a = [], 1
    for seq in raw:
        t, steps = 0, []
        for step in seq:
            t += step["dt"]
            steps.append({"t": t, "a": a, "b": step["b"], "eos": step["eos"]})
            a += 1
        table.append(steps)
    criterion = {
        "col": ["--boundary-col", "eos"],
        "gap": ["--max-gap", str(gap)],
        "feature": ["--boundary-feature", "b", "--boundary-value", "2"],
    }[mode]
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "in.csv", Path(folder) / "out.h5"
        table = [table[i] for i in write_csv(data, table, shuffle)]  # the reader's order
        rows, window = segment_rows(table, mode, gap, pad_to, overflow, side)
        code = run_main(
            [
                "domain",
                "segments",
                str(data),
                "--id-col",
                "id",
                "--time-col",
                "t",
                "--features",
                "a,b",
                *criterion,
                "--pad-to",
                pad_to,
                "--overflow",
                overflow,
                "--pad-side",
                side,
                "-q",
                "--dtype",
                "float64",
                "-o",
                str(out),
            ]
        )
        assert code == (0 if rows else 2)  # every segment dropped: nothing to write
        if not rows:
            return
        written = read_h5(out)
    steps = [[[float(s["a"]), float(s["b"])] for s in seq] for seq in table]
    expect(written, rows, steps, window)


# grid and domain acf -------------------------------------------------------------------------


@SETTINGS
@given(
    lengths_st,
    st.lists(st.integers(1, 6), min_size=1, max_size=3),
    st.integers(1, 4),
    st.sampled_from(["block", "lanes"]),
)
def test_grid_writes_split_with_pad_for_each_length(lengths, chunks, batch, packing):
    steps, values = ragged(lengths, 2)
    layout = block_rows if packing == "block" else lane_rows
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "in.npz", Path(folder) / "grid"
        np.savez(data, values=values, lengths=np.array(lengths))
        code = run_main(
            [
                "grid",
                str(data),
                "--lengths",
                ",".join(map(str, chunks)),
                "--batch-size",
                str(batch),
                "--packing",
                packing,
                "-q",
                "--dtype",
                "float64",
                "-o",
                str(out),
            ]
        )
        assert code == 0
        listed = json.loads((out / "grid.json").read_text())
        for k in sorted(set(chunks)):
            written = read_h5(out / f"len_{k}.h5")
            expect(written, padded(layout(lengths, k, batch)), steps, k)
    assert [(e["length"], e["file"], e["divides"]) for e in listed["grid"]] == [
        (k, f"len_{k}.h5", all(n % k == 0 for n in lengths)) for k in sorted(set(chunks))
    ]


@settings(max_examples=25, deadline=None)
@given(
    st.integers(4, 9),
    st.lists(st.integers(3, 6), min_size=1, max_size=4),
    st.integers(1, 2),
    st.integers(1, 4),
    st.sampled_from(["block", "lanes"]),
)
def test_domain_acf_season_is_split_by_the_period(period, cycles, multiple, batch, packing):
    lengths = [c * period + c % 3 for c in cycles]  # ragged, not all whole periods
    steps = [[[math.sin(2 * math.pi * t / period)] for t in range(n)] for n in lengths]
    values = np.array([s for seq in steps for s in seq], dtype=np.float64)
    written = run(
        ["domain", "acf"],
        [
            "--rule",
            "season",
            "--max-lag",
            str(2 * period),
            "--multiple",
            str(multiple),
            "--batch-size",
            str(batch),
            "--packing",
            packing,
        ],
        values,
        lengths,
    )
    assert written["attrs"]["chosen_lag"] == period
    layout = block_rows if packing == "block" else lane_rows
    expect(written, padded(layout(lengths, period * multiple, batch)), steps, period * multiple)
