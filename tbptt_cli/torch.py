"""PyTorch: a tbptt output as an `IterableDataset`, and the state a loop carries per row.

    from torch.utils.data import DataLoader
    from tbptt_cli.torch import BatchDataset, RowStates

    loader = DataLoader(BatchDataset("out/train.h5"), batch_size=None, num_workers=2)
    states = RowStates(torch.zeros(1, B, H), torch.zeros(1, B, H))   # nn.LSTM's (h, c)
    for batch in loader:                  # TorchBatch: tensors, in stored order
        h, c = states.start(batch)        # these rows' state, zeroed where reset
        out, (h, c) = lstm(batch.X, (h, c))
        ...
        states.end(batch, (h, c))         # kept, detached, for these rows' next batch

Each of W DataLoader workers reads whole rows (lanes) of every batch, not every W-th
batch: worker w yields rows ``[first_row, first_row + rows)`` of batches 0, 1, 2 ... in
order, so each worker's stream carries state on its own, whatever order the DataLoader
hands items over in (``in_order=False`` included). `RowStates` keys the state by those
rows. This module imports torch; `tbptt_cli` itself does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tbptt_cli.batches import Batch, BatchFile

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class TorchBatch(Batch[torch.Tensor]):
    """A `Batch` of tensors, with the DataLoader worker that read it."""

    worker: int = 0

    def pin_memory(self) -> TorchBatch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return cast(TorchBatch, self.map(torch.Tensor.pin_memory))

    def __reduce__(self) -> tuple[Any, ...]:
        # From a DataLoader worker the arrays travel as numpy through the pipe and become
        # tensors again on arrival: several times faster for batches of a few MiB than
        # torch's one shared-memory file per tensor (benchmarks/README.md).
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain = {
            k: v.numpy(force=True) if isinstance(v, torch.Tensor) else v for k, v in fields.items()
        }
        return _rebuild, (type(self), plain)


def _rebuild(kind: type[TorchBatch], fields: dict[str, Any]) -> TorchBatch:
    tensors = {
        k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()
    }
    return kind(**tensors)  # type: ignore[arg-type]


class BatchDataset(IterableDataset[TorchBatch]):
    """The batches of an output file in stored order, as `TorchBatch` items.

    Use it with ``DataLoader(dataset, batch_size=None)`` (each item already is a batch)
    and any ``num_workers``: each worker opens the file itself and reads its own share of
    the rows. ``rank``/``world_size`` pick a data-parallel stream of a ``--ranks`` file;
    ``start``/``stop`` a range of batches (to resume mid-epoch: see
    `BatchFile.carried` and `BatchFile.replay_from`).
    """

    def __init__(
        self,
        path: str,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.batches = BatchFile(path, rank=rank, world_size=world_size)
        self.start, self.stop = self.batches.span(start, stop)

    def __iter__(self) -> Iterator[TorchBatch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rows = worker_rows(self.batches.batch_size, worker, workers)
        if rows.start == rows.stop:
            return  # more workers than rows: this one has none
        for batch in self.batches.iterate(self.start, self.stop, rows):
            if batch.rows:  # a short last batch may end before this worker's rows
                yield TorchBatch(**vars(batch.map(torch.from_numpy)), worker=worker)


class RowStates:
    """The recurrent state of every row of the batch, carried from each batch to the next.

    Give it the state of all rows at the start (zeros: ``torch.zeros(layers, B, H)`` for
    each of nn.LSTM's ``h`` and ``c``); ``dim`` is the row axis of those tensors (1 for
    nn.LSTM/nn.GRU, 0 for ``[B, H]`` cell states).
    """

    def __init__(self, *initial: torch.Tensor, dim: int = 1) -> None:
        self.saved: State = tuple(t.detach().clone() for t in initial)
        self.dim = dim

    def start(self, batch: Batch[torch.Tensor]) -> State:
        """The state these rows start the batch from: carried over, zeroed where reset."""
        carried = tuple(t.narrow(self.dim, batch.first_row, batch.rows).clone() for t in self.saved)
        return zero_rows(carried, batch.reset, self.dim)

    def end(self, batch: Batch[torch.Tensor], state: State) -> None:
        """Keep the state these rows end the batch with (detached: the TBPTT truncation)."""
        for saved, new in zip(self.saved, state, strict=True):
            saved.narrow(self.dim, batch.first_row, batch.rows).copy_(new.detach())


def zero_rows(state: State, rows: torch.Tensor, dim: int = 1) -> State:
    """``state`` with the rows flagged in ``rows`` (bool) set to zero, gradient-safe."""
    shape = [1] * state[0].dim()
    shape[dim] = -1
    flags = rows.to(device=state[0].device, dtype=torch.bool).reshape(shape)
    return tuple(t.masked_fill(flags, 0) for t in state)


def worker_rows(batch_size: int, worker: int, workers: int) -> slice:
    """Worker ``worker`` of ``workers`` reads these rows of every batch (near-equal shares)."""
    share, extra = divmod(batch_size, workers)
    start = worker * share + min(worker, extra)
    return slice(start, start + share + (worker < extra))
