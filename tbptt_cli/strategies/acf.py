"""domain acf: choose the chunk length from the ACF/PACF of one feature, then split.

Estimators (the textbook ones, equal to statsmodels to rounding):

- ACF: the biased estimator, mean removed, denominator n (statsmodels
  ``acf(adjusted=False)``), computed by FFT zero-padded to a power of two >= 2n, which
  is long enough that no lag wraps around.
- Pooled over ragged sequences, weighted by length: every sequence has its own mean
  removed, the lagged products ``sum_t (x_t - m_i)(x_{t+k} - m_i)`` of all sequences are
  added up and divided by the total number of steps, then normalized by the pooled lag
  0. Lags no sequence is long enough for add nothing. One sequence gives exactly ``acf``.
- PACF: Levinson-Durbin on that ACF (statsmodels ``pacf(method="ldb")``).
- Band: ``+-z(1 - alpha/2) / sqrt(total steps)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import DomainAcfParams
from tbptt_cli.plan import Plan, ragged_arange
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.stateful import Chunking, stateful_plan

FFT_BLOCK = 1 << 22  # float64 cells per FFT block: bounds memory with many short sequences
BAR = 24  # characters of a correlogram bar, for |value| = 1
SHOWN_LAGS = 36  # lag lines at most; beyond, a subset is shown (<= 40 lines)
FIRST_LAGS = 12  # always shown when summarizing
# The default --max-lag of --rule season reaches 2.5 x the longest season it looks for:
# the year of a weekly series (52 or 53 steps). Longer seasons need --max-lag.
SEASON_REACH = 133
SMOOTH = 16  # --rule season: peaks found on the ACF averaged over lags k +- k/SMOOTH
FUNDAMENTAL = 0.9  # --rule season: a shorter peak this high is the season, not its multiple
CONSTANT_RMS = 1e-10  # spread below this, relative to the largest value: constant


def lagged_products(x: np.ndarray, lengths: np.ndarray, nlags: int) -> np.ndarray:
    """``sum_i sum_t (x_t - m_i)(x_{t+k} - m_i)`` for k = 0..nlags, sequences end to end in x.

    Sequences that share an FFT size are transformed together, one 2-D block at a time,
    so many short sequences cost a few numpy calls, not one call each.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    means = np.bincount(owner, weights=x, minlength=len(lengths)) / np.maximum(lengths, 1)
    centred = x - means[owner]
    begin = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # The smallest power of two >= 2L, so that no lag below L wraps around the circle.
    size = np.left_shift(1, np.ceil(np.log2(np.maximum(2 * lengths, 1))).astype(np.int64))
    total = np.zeros(nlags + 1)
    for fft_size in np.unique(size[lengths > 1]).tolist():
        members = np.flatnonzero((size == fft_size) & (lengths > 1))
        per_block = max(1, FFT_BLOCK // fft_size)
        for first in range(0, len(members), per_block):
            chosen = members[first : first + per_block]
            total += _block_products(centred, begin[chosen], lengths[chosen], fft_size, nlags)
    return total


def _block_products(
    centred: np.ndarray, begin: np.ndarray, lengths: np.ndarray, fft_size: int, nlags: int
) -> np.ndarray:
    row = np.repeat(np.arange(len(lengths)), lengths)
    step = ragged_arange(lengths)
    block = np.zeros((len(lengths), fft_size))
    block[row, step] = centred[np.repeat(begin, lengths) + step]
    spectrum = np.fft.rfft(block, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    # Circular lags past fft_size / 2 are negative lags in disguise; true lags from L
    # up to fft_size / 2 come out zero, as they should.
    keep = min(nlags + 1, fft_size // 2 + 1)
    products = np.fft.irfft(power, n=fft_size, axis=1)[:, :keep].sum(axis=0)
    out = np.zeros(nlags + 1)
    out[: len(products)] = products
    return out


def acf(x: np.ndarray, nlags: int) -> np.ndarray:
    """The biased ACF of one series at lags 0..nlags (statsmodels ``acf(adjusted=False)``)."""
    x = unit(np.asarray(x, dtype=np.float64).ravel())
    products = lagged_products(x, np.array([len(x)]), nlags)
    if products[0] <= 0:
        raise InputDataError("the series is constant; its autocorrelation is undefined")
    return products / products[0]


def pacf_ldb(acf_values: np.ndarray, nlags: int) -> np.ndarray:
    """The PACF at lags 0..nlags by Levinson-Durbin (statsmodels ``pacf(method="ldb")``).

    Loops over lags, not steps. Once the prediction error vanishes (a perfectly
    predictable series) the remaining partial autocorrelations are left at 0.
    """
    r = np.asarray(acf_values, dtype=np.float64)[: nlags + 1]
    pacf = np.zeros(nlags + 1)
    pacf[0] = 1.0
    phi = np.zeros(0)
    error = r[0]
    for k in range(1, nlags + 1):
        if error <= np.finfo(np.float64).eps * r[0]:
            break
        reflection = (r[k] - phi @ r[k - 1 : 0 : -1]) / error
        phi = np.concatenate([phi - reflection * phi[::-1], [reflection]])
        error *= 1.0 - reflection * reflection
        pacf[k] = reflection
    return pacf


def unit(x: np.ndarray) -> np.ndarray:
    """``x`` divided by its largest magnitude: the ACF does not change, and the lagged
    products of values near 1e200 (or 1e-200) stay in float64's range."""
    largest = float(np.abs(x).max(initial=0.0))
    return x / largest if largest > 0 else x


def first_differences(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x[t+1] - x[t]`` within each sequence (sequences end to end): one step shorter each."""
    ends = np.cumsum(lengths)
    within = np.ones(max(len(x) - 1, 0), dtype=bool)
    last = ends[(ends > 0) & (ends < len(x))] - 1  # a difference across two sequences
    within[last] = False
    return np.diff(x)[within], np.maximum(lengths - 1, 0)


def significance_band(alpha: float, steps: int) -> float:
    return NormalDist().inv_cdf(1.0 - alpha / 2.0) / math.sqrt(steps)


@dataclass(frozen=True)
class Analysis:
    feature: str
    acf: np.ndarray  # lags 0..max_lag
    pacf: np.ndarray
    band: float
    steps: int
    sequences: int
    max_lag: int
    # The largest lag the input allows (its longest sequence - 1; None: not known, as for
    # an analysis read back from a manifest), and 1 when first differences were analysed.
    longest_lag: int | None = None
    difference: int = 0

    @property
    def series(self) -> str:
        """What was analysed, in words."""
        differences = "the first differences of " if self.difference else ""
        return f"{differences}{self.feature!r}"


def feature_column(data: SequenceSet, feature: str | None) -> tuple[str, np.ndarray]:
    """The analysed feature's values, sequences end to end (a slice when they already are)."""
    if feature is None:
        j = 0
    elif feature in data.feature_names:
        j = data.feature_names.index(feature)
    else:
        raise InputDataError(
            f"--feature {feature!r} is not a feature of the input; the features are "
            f"{', '.join(data.feature_names)}"
        )
    starts, lengths = data.starts, data.lengths
    contiguous = len(starts) == 0 or np.array_equal(starts[1:], starts[:-1] + lengths[:-1])
    if contiguous:
        first = int(starts[0]) if len(starts) else 0
        column = data.values[first : first + int(lengths.sum()), j]
    else:
        column = data.values[np.repeat(starts, lengths) + ragged_arange(lengths), j]
    return data.feature_names[j], np.asarray(column, dtype=np.float64)


def resolve_max_lag(
    requested: int | None, lengths: np.ndarray, rule: str = "pacf"
) -> tuple[int, list[str]]:
    """The lags examined: as asked, or 10*log10(steps) (with --rule season at least
    SEASON_REACH, up to a third of the longest sequence), below the longest sequence."""
    longest = int(lengths.max(initial=0))
    if longest < 2:
        raise InputDataError(
            f"domain acf needs a sequence of at least 2 steps, the longest has {longest}; "
            f"use split --length K"
        )
    limit = longest - 1
    if requested is None:
        default = max(1, int(10 * math.log10(int(lengths.sum()))))
        if rule == "season":
            default = max(default, min(SEASON_REACH, longest // 3))
        return min(limit, default), []
    if requested < 1:
        raise UsageError(f"--max-lag must be at least 1, not {requested}")
    if requested > limit:
        return limit, [
            f"--max-lag {requested} is beyond the longest sequence ({longest} steps); "
            f"clipped to {limit}"
        ]
    return requested, []


def analyse(data: SequenceSet, params: DomainAcfParams) -> tuple[Analysis, list[str]]:
    """The correlogram of the feature, or of its first differences (``--difference``)."""
    name, x = feature_column(data, params.feature)
    if not np.all(np.isfinite(x)):
        raise InputDataError(f"feature {name!r} has NaN/inf values; pass --nan ffill|zero|drop")
    x, lengths = unit(x), data.lengths
    max_lag, warnings = resolve_max_lag(params.max_lag, lengths, params.rule)
    # Every sample ACF crosses zero somewhere (its lags sum to -1/2); a stationary series
    # does so within a few dozen lags, a trend only after about a third of its length.
    # So a trend is an ACF above 0 up to 10*log10(steps) and a tenth of the longest
    # sequence, however many lags --max-lag examines.
    longest = int(lengths.max())
    trend_lag = min(longest - 1, max(int(10 * math.log10(int(lengths.sum()))), longest // 10))
    correlations = _correlations(
        x, lengths, max(max_lag, trend_lag), f"feature {name!r} is", "choose another --feature"
    )
    trend = not np.any(correlations[1 : trend_lag + 1] <= 0)
    correlations = correlations[: max_lag + 1]
    differenced, shorter = first_differences(x, lengths)
    possible = int(shorter.max(initial=0)) >= 2
    difference = params.difference == "1" or (params.difference == "auto" and trend and possible)
    if difference:
        if not possible:
            raise InputDataError(
                f"--difference 1 leaves sequences of at most {int(shorter.max(initial=0))} "
                "step(s), too short for an ACF; pass --difference 0"
            )
        if params.difference == "auto":
            warnings.append(
                f"the ACF of {name!r} stays above 0 up to lag {trend_lag} (a trend), so the lag "
                "was chosen on its first differences; only the analysis differences them, "
                "the values are not changed (--difference 0 analyses the series as it is)"
            )
        x, lengths = differenced, shorter
        max_lag = min(max_lag, int(lengths.max()) - 1)
        what = f"the first differences of {name!r} are"
        correlations = _correlations(x, lengths, max_lag, what, "pass --difference 0")
    steps = int(lengths.sum())
    band = significance_band(params.alpha, steps)
    pacf = pacf_ldb(correlations, max_lag)
    live = int(np.count_nonzero(lengths))
    limit = int(lengths.max(initial=0)) - 1
    analysis = Analysis(
        name, correlations, pacf, band, steps, live, max_lag, limit, int(difference)
    )
    return analysis, warnings


def _correlations(
    x: np.ndarray, lengths: np.ndarray, max_lag: int, what: str, fix: str
) -> np.ndarray:
    """The pooled ACF of ``x`` (scaled by `unit`); a series whose spread is only rounding
    noise (the differences of a straight line) counts as constant."""
    products = lagged_products(x, lengths, max_lag)
    if products[0] <= CONSTANT_RMS**2 * len(x):
        raise InputDataError(
            f"{what} constant within every sequence, so there is no autocorrelation; "
            f"{fix} or use split --length K"
        )
    return products / products[0]


def choose_lag(rule: str, a: Analysis) -> int:
    """The lag each rule picks; InputDataError (65) when the correlogram offers none."""
    lags = np.arange(1, a.max_lag + 1)
    seen = f"of {a.series} up to lag {a.max_lag} (band +-{a.band:.4f})"
    if rule == "pacf":
        outside = lags[np.abs(a.pacf[1:]) > a.band]
        if not len(outside):
            raise InputDataError(
                f"no significant lag: the PACF {seen} stays inside the band; "
                f"use --rule acf or split --length K"
            )
        return int(outside[-1])
    if rule == "acf":
        inside = lags[np.abs(a.acf[1:]) <= a.band]
        if not len(inside):
            raise InputDataError(f"the ACF {seen} never falls inside the band; {remedy(a)}")
        return int(inside[0])
    return _season(a, seen)


def _season(a: Analysis, seen: str) -> int:
    crossings = zero_crossings(a.acf, bool(a.difference))
    if not len(crossings):
        trend = "" if a.difference else " (a trend?)"
        raise InputDataError(
            f"the ACF {seen} never crosses zero{trend}; {remedy(a, not a.difference)}"
        )
    # A peak needs both neighbours, so the last lag examined cannot be one.
    k = np.arange(int(crossings[0]) + 1, a.max_lag)
    r = smoothed(a.acf)
    peaks = k[(r[k] > r[k - 1]) & (r[k] >= r[k + 1]) & (r[k] > a.band)]
    if not len(peaks):
        raise InputDataError(
            f"no significant ACF peak {seen} after its first zero crossing at lag "
            f"{int(crossings[0])}; {remedy(a)}"
        )
    return fundamental(peaks, r)


def fundamental(peaks: np.ndarray, r: np.ndarray) -> int:
    """The highest peak, unless it is a multiple of a shorter peak nearly as high (at least
    FUNDAMENTAL of it): noise often lifts 2 x the season a little above the season itself
    (weekly CO2: 0.330 at lag 104, 0.319 at 53). A multiple may be off by one step per
    period, since a season of 52.18 steps peaks at 52 or 53."""
    highest = int(peaks[np.argmax(r[peaks])])
    for lag in sorted(int(k) for k in peaks if r[k] >= FUNDAMENTAL * r[highest]):
        times = round(highest / lag)
        if lag < highest and times >= 2 and abs(highest - times * lag) <= times:
            return lag
    return highest


def smoothed(r: np.ndarray) -> np.ndarray:
    """The ACF averaged over a window of lags k +- k/SMOOTH around each lag k: a noisy
    season's hump is jagged (weekly CO2 differenced: 0.303, 0.282, 0.262, 0.319 at lags
    50..53), and a window that grows with the lag evens it out without blurring short
    seasons. The window's edges cut lags fractionally, so its width grows smoothly and
    does not favour one lag over its neighbour."""
    lags = np.arange(len(r), dtype=np.float64)
    half = np.maximum(lags / SMOOTH, 0.5)  # at least lag k itself
    low = np.maximum(lags - half, -0.5)
    high = np.minimum(lags + half, len(r) - 0.5)
    # The integral of r as a step function (lag k covers k - 0.5 .. k + 0.5).
    edges = np.arange(len(r) + 1) - 0.5
    area = np.concatenate([[0.0], np.cumsum(r)])
    return (np.interp(high, edges, area) - np.interp(low, edges, area)) / (high - low)


def zero_crossings(r: np.ndarray, differenced: bool) -> np.ndarray:
    """Lags >= 1 where the ACF is <= 0. First differences push lag 1 below 0 on their own
    (differenced white noise has -0.5 there) while the hump around lag 0 goes on, so
    there lag 1 alone, followed by a positive lag 2, is not where the hump ends."""
    crossings = np.flatnonzero(r[1:] <= 0) + 1
    if differenced and len(crossings) and crossings[0] == 1 and len(r) > 2 and r[2] > 0:
        return crossings[1:]
    return crossings


def remedy(a: Analysis, difference: bool = False) -> str:
    """What to pass to look further (which --max-lag), or what else to use."""
    passes = ["--difference 1"] if difference else []
    if a.longest_lag is None:
        passes.append("a larger --max-lag")
    elif a.max_lag < a.longest_lag:
        wider = min(a.longest_lag, max(2 * a.max_lag, SEASON_REACH))
        passes.append(f"--max-lag {wider} (up to {a.longest_lag} for this input)")
    if not passes:
        return (
            f"the sequences allow no lag past {a.longest_lag}; use --rule pacf or split --length K"
        )
    return f"pass {' or '.join(passes)}, or use --rule pacf"


def _bar(value: float, band: float) -> str:
    """``#`` for |value| (BAR cells = 1), with the band edge drawn as ``|``: a bar reaches
    past the ``|`` exactly when the value is outside the band, whatever the rounding."""
    cells = min(BAR, round(abs(value) * BAR))
    edge = min(BAR, max(1, math.ceil(band * BAR)))
    cells = max(cells, edge + 1) if abs(value) > band else min(cells, edge)
    strip = "#" * cells + " " * (BAR - cells)
    return strip[:edge] + "|" + strip[edge:]


def shown_lags(a: Analysis, chosen: int) -> np.ndarray:
    """Every lag, or when there are too many: the first ones, the chosen one with its
    neighbours, and the strongest of the rest."""
    lags = np.arange(1, a.max_lag + 1)
    if a.max_lag <= SHOWN_LAGS:
        return lags
    must = set(range(1, FIRST_LAGS + 1)) | set(range(max(1, chosen - 2), chosen + 3))
    must &= set(lags.tolist())
    strength = np.maximum(np.abs(a.acf[1:]), np.abs(a.pacf[1:]))
    ranked = lags[np.argsort(-strength, kind="stable")]
    rest = [int(k) for k in ranked if int(k) not in must][: max(0, SHOWN_LAGS - len(must))]
    return np.array(sorted(must | set(rest)))


def correlogram(a: Analysis, rule: str, chosen: int, length: int) -> str:
    """The text correlogram for stderr: one line per lag, ``*`` marks a significant value."""

    def cell(value: float) -> str:
        star = "*" if abs(value) > a.band else " "
        return f"{value:+.3f}{star} {_bar(value, a.band)}"

    lines = [
        f"ACF/PACF of {a.series}: {a.steps} steps in {a.sequences} sequence(s), "
        f"band +-{a.band:.4f} (|)",
        f"{'lag':>4}  {'acf':<{BAR + 8}}  pacf",
    ]
    shown = shown_lags(a, chosen)
    for k in shown.tolist():
        mark = "  <- chosen" if k == chosen else ""
        lines.append(f"{k:>4}  {cell(a.acf[k])}  {cell(a.pacf[k])}{mark}".rstrip())
    if len(shown) < a.max_lag:
        lines.append(
            f"(showing {len(shown)} of {a.max_lag} lags; all are in the manifest's analysis)"
        )
    lines.append(f"rule {rule}: lag {chosen}, chunk length {length}")
    return "\n".join(lines)


def chunk_length(lag: int, params: DomainAcfParams) -> int:
    """The chunk length a chosen lag gives: lag x --multiple, at least --min-length."""
    return max(lag * params.multiple, params.min_length)


def check_params(params: DomainAcfParams) -> None:
    if not 0 < params.alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, not {params.alpha}")
    if params.multiple < 1 or params.min_length < 1:
        raise UsageError("--multiple and --min-length must be at least 1")


def plan_with_length(data: SequenceSet, params: DomainAcfParams, length: int) -> Plan:
    """The split layout for a chunk length already chosen: a validation set must use the
    training set's length, not pick one of its own."""
    check_params(params)
    shorter = "a smaller --multiple or --min-length (or split --length K)"
    chunking = Chunking(length, params.jitter, params.p_half, params.seed, shorter)
    return stateful_plan(data.lengths, data.ids, chunking, params)


def plan_domain_acf(data: SequenceSet, params: DomainAcfParams) -> Plan:
    """Pick the chunk length from the correlogram, then lay out exactly like split."""
    check_params(params)
    a, warnings = analyse(data, params)
    lag = choose_lag(params.rule, a)
    length = chunk_length(lag, params)
    plan = plan_with_length(data, params, length)
    analysis = {
        "feature": a.feature,
        "rule": params.rule,
        "difference": a.difference,
        "lag": lag,
        "length": length,
        "multiple": params.multiple,
        "min_length": params.min_length,
        "max_lag": a.max_lag,
        "alpha": params.alpha,
        "band": a.band,
        "n": a.steps,
        "sequences": a.sequences,
        "acf": a.acf.tolist(),
        "pacf": a.pacf.tolist(),
    }
    return replace(
        plan,
        attrs={**plan.attrs, "chosen_lag": lag},
        report={**plan.report, "analysis": analysis},
        text=correlogram(a, params.rule, lag, length),
        warnings=tuple(warnings) + plan.warnings,
    )


def plan_validation(data: SequenceSet, params: DomainAcfParams, train: Plan) -> Plan:
    """The held-out part uses the chunk length chosen on the training part."""
    return plan_with_length(data, params, int(train.report["analysis"]["length"]))
