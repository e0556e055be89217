"""The options of ``tbptt report``: one field = one flag and one environment variable."""

from __future__ import annotations

from dataclasses import dataclass

from tbptt_cli.options import opt

EXTRA = "pip install 'tbptt-cli[report]'"


@dataclass(frozen=True)
class ReportOptions:
    feature: str | None = opt(None, "feature whose ACF/PACF is drawn (default: the first)")
    max_lag: int | None = opt(
        None, "largest lag drawn (default 10*log10(steps), below the longest sequence)"
    )
    alpha: float = opt(0.05, "significance level of the band +-z(1-alpha/2)/sqrt(n)")
    lengths: str | None = opt(
        None,
        "chunk lengths of the padding map, e.g. 25,50,100 (default: powers of two up to "
        "the longest sequence, plus each rule's length)",
    )
    batch_sizes: str | None = opt(
        None,
        "batch sizes of the padding map, e.g. 8,16,32 (default: powers of two up to 128, "
        "and the number of sequences)",
    )
