"""read -> plan -> materialize -> write: the one function every command calls."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tbptt_cli import atomic, hdf5, manifest, materialize, scaling, shards
from tbptt_cli.config import Config
from tbptt_cli.errors import InputDataError, OutputError, TbpttError, UsageError
from tbptt_cli.hdf5 import Written
from tbptt_cli.options import ENGINE_OPTIONS
from tbptt_cli.plan import Plan
from tbptt_cli.registry import STRATEGIES
from tbptt_cli.sequences import SequenceSet, SourceInfo

if TYPE_CHECKING:
    from tbptt_cli.sharded import ShardedEngine


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    wait: float = 0.0
    progress: Callable[[int, int], Callable[[int], None]] | None = None  # (total) -> tick


@dataclass
class Target:
    """One output file with its manifest: the plan that fills it and extra manifest keys.
    The writer sets ``written``."""

    path: Path
    manifest: Path
    plan: Plan
    data: SequenceSet
    extra: dict[str, Any] = field(default_factory=dict)
    written: Written | None = None


def val_output_path(output: Path, given: str | None) -> Path:
    return Path(given) if given else output.with_name(output.stem + ".val.h5")


def manifest_path(output: Path, given: str | None) -> Path:
    return Path(given) if given else output.with_name(output.stem + ".manifest.json")


def execute(config: Config, run: RunOptions) -> dict[str, Any]:
    """Run one strategy end to end; returns the summary that ``--json`` prints."""
    grid = config.strategy == "grid"
    output = _output(config, run, grid)
    timings: dict[str, float] = {}
    strategy = STRATEGIES[config.strategy]
    if grid:
        check_run_report(config, [output or Path("dry-run")])
    else:
        check_run_report(config, _output_paths(config, output)[:-1] if output else [])
    _check_engine(config)
    strategy.check(config.params)
    with atomic.signals_raise(), contextlib.ExitStack() as stack:
        if output is not None and not run.dry_run:
            _check_outputs(config, output, grid)
            stack.enter_context(atomic.output_lock(output, run.wait))
        engine = _engine(config, output, run, stack)
        # Input checks left running in the background (the NaN scan of a mapped NPY)
        # are joined before anything is reported or committed; they raise their error.
        checks: list[Future[bool]] = []
        with _timed(timings, "read"):
            keep = strategy.keep_columns(config.params)
            if engine is not None:
                data, source = engine.read(keep)
            else:
                from tbptt_cli.readers import read_input

                data, source = read_input(
                    config.input,
                    keep=keep,
                    spill_dir=output.parent if output else None,
                    progress=run.progress,
                    checks=checks,
                    values_dtype=values_dtype(config),
                    times=strategy.reads_time(config.params),
                )

        def join_checks() -> None:
            for check in checks:
                check.result()

        with _timed(timings, "plan"):
            fit = scaling.fit if engine is None else engine.fit
            targets = plan_targets(config, data, output or Path("dry-run.h5"), fit)
        _require_samples(targets, config.input.path)
        if run.dry_run:
            join_checks()
            for target in targets:  # what the gather of a real run would refuse
                if engine is not None:
                    engine.check(target)
                else:
                    materialize.check_fits(target.plan, target.data, np.dtype(config.output.dtype))
        else:
            files = [(t.path.name, t.plan) for t in targets]  # the validation file too
            warned = [*source.warnings, *(w for t in targets for w in _plan_warnings(t))]
            pages = _report_pages(config, targets[0].data, files, warned)
            with _timed(timings, "write"):
                write_targets(
                    targets,
                    config,
                    source,
                    run,
                    before_commit=join_checks,
                    pages=pages,
                    directory=output if grid else None,
                    index=partial(_grid_index, config, source) if grid else None,
                    engine=engine,
                )
    if grid:
        body = _grid_summary(targets, config, output, not run.dry_run, source)
        if run.dry_run:
            return {"plan": body, "timings": timings}
        return {**body, **_report_key(config), "timings": timings}
    if not run.dry_run:
        summary = _summary(targets[0], config, True, source)
        summary["warnings"] += [w for t in targets[1:] for w in _plan_warnings(t)]
        return {**summary, **_report_key(config), "timings": timings}
    plans = [_summary(t, config, False, source) for t in targets]
    if output is None:  # nothing named: say so rather than show a made-up path
        for summary in plans:
            summary.update(output=None, manifest=None, outputs=[])
    return {"plan": plans, "timings": timings}


def values_dtype(config: Config) -> str:
    """The precision a table's values are read at: the output's when nothing but the
    writer reads them (no --scale fitted on them, no plan or --report page drawn from
    them, no --duplicates mean of them), else float64."""
    output = config.output
    read_elsewhere = (
        output.scale != "none"
        or output.report is not None
        or config.input.duplicates == "mean"
        or STRATEGIES[config.strategy].reads_values(config.params)
    )
    return "float64" if read_elsewhere else output.dtype


def _output(config: Config, run: RunOptions, grid: bool) -> Path | None:
    """The output file (grid: directory) to write, or None for a dry run without -o."""
    if grid and config.output.manifest is not None:
        raise UsageError("grid writes len_<K>.manifest.json beside each file; drop --manifest")
    if config.output.path is None and not run.dry_run:
        what = "OUTDIR (a directory)" if grid else "PATH.h5"
        raise UsageError(f"no output: pass -o/--output {what} (or -n/--dry-run)")
    return Path(config.output.path) if config.output.path else None


def _check_engine(config: Config) -> None:
    """``--engine dask`` needs the extra; ``--scheduler`` needs ``--engine dask``."""
    output = config.output
    if output.engine == "dask":
        from tbptt_cli.cluster import parse_local, require

        require()
        if output.scheduler is not None:
            parse_local(output.scheduler)
    elif output.scheduler is not None:
        raise UsageError("--scheduler applies to --engine dask only; drop it or add --engine dask")


def _engine(
    config: Config, output: Path | None, run: RunOptions, stack: contextlib.ExitStack
) -> ShardedEngine | None:
    """The sharded engine on a Dask cluster, closed with ``stack``; None for a local run."""
    if config.output.engine != "dask":
        return None
    from tbptt_cli.cluster import DaskExecutor
    from tbptt_cli.sharded import ShardedEngine

    executor = DaskExecutor(config.output.scheduler)
    engine = ShardedEngine(executor, config, output, run.progress, run.dry_run)
    stack.callback(engine.close)
    return engine


def _check_outputs(config: Config, output: Path, grid: bool) -> None:
    """Fail early (exit 73), before any work, when an output cannot be created."""
    if grid:
        atomic.check_replaceable_dir(output, config.output.no_clobber, GRID_INDEX, "grid")
        report = Path(config.output.report) if config.output.report else None
        if report is not None and report.resolve().parent != output.resolve():
            atomic.check_writable(report, config.output.no_clobber)
        return
    for path in _output_paths(config, output):
        atomic.check_writable(path, config.output.no_clobber)


Fit = Callable[[SequenceSet, str], tuple[SequenceSet, list[str]]]


def plan_targets(
    config: Config, data: SequenceSet, output: Path, fit: Fit = scaling.fit
) -> list[Target]:
    """The main output, and the validation output when a fraction is held out (grid: one
    output per length, in directory ``output``). ``fit`` fits ``--scale`` (the Dask
    engine's workers hold the values)."""
    strategy = STRATEGIES[config.strategy]
    params = config.params
    if config.strategy == "grid":
        data, warnings = fit(data, config.output.scale)
        plans = [(k, with_warnings(plan, warnings)) for k, plan in strategy.plan(data, params)]
        return _grid_targets(output, plans, data)
    fraction = getattr(params, "val_fraction", 0.0)
    main = manifest_path(output, config.output.manifest)
    if not fraction:
        data, warnings = fit(data, config.output.scale)
        return [Target(output, main, with_warnings(strategy.plan(data, params), warnings), data)]
    train, held_out = hold_out(data, fraction, params.val_by, params.seed)
    # Scaled with the training part's parameters: nothing of the held-out steps leaks in.
    train, warnings = fit(train, config.output.scale)
    held_out = replace(held_out, scaling=train.scaling)
    val_path = val_output_path(output, params.val_output)
    val_manifest = manifest_path(val_path, None)
    train_plan = with_warnings(strategy.plan(train, params), warnings)
    train_target = Target(output, main, train_plan, train)
    try:
        val_plan = strategy.plan_validation(held_out, params, train_plan)
    except TbpttError as e:  # the cure may be in --val-fraction: say which part it is
        e.args = (
            f"the validation part ({held_out.count} sequence(s), {held_out.steps} steps held "
            f"out by --val-fraction {fraction} --val-by {params.val_by}): {e}",
        )
        raise
    val_target = Target(val_path, val_manifest, val_plan, held_out)
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
    if params.val_by == "time":  # the file's offsets count from the held-out part's start
        val_target.extra["val"]["first_step"] = train.lengths.tolist()
    return [train_target, val_target]


def with_warnings(plan: Plan, warnings: list[str]) -> Plan:
    return replace(plan, warnings=plan.warnings + tuple(warnings)) if warnings else plan


def _require_samples(targets: list[Target], source: object) -> None:
    """A file without a single sample would only fail later, in training: refuse it."""
    for target in targets:
        if not target.plan.samples:
            reason = "; ".join(target.plan.warnings) or "the input has no timesteps"
            raise InputDataError(
                f"{source}: no sample for {target.path.name} ({reason}); shorten the "
                "window (--length, --k1) or keep short tails (--remainder pad)"
            )


def hold_out(
    data: SequenceSet, fraction: float, by: str, seed: int
) -> tuple[SequenceSet, SequenceSet]:
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


def write_targets(
    targets: list[Target],
    config: Config,
    source: SourceInfo,
    run: RunOptions,
    before_commit: Callable[[], None] | None = None,
    pages: list[tuple[Path, str]] | None = None,
    directory: Path | None = None,
    index: Callable[[list[Target]], tuple[Path, str]] | None = None,
    engine: ShardedEngine | None = None,
) -> None:
    """The one writer: every data file, then every manifest, ``--report`` page and
    ``index`` document (built from the written targets), staged and committed together.
    Given a ``directory``, it is staged whole and replaces the old one; the targets (and
    any page inside it) are written there.

    A sharded ``engine`` (`sharded.ShardedEngine`) writes each target as shards and a
    virtual file over them, in the same transaction.

    ``before_commit`` may raise to abort the commit (everything staged is removed)."""
    params = config.as_dict()
    stored = file_params(config)
    with atomic.transaction() as txn:
        if directory is not None:
            _stage(txn.stage_dir, directory, "directory")
        for target in targets:
            attrs = hdf5.root_attrs(target.plan, target.data, config.strategy, stored)
            if engine is not None:
                target.written = engine.write(txn, target, stored, attrs)
                continue
            place = _stage(txn.place, target.path, "file")
            target.written = _write_one(place, target, config, attrs, run)
            if shards.ours(shards.folder(target.path)):  # a sharded run's, unread from now
                txn.obsolete.append(shards.folder(target.path))
        documents = [
            (t.manifest, manifest.dumps(_manifest(t, source, config.strategy, params)))
            for t in targets
        ]
        documents += pages or []
        if index is not None:
            documents.append(index(targets))
        for path, text in documents:
            place = _stage(txn.place, path, "file")
            try:
                place.write_text(text, encoding="utf-8")
            except OSError as e:
                raise atomic.write_error(path, e) from None
        if before_commit is not None:
            before_commit()
        try:
            txn.commit()
        except OSError as e:
            raise atomic.write_error(directory or targets[0].path, e) from None


def _manifest(
    target: Target, source: SourceInfo, strategy: str, params: dict[str, Any]
) -> dict[str, Any]:
    written = target.written
    assert written is not None
    doc = manifest.build(
        target.plan,
        target.data,
        source,
        strategy,
        params,
        written.path,
        target.path.name,
        written.sha256,
        written.datasets,
        {**target.plan.report, **target.extra},
    )
    if written.shards:
        doc["output"]["shards"] = [shard.listed() for shard in written.shards]
    return doc


def _write_one(
    temp: Path, target: Target, config: Config, attrs: dict[str, Any], run: RunOptions
) -> Written:
    """Write, fsync and read back one file; returns where, its dataset table and sha256."""
    tick = run.progress(target.plan.samples, 0) if run.progress else None
    rows = hdf5.plan_rows(target.plan, target.data)
    output = config.output
    return hdf5.write_file(temp, target.path, rows, output.dtype, output.compression, attrs, tick)


def file_params(config: Config) -> dict[str, Any]:
    """The parameters a data file records: where the file lives, how much memory and which
    engine made it are not part of it, so the same data gives the same bytes anywhere."""
    params = config.as_dict()
    unstored = ("path", "manifest", "report", *ENGINE_OPTIONS)
    params["output"] = {k: v for k, v in params["output"].items() if k not in unstored}
    params["input"] = {k: v for k, v in params["input"].items() if k != "memory_limit"}
    return params


def _stage(stage: Callable[[Path], Path], path: Path, kind: str) -> Path:
    try:
        return stage(path)
    except OSError as e:
        raise OutputError(
            f"{path}: cannot create a {kind} in {path.parent} ({e.strerror})"
        ) from None


def _output_paths(config: Config, output: Path) -> list[Path]:
    """Every file the run writes; the ``--report`` page (if any) last."""
    paths = [output, manifest_path(output, config.output.manifest)]
    if getattr(config.params, "val_fraction", 0.0):
        val = val_output_path(output, config.params.val_output)
        paths += [val, manifest_path(val, None)]
    return paths + ([Path(config.output.report)] if config.output.report else [])


def check_run_report(config: Config, outputs: list[Path]) -> None:
    if config.output.report is not None:
        from tbptt_cli.report.page import check_run_report as check

        check(config, outputs)


def _report_pages(
    config: Config, data: SequenceSet, files: list[tuple[str, Plan]], warnings: list[str]
) -> list[tuple[Path, str]]:
    """The ``--report`` page, drawn before anything is written (a drawing error aborts)."""
    if config.output.report is None:
        return []
    from tbptt_cli.report.page import run_report

    return [run_report(config, data, files, warnings)]


def _report_key(config: Config) -> dict[str, str]:
    return {"report": config.output.report} if config.output.report else {}


def _summary(target: Target, config: Config, written: bool, source: SourceInfo) -> dict[str, Any]:
    plan, data = target.plan, target.data
    shards = target.written.shards if written and target.written else ()
    return {
        "output": str(target.path),
        "manifest": str(target.manifest),
        "samples": plan.samples,
        "window": plan.window,
        "features": data.features,
        **plan.batching(),
        "stateful": plan.stateful,
        "resets": int(plan.reset.sum()),
        "dtype": config.output.dtype,
        "bytes": _bytes(target, config, written),
        "warnings": [*source.warnings, *_plan_warnings(target)],
        "text": "\n".join(t for t in (plan.text, horizon_note(config, data)) if t),
        "outputs": [str(target.path), str(target.manifest)]
        + ([target.extra["val"]["output"]] if "output" in target.extra.get("val", {}) else []),
    } | ({"shards": len(shards)} if shards else {})


def _plan_warnings(target: Target) -> list[str]:
    """The plan's warnings, said of the validation part when the target holds it."""
    if "of" in target.extra.get("val", {}):
        return [f"the validation part: {warning}" for warning in target.plan.warnings]
    return list(target.plan.warnings)


def horizon_note(config: Config, data: SequenceSet) -> str:
    """Said when --horizon H > 1 shortens every sequence by H steps."""
    horizon = config.input.horizon
    if horizon == 1 or not data.target_names:
        return ""
    return (
        f"target {', '.join(data.target_names)}: y[t] = x[t+{horizon}]; each sequence "
        f"loses its last {horizon} steps"
    )


def _bytes(target: Target, config: Config, written: bool) -> int:
    """The file's size, or before it is written an estimate from the plan."""
    if written and target.written is not None:
        shards = target.written.shards
        return target.written.size + sum(shard.size for shard in shards)
    plan, data = target.plan, target.data
    itemsize = np.dtype(config.output.dtype).itemsize
    per_step = data.features * itemsize + 1  # X and mask
    if data.targets is not None:
        per_step += data.targets.shape[1] * itemsize
    if plan.loss_from is not None:
        per_step += 1
    return plan.samples * plan.window * per_step


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 4)


