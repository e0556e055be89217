"""Hostile and odd input: each a clear error or a correct result, in bounded time and
memory; and the same bytes out whatever the line ends, BOM, quoting, TZ, locale or cwd."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.cli import run_main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ROWS = [("a", 0, 0.5), ("a", 1, -1.25), ("a", 2, 3.0), ("b", 0, 7.0), ("b", 1, 1e-3)]


def cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = run_main([str(a) for a in args])
    return code, capsys.readouterr().err


def spellings() -> dict[str, bytes]:
    lines = ["id,t,x"] + [f"{i},{t},{x!r}" for i, t, x in ROWS]
    quoted = ['"id","t","x"'] + [f'"{i}","{t}","{x!r}"' for i, t, x in ROWS]
    return {
        "lf": ("\n".join(lines) + "\n").encode(),
        "crlf": ("\r\n".join(lines) + "\r\n").encode(),
        "bom": b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode(),
        "quoted": ("\r\n".join(quoted)).encode(),  # and no final line end
    }


def run_in(folder: Path, content: bytes, env: dict[str, str] | None = None) -> dict[str, bytes]:
    """Write in.csv into ``folder`` and run there with relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.csv").write_bytes(content)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tbptt_cli",
            "split",
            "in.csv",
            "--id-col",
            "id",
            "--time-col",
            "t",
            "--length",
            "2",
            "--target",
            "next",
            "-o",
            "out.h5",
        ],
        cwd=folder,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return {n: (folder / n).read_bytes() for n in ("out.h5", "out.manifest.json")}


def without_input_hash(manifest: bytes) -> dict[str, object]:
    document = json.loads(manifest)
    for key in ("sha256", "size", "files"):
        document["input"].pop(key)
    return document


def test_same_bytes_for_every_spelling_of_the_same_csv(tmp_path):
    results = {name: run_in(tmp_path / name, text) for name, text in spellings().items()}
    first = results["lf"]
    for name, files in results.items():
        assert files["out.h5"] == first["out.h5"], name
        assert without_input_hash(files["out.manifest.json"]) == without_input_hash(
            first["out.manifest.json"]
        ), name
    with h5py.File(tmp_path / "lf" / "out.h5") as f:
        assert f["X"][0, :, 0].tolist() == [0.5, -1.25]


def test_same_bytes_under_other_tz_locale_and_cwd(tmp_path):
    text = spellings()["lf"]
    base = run_in(tmp_path / "one", text)
    other = run_in(
        tmp_path / "deeper" / "two",
        text,
        {
            "TZ": "Pacific/Chatham",
            "LC_ALL": "C",
            "LANG": "de_DE.UTF-8",
            "LC_NUMERIC": "de_DE.UTF-8",
        },
    )
    assert other == base


class Sentinel:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    path = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("suffix", ["npy", "npz"])
def test_pickled_object_arrays_are_refused_unopened(tmp_path, capsys, suffix):
    Sentinel.path = str(tmp_path / "PWNED")
    hostile = np.array([Sentinel(), 1], dtype=object)
    target = tmp_path / f"in.{suffix}"
    if suffix == "npy":
        np.save(target, hostile, allow_pickle=True)
    else:
        np.savez(target, values=hostile, lengths=np.array([2]))
    code, err = cli(["split", target, "--length", 2, "-o", tmp_path / "o.h5"], capsys)
    assert code == 65 and "object" in err and err.count("\n") == 1
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {s}']",
        "!!python/object/new:os.system ['touch {s}']",
        "!!python/name:os.system",
        "!!python/module:os",
    ],
)
def test_yaml_python_tags_never_run(tmp_path, capsys, tag):
    sentinel = tmp_path / "PWNED"
    config = tmp_path / "c.yaml"
    config.write_text(f"strategy: split\ninput: {tag.format(s=sentinel)}\n")
    code, err = cli(["run", config], capsys)
    assert code == 78 and "invalid YAML" in err and "python/" in err
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "text",
    [
        "strategy: split\nsplit: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "strategy: split\nsplit: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
        # alias bomb: nine levels of ten references each (a billion leaves if expanded)
        "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10))
        + "strategy: split\n",
    ],
    ids=["nested-lists", "nested-maps", "alias-bomb"],
)
def test_yaml_bombs_are_config_errors_in_bounded_time(tmp_path, capsys, text):
    (tmp_path / "c.yaml").write_text(text)
    code, err = cli(["run", tmp_path / "c.yaml"], capsys)  # expanded, the bomb never ends
    assert code == 78 and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("spelling", ["nan", "NaN", "inf", "-Infinity", "1e999", "", "NA"])
