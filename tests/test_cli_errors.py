"""Every bad input: its documented exit code, one line on stderr, the old output untouched."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tbptt_cli.cli import run_main

OLD = b"previous output, must survive\n"


def write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def make_case(name: str, tmp: Path) -> tuple[list[str], int, str]:
    """(arguments before -o, expected exit code, a phrase the error line must contain)."""
    csv_path, npy = tmp / "in.csv", tmp / "in.npy"

    def csv(text: str | bytes) -> str:
        return str(write(csv_path, text))

    if name == "missing file":
        return [str(tmp / "nope.csv")], 66, "nope.csv"
    if name == "pickled npy":
        header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + b"\n"
        write(
            npy,
            b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + pickle.dumps([1]),
        )
        return [str(npy)], 65, "object"
    if name == "truncated npy":
        np.save(npy, np.zeros((10, 100)))
        npy.write_bytes(npy.read_bytes()[:500])
        return [str(npy)], 65, "in.npy"
    if name == "4-D npy":
        np.save(npy, np.zeros((2, 2, 2, 2)))
        return [str(npy)], 65, "in.npy"
    if name == "string npy":
        np.save(npy, np.array(["a", "b"]))
        return [str(npy)], 65, "in.npy"
    if name == "negative npz length":
        np.savez(tmp / "in.npz", values=np.zeros(4), lengths=np.array([5, -1]))
        return [str(tmp / "in.npz")], 65, "in.npz"
    cases: dict[str, tuple[str | bytes, list[str], int, str]] = {
        "empty file": ("", [], 65, "empty file"),
        "header only": ("id,x\n", [], 65, "header but no data rows"),
        "ragged row": ("id,x\na,1\na,2,3\n", ["--id-col", "id"], 65, "in.csv:3"),
        "non-numeric cell": ("id,x\na,1\na,abc\n", ["--id-col", "id"], 65, "in.csv:3:2"),
        "nan cell": ("id,x\na,1\na,nan\n", ["--id-col", "id"], 65, "in.csv:3:2"),
        "1e999 cell": ("id,x\na,1e999\na,2\n", ["--id-col", "id"], 65, "in.csv:2:2"),
        "binary junk": (b"\x00\xff\xfe junk\x00\n\x89PNG", [], 65, "in.csv"),
        "unknown column": ("id,x\na,1\n", ["--id-col", "sensor"], 65, "sensor"),
        "stdin without format": ("", ["-"], 2, "--format"),
        "zero length": ("id,x\na,1\n", ["--length", "0"], 2, "at least 1"),
        "negative length": ("id,x\na,1\n", ["--length", "-3"], 2, "at least 1"),
        "unknown dtype": ("id,x\na,1\n", ["--dtype", "float8"], 2, "float8"),
        "missing output dir": ("id,x\na,1\n", [], 73, "does not exist"),
    }
    text, args, code, phrase = cases[name]
    path = csv(text)
    return ([] if args[:1] == ["-"] else [path]) + args, code, phrase


CASES = [
    "missing file",
    "empty file",
    "header only",
    "ragged row",
    "non-numeric cell",
    "nan cell",
    "1e999 cell",
    "binary junk",
    "unknown column",
    "stdin without format",
    "zero length",
    "negative length",
    "unknown dtype",
    "missing output dir",
    "pickled npy",
    "truncated npy",
    "4-D npy",
    "string npy",
    "negative npz length",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_input(case, dry_run, tmp_path, capsys):
    args, code, phrase = make_case(case, tmp_path)
    output = tmp_path / ("no-such-dir/out.h5" if case == "missing output dir" else "out.h5")
    if output.parent.exists():
        output.write_bytes(OLD)
    if "--length" not in args:
        args += ["--length", "2"]
    extra = ["-n"] if dry_run else []
    if dry_run and case == "missing output dir":
        code = 0  # a dry run never touches the output
    capsys.readouterr()
    assert run_main(["split", *args, "-o", str(output), *extra]) == code
    err = capsys.readouterr().err
    if code:
        assert err.count("\n") == 1 and err.startswith("tbptt: error: "), err
        assert phrase in err and "Traceback" not in err
    if output.parent.exists():
        assert output.read_bytes() == OLD
        leftovers = sorted(p.name for p in output.parent.iterdir() if ".tmp." in p.name)
        assert leftovers == []


@pytest.mark.parametrize(
    ("yaml_text", "phrase"),
    [
        (
            "strategy: split\ninput: !!python/object/apply:os.system ['touch PWNED']\n",
            "invalid YAML",
        ),
        (
            "strategy: split\nsplit:\n  lenght: 5\n",
            "split.lenght: unknown key; did you mean 'split.length'?",
        ),
        ("- just\n- a list\n", "must be a mapping"),
        ("strategy: splitt\n", "did you mean 'split'?"),
        ("strategy: split\nsplit: {length: five}\n", "split.length: must be an integer"),
        ("strategy: split\ninput: [1, 2\n", "invalid YAML"),
    ],
)
def test_bad_config_exits_78(yaml_text, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml_text)
    assert run_main(["run", "c.yaml"]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and phrase in err and err.startswith("tbptt: error: c.yaml")
    assert not (tmp_path / "PWNED").exists()


def test_old_mac_line_ends_read_and_locate_errors(tmp_path, tbptt):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_bytes(b"id,a\r1,1\r1,2\r1,3\r")
    bad.write_bytes(b"id,a\r1,1\r1,2\r1,x\r")
    assert tbptt("split", good, "--id-col", "id", "--length", 2, "-o", tmp_path / "o.h5").code == 0
    result = tbptt("split", bad, "--id-col", "id", "--length", 2, "-o", tmp_path / "o.h5")
    assert result.code == 65 and f"{bad}:4:2: 'x' is not a number" in result.stderr


def test_no_clobber_covers_the_validation_manifest(tmp_path, tbptt):
    np.save(tmp_path / "in.npy", np.zeros((10, 20), dtype=np.float32))
    (tmp_path / "o.val.manifest.json").write_text("keep")
    result = tbptt(
        "split",
        tmp_path / "in.npy",
        "--length",
        5,
        "--val-fraction",
        0.2,
        "--no-clobber",
        "-o",
        tmp_path / "o.h5",
    )
    assert result.code == 73 and "o.val.manifest.json" in result.stderr
    assert (tmp_path / "o.val.manifest.json").read_text() == "keep"
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize(
    "args, name",
    [
        (["split", "--length", "10", "--remainder", "drop"], "out.h5"),
        (
            [
                "split",
                "--length",
                "2",
                "--remainder",
                "drop",
                "--val-fraction",
                "0.2",
                "--val-by",
                "time",
            ],
            "out.val.h5",
        ),
    ],
)
def test_a_plan_without_samples_is_refused(tmp_path, tbptt, args, name):
    """Every sequence shorter than one chunk (or a validation part too short for one):
    a file with no sample would only fail later, in training."""
    source = tmp_path / "short.npy"
    np.save(source, np.ones((3, 5, 2), dtype=np.float32))
    out = tmp_path / "out.h5"
    for dry_run in ([], ["-n"]):
        result = tbptt(args[0], source, *args[1:], "-o", out, *dry_run)
        assert result.code == 65
        assert result.stderr.startswith(f"tbptt: error: {source}: no sample for {name} (")
        assert "shorten the window" in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "short.npy"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["split", "--length", "0"], "--length must be at least 1, not 0"),
        (["asis", "--pad-to", "0"], "--pad-to must be at least 1, not 0"),
        (["decoupled", "--k1", "4", "--k2", "-1"], "--k2 must be at least 1, not -1"),
        (
            ["decoupled", "--k1", "4", "--k2", "2", "--stride", "0"],
            "--stride must be at least 1, not 0",
        ),
        (["split", "--length", "5", "--ranks", "0"], "--ranks must be at least 1, not 0"),
        (["domain", "acf", "--multiple", "0"], "--multiple must be at least 1, not 0"),
    ],
)
def test_a_count_below_one_is_refused_before_the_input_is_read(tmp_path, tbptt, args, message):
    """Exit 2 for the flag, not the exit 65 of a bad cell the read would meet first."""
    source = write(tmp_path / "in.csv", "x\n1\n\n2\nNA\n")
    result = tbptt(*args, source, "-n")
    assert (result.code, result.stderr) == (2, f"tbptt: error: {message}\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["decoupled", "--k1", "4", "--k2", "6"],
            "--k2 6 is longer than --k1 4: the gradient cannot flow through more steps than "
            "the forward window holds; pass --k2 <= 4",
        ),
        (
            ["grid", "--lengths", "5,x"],
            "--lengths must be comma-separated positive integers such as 25,50,100, not '5,x'",
        ),
        (
            ["grid", "--lengths", "5", "--min-length", "2"],
            "--min-length and --max-length bound --factors only; drop them or use --factors",
        ),
    ],
)
def test_options_that_disagree_are_refused_before_the_input_is_read(tmp_path, tbptt, args, message):
    """Exit 2 for the options, not the exit 65 of a bad cell the read would meet first."""
    source = write(tmp_path / "in.csv", "x\n1\n\n2\nNA\n")
    result = tbptt(*args, source, "-o", tmp_path / "out")
    assert (result.code, result.stderr) == (2, f"tbptt: error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
