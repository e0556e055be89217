"""Read an output .h5 back batch by batch, in the stored (stateful) order.

`BatchFile` is what training code iterates. It needs numpy and h5py only, yet works as a
PyTorch map-style dataset (``DataLoader(BatchFile(path), batch_size=None)``): the HDF5
handle is opened on first use and reopened in a forked worker, because an h5py handle
shared across ``fork`` is not safe, and a pickled `BatchFile` carries the path only.
The framework loaders (`tbptt_cli.torch`, `tbptt_cli.keras`) are built on it.

Row i of batch k continues row i of batch k-1 unless ``reset[i]``: carry the recurrent
state across batches, zero the rows flagged in ``reset``, and never shuffle. In a
``--packing stream`` file a sequence may also start inside a row (``step_reset``).

A file written with ``--ranks R`` holds R data-parallel streams: batch k of rank r is
rows ``[(k*R + r)*B, (k*R + r + 1)*B)``. ``BatchFile(path, rank=r)`` (or with
``world_size=R``) reads rank r's batches; without a rank one reader takes the R batches of
step k together (``R*B`` rows, still state-continuous), and a world size that divides R
gives each rank R / world_size of them side by side.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import h5py
import numpy as np

from tbptt_cli.errors import InputDataError, InputMissingError

FORMAT_VERSION = 1
ROW_DATASETS = ("sequence", "offset", "reset")
STEP_DATASETS = ("X", "y", "mask", "loss_mask", "step_reset", "step_sequence")
DATASETS = (*STEP_DATASETS, *ROW_DATASETS)

A = TypeVar("A", bound=Sized)  # numpy arrays here; torch tensors in tbptt_cli.torch
T = TypeVar("T", bound=Sized)


@dataclass(frozen=True)
class Batch(Generic[A]):
    """Batch ``index`` of a reader: ``rows`` samples of ``length`` timesteps.

    ``first_row`` says which rows of the full batch these are (a DataLoader worker reads
    a contiguous share of them): rows ``[first_row, first_row + rows)``.
    """

    index: int
    X: A  # [rows, length, F]
    y: A | None  # [rows, length, Ft], None without a target
    mask: A  # uint8 [rows, length], 1 = real step
    loss_mask: A | None  # uint8 [rows, length], decoupled files only
    reset: A  # bool [rows]: zero these rows' state before this batch
    sequence: A  # int64 [rows], -1 for filler rows
    offset: A  # int64 [rows], first real step's position in its sequence
    length: int  # timesteps: the window, or batch_length[index] (variable-length BPTT)
    first_row: int = 0
    step_reset: A | None = None  # uint8 [rows, length], --packing stream: 1 = a sequence starts
    step_sequence: A | None = None  # int64 [rows, length], --packing stream: -1 on padding

    @property
    def rows(self) -> int:
        return len(self.reset)

    @property
    def row_slice(self) -> slice:
        """Where these rows sit in the full batch (and in a state kept for all its rows)."""
        return slice(self.first_row, self.first_row + self.rows)

    def map(self, convert: Callable[[A], T]) -> Batch[T]:
        """The same batch with ``convert`` applied to every array (``None`` stays ``None``)."""
        arrays = {
            field.name: convert(value)
            for field in dataclasses.fields(self)
            if (value := getattr(self, field.name)) is not None and field.name in _ARRAYS
        }
        return dataclasses.replace(self, **arrays)  # type: ignore[arg-type, return-value]


_ARRAYS = frozenset({*DATASETS})


def reset_segments(step_reset: Any, length: int, cuts: Iterable[int] = ()) -> list[tuple[int, int]]:
    """The pieces ``[start, stop)`` of a window between the steps where a sequence starts.

    Run the recurrent layer piece by piece and zero, at each piece's start, the rows whose
    ``step_reset`` (``[rows, length]``, array or CPU tensor) is 1 there: one call per piece
    instead of one per timestep. Without per-step resets (``None``: every packing but
    ``stream``) the window is one piece. ``cuts`` adds boundaries of your own (such as
    ``grad_start`` in a decoupled file).
    """
    edges = {0, length, *(c for c in cuts if 0 < c < length)}
    if step_reset is not None:
        starts = np.asarray(step_reset)[:, 1:length].any(axis=0)
        edges.update((np.flatnonzero(starts) + 1).tolist())
    ordered = sorted(edges)
    return list(zip(ordered[:-1], ordered[1:], strict=True))


class BatchFile:
    """The batches of one tbptt output file, as a sequence: ``len``, ``[k]`` and iteration.

    The constructor checks the file is a tbptt output and reads its small attributes,
    then closes it again; the datasets are opened lazily, once per process. ``rank`` and
    ``world_size`` pick one data-parallel stream of a ``--ranks`` file (see the module doc).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
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
        self._file_batch_size = int(self.attrs["batch_size"])
        if self._file_batch_size < 1:
            raise InputDataError(
                f"{self.path}: attribute batch_size is {self._file_batch_size}; "
                "the file is damaged, write it again"
            )
        self.ranks = int(self.attrs.get("ranks", 1))
        self.rank, self.world_size = _check_rank(self.path, self.ranks, rank, world_size)
        self._batch_size = self._file_batch_size * (self.ranks // self.world_size)
        self._count = _batch_count(self.path, self.samples, self._file_batch_size, self.ranks)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._data: dict[str, h5py.Dataset] = {}

    @property
    def batch_size(self) -> int:
        """Rows per batch of this reader: the size the file is laid out for (times R /
        world_size in a ``--ranks R`` file). A stateful file works with no other."""
        return self._batch_size

    @property
    def window(self) -> int:
        return int(self.attrs["window"])

    @property
    def stateful(self) -> bool:
        return bool(self.attrs["stateful"])

    @property
    def packing(self) -> str:
        return str(self.attrs.get("packing", ""))

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Batch[np.ndarray]:
        return self.read(index)

    def read(self, index: int, rows: slice | None = None) -> Batch[np.ndarray]:
        """Batch ``index``, or only its ``rows`` (a slice of ``range(batch_size)``)."""
        k = self._check_index(index)
        lo, hi, step = (rows or slice(None)).indices(self._batch_size)
        if step != 1:
            raise ValueError(f"rows {rows} of a batch must be contiguous (no step)")
        whole = self._samples(k)
        first, last = (min(whole.start + i, whole.stop) for i in (lo, max(lo, hi)))
        samples = slice(first, last)
        steps = self._length(k)
        data = self._datasets()

        def window(name: str) -> np.ndarray | None:
            # h5py reads only the hyperslab [rows, :steps]: memory stays one batch.
            return data[name][samples, :steps] if name in data else None

        mask = window("mask")
        assert mask is not None  # _check_format requires it
        return Batch(
            index=k,
            X=data["X"][samples, :steps],
            y=window("y"),
            mask=mask,
            loss_mask=window("loss_mask"),
            reset=data["reset"][samples].astype(bool),
            sequence=data["sequence"][samples],
            offset=data["offset"][samples],
            length=steps,
            first_row=lo,
            step_reset=window("step_reset"),
            step_sequence=window("step_sequence"),
        )

    def __iter__(self) -> Iterator[Batch[np.ndarray]]:
        return self.iterate()

    def iterate(
        self, start: int = 0, stop: int | None = None, rows: slice | None = None
    ) -> Iterator[Batch[np.ndarray]]:
        """Batches ``start`` to ``stop - 1`` in stored order (to resume an epoch mid-way)."""
        for k in range(*self.span(start, stop)):
            yield self.read(k, rows)

    def span(self, start: int = 0, stop: int | None = None) -> tuple[int, int]:
        """``(start, stop)`` checked against the batch count, ``stop`` defaulting to it."""
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise ValueError(
                f"batches {start} to {stop} are not a range of {self.path}'s "
                f"{len(self)} batches; pick 0 <= start <= stop <= {len(self)}"
            )
        return start, stop

    def carried(self, index: int) -> np.ndarray:
        """bool per row: the rows whose state at batch ``index`` comes from batch index - 1.

        Resuming at ``index`` needs that state (saved with the model, or rebuilt with
        `replay_from`); every other row starts from zero. At a block start none carries.
        """
        return ~self.resets(index)

    def resets(self, index: int) -> np.ndarray:
        """bool per row of batch ``index``: zero this row's state first (its ``reset``)."""
        return self._datasets()["reset"][self._samples(self._check_index(index))].astype(bool)

    def replay_from(self, index: int) -> int:
        """The batch to resume forward passes from so that every row has its state at ``index``.

        Run batches ``replay_from(index)`` to ``index - 1`` without training (state carried
        and reset as usual), then train from ``index``: each row's current sequence is read
        from its start. It is ``index`` itself when no row carries state into it.
        """
        pending = self.carried(index)
        k = index
        while pending.any() and k > 0:
            k -= 1
            pending &= ~self._starts_a_sequence(k)
        return k

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
        ranks = f", rank={self.rank}, world_size={self.world_size}" if self.ranks > 1 else ""
        return (
            f"BatchFile({str(self.path)!r}, batches={len(self)}, "
            f"batch_size={self._batch_size}{ranks})"
        )

    def _check_index(self, index: int) -> int:
        count = len(self)
        k = int(index) + count if int(index) < 0 else int(index)
        if not 0 <= k < count:
            raise IndexError(f"batch {index} out of range: {self.path} has {count} batches")
        return k

    def _samples(self, k: int) -> slice:
        first = (k * self.world_size + self.rank) * self._batch_size
        return slice(first, min(first + self._batch_size, self.samples))

    def _length(self, k: int) -> int:
        """Timesteps of batch k: the longest of the file's batches it is made of."""
        if self.batch_length is None:
            return self.window
        per_reader = self.ranks // self.world_size
        first = (k * self.world_size + self.rank) * per_reader
        return int(self.batch_length[first : first + per_reader].max())

    def _starts_a_sequence(self, k: int) -> np.ndarray:
        """bool per row: a sequence starts somewhere in this row of batch k."""
        data = self._datasets()
        if "step_reset" not in data:
            return self.resets(k)
        return data["step_reset"][self._samples(k)].astype(bool).any(axis=1)

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """This process's datasets; a forked child opens its own file, not the parent's."""
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork is left alone (not used, not closed here):
            # its file descriptor and HDF5 state belong to the parent.
            self._file = _open(self.path)
            self._pid = os.getpid()
            self._data = {name: self._file[name] for name in DATASETS if name in self._file}
        return self._data


def _check_rank(
    path: Path, ranks: int, rank: int | None, world_size: int | None
) -> tuple[int, int]:
    """(rank, world_size) to read: all ranks side by side when neither is given, rank r of
    the file's R when only ``rank`` is."""
    if ranks < 1:
        raise InputDataError(
            f"{path}: attribute ranks is {ranks}; the file is damaged, write it again"
        )
    if world_size is None:
        world_size = 1 if rank is None else ranks
    rank = rank or 0
    if world_size < 1 or ranks % world_size:
        divisors = [d for d in range(1, ranks + 1) if ranks % d == 0]
        raise ValueError(
            f"{path} is laid out for {ranks} data-parallel rank(s); world_size {world_size} "
            f"does not divide that: use one of {', '.join(map(str, divisors))}"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is out of range for world_size {world_size}")
    return rank, world_size


def _batch_count(path: Path, samples: int, batch_size: int, ranks: int) -> int:
    """Batches per reader; only a stateless file (one rank) may end with a partial batch."""
    if ranks == 1:
        return -(-samples // batch_size)
    if samples % (ranks * batch_size):
        raise InputDataError(
            f"{path}: {samples} samples are not {ranks} ranks of whole batches of "
            f"{batch_size}; the file is damaged, write it again"
        )
    return samples // (ranks * batch_size)


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
