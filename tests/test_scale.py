"""Bounded memory and speed paths: the pyarrow CSV reader, spilling, chunk shapes, slabs."""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from tbptt_cli import hdf5, materialize, progress
from tbptt_cli.cli import run_main
from tbptt_cli.errors import UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.params import SplitParams
from tbptt_cli.readers import delimited, parse_size, read_input, spill
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.basic import plan_split


def long_csv(path, shuffled=False, sequences=7, steps=53):
    rng = np.random.default_rng(1)
    rows = [
        (f"s{i}", t, *np.round(rng.normal(size=2), 5))
        for i in range(sequences)
        for t in range(steps)
    ]
    if shuffled:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    path.write_text("id,t,a,b\n" + "".join(f"{r[0]},{r[1]},{r[2]},{r[3]}\n" for r in rows))
    return path


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("limit", ["1K", "4K"])
def test_spill_and_regrouping_equal_the_read_in_memory(tmp_path, monkeypatch, shuffled, limit):
    """1K: a bucket per sequence or two, read a few rows at a time; 4K: several
    sequences per bucket, and the sequence codes spilled and read back in pieces."""
    if limit == "4K":
        monkeypatch.setattr(spill, "CODES_BUDGET", 64)
        monkeypatch.setattr(spill, "REORDER_ROWS", 50)
    calls = []
    deal = spill._deal
    monkeypatch.setattr(spill, "_deal", lambda *a: calls.append(1) or deal(*a))
    path = long_csv(tmp_path / "in.csv", shuffled)
    opts = InputOptions(path=str(path), id_col="id", time_col="t", target="b", features=("a",))
    want, want_info = read_input(opts)
    got, info = read_input(replace(opts, memory_limit=limit), spill_dir=tmp_path)
    assert got.ids == want.ids and info == want_info
    np.testing.assert_array_equal(got.lengths, want.lengths)
    np.testing.assert_array_equal(np.asarray(got.values), want.values)
    np.testing.assert_array_equal(np.asarray(got.targets), want.targets)
    np.testing.assert_array_equal(np.asarray(got.extra["t"]), want.extra["t"])
    assert isinstance(got.values, np.memmap) and not isinstance(want.values, np.memmap)
    assert calls == ([1] if shuffled else [])  # grouped through buckets
    assert list(tmp_path.iterdir()) == [path]  # spill files are unnamed: nothing left
    ordered = read_input(replace(opts, path=str(long_csv(tmp_path / "o.csv"))))[0]
    order = [want.ids.index(i) for i in ordered.ids]
    np.testing.assert_array_equal(np.asarray(want.subset(np.array(order)).sequence(0)),
                                  ordered.sequence(0))  # fmt: skip


@pytest.mark.parametrize("limit", ["256M", "1K"])
def test_values_read_at_the_output_precision(tmp_path, limit):
    """float32 values are the float64 ones rounded once; the first value float32 cannot
    hold turns the store float64, the rows before it exact (in memory or spilled)."""
    path = long_csv(tmp_path / "in.csv")
    opts = InputOptions(path=str(path), id_col="id", time_col="t", memory_limit=limit)
    wide, _ = read_input(opts, spill_dir=tmp_path)
    narrow, _ = read_input(opts, spill_dir=tmp_path, values_dtype="float32")
    assert narrow.values.dtype == np.float32 and wide.values.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(narrow.values), wide.values.astype(np.float32))
    lines = path.read_text().splitlines()
    lines[300] = lines[300].rsplit(",", 1)[0] + ",1e39"
    path.write_text("\n".join(lines) + "\n")
    widened, _ = read_input(opts, spill_dir=tmp_path, values_dtype="float32")
    wide, _ = read_input(opts, spill_dir=tmp_path)  # one batch: every row came float64
    assert widened.values.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(widened.values), wide.values)


def test_a_clean_file_never_runs_the_precise_walker(tmp_path, monkeypatch):
    def walk(*args):
        raise AssertionError("the stdlib walker ran on a clean file")

    monkeypatch.setattr(delimited, "scan", walk)
    monkeypatch.setattr(delimited, "cell_at", walk)
    data, _ = read_input(InputOptions(path=str(long_csv(tmp_path / "in.csv")), id_col="id"))
    assert data.count == 7 and data.feature_names == ["a", "b"]


