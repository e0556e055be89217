"""``tbptt grid compare``: which chunk length trained best, over repeated runs?

Scores per length are compared by rank: the length with the best median against each
other one with a two-sided Mann-Whitney U test (exact for small tie-free samples, else
the normal approximation with tie and continuity corrections, as scipy's ``auto``), the
p-values Holm-adjusted for the number of comparisons. numpy only.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tbptt_cli.errors import InputDataError, InputMissingError, UsageError

COLUMNS = ("length", "repeat", "score")
EXACT_LIMIT = 8  # exact p-values when the smaller sample is at most this big and tie-free


# --- statistics ----------------------------------------------------------------------


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def u_distribution(n1: int, n2: int) -> np.ndarray:
    """How many of the C(n1+n2, n1) orderings give U = 0..n1*n2 (no ties)."""
    # counts[m][u] for m of the first sample among the items placed so far, built by
    # placing one item of the second sample (shifting U by m) or of the first at a time.
    table = [[np.ones(1)] + [np.zeros(1)] * n1]
    for placed in range(1, n1 + n2 + 1):
        row = []
        for m in range(n1 + 1):
            k = placed - m  # items of the second sample placed
            if k < 0 or k > n2:
                row.append(np.zeros(1))
                continue
            total = np.zeros(m * k + 1)
            if m:
                prior = table[-1][m - 1]  # a first-sample item: beats none of the k seconds
                total[: len(prior)] += prior
            if k:
                prior = table[-1][m]  # a second-sample item above m firsts: U grows by m
                total[m : m + len(prior)] += prior
            row.append(total)
        table.append(row)
    return table[-1][n1]


def mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(U of ``x``, two-sided p-value), as ``scipy.stats.mannwhitneyu(x, y)``."""
    n1, n2 = len(x), len(y)
    ranks = midranks(np.concatenate([x, y]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    larger = max(u1, n1 * n2 - u1)
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    if min(n1, n2) <= EXACT_LIMIT and np.all(ties == 1):
        counts = u_distribution(n1, n2)
        tail = counts[int(round(larger)) :].sum() / counts.sum()
        return u1, float(min(1.0, 2 * tail))
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
    if variance <= 0:
        return u1, 1.0
    z = (larger - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return u1, float(min(1.0, math.erfc(z / math.sqrt(2))))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the given order."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


# --- inputs ----------------------------------------------------------------------------


def read_grid_index(path: str) -> dict[int, dict[str, Any]]:
    """grid.json's entries by length; exit 66 when missing, 65 when it is not one. ``path``
    may be the grid's folder (what ``tbptt grid -o`` names), which holds its grid.json."""
    index = Path(path) / "grid.json" if Path(path).is_dir() else Path(path)
    try:
        text = index.read_text(encoding="utf-8")
    except FileNotFoundError:
        missing = f"{index}: no such file; give the grid.json of a grid run"
        raise InputMissingError(missing) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputMissingError(f"{index}: cannot read it ({e})") from None
    try:
        document = json.loads(text)
        entries = {int(e["length"]): e for e in document["grid"]}
    except (ValueError, KeyError, TypeError):
        raise InputDataError(
            f'{index}: not a grid index (no "grid" list of entries with a "length"); '
            f"give the grid.json that tbptt grid wrote"
        ) from None
    if not entries:
        raise InputDataError(f"{index}: the grid lists no length")
    return entries


def read_results(path: str, known: dict[int, dict[str, Any]]) -> dict[int, np.ndarray]:
    """RESULTS.csv as scores per length (in file order); bad lines exit 65 with path:line."""
    try:
        stream = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except FileNotFoundError:
        raise InputMissingError(f"{path}: no such file") from None
    except OSError as e:
        raise InputMissingError(f"{path}: cannot read it ({e.strerror})") from None
    scores: dict[int, list[float]] = {}
    seen: dict[tuple[int, int], int] = {}
    with stream:
        try:
            rows = list(csv.reader(stream))
        except (csv.Error, UnicodeDecodeError) as e:
            raise InputDataError(f"{path}: not a readable CSV ({e})") from None
    if not rows:
        raise InputDataError(f"{path}:1: empty file; the first line must be length,repeat,score")
    header = [name.strip() for name in rows[0]]
    where = {}
    for name in COLUMNS:
        if name not in header:
            raise InputDataError(
                f"{path}:1: no {name!r} column in the header {','.join(header)!r}; "
                f"the header must name length, repeat and score"
            )
        where[name] = header.index(name)
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputDataError(
                f"{path}:{line}: {len(row)} field(s), the header has {len(header)}"
            )
        length = _integer(path, line, where["length"], row, known)
        repeat = _integer(path, line, where["repeat"], row, None)
        score = _score(path, line, where["score"], row)
        if (length, repeat) in seen:
            raise InputDataError(
                f"{path}:{line}: length {length} repeat {repeat} appears twice (first on line "
                f"{seen[length, repeat]}); give each repeat its own number"
            )
        seen[length, repeat] = line
        scores.setdefault(length, []).append(score)
    if len(scores) < 2:
        found = ", ".join(map(str, scores)) or "none"
        raise InputDataError(
            f"{path}: results for {len(scores)} length(s) ({found}); comparing needs two or more"
        )
    return {k: np.array(v) for k, v in sorted(scores.items())}


def _integer(
    path: str, line: int, column: int, row: list[str], known: dict[int, Any] | None
) -> int:
    text = row[column].strip()
    name = COLUMNS[0] if known is not None else COLUMNS[1]
    try:
        value = int(text)
    except ValueError:
        raise InputDataError(
            f"{path}:{line}:{column + 1}: {name} {text!r} is not an integer"
        ) from None
    if known is not None and value not in known:
        lengths = ", ".join(map(str, sorted(known)))
        raise InputDataError(
            f"{path}:{line}:{column + 1}: length {value} is not in the grid (lengths {lengths}); "
            f"check the results belong to this grid.json"
        )
    return value


def _score(path: str, line: int, column: int, row: list[str]) -> float:
    text = row[column].strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputDataError(
            f"{path}:{line}:{column + 1}: score {text!r} is not a finite number; drop the "
            f"line of a failed run"
        )
    return value


# --- the comparison ----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    best: int
    clear: bool
    verdict: str
    rows: list[dict[str, Any]]


def compare(scores: dict[int, np.ndarray], higher_is_better: bool, alpha: float) -> Comparison:
    """The best length by median (then mean, then the shorter), tested against each other."""
    sign = -1.0 if higher_is_better else 1.0
    lengths = list(scores)
    best = min(
        lengths,
        key=lambda k: (sign * float(np.median(scores[k])), sign * float(scores[k].mean()), k),
    )
    others = [k for k in lengths if k != best]
    tests = [mann_whitney(scores[best], scores[k]) for k in others]
    adjusted = dict(zip(others, holm([p for _, p in tests]), strict=True))
    raw = dict(zip(others, tests, strict=True))
    rows = []
    for k in lengths:
        q1, median, q3 = np.percentile(scores[k], [25, 50, 75]).tolist()
        rows.append(
            {
                "length": k,
                "n": len(scores[k]),
                "median": median,
                "q1": q1,
                "q3": q3,
                "mean": float(scores[k].mean()),
                "min": float(scores[k].min()),
                "max": float(scores[k].max()),
                "u": raw[k][0] if k in raw else None,
                "p": raw[k][1] if k in raw else None,
                "p_holm": adjusted.get(k),
            }
        )
    beaten = [k for k in others if adjusted[k] < alpha]
    clear = len(beaten) == len(others)
    return Comparison(best, clear, verdict(best, scores, adjusted, alpha, higher_is_better), rows)


def verdict(
    best: int,
    scores: dict[int, np.ndarray],
    adjusted: dict[int, float],
    alpha: float,
    higher_is_better: bool,
) -> str:
    way = "higher" if higher_is_better else "lower"
    median = f"median score {float(np.median(scores[best])):.4g}, {way} is better"
    kept = {k: p for k, p in adjusted.items() if p >= alpha}
    if not kept:
        worst = max(adjusted.values())
        return (
            f"best length {best} ({median}): better than every other length "
            f"(Mann-Whitney U, Holm-adjusted p <= {worst:.2g} < {alpha})"
        )
    ties = ", ".join(f"{k} (p = {p:.2g})" for k, p in kept.items())
    return (
        f"no clear best length: {best} has the best median ({median}) but is not "
        f"significantly better than {ties} at alpha {alpha}"
    )


def compare_grid(
    grid_index: str,
    results: str,
    output: str | None,
    higher_is_better: bool,
    alpha: float,
    no_clobber: bool,
    wait: float,
) -> dict[str, Any]:
    """Read, test, and write the page when asked; returns what ``--json`` prints."""
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, not {alpha}")
    if output is not None:
        from tbptt_cli.report import plots

        plots.require()
    entries = read_grid_index(grid_index)
    scores = read_results(results, entries)
    missing = [k for k in entries if k not in scores]
    warnings = [f"no results for length(s) {', '.join(map(str, missing))}"] if missing else []
    result = compare(scores, higher_is_better, alpha)
    for row in result.rows:
        row["padded_fraction"] = entries[row["length"]].get("padded_fraction")
    if output is not None:
        from tbptt_cli.report.page import compare_page, write_html

        page = compare_page(grid_index, results, scores, result, higher_is_better, alpha)
        write_html(Path(output), page, no_clobber, wait)
    return {
        "best": result.best,
        "clear": result.clear,
        "verdict": result.verdict,
        "higher_is_better": higher_is_better,
        "alpha": alpha,
        "test": "mann-whitney-u, two-sided, holm-adjusted",
        "lengths": result.rows,
        "output": output,
        "warnings": warnings,
    }
