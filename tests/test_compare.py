"""tbptt grid compare: the rank test against scipy, the verdicts, and refused inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tbptt_cli.report.compare import holm, mann_whitney, midranks, u_distribution


@pytest.mark.parametrize(
    ("n1", "n2", "ties", "seed"),
    [(3, 4, False, 0), (8, 30, False, 1), (6, 6, True, 2), (30, 30, False, 3), (30, 25, True, 4)],
)
def test_mann_whitney_equals_scipy(n1: int, n2: int, ties: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0, 1, n1), rng.normal(0.7, 1, n2)
    if ties:
        x, y = np.round(x), np.round(y)
    u, p = mann_whitney(x, y)
    expected = stats.mannwhitneyu(x, y)
    assert u == pytest.approx(expected.statistic, abs=1e-9)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-12)


def test_the_exact_u_distribution_is_the_gaussian_binomial() -> None:
    counts = u_distribution(2, 3)  # C(5, 2) = 10 orderings, U = 0..6
    assert counts.tolist() == [1, 1, 2, 2, 2, 1, 1]
    assert u_distribution(4, 4).sum() == 70


def test_midranks_share_ties_and_holm_is_monotone() -> None:
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def grid_json(tmp_path: Path, lengths: list[int]) -> Path:
    entries = [{"length": k, "padded_fraction": 0.1, "file": f"len_{k}.h5"} for k in lengths]
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"strategy": "grid", "grid": entries}))
    return path


def results(tmp_path: Path, scores: dict[int, np.ndarray]) -> Path:
    lines = ["length,repeat,score"]
    for length, values in scores.items():
        lines += [f"{length},{r},{v!r}" for r, v in enumerate(values.tolist())]
    path = tmp_path / "results.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic(best_shift: float, seed: int = 0) -> dict[int, np.ndarray]:
    """30 repeats per length; length 50 lower by ``best_shift`` standard deviations."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(1.0 - (best_shift if k == 50 else 0), 0.1, 30) for k in (25, 50, 100)}


def test_one_length_clearly_best(tmp_path: Path, tbptt) -> None:
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.3))
    result = tbptt("grid", "compare", index, table)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("best length 50 (median score 0.7")
    assert "lower is better): better than every other length (Mann-Whitney U" in result.stdout
    doc = json.loads(tbptt("grid", "compare", index, table, "--json").stdout)
    assert (doc["best"], doc["clear"], doc["higher_is_better"]) == (50, True, False)
    rows = {row["length"]: row for row in doc["lengths"]}
    assert rows[50]["p"] is None and rows[25]["p_holm"] < 1e-6 and rows[100]["p_holm"] < 1e-6
    assert rows[50]["n"] == 30 and rows[50]["q1"] < rows[50]["median"] < rows[50]["q3"]
    assert rows[25]["padded_fraction"] == 0.1


def test_no_length_clearly_best(tmp_path: Path, tbptt) -> None:
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.0, 7))
    result = tbptt("grid", "compare", index, table, "--json")
    doc = json.loads(result.stdout)
    assert doc["clear"] is False
    assert doc["verdict"].startswith(f"no clear best length: {doc['best']} has the best median")
    assert "is not significantly better than" in doc["verdict"]
    assert all(r["p_holm"] >= 0.05 for r in doc["lengths"] if r["p_holm"] is not None)


def test_alpha_sets_the_bar(tmp_path: Path, tbptt) -> None:
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.03, 1))
    strict = json.loads(tbptt("grid", "compare", index, table, "--json").stdout)
    loose = json.loads(tbptt("grid", "compare", index, table, "--json", "--alpha", 0.9).stdout)
    assert strict["lengths"] == loose["lengths"] and loose["alpha"] == 0.9
    assert (strict["clear"], loose["clear"]) == (False, True)
    assert loose["verdict"].endswith("< 0.9)")


def test_the_page_is_written_whole(tmp_path: Path, tbptt) -> None:
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.3))
    page = tmp_path / "c.html"
    result = tbptt("grid", "compare", index, table, "-o", page, "--json")
    assert json.loads(result.stdout)["output"] == str(page)
    assert result.stderr == f"wrote {page}\n"
    text = page.read_text()
    assert text.count("<svg") == 1 and "best length 50 (median score" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".c.html.lock",
        "c.html",
        "grid.json",
        "results.csv",
    ]
    assert tbptt("grid", "compare", index, table, "-o", page, "--no-clobber").code == 73


