"""--engine dask reads what --engine local reads, the same way: one folder of Parquet,
gzip CSV, CSV, Arrow and TSV parts in hive folders, with the rows of every sensor spread
over the parts, read by both engines. The merged output, its manifest, the warnings and
the errors are the local run's. The engine's tasks run in this process
(tests/test_dask.py runs them on a real cluster)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shard_inputs import (
    FORMATS,
    MIXED,
    InProcess,
    both_engines,
    mixed,
    rows_with,
    same_output,
    sensor_rows,
    warnings,
)

from tbptt_cli import cluster, shards
from tbptt_cli import parts as parts_module


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cluster, "DaskExecutor", InProcess)
    monkeypatch.setattr(shards, "SHARD_BYTES", 1024)  # several shards per output
    monkeypatch.chdir(tmp_path)  # the tests change folders: back to the old one at the end
    return tmp_path


RUNS = {
    "scale": ("", "split --length 7 --batch-size 2 --scale standard --val-fraction 0.4"),
    "minmax": ("", "stepwise --batch-size 5 --scale minmax --val-fraction 0.3 --val-by time"),
    "first": ("twice", "split --length 7 --batch-size 2 --duplicates first"),
    "mean": ("twice", "stepwise --batch-size 5 --duplicates mean --target next"),
    "last": ("twice", "split --length 9 --batch-size 3 --duplicates last --packing lanes"),
    "split": ("gaps", "split --length 5 --batch-size 3 --freq 1h --gaps split"),
    "fill": ("gaps", "split --length 5 --batch-size 3 --freq 1h --gaps fill --nan ffill"),
    "ffill": ("nan", "split --length 5 --batch-size 3 --nan ffill --target next"),
    "drop": ("nan", "split --length 5 --batch-size 3 --nan drop --target next"),
    "zero": ("nan", "domain acf --batch-size 3 --nan zero --target humidity"),
    "segments": ("gaps", "domain segments --max-gap 3600 --pad-to max"),
    "report": ("", "split --length 7 --batch-size 2 --report page.html"),
}


@pytest.mark.parametrize("name", RUNS)
def test_the_same_output_as_a_local_run(tbptt, in_process, name) -> None:
    change, command = RUNS[name]
    mixed(in_process, rows_with(change))
    local, remote = both_engines(tbptt, in_process, *command.split(), *MIXED)
    assert local.code == remote.code == 0, remote.stderr
    assert warnings(remote) == warnings(local)
    assert "left out of the features: day (a calendar name)" in local.stderr
    same_output(in_process)
    if name == "report":
        page = (in_process / "dask" / "page.html").read_text()
        assert page == (in_process / "local" / "page.html").read_text()


@pytest.mark.parametrize(
    ("change", "command", "message"),
    [
        ("twice", "split --length 9", "two rows of sequence 's2' have time 2024-01-01T03:00:00"),
        ("gaps", "split --length 5 --freq 1h", "sequence 's2' skips 1 step(s) of --freq 1h"),
        ("nan", "split --length 5", "part-0.parquet row 23: missing value in column 'humidity'"),
        ("large", "split --length 7 --dtype float16", "feature 'humidity' holds 125028, more"),
        ("large", "split --length 7 --dtype float16 -n", "feature 'humidity' holds 125028"),
    ],
)
def test_the_same_errors_as_a_local_run(tbptt, in_process, change, command, message) -> None:
    mixed(in_process, rows_with(change))
    local, remote = both_engines(tbptt, in_process, *command.split(), *MIXED)
    assert local.code == remote.code == 65 and message in local.stderr
    assert remote.stderr == local.stderr
    left = sorted(p.name for p in (in_process / "dask").iterdir())
    assert left == ["data"] if "-n" in command else [".out.h5.lock", "data"]


TOO_LARGE = (
    "tbptt: error: feature 'temp' holds 1e+39, more than float32 can hold (largest "
    "3.40282e+38); pass --dtype float64, or --scale standard\n"
)


@pytest.fixture
def spilled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The dtype of the values pass 1 spilled of each part, in the order they were read."""
    dtypes = []
    scan = parts_module.scan_part

    def recorded(task: parts_module.PartTask) -> parts_module.PartScan:
        found = scan(task)
        dtypes.append(found.shapes[0][1])
        return found

    monkeypatch.setattr(parts_module, "scan_part", recorded)
    return dtypes


@pytest.mark.parametrize(
    ("command", "dtype"),
    [
        ("split --length 7 --batch-size 2", "<f4"),  # only written: at the output's dtype
        ("split --length 7 --batch-size 2 --dtype float16", "<f2"),
        ("split --length 7 --batch-size 2 --scale standard", "<f8"),  # fitted on them
    ],
)
def test_values_kept_at_the_precision_a_local_run_keeps(tbptt, in_process, spilled, command,
                                                        dtype) -> None:  # fmt: skip
    mixed(in_process)
    local, remote = both_engines(tbptt, in_process, *command.split(), *MIXED)
    assert local.code == remote.code == 0, remote.stderr
    assert spilled == [dtype] * len(FORMATS)
    same_output(in_process)


