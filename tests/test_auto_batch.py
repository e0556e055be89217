"""``--batch-size auto`` on ragged panels: the choice against brute force over every batch
size with the real planner, and the written file followed row by row across batches."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.cli import run_main
from tbptt_cli.params import StatefulParams
from tbptt_cli.plan import MAX_AUTO_BATCH
from tbptt_cli.strategies.stateful import Chunking, stateful_plan
from tbptt_cli.validate import validate_output


def ragged(kind: str, count: int, seed: int) -> np.ndarray:
    """Sequence lengths of one shape of panel, 1 to 999 steps."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        lengths = rng.integers(20, 900, count)
    elif kind == "lognormal":  # many short, a long tail
        lengths = rng.lognormal(4.5, 0.8, count)
    elif kind == "bimodal":
        lengths = np.where(rng.random(count) < 0.7, rng.normal(80, 15, count), 600)
    else:  # nearly equal, a few outliers
        lengths = np.where(rng.random(count) < 0.9, 300 + rng.integers(-5, 5, count), 40)
    return np.clip(lengths, 1, 999).astype(np.int64)


def plan(lengths: np.ndarray, k: int, batch: int | str, **options: object):
    params = StatefulParams(batch_size=str(batch), **options)  # type: ignore[arg-type]
    ids = [str(i) for i in range(len(lengths))]
    return stateful_plan(lengths, ids, Chunking(k), params)


panels = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["uniform", "lognormal", "bimodal", "outliers"]),
        "count": st.integers(4, 260),
        "seed": st.integers(0, 2**16),
        "k": st.sampled_from([16, 32, 50, 100]),
    }
)


