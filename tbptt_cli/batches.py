"""Read an output .h5 back batch by batch, in the stored (stateful) order.

`BatchFile` is what training code iterates. It needs numpy and h5py only, yet works as a
PyTorch map-style dataset (``DataLoader(BatchFile(path), batch_size=None)``): the HDF5
handle is opened on first use and reopened in a forked worker, because an h5py handle
shared across ``fork`` is not safe, and a pickled `BatchFile` carries the path only.

Row i of batch k continues row i of batch k-1 unless ``reset[i]``: carry the recurrent
state across batches, zero the rows flagged in ``reset``, and never shuffle. A file laid
out for R data-parallel ranks (``--ranks``) is read by rank: ``BatchFile(path, rank=r,
world_size=R)`` yields rank r's batches; without a rank, each batch holds the R ranks'
rows side by side (one process training on all of them carries state the same way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli.errors import InputDataError, InputMissingError

FORMAT_VERSION = 1
ROW_DATASETS = ("sequence", "offset", "reset")
DATASETS = ("X", "y", "mask", "loss_mask", "step_reset", "step_sequence", *ROW_DATASETS)


@dataclass(frozen=True)
class Batch:
    """Batch ``index`` of a file: ``rows`` samples of ``length`` timesteps."""

    index: int
    X: np.ndarray  # [rows, length, F]
    y: np.ndarray | None  # [rows, length, Ft], None without a target
    mask: np.ndarray  # uint8 [rows, length], 1 = real step
    loss_mask: np.ndarray | None  # uint8 [rows, length], decoupled files only
    reset: np.ndarray  # bool [rows]: zero these rows' state before this batch
    sequence: np.ndarray  # int64 [rows], -1 for filler rows
    offset: np.ndarray  # int64 [rows], first real step's position in its sequence
    length: int  # timesteps: the window, or batch_length[index] (variable-length BPTT)
    step_reset: np.ndarray | None = None  # uint8 [rows, length], --packing stream
    step_sequence: np.ndarray | None = None  # int64 [rows, length], --packing stream

    @property
    def rows(self) -> int:
        return len(self.reset)


class BatchFile:
    """The batches of one tbptt output file, as a sequence: ``len``, ``[k]`` and iteration.

    The constructor checks the file is a tbptt output and reads its small attributes,
    then closes it again; the datasets are opened lazily, once per process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.path = Path(path)
        with _open(self.path) as f:
            self.attrs: dict[str, Any] = _check_format(f, self.path)
            _check_shards(f, self.path)
            self.samples = int(f["X"].shape[0])
            self.has_target = "y" in f
            self.has_loss_mask = "loss_mask" in f
            self.batch_length = np.asarray(f["batch_length"][:]) if "batch_length" in f else None
        self._batch_size = int(self.attrs["batch_size"])
        self.ranks = int(self.attrs.get("ranks", 1))
        if self._batch_size < 1 or self.ranks < 1:
            raise InputDataError(
                f"{self.path}: attribute batch_size is {self._batch_size}, ranks "
                f"{self.ranks}; the file is damaged, write it again"
            )
        self.rank = _check_rank(self.path, rank, world_size, self.ranks)
        # Batch k read here is rows [k * step + skip, + rows): one rank's batch, or all ranks'.
        self._rows = self._batch_size if rank is not None else self._batch_size * self.ranks
        self._step = self._batch_size * self.ranks
        self._skip = self._batch_size * (rank or 0)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._data: dict[str, h5py.Dataset] = {}

    @property
    def batch_size(self) -> int:
        """Rows per batch read: the size the file is laid out for (per rank, or times the
        ranks when no rank is chosen). A stateful file works with no other."""
        return self._rows

    @property
    def window(self) -> int:
        return int(self.attrs["window"])

    @property
    def stateful(self) -> bool:
        return bool(self.attrs["stateful"])

    def __len__(self) -> int:
        return -(-self.samples // self._step)

    def __getitem__(self, index: int) -> Batch:
        count = len(self)
        k = int(index) + count if int(index) < 0 else int(index)
        if not 0 <= k < count:
            raise IndexError(f"batch {index} out of range: {self.path} has {count} batches")
        data = self._datasets()
        first = k * self._step + self._skip
        rows = slice(first, min(first + self._rows, self.samples))
        # Every rank's batch k has the same length: that of the file's batch k * ranks.
        lengths = self.batch_length
        steps = self.window if lengths is None else int(lengths[k * self.ranks])

        def window(name: str) -> np.ndarray:
            # h5py reads only the hyperslab [rows, :steps]: memory stays one batch.
            return data[name][rows, :steps]

        return Batch(
            index=k,
            X=window("X"),
            y=window("y") if "y" in data else None,
            mask=window("mask"),
            loss_mask=window("loss_mask") if "loss_mask" in data else None,
            reset=data["reset"][rows].astype(bool),
            sequence=data["sequence"][rows],
            offset=data["offset"][rows],
            length=steps,
            step_reset=window("step_reset") if "step_reset" in data else None,
            step_sequence=window("step_sequence") if "step_sequence" in data else None,
        )

    def __iter__(self) -> Iterator[Batch]:
        for k in range(len(self)):
            yield self[k]

    def close(self) -> None:
        """Close the handle this process opened (a later access opens it again)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._data = None, None, {}

    def __enter__(self) -> BatchFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker gets a copy: the path and attributes, never the live handle.
        state = self.__dict__.copy()
        state.update(_file=None, _pid=None, _data={})
        return state

    def __repr__(self) -> str:
        rank = f", rank={self.rank}" if self.rank is not None else ""
        return f"BatchFile({str(self.path)!r}{rank}, batches={len(self)}, batch_size={self._rows})"

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """This process's datasets; a forked child opens its own file, not the parent's."""
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork is left alone (not used, not closed here):
            # its file descriptor and HDF5 state belong to the parent.
            self._file = _open(self.path)
            self._pid = os.getpid()
            self._data = {name: self._file[name] for name in DATASETS if name in self._file}
        return self._data


def _check_rank(path: Path, rank: int | None, world_size: int | None, ranks: int) -> int | None:
    """The rank to read (None: all side by side); a world size must be the file's."""
    if world_size is not None and world_size != ranks:
        raise ValueError(
            f"{path} is laid out for {ranks} rank(s), not a world size of {world_size}; "
            f"write it with --ranks {world_size}"
        )
    if rank is not None and not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} is not one of the {ranks} rank(s) {path} is laid out for")
    return rank


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise InputMissingError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except PermissionError:
        raise InputMissingError(f"{path}: permission denied") from None
    except OSError as e:
        raise InputDataError(
            f"{path}: not an HDF5 file ({e}); pass an .h5 written by tbptt"
        ) from None


