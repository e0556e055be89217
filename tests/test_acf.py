"""domain acf: the estimators against statsmodels, the three rules, the plan and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import DomainAcfParams, SplitParams
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies import acf as acf_module
from tbptt_cli.strategies.acf import (
    acf,
    lagged_products,
    pacf_ldb,
    plan_domain_acf,
    plan_with_length,
)
from tbptt_cli.strategies.basic import plan_split

LOAD = Path(__file__).resolve().parent.parent / "sample_data" / "load.csv"


def simulate_ar(phi: tuple[float, ...], n: int, seed: int, burn: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=n + burn)
    x = np.zeros(n + burn)
    for t in range(len(phi), n + burn):
        x[t] = np.dot(phi, x[t - len(phi) : t][::-1]) + noise[t]
    return x[burn:]


def seasonal(n: int, seed: int, period: int = 24) -> np.ndarray:
    t = np.arange(n)
    return 2.0 * np.sin(2 * np.pi * t / period) + 0.5 * simulate_ar((0.5,), n, seed)


def as_set(*series: np.ndarray, names: tuple[str, ...] = ("x",)) -> SequenceSet:
    lengths = [len(s) for s in series]
    values = np.concatenate([np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in series])
    return SequenceSet.from_offsets(
        values, np.concatenate([[0], np.cumsum(lengths)]), feature_names=list(names)
    )


@pytest.mark.parametrize("n", [12, 97, 256, 1000, 4099])
def test_acf_and_pacf_equal_statsmodels(n):
    stattools = pytest.importorskip("statsmodels.tsa.stattools")
    rng = np.random.default_rng(n)
    x = np.cumsum(rng.normal(size=n)) * 0.2 + rng.normal(size=n) + 5.0
    nlags = min(n - 1, 40)
    expected = stattools.acf(x, nlags=nlags, adjusted=False, fft=True)
    np.testing.assert_allclose(acf(x, nlags), expected, rtol=0, atol=1e-8)
    plags = min(n // 2 - 1, 40)
    expected_pacf = stattools.pacf(x, nlags=plags, method="ldb")
    np.testing.assert_allclose(pacf_ldb(acf(x, plags), plags), expected_pacf, rtol=0, atol=1e-8)


def test_pooled_acf_sums_lagged_products_over_total_steps(monkeypatch):
    rng = np.random.default_rng(1)
    lengths = [1, 2, 5, 9, 16, 17, 40, 300]  # several FFT sizes, and lags longer than some
    series = [rng.normal(size=n) + rng.normal() * 10 for n in lengths]
    nlags = 20
    expected = np.zeros(nlags + 1)
    for s in series:  # the definition, the slow way: own mean, products, no division yet
        c = s - s.mean()
        for k in range(min(nlags + 1, len(c))):
            expected[k] += np.dot(c[: len(c) - k], c[k:])
    x = np.concatenate(series)
    np.testing.assert_allclose(lagged_products(x, np.array(lengths), nlags), expected, atol=1e-9)
    monkeypatch.setattr(acf_module, "FFT_BLOCK", 64)  # many small FFT blocks: same sums
    np.testing.assert_allclose(lagged_products(x, np.array(lengths), nlags), expected, atol=1e-9)
    plan = plan_domain_acf(as_set(*series), DomainAcfParams(rule="acf", max_lag=nlags))
    analysis = plan.report["analysis"]
    np.testing.assert_allclose(analysis["acf"], expected / expected[0], atol=1e-12)
    assert analysis["n"] == sum(lengths) and analysis["max_lag"] == nlags
    assert analysis["band"] == pytest.approx(1.959964 / np.sqrt(sum(lengths)), rel=1e-6)


def test_one_sequence_pools_to_its_own_acf_and_subsets_are_gathered():
    x = simulate_ar((0.7,), 500, seed=2)
    plan = plan_domain_acf(as_set(x), DomainAcfParams(rule="acf", max_lag=30))
    np.testing.assert_allclose(plan.report["analysis"]["acf"], acf(x, 30), atol=1e-12)
    y = simulate_ar((0.2,), 300, seed=3)
    reordered = as_set(x, y, x[:50]).subset(np.array([1, 0]))  # starts no longer end to end
    direct = plan_domain_acf(as_set(y, x), DomainAcfParams(rule="acf", max_lag=30))
    gathered = plan_domain_acf(reordered, DomainAcfParams(rule="acf", max_lag=30))
    assert gathered.report["analysis"]["acf"] == direct.report["analysis"]["acf"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("phi", [(0.5, -0.3, 0.25), (0.6, 0.2, -0.3, 0.2, 0.15)])
def test_rule_pacf_recovers_the_ar_order(phi, seed):
    x = simulate_ar(phi, 5000, seed)
    plan = plan_domain_acf(as_set(x), DomainAcfParams(rule="pacf", max_lag=10, alpha=0.01))
    assert plan.report["analysis"]["lag"] == len(phi)
    assert plan.window == len(phi) and plan.attrs["chosen_lag"] == len(phi)


def test_rule_season_finds_the_period_pooled_over_ragged_sequences():
    data = as_set(seasonal(2400, seed=4), seasonal(1700, seed=5))
    plan = plan_domain_acf(data, DomainAcfParams(rule="season", max_lag=60))
    assert plan.report["analysis"]["lag"] == 24 and plan.window == 24


def test_rule_acf_is_the_first_lag_inside_the_band():
    stattools = pytest.importorskip("statsmodels.tsa.stattools")
    x = simulate_ar((0.5,), 5000, seed=6)
    plan = plan_domain_acf(as_set(x), DomainAcfParams(rule="acf", max_lag=20))
    band = 1.959963984540054 / np.sqrt(5000)
    reference = stattools.acf(x, nlags=20, adjusted=False, fft=True)
    expected = int(np.flatnonzero(np.abs(reference[1:]) <= band)[0]) + 1
    assert plan.report["analysis"]["lag"] == expected
    assert 4 <= expected <= 8  # 0.5**k meets 0.0277 between lags 5 and 6


def test_multiple_and_min_length_set_the_chunk_length():
    data = as_set(simulate_ar((0.5, -0.3, 0.25), 5000, seed=0))
    base = DomainAcfParams(rule="pacf", max_lag=10, alpha=0.01)
    assert plan_domain_acf(data, replace(base, multiple=4)).window == 12
    plan = plan_domain_acf(data, replace(base, multiple=4, min_length=50))
    assert plan.window == 50 and plan.report["analysis"]["length"] == 50
    assert plan.report["analysis"]["lag"] == 3


def test_the_layout_is_exactly_split():
    data = as_set(*(simulate_ar((0.5, -0.3, 0.25), n, seed=n) for n in (3000, 2000, 2500)))
    params = DomainAcfParams(
        rule="pacf", max_lag=10, alpha=0.01, batch_size="2", remainder="drop", packing="lanes"
    )
    plan = plan_domain_acf(data, params)
    reference = plan_split(
        data, SplitParams(length=3, batch_size="2", remainder="drop", packing="lanes")
    )
    for name in ("sequence", "offset", "length", "reset", "lead"):
        assert np.array_equal(getattr(plan, name), getattr(reference, name)), name
    assert (plan.window, plan.batch_size, plan.stateful) == (3, 2, True)
    # A validation set is laid out with the training set's length, without an analysis.
    held_out = plan_with_length(as_set(np.arange(10.0)), replace(params, batch_size="1"), 3)
    assert held_out.window == 3 and held_out.length.tolist() == [3, 3, 3]
    assert "analysis" not in held_out.report


def test_max_lag_is_clipped_below_the_longest_sequence():
    data = as_set(seasonal(20, seed=1), seasonal(15, seed=2))
    plan = plan_domain_acf(data, DomainAcfParams(rule="acf", max_lag=50))
    assert plan.report["analysis"]["max_lag"] == 19
    assert len(plan.report["analysis"]["acf"]) == 20
    assert any(
        "--max-lag 50 is beyond the longest sequence (20 steps); clipped to 19" in w
        for w in plan.warnings
    )
    auto = plan_domain_acf(as_set(seasonal(5000, seed=3)), DomainAcfParams(rule="season"))
    assert auto.report["analysis"]["max_lag"] == 133  # the season reach, below 5000 / 3
    auto = plan_domain_acf(as_set(seasonal(5000, seed=3)), DomainAcfParams(rule="acf"))
    assert auto.report["analysis"]["max_lag"] == 36  # 10 * log10(5000)


def test_errors_name_the_problem_and_the_fix():
    rng = np.random.default_rng(7)
    noise = as_set(rng.normal(size=400), names=("load",))
    with pytest.raises(InputDataError, match=r"no significant lag: .*use --rule acf or split"):
        plan_domain_acf(noise, DomainAcfParams(rule="pacf", max_lag=2, alpha=0.001))
    with pytest.raises(InputDataError, match=r"--feature 'lod' is not a feature .*are load"):
        plan_domain_acf(noise, DomainAcfParams(feature="lod"))
    with pytest.raises(InputDataError, match=r"'load' is constant"):
        plan_domain_acf(as_set(np.ones(50), names=("load",)), DomainAcfParams())
    trend = as_set(np.arange(300.0))
    raw = DomainAcfParams(rule="season", max_lag=20, difference="0")
    with pytest.raises(InputDataError) as raised:
        plan_domain_acf(trend, raw)
    assert str(raised.value) == (
        "the ACF of 'x' up to lag 20 (band +-0.1132) never crosses zero (a trend?); pass "
        "--difference 1 or --max-lag 133 (up to 299 for this input), or use --rule pacf"
    )
    with pytest.raises(InputDataError, match=r"never falls inside the band; pass --max-lag 133"):
        plan_domain_acf(trend, replace(raw, rule="acf"))
    with pytest.raises(InputDataError) as raised:  # auto: its differences are all 1
        plan_domain_acf(trend, replace(raw, difference="auto"))
    assert str(raised.value) == (
        "the first differences of 'x' are constant within every sequence, so there is no "
        "autocorrelation; pass --difference 0 or use split --length K"
    )
    short = as_set(np.arange(30.0))  # crosses zero near lag 9, never peaks after it
    with pytest.raises(InputDataError, match=r"allow no lag past 29; use --rule pacf or split"):
        plan_domain_acf(short, DomainAcfParams(rule="season", max_lag=29, difference="0"))
    with pytest.raises(UsageError, match=r"--alpha"):
        plan_domain_acf(noise, DomainAcfParams(alpha=1.5))
    with pytest.raises(UsageError, match=r"--multiple"):
        plan_domain_acf(noise, DomainAcfParams(multiple=0))


def test_feature_selects_the_analysed_column():
    x = seasonal(2000, seed=8)
    noise = np.random.default_rng(8).normal(size=2000)
    data = as_set(np.column_stack([noise, x]), names=("noise", "load"))
    plan = plan_domain_acf(data, DomainAcfParams(feature="load", rule="season", max_lag=40))
    assert plan.report["analysis"]["feature"] == "load" and plan.window == 24


@pytest.mark.parametrize("max_lag", [30, 36, 200])
def test_correlogram_is_short_plain_and_marks_the_choice(max_lag):
    plan = plan_domain_acf(
        as_set(seasonal(3000, seed=9)), DomainAcfParams(rule="season", max_lag=max_lag)
    )
    lines = plan.text.splitlines()
    assert len(lines) <= 40 and plan.text.isascii() and "\x1b" not in plan.text
    chosen = [line for line in lines if line.endswith("<- chosen")]
    assert len(chosen) == 1 and chosen[0].split()[0] == str(plan.report["analysis"]["lag"])
    lag_lines = [line for line in lines if line.split()[0].isdigit()]
    assert len(lag_lines) == min(max_lag, 36)
    assert all(line.count("|") == 2 for line in lag_lines)
    assert ("showing 36 of 200 lags" in plan.text) == (max_lag == 200)
    assert lines[-1] == "rule season: lag 24, chunk length 24"


def test_cli_writes_the_analysis_and_prints_the_correlogram(tmp_path, tbptt):
    out = tmp_path / "load.h5"
    args = [
        "domain",
        "acf",
        LOAD,
        "--id-col",
        "site",
        "--time-col",
        "hour",
        "--features",
        "load_mw,temp_c",
        "--rule",
        "season",
        "--batch-size",
        "3",
        "-o",
        out,
    ]
    result = tbptt(*args)
    assert result.code == 0, result.stderr
    assert "<- chosen" in result.stderr and "rule season: lag 24" in result.stderr
    manifest = json.loads((tmp_path / "load.manifest.json").read_text())
    analysis = manifest["analysis"]
    assert (analysis["lag"], analysis["length"], analysis["feature"]) == (24, 24, "load_mw")
    assert analysis["n"] == 3984 and len(analysis["acf"]) == analysis["max_lag"] + 1
    with h5py.File(out) as f:
        assert f["X"].shape[1:] == (24, 2) and f.attrs["chosen_lag"] == 24
        assert f.attrs["batch_size"] == 3
    quiet = tbptt(*args, "-q")
    assert quiet.code == 0 and quiet.stderr == ""
    as_json = tbptt(*args, "--json")
    assert as_json.code == 0 and "<- chosen" not in as_json.stderr
    assert json.loads(as_json.stdout)["window"] == 24


def test_cli_exit_codes(tmp_path, tbptt):
    base = ["domain", "acf", LOAD, "--id-col", "site", "--time-col", "hour", "-n"]
    unknown = tbptt(*base, "--feature", "load")
    assert unknown.code == 65 and "--feature 'load' is not a feature" in unknown.stderr
    assert "load_mw, temp_c" in unknown.stderr
    assert tbptt(*base, "--rule", "lag").code == 2


def test_validation_file_reuses_the_training_length(tmp_path, tbptt):
    """The held-out part is cut with the length chosen on the training part."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "load.h5"
    result = tbptt(
        "domain",
        "acf",
        root / "sample_data" / "load.csv",
        "--id-col",
        "site",
        "--time-col",
        "hour",
        "--rule",
        "acf",
        "--val-fraction",
        "0.3",
        "--val-by",
        "time",
        "-o",
        out,
        "-q",
    )
    assert result.code == 0, result.stderr
    with h5py.File(out) as train, h5py.File(tmp_path / "load.val.h5") as val:
        assert train.attrs["window"] == val.attrs["window"] == train.attrs["chosen_lag"]