def test_higher_is_better_flips_the_winner(tmp_path: Path, tbptt) -> None:
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.3))
    doc = json.loads(tbptt("grid", "compare", index, table, "--json", "--higher-is-better").stdout)
    assert doc["best"] != 50 and doc["higher_is_better"] is True
    assert "higher is better" in doc["verdict"]


def test_missing_lengths_warn(tmp_path: Path, tbptt) -> None:
    scores = synthetic(0.3)
    index, table = grid_json(tmp_path, [25, 50, 100, 200]), results(tmp_path, scores)
    result = tbptt("grid", "compare", index, table)
    assert result.code == 0
    assert "tbptt: warning: no results for length(s) 200" in result.stderr


BAD = [
    ("", "results.csv:1: empty file; the first line must be length,repeat,score"),
    (
        "length,run,score\n50,0,1.0\n",
        "results.csv:1: no 'repeat' column in the header 'length,run,score'; the header must "
        "name length, repeat and score",
    ),
    ("length,repeat,score\n50,0\n", "results.csv:2: 2 field(s), the header has 3"),
    (
        "length,repeat,score\n50,0,1\nfifty,1,2\n",
        "results.csv:3:1: length 'fifty' is not an integer",
    ),
    (
        "length,repeat,score\n50,0,1\n75,0,2\n",
        "results.csv:3:1: length 75 is not in the grid (lengths 25, 50, 100); check the "
        "results belong to this grid.json",
    ),
    (
        "length,repeat,score\n50,0,1\n25,0,nan\n",
        "results.csv:3:3: score 'nan' is not a finite number; drop the line of a failed run",
    ),
    (
        "length,repeat,score\n50,0,1\n25,0,1\n\n50,0,2\n",
        "results.csv:5: length 50 repeat 0 appears twice (first on line 2); give each repeat "
        "its own number",
    ),
    (
        "length,repeat,score\n50,0,1\n50,1,2\n",
        "results.csv: results for 1 length(s) (50); comparing needs two or more",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_malformed_results_exit_65_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tbptt, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    grid_json(tmp_path, [25, 50, 100])
    Path("results.csv").write_text(text)
    result = tbptt("grid", "compare", "grid.json", "results.csv", "-o", "c.html")
    assert (result.code, result.stdout) == (65, "")
    assert result.stderr == f"tbptt: error: {message}\n"
    assert not Path("c.html").exists()


def test_the_grid_folder_stands_for_its_grid_json(tmp_path: Path, tbptt) -> None:
    # `tbptt grid -o out/g.h5` says "wrote out/g.h5": that folder is what a user passes.
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.3))
    by_folder = tbptt("grid", "compare", index.parent, table, "--json")
    assert by_folder.code == 0, by_folder.stderr
    assert by_folder.stdout == tbptt("grid", "compare", index, table, "--json").stdout
    index.unlink()
    missing = tbptt("grid", "compare", tmp_path, table)
    assert missing.code == 66
    assert f"{index}: no such file; give the grid.json of a grid run" in missing.stderr


def test_bad_grid_index_and_missing_files(tmp_path: Path, tbptt) -> None:
    table = results(tmp_path, synthetic(0.3))
    bad = tmp_path / "bad.json"
    bad.write_text('{"grid": "no"}')
    result = tbptt("grid", "compare", bad, table)
    assert result.code == 65 and "not a grid index" in result.stderr
    assert tbptt("grid", "compare", tmp_path / "none.json", table).code == 66
    assert tbptt("grid", "compare", grid_json(tmp_path, [25]), tmp_path / "none.csv").code == 66
    result = tbptt("grid", "compare", grid_json(tmp_path, [25]), table, "--alpha", "1.5")
    assert result.code == 2 and "--alpha must be between 0 and 1, not 1.5" in result.stderr


def test_the_page_needs_the_report_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tbptt
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    index, table = grid_json(tmp_path, [25, 50, 100]), results(tmp_path, synthetic(0.3))
    result = tbptt("grid", "compare", index, table, "-o", tmp_path / "c.html")
    assert result.code == 2
    assert "pip install 'tbptt-cli[report]'" in result.stderr
    assert tbptt("grid", "compare", index, table).code == 0  # the verdict alone needs no plots
