"""Sharded outputs without a cluster: the engine's tasks run in this process, so the
shard ranges, the virtual file, merge, validate and the loaders' refusal are checked
quickly (tests/test_dask.py runs the same on a real Dask cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from shard_inputs import (
    READ,
    RUNS,
    InProcess,
    local_and_merged,
    partitioned,
    same_manifest_apart_from_input,
)

from tbptt_cli import cluster, shards
from tbptt_cli.batches import BatchFile
from tbptt_cli.errors import InputMissingError
from tbptt_cli.params import SplitParams
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.basic import plan_split


@pytest.fixture
def sharded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Shards of a few KiB (several per file), tasks run in this process, the inputs."""
    monkeypatch.setattr(cluster, "DaskExecutor", InProcess)
    monkeypatch.setattr(shards, "SHARD_BYTES", 1024)
    monkeypatch.chdir(tmp_path)  # the tests change folders: back to the old one at the end
    return partitioned(tmp_path, nan=True)


@pytest.mark.parametrize("args", RUNS.values(), ids=RUNS.keys())
def test_merged_equals_the_local_run(tbptt, sharded, args) -> None:
    local, remote = local_and_merged(tbptt, sharded, *args)
    assert (remote / "single.h5").read_bytes() == (local / "single.h5").read_bytes()
    same_manifest_apart_from_input(remote / "single.manifest.json", local / "single.manifest.json")
    listed = json.loads((remote / "out.manifest.json").read_text())["output"]["shards"]
    assert listed[0]["rows"][0] == 0 and (len(listed) > 1 or args[0] == "asis")
    with h5py.File(remote / "single.h5") as f:
        assert "y" in f or "--target" not in args
    assert [s["rows"][1] for s in listed[:-1]] == [s["rows"][0] for s in listed[1:]]
    with h5py.File(remote / "out.h5") as virtual, h5py.File(local / "single.h5") as regular:
        assert virtual["X"].is_virtual and virtual.attrs["params"] == regular.attrs["params"]
        for name in regular:
            assert np.array_equal(virtual[name][()], regular[name][()], equal_nan=True), name
    assert tbptt("validate", remote / "out.h5").code == 0


def test_validation_and_grid_outputs_are_sharded_too(tbptt, sharded, monkeypatch) -> None:
    args = ("split", "--length", 6, "--batch-size", 2, "--val-fraction", 0.4, "--nan", "ffill")
    local, remote = local_and_merged(tbptt, sharded, *args)
    assert sorted(p.name for p in remote.glob("*.d")) == ["out.h5.d", "out.val.h5.d"]
    assert tbptt("merge", "out.val.h5", "-o", "val.h5").code == 0
    assert (remote / "val.h5").read_bytes() == (local / "single.val.h5").read_bytes()
    grid = ("grid", "--lengths", "4,9", "--batch-size", 2, "--nan", "zero", *READ)
    assert tbptt(*grid, "-o", "grid", "--engine", "dask").code == 0
    assert tbptt("validate", "grid/len_9.h5").code == 0
    assert tbptt("merge", "grid/len_9.h5", "-o", "len_9.h5").code == 0
    monkeypatch.chdir(local)
    assert tbptt(*grid, "-o", "grid").code == 0
    assert (remote / "len_9.h5").read_bytes() == (local / "grid" / "len_9.h5").read_bytes()


def test_a_missing_or_changed_shard_is_found(tbptt, sharded, monkeypatch) -> None:
    _, remote = local_and_merged(tbptt, sharded, "split", "--length", 7, "--nan", "zero")
    (first, second, *_) = sorted((remote / "out.h5.d").glob("*/part-*.h5"))
    second.write_bytes(second.read_bytes()[:-1] + b"!")
    changed = tbptt("validate", "out.h5")
    assert changed.code == 65 and f"{second.relative_to(remote)}: differs" in changed.stderr
    merge = tbptt("merge", "out.h5", "-o", "again.h5")
    assert merge.code == 65 and "differs from the manifest's sha256" in merge.stderr
    assert not (remote / "again.h5").exists()
    first.unlink()
    name = first.relative_to(remote)
    missing = tbptt("validate", "out.h5", "--json")
    assert missing.code == 65
    assert f"shard {name} is missing; its rows would read as fill values" in missing.stderr
    assert json.loads(missing.stdout)["checked"] == ["manifest", "shards"]
    with pytest.raises(InputMissingError, match=f"shard {name} is missing"):
        BatchFile(remote / "out.h5")
    gone = tbptt("merge", "out.h5", "-o", "again.h5")
    assert gone.code == 66 and f"shard {name} is missing" in gone.stderr
    # Run again: the same command on the same input repairs it.
    again = tbptt(
        "split", *READ, "--length", 7, "--nan", "zero", "-o", "out.h5", "--engine", "dask"
    )
    assert again.code == 0 and tbptt("validate", "out.h5").code == 0


