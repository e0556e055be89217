"""The pages as a person sees them: rendered by headless Chromium and screenshotted.

Each plot must be on screen and drawn (varied pixels, a fair share of ink), and the page
must name the lag it is about. Skipped, saying why, only where Chromium is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chromium import assert_drawn, browser, render

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent
STATSMODELS = Path(__import__("statsmodels").__file__).parent / "datasets"
RED = np.array([214, 39, 40])  # matplotlib's tab:red, the chosen lag's line
ORANGE = np.array([255, 127, 14])  # tab:orange, the best length's box


@pytest.fixture(autouse=True)
def at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    browser()  # skips when Chromium is missing
    monkeypatch.chdir(ROOT)


def red_pixels(region: np.ndarray) -> int:
    return int((np.abs(region.astype(int) - RED).sum(axis=2) < 40).sum())


def test_the_input_report_on_real_sunspots(tmp_path: Path, tbptt) -> None:
    """Yearly sunspot numbers 1700-2008 (statsmodels): the 11-year cycle is season's lag."""
    page = tmp_path / "sunspots.html"
    sunspots = STATSMODELS / "sunspots" / "sunspots.csv"
    result = tbptt("report", sunspots, "--features", "SUNACTIVITY", "-o", page, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["rules"]["season"]["lag"] in (10, 11)
    shown = render(page, tmp_path / "sunspots.png")
    # One sequence: its length is a sentence, not a histogram of one bar.
    assert sorted(shown.plots) == ["plot-acf", "plot-padding"]
    assert "One sequence of 309 steps." in shown.text
    for name in shown.plots:
        assert_drawn(shown.plot(name), name)
    assert "domain acf would choose lag" in shown.text
    season = json.loads(result.stdout)["rules"]["season"]["lag"]
    assert f"season\t{season}\t{season}\tthe highest significant ACF peak" in shown.text


def test_domain_acf_report_marks_the_chosen_lag(tmp_path: Path, tbptt) -> None:
    page = tmp_path / "load.html"
    args = ["sample_data/load.csv", "--id-col", "site", "--time-col", "hour", "--rule", "season"]
    result = tbptt("domain", "acf", *args, "-o", tmp_path / "l.h5", "--report", page, "-q")
    assert result.code == 0, result.stderr
    shown = render(page, tmp_path / "load.png")
    for name in ("plot-lengths", "plot-acf", "plot-padding"):
        assert_drawn(shown.plot(name), name)
    assert "Chosen lag: 24 (rule season), chunk length 24" in shown.text
    # The chosen lag is a red line through both panels of the correlogram.
    assert red_pixels(shown.plot("plot-acf")) > 300
    # ... and the same page without a run draws no red line there.
    plain = tmp_path / "plain.html"
    assert tbptt("report", *args[:5], "-o", plain, "-q").code == 0
    assert red_pixels(render(plain, tmp_path / "plain.png").plot("plot-acf")) < 50


def test_grid_report_has_one_row_per_length(tmp_path: Path, tbptt) -> None:
    page = tmp_path / "grid.html"
    grid = ["grid", "sample_data/sensors.csv", "--id-col", "sensor", "--time-col", "t"]
    lengths = ["--lengths", "50,100,200", "--batch-size", "6"]
    assert tbptt(*grid, *lengths, "-o", tmp_path / "g", "--report", page, "-q").code == 0
    shown = render(page, tmp_path / "grid.png")
    for name in shown.plots:
        assert_drawn(shown.plot(name), name)
    rows = [line.split("\t")[0] for line in shown.text.splitlines() if line.startswith("len_")]
    assert rows == ["len_50.h5", "len_100.h5", "len_200.h5"]
    # Three lengths: a short map, a row each (the input report's map has more rows).
    other = tmp_path / "input.html"
    assert tbptt("report", *grid[1:], "-o", other, "-q").code == 0
    taller = render(other, tmp_path / "input.png").plots["plot-padding"][3]
    assert shown.plots["plot-padding"][3] < taller


def test_compare_page(tmp_path: Path, tbptt) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"grid": [{"length": k} for k in (25, 50, 100)]}))
    rng = np.random.default_rng(3)
    lines = ["length,repeat,score"]
    for k, centre in ((25, 1.0), (50, 0.6), (100, 1.1)):
        lines += [f"{k},{r},{v:.5f}" for r, v in enumerate(rng.normal(centre, 0.1, 30))]
    results = tmp_path / "results.csv"
    results.write_text("\n".join(lines) + "\n")
    page = tmp_path / "compare.html"
    result = tbptt("grid", "compare", grid, results, "-o", page)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("best length 50 ")
    shown = render(page, tmp_path / "compare.png")
    assert list(shown.plots) == ["plot-scores"]
    assert_drawn(shown.plot("plot-scores"), "plot-scores")
    assert result.stdout.strip() in shown.text
    # The best length's box is orange, and its median a dark line across it.
    scores = shown.plot("plot-scores").astype(int)
    rows, columns = np.nonzero(np.abs(scores - ORANGE).sum(axis=2) < 40)
    box = scores[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    dark_rows = (box.sum(axis=2) < 150).mean(axis=1)
    assert dark_rows[3:-3].max() > 0.8  # a line across the box, not its outline