@settings(max_examples=40, deadline=None)
@given(
    panels,
    st.sampled_from(["block", "lanes"]),
    st.sampled_from([0.0, 0.05, 0.1, 0.3]),
    st.sampled_from([1, 1, 2, 3]),
    st.sampled_from([1, 1, "auto"]),
)
def test_auto_takes_the_largest_batch_within_max_filler(panel, packing, max_filler, ranks, streams):
    lengths = ragged(panel["kind"], panel["count"], panel["seed"])
    options = {"packing": packing, "ranks": ranks, "max_filler": max_filler}
    chosen = plan(lengths, panel["k"], "auto", streams=streams, **options)
    options["streams"] = chosen.streams  # the parts --streams auto chose, then every B
    pieces = int(np.count_nonzero((chosen.reset == 1) & (chosen.sequence >= 0)))
    fits = [1]
    for b in range(2, min(MAX_AUTO_BATCH, -(-pieces // ranks)) + 1):
        laid = plan(lengths, panel["k"], b, **options)
        if laid.filler_rows <= max_filler * laid.samples:
            fits.append(b)
    assert chosen.batch_size == fits[-1]
    assert chosen.filler_rows <= max_filler * chosen.samples or chosen.batch_size == 1
    # A batch size given gives the layout auto chose for it.
    given_ = plan(lengths, panel["k"], chosen.batch_size, **options)
    for name in ("sequence", "offset", "length", "reset"):
        assert np.array_equal(getattr(chosen, name), getattr(given_, name))
    # Batch 1 says so, unless each rank has a single chunk (no other batch was possible).
    one = [w for w in chosen.warnings if "--batch-size auto chose 1" in w]
    chunks = int(np.count_nonzero(chosen.sequence >= 0))
    assert bool(one) == (chosen.batch_size == 1 and chunks > ranks)


def test_ragged_walks_get_a_batch_larger_than_one_in_blocks():
    lengths = np.load(Path(__file__).parent.parent / "sample_data" / "walks.npz")["lengths"]
    chosen = plan(lengths, 50, "auto")
    assert (chosen.batch_size, chosen.batches, chosen.warnings) == (7, 32, ())
    assert chosen.filler_share == pytest.approx(18 / 224)
    # In input order the blocks mix lengths: 7 rows would need 33% filler.
    mixed = np.arange(len(lengths)) // 7
    spans = np.array([(-(-lengths[mixed == b] // 50)).max() for b in range(mixed.max() + 1)])
    assert 1 - (-(-lengths // 50)).sum() / (7 * spans.sum()) > 0.3


SHORT = (
    "one sequence fills one row, too short for --streams auto (8 or more chunks per "
    "stream); pass --streams S (S <= its chunks) or a shorter --length"
)


@pytest.mark.parametrize(
    ("steps", "streams", "cure"),
    [
        (100, "auto", SHORT),
        (100, "1", SHORT),
        (400, "1", "one sequence fills one row; --streams auto cuts it into parallel streams"),
    ],
)
def test_one_series_is_told_how_to_get_a_batch(steps, streams, cure):
    # 10 chunks: --streams auto will not make streams of fewer than 8, so it keeps one;
    # telling that user to pass --streams auto (again, or "more --streams") leads nowhere.
    chosen = plan(np.array([steps]), 10, "auto", streams=streams)
    assert chosen.batch_size == 1 and chosen.streams == 1
    assert chosen.warnings == (
        "--batch-size auto chose 1: every larger batch needs more than 10% filler rows "
        f"(--max-filler); {cure}",
    )
    # The cure it names works: streams of the series make a batch larger than 1.
    cured = {"streams": "2"} if cure == SHORT else {"streams": "auto"}
    assert plan(np.array([steps]), 10, "auto", **cured).batch_size > 1


def write(tmp_path: Path, lengths: np.ndarray, *options: object) -> tuple[Path, Path]:
    """Step t of sequence i holds (i, t), so every written step says where it came from."""
    index = np.repeat(np.arange(len(lengths)), lengths)
    steps = np.arange(len(index)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source, out = tmp_path / "in.npz", tmp_path / "out.h5"
    np.savez(source, values=np.stack([index, steps], axis=1).astype(np.float64), lengths=lengths)
    args = ["split", str(source), "--dtype", "float64", "-q", "-o", str(out), *map(str, options)]
    assert run_main(args) == 0
    return source, out


def follow_rows(out: Path) -> dict[int, list[tuple[int, int]]]:
    """Each rank's rows batch after batch, as a stateful RNN carries them: a piece runs from
    a reset to the next one. (first step, steps) of every piece, by sequence."""
    with h5py.File(out) as f:
        X, mask, reset = f["X"][()], f["mask"][()].astype(bool), f["reset"][()]
        sequence, offset = f["sequence"][()], f["offset"][()]
        batch, ranks = int(f.attrs["batch_size"]), int(f.attrs["ranks"])
        block = f.attrs["packing"] == "block"
    window = X.shape[1]
    if block:  # Keras resets whole batches: a batch resets all of its rows or none
        per_rank = reset.reshape(-1, ranks, batch)
        assert (per_rank.min(axis=2) == per_rank.max(axis=2)).all()
    pieces: list[list[np.ndarray]] = []
    for first in range(batch * ranks):  # rank first // batch, row first % batch
        ended = True
        for s in range(first, len(reset), batch * ranks):
            n = int(mask[s].sum())
            assert mask[s].tolist() == [True] * n + [False] * (window - n)  # no gap
            if reset[s]:
                ended = False
                pieces.append([])
            if n == 0:
                ended = True  # a filler row: what comes next in this row must reset
                continue
            assert not ended, (first, s)  # a row never runs into a new piece unreset
            assert X[s, 0].tolist() == [sequence[s], offset[s]]  # the index says so
            pieces[-1].append(X[s, :n])
            ended = n < window  # a padded chunk is its piece's last
    found: dict[int, list[tuple[int, int]]] = {}
    for piece in filter(None, pieces):
        steps = np.concatenate(piece)
        assert (steps[:, 0] == steps[0, 0]).all()  # one sequence ...
        assert (np.diff(steps[:, 1]) == 1).all()  # ... step after step
        found.setdefault(int(steps[0, 0]), []).append((int(steps[0, 1]), len(steps)))
    return found


@pytest.mark.parametrize(
    ("panel", "options"),
    [
        (("lognormal", 90), ["--packing", "block"]),
        (("lognormal", 90), ["--packing", "lanes"]),
        (("bimodal", 60), ["--packing", "block", "--ranks", 2]),
        (("uniform", 5), ["--packing", "lanes", "--ranks", 2, "--streams", "auto"]),
        (("outliers", 30), ["--packing", "block", "--streams", 3, "--remainder", "drop"]),
    ],
)
def test_every_sequence_is_rebuilt_by_following_the_rows(tmp_path, panel, options):
    lengths = ragged(*panel, seed=5)
    source, out = write(tmp_path, lengths, "--length", 16, *options)
    with h5py.File(out) as f:
        assert int(f.attrs["batch_size"]) > 1
    found = follow_rows(out)
    drop = "drop" in options
    for i, n in enumerate(lengths.tolist()):
        kept = n - n % 16 if drop else n
        parts = sorted(found.get(i, []))
        covered = [t for first, steps in parts for t in range(first, first + steps)]
        assert covered == list(range(kept)), i  # every step once, nothing lost or repeated
        if "--streams" not in options:
            assert len(parts) == (1 if kept else 0)  # one piece: state carried throughout
    doc = json.loads(out.with_suffix(".manifest.json").read_text())
    if "--streams" not in options:  # the manifest's rows of each sequence are its rows
        with h5py.File(out) as f:
            sequence = f["sequence"][()]
        table = doc["sequences"]
        for i in range(len(lengths)):
            first, count, stride = (table[key][i] for key in ("first_sample", "samples", "stride"))
            rows = first + stride * np.arange(count)
            assert rows.tolist() == np.flatnonzero(sequence == i).tolist(), i
    assert validate_output(str(out), None, str(source))["ok"]
