"""One table, many containers: CSV, compressed CSV, Parquet, Arrow/Feather, folders of parts,
hive partitions and stdin all give the same sequences and byte-identical outputs."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input

# Three sequences of unequal length; rows of "b" are scattered, times out of order.
ROWS = [("a", t, 0.25 * t, -t) for t in range(7)] + [("c", t, 1.5, t * t) for t in range(4)]
ROWS += [("b", t, 0.1 * t, 3.0) for t in (4, 0, 2, 1, 3)]
TABLE = pa.table(
    {
        "id": [r[0] for r in ROWS],
        "t": [r[1] for r in ROWS],
        "x": [r[2] for r in ROWS],
        "y": [float(r[3]) for r in ROWS],
    }
)
OPTIONS = ["--id-col", "id", "--time-col", "t", "--target", "y"]


def csv_bytes(table: pa.Table = TABLE) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="none"))
    return sink.getvalue()


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


def containers(folder: Path) -> dict[str, Path]:
    """The same table in every supported container."""
    folder.mkdir()
    text = csv_bytes()
    files = {
        "csv": ("in.csv", text),
        "tsv": ("in.tsv", text.replace(b",", b"\t")),
        "gz": ("in.csv.gz", gzip.compress(text)),
        "bz2": ("in.csv.bz2", bz2.compress(text)),
        "xz": ("in.csv.xz", lzma.compress(text)),
        "zst": ("in.csv.zst", zstd(text)),
    }
    paths = {key: folder / name for key, (name, _) in files.items()}
    for key, (_, data) in files.items():
        paths[key].write_bytes(data)
    paths["parquet"] = folder / "in.parquet"
    pq.write_table(TABLE, paths["parquet"], row_group_size=4)
    paths["feather"] = folder / "in.feather"
    feather.write_feather(TABLE, paths["feather"])  # lz4-compressed buffers
    paths["arrow"] = folder / "stream.arrow"
    with pa.ipc.new_stream(paths["arrow"], TABLE.schema) as writer:
        writer.write_table(TABLE, max_chunksize=5)
    parts = folder / "parts"
    parts.mkdir()
    for k, start in enumerate(range(0, TABLE.num_rows, 5)):  # rows of "b" in several parts
        pq.write_table(TABLE.slice(start, 5), parts / f"part-{k}.parquet")
    paths["parts"] = parts
    return paths


def datasets(tbptt, source: object, out: Path, *extra: object) -> dict[str, bytes]:
    sources = source if isinstance(source, list) else [source]
    result = tbptt("split", *sources, *OPTIONS, "--length", 3, *extra, "-o", out)
    assert result.code == 0, result.stderr
    with h5py.File(out) as f:
        return {name: f[name][()].tobytes() for name in ("X", "y", "mask", "sequence")}


def test_every_container_gives_byte_identical_x_y_and_mask(tmp_path, tbptt):
    paths = containers(tmp_path / "in")
    want = datasets(tbptt, paths["csv"], tmp_path / "csv.h5")
    for key, path in paths.items():
        assert datasets(tbptt, path, tmp_path / f"{key}.h5") == want, key
    glob = tmp_path / "in" / "parts" / "part-*.parquet"
    assert datasets(tbptt, str(glob), tmp_path / "glob.h5") == want  # the tool expands it
    shell = sorted((tmp_path / "in" / "parts").iterdir())
    assert datasets(tbptt, shell, tmp_path / "o.h5") == want  # a glob the shell expanded
    with h5py.File(tmp_path / "csv.h5") as f:
        first = {(s, o): i for i, (s, o) in enumerate(zip(f["sequence"], f["offset"], strict=True))}
        assert f["X"][first[0, 0], :, 0].tolist() == [0.0, 0.25, 0.5]  # "a"
        assert f["X"][first[2, 0], :, 0].tolist() == pytest.approx([0, 0.1, 0.2])  # "b" by time


def test_stdin_compressed_and_sorted_by_time(tmp_path, tbptt, monkeypatch):
    want = datasets(tbptt, containers(tmp_path / "in")["csv"], tmp_path / "csv.h5")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(csv_bytes()))))
    got = datasets(tbptt, "-", tmp_path / "o.h5", "--format", "csv", "--compression-in", "gzip")
    assert got == want
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(csv_bytes()))))
    result = tbptt("split", "-", "--format", "csv", "--length", 3, "-o", tmp_path / "x.h5")
    assert result.code == 65
    assert result.stderr == (
        "tbptt: error: stdin: the data is gzip-compressed; pass --compression-in gzip\n"
    )


def test_manifest_lists_every_file_with_its_sha256(tmp_path, tbptt):
    parts = containers(tmp_path / "in")["parts"]
    datasets(tbptt, parts, tmp_path / "o.h5")
    section = json.loads((tmp_path / "o.manifest.json").read_text())["input"]
    files = sorted(parts.iterdir())
    assert [f["path"] for f in section["files"]] == [str(p) for p in files]
    assert [f["sha256"] for f in section["files"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    ]
    listing = "".join(f"{f['sha256']}  {f['path']}\n" for f in section["files"])
    assert section["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert section["size"] == sum(p.stat().st_size for p in files)
    assert section["format"] == "parquet" and section["path"] == str(parts)


def test_hive_partitions_give_the_id_column(tmp_path):
    for name in ("a", "b", "c"):
        folder = tmp_path / "data" / f"sensor={name}"
        folder.mkdir(parents=True)
        rows = TABLE.filter(pa.compute.equal(TABLE.column("id"), name)).drop_columns(["id"])
        pq.write_table(rows, folder / "part-0.parquet")
    data, info = read_input(
        InputOptions(path=str(tmp_path / "data"), id_col="sensor", time_col="t", target="y")
    )
    assert data.ids == ["a", "b", "c"] and data.lengths.tolist() == [7, 5, 4]
    assert data.sequence(1)[:, 0].tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert len(info.files) == 3


def test_parquet_numeric_types_and_integer_ids(tmp_path):
    table = pa.table(
        {
            "id": pa.array([7, 7, 9], pa.int16()),
            "i8": pa.array([1, -2, 3], pa.int8()),
            "u64": pa.array([2**40, 0, 1], pa.uint64()),
            "f32": pa.array([0.5, 1.5, None], pa.float32()),
            "f16": pa.array(np.array([1, 2, 3], np.float16)),
            "dec": pa.array([1, 2, 3], pa.decimal128(5, 2)),
            "flag": pa.array([True, False, True]),
            "name": ["u", "v", "w"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    features = ("i8", "u64", "f32", "f16", "dec", "flag")
    data, _ = read_input(
        InputOptions(path=str(tmp_path / "t.parquet"), id_col="id", features=features, nan="zero")
    )
    assert data.ids == ["7", "9"]
    assert data.values.tolist() == [
        [1, 2**40, 0.5, 1, 1, 1],
        [-2, 0, 1.5, 2, 2, 0],
        [3, 1, 0, 3, 3, 1],
    ]
    path = str(tmp_path / "t.parquet")
    default, _ = read_input(InputOptions(path=path, id_col="id", nan="zero"))
    assert default.feature_names == ["i8", "u64", "f32", "f16", "dec"]  # text, bool: not numbers
    with pytest.raises(InputDataError, match="column 'name' holds string, not numbers"):
        read_input(InputOptions(path=str(tmp_path / "t.parquet"), features=("name",)))


def test_parquet_errors_name_the_row(tmp_path):
    table = pa.table({"id": ["a", "a", None], "x": [1.0, None, 2.0]})
    pq.write_table(table, tmp_path / "t.parquet")
    path = tmp_path / "t.parquet"
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=str(path), id_col="id"))
    assert str(caught.value) == (
        f"{path} row 2: missing value in column 'x'; clean the data or pass --nan ffill|zero|drop"
    )
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=str(path), id_col="id", nan="zero"))
    assert str(caught.value) == (
        f"{path} row 3: empty id in column 'id'; every row needs a sequence id"
    )
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputDataError, match="bad.parquet: not a Parquet file"):
        read_input(InputOptions(path=str(tmp_path / "bad.parquet")))


def test_parts_must_share_the_columns(tmp_path):
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"id": ["a"], "x": [1.0]}), tmp_path / "p" / "0.parquet")
    pq.write_table(pa.table({"id": ["a"], "z": [1.0]}), tmp_path / "p" / "1.parquet")
    with pytest.raises(InputDataError, match=r"1\.parquet: no column 'x', which the first file"):
        read_input(InputOptions(path=str(tmp_path / "p"), id_col="id"))


def test_usage_errors_about_inputs(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    cases = [
        ({"path": (str(tmp_path / "a.csv"), "-")}, "- (stdin) cannot be read together"),
        ({"path": (str(tmp_path / "a.csv"),) * 2}, "is named twice in INPUT"),
        ({"path": str(tmp_path / "a.csv"), "freq": "1h"}, "--freq needs --time-col"),
        ({"path": str(tmp_path / "a.csv"), "decimal": ","}, "--decimal , is also the field"),
        ({"path": "x.parquet.gz"}, "compressed PARQUET is not read"),
    ]
    for options, message in cases:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_input(InputOptions(**options))  # type: ignore[arg-type]


def test_stdin_spills_beyond_the_memory_limit(tmp_path):
    rows = "".join(f"s{i % 3},{i},{i * 0.5}\n" for i in range(3000))
    data, info = read_input(
        InputOptions(path="-", format="csv", id_col="id", time_col="t", memory_limit="4K"),
        stdin=io.BytesIO(("id,t,x\n" + rows).encode()),
        spill_dir=tmp_path,
    )
    assert isinstance(data.values, np.memmap) and data.lengths.tolist() == [1000] * 3
    assert data.sequence(1)[:2, 0].tolist() == [0.5, 2.0]
    assert info.size == len("id,t,x\n" + rows) and list(tmp_path.iterdir()) == []


def test_spilled_rows_without_a_time_column_are_grouped(tmp_path):
    """Rows of one id scattered over a file larger than --memory-limit, no --time-col:
    grouped through the spill files in file order (the empty time store moves too)."""
    rows = "".join(f"s{i % 3},{i * 0.5}\n" for i in range(3000))
    data, _ = read_input(
        InputOptions(path="-", format="csv", id_col="id", memory_limit="4K"),
        stdin=io.BytesIO(("id,x\n" + rows).encode()),
        spill_dir=tmp_path,
    )
    assert isinstance(data.values, np.memmap) and data.lengths.tolist() == [1000] * 3
    assert data.sequence(1)[:3, 0].tolist() == [0.5, 2.0, 3.5]


def test_reading_never_imports_pandas(tmp_path):
    """pyarrow's own conversions import pandas where it is installed: half a second."""
    paths = containers(tmp_path / "in")
    read = [str(paths[key]) for key in ("csv", "gz", "parquet", "feather", "parts")]
    code = (
        "import sys; from tbptt_cli.readers import read_input; "
        "from tbptt_cli.options import InputOptions as O; "
        f"[read_input(O(path=p, id_col='id', time_col='t')) for p in {read}]; "
        "assert 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_config_lists_several_inputs(tmp_path, tbptt):
    parts = containers(tmp_path / "in")["parts"]
    names = sorted(p.name for p in parts.iterdir())
    config = parts / "run.yaml"
    listed = "".join(f"\n    - {name}" for name in names)  # relative to the config's folder
    config.write_text(
        f"strategy: split\ninput:\n  path:{listed}\n  id_col: id\n  time_col: t\n"
        "  target: y\nsplit:\n  length: 3\n"
    )
    want = datasets(tbptt, parts, tmp_path / "folder.h5")
    result = tbptt("run", config, "-o", tmp_path / "listed.h5")
    assert result.code == 0, result.stderr
    with h5py.File(tmp_path / "listed.h5") as f:
        assert {name: f[name][()].tobytes() for name in want} == want
    printed = tbptt("run", config, "-o", tmp_path / "x.h5", "--print-config")
    assert f"- {parts / names[0]}" in printed.stdout  # resolved, as the manifest records it


def test_compressed_csv_errors_name_line_and_column(tmp_path):
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(b"id,x\na,1\na,oops\n"))
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=str(tmp_path / "bad.csv.gz"), id_col="id"))
    assert (
        str(caught.value) == f"{tmp_path / 'bad.csv.gz'}:3:2: 'oops' is not a number (column 'x')"
    )


def test_wide_parquet_rows_end_at_their_last_value(tmp_path):
    table = pa.table({"name": ["u", "v"], "s0": [1.0, 4.0], "s1": [2.0, None], "s2": [3.0, None]})
    pq.write_table(table, tmp_path / "w.parquet")
    data, _ = read_input(
        InputOptions(path=str(tmp_path / "w.parquet"), layout="wide", id_col="name")
    )
    assert data.ids == ["u", "v"] and data.lengths.tolist() == [3, 1]
    assert data.values[:, 0].tolist() == [1, 2, 3, 4]