# --- grid: one file per chunk length in an output directory, replaced whole ------------

GRID_INDEX = "grid.json"


def _grid_targets(
    directory: Path, plans: list[tuple[int, Plan]], data: SequenceSet
) -> list[Target]:
    from tbptt_cli.strategies.grid import divides, padded_fraction

    return [
        Target(
            directory / f"len_{k}.h5",
            directory / f"len_{k}.manifest.json",
            plan,
            data,
            {
                "grid": {
                    "length": k,
                    "index": GRID_INDEX,
                    "padded_fraction": padded_fraction(plan),
                    "divides": divides(k, data.lengths),
                }
            },
        )
        for k, plan in plans
    ]


def _grid_entries(targets: list[Target], config: Config, written: bool) -> list[dict[str, Any]]:
    """grid.json's entries; bytes are the file sizes, or estimates in a dry run."""
    return [
        {
            "file": t.path.name,
            "manifest": t.manifest.name,
            "samples": t.plan.samples,
            "batches": t.plan.batches,
            "batch_size": t.plan.batch_size,
            **{k: v for k, v in t.extra["grid"].items() if k != "index"},
            "bytes": _bytes(t, config, written),
        }
        for t in targets
    ]


def _grid_summary(
    targets: list[Target], config: Config, output: Path | None, written: bool, source: SourceInfo
) -> dict[str, Any]:
    from tbptt_cli.strategies.grid import grid_table

    entries = _grid_entries(targets, config, written)
    return {
        "output": output and str(output),
        "grid": entries,
        "warnings": _grid_warnings(targets, source),
        "text": grid_table(entries),
    }


def _grid_warnings(targets: list[Target], source: SourceInfo) -> list[str]:
    """What the reader says, once, then each warning of the lengths once, naming the
    lengths it holds for (the same cure said once per length buried the others)."""
    lengths: dict[str, list[str]] = {}
    for target in targets:
        for warning in target.plan.warnings:
            lengths.setdefault(warning, []).append(str(target.plan.window))
    per_length = [
        f"length{'s' if len(ks) > 1 else ''} {', '.join(ks)}: {w}" for w, ks in lengths.items()
    ]
    return [*source.warnings, *per_length]


def _grid_index(config: Config, source: SourceInfo, targets: list[Target]) -> tuple[Path, str]:
    """grid.json: the input, the resolved params and one entry per length (no timestamps)."""
    document = {
        "schema_version": manifest.SCHEMA_VERSION,
        "tool": manifest.tool_info(),
        "strategy": "grid",
        "params": config.as_dict(),
        "input": manifest.input_section(targets[0].data, source),
        "grid": _grid_entries(targets, config, written=True),
        "warnings": _grid_warnings(targets, source),
    }
    return targets[0].path.parent / GRID_INDEX, manifest.dumps(document)
