"""tbptt report and --report: the numbers behind the page, the page itself, and failures."""

from __future__ import annotations

import fcntl
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.report.facts import (
    PaddingMap,
    candidate_batch_sizes,
    candidate_lengths,
    padding_map,
)
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.acf import significance_band

LOAD = ["sample_data/load.csv", "--id-col", "site", "--time-col", "hour"]


@pytest.fixture(autouse=True)
def at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parent.parent)


def walks(tmp_path: Path) -> Path:
    """Nine ragged sequences, so block and lanes packings differ."""
    lengths = [37, 120, 64, 5, 90, 91, 200, 33, 64]
    path = tmp_path / "walks.npz"
    values = np.random.default_rng(0).normal(size=(sum(lengths), 1)).cumsum(axis=0)
    np.savez(path, values=values, lengths=np.array(lengths))
    return path


def test_the_padding_map_is_what_split_writes(tmp_path: Path, tbptt) -> None:
    path = walks(tmp_path)
    data = SequenceSet.from_offsets(
        np.load(path)["values"], np.concatenate([[0], np.cumsum(np.load(path)["lengths"])])
    )
    padding = padding_map(data, [16, 50], [1, 4])
    for p, packing in enumerate(("block", "lanes")):
        for i, length in enumerate((16, 50)):
            for j, batch in enumerate((1, 4)):
                out = tmp_path / f"{packing}{length}{batch}.h5"
                args = ["--length", length, "--batch-size", batch, "--packing", packing]
                assert tbptt("split", path, *args, "-o", out, "-q").code == 0
                with h5py.File(out) as f:
                    padded = 1 - f["mask"][()].mean()
                assert padding.padded[p, i, j] == pytest.approx(padded, abs=1e-12)
    assert padding.padded[0, 0, 1] != padding.padded[1, 0, 1]  # the packings differ here


def test_best_layout_is_the_largest_batch_within_the_slack() -> None:
    padded = np.array([[[0.0, 0.05, 0.3]], [[0.0, 0.09, 0.12]]])  # block, lanes x 1 length
    padding = PaddingMap([24], [1, 8, 32], padded)
    assert padding.best([0]) == (8, "block", 0.05)  # 32 is 12 points off; block wins the tie
    padding.padded[0, 0, 1] = 0.5
    assert padding.best([0]) == (8, "lanes", 0.09)


def test_candidate_lengths_and_batch_sizes() -> None:
    assert candidate_lengths(np.array([25] * 4), None, [24]) == [16, 24, 25]
    assert candidate_lengths(np.array([3000]), None, []) == [16, 32, 64, 128, 256, 512, 1024]
    assert candidate_lengths(np.array([12, 5]), None, []) == [12]
    assert candidate_lengths(np.array([3000]), "100,50", [7]) == [7, 50, 100]
    assert candidate_batch_sizes(6, None, []) == [1, 2, 4, 6]
    assert candidate_batch_sizes(500, None, [3]) == [1, 2, 3, 4, 8, 16, 32, 64, 128]
    assert candidate_batch_sizes(500, "16,8", []) == [8, 16]


def test_report_names_what_domain_acf_chooses(tmp_path: Path, tbptt) -> None:
    result = tbptt("report", *LOAD, "-o", tmp_path / "r.html", "--max-lag", 30, "--json")
    assert result.code == 0, result.stderr
    # --json adds the object on stdout; the line for people stays (as every command's does)
    assert (
        result.stderr == f"wrote {tmp_path / 'r.html'} (lags by rule: pacf 29, acf 12, season 24)\n"
    )
    doc = json.loads(result.stdout)
    for rule in ("pacf", "acf", "season"):
        out = tmp_path / f"{rule}.h5"
        run = tbptt("domain", "acf", *LOAD, "--rule", rule, "--max-lag", 30, "-o", out, "-q")
        assert run.code == 0
        analysis = json.loads(out.with_suffix(".manifest.json").read_text())["analysis"]
        assert doc["rules"][rule]["lag"] == analysis["lag"]
    assert doc["rules"]["season"]["lag"] == 24
    assert doc["rules"]["season"]["reason"].startswith("the highest significant ACF peak")
    page = (tmp_path / "r.html").read_text()
    assert "domain acf would choose lag <b>29</b> with its default rule pacf" in page
    assert (
        "tbptt domain acf sample_data/load.csv --id-col site --time-col hour --max-lag 30 "
        "--rule season --batch-size 3 -o load_season.h5" in page.replace("</span> <span>", " ")
    )


