"""The registry: strategy name -> parameters, planning function and summary.

It drives the CLI commands, ``tbptt run``, the config loader and the docs test. Planning
functions are named, not imported, so that ``tbptt --help`` never imports numpy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tbptt_cli import params


@dataclass(frozen=True)
class Strategy:
    name: str
    params: type
    planner: str  # "module:function", imported on first use
    summary: str
    # Columns the reader keeps beside the features, from the resolved params.
    keep_columns: Callable[[Any], tuple[str, ...]] = lambda params: ()
    # Whether planning reads the feature values, or the --time-col values (beyond the
    # order they give the rows), not only the lengths; from the params.
    reads_values: Callable[[Any], bool] = lambda params: False
    reads_time: Callable[[Any], bool] = lambda params: False
    # Plans the validation part from the training plan (default: plan it afresh).
    validation_planner: str | None = None
    # Checks the options that must make sense together (exit 2), before the input is read.
    checker: str | None = None

    def check(self, resolved: Any) -> None:
        if self.checker is not None:
            _load(self.checker)(resolved)

    def plan(self, data: Any, resolved: Any) -> Any:
        return _load(self.planner)(data, resolved)

    def plan_validation(self, data: Any, resolved: Any, train: Any) -> Any:
        if self.validation_planner is None:
            return self.plan(data, resolved)
        return _load(self.validation_planner)(data, resolved, train)


def _load(name: str) -> Callable[..., Any]:
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy(
            "asis",
            params.AsisParams,
            "tbptt_cli.strategies.basic:plan_asis",
            "use sequences as they are: one sample per sequence, padded + masked",
        ),
        Strategy(
            "split",
            params.SplitParams,
            "tbptt_cli.strategies.basic:plan_split",
            "cut long sequences into fixed chunks, laid out for a stateful RNN",
        ),
        Strategy(
            "stepwise",
            params.StepwiseParams,
            "tbptt_cli.strategies.basic:plan_stepwise",
            "TBPTT(1,1): one timestep per sample, state carried across every step",
        ),
        Strategy(
            "domain-acf",
            params.DomainAcfParams,
            "tbptt_cli.strategies.acf:plan_domain_acf",
            "choose the chunk length from ACF/PACF, then split",
            reads_values=lambda p: True,
            validation_planner="tbptt_cli.strategies.acf:plan_validation",
        ),
        Strategy(
            "domain-segments",
            params.DomainSegmentsParams,
            "tbptt_cli.strategies.segments:plan_domain_segments",
            "cut at domain boundaries (sentence ends, sessions), pad to fixed length",
            keep_columns=lambda p: (p.boundary_col,) if p.boundary_col else (),
            reads_values=lambda p: p.boundary_feature is not None,
            reads_time=lambda p: p.max_gap is not None,
        ),
        Strategy(
            "grid",
            params.GridParams,
            "tbptt_cli.strategies.grid:plan_grid",
            "write one dataset per candidate length, for a systematic search",
            checker="tbptt_cli.strategies.grid:check_grid",
        ),
        Strategy(
            "decoupled",
            params.DecoupledParams,
            "tbptt_cli.strategies.decoupled:plan_decoupled",
            "TBPTT(k1,k2): forward window k1, gradient window k2, with masks",
            checker="tbptt_cli.strategies.decoupled:check_windows",
        ),
    ]
}
