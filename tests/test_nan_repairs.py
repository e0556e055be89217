"""--nan ffill|zero|drop says what it repaired: a warning (stderr, --json, the manifest's
warnings) and the manifest's ``input.missing``, with the same counts for CSV and Parquet,
one file or a folder of parts, and either engine (the Dask engine's tasks run here,
tests/test_dask.py runs them on a real cluster)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shard_inputs import InProcess

from tbptt_cli import cluster
from tbptt_cli.readers.repairs import Repairs

NAN, INF = math.nan, math.inf
# sensor, t, a, b, y (the target): 5 missing cells (a 2, b 2, y 1) in 4 of 9 steps, of
# sequences p and q; none at a sequence's first step (--nan ffill refuses those).
ROWS = [
    ("p", 0, 1.0, 2.0, 0.5),
    ("p", 1, NAN, 2.5, 0.6),
    ("p", 2, NAN, None, 0.7),
    ("p", 3, 4.0, 3.0, NAN),
    ("q", 0, 5.0, 1.0, 0.1),
    ("q", 1, 6.0, INF, 0.2),
    ("q", 2, 7.0, 1.5, 0.3),
    ("r", 0, 1.0, 1.0, 1.0),
    ("r", 1, 2.0, 2.0, 2.0),
]
READ = ("--id-col", "sensor", "--time-col", "t", "--target", "y")
COLUMNS = "in 3 column(s): a 2, b 2, y 1"
WARNINGS = {
    "ffill": f"--nan ffill: 5 missing cell(s) (18.5% of values) filled from the step before, "
    f"{COLUMNS}",
    "zero": f"--nan zero: 5 missing cell(s) (18.5% of values) set to 0, {COLUMNS}",
    "drop": f"--nan drop: dropped 4 step(s) (44.4% of steps) from 2 sequence(s), for 5 "
    f"missing cell(s) {COLUMNS}",
}
IN_ORDER = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # the parts of an id follow each other in time
SHUFFLED = [[8, 3, 0], [5, 2, 7], [1, 6, 4]]  # ... and here they overlap


def write(path: Path, rows: list[int], fmt: str) -> None:
    """Rows of ROWS as a CSV (missing cells written empty, ``nan``, ``inf``) or Parquet
    (NaN, null, infinity) file."""
    picked = [ROWS[i] for i in rows]
    if fmt == "csv":
        lines = [",".join("" if v is None else str(v) for v in row) for row in picked]
        path.write_text("\n".join(["sensor,t,a,b,y", *lines]) + "\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["sensor", "t", "a", "b", "y"]
    pq.write_table(pa.table({n: [r[j] for r in picked] for j, n in enumerate(names)}), path)


def single(root: Path, fmt: str) -> str:
    write(root / f"holes.{fmt}", list(range(len(ROWS))), fmt)
    return f"holes.{fmt}"


def folder(root: Path, fmt: str, parts: list[list[int]]) -> str:
    (root / "parts").mkdir()
    for k, rows in enumerate(parts):
        write(root / "parts" / f"part-{k}.{fmt}", rows, fmt)
    return "parts"


def run(
    tbptt: Any, root: Path, source: str, mode: str, *more: object, engine: str = "local"
) -> dict[str, Any]:
    """A split run on ``source`` in ``root`` to ``<engine>.h5``: its warnings (the same
    in the --json summary, on stderr and in the manifest) and its ``input.missing``."""
    os.chdir(root)
    found = tbptt("split", source, *READ, "--length", 2, "--batch-size", 3, "--nan", mode,
                  "--json", *more, "--engine", engine, "-o", f"{engine}.h5")  # fmt: skip
    assert found.code == 0, found.stderr
    summary = json.loads(found.stdout)
    assert sorted(f"tbptt: warning: {w}" for w in summary["warnings"]) == sorted(
        line for line in found.stderr.splitlines() if line.startswith("tbptt: warning")
    )
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["warnings"] == summary["warnings"]
    return {"warnings": summary["warnings"], "missing": manifest["input"].get("missing")}


def expected(mode: str) -> dict[str, Any]:
    dropped = mode == "drop"
    missing = {
        "nan": mode,
        "cells": 5,
        "columns": {"a": 2, "b": 2, "y": 1},
        "steps_dropped": 4 if dropped else 0,
        "sequences_shortened": 2 if dropped else 0,
    }
    return {"warnings": [WARNINGS[mode]], "missing": missing}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cluster, "DaskExecutor", InProcess)
    monkeypatch.chdir(tmp_path)  # the tests change folders: back to the old one at the end
    return tmp_path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("mode", ["ffill", "zero", "drop"])
def test_exact_counts_for_one_file_and_for_parts(tbptt, root, fmt, mode) -> None:
    assert run(tbptt, root, single(root, fmt), mode) == expected(mode)
    assert run(tbptt, root, folder(root, fmt, SHUFFLED), mode) == expected(mode)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("mode", ["ffill", "zero", "drop"])
@pytest.mark.parametrize("parts", [IN_ORDER, SHUFFLED], ids=["in-order", "shuffled"])
def test_the_dask_engine_counts_the_same(tbptt, root, fmt, mode, parts) -> None:
    """In order, --nan zero is counted in each part as read; otherwise by the tasks that
    finish whole sequences (rows sorted, filled, dropped). Both add up to the local count."""
    source = folder(root, fmt, parts)
    dask = run(tbptt, root, source, mode, engine="dask")
    assert dask == run(tbptt, root, source, mode) == expected(mode)


def test_inserted_gaps_are_counted_as_filled(tbptt, root) -> None:
    (root / "gaps.csv").write_text("sensor,t,a,b,y\np,0,1,2,3\np,1,1,2,3\np,3,1,2,3\n")
    for engine in ("local", "dask"):
        found = run(tbptt, root, "gaps.csv", "ffill", "--freq", "1", "--gaps", "fill",
                    "--batch-size", 1, engine=engine)  # fmt: skip
        assert found["warnings"] == [
            "--gaps fill: 1 gap(s) at --freq 1: 1 missing step(s) inserted, filled by --nan ffill",
            "--nan ffill: 3 missing cell(s) (25.0% of values) filled from the step before, "
            "in 3 column(s): a 1, b 1, y 1",
        ]
        assert found["missing"]["columns"] == {"a": 1, "b": 1, "y": 1}


@pytest.mark.parametrize("mode", ["ffill", "zero", "drop"])
def test_nothing_repaired_says_nothing(tbptt, root, mode) -> None:
    write(root / "clean.csv", [0, 4, 6, 7, 8], "csv")
    for engine in ("local", "dask"):
        found = run(tbptt, root, "clean.csv", mode, engine=engine)
        assert found["warnings"] == []
        assert found["missing"] == {
            "nan": mode,
            "cells": 0,
            "columns": {"a": 0, "b": 0, "y": 0},
            "steps_dropped": 0,
            "sequences_shortened": 0,
        }


def test_nan_error_is_unchanged(tbptt, root) -> None:
    write(root / "clean.csv", [0, 4, 6, 7, 8], "csv")
    assert run(tbptt, root, "clean.csv", "error") == {"warnings": [], "missing": None}
    single(root, "csv")
    os.chdir(root)
    found = tbptt("split", "holes.csv", *READ, "--length", 2, "-o", "out.h5")
    assert found.code == 65
    assert found.stderr == (
        "tbptt: error: holes.csv:3:3: non-finite value 'nan' in column 'a'; clean the data "
        "or pass --nan ffill|zero|drop\n"
    )


NPY_WARNINGS = {
    "zero": "--nan zero: 3 missing cell(s) (25.0% of values) set to 0, in 2 column(s): x0 2, x1 1",
    "drop": "--nan drop: dropped 3 step(s) (50.0% of steps) from 2 sequence(s), for 3 missing "
    "cell(s) in 2 column(s): x0 2, x1 1",
}


@pytest.mark.parametrize("mode", NPY_WARNINGS)
def test_npy_arrays(tbptt, root, mode) -> None:
    np.save(root / "a.npy", np.array([[[1, NAN], [NAN, 4], [5, 6]], [[7, 8], [NAN, 1], [2, 3]]]))
    for engine in ("local", "dask"):
        found = tbptt("asis", "a.npy", "--nan", mode, "--engine", engine, "-o", f"{engine}.h5")
        assert found.code == 0 and f"tbptt: warning: {NPY_WARNINGS[mode]}\n" in found.stderr
        manifest = json.loads((root / f"{engine}.manifest.json").read_text())
        assert manifest["input"]["missing"]["columns"] == {"x0": 2, "x1": 1}


def test_many_columns_are_named_by_most_repairs_first() -> None:
    names = [f"c{i}" for i in range(12)]
    one = Repairs.counted(names, np.array([0, 5, 1, 1, 9, 2, 2, 2, 2, 2, 2, 0]), 10_000)
    two = Repairs.counted(names, np.array([1, 0, 0, 0, 1000, 0, 0, 0, 0, 0, 0, 0]), 990_000)
    assert (one + two).warnings("zero") == [
        "--nan zero: 1,029 missing cell(s) (<0.1% of values) set to 0, in 11 column(s): "
        "c4 1,009, c1 5, c5 2, c6 2, c7 2, c8 2, c9 2, c10 2 and 3 more"
    ]
    assert (one + two).columns["c0"] == 1 and (one + two).steps == 1_000_000