def test_each_rule_examines_the_lags_domain_acf_would(tmp_path: Path, tbptt) -> None:
    """Without --max-lag, season looks further than pacf and acf (weekly CO2: its year, 52),
    in the report and on the page of a run that used another rule."""
    import statsmodels.datasets.co2 as co2

    path = tmp_path / "co2.csv"
    path.write_bytes((Path(co2.__file__).parent / "co2.csv").read_bytes())
    reading = [path, "--nan", "ffill"]
    doc = json.loads(tbptt("report", *reading, "-o", tmp_path / "r.html", "--json").stdout)
    for rule in ("pacf", "acf", "season"):
        out = tmp_path / f"{rule}.h5"
        page = tmp_path / f"{rule}.html"
        run = tbptt("domain", "acf", *reading, "--rule", rule, "-o", out, "--report", page, "-q")
        assert run.code == 0, run.stderr
        analysis = json.loads(out.with_suffix(".manifest.json").read_text())["analysis"]
        assert (doc["rules"][rule]["lag"], doc["rules"][rule]["max_lag"]) == (
            analysis["lag"],
            analysis["max_lag"],
        )
        assert "<td class=text>season</td><td>52</td>" in page.read_text()
    assert [doc["rules"][r]["max_lag"] for r in ("pacf", "acf", "season")] == [33, 33, 133]
    assert doc["rules"]["season"]["lag"] == 52 and doc["max_lag"] == 133


def test_report_options_reach_the_page(tmp_path: Path, tbptt) -> None:
    out = tmp_path / "r.html"
    options = ["--lengths", "48,24", "--batch-sizes", "3,1", "--alpha", 0.01, "--max-lag", 26]
    doc = json.loads(tbptt("report", *LOAD, *options, "-o", out, "--json").stdout)
    assert doc["rules"]["season"]["lag"] == 24 and doc["max_lag"] == 26
    assert doc["lengths"] == sorted({24, 48} | {r["length"] for r in doc["rules"].values()})
    assert doc["batch_sizes"] == [1, 3]
    assert doc["band"] == pytest.approx(significance_band(0.01, 3984))
    assert doc["output"] == str(out) and out.is_file()