def test_a_bad_cell_falls_back_to_the_line_accurate_message(tmp_path, capsys):
    path = long_csv(tmp_path / "in.csv")
    lines = path.read_text().splitlines()
    lines[40] = "s0,39,oops,1"
    path.write_text("\n".join(lines) + "\n")
    code = run_main(["split", str(path), "--id-col", "id", "--length", "5", "-n"])
    assert code == 65
    assert f"{path}:41:3: 'oops' is not a number (column 'a')" in capsys.readouterr().err


def test_output_is_identical_whatever_the_memory_limit(tmp_path):
    path = long_csv(tmp_path / "in.csv", shuffled=True)
    outputs = []
    for limit in ("256M", "1K"):
        out = tmp_path / f"out{limit}.h5"
        args = ["split", str(path), "--id-col", "id", "--time-col", "t", "--length", "10"]
        assert run_main([*args, "-q", "-o", str(out), "--memory-limit", limit]) == 0
        with h5py.File(out) as f:
            outputs.append({name: f[name][()].tobytes() for name in f})
    assert outputs[0] == outputs[1]
    # Same options give the same bytes (--memory-limit is not recorded in the file).
    assert (tmp_path / "out256M.h5").read_bytes() == (tmp_path / "out1K.h5").read_bytes()


def test_memory_limit_parsing():
    assert parse_size("512M") == 512 << 20 and parse_size("2G") == 2 << 30
    assert parse_size("1024") == 1024 and parse_size("1.5k") == 1536
    with pytest.raises(UsageError, match="write it like 512M"):
        parse_size("lots")


def test_bad_memory_limit_is_a_usage_error(tmp_path, capsys):
    path = long_csv(tmp_path / "in.csv")
    assert run_main(["split", str(path), "--length", "5", "--memory-limit", "x", "-n"]) == 2


@pytest.mark.parametrize(("batch", "row_bytes"), [(1, 8), (64, 8192), (128, 400), (7, 3 << 20)])
def test_chunks_are_whole_batches_of_01_to_4_mib(batch, row_bytes):
    rows = hdf5.chunk_rows(batch, row_bytes)
    assert rows % batch == 0 or batch * row_bytes > hdf5.CHUNK_MAX
    assert 0.1 * 2**20 <= rows * row_bytes <= 4 * 2**20 or rows == 1


def test_slabs_and_chunks_in_the_written_file(tmp_path):
    values = np.arange(64 * 1000 * 2, dtype=np.float32).reshape(64 * 1000, 2)
    data = SequenceSet.from_offsets(values, np.arange(65) * 1000)
    plan = plan_split(data, SplitParams(length=100, batch_size="16"))
    written = []
    hdf5.write_h5(tmp_path / "o.h5", plan, data, "float32", "none", {}, written.append)
    assert sum(written) == plan.samples
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["X"].chunks[0] % 16 == 0 and f["mask"].chunks[0] % f["X"].chunks[0] == 0
        np.testing.assert_array_equal(f["X"][0, :, 0], values[:100, 0])
        np.testing.assert_array_equal(f["X"][1, :, 0], values[1000:1100, 0])


def test_gather_full_windows_equal_the_scatter_path():
    values = np.random.default_rng(0).normal(size=(500, 3))
    data = SequenceSet.from_offsets(values, [0, 230, 500])
    plan = plan_split(data, SplitParams(length=50, batch_size="2"))
    slab = materialize.gather(plan, data, 0, plan.samples, np.dtype("float64"))
    for s in range(plan.samples):
        n, seq, off = plan.length[s], plan.sequence[s], plan.offset[s]
        if seq >= 0:
            np.testing.assert_array_equal(slab.X[s, :n], data.sequence(seq)[off : off + n])
        assert not slab.X[s, n:].any() and slab.mask[s].sum() == n