def _check_format(f: h5py.File, path: Path) -> dict[str, Any]:
    """The root attributes as plain Python values, once the file is known to be ours."""
    attrs = {key: _plain(value) for key, value in f.attrs.items()}
    if attrs.get("format") != "tbptt":
        raise InputDataError(
            f"{path}: not a tbptt output (root attribute format is {attrs.get('format')!r}, "
            "expected 'tbptt'); read files written by a tbptt strategy command"
        )
    version = attrs.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputDataError(
            f"{path}: format_version {version!r} is not supported (this reader knows "
            f"{FORMAT_VERSION}); upgrade tbptt-cli"
        )
    missing = [name for name in ("X", "mask", *ROW_DATASETS) if name not in f]
    missing += [key for key in ("batch_size", "window", "stateful") if key not in attrs]
    if missing:
        raise InputDataError(
            f"{path}: tbptt output without {', '.join(missing)}; "
            "the file is damaged, write it again"
        )
    for key in ("features", "targets", "params"):
        if isinstance(attrs.get(key), str):
            try:
                attrs[key] = json.loads(attrs[key])
            except json.JSONDecodeError:
                raise InputDataError(
                    f"{path}: attribute {key} is not JSON; the file is damaged, write it again"
                ) from None
    return attrs


def _check_shards(f: h5py.File, path: Path) -> None:
    """A sharded output (``--engine dask``) reads fill values where a shard is missing,
    without an error: refuse it instead."""
    from tbptt_cli.shards import folder, missing_sources

    missing = missing_sources(f, path)
    if missing:
        raise InputMissingError(
            f"{path}: shard {missing[0]} is missing ({len(missing)} in all), so its rows "
            f"would read as fill values; keep the {folder(path).name} folder beside the file, "
            "or run the command again"
        )


def _plain(value: Any) -> Any:
    """numpy scalars and bytes from HDF5 as int, float, bool or str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