def test_a_new_run_replaces_the_shards_and_leaves_nothing_behind(tbptt, sharded, monkeypatch):
    monkeypatch.chdir(sharded / "dask")
    common = ("split", *READ, "--nan", "zero", "-o", "out.h5", "--engine", "dask")
    assert tbptt(*common, "--length", 5).code == 0
    first = sorted(p.name for p in (sharded / "dask" / "out.h5.d").iterdir())
    assert tbptt(*common, "--length", 6).code == 0
    second = sorted(p.name for p in (sharded / "dask" / "out.h5.d").iterdir())
    assert len(first) == len(second) == 1 and first != second
    assert sorted(p.name for p in (sharded / "dask").iterdir()) == [
        ".out.h5.lock",
        "data",
        "out.h5",
        "out.h5.d",
        "out.manifest.json",
    ]
    with h5py.File("out.h5") as f:
        assert f.attrs["window"] == 6 and shards.missing_sources(f, "out.h5") == []
    local = ("split", "data/part-0.csv", *READ[1:], "--length", 6, "-o", "out.h5")
    assert tbptt(*local).code == 0  # a local run: one file, and the shards go
    assert not Path("out.h5.d").exists()
    Path("out.h5.d").mkdir()
    Path("out.h5.d/notes.txt").write_text("not ours")
    assert tbptt(*local).code == 0
    assert Path("out.h5.d/notes.txt").exists()  # a folder that is not ours is left alone


def test_shard_ranges_cut_between_blocks() -> None:
    lengths = [30, 30, 12, 30, 5, 30]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    data = SequenceSet.from_offsets(np.zeros((offsets[-1], 1)), offsets)
    plan = plan_split(data, SplitParams(length=5, batch_size="2"))
    row = 5 * 4  # bytes of one row of X
    for shard_bytes, expected in [(1 << 20, 1), (6 * 2 * row, 3)]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(shards, "SHARD_BYTES", shard_bytes)
            found = shards.ranges(plan, row)
        assert len(found) == expected
        assert found[0][0] == 0 and found[-1][1] == plan.samples
        for start, _ in found:
            assert start % 2 == 0 and plan.reset[start : start + 2].all()  # a block starts
        assert all(a[1] == b[0] for a, b in zip(found, found[1:], strict=False))


def test_without_dask_the_engine_exits_2_naming_the_extra(tbptt, tmp_path, monkeypatch) -> None:
    import sys

    np.save(tmp_path / "in.npy", np.ones((2, 10)))
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    result = tbptt(
        "split", tmp_path / "in.npy", "--length", 5, "-o", tmp_path / "o.h5", "--engine", "dask"
    )
    assert result.code == 2
    assert result.stderr == (
        "tbptt: error: --engine dask needs Dask distributed; install it: "
        "pip install 'tbptt-cli[dask]'\n"
    )


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--scheduler", "local:2"], "--scheduler applies to --engine dask only"),
        (["--engine", "dask", "--scheduler", "host:8786"], "--scheduler must be tcp://HOST:PORT"),
        (["--engine", "dask", "--scheduler", "local:0"], "or local:N"),
        (["--engine", "dask", "--scheduler", "local:2", "-"], "not stdin"),
    ],
)
def test_engine_options_misused(tbptt, tmp_path, flags, phrase) -> None:
    np.save(tmp_path / "in.npy", np.ones((2, 10)))
    source = [] if "-" in flags else [tmp_path / "in.npy"]
    result = tbptt(
        "split",
        *source,
        "--length",
        5,
        "-o",
        tmp_path / "o.h5",
        *flags,
        *(["--format", "npy"] if not source else []),
    )
    assert result.code == 2 and phrase in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) in (["in.npy"], [".o.h5.lock", "in.npy"])


