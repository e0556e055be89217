"""tbptt report on real data nobody here wrote (the statsmodels datasets): what the page
says about the input must be true of it, and say what reading it left out or changed.

Plot labels are checked in the SVG text: matplotlib writes each label as a comment
(``<!-- 2.5% -->``) beside its glyphs.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tbptt_cli.report.plots import value_range

STATSMODELS = Path(__import__("statsmodels").__file__).parent / "datasets"


def dataset(name: str, tmp_path: Path) -> Path:
    """A statsmodels dataset's CSV, copied so that outputs land beside it."""
    path = tmp_path / f"{name}.csv"
    path.write_bytes((STATSMODELS / name / f"{name}.csv").read_bytes())
    return path


def report(tbptt, *args: object) -> tuple[dict, str, str]:
    """(--json, page text, stderr) of ``tbptt report ARGS``."""
    result = tbptt("report", *args, "--json")
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    return doc, Path(doc["output"]).read_text(), result.stderr


def commands(page: str) -> list[str]:
    """The command lines of the page, as a person copies them."""
    lines = re.findall(r'<pre class="command">(.*?)</pre>', page)
    return [re.sub(r"</?span>", "", line).replace("&#x27;", "'") for line in lines]


def test_what_reading_left_out_is_on_the_page_stderr_and_json(tmp_path: Path, tbptt) -> None:
    """Grunfeld's panel without --id-col is one sequence of 11 firms end to end: say so."""
    path = dataset("grunfeld", tmp_path)
    doc, page, stderr = report(tbptt, path, "-o", tmp_path / "g.html")
    said = [
        "left out of the features: year (a calendar name)",
        "did you mean --id-col firm?",
        "did you mean --time-col year?",
        "the ACF of 'invest' stays above 0 up to lag 23 (a trend)",
    ]
    assert stderr.count("tbptt: warning: ") == len(said)
    for words in said:
        assert sum(words in w for w in doc["warnings"]) == 1, words
        assert words in stderr
        assert words.replace("'", "&#x27;") in page
    assert page.index('<ul class="warnings">') < page.index("<h2>Sequence lengths</h2>")
    quiet = tbptt("report", path, "-o", tmp_path / "q.html", "-q")
    assert quiet.code == 0 and quiet.stderr == ""
    # Read as the panel it is, there is nothing to say.
    panel = ["--id-col", "firm", "--time-col", "year", "-o", tmp_path / "panel.html"]
    doc, page, _ = report(tbptt, path, *panel)
    assert doc["warnings"] == [] and '<ul class="warnings">' not in page


def test_a_run_report_carries_the_run_warnings(tmp_path: Path, tbptt) -> None:
    path = dataset("co2", tmp_path)
    page = tmp_path / "co2.html"
    run = ["domain", "acf", path, "--time-col", "date", "--nan", "ffill", "--rule", "season"]
    result = tbptt(*run, "-o", tmp_path / "co2.h5", "--report", page, "-q")
    assert result.code == 0, result.stderr
    text = page.read_text()
    assert "--nan ffill: 59 missing cell(s) (2.6% of values) filled" in text
    assert "stays above 0 up to lag 228 (a trend)" in text


def test_one_length_is_a_sentence_not_a_histogram(tmp_path: Path, tbptt) -> None:
    sunspots = dataset("sunspots", tmp_path)
    _, page, _ = report(tbptt, sunspots, "-o", tmp_path / "s.html")
    assert '<p class="lengths">One sequence of 309 steps.</p>' in page
    assert 'id="plot-lengths"' not in page
    elnino = dataset("elnino", tmp_path)
    doc, page, _ = report(tbptt, elnino, "--layout", "wide", "-o", tmp_path / "e.html")
    assert '<p class="lengths">All 61 sequences have 12 steps.</p>' in page
    assert "left out of the steps: YEAR (a calendar name)" in doc["warnings"][0]


