"""--json: one object on stdout whether the run succeeds or fails; stdout never gets HDF5;
a closed stdout ends a command that only reads quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CHECKS = "(manifest, layout, state, coverage, sequences)"


@pytest.fixture
def npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", np.arange(60.0).reshape(3, 20))
    return tmp_path / "x.npy"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["split", "{npy}"], 2, "split needs --length: chunk length K (steps per sample)"),
        (["split", "{dir}/nope.npy", "--length", "5", "-n"], 66, "{dir}/nope.npy: no such file"),
        (
            ["split", "{npy}", "--lenght", "5"],
            2,
            "No such option '--lenght'. (Did you mean one of: '--engine', '--length'?)",
        ),
        (["run", "{dir}/nope.yaml"], 78, "{dir}/nope.yaml: config file not found"),
        (["validate", "{dir}/nope.h5"], 66, "{dir}/nope.h5: no such file"),
        (["inspect", "{dir}/nope.csv"], 66, "{dir}/nope.csv: no such file"),
    ],
)
def test_an_error_prints_one_json_object_on_stdout(npy, tbptt, args, code, error):
    values = {"npy": npy, "dir": npy.parent}
    result = tbptt(*[a.format(**values) for a in args], "--json")
    assert result.code == code
    document = json.loads(result.stdout)
    assert document["exit"] == code and error.format(**values) in document["error"]
    assert set(document) == {"error", "exit"} and result.stdout.count("\n") == 1
    assert result.stderr.startswith("tbptt: error: ") and document["error"] in result.stderr
    without = tbptt(*[a.format(**values) for a in args])
    assert without.code == code and without.stdout == ""


def test_a_failed_validate_prints_its_report_once_with_the_error(npy, tbptt):
    out = npy.parent / "o.h5"
    assert tbptt("split", npy, "--length", 5, "-o", out).code == 0
    out.with_name("o.manifest.json").write_text("{}")
    result = tbptt("validate", out, "--json")
    assert result.code == 65 and result.stdout.count("\n") == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["problems"] and report["exit"] == 65
    assert report["error"] == f"{out}: {len(report['problems'])} problem(s) found"


def test_dash_as_an_output_is_a_usage_error(npy, tbptt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for flags in (["-o", "-"], ["-o", "a.h5", "--manifest", "-"]):
        result = tbptt("split", npy, "--length", 5, *flags)
        assert result.code == 2, result.stderr
        assert "tbptt writes files (HDF5 needs to seek), not stdout" in result.stderr
    result = tbptt("split", npy, "--length", 5, "-o", "a.h5", "--val-fraction", 0.3,
                   "--val-output", "-")  # fmt: skip
    assert result.code == 2 and "--val-output -:" in result.stderr
    assert tbptt("grid", npy, "--lengths", 5, "-o", "-").code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def run(*args: object, stdout: int) -> tuple[int, str]:
    process = subprocess.run(
        [sys.executable, "-m", "tbptt_cli", *map(str, args)],
        env=ENV,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    return process.returncode, process.stderr


def closed_pipe_run(*args: object) -> tuple[int, str]:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run(*args, stdout=write_end)
    finally:
        os.close(write_end)


def test_reading_commands_end_quietly_on_a_closed_pipe(npy, tbptt):
    """`tbptt inspect x --json | true`: the reader went away, nothing was lost."""
    assert closed_pipe_run("inspect", npy, "--json") == (0, "")
    out = npy.parent / "o.h5"
    assert tbptt("split", npy, "--length", 5, "-o", out).code == 0
    assert closed_pipe_run("validate", out, "--json") == (0, f"{out}: ok {CHECKS}\n")
    assert closed_pipe_run("split", npy, "--length", 5, "-n", "--json", "-q") == (0, "")
    # A run that wrote its outputs still says so: exit 74, the files are committed.
    code, err = closed_pipe_run("split", npy, "--length", 5, "-o", out, "--json", "-q")
    assert code == 74 and err == (
        "tbptt: error: stdout: broken pipe (the reader went away); the outputs were written\n"
    )


def test_a_closed_pipe_after_grid_compare_and_print_config(npy, tmp_path):
    """The verdict and --print-config are data on stdout: a reader that went away is not an
    error (Click's silent exit 1 was), unless a page was written (74, as for any output)."""
    entries = [{"length": k, "file": f"len_{k}.h5"} for k in (5, 10)]
    index = tmp_path / "grid.json"
    index.write_text(json.dumps({"strategy": "grid", "grid": entries}))
    table = tmp_path / "results.csv"
    scores = [f"{k},{r},{0.3 + 0.01 * r + (k == 10) * 0.05:.2f}" for k in (5, 10) for r in range(4)]
    table.write_text("length,repeat,score\n" + "\n".join(scores) + "\n")
    for flags in ([], ["--json"]):
        assert closed_pipe_run("grid", "compare", index, table, *flags) == (0, "")
    code, err = closed_pipe_run("grid", "compare", index, table, "-o", tmp_path / "c.html")
    assert code == 74 and err.endswith("the outputs were written\n")
    assert closed_pipe_run("split", npy, "--length", 5, "--print-config") == (0, "")


def test_an_error_to_a_full_stdout_is_still_one_line_on_stderr(npy):
    with open("/dev/full", "w") as full:
        code, err = run("split", npy, "--json", stdout=full.fileno())
    assert code == 2 and err.startswith("tbptt: error: split needs --length")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_validation_parts_warnings_are_said_and_named(tmp_path, tbptt):
    # Ragged: the training part fills batches of 2; the one held-out sequence cannot.
    np.savez(tmp_path / "r.npz", values=np.arange(90.0)[:, None], lengths=[40, 40, 10])
    args = ("split", tmp_path / "r.npz", "--length", 5, "--val-fraction", 0.3, "--val-by",
            "sequence", "--batch-size", "auto", "-o", tmp_path / "a.h5")  # fmt: skip
    said = "the validation part: --batch-size auto chose 1: "
    for extra in ((), ("-n",)):
        result = tbptt(*args, *extra)
        assert result.code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1 and warnings[0].startswith(f"tbptt: warning: {said}")
    summary = json.loads(tbptt(*args, "--json").stdout)
    assert [w[: len(said)] for w in summary["warnings"]] == [said]
    manifest = json.loads((tmp_path / "a.val.manifest.json").read_text())
    assert manifest["warnings"][0].startswith("--batch-size auto chose 1: ")
    assert json.loads((tmp_path / "a.manifest.json").read_text())["warnings"] == []