def test_config_environment_json_dry_run_and_inspect(tbptt, sharded, monkeypatch) -> None:
    monkeypatch.chdir(sharded / "dask")
    Path("job.yaml").write_text(
        "strategy: split\ninput: {path: data, format: csv, id_col: sensor, time_col: t, "
        "nan: zero}\nsplit: {length: 6, batch_size: 2}\noutput: {path: out.h5, engine: dask}\n"
    )
    monkeypatch.setenv("TBPTT_SCHEDULER", "local:3")
    dry = tbptt("run", "job.yaml", "-n", "--json")
    assert dry.code == 0 and json.loads(dry.stdout)["plan"][0]["samples"] == 70
    assert sorted(p.name for p in Path().iterdir()) == ["data", "job.yaml"]
    printed = tbptt("run", "job.yaml", "--print-config")
    assert "engine: dask" in printed.stdout and "scheduler: local:3" in printed.stdout
    done = tbptt("run", "job.yaml", "--json")
    summary = json.loads(done.stdout)
    assert done.code == 0 and summary["shards"] == len(list(Path("out.h5.d").glob("*/*.h5")))
    assert f"{summary['shards']} shard(s) in out.h5.d (+ out.manifest.json)" in done.stderr
    doc = json.loads(Path("out.manifest.json").read_text())
    assert doc["input"]["engine"] == {"name": "dask", "scheduler": "local:3"}
    assert doc["params"] == yaml.safe_load(printed.stdout)  # the manifest records the engine
    with h5py.File("out.h5") as f:  # ... and the file does not (its bytes do not depend on it)
        assert "engine" not in json.loads(f.attrs["params"])["output"]
    shown = tbptt("inspect", "out.h5")
    assert f"shards      {summary['shards']} in out.h5.d/" in shown.stderr
    assert "all present" in shown.stderr


def test_progress_counts_parts_read_and_rows_written(tbptt, sharded, monkeypatch) -> None:
    monkeypatch.setattr("tbptt_cli.progress.Bar.__init__.__defaults__", (None, 0.0, 0))
    monkeypatch.chdir(sharded / "dask")
    args = ("split", *READ, "--length", 6, "--nan", "zero", "-o", "out.h5")
    result = tbptt(*args, "--engine", "dask", "--progress")
    assert result.code == 0, result.stderr
    size = sum(p.stat().st_size for p in Path("data").iterdir()) / 1e6
    assert f"\rreading {size / 3:.1f}/{size:.1f} MB  33%" in result.stderr  # one of 3 parts
    samples = json.loads(Path("out.manifest.json").read_text())["layout"]["samples"]
    assert f"/{samples} samples" in result.stderr.split("\rwriting ")[1]


def test_a_long_series_is_loaded_a_window_at_a_time(tbptt, sharded, monkeypatch) -> None:
    """Parts in time order (one per period): each shard loads the rows it writes (and the
    next step its targets read), not the whole series; the bytes are those of a local run."""
    from tbptt_cli import parts

    steps = np.arange(2000)
    lines = [f"s0,{t},{np.sin(t / 7):.6g},{t % 13}" for t in steps]
    (sharded / "local" / "data").write_text("\n".join(["sensor,t,temp,humidity", *lines]) + "\n")
    for k, piece in enumerate(np.array_split(np.array(lines), 3)):  # steps in part order
        text = "\n".join(["sensor,t,temp,humidity", *piece]) + "\n"
        (sharded / "dask" / "data" / f"part-{k}.csv").write_text(text)
    loaded: list[int] = []
    real_load = parts.load

    def counting(spec: parts.Load) -> SequenceSet:
        loaded.append(int(spec.pieces.rows.sum()))
        return real_load(spec)

    monkeypatch.setattr(parts, "load", counting)
    args = ("split", "--length", 10, "--target", "next", "--nan", "zero")
    local, remote = local_and_merged(tbptt, sharded, *args)
    assert (remote / "single.h5").read_bytes() == (local / "single.h5").read_bytes()
    assert len(loaded) > 4 and sum(loaded) < 2000 + 2 * len(loaded)  # a window each
