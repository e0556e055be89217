"""Environment variables: shared options read TBPTT_<OPTION>, a command's own options read
TBPTT_<COMMAND>_<OPTION>, and an error caused by a variable names the variable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tbptt_cli.cli import declared_by, strategy_command
from tbptt_cli.params import SHARED_PARAMS
from tbptt_cli.registry import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "sample_data" / "sentences.csv"


def envvars(command) -> dict[str, object]:
    """``{TBPTT_...: the click option}`` of one command."""
    return {p.envvar: p for p in command.params if getattr(p, "envvar", None)}


def all_commands():
    return {name: strategy_command(name, name) for name in STRATEGIES}


def test_shared_options_keep_their_name_and_command_options_get_the_command():
    split = envvars(all_commands()["split"])
    for name in ("TBPTT_BATCH_SIZE", "TBPTT_REMAINDER", "TBPTT_SEED", "TBPTT_VAL_FRACTION"):
        assert name in split
    for name in ("TBPTT_DTYPE", "TBPTT_COMPRESSION", "TBPTT_ID_COL", "TBPTT_TARGET"):
        assert name in split
    assert "TBPTT_SPLIT_LENGTH" in split and "TBPTT_LENGTH" not in split
    segments = envvars(all_commands()["domain-segments"])
    assert "TBPTT_SEGMENTS_PAD_TO" in segments and "TBPTT_PAD_TO" not in segments
    assert "TBPTT_ASIS_PAD_TO" in envvars(all_commands()["asis"])
    assert "TBPTT_GRID_MIN_LENGTH" in envvars(all_commands()["grid"])
    assert {"TBPTT_ACF_RULE", "TBPTT_ACF_MIN_LENGTH"} <= set(envvars(all_commands()["domain-acf"]))


def test_one_variable_means_one_thing_in_every_command():
    """A variable several commands read is one option with one type, help and default, and
    only options of the shared classes (layout, input, output) go without the command."""
    seen: dict[str, tuple[object, ...]] = {}
    for name, command in all_commands().items():
        own = {
            f.name
            for f in dataclasses.fields(STRATEGIES[name].params)
            if declared_by(STRATEGIES[name].params, f.name) not in SHARED_PARAMS
        }
        prefix = "TBPTT_" + name.removeprefix("domain-").upper() + "_"
        for var, option in envvars(command).items():
            option_name = option.name.split("__")[1]
            meaning = (option_name, repr(option.type), option.help)
            assert seen.setdefault(var, meaning) == meaning, (name, var)
            expected = prefix if option_name in own else "TBPTT_"
            assert var == expected + option_name.upper()


def test_help_shows_the_names(tbptt):
    text = tbptt("domain", "segments", "--help").stdout
    assert "TBPTT_SEGMENTS_PAD_TO" in " ".join(text.split())
    assert "TBPTT_DTYPE" in text
    # `run` lists no strategy option itself: its help says where they are.
    assert "`tbptt split --help`" in tbptt("run", "--help").stdout


def test_no_clobber_from_the_environment_holds_for_every_command_that_writes(
    tmp_path, tbptt, monkeypatch
):
    """A cron job's TBPTT_NO_CLOBBER=1 protects what report and grid compare write too
    (merge shares their options), not only the strategies' outputs."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"grid": [{"length": 5}, {"length": 9}]}))
    results = tmp_path / "results.csv"
    results.write_text("length,repeat,score\n5,0,1\n5,1,2\n9,0,3\n9,1,4\n")
    page = tmp_path / "page.html"
    page.write_text("mine")
    monkeypatch.setenv("TBPTT_NO_CLOBBER", "1")
    commands = (
        ("grid", "compare", grid, results, "-o", page),
        ("report", SENTENCES, "--id-col", "doc", "-o", page),
    )
    for args in commands:
        result = tbptt(*args)
        assert (result.code, page.read_text()) == (73, "mine"), result.stderr
        assert result.stderr == (
            f"tbptt: error: {page}: exists and --no-clobber is set (the flag, TBPTT_NO_CLOBBER"
            " or the config's no_clobber); remove it, or pass --clobber\n"
        )
        assert "TBPTT_NO_CLOBBER" in " ".join(tbptt(*args[:-2], "--help").stdout.split())


def test_a_variable_for_one_command_never_breaks_another(tmp_path, tbptt, monkeypatch):
    """Today's bugs: TBPTT_PAD_TO=p90 broke asis, TBPTT_MIN_LENGTH=5 broke grid --lengths."""
    np.save(tmp_path / "x.npy", np.arange(60.0).reshape(3, 20))
    monkeypatch.setenv("TBPTT_SEGMENTS_PAD_TO", "p90")
    monkeypatch.setenv("TBPTT_ACF_MIN_LENGTH", "5")
    monkeypatch.setenv("TBPTT_ACF_RULE", "season")
    asis = tbptt("asis", tmp_path / "x.npy", "-o", tmp_path / "a.h5", "--json")
    assert asis.code == 0 and json.loads(asis.stdout)["window"] == 20
    grid = tbptt("grid", tmp_path / "x.npy", "--lengths", "4,10", "-o", tmp_path / "g", "-q")
    assert grid.code == 0, grid.stderr
    segments = tbptt(
        "domain", "segments", SENTENCES, "--id-col", "doc", "--time-col", "t",
        "--features", "word_len,log_freq,is_cap,punct", "--boundary-col", "eos",
        "-n", "--json",
    )  # fmt: skip
    assert segments.code == 0 and json.loads(segments.stdout)["plan"][0]["window"] == 21