def test_report_waits_for_the_lock(tmp_path: Path, tbptt) -> None:
    out = tmp_path / "r.html"
    with open(tmp_path / ".r.html.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = tbptt("report", *LOAD, "-o", out, "--wait", 0.1)
    assert result.code == 75 and "another tbptt run holds the lock" in result.stderr
    assert not out.exists()


def test_the_page_is_self_contained_and_the_same_every_time(tmp_path: Path, tbptt) -> None:
    for name in ("a.html", "b.html"):
        assert tbptt("report", *LOAD, "-o", tmp_path / name, "-q").code == 0
    page = (tmp_path / "a.html").read_bytes()
    assert page == (tmp_path / "b.html").read_bytes()
    text = page.decode()
    assert text.count("<svg") == 3 and "<script" not in text
    # Only references inside the page (#id, data:), nothing to fetch.
    assert re.findall(r"\b(?:src|href)\s*=\s*\"(?!#|data:)|url\((?!#)|@import", text) == []
    assert len(re.findall(r"href=\"#", text)) > 10
    assert set(re.findall(r"https?://[^\"' ]+", text)) == {
        "http://www.w3.org/2000/svg",  # namespaces, never fetched
        "http://www.w3.org/1999/xlink",
    }


def test_report_refuses_bad_input(tmp_path: Path, tbptt, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.html"
    result = tbptt("report", *LOAD, "--lengths", "24,x", "-o", out)
    assert result.code == 2
    assert "--lengths must be comma-separated positive integers" in result.stderr
    result = tbptt("report", *LOAD, "--batch-sizes", "0", "-o", out)
    assert result.code == 2 and "--batch-sizes must be comma-separated" in result.stderr
    assert tbptt("report", tmp_path / "none.csv", "-o", out).code == 66
    assert tbptt("report", *LOAD, "-o", tmp_path / "no" / "r.html").code == 73
    result = tbptt("report", *LOAD, "--feature", "load", "-o", out)
    assert result.code == 0  # a report draws what it can and says why not
    assert "--feature &#x27;load&#x27; is not a feature of the input" in out.read_text()
    assert tbptt("report", *LOAD, "-o", out, "--no-clobber").code == 73
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = tbptt("report", *LOAD, "-o", tmp_path / "m.html")
    assert result.code == 2
    assert result.stderr == (
        "tbptt: error: HTML reports need matplotlib, which is not installed; "
        "pip install 'tbptt-cli[report]'\n"
    )
    assert not (tmp_path / "m.html").exists()


def test_run_report_beside_an_unchanged_output(tmp_path: Path, tbptt) -> None:
    split = ["split", "sample_data/sensors.csv", "--id-col", "sensor", "--length", "100"]
    assert tbptt(*split, "-o", tmp_path / "plain.h5", "-q").code == 0
    result = tbptt(*split, "-o", tmp_path / "s.h5", "--report", tmp_path / "s.html")
    assert result.code == 0, result.stderr
    assert result.stderr.endswith(f"wrote {tmp_path / 's.html'} (report)\n")
    assert (tmp_path / "s.h5").read_bytes() == (tmp_path / "plain.h5").read_bytes()
    page = (tmp_path / "s.html").read_text()
    assert "split wrote" in page and "Its layout is outlined in black" in page
    params = json.loads((tmp_path / "s.manifest.json").read_text())["params"]
    assert params["output"]["report"] == str(tmp_path / "s.html")


def test_run_report_lists_the_validation_file(tmp_path: Path, tbptt) -> None:
    args = ["--length", 24, "--val-fraction", 0.2, "--val-by", "time", "--batch-size", 3]
    out, page = tmp_path / "v.h5", tmp_path / "v.html"
    assert tbptt("split", *LOAD, *args, "-o", out, "--report", page, "-q").code == 0
    rows = re.findall(r"<td class=text>([\w.]+\.h5)</td>", page.read_text())
    assert rows == ["v.h5", "v.val.h5"]


def test_a_failed_run_writes_no_report(tmp_path: Path, tbptt, monkeypatch) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a\n1\nnan\n3\n")
    out, page = tmp_path / "o.h5", tmp_path / "o.html"
    assert tbptt("split", bad, "--length", 2, "-o", out, "--report", page).code == 65
    assert (
        tbptt("split", bad, "--length", 2, "-o", out, "--report", tmp_path / "x" / "p").code == 73
    )
    result = tbptt("split", bad, "--length", 2, "-o", out, "--report", out)
    assert result.code == 2 and "names an output of the run" in result.stderr
    from tbptt_cli.report import plots

    def broken(*args: object) -> str:
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(plots, "padding_heatmap", broken)
    good = ["split", *LOAD, "--length", 24, "-o", out, "--report", page]
    assert tbptt(*good).code == 70
    assert tbptt(*good[:-2], "-n", "--report", page).code == 0  # a dry run draws nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == [".o.h5.lock", "bad.csv"]


def test_report_from_a_config_file(tmp_path: Path, tbptt) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        # Relative paths in a config are taken from its folder: these are absolute or local.
        f"strategy: domain-acf\ninput: {{path: {Path(LOAD[0]).resolve()}, id_col: site, "
        "time_col: hour}\ndomain-acf: {rule: season}\noutput: {path: l.h5, report: l.html}\n"
    )
    assert tbptt("run", config, "-q").code == 0
    page = (tmp_path / "l.html").read_text()
    assert "Chosen lag: <b>24</b> (rule season), chunk length 24" in page


def test_grid_report_inside_and_outside_the_directory(tmp_path: Path, tbptt) -> None:
    grid = ["grid", "sample_data/sensors.csv", "--id-col", "sensor", "--lengths", "50,100,200"]
    inside = tmp_path / "g" / "report.html"
    assert tbptt(*grid, "-o", tmp_path / "g", "--report", inside, "-q").code == 0
    assert tbptt(*grid, "-o", tmp_path / "h", "--report", tmp_path / "h.html", "-q").code == 0
    for page in (inside, tmp_path / "h.html"):
        text = page.read_text()
        assert all(f"<td class=text>len_{k}.h5</td>" in text for k in (50, 100, 200))
        assert "Their layouts are outlined" in text
    assert tbptt(*grid, "-o", tmp_path / "g", "--report", inside, "-q").code == 0  # replaced
