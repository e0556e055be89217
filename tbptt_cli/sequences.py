"""The ragged core type: many sequences stored end to end in one array."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from tbptt_cli.digest import in_background

if TYPE_CHECKING:
    from tbptt_cli.scaling import Scaling


@dataclass(frozen=True)
class SequenceSet:
    """Sequence i is ``values[starts[i] : starts[i] + lengths[i]]``.

    Readers produce ``starts = offsets[:-1]`` (sequences end to end, like Arrow list
    arrays). Keeping starts and lengths apart lets a subset, a time split or the
    ``next`` target be a view of the same (possibly memory-mapped) storage, never a copy.
    The target of step t of sequence i is ``targets[starts[i] + t + target_shift]``.
    """

    values: np.ndarray  # [total_steps, F]
    starts: np.ndarray  # int64 [N]
    lengths: np.ndarray  # int64 [N]
    ids: list[str]
    feature_names: list[str]
    targets: np.ndarray | None = None  # [total_steps, Ft]
    target_names: list[str] = field(default_factory=list)
    target_shift: int = 0
    # Columns read but not used as features (a time or boundary column), float64 [total_steps].
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # The feature each target column repeats (``--target next``), None for column targets.
    target_features: list[int] | None = None
    # ``--scale``: how gathered values are scaled on their way to X and y.
    scaling: Scaling | None = None

    @classmethod
    def from_offsets(
        cls,
        values: np.ndarray,
        offsets: np.ndarray,
        ids: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        targets: np.ndarray | None = None,
        target_names: Sequence[str] = (),
    ) -> SequenceSet:
        offsets = np.asarray(offsets, dtype=np.int64)
        n = len(offsets) - 1
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        return cls(
            values=values,
            starts=offsets[:-1].copy(),
            lengths=np.diff(offsets),
            ids=list(ids) if ids is not None else [str(i) for i in range(n)],
            feature_names=(
                list(feature_names)
                if feature_names is not None
                else [f"x{j}" for j in range(values.shape[1])]
            ),
            targets=targets,
            target_names=list(target_names),
        )

    @property
    def count(self) -> int:
        return len(self.lengths)

    @property
    def steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def features(self) -> int:
        return int(self.values.shape[1])

    def sequence(self, i: int) -> np.ndarray:
        start = int(self.starts[i])
        return np.asarray(self.values[start : start + int(self.lengths[i])])

    def target(self, i: int) -> np.ndarray:
        assert self.targets is not None
        start = int(self.starts[i]) + self.target_shift
        return np.asarray(self.targets[start : start + int(self.lengths[i])])

    def with_next_target(self, columns: list[int] | None = None, horizon: int = 1) -> SequenceSet:
        """``y[t] = x[t+H]`` of the chosen features (default all), which stay features too:
        every sequence loses its last H steps. The targets are a view of the values
        unless the chosen columns are irregularly spaced (then a copy of those columns)."""
        chosen = list(range(self.features)) if columns is None else list(columns)
        prefix = "next_" if horizon == 1 else f"next{horizon}_"
        return replace(
            self,
            targets=column_view(self.values, chosen),
            target_names=[prefix + self.feature_names[j] for j in chosen],
            target_shift=horizon,
            target_features=chosen,
            lengths=np.maximum(self.lengths - horizon, 0),
        )

    def subset(self, index: np.ndarray) -> SequenceSet:
        return replace(
            self,
            starts=self.starts[index],
            lengths=self.lengths[index],
            ids=[self.ids[i] for i in index],
        )

    def split_time(self, fraction: float) -> tuple[SequenceSet, SequenceSet]:
        """The first ``1 - fraction`` of every sequence, and the rest (the future)."""
        head = np.floor(self.lengths * (1.0 - fraction)).astype(np.int64)
        first = replace(self, lengths=head)
        rest = replace(self, starts=self.starts + head, lengths=self.lengths - head)
        return first, rest


def column_view(values: np.ndarray, columns: list[int]) -> np.ndarray:
    """``values[:, columns]``, as a view (no copy of a memory-mapped input) when the
    columns are evenly spaced and increasing."""
    if columns == list(range(values.shape[1])):
        return values
    step = columns[1] - columns[0] if len(columns) > 1 else 1
    if step > 0 and columns == list(range(columns[0], columns[-1] + 1, step)):
        return values[:, columns[0] : columns[-1] + 1 : step]
    return np.ascontiguousarray(values[:, columns])


@dataclass(frozen=True)
class FileInfo:
    """One input file: path, size and sha256 (maybe still computing, see ``digest.py``)."""

    path: str
    size: int
    digest: str | Future[str]
    details: dict[str, Any] = field(default_factory=dict)  # more keys for the manifest (files)

    @property
    def sha256(self) -> str:
        return self.digest if isinstance(self.digest, str) else self.digest.result()


@dataclass(frozen=True)
class SourceInfo:
    """What the manifest records about the input: path as given, format, size, sha256,
    every file read (a directory, a glob or several paths give many) and the warnings
    the reader has for the report.

    Several files are hashed as one input through their listing: the sha256 of
    ``"<sha256>  <path>\n"`` lines in reading order (what ``sha256sum`` prints).
    """

    path: str
    format: str
    size: int
    digest: str | Future[str]
    files: tuple[FileInfo, ...] = ()
    warnings: tuple[str, ...] = ()
    # Without --time-col: the column the rows are out of order of; without --id-col: the
    # text column that most likely names the sequences (inspect suggests them).
    time_col_hint: str | None = None
    id_col_hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # more keys for the manifest (engine)

    @classmethod
    def of_files(
        cls, path: str, fmt: str, files: Sequence[FileInfo], warnings: Sequence[str] = ()
    ) -> SourceInfo:
        if len(files) == 1:
            digest: str | Future[str] = files[0].digest
        else:
            digest = in_background(lambda: _listing_sha256(files))
        size = sum(f.size for f in files)
        return cls(path, fmt, size, digest, tuple(files), tuple(warnings))

    @property
    def sha256(self) -> str:
        return self.digest if isinstance(self.digest, str) else self.digest.result()


def _listing_sha256(files: Sequence[FileInfo]) -> str:
    listing = "".join(f"{f.sha256}  {f.path}\n" for f in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()