def test_old_shared_names_of_command_options_are_not_read(tmp_path, tbptt, monkeypatch):
    np.save(tmp_path / "x.npy", np.arange(60.0).reshape(3, 20))
    monkeypatch.setenv("TBPTT_PAD_TO", "p90")
    monkeypatch.setenv("TBPTT_LENGTH", "abc")
    asis = tbptt("asis", tmp_path / "x.npy", "-n", "--json")
    assert asis.code == 0 and json.loads(asis.stdout)["plan"][0]["window"] == 20
    assert tbptt("split", tmp_path / "x.npy", "--length", 5, "-n").code == 0


def test_tbptt_run_reads_the_same_names(tmp_path, tbptt, monkeypatch):
    monkeypatch.setenv("TBPTT_ACF_RULE", "acf")
    monkeypatch.setenv("TBPTT_BATCH_SIZE", "3")
    printed = tbptt("run", ROOT / "configs" / "domain-acf.yaml", "--print-config")
    resolved = yaml.safe_load(printed.stdout)
    assert resolved["domain-acf"]["rule"] == "acf" and resolved["domain-acf"]["batch_size"] == 3


@pytest.mark.parametrize(
    ("variable", "value", "args", "message"),
    [
        (
            "TBPTT_SPLIT_LENGTH",
            "abc",
            ["split"],
            "tbptt: error: Invalid value for environment variable TBPTT_SPLIT_LENGTH: 'abc' "
            "is not a valid integer (see 'tbptt split --help')\n",
        ),
        (
            "TBPTT_DTYPE",
            "int8",
            ["split", "--length", "5"],
            "tbptt: error: Invalid value for environment variable TBPTT_DTYPE: 'int8' is not "
            "one of 'float16', 'float32', 'float64' (see 'tbptt split --help')\n",
        ),
        (
            "TBPTT_BATCH_SIZE",
            "lots",
            ["split", "--length", "5"],
            "tbptt: error: environment variable TBPTT_BATCH_SIZE: must be auto or a positive "
            "integer, not 'lots'\n",
        ),
        (
            "TBPTT_ASIS_TRUNCATE",
            "maybe",
            ["asis"],
            # Click lists the spellings it accepts after this.
            "tbptt: error: Invalid value for environment variable TBPTT_ASIS_TRUNCATE: "
            "'maybe' is not a valid boolean",
        ),
    ],
)
def test_an_error_from_a_variable_names_the_variable(
    variable, value, args, message, tmp_path, tbptt, monkeypatch
):
    np.save(tmp_path / "x.npy", np.arange(60.0).reshape(3, 20))
    monkeypatch.setenv(variable, value)
    result = tbptt(*args, tmp_path / "x.npy", "-n")
    assert result.code == 2 and result.stderr.startswith(message)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1
    monkeypatch.delenv(variable)
    given_as_flag = tbptt("split", tmp_path / "x.npy", "--length", "abc", "-n")
    assert "'--length'" in given_as_flag.stderr and "TBPTT" not in given_as_flag.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TBPTT_MAX_FILLER", "2", "--max-filler must be at least 0 and below 1, not 2.0"),
        ("TBPTT_RANKS", "0", "--ranks must be at least 1, not 0"),
        ("TBPTT_SPLIT_LENGTH", "0", "--length must be at least 1, not 0"),
        ("TBPTT_VAL_FRACTION", "1.5", "--val-fraction must be between 0 and 1, not 1.5"),
    ],
)
def test_a_value_the_run_refuses_names_its_variable(
    variable, value, message, tmp_path, tbptt, monkeypatch
):
    np.save(tmp_path / "x.npy", np.arange(60.0).reshape(3, 20))
    args = ["split", tmp_path / "x.npy", "-n"] + (
        ["--length", 5] if "LENGTH" not in variable else []
    )
    monkeypatch.setenv(variable, value)
    result = tbptt(*args)
    assert (result.code, result.stderr) == (
        2,
        f"tbptt: error: environment variable {variable}: {message}\n",
    )
    monkeypatch.delenv(variable)
    flag = "--" + variable.removeprefix("TBPTT_").removeprefix("SPLIT_").lower().replace("_", "-")
    given_as_flag = tbptt(*args, flag, value)
    assert given_as_flag.stderr == f"tbptt: error: {message}\n"
