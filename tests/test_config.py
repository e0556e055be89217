"""Config files: every example runs; flag > environment > file > default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tbptt_cli.config import load_file, resolve
from tbptt_cli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A scratch copy of configs/ and sample_data/ so outputs land in tmp_path/out."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_there_is_a_config_per_strategy():
    from tbptt_cli.registry import STRATEGIES

    names = {load_file(str(path))["strategy"] for path in CONFIGS}
    assert names == set(STRATEGIES)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_runs(path, repo, tbptt):
    result = tbptt("run", f"configs/{path.name}", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    output = Path(summary["output"])
    assert output.exists()
    if output.is_file():
        with h5py.File(output) as f:
            assert f.attrs["format"] == "tbptt"
            assert f.attrs["strategy"] == load_file(str(path))["strategy"]


def test_precedence_flag_env_file_default(repo, tbptt, monkeypatch):
    config = "configs/split.yaml"  # the file says length 100, batch_size 6
    resolved = yaml.safe_load(tbptt("run", config, "--print-config").stdout)
    assert resolved["split"]["length"] == 100 and resolved["output"]["dtype"] == "float32"
    assert resolved["split"]["remainder"] == "pad"  # a default
    monkeypatch.setenv("TBPTT_SPLIT_LENGTH", "40")
    monkeypatch.setenv("TBPTT_DTYPE", "float16")
    resolved = yaml.safe_load(tbptt("run", config, "--print-config").stdout)
    assert resolved["split"]["length"] == 40 and resolved["output"]["dtype"] == "float16"
    resolved = yaml.safe_load(tbptt("run", config, "--length", "25", "--print-config").stdout)
    assert resolved["split"]["length"] == 25 and resolved["output"]["dtype"] == "float16"


def test_print_config_round_trips(repo, tbptt):
    printed = tbptt("run", "configs/split.yaml", "--batch-size", "3", "--print-config").stdout
    Path("again.yaml").write_text(printed)
    assert tbptt("run", "again.yaml", "--print-config").stdout == printed
    result = tbptt("run", "again.yaml", "-o", "out/a.h5", "--json")
    assert json.loads(result.stdout)["batch_size"] == 3


def test_manifest_params_equal_the_printed_config(repo, tbptt):
    printed = yaml.safe_load(tbptt("run", "configs/split.yaml", "--print-config").stdout)
    assert tbptt("run", "configs/split.yaml").code == 0
    manifest = json.loads(Path("out/sensors_split.manifest.json").read_text())
    assert manifest["params"] == printed


def test_strategy_command_with_config_of_another_strategy(repo, tbptt):
    result = tbptt("asis", "-c", "configs/split.yaml")
    assert result.code == 78 and "use `tbptt run configs/split.yaml`" in result.stderr


def test_config_keys_are_typed():
    with pytest.raises(ConfigError, match="output.dtype: must be one of float16, float32, float64"):
        resolve("split", {"output": {"dtype": "int8"}}, {}, "c.yaml")
    with pytest.raises(ConfigError, match="input.features: must be a list of names"):
        resolve("split", {"input": {"features": {"a": 1}}}, {}, "c.yaml")
    with pytest.raises(ConfigError, match="c.yaml: output: must be a mapping"):
        resolve("split", {"output": "x.h5"}, {}, "c.yaml")
    config = resolve("split", {"input": {"features": "a, b"}, "split": {"batch_size": 8}}, {}, "c")
    assert config.input.features == ("a", "b") and config.params.batch_size == 8


def test_deeply_nested_yaml_is_a_config_error(tmp_path):
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError):
        resolve("split", load_file(str(tmp_path / "deep.yaml")), {}, "deep.yaml")


def test_run_needs_an_input(tmp_path, tbptt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text("strategy: asis\n")
    np.save("x.npy", np.zeros((2, 3)))
    result = tbptt("run", "c.yaml", "-o", "o.h5")
    assert result.code == 2 and "no input" in result.stderr
    assert tbptt("run", "c.yaml", "x.npy", "-o", "o.h5").code == 0


def test_clobber_flag_overrides_no_clobber_in_the_file(tmp_path, tbptt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.zeros((2, 4)))
    Path("c.yaml").write_text("strategy: asis\noutput:\n  no_clobber: true\n")
    Path("o.h5").write_bytes(b"old")
    refused = tbptt("run", "c.yaml", "x.npy", "-o", "o.h5")
    assert refused.code == 73 and Path("o.h5").read_bytes() == b"old"
    assert tbptt("run", "c.yaml", "x.npy", "-o", "o.h5", "--clobber").code == 0
    assert Path("o.h5").read_bytes()[:4] == b"\x89HDF"


def test_relative_paths_in_a_config_are_taken_from_its_folder(tmp_path, tbptt, monkeypatch):
    """`tbptt run jobs/x.yaml` finds its input and writes its output from any directory."""
    jobs = tmp_path / "project" / "jobs"
    jobs.mkdir(parents=True)
    np.save(tmp_path / "project" / "x.npy", np.arange(40.0).reshape(4, 10))
    (jobs / "x.yaml").write_text(
        "strategy: split\ninput:\n  path: ../x.npy\nsplit:\n  length: 5\n  val_fraction: 0.25\n"
        "  val_output: ../out/v.h5\noutput:\n  path: ../out/t.h5\n  manifest: ../out/t.json\n"
    )
    (tmp_path / "project" / "out").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = "../project/jobs/x.yaml"
    resolved = yaml.safe_load(tbptt("run", config, "--print-config").stdout)
    assert resolved["input"]["path"] == "../project/x.npy"
    assert resolved["output"] == {**resolved["output"], "path": "../project/out/t.h5"}
    assert resolved["output"]["manifest"] == "../project/out/t.json"
    assert resolved["split"]["val_output"] == "../project/out/v.h5"
    result = tbptt("run", config)
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "project" / "out").glob("[!.]*")) == [
        "t.h5", "t.json", "v.h5", "v.manifest.json",
    ]  # fmt: skip
    # Flags are paths as typed, from the working directory; absolute paths stay.
    np.save("here.npy", np.arange(20.0).reshape(2, 10))
    again = tbptt("run", config, "here.npy", "-o", "mine.h5", "--val-output", tmp_path / "v.h5")
    assert again.code == 0 and Path("mine.h5").exists() and (tmp_path / "v.h5").exists()
    (jobs / "abs.yaml").write_text(f"strategy: asis\ninput:\n  path: {tmp_path / 'here.npy'}\n")
    assert yaml.safe_load(tbptt("run", jobs / "abs.yaml", "--print-config").stdout)["input"][
        "path"
    ] == str(tmp_path / "here.npy")


def test_relative_to_keeps_a_path_a_symbolic_link_would_change(tmp_path):
    from tbptt_cli.config import relative_to

    (tmp_path / "real" / "configs").mkdir(parents=True)
    (tmp_path / "configs").symlink_to(tmp_path / "real" / "configs")
    linked = str(tmp_path / "configs")
    assert relative_to(linked, "../data.csv") == f"{linked}/../data.csv"
    plain = str(tmp_path / "real" / "configs")
    assert relative_to(plain, "../data.csv") == str(tmp_path / "real" / "data.csv")
    assert relative_to(plain, "-") == "-" and relative_to("", "a.csv") == "a.csv"


@pytest.mark.parametrize("spelling", ["no", "off", "false", "yes"])
def test_an_unquoted_yaml_boolean_is_not_a_column_name(spelling):
    with pytest.raises(ConfigError) as raised:
        resolve("split", yaml.safe_load(f"input:\n  target: {spelling}\n"), {}, "c.yaml")
    assert str(raised.value) == (
        f"c.yaml: input.target: must be text, not the boolean "
        f"{str(yaml.safe_load(spelling)).lower()} (YAML reads unquoted yes/no/on/off as "
        "true/false); write none for no target, or quote a column name, e.g. 'no'"
    )
    quoted = resolve("split", yaml.safe_load(f"input:\n  target: '{spelling}'\n"), {}, "c")
    assert quoted.input.target == spelling
    with pytest.raises(ConfigError, match="output.compression: must be text, not the boolean"):
        resolve("split", {"output": {"compression": False}}, {}, "c.yaml")


def test_a_strategy_written_with_underscores_is_the_dashed_one(repo, tbptt):
    dashed = yaml.safe_load(Path("configs/domain-acf.yaml").read_text())
    assert dashed["strategy"] == "domain-acf" and "domain-acf" in dashed
    underscored = {k.replace("-", "_"): v for k, v in dashed.items()}
    underscored["strategy"] = "domain_acf"
    Path("configs/underscored.yaml").write_text(yaml.safe_dump(underscored))
    assert load_file("configs/underscored.yaml") == dashed
    printed = [
        tbptt("run", f"configs/{n}.yaml", "--print-config") for n in ("domain-acf", "underscored")
    ]
    assert printed[0].code == printed[1].code == 0 and printed[0].stdout == printed[1].stdout
    Path("configs/typo.yaml").write_text("strategy: domain_afc\n")
    result = tbptt("run", "configs/typo.yaml")
    assert result.code == 78 and "did you mean 'domain-acf'?" in result.stderr
