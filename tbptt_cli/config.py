"""Config files and the merge of defaults, YAML, environment and flags.

Precedence: command-line flag > ``TBPTT_*`` environment variable > YAML file > default.
Click resolves flag over environment; this module lays the result over the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbptt_cli.errors import ConfigError, UsageError
from tbptt_cli.options import InputOptions, OutputOptions, parse_target
from tbptt_cli.registry import STRATEGIES


@dataclass(frozen=True)
class Config:
    strategy: str
    input: InputOptions
    output: OutputOptions
    params: Any

    def as_dict(self) -> dict[str, Any]:
        """The fully resolved config, as ``--print-config`` shows and the manifest records."""
        return {
            "strategy": self.strategy,
            "input": _plain(self.input),
            "output": _plain(self.output),
            self.strategy: _plain(self.params),
        }


def check_outputs(config: Config) -> None:
    """HDF5 needs a seekable file: ``-`` (stdout) is refused, not written as a file named -."""
    named = {
        "-o/--output": config.output.path,
        "--manifest": config.output.manifest,
        "--val-output": getattr(config.params, "val_output", None),
    }
    for flag, value in named.items():
        if value == "-":
            raise UsageError(
                f"{flag} -: tbptt writes files (HDF5 needs to seek), not stdout; name a "
                "file such as out/train.h5 (--json puts the summary on stdout)"
            )


def check_required(config: Config) -> None:
    """Options the strategy cannot run without, and counts of steps below 1, checked
    before any input is read (a bad file would otherwise be reported first)."""
    parse_target(config.input.target, config.input.horizon)
    for field in dataclasses.fields(config.params):
        value = getattr(config.params, field.name)
        flag = "--" + field.name.replace("_", "-")
        if field.metadata.get("required") and value is None:
            raise UsageError(
                f"{config.strategy.replace('-', ' ')} needs {flag}: {field.metadata['help']}"
            )
        if field.metadata.get("positive") and isinstance(value, int) and value < 1:
            raise UsageError(f"{flag} must be at least 1, not {value}")


def _plain(obj: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def load_file(path: str) -> dict[str, Any]:
    """Parse a YAML config (``safe_load`` only) into a mapping, or exit 78 saying why."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: a config file must be a mapping (strategy:, input:, output:, ...), "
            f"not a {type(loaded).__name__}"
        )
    # Keys are written with underscores (id_col): domain_acf is domain-acf too.
    loaded = {_strategy_name(key): value for key, value in loaded.items()}
    if "strategy" in loaded:
        loaded["strategy"] = _strategy_name(loaded["strategy"])
    return loaded


def _strategy_name(name: Any) -> Any:
    """``domain_acf`` as the strategy ``domain-acf``; anything else as it is."""
    if isinstance(name, str) and name.replace("_", "-") in STRATEGIES:
        return name.replace("_", "-")
    return name


def strategy_of(raw: dict[str, Any], source: str) -> str:
    name = raw.get("strategy")
    if name is None:
        raise ConfigError(f"{source}: no 'strategy' key; add e.g. 'strategy: split'")
    if not isinstance(name, str) or name not in STRATEGIES:  # a mapping is unhashable
        close = difflib.get_close_matches(str(name), list(STRATEGIES), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"one of {', '.join(STRATEGIES)}"
        raise ConfigError(f"{source}: strategy: unknown strategy '{name}'; {hint}")
    return str(name)


def unknown(key: str, valid: list[str], prefix: str = "") -> str:
    """``input.idcol: unknown key; did you mean 'input.id_col'?``"""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
    return f"{prefix}{key}: unknown key; {hint}"


def resolve(
    strategy: str,
    raw: dict[str, Any],
    overrides: dict[str, dict[str, Any]],
    source: str = "config",
    base: str = "",
) -> Config:
    """Defaults, then the file's sections, then flags and environment (``overrides``).

    Relative paths in the file are taken from ``base``, the file's folder, so a config
    runs the same from any working directory; paths given as flags stay as given."""
    classes = {
        "input": InputOptions,
        "output": OutputOptions,
        strategy: STRATEGIES[strategy].params,
    }
    if raw.get("strategy", strategy) != strategy:
        raise ConfigError(
            f"{source}: strategy is {raw['strategy']!r} but the command is {strategy!r}; "
            f"use `tbptt run {source}`"
        )
    for key in raw:
        if key != "strategy" and key not in classes:
            raise ConfigError(f"{source}: {unknown(str(key), ['strategy', *classes])}")
    built = {}
    for section, cls in classes.items():
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {section}: must be a mapping of option: value")
        converted = _convert_section(cls, values, source, section, base)
        merged = {**converted, **overrides.get(section, {})}
        built[section] = cls(**merged)
    return Config(strategy, built["input"], built["output"], built[strategy])


def _convert_section(
    cls: type, values: dict[str, Any], source: str, section: str, base: str = ""
) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    converted = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{source}: {unknown(str(key), list(fields), section + '.')}")
        try:
            converted[key] = convert(fields[key], value)
        except UsageError as e:
            raise ConfigError(f"{source}: {section}.{key}: {e}") from None
        if fields[key].metadata.get("path") and converted[key] is not None:
            converted[key] = relative_to(base, converted[key])
    return converted


def relative_to(base: str, path: Any) -> Any:
    """``path`` (or each of a list of paths) taken from the folder ``base``; ``-`` (stdin)
    and absolute paths stay. ``configs/../data.csv`` is tidied to ``data.csv`` unless a
    symbolic link makes the two differ."""
    if isinstance(path, tuple | list):
        return type(path)(relative_to(base, p) for p in path)
    if base in ("", ".") or path == "-" or os.path.isabs(path):
        return path
    joined = os.path.join(base, path)
    tidy = os.path.normpath(joined)
    return tidy if os.path.realpath(tidy) == os.path.realpath(joined) else joined


def convert(field: dataclasses.Field[Any], value: Any) -> Any:
    """Check and convert one value to its field's type (YAML and flags alike)."""
    kind = str(field.type)
    if value is None:
        if "None" in kind:
            return None
        raise UsageError("may not be empty")
    if field.metadata.get("paths"):  # one path, or several read as one input
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list | tuple)
            or not items
            or not all(isinstance(i, str) for i in items)
        ):
            raise UsageError(f"must be a path or a list of paths, not {value!r}")
        return items[0] if len(items) == 1 else tuple(items)
    if field.metadata.get("auto_or_int"):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if str(value).strip().lower() == "auto":
            return "auto"
        if str(value).strip().isdigit() and int(value) >= 1:
            return int(value)
        raise UsageError(f"must be auto or a positive integer, not {value!r}")
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise UsageError(f"must be true or false, not {value!r}")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"must be an integer, not {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"must be a number, not {value!r}")
        return float(value)
    if kind.startswith("tuple"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str | int) for i in items):
            raise UsageError(f"must be a list of names, not {value!r}")
        return tuple(str(i).strip() for i in items if str(i).strip())
    if isinstance(value, dict | list):
        raise UsageError(f"must be a single value, not {value!r}")
    if isinstance(value, bool):
        # YAML 1.1 reads yes/no/on/off/true/false unquoted as booleans, never as a name.
        fix = (
            "write none for no target, or quote a column name"
            if field.name == "target"
            else "quote it"
        )
        raise UsageError(
            f"must be text, not the boolean {str(value).lower()} (YAML reads unquoted "
            f"yes/no/on/off as true/false); {fix}, e.g. 'no'"
        )
    text = str(value)
    choices = field.metadata.get("choices")
    if choices and text not in choices:
        raise UsageError(f"must be one of {', '.join(choices)}, not {text!r}")
    return text