def test_nan_and_infinity_spellings(tmp_path, capsys, spelling):
    data = tmp_path / "in.csv"
    data.write_text(f"id,x\na,1\na,{spelling}\na,3\n")
    out = tmp_path / "o.h5"
    code, err = cli(["split", data, "--id-col", "id", "--length", 3, "-o", out], capsys)
    assert code == 65 and f"{data}:3:2: " in err and "--nan" in err
    code, err = cli(
        ["split", data, "--id-col", "id", "--length", 3, "--nan", "zero", "-o", out], capsys
    )
    assert code == 0, err
    with h5py.File(out) as f:
        assert f["X"][0, :, 0].tolist() == [1.0, 0.0, 3.0]


def test_non_utf8_bytes_name_the_line(tmp_path, capsys):
    data = tmp_path / "in.csv"
    data.write_bytes(b"id,x\na,1\na,2\na,\xff\xfe3\n")
    code, err = cli(
        ["split", data, "--id-col", "id", "--length", 2, "-o", tmp_path / "o.h5"], capsys
    )
    assert (
        code == 65
        and err == f"tbptt: error: {data}:4: byte 0xff is not UTF-8 text; save the file as UTF-8\n"
    )


def test_a_header_of_100k_names(tmp_path, capsys):
    names = [f"c{i}" for i in range(100_000)]
    data = tmp_path / "in.csv"
    data.write_text(
        ",".join(names)
        + "\n"
        + ",".join("1" for _ in names)
        + "\n"
        + ",".join("2" for _ in names)
        + "\n"
    )
    out = tmp_path / "o.h5"
    code, err = cli(["split", data, "--length", 2, "-o", out], capsys)
    assert code == 0, err
    with h5py.File(out) as f:
        assert f["X"].shape == (1, 2, 100_000)
        assert f["X"][0, :, 99_999].tolist() == [1.0, 2.0]


@pytest.mark.slow
def test_a_million_columns_wide(tmp_path, capsys):
    data = tmp_path / "in.csv"
    row = ",".join(["0.5"] * 1_000_000)
    data.write_text(",".join(f"t{i}" for i in range(1_000_000)) + "\n" + row + "\n")
    out = tmp_path / "o.h5"
    code, err = cli(["split", data, "--layout", "wide", "--length", 1000, "-o", out], capsys)
    assert code == 0, err
    with h5py.File(out) as f:
        assert f["X"].shape == (1000, 1000, 1) and float(f["X"][999, 999, 0]) == 0.5


# Runs a command and reports its peak RSS. Measured from pytest itself, a child's peak
# counts pytest's own pages, which it shares until it starts the program (1.7 GB late in
# the suite); this small parent's are few.
PEAK = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


@pytest.mark.slow
def test_a_1gb_line_on_stdin_is_refused_in_bounded_time_and_memory(tmp_path):
    command = ["-m", "tbptt_cli", "split", "-", "--format", "csv", "--length", "2"]
    process = subprocess.Popen(
        [sys.executable, "-c", PEAK, sys.executable, *command, "-o", str(tmp_path / "o.h5")],
        env=ENV,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    block = b"1" * (1 << 20)
    try:
        process.stdin.write(b"x\n")  # type: ignore[union-attr]
        for _ in range(1024):
            process.stdin.write(block)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
    except BrokenPipeError:
        pass  # refused before the end, as it should be
    process.wait()
    err, peak = process.stderr.read().decode().rsplit("\n", 2)[:2]  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()  # type: ignore[union-attr]
    assert process.returncode == 65, err
    assert err == (
        "tbptt: error: -:2: line longer than 256 MiB; this is not CSV text with "
        "line breaks (for wide data put one sequence per line)"
    )
    assert int(peak) < 1_500_000  # KiB: well under the line's size times a few


def test_pickle_module_is_never_needed(tmp_path, capsys):
    """A plain numeric NPZ loads with allow_pickle=False: nothing else is ever unpickled."""
    np.savez(tmp_path / "in.npz", values=np.arange(6.0), lengths=np.array([4, 2]))
    code, err = cli(["asis", tmp_path / "in.npz", "-o", tmp_path / "o.h5"], capsys)
    assert code == 0, err
    assert pickle.dumps  # the module is imported for Sentinel only
