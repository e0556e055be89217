"""domain acf on trending series: --difference, the season rule's reach and smoothing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.params import DomainAcfParams
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.acf import first_differences, plan_domain_acf, smoothed

SEASON = DomainAcfParams(rule="season")


def weekly(seed: int, noise: float = 0.2, years: int = 10) -> np.ndarray:
    """A CO2-like weekly series: a rising trend and a yearly cycle of 52.18 weeks."""
    t = np.arange(float(round(years * 52.18)))
    rng = np.random.default_rng(seed)
    cycle = 3.0 * np.sin(2 * np.pi * t / 52.1775)
    return 300 + 0.03 * t + 2e-5 * t**2 + cycle + rng.normal(size=len(t)) * noise


def monthly(seed: int, years: int = 20) -> np.ndarray:
    t = np.arange(12.0 * years)
    rng = np.random.default_rng(seed)
    return 100 + t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(size=len(t)) * 2


def one(*series: np.ndarray) -> SequenceSet:
    lengths = [len(s) for s in series]
    values = np.concatenate(series).reshape(-1, 1)
    return SequenceSet.from_offsets(values, np.concatenate([[0], np.cumsum(lengths)]))


def analysis(data: SequenceSet, params: DomainAcfParams = SEASON) -> dict:
    return plan_domain_acf(data, params).report["analysis"]


def test_a_trending_weekly_series_finds_its_year():
    found = [analysis(one(weekly(seed)))["lag"] for seed in range(20)]
    assert all(50 <= lag <= 54 for lag in found), found
    assert sum(lag in (52, 53) for lag in found) >= 16, found
    plan = plan_domain_acf(one(weekly(0, noise=0.1)), SEASON)
    a = plan.report["analysis"]
    assert a["lag"] in (52, 53) and plan.window == a["lag"]
    assert a["difference"] == 1 and a["max_lag"] == 133  # 2.5 x 53, below 522 / 3
    assert a["n"] == 521 and len(a["acf"]) == 134
    assert plan.warnings[0] == (
        "the ACF of 'x0' stays above 0 up to lag 52 (a trend), so the lag was chosen on its "
        "first differences; only the analysis differences them, the values are not changed "
        "(--difference 0 analyses the series "
        "as it is)"
    )
    assert plan.text.startswith("ACF/PACF of the first differences of 'x0': 521 steps in 1")


def test_a_trending_monthly_series_finds_twelve():
    assert [analysis(one(monthly(seed)))["lag"] for seed in range(20)] == [12] * 20
    pooled = one(monthly(1, years=15), monthly(2, years=22))  # ragged, each its own trend
    assert analysis(pooled) == {**analysis(pooled), "lag": 12, "difference": 1}


def test_difference_0_keeps_the_raw_series_and_1_always_differences():
    data = one(monthly(3))
    with pytest.raises(Exception, match=r"never crosses zero \(a trend\?\); pass --difference 1"):
        plan_domain_acf(data, replace(SEASON, difference="0"))
    stationary = one(10 * np.sin(2 * np.pi * np.arange(600.0) / 12) + np.arange(600) % 5)
    assert analysis(stationary)["difference"] == 0  # auto: it crosses zero
    forced = analysis(stationary, replace(SEASON, difference="1"))
    assert forced["difference"] == 1 and forced["lag"] == 12 and forced["n"] == 599
    warnings = plan_domain_acf(stationary, replace(SEASON, difference="1")).warnings
    assert not [w for w in warnings if "difference" in w]  # asked for: no trend warning


def test_a_persistent_stationary_series_is_not_taken_for_a_trend():
    """Its ACF stays above 0 up to a short --max-lag but crosses long before a tenth of
    its length, unlike a trend's."""
    rng = np.random.default_rng(5)
    x = np.zeros(5000)
    for t in range(1, 5000):
        x[t] = 0.95 * x[t - 1] + rng.normal()
    a = analysis(one(x), DomainAcfParams(rule="pacf", max_lag=5, alpha=0.01))
    assert a["difference"] == 0 and a["lag"] == 1


def test_the_default_reach_or_the_error_says_which_max_lag_to_pass():
    short = one(weekly(0, noise=0.1, years=3))  # 157 weeks: a third is 52
    with pytest.raises(Exception) as raised:
        plan_domain_acf(short, SEASON)
    assert "pass --max-lag 133 (up to 156 for this input), or use --rule pacf" in str(raised.value)
    assert analysis(short, replace(SEASON, max_lag=70))["lag"] in (51, 52, 53)


def test_first_differences_stay_within_each_sequence():
    lengths = np.array([3, 0, 1, 4, 2])
    x = np.arange(10.0) ** 2
    got, shorter = first_differences(x, lengths)
    expected, start = [], 0
    for n in lengths:  # the slow way
        expected += list(np.diff(x[start : start + n]))
        start += n
    assert got.tolist() == expected and shorter.tolist() == [2, 0, 0, 3, 1]


def test_smoothing_widens_with_the_lag_and_keeps_short_lags_as_they_are():
    r = np.random.default_rng(0).normal(size=200)
    s = smoothed(r)
    assert np.allclose(s[:9], r[:9], rtol=0, atol=1e-12)  # a window of one lag up to lag 8
    assert s[16] == pytest.approx((r[15] / 2 + r[16] + r[17] / 2) / 2)
    assert s[64] == pytest.approx((r[60] / 2 + r[61:68].sum() + r[68] / 2) / 8)
    assert np.allclose(smoothed(np.full(50, 0.3)), 0.3)


STATSMODELS = pytest.importorskip("statsmodels")
CO2 = Path(STATSMODELS.__file__).parent / "datasets" / "co2" / "co2.csv"


def test_weekly_co2_a_real_trending_series(tmp_path, tbptt):
    """Mauna Loa CO2, weekly 1958-2001 (statsmodels): the analysis finds the year on the
    differences; the file holds the raw readings."""
    out = tmp_path / "co2.h5"
    result = tbptt(
        "domain", "acf", CO2, "--features", "co2", "--nan", "ffill", "--rule", "season",
        "-o", out, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["window"] in (52, 53)
    manifest = json.loads(out.with_name("co2.manifest.json").read_text())
    assert manifest["analysis"]["difference"] == 1
    filled, trend = manifest["warnings"][:2]
    assert filled.startswith("--nan ffill: 59 missing cell(s) (2.6% of values) filled")
    assert "first differences" in trend
    raw = np.genfromtxt(CO2, delimiter=",", skip_header=1)[:, 1]
    assert manifest["input"]["missing"]["columns"] == {"co2": int(np.isnan(raw).sum())}
    for i in range(1, len(raw)):  # --nan ffill
        raw[i] = raw[i - 1] if np.isnan(raw[i]) else raw[i]
    with h5py.File(out) as f:
        written = f["X"][:, :, 0][f["mask"][:] == 1]
    assert np.array_equal(written, raw.astype(np.float32))
    assert tbptt("validate", out, "--against", CO2).code == 0
