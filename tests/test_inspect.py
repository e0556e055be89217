"""tbptt inspect: inputs are described and given a runnable suggestion; outputs are summarised."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.errors import InputDataError, InputMissingError
from tbptt_cli.inspect import inspect_path
from tbptt_cli.options import InputOptions

GAPPY_CSV = """id,t,a,b,label
s1,0,1.0,2.0,0
s1,1,,3.0,1
s1,2,NA,4.0,
s2,0,5.0,7.0,1
s2,1,6.0,,0
s2,2,7.0,8.0,1
s2,3,8.0,9.0,0
"""


def inspect(path: Path, **options: object) -> tuple[str, dict]:
    text, doc = inspect_path(InputOptions(path=str(path), **options))  # type: ignore[arg-type]
    assert json.loads(json.dumps(doc)) == doc  # plain JSON types only
    return text, doc


def test_equal_short_sequences_suggest_asis(tmp_path: Path) -> None:
    path = tmp_path / "short.npy"
    np.save(path, np.ones((100, 25, 3), dtype=np.float32))
    text, doc = inspect(path)
    assert doc["kind"] == "input"
    assert (doc["sequences"], doc["steps"], doc["equal_lengths"]) == (100, 2500, True)
    assert doc["length"] == {"min": 25, "median": 25, "max": 25, "total": 2500}
    assert doc["features"] == ["x0", "x1", "x2"] and doc["targets"] == []
    assert doc["missing"] == {"x0": 0, "x1": 0, "x2": 0}
    assert doc["memory"] == {
        "dense_float32_bytes": 100 * 25 * 3 * 4,
        "data_float32_bytes": 2500 * 3 * 4,
        "padded_fraction": 0.0,
    }
    assert doc["suggestion"]["strategy"] == "asis"
    assert doc["suggestion"]["command"] == f"tbptt asis {path} -o short.h5"
    assert text.splitlines()[:3] == [
        f"file        {path} (npy, {path.stat().st_size / 1000:.1f} kB)",
        "sequences   100",
        "length      min 25, median 25, max 25 (2500 steps)",
    ]


def run_suggestion(tbptt, doc: dict, folder: Path) -> dict:
    """Run the suggested command as printed (writing into ``folder``): its --json summary."""
    words = shlex.split(doc["suggestion"]["command"])
    words[-1] = str(folder / words[-1])
    result = tbptt(*words[1:], "--json")
    assert result.code == 0, result.stderr
    assert tbptt("validate", words[-1]).code == 0
    return json.loads(result.stdout)


def test_long_ragged_sequences_suggest_a_split_that_runs(tbptt, tmp_path: Path) -> None:
    lengths = np.array([900, 500, 1200, 700] * 5)
    path = tmp_path / "long.npz"
    values = np.random.default_rng(0).normal(size=(int(lengths.sum()), 2))
    np.savez(path, values=values, lengths=lengths)
    text, doc = inspect(path, target="next")
    assert doc["length"] == {"min": 499, "median": 799, "max": 1199, "total": 16480}
    assert doc["targets"] == ["next_x0", "next_x1"]
    assert doc["memory"]["dense_float32_bytes"] == 20 * 1199 * 2 * 4
    assert doc["memory"]["padded_fraction"] == round(1 - 16480 / (20 * 1199), 4)
    suggestion = doc["suggestion"]
    assert suggestion["strategy"] == "split"
    assert suggestion["command"] == f"tbptt split {path} --target next --length 200 -o long.h5"
    # 6, 5, 4 and 3 chunks, 5 sequences each, longest first: blocks of the 6s and 5s (6
    # batches), then of the 4s and 3s (4 batches); 10 filler rows of 100, within 10%.
    layout = {"batch_size": 10, "batches": 10, "filler_share": 0.1, "ranks": 1, "streams": 1}
    assert suggestion["layout"] == layout
    assert text.splitlines()[-1] == "            gives batch 10 (10 batches, 10.0% filler)"
    summary = run_suggestion(tbptt, doc, tmp_path)
    assert {key: summary[key] for key in layout} == layout


def test_few_long_sequences_are_suggested_as_parallel_streams(tbptt, tmp_path: Path) -> None:
    path = tmp_path / "few.npz"
    lengths = np.array([20000, 16000, 18000])
    np.savez(path, values=np.random.default_rng(1).normal(size=(54000, 1)), lengths=lengths)
    _, doc = inspect(path)
    assert doc["suggestion"]["command"] == (
        f"tbptt split {path} --length 200 --streams auto -o few.h5"
    )
    layout = doc["suggestion"]["layout"]
    assert layout["batch_size"] >= 8 and layout["streams"] > 1
    summary = run_suggestion(tbptt, doc, tmp_path)
    assert {key: summary[key] for key in layout} == layout


def test_one_long_series_suggests_domain_acf_in_parallel_streams(tbptt, tmp_path: Path) -> None:
    path = tmp_path / "series.npy"
    np.save(path, np.sin(np.arange(3000) / 7.0))
    text, doc = inspect(path)
    assert (doc["sequences"], doc["steps"]) == (1, 3000)
    assert doc["suggestion"]["strategy"] == "domain-acf"
    assert doc["suggestion"]["command"] == f"tbptt domain acf {path} --streams auto -o series.h5"
    layout = doc["suggestion"]["layout"]
    assert layout["batch_size"] == layout["streams"] >= 8  # not the batch 1 of one row
    assert f"gives batch {layout['batch_size']} ({layout['streams']} streams per sequence" in text
    summary = run_suggestion(tbptt, doc, tmp_path)
    assert {key: summary[key] for key in layout} == layout


def test_a_series_too_short_for_its_acf_is_suggested_as_it_is(tbptt, tmp_path: Path) -> None:
    path = tmp_path / "tiny.npy"
    np.save(path, np.sin(np.arange(10) / 3.0))
    assert tbptt("domain", "acf", path, "-n").code == 65  # no significant lag
    _, doc = inspect(path)
    assert doc["suggestion"]["command"] == f"tbptt asis {path} -o tiny.h5"
    assert run_suggestion(tbptt, doc, tmp_path)["batch_size"] == 1


def test_many_ragged_short_sequences_suggest_asis(tbptt, tmp_path: Path) -> None:
    rows = ["user,t,clicks"] + [f"u{i},{t},{t * i}" for i in range(30) for t in range(5 + i)]
    path = tmp_path / "sessions.csv"
    path.write_text("\n".join(rows) + "\n")
    _, doc = inspect(path, id_col="user", time_col="t")
    assert doc["equal_lengths"] is False
    assert doc["length"] == {"min": 5, "median": 19.5, "max": 34, "total": 585}
    command = doc["suggestion"]["command"]
    assert command == f"tbptt asis {path} --id-col user --time-col t -o sessions.h5"
    assert "30 short sequences of 5..34 steps" in doc["suggestion"]["reason"]


def test_missing_values_are_counted_even_when_nan_error_refuses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gappy.csv"
    path.write_text(GAPPY_CSV)
    text, doc = inspect(path, id_col="id", time_col="t", target="label")
    assert doc["missing"] == {"a": 2, "b": 1, "label": 1}
    assert doc["nan"] == "ffill"
    assert doc["nan_error"].startswith(f"{path}:3:3: empty cell in column 'a'")
    assert doc["steps"] == 7  # ffill keeps every step
    assert doc["suggestion"]["command"].endswith("--target label --nan ffill -o gappy.h5")
    assert "note        --nan error refuses this file; described as read with --nan ffill" in text
    assert "missing     a 2, b 1, label 1" in text


def test_a_leading_gap_is_described_with_drop_not_zeros(tmp_path: Path) -> None:
    # ffill refuses a sequence that starts with a gap; zeros would invent readings (a
    # country's fertility rate of 0 before its records begin), dropping the steps does not.
    path = tmp_path / "late.csv"
    path.write_text("id,t,a\ns1,0,\ns1,1,\ns1,2,3.0\ns1,3,4.0\ns2,0,1.0\ns2,1,2.0\n")
    text, doc = inspect(path, id_col="id", time_col="t")
    assert doc["nan"] == "drop"
    assert doc["missing"] == {"a": 2}
    assert doc["length"] == {"min": 2, "median": 2, "max": 2, "total": 4}
    assert doc["suggestion"]["command"].endswith("--nan drop -o late.h5")
    assert "described as read with --nan drop" in text


def test_missing_values_are_counted_from_the_raw_file_under_drop(tmp_path: Path) -> None:
    path = tmp_path / "gappy.csv"
    path.write_text(GAPPY_CSV)
    _, doc = inspect(path, id_col="id", time_col="t", features=("a", "b"), nan="drop")
    assert doc["missing"] == {"a": 2, "b": 1}
    assert doc["length"]["total"] == 4  # drop removed the 3 steps with a gap
    assert "nan_error" not in doc


def test_stdin_is_read_once_and_replayed_for_counting() -> None:
    from tbptt_cli.inspect import inspect_input

    options = InputOptions(path="-", format="csv", id_col="id", time_col="t", target="label")
    _, doc = inspect_input(options, stdin=io.BytesIO(GAPPY_CSV.encode()))
    assert doc["missing"] == {"a": 2, "b": 1, "label": 1}
    assert doc["suggestion"]["command"] == (
        "tbptt asis - --format csv --id-col id --time-col t --target label --nan ffill -o out.h5"
    )


@pytest.mark.parametrize("nan", ["error", "ffill"])
@pytest.mark.parametrize(("target", "horizon"), [("next:a", 1), ("next:b,a", 2)])
def test_next_col_targets_are_made_as_a_run_makes_them(tbptt, tmp_path, nan, target, horizon):
    """Missing values are counted in the raw columns; the targets (and the steps each
    sequence loses) are those of the run the suggestion gives."""
    path = tmp_path / "gappy.csv"
    path.write_text(GAPPY_CSV)
    options = {"id_col": "id", "time_col": "t", "features": ("a", "b")}
    _, doc = inspect(path, **options, target=target, horizon=horizon, nan=nan)
    names = target.removeprefix("next:").split(",")
    assert doc["targets"] == [("next_" if horizon == 1 else f"next{horizon}_") + n for n in names]
    assert doc["missing"] == {"a": 2, "b": 1} and doc["nan"] == "ffill"
    assert doc["steps"] == 7 - 2 * horizon
    words = shlex.split(doc["suggestion"]["command"])[1:]
    run = tbptt(*words[:-2], "-n", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["plan"][0]["samples"] == doc["sequences"]


def test_stdin_npy_is_described() -> None:
    from tbptt_cli.inspect import inspect_input

    buffer = io.BytesIO()
    np.save(buffer, np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]]))
    options = InputOptions(path="-", format="npy")
    _, doc = inspect_input(options, stdin=io.BytesIO(buffer.getvalue()))
    assert (doc["sequences"], doc["missing"], doc["nan"]) == (2, {"x0": 1}, "ffill")


def test_a_wide_csv_counts_na_cells(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("t0,t1,t2,t3\n1,NA,3,4\n5,6,,\n")
    _, doc = inspect(path, layout="wide", nan="zero")
    assert doc["missing"] == {"value": 1}
    assert doc["length"] == {"min": 2, "median": 3, "max": 4, "total": 6}


def test_a_file_no_repair_can_read_raises_the_original_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\nx,3\n")
    with pytest.raises(InputDataError, match="'x' is not a number"):
        inspect(path)


@pytest.fixture
def output(tbptt, tmp_path: Path) -> Path:
    npy = tmp_path / "walks.npy"
    np.save(npy, np.random.default_rng(1).normal(size=(5, 23)))
    out = tmp_path / "walks.h5"
    assert tbptt("split", npy, "--length", "7", "--target", "next", "-o", out).code == 0
    return out


def test_an_output_is_summarised(output: Path) -> None:
    text, doc = inspect(output)
    assert doc["kind"] == "output"
    assert doc["strategy"] == "split"
    assert doc["datasets"]["X"] == {"shape": [20, 7, 1], "dtype": "float32"}
    assert doc["datasets"]["y"] == {"shape": [20, 7, 1], "dtype": "float32"}
    assert (doc["samples"], doc["window"], doc["batch_size"], doc["batches"]) == (20, 7, 5, 4)
    assert (doc["stateful"], doc["packing"], doc["order"]) == (True, "block", "interleaved")
    assert (doc["sequences"], doc["filler_rows"], doc["resets"]) == (5, 0, 5)
    assert doc["padded_fraction"] == round(1 - 5 * 22 / (20 * 7), 4)
    assert doc["targets"] == ["next_x0"]
    assert doc["manifest"] == {
        "path": str(output.with_name("walks.manifest.json")),
        "present": True,
        "hash_matches": True,
    }
    assert "layout      stateful, block packing, interleaved order" in text
    assert text.splitlines()[-1] == f"manifest    {doc['manifest']['path']}, hash matches"


def test_a_stream_output_counts_the_sequences_inside_its_rows(tbptt, tmp_path: Path) -> None:
    path = tmp_path / "short.npz"
    np.savez(path, values=np.arange(20.0)[:, None], lengths=np.array([5, 3, 4, 2, 6]))
    out = tmp_path / "stream.h5"
    args = ("split", path, "--length", 8, "--batch-size", 1, "--packing", "stream", "-o", out)
    assert tbptt(*args).code == 0
    _, doc = inspect(out)
    # 20 steps in 3 rows of 8: only 3 sequences start a row, all 5 are in the file.
    with h5py.File(out) as f:
        assert len(set(f["sequence"][()].tolist())) == 3
    assert (doc["samples"], doc["sequences"], doc["filler_rows"]) == (3, 5, 0)


def test_an_output_whose_hash_differs_or_manifest_is_gone(output: Path) -> None:
    with h5py.File(output, "r+") as f:
        f["X"][0, 0, 0] += 1
    _, doc = inspect(output)
    assert doc["manifest"]["hash_matches"] is False
    output.with_name("walks.manifest.json").unlink()
    text, doc = inspect(output)
    assert doc["manifest"]["present"] is False and doc["manifest"]["hash_matches"] is None
    assert text.endswith(", missing")


def test_cli_json_out_text_err_and_exit_codes(tbptt, output: Path, tmp_path: Path) -> None:
    as_json = tbptt("inspect", output, "--json")
    assert as_json.code == 0 and as_json.stderr == ""
    assert json.loads(as_json.stdout)["samples"] == 20
    words = tbptt("inspect", output)
    assert words.stdout == "" and words.stderr.startswith(f"file        {output} (")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    refused = tbptt("inspect", foreign)
    assert refused.code == 65 and "not a tbptt output" in refused.stderr
    assert tbptt("inspect", tmp_path / "absent.h5").code == 66
    assert tbptt("inspect", tmp_path / "absent.csv").code == 66
    with pytest.raises(InputMissingError):
        inspect(tmp_path / "absent.h5")


def test_a_file_with_missing_values_is_read_twice_at_most(tmp_path, monkeypatch):
    import tbptt_cli.readers as readers
    from tbptt_cli.inspect import inspect_path
    from tbptt_cli.options import InputOptions

    path = tmp_path / "gappy.csv"
    path.write_text("id,a,b,c\n1,1,,3\n1,NA,5,6\n2,7,8,nan\n2,1,2,3\n")
    calls = []
    real = readers.read_input
    monkeypatch.setattr(readers, "read_input", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, document = inspect_path(InputOptions(path=str(path), id_col="id"))
    assert document["missing"] == {"a": 1, "b": 1, "c": 1}
    assert len(calls) == 2