def test_one_series_is_suggested_in_parallel_streams(tmp_path: Path, tbptt) -> None:
    """Yearly sunspots are one series: every batch size but 1 is filler, so the commands
    cut it into streams (as inspect suggests) and each gives a batch larger than 1."""
    path = dataset("sunspots", tmp_path)
    doc, page, _ = report(tbptt, path, "-o", tmp_path / "s.html")
    assert doc["batch_sizes"] == [1]
    assert "so the commands below cut it into parallel streams" in page
    lines = commands(page)
    assert lines and all("--streams auto" in line and "--batch-size" not in line for line in lines)
    for number, line in enumerate(lines):
        words = shlex.split(line)[1:]
        words[words.index("-o") + 1] = str(tmp_path / f"out{number}")  # a file or grid folder
        result = tbptt(*words, "--json")
        assert result.code == 0, result.stderr
        summary = json.loads(result.stdout)
        sizes = (
            [e["batch_size"] for e in summary["grid"]]
            if "grid" in summary
            else [summary["batch_size"]]
        )
        assert min(sizes) > 1, line


def test_the_suggested_grid_has_two_lengths_and_runs_as_printed(tmp_path: Path, tbptt) -> None:
    """El Nino's years (12 months each): pacf and acf both pick lag 10; grid compare needs
    two lengths, so the grid adds the next candidate, the whole year."""
    path = dataset("elnino", tmp_path)
    doc, page, _ = report(tbptt, path, "--layout", "wide", "-o", tmp_path / "e.html")
    assert (doc["rules"]["pacf"]["lag"], doc["rules"]["acf"]["lag"]) == (10, 10)
    grid = commands(page)[-1]
    assert grid.startswith(f"tbptt grid {path} --layout wide --lengths 10,12 --batch-size 61")
    words = shlex.split(grid)[1:]
    words[words.index("-o") + 1] = str(tmp_path / "grid")
    assert tbptt(*words, "-q").code == 0
    index = json.loads((tmp_path / "grid" / "grid.json").read_text())
    padded = {e["length"]: e["padded_fraction"] for e in index["grid"]}
    assert padded == pytest.approx({10: 0.4, 12: 0.0})  # 2 chunks of 10 for 12 steps
    assert [b["padded"] for b in doc["best"]] == pytest.approx([0.4, 0.0])


def test_the_season_reason_gives_the_values_the_rule_ranks(tmp_path: Path, tbptt) -> None:
    """Weekly CO2 differenced: lag 52 is the smoothed peak (+0.282) though the ACF itself
    is lower there (+0.262) than at 53 (+0.319); the reason says both, true to statsmodels."""
    from statsmodels.tsa.stattools import acf

    path = dataset("co2", tmp_path)
    doc, _, _ = report(tbptt, path, "--nan", "ffill", "-o", tmp_path / "c.html")
    series = np.diff(pd.read_csv(path)["co2"].ffill().to_numpy())
    raw = acf(series, nlags=60)
    assert doc["rules"]["season"]["lag"] == 52
    assert doc["rules"]["season"]["reason"] == (
        "the highest significant ACF peak after the ACF first crosses zero at lag 11: +0.282 "
        f"on the ACF averaged over lags k +- k/16 ({raw[52]:+.3f} at lag 52 alone)"
    )
    assert raw[53] > raw[52]


def test_the_pacf_reason_counts_what_noise_would_give(tmp_path: Path, tbptt) -> None:
    path = dataset("macrodata", tmp_path)
    doc, page, _ = report(tbptt, path, "-o", tmp_path / "m.html")
    assert doc["rules"]["pacf"]["reason"].endswith("4 of the 23 lags are (white noise: about 1.2)")
    # The padding's colour bar keeps the decimals its ticks need (not 2% and 8%).
    assert "<!-- 2.5% -->" in page and "<!-- 7.5% -->" in page


def test_the_correlogram_scale_fits_small_values() -> None:
    low, high = value_range(np.array([0.02, -0.03, 0.01]), 0.02)
    assert -0.035 < low < -0.03 and 0.02 < high < 0.04
    assert value_range(np.array([0.95, -0.9]), 0.02)[1] == 1.05