def test_a_plan_for_a_million_sequences():
    lengths = np.random.default_rng(0).integers(1, 60, size=1_000_000)
    data = SequenceSet(
        values=np.zeros((1, 1)),
        starts=np.zeros(len(lengths), dtype=np.int64),
        lengths=lengths,
        ids=[],
        feature_names=["x"],
    )
    # vectorized: seconds; a loop per sequence would hold the suite for an hour
    plan = plan_split(data, SplitParams(length=20, batch_size="128"))
    assert plan.samples % 128 == 0 and (plan.length > 0).sum() == (-(-lengths // 20)).sum()


def test_progress_bar_draws_bytes_and_samples():
    stream = io.StringIO()
    bar = progress.Bar(4_000_000, "reading", stream, delay=0, kind=progress.BYTES)
    bar.tick(1_000_000)
    assert "reading 1.0/4.0 MB  25%" in stream.getvalue() and "MB/s" in stream.getvalue()
    samples = progress.Bar(10, "writing", stream, delay=0)
    samples.tick(5)
    assert "writing 5/10 samples  50%" in stream.getvalue()
    samples.close()
    assert stream.getvalue().endswith("\r")


def test_no_bar_in_a_pipe(tmp_path, capsys):
    path = long_csv(tmp_path / "in.csv")
    assert (
        run_main(
            ["split", str(path), "--id-col", "id", "--length", "5", "-o", str(tmp_path / "o.h5")]
        )
        == 0
    )
    assert "\r" not in capsys.readouterr().err


def test_streamed_output_hash_matches_the_file(tmp_path):
    """The hash computed while writing (uncompressed) is the closed file's sha256, also
    with a part-filled last chunk and targets; two runs give the same bytes."""
    import hashlib
    import json

    values = np.random.default_rng(3).standard_normal((37 * 501, 3)).astype(np.float32)
    source = tmp_path / "in.npy"
    np.save(source, values.reshape(37, 501, 3))
    digests = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.h5"
        code = run_main(
            [
                "split",
                str(source),
                "--length",
                "20",
                "--batch-size",
                "4",
                "--target",
                "next",
                "-o",
                str(out),
                "-q",
            ]
        )
        assert code == 0
        doc = json.loads((tmp_path / f"{run}.manifest.json").read_text())
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        assert doc["output"]["sha256"] == digests[-1]
    assert digests[0] == digests[1]


@pytest.mark.parametrize(
    "command",
    [
        ["split", "--length", "20", "--batch-size", "4", "--target", "next"],
        ["decoupled", "--k1", "6", "--k2", "2", "--stride", "2", "--batch-size", "9"],
        ["stepwise", "--batch-size", "3"],
    ],
)
def test_raw_chunks_and_streamed_hash_over_many_slabs(tmp_path, monkeypatch, command):
    """Tiny chunks and slabs: uncompressed chunks written raw (a zero-padded last one) and
    hashed from memory while the file is written, X first, the rest read back. The arrays
    equal those of the filtered write path, and the manifest's sha256 is the file's."""
    monkeypatch.setattr(hdf5, "CHUNK_TARGET", 4096)
    monkeypatch.setattr(hdf5, "SLAB_TARGET", 20_000)
    values = np.random.default_rng(5).standard_normal((9, 301, 3)).astype(np.float32)
    source = tmp_path / "in.npy"
    np.save(source, values)
    arrays = {}
    for compression in ("none", "gzip:1"):
        out = tmp_path / f"{compression[:4]}.h5"
        args = [command[0], str(source), *command[1:], "--compression", compression]
        assert run_main([*args, "-o", str(out), "-q"]) == 0
        with h5py.File(out) as f:
            assert f["X"].chunks[0] < f["X"].shape[0] // 4  # many chunks ...
            assert f["X"].shape[0] % f["X"].chunks[0]  # ... the last one part-filled
            arrays[compression] = {name: f[name][()] for name in f}
        doc = json.loads(out.with_suffix(".manifest.json").read_text())
        assert doc["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert arrays["none"].keys() == arrays["gzip:1"].keys()
    for name, written in arrays["none"].items():
        np.testing.assert_array_equal(written, arrays["gzip:1"][name], err_msg=name)
    assert run_main(["validate", str(tmp_path / "none.h5"), "--against", str(source)]) == 0


def test_a_slow_output_hash_holds_back_the_reuse_of_its_buffer(tmp_path, monkeypatch):
    """The gather must not refill a buffer the hash has not read yet: with the hash slowed
    down and two buffers, a refill that did not wait would change the recorded sha256."""
    from tbptt_cli import streaming

    advance = streaming.StreamHash._advance

    def slow(self, written, chunks):
        time.sleep(0.01)
        advance(self, written, chunks)

    monkeypatch.setattr(streaming.StreamHash, "_advance", slow)
    monkeypatch.setattr(hdf5, "CHUNK_TARGET", 1)
    monkeypatch.setattr(hdf5, "SLAB_TARGET", 1)
    monkeypatch.setattr(hdf5, "SLABS_AHEAD", 2)
    split_and_check_the_hash(tmp_path, (4, 200, 2), "5")


def test_an_unusual_layout_is_hashed_after_closing(tmp_path, monkeypatch):
    """No streamed hash (StreamHash.start gives up on a layout it does not know): the
    chunks are still written raw, and the closed file is hashed whole."""
    from tbptt_cli import streaming

    monkeypatch.setattr(streaming.StreamHash, "start", classmethod(lambda *args: None))
    monkeypatch.setattr(hdf5, "SLAB_TARGET", 20_000)
    split_and_check_the_hash(tmp_path, (5, 333, 2), "30")


def split_and_check_the_hash(tmp_path, shape, length):
    """`split` of random float32 data: the recorded sha256 is the file's, and the file
    rebuilds its input exactly."""
    source = tmp_path / "in.npy"
    np.save(source, np.random.default_rng(2).standard_normal(shape).astype(np.float32))
    out = tmp_path / "out.h5"
    assert run_main(["split", str(source), "--length", length, "-o", str(out), "-q"]) == 0
    doc = json.loads((tmp_path / "out.manifest.json").read_text())
    assert doc["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert run_main(["validate", str(out), "--against", str(source)]) == 0


@pytest.mark.parametrize("dry_run", [False, True])
def test_background_nan_scan_still_fails_the_run(tmp_path, capsys, dry_run):
    values = np.ones((8, 300, 2), dtype=np.float32)
    values[7, 299, 1] = np.inf  # the very last cell: found after planning and writing
    source = tmp_path / "in.npy"
    np.save(source, values)
    args = ["split", str(source), "--length", "10", "-o", str(tmp_path / "out.h5")]
    code = run_main(args + (["-n"] if dry_run else []))
    assert code == 65
    assert "non-finite value at sequence 7, step 299, feature x1" in capsys.readouterr().err
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == ["in.npy"]  # no output, manifest or temp file


@pytest.mark.parametrize("cell", [(0, 0, 0), (52, 8575, 2), (52, 8576, 0), (63, 19999, 2)])
def test_nan_found_by_the_input_hash_in_any_block(tmp_path, capsys, cell):
    # 15 MB: several blocks of the fused sha256 + NaN/inf pass (arrays.HASH_SCAN_BYTES);
    # the middle cells end the third and start the fourth (1 Mi float32 each).
    values = np.ones((64, 20000, 3), dtype=np.float32)
    values[cell] = np.nan
    source = tmp_path / "in.npy"
    np.save(source, values)
    code = run_main(["split", str(source), "--length", "100", "-o", str(tmp_path / "out.h5")])
    assert code == 65
    sequence, step, feature = cell
    assert (
        f"in.npy: non-finite value at sequence {sequence}, step {step}, feature "
        f"x{feature}; clean the data"
    ) in capsys.readouterr().err
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == ["in.npy"]


def test_fused_hash_covers_trailing_bytes_but_checks_only_the_array(tmp_path):
    source = tmp_path / "in.npy"
    np.save(source, np.ones((4, 5000, 2), dtype=np.float32))
    with open(source, "ab") as f:
        f.write(b"\xff" * 8)  # NaN bit patterns after the array: not part of the data
    out = tmp_path / "out.h5"
    assert run_main(["split", str(source), "--length", "100", "-o", str(out), "-q"]) == 0
    doc = json.loads((tmp_path / "out.manifest.json").read_text())
    assert doc["input"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_gather_into_a_reused_buffer_gives_the_same_rows():
    values = np.arange(2000 * 3, dtype=np.float32).reshape(2000, 3)
    data = SequenceSet.from_offsets(values, np.array([0, 1000, 2000]))
    plan = plan_split(data, SplitParams(length=50, batch_size=2))  # full windows only
    buffer = np.empty(plan.samples * 50 * 3 * 4, dtype=np.uint8)
    fresh = materialize.gather(plan, data, 0, plan.samples, np.dtype("float32"))
    reused = materialize.gather(plan, data, 0, plan.samples, np.dtype("float32"), buffer)
    assert np.shares_memory(reused.X, buffer)
    np.testing.assert_array_equal(reused.X, fresh.X)
    np.testing.assert_array_equal(reused.mask, fresh.mask)
