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
    x = np.asarray(x, dtype=np.float64).ravel()
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


def resolve_max_lag(requested: int | None, lengths: np.ndarray) -> tuple[int, list[str]]:
    """The lags examined: as asked (or 10*log10(steps)), below the longest sequence."""
    longest = int(lengths.max(initial=0))
    if longest < 2:
        raise InputDataError(
            f"domain acf needs a sequence of at least 2 steps, the longest has {longest}; "
            f"use split --length K"
        )
    limit = longest - 1
    if requested is None:
        return min(limit, max(1, int(10 * math.log10(int(lengths.sum()))))), []
    if requested < 1:
        raise UsageError(f"--max-lag must be at least 1, not {requested}")
    if requested > limit:
        return limit, [
            f"--max-lag {requested} is beyond the longest sequence ({longest} steps); "
            f"clipped to {limit}"
        ]
    return requested, []


def analyse(data: SequenceSet, params: DomainAcfParams) -> tuple[Analysis, list[str]]:
    name, x = feature_column(data, params.feature)
    if not np.all(np.isfinite(x)):
        raise InputDataError(f"feature {name!r} has NaN/inf values; pass --nan ffill|zero|drop")
    max_lag, warnings = resolve_max_lag(params.max_lag, data.lengths)
    products = lagged_products(x, data.lengths, max_lag)
    if products[0] <= 0:
        raise InputDataError(
            f"feature {name!r} is constant within every sequence, so it has no "
            f"autocorrelation; choose another --feature or use split --length K"
        )
    correlations = products / products[0]
    steps = int(data.lengths.sum())
    band = significance_band(params.alpha, steps)
    pacf = pacf_ldb(correlations, max_lag)
    live = int(np.count_nonzero(data.lengths))
    return Analysis(name, correlations, pacf, band, steps, live, max_lag), warnings


def choose_lag(rule: str, a: Analysis) -> int:
    """The lag each rule picks; InputDataError (65) when the correlogram offers none."""
    lags = np.arange(1, a.max_lag + 1)
    seen = f"of {a.feature!r} up to lag {a.max_lag} (band +-{a.band:.4f})"
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
            raise InputDataError(
                f"the ACF {seen} never falls inside the band; raise --max-lag or use --rule pacf"
            )
        return int(inside[0])
    return _season(a, seen)


def _season(a: Analysis, seen: str) -> int:
    crossings = np.flatnonzero(a.acf[1:] <= 0) + 1
    if not len(crossings):
        raise InputDataError(
            f"the ACF {seen} never crosses zero (a trend?); difference the series, raise "
            f"--max-lag or use --rule pacf"
        )
    # A peak needs both neighbours, so the last lag examined cannot be one.
    k = np.arange(int(crossings[0]) + 1, a.max_lag)
    r = a.acf
    peaks = k[(r[k] > r[k - 1]) & (r[k] >= r[k + 1]) & (r[k] > a.band)]
    if not len(peaks):
        raise InputDataError(
            f"no significant ACF peak {seen} after its first zero crossing at lag "
            f"{int(crossings[0])}; raise --max-lag or use --rule pacf"
        )
    return int(peaks[np.argmax(r[peaks])])


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
        f"ACF/PACF of {a.feature!r}: {a.steps} steps in {a.sequences} sequence(s), "
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
    chunking = Chunking(length, params.jitter, params.p_half, params.seed)
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
