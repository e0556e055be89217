"""Every strategy's written arrays against a deliberately naive reference.

The reference is plain Python loops over the input, written from DESIGN.md alone; the
tool's file (X, y, mask, sequence, offset, length, reset) must agree with it exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.cli import run_main

Row = tuple[int, int, int, int]  # (sequence or -1, offset, real steps, reset)


pytestmark = pytest.mark.usefixtures("one_batch_per_chunk_and_slab")


def ragged(lengths: list[int], features: int) -> tuple[list[list[list[float]]], np.ndarray]:
    """Distinct values per step, as nested lists (for the reference) and one array."""
    sequences, counter = [], 1.0
    for length in lengths:
        steps = []
        for _ in range(length):
            steps.append([counter + f / 10 for f in range(features)])
            counter += 1
        sequences.append(steps)
    return sequences, np.array([s for seq in sequences for s in seq], dtype=np.float64)


def run(strategy: list[str], lengths: list[int], features: int) -> tuple[dict, list]:
    sequences, values = ragged(lengths, features)
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "in.npz", Path(folder) / "out.h5"
        np.savez(data, values=values, lengths=np.array(lengths))
        code = run_main(
            [strategy[0], str(data), *strategy[1:], "-q", "--dtype", "float64", "-o", str(out)]
        )
        assert code == 0
        assert_recorded_hash(out)
        with h5py.File(out) as f:
            written = {name: f[name][()] for name in f}
    return written, sequences


def assert_recorded_hash(out: Path) -> None:
    """The sha256 the manifest records (hashed while the file was written) is the file's."""
    doc = json.loads(out.with_suffix(".manifest.json").read_text())
    assert doc["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def longest_first(lengths: list[int], chunk: int) -> list[int]:
    """The sequences in the order they are laid: most chunks first, ties in input order."""
    return sorted(range(len(lengths)), key=lambda i: -math.ceil(lengths[i] / chunk))


def block_rows(lengths: list[int], chunk: int, batch: int) -> list[Row]:
    """Blocks of `batch` sequences (longest first); batch c of a block holds chunk c of each."""
    rows: list[Row] = []
    order = longest_first(lengths, chunk)
    for first in range(0, len(lengths), batch):
        block = order[first : first + batch]
        chunks = max(-(-lengths[i] // chunk) for i in block)
        for c in range(chunks):
            for r in range(batch):
                reset = 1 if c == 0 else 0
                if r < len(block) and c * chunk < lengths[block[r]]:
                    i = block[r]
                    rows.append((i, c * chunk, min(chunk, lengths[i] - c * chunk), reset))
                else:
                    rows.append((-1, 0, 0, reset))
    return rows


def lane_rows(lengths: list[int], chunk: int, batch: int) -> list[Row]:
    """Each row a queue: when its sequence ends, it takes the next one (longest first) and
    resets."""
    lanes: list[list[int] | None] = [None] * batch  # [sequence, next offset]
    waiting = longest_first(lengths, chunk)
    rows: list[Row] = []
    while True:
        batch_rows: list[Row] = []
        for r in range(batch):
            lane = lanes[r]
            if lane is None or lane[1] >= lengths[lane[0]]:
                lane = lanes[r] = [waiting.pop(0), 0] if waiting else None
            if lane is None:  # a filler row; the first batch resets every row
                batch_rows.append((-1, 0, 0, int(not rows)))
                continue
            i, offset = lane
            batch_rows.append((i, offset, min(chunk, lengths[i] - offset), int(offset == 0)))
            lane[1] += chunk
        if all(row[0] == -1 for row in batch_rows):
            return rows
        rows.extend(batch_rows)


def expect(written: dict, rows: list[Row], sequences: list, window: int, shift: int = 0) -> None:
    """Compare every row; ``shift`` 1 means --target next (y is x one step later)."""
    assert written["X"].shape[:2] == (len(rows), window)
    for n, (i, offset, length, reset) in enumerate(rows):
        assert (written["sequence"][n], written["length"][n]) == (i, length), n
        assert written["reset"][n] == reset, n
        for t in range(window):
            real = t < length
            assert written["mask"][n, t] == int(real)
            x = sequences[i][offset + t] if real else [0.0] * written["X"].shape[2]
            assert written["X"][n, t].tolist() == x, (n, t)
            if shift:
                y = sequences[i][offset + t + 1] if real else [0.0] * written["y"].shape[2]
                assert written["y"][n, t].tolist() == y, (n, t)
        if i >= 0:
            assert written["offset"][n] == offset


lengths_st = st.lists(st.integers(1, 12), min_size=1, max_size=6)
SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(lengths_st, st.integers(1, 2), st.sampled_from(["post", "pre"]))
def test_asis(lengths, features, side):
    written, sequences = run(["asis", "--pad-side", side], lengths, features)
    window = max(lengths)
    if side == "post":
        expect(written, [(i, 0, n, 1) for i, n in enumerate(lengths)], sequences, window)
        return
    for i, n in enumerate(lengths):  # pre: the real steps end at the window's end
        assert written["mask"][i].tolist() == [0] * (window - n) + [1] * n
        assert written["X"][i, window - n :].tolist() == sequences[i]
        assert written["reset"][i] == 1


@SETTINGS
@given(
    lengths_st,
    st.integers(1, 5),
    st.integers(1, 4),
    st.sampled_from(["block", "lanes"]),
    st.integers(1, 2),
)
def test_split_with_next_target(lengths, chunk, batch, packing, features):
    lengths = [n + 1 for n in lengths]  # --target next takes one step off each sequence
    written, sequences = run(
        [
            "split",
            "--length",
            str(chunk),
            "--batch-size",
            str(batch),
            "--packing",
            packing,
            "--target",
            "next",
        ],
        lengths,
        features,
    )
    usable = [n - 1 for n in lengths]
    layout = block_rows if packing == "block" else lane_rows
    expect(written, layout(usable, chunk, batch), sequences, chunk, shift=1)


@SETTINGS
@given(lengths_st, st.integers(1, 4))
def test_stepwise(lengths, batch):
    written, sequences = run(["stepwise", "--batch-size", str(batch)], lengths, 1)
    expect(written, block_rows(lengths, 1, batch), sequences, 1)