@pytest.mark.parametrize(("remainder", "code"), [("pad", 65), ("drop", 0)])  # drop: not written
def test_a_part_with_a_value_float32_cannot_hold(tbptt, in_process, spilled, remainder,
                                                 code) -> None:  # fmt: skip
    """That part's values are kept as float64 and every load reads the others into
    float64 too: the writer sees the value and refuses it as a local run's does."""
    rows = sensor_rows(np.random.default_rng(0))
    rows += [["short", t, 1e39 if t == 1 else 5.0, 50.0] for t in range(3)]  # not one --length
    mixed(in_process, rows)
    command = ("split", "--length", 7, "--batch-size", 2, "--remainder", remainder, *MIXED)
    local, remote = both_engines(tbptt, in_process, *command)
    assert local.code == remote.code == code
    assert sorted(spilled) == ["<f4"] * (len(FORMATS) - 1) + ["<f8"]
    if code:
        assert remote.stderr == local.stderr == TOO_LARGE
    else:
        same_output(in_process)


def test_rows_out_of_order_without_a_time_column(tbptt, in_process) -> None:
    """Each part watched apart, the watches joined: the same sequence named."""
    mixed(in_process)
    local, remote = both_engines(tbptt, in_process, "split", "data", "--id-col", "sensor",
                                 "--length", 7, "--batch-size", 2)  # fmt: skip
    assert "rows of sequence 's1' are not in order of column 'time'" in local.stderr
    assert warnings(remote) == warnings(local)
    same_output(in_process)


def parts(root: Path, **texts: str) -> None:
    """The same CSV parts ``data/<name>.csv`` for both engines."""
    for side in ("local", "dask"):
        (root / side / "data").mkdir(parents=True)
        for name, text in texts.items():
            (root / side / "data" / f"{name}.csv").write_text(text)


def test_wide_rows_and_array_files(tbptt, in_process) -> None:
    parts(in_process, a="id,1,2,3,4\nx,1,2,3,4\ny,5,6,,\n", b="id,1,2,3,4\nx,7,8,9,1\nz,5,6,7,\n")
    for side in ("local", "dask"):
        np.save(in_process / side / "a.npy", np.arange(60.0).reshape(3, 20))
    local, remote = both_engines(tbptt, in_process, "asis", "data", "--layout", "wide",
                                 "--id-col", "id")  # fmt: skip
    assert local.code == remote.code == 0
    same_output(in_process)  # two rows of id x: two sequences, as a local run reads them
    local, remote = both_engines(tbptt, in_process, "split", "a.npy", "--length", 6,
                                 "--target", "next", "--scale", "minmax")  # fmt: skip
    assert local.code == remote.code == 0
    same_output(in_process)


@pytest.mark.parametrize(
    ("first", "later", "options", "message"),
    [
        (  # a duplicate time is looked for in every sequence before a gap is filled
            "x,0,,1\nx,1,2,1\n",
            "z,0,1,1\nz,0,2,1\n",
            "--nan ffill",
            "data/b.csv:2 and data/b.csv:3: two rows of sequence 'z' have t 0",
        ),
        (  # a step off the grid before a gap
            "x,0,1,1\nx,2,2,1\n",
            "z,0,1,1\nz,1.5,2,1\n",
            "--freq 1",
            "sequence 'z' goes from t 0 to 1.5, not a whole number of --freq 1 steps",
        ),
        (  # a feature's leading gap before a target's
            "x,0,1,\nx,1,2,1\n",
            "z,0,,1\nz,1,2,1\n",
            "--nan ffill --target y",
            "sequence 'z' starts with 1 step(s) without a value in column 'v'",
        ),
    ],
)
def test_the_error_a_local_run_meets_first(tbptt, in_process, monkeypatch, first, later,
                                            options, message) -> None:  # fmt: skip
    """Two sequences checked in groups of their own, each with a different error: the
    error of the check a local read makes first is reported, not the first group's."""
    monkeypatch.setattr(parts_module, "GROUP_BYTES", 1)  # a group per sequence
    parts(in_process, a=f"id,t,v,y\n{first}", b=f"id,t,v,y\n{later}")
    run = ("asis", "data", "--id-col", "id", "--time-col", "t", *options.split())
    local, remote = both_engines(tbptt, in_process, *run)
    assert local.code == remote.code == 65 and message in local.stderr, local.stderr
    assert remote.stderr == local.stderr


def test_a_part_without_a_column_the_first_has(tbptt, in_process) -> None:
    parts(in_process, a="id,t,v,w\nx,1,2,3\nx,2,2,3\n", b="id,t,v\nx,3,8\nz,5,6\n")
    local, remote = both_engines(tbptt, in_process, "asis", "data", "--id-col", "id",
                                 "--time-col", "t")  # fmt: skip
    assert remote.code == 65 and remote.stderr == local.stderr == (
        "tbptt: error: data/b.csv: no column 'w', which the first file has (id, t, v, w); "
        "every file must hold the same columns\n"
    )


def test_an_id_column_that_changes_on_every_row(tbptt, in_process) -> None:
    parts(in_process, a="year,rain\n2001,2\n2002,3\n", b="year,rain\n2003,4\n2004,5\n")
    local, remote = both_engines(tbptt, in_process, "asis", "data", "--id-col", "year")
    assert local.code == remote.code == 0
    assert "column 'year' (--id-col) starts a new sequence on every row" in local.stderr
    assert warnings(remote) == warnings(local)
    same_output(in_process)
