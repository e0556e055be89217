"""Partitioned inputs for the sharded-engine tests and the checks they share.

`partitioned` writes the same rows as one CSV file and as parts (rows of one id spread
over parts, out of time order). A local run reads ``local/data`` (the one file) and a
Dask run ``dask/data`` (the folder), both with ``--format csv``: the parameters the
files record (the input path as given) are then the same, and so must be their bytes.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HEADER = "sensor,t,temp,humidity"
READ = ("data", "--format", "csv", "--id-col", "sensor", "--time-col", "t")
# One run per strategy (and --nan mode, packing, target, layout), by name.
COMMANDS = {
    "split": "split --length 7 --batch-size 2 --target next --nan ffill",
    "lanes": "split --length 9 --packing lanes --batch-size 3 --nan drop",
    "stepwise": "stepwise --batch-size 5 --target humidity --nan zero",
    "acf": "domain acf --rule acf --max-lag 12 --batch-size 2 --nan ffill",
    "decoupled": "decoupled --k1 8 --k2 3 --stride 2 --target next --nan ffill",
    "asis": "asis --nan drop",
    "horizon": "split --length 6 --batch-size 2 --target next:humidity --horizon 3 --nan ffill",
    "stream": "split --length 8 --packing stream --batch-size 2 --nan zero",
    "ranks": "split --length 6 --batch-size 2 --ranks 2 --nan zero",
    "streams": "stepwise --streams 3 --batch-size 3 --target next --nan zero",
}
RUNS = {name: tuple(command.split()) for name, command in COMMANDS.items()}


def partitioned(tmp_path: Path, parts: int = 3, nan: bool = False, seed: int = 0) -> Path:
    """``tmp_path/local/data`` (one CSV) and ``tmp_path/dask/data/part-K.csv``.

    The sensors of `sensor_rows`; every part holds rows of most sensors, shuffled, so
    time order and first appearance come out right only if the parts are joined right.
    With ``nan``, a temp gap crosses a part boundary and a humidity cell is missing.
    """
    rng = np.random.default_rng(seed)
    rows = sensor_rows(rng)
    if nan:
        # Not a sequence's first step: --nan ffill refuses a sequence starting without a value.
        rows[5][2] = rows[6][2] = rows[98][3] = float("nan")
    order = rng.permutation(len(rows))
    lines = [f"{s},{t},{v:.6g},{h:.6g}" for s, t, v, h in (rows[i] for i in order)]
    for side in ("local", "dask"):
        (tmp_path / side).mkdir()
    (tmp_path / "local" / "data").write_text("\n".join([HEADER, *lines]) + "\n")
    folder = tmp_path / "dask" / "data"
    folder.mkdir()
    for k, piece in enumerate(np.array_split(np.array(lines), parts)):
        (folder / f"part-{k}.csv").write_text("\n".join([HEADER, *piece]) + "\n")
    return tmp_path


def sensor_rows(rng: np.random.Generator) -> list[list[Any]]:
    """Five sensors of 40 to 97 steps: [sensor, step, temp, humidity] rows."""
    rows = []
    for number, steps in enumerate([97, 40, 63, 88, 55]):
        t = np.arange(steps)
        temp = 10 + 3 * np.sin(t / (4 + number)) + rng.normal(0, 0.3, steps)
        humidity = 60 + rng.normal(0, 2, steps).cumsum() / 5
        rows += [[f"s{number}", int(a), float(b), float(c)]
                 for a, b, c in zip(t, temp, humidity, strict=True)]  # fmt: skip
    return rows


def rows_with(change: str) -> list[list[Any]]:
    """`sensor_rows` with rows at a time their sensor already has (``twice``), steps left
    out (``gaps``) or values missing (``nan``, none at a sensor's first step)."""
    rows = sensor_rows(np.random.default_rng(0))
    if change == "twice":
        rows += [[s, t, temp + 1, humidity - 1] for s, t, temp, humidity in rows[::7]]
    if change == "gaps":
        rows = [row for row in rows if row[1] % 17 != 5]
    if change == "nan":
        for i in (3, 50, 51, 120, 300):
            rows[i][2] = float("nan")
        rows[201][3] = float("nan")
    if change == "large":  # beyond float16
        for row in rows[::9]:
            row[3] *= 2000.0
    return rows


def same_manifest_apart_from_input(merged: Path, local: Path) -> None:
    """The merged output's manifest is the local run's, but for the input section."""
    mine, theirs = (json.loads(p.read_text()) for p in (merged, local))
    assert mine["params"]["output"]["engine"] == "local"  # as the local run's
    mine_input: dict[str, Any] = mine.pop("input")
    theirs_input: dict[str, Any] = theirs.pop("input")
    assert mine_input["engine"]["name"] == "dask"
    assert [f["path"] for f in mine_input["files"]] == [f"data/part-{k}.csv" for k in range(3)]
    assert mine == theirs
    for key in ("sequences", "steps", "features", "target", "missing"):
        assert mine_input[key] == theirs_input[key], key


def local_and_merged(
    tbptt: Callable[..., Any], root: Path, *args: object, scheduler: str | None = None
) -> tuple[Path, Path]:
    """The local run on the one file, and the Dask run on the parts merged into one file:
    both ``single.h5`` (the caller restores the current folder, e.g. monkeypatch.chdir)."""
    os.chdir(root / "local")
    local = tbptt(*args, *READ, "-o", "single.h5")
    assert local.code == 0, local.stderr
    os.chdir(root / "dask")
    engine = ("--engine", "dask") + (("--scheduler", scheduler) if scheduler else ())
    remote = tbptt(*args, *READ, "-o", "out.h5", *engine)
    assert remote.code == 0, remote.stderr
    merged = tbptt("merge", "out.h5", "-o", "single.h5")
    assert merged.code == 0, merged.stderr
    return root / "local", root / "dask"


# --- one partitioned folder of many formats, read by both engines ---------------------

FORMATS = ("parquet", "csv.gz", "csv", "arrow", "parquet", "tsv")
MIXED = ("data", "--id-col", "sensor", "--time-col", "time")
JANUARY, HOUR = 1_704_067_200_000_000, 3_600_000_000  # 2024-01-01 and an hour, in us


def mixed(root: Path, rows: list[list[Any]] | None = None) -> Path:
    """``root/data``: sensor rows (default `sensor_rows`) as six parts of five formats
    (Parquet, gzip CSV, CSV, Arrow IPC, TSV) in hive folders ``site=east`` and
    ``site=west`` (a text column ``site``): ``time`` timestamps (ISO 8601 text in the CSV
    parts), ``day`` a calendar column (never a feature), features ``temp`` and
    ``humidity``. Every part holds rows of most sensors, shuffled. ``root/local/data`` and
    ``root/dask/data`` link to it, so both engines name the same files the same way."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = sensor_rows(rng) if rows is None else rows
    for k, chunk in enumerate(np.array_split(rng.permutation(len(rows)), len(FORMATS))):
        picked = [rows[i] for i in chunk]
        table = pa.table(
            {
                "sensor": [r[0] for r in picked],
                "time": pa.array([JANUARY + r[1] * HOUR for r in picked], pa.timestamp("us")),
                "day": [r[1] // 24 for r in picked],
                "temp": [r[2] for r in picked],
                "humidity": [r[3] for r in picked],
            }
        )
        kind = FORMATS[k]
        folder = root / "data" / f"site={'east' if k < 3 else 'west'}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{k}.{kind}"
        if kind == "parquet":
            pq.write_table(table, path, row_group_size=40)
        elif kind == "arrow":
            feather.write_feather(table, path)
        else:
            text = pa.BufferOutputStream()
            options = pacsv.WriteOptions(delimiter="\t" if kind == "tsv" else ",")
            pacsv.write_csv(table, text, options)
            data = text.getvalue().to_pybytes()
            path.write_bytes(gzip.compress(data, mtime=0) if kind == "csv.gz" else data)
    for side in ("local", "dask"):
        (root / side).mkdir()
        (root / side / "data").symlink_to(root / "data", target_is_directory=True)
    return root


def both_engines(
    tbptt: Callable[..., Any], root: Path, *args: object, scheduler: str | None = None
) -> tuple[Any, Any]:
    """The same command on the same files with each engine: ``root/local/out.h5``, and
    ``root/dask/out.h5`` merged into ``root/dask/merged.h5`` when it was written; their
    results. The caller restores the current folder (e.g. monkeypatch.chdir)."""
    os.chdir(root / "local")
    local = tbptt(*args, "-o", "out.h5")
    os.chdir(root / "dask")
    engine = ("--engine", "dask") + (("--scheduler", scheduler) if scheduler else ())
    remote = tbptt(*args, "-o", "out.h5", *engine)
    if remote.code == 0 and "-n" not in args:
        merged = tbptt("merge", "out.h5", "-o", "merged.h5")
        assert merged.code == 0, merged.stderr
    return local, remote


def same_output(root: Path) -> None:
    """The merged output is the local one byte for byte, and so is its manifest, but for
    the engine its input section names."""
    assert (root / "dask" / "merged.h5").read_bytes() == (root / "local" / "out.h5").read_bytes()
    mine = json.loads((root / "dask" / "merged.manifest.json").read_text())
    theirs = json.loads((root / "local" / "out.manifest.json").read_text())
    assert mine["input"].pop("engine")["name"] == "dask"
    mine["output"]["file"] = mine["params"]["output"]["path"] = "out.h5"
    assert mine == theirs


def warnings(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("tbptt: warning")]


class InProcess:
    """The Dask executor's contract, run here, one task after the other."""

    def __init__(self, address: str | None) -> None:
        self.description = {"name": "dask", "scheduler": address or "local:1"}

    def map(
        self, function: Callable[[Any], Any], tasks: Sequence[Any], done: Any = None
    ) -> list[Any]:
        results = []
        for index, task in enumerate(tasks):
            results.append(function(task))
            if done is not None:
                done(index)
        return results

    def close(self) -> None:
        pass
