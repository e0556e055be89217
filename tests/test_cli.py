"""What a user sees: help, version, one line on success, --json, --dry-run, stdin, progress."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tbptt_cli.cli import run_main


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "in.npy"
    np.save(path, np.arange(4 * 30, dtype=np.float32).reshape(4, 30))
    return path


def test_help_lists_every_command_without_importing_numpy():
    code = (
        "import sys\nfrom tbptt_cli.cli import run_main\n"
        "code = run_main(['--help'])\n"
        "assert 'numpy' not in sys.modules and 'h5py' not in sys.modules, 'heavy import'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in (
        "asis",
        "split",
        "stepwise",
        "domain",
        "grid",
        "decoupled",
        "run",
        "inspect",
        "validate",
    ):
        assert f"\n  {command} " in result.stdout
    assert "75  another run holds the output's lock" in result.stdout


@pytest.mark.parametrize("args", [(), ("domain",)])
def test_no_command_prints_the_help_whole(tbptt, args):
    # Not the help squashed into one "tbptt: error: Usage: ..." line.
    result = tbptt(*args)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.startswith(
        f"Usage: tbptt {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND"
    )
    assert "tbptt: error" not in result.stderr and result.stderr.count("\n") > 8


def test_version_names_the_libraries(tbptt):
    result = tbptt("--version")
    assert result.code == 0
    assert (
        result.stdout.startswith("tbptt 0.1.0 (numpy ")
        and "h5py" in result.stdout
        and "HDF5" in result.stdout
    )


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "tbptt_cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("tbptt ")


def test_success_is_one_line_on_stderr_and_nothing_on_stdout(npy, tmp_path, tbptt):
    result = tbptt("split", npy, "--length", 10, "-o", tmp_path / "o.h5")
    assert result.code == 0 and result.stdout == ""
    assert result.stderr == (
        f"wrote {tmp_path}/o.h5: 12 x 10 x 1 float32, batch 4 (3 batches, 0.0% filler), "
        f"4 resets, {(tmp_path / 'o.h5').stat().st_size / 1e6:.1f} MB "
        f"(+ {tmp_path}/o.manifest.json)\n"
    )
    assert tbptt("split", npy, "--length", 10, "-o", tmp_path / "o.h5", "-q").stderr == ""


def test_json_summary(npy, tmp_path, tbptt):
    result = tbptt("split", npy, "--length", 10, "-o", tmp_path / "o.h5", "--json")
    summary = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert summary["samples"] == 12 and summary["window"] == 10 and summary["features"] == 1
    assert summary["batch_size"] == 4 and summary["stateful"] is True
    assert summary["bytes"] == (tmp_path / "o.h5").stat().st_size
    assert summary["manifest"] == f"{tmp_path}/o.manifest.json" and summary["warnings"] == []


def test_dry_run_writes_nothing_and_reports_the_plan(npy, tmp_path, tbptt):
    result = tbptt("split", npy, "--length", 7, "-o", tmp_path / "o.h5", "-n", "--json")
    assert result.code == 0 and list(tmp_path.iterdir()) == [npy]
    (plan,) = json.loads(result.stdout)["plan"]
    assert plan["samples"] == 20 and plan["window"] == 7 and plan["batch_size"] == 4
    assert plan["bytes"] == 20 * 7 * (4 + 1)
    assert "nothing written" in result.stderr


def test_verbose_prints_stage_timings(npy, tmp_path, tbptt):
    result = tbptt("split", npy, "--length", 10, "-o", tmp_path / "o.h5", "-v")
    assert (
        "timings: read " in result.stderr
        and " plan " in result.stderr
        and " write " in result.stderr
    )


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_stdin(fmt, tmp_path, npy):
    data = b"id,x\na,1\na,2\nb,3\nb,4\n" if fmt == "csv" else npy.read_bytes()
    command = [
        sys.executable,
        "-m",
        "tbptt_cli",
        "asis",
        "-",
        "--format",
        fmt,
        "-o",
        str(tmp_path / "o.h5"),
    ]
    if fmt == "csv":
        command += ["--id-col", "id"]
    result = subprocess.run(command, input=data, capture_output=True)
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["X"].shape == ((2, 2, 1) if fmt == "csv" else (4, 30, 1))


def test_progress_only_when_asked_or_on_a_terminal(npy, tmp_path, monkeypatch):
    monkeypatch.setattr("tbptt_cli.progress.Bar.__init__.__defaults__", (None, 0.0))
    command = [
        sys.executable,
        "-m",
        "tbptt_cli",
        "split",
        str(npy),
        "--length",
        "1",
        "-o",
        str(tmp_path / "o.h5"),
    ]
    piped = subprocess.run(command, capture_output=True, text=True)
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr


def test_internal_error_exits_70_with_a_hint(npy, tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr("tbptt_cli.core.plan_targets", boom)
    assert run_main(["split", str(npy), "--length", "3", "-o", str(tmp_path / "o.h5")]) == 70
    err = capsys.readouterr().err
    assert err == "tbptt: internal error: RuntimeError: bug; re-run with --debug and report it\n"
    assert (
        run_main(["split", str(npy), "--length", "3", "-o", str(tmp_path / "o.h5"), "--debug"])
        == 70
    )
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130(npy, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tbptt_cli.core.plan_targets", interrupt)
    assert run_main(["split", str(npy), "--length", "3", "-o", str(tmp_path / "o.h5")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_unknown_option_suggests_and_exits_2(npy, tbptt):
    result = tbptt("split", npy, "--lenght", 3)
    assert result.code == 2 and result.stderr.count("\n") == 1
    # click words the suggestion its own way ("Did you mean" / "Possible options" by version)
    assert result.stderr.startswith("tbptt: error: No such option")
    assert "--lenght" in result.stderr and "--length" in result.stderr.split("--lenght", 1)[1]
    assert result.stderr.endswith(" (see 'tbptt split --help')\n")


def test_unreadable_input_exits_66(npy, tmp_path, tbptt):
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
        directory = tmp_path / "dir.npy"
        directory.mkdir()
        result = tbptt("split", directory, "--length", 3, "-o", tmp_path / "o.h5")
    else:
        npy.chmod(0)
        result = tbptt("split", npy, "--length", 3, "-o", tmp_path / "o.h5")
    assert result.code == 66, result.stderr


def test_required_options_are_checked_before_the_input_is_read(tmp_path, tbptt):
    result = tbptt("split", tmp_path / "missing.csv", "-o", tmp_path / "o.h5")
    assert result.code == 2
    expected = "tbptt: error: split needs --length: chunk length K (steps per sample)\n"
    assert result.stderr == expected


def test_run_refuses_a_second_config(tbptt):
    result = tbptt("run", "configs/split.yaml", "-c", "configs/asis.yaml", "-n")
    assert result.code == 2 and "already names the config" in result.stderr


def test_dry_run_without_output_names_no_file(npy, tbptt):
    result = tbptt("split", npy, "--length", 7, "-n", "--json")
    (plan,) = json.loads(result.stdout)["plan"]
    assert plan["output"] is None and plan["manifest"] is None and "outputs" not in plan
    expected = (
        "plan: 20 x 7 x 1 float32, batch 4 (5 batches, 0.0% filler), 4 resets, ~0.0 MB; "
        "nothing written\n"
    )
    assert result.stderr == expected
