"""read -> plan -> materialize -> write: the one function every command calls."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tbptt_cli import atomic, hdf5, manifest
from tbptt_cli.config import Config
from tbptt_cli.errors import OutputError, UsageError
from tbptt_cli.plan import Plan
from tbptt_cli.registry import STRATEGIES
from tbptt_cli.sequences import SequenceSet, SourceInfo


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    wait: float = 0.0
    progress: Callable[[int, int], Callable[[int], None]] | None = None  # (total) -> tick


@dataclass
class Target:
    """One output file with its manifest: the plan that fills it and extra manifest keys."""

    path: Path
    manifest: Path
    plan: Plan
    data: SequenceSet
    extra: dict[str, Any] = field(default_factory=dict)


def manifest_path(output: Path, given: str | None) -> Path:
    return Path(given) if given else output.with_name(output.stem + ".manifest.json")


def execute(config: Config, run: RunOptions) -> dict[str, Any]:
    """Run one strategy end to end; returns the summary that ``--json`` prints."""
    timings: dict[str, float] = {}
    output = Path(config.output.path) if config.output.path else None
    if output is None and not run.dry_run:
        raise UsageError("no output: pass -o/--output PATH.h5 (or -n/--dry-run)")
    strategy = STRATEGIES[config.strategy]
    with atomic.signals_raise(), contextlib.ExitStack() as stack:
        if output is not None and not run.dry_run:
            for path in _output_paths(config, output):
                atomic.check_writable(path, config.output.no_clobber)
            stack.enter_context(atomic.output_lock(output, run.wait))
        with _timed(timings, "read"):
            from tbptt_cli.readers import read_input

            data, source = read_input(config.input, keep=strategy.keep_columns(config.params))
        with _timed(timings, "plan"):
            targets = plan_targets(config, data, output or Path("dry-run.h5"))
        if run.dry_run:
            return {"plan": [_summary(t, config, False) for t in targets], "timings": timings}
        with _timed(timings, "write"):
            write_targets(targets, config, source, run)
        return {**_summary(targets[0], config, True), "timings": timings}


def plan_targets(config: Config, data: SequenceSet, output: Path) -> list[Target]:
    """The main output, and the validation output when a fraction is held out."""
    strategy = STRATEGIES[config.strategy]
    params = config.params
    fraction = getattr(params, "val_fraction", 0.0)
    main = manifest_path(output, config.output.manifest)
    if not fraction:
        return [Target(output, main, strategy.plan(data, params), data)]
    train, held_out = hold_out(data, fraction, params.val_by, params.seed)
    val_path = Path(params.val_output) if params.val_output else output.with_name(output.stem + ".val.h5")
    val_manifest = val_path.with_name(val_path.stem + ".manifest.json")
    train_target = Target(output, main, strategy.plan(train, params), train)
    val_target = Target(val_path, val_manifest, strategy.plan(held_out, params), held_out)
    train_target.extra["val"] = {
        "output": str(val_path),
        "manifest": str(val_manifest),
        "by": params.val_by,
        "fraction": fraction,
        "sequences": held_out.count,
        "steps": held_out.steps,
        "samples": val_target.plan.samples,
    }
    val_target.extra["val"] = {"of": str(output), "by": params.val_by, "fraction": fraction}
    return [train_target, val_target]


def hold_out(data: SequenceSet, fraction: float, by: str, seed: int) -> tuple[SequenceSet, SequenceSet]:
    """Whole sequences chosen at random from ``seed``, or the last part of every sequence."""
    if not 0 < fraction < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1, not {fraction}")
    if by == "time":
        return data.split_time(fraction)
    count = int(np.ceil(fraction * data.count))
    if data.count < 2 or count >= data.count:
        raise UsageError(
            f"--val-fraction {fraction} of {data.count} sequence(s) leaves none for training; "
            f"use --val-by time or a smaller fraction"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(data.count)[:count])
    rest = np.setdiff1d(np.arange(data.count), chosen)
    return data.subset(rest), data.subset(chosen)


def write_targets(targets: list[Target], config: Config, source: SourceInfo, run: RunOptions) -> None:
    """Every data file, then every manifest, staged and committed together."""
    params = config.as_dict()
    with atomic.transaction() as txn:
        staged = [(t, _stage(txn, t.path)) for t in targets]
        manifests: list[tuple[Path, str]] = []
        for target, temp in staged:
            datasets = _write_one(temp, target, config, run)
            doc = manifest.build(
                target.plan, target.data, source, config.strategy, params,
                temp, target.path.name, datasets, {**target.plan.report, **target.extra},
            )
            manifests.append((target.manifest, manifest.dumps(doc)))
        for path, text in manifests:
            temp = _stage(txn, path)
            try:
                temp.write_text(text, encoding="utf-8")
            except OSError as e:
                raise atomic.write_error(path, e) from None
        try:
            txn.commit()
        except OSError as e:
            raise atomic.write_error(targets[0].path, e) from None


def _write_one(temp: Path, target: Target, config: Config, run: RunOptions) -> dict[str, Any]:
    attrs = hdf5.root_attrs(target.plan, target.data, config.strategy, config.as_dict())
    tick = run.progress(target.plan.samples, 0) if run.progress else None
    try:
        datasets = hdf5.write_h5(
            temp, target.plan, target.data, config.output.dtype, config.output.compression,
            attrs, tick,
        )
        atomic.fsync_file(temp)
        hdf5.verify(temp, target.plan, datasets, target.data, config.output.dtype)
    except OSError as e:
        raise atomic.write_error(target.path, e) from None
    return datasets


def _stage(txn: atomic.Transaction, path: Path) -> Path:
    try:
        return txn.stage(path)
    except OSError as e:
        raise OutputError(f"{path}: cannot create a file in {path.parent} ({e.strerror})") from None


def _output_paths(config: Config, output: Path) -> list[Path]:
    paths = [output, manifest_path(output, config.output.manifest)]
    if getattr(config.params, "val_fraction", 0.0):
        val = config.params.val_output
        paths.append(Path(val) if val else output.with_name(output.stem + ".val.h5"))
    return paths


def _summary(target: Target, config: Config, written: bool) -> dict[str, Any]:
    plan, data = target.plan, target.data
    itemsize = np.dtype(config.output.dtype).itemsize
    per_step = data.features * itemsize + 1
    if data.targets is not None:
        per_step += data.targets.shape[1] * itemsize
    if plan.loss_from is not None:
        per_step += 1
    return {
        "output": str(target.path),
        "manifest": str(target.manifest),
        "samples": plan.samples,
        "window": plan.window,
        "features": data.features,
        "batch_size": plan.batch_size,
        "stateful": plan.stateful,
        "resets": int(plan.reset.sum()),
        "dtype": config.output.dtype,
        "bytes": target.path.stat().st_size if written else plan.samples * plan.window * per_step,
        "warnings": list(plan.warnings),
        "text": plan.text,
        "outputs": [str(target.path), str(target.manifest)] + (
            [target.extra["val"]["output"]] if "output" in target.extra.get("val", {}) else []
        ),
    }


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 4)

