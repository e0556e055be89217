"""Train a stateful LSTM in PyTorch on a tbptt output file.

    tbptt split data.npy --target x2 --length 8 --batch-size 32 -o out/train.h5
    python examples/torch_stateful.py out/train.h5 --epochs 20 --hidden 32 --workers 2

    # a file written with --ranks 2, one process per rank (DistributedDataParallel, gloo)
    torchrun --standalone --nproc-per-node 2 examples/torch_stateful.py out/ranked.h5

The file is read in stored order with `tbptt_cli.torch.BatchDataset` through a DataLoader,
whose workers each read whole rows of every batch. Row i of batch k continues row i of
batch k-1, so the LSTM state (h, c) is carried per row by `tbptt_cli.torch.RowStates`:
zeroed for the rows flagged in ``reset``, and detached at each batch end (that is the
truncation of TBPTT). In a ``--packing stream`` file a sequence may also start inside a
row: the window is run piece by piece and the rows whose ``step_reset`` is 1 are zeroed
where their new sequence starts. The loss is a mean squared error over the real steps
(``mask``), and over the trained steps only (``loss_mask``) in a ``tbptt decoupled`` file,
whose first ``k1 - k2`` steps of each window run under ``torch.no_grad()`` while still
moving the state. Under torchrun each process trains on its rank's rows of the file.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from tbptt_cli.batches import reset_segments
from tbptt_cli.torch import BatchDataset, RowStates, TorchBatch, zero_rows

State = tuple[torch.Tensor, ...]


class StatefulLSTM(nn.Module):
    def __init__(self, features: int, hidden: int, targets: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, targets)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        out, state = self.lstm(x, state)
        return self.head(out), state


@dataclass
class Result:
    model: nn.Module
    losses: list[float] = field(default_factory=list)  # masked training loss per epoch
    loss: float = float("nan")  # masked loss of the evaluation pass
    accuracy: float = float("nan")  # sign agreement at the last step of every sequence


def zero_state(rows: int, hidden: int) -> RowStates:
    """(h, c) of every row of the batch: zero at the start of an epoch."""
    return RowStates(torch.zeros(1, rows, hidden), torch.zeros(1, rows, hidden))


def forward_batch(
    model: nn.Module, batch: TorchBatch, state: State, grad_start: int = 0
) -> tuple[torch.Tensor, State]:
    """Run the window piece by piece: a sequence starting inside a row (``step_reset``)
    gets a zero state there, and steps before ``grad_start`` only warm the state up."""
    x = batch.X.float()
    outputs = []
    for start, stop in reset_segments(batch.step_reset, batch.length, cuts=[grad_start]):
        if start > 0 and batch.step_reset is not None:
            state = zero_rows(state, batch.step_reset[:, start].bool())
        with torch.set_grad_enabled(torch.is_grad_enabled() and start >= grad_start):
            out, state = model(x[:, start:stop], state)
        outputs.append(out)
    return torch.cat(outputs, dim=1), state


def gradient_start(attrs: dict[str, Any]) -> int:
    """Decoupled files (attributes k1, k2): the first k1 - k2 steps only warm the state up."""
    if "k1" not in attrs:
        return 0
    return int(attrs.get("grad_start", attrs["k1"] - attrs["k2"]))


def masked_loss(pred: torch.Tensor, batch: TorchBatch) -> tuple[torch.Tensor, int]:
    """Sum of squared errors over the counted steps, and how many steps were counted."""
    assert batch.y is not None
    weight = batch.loss_mask if batch.loss_mask is not None else batch.mask
    w = weight.float().unsqueeze(-1)
    error = (pred - batch.y.float()) ** 2 * w
    return error.sum(), int(weight.sum()) * batch.y.shape[-1]


def all_ranks_sum(*values: float) -> list[float]:
    """The sums over every data-parallel process (the values themselves without DDP)."""
    if not dist.is_initialized():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def run_epoch(
    model: nn.Module,
    loader: DataLoader[TorchBatch],
    hidden: int,
    optimizer: torch.optim.Optimizer | None = None,
    on_batch: Callable[[TorchBatch, torch.Tensor], None] | None = None,
) -> float:
    """One pass in stored order (never shuffled); trains when an optimizer is given."""
    dataset = loader.dataset
    assert isinstance(dataset, BatchDataset)
    grad_start = gradient_start(dataset.batches.attrs)
    states = zero_state(dataset.batches.batch_size, hidden)
    total, counted = 0.0, 0
    for batch in loader:
        with torch.set_grad_enabled(optimizer is not None):
            pred, state = forward_batch(model, batch, states.start(batch), grad_start)
            loss_sum, count = masked_loss(pred, batch)
            if optimizer is not None:
                # Every rank steps on every batch (a filler batch counts nothing), so
                # DistributedDataParallel's gradient exchange never waits for a rank.
                optimizer.zero_grad()
                (loss_sum / max(count, 1)).backward()
                optimizer.step()
        states.end(batch, state)  # detached: no gradient into the previous batch
        total, counted = total + float(loss_sum.detach()), counted + count
        if on_batch is not None:
            on_batch(batch, pred.detach())
    total, counted = all_ranks_sum(total, counted)
    return total / max(counted, 1)


def last_steps(batch: TorchBatch, pred: torch.Tensor) -> np.ndarray:
    """One record per sequence that ends or pauses in a row of this batch: its id, where
    (batch, row, step) and whether the prediction's sign is right there."""
    assert batch.y is not None
    if batch.step_sequence is not None:  # --packing stream: several sequences in a row
        sequence = batch.step_sequence.numpy()
    else:
        sequence = np.where(batch.mask.numpy() == 1, batch.sequence.numpy()[:, None], -1)
    # The last real step of each run of one sequence in a row.
    ends = np.append(sequence[:, :-1] != sequence[:, 1:], np.ones((len(sequence), 1), bool), 1)
    rows, steps = np.nonzero(ends & (sequence >= 0))
    agree = (np.sign(pred.numpy()) == np.sign(batch.y.numpy())).all(axis=-1)
    return np.stack(
        [
            sequence[rows, steps],
            np.full(len(rows), batch.index),
            rows + batch.first_row,
            steps,
            agree[rows, steps],
        ],
        axis=1,
    ).astype(np.int64)


def final_step_accuracy(
    model: nn.Module, loader: DataLoader[TorchBatch], hidden: int
) -> tuple[float, float]:
    """(masked loss, share of sequences whose last step's prediction has the target's sign)."""
    seen: list[np.ndarray] = []
    with torch.no_grad():
        loss = run_epoch(model, loader, hidden, on_batch=lambda b, p: seen.append(last_steps(b, p)))
    records = np.concatenate(seen)
    sequence, batch, step = records[:, 0], records[:, 1], records[:, 3]
    order = np.lexsort((step, batch, sequence))  # by sequence, then where: the last one wins
    is_last = np.append(np.diff(sequence[order]) != 0, True)
    correct, count = all_ranks_sum(float(records[order][is_last, 4].sum()), float(is_last.sum()))
    return loss, correct / max(count, 1)


def make_loader(path: str, workers: int) -> DataLoader[TorchBatch]:
    """This process's batches: under torchrun, its rank's rows of a ``--ranks`` file."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    dataset = BatchDataset(path, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=None, num_workers=workers)


def train(
    path: str,
    epochs: int = 20,
    hidden: int = 32,
    seed: int = 0,
    lr: float = 0.01,
    eval_path: str | None = None,
    log: Callable[[str], None] | None = print,
    workers: int = 0,
) -> Result:
    """Train on ``path``, then evaluate on ``eval_path`` (default: the same file)."""
    torch.manual_seed(seed)
    loader = make_loader(path, workers)
    assert isinstance(loader.dataset, BatchDataset)
    attrs = loader.dataset.batches.attrs
    if not loader.dataset.batches.has_target:
        raise SystemExit(f"{path}: no target in the file; write it with --target next|NAME")
    model: nn.Module = StatefulLSTM(len(attrs["features"]), hidden, len(attrs["targets"]))
    if dist.is_initialized():
        model = nn.parallel.DistributedDataParallel(model)  # same seed: same initial weights
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    result = Result(model)
    for epoch in range(1, epochs + 1):
        result.losses.append(run_epoch(model, loader, hidden, optimizer))
        if log:
            log(f"epoch {epoch:3d}  masked loss {result.losses[-1]:.4f}")
    evaluation = make_loader(eval_path or path, workers)
    result.loss, result.accuracy = final_step_accuracy(model, evaluation, hidden)
    if log:
        log(f"eval: masked loss {result.loss:.4f}, last-step sign accuracy {result.accuracy:.3f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="an output .h5 of tbptt split (or stepwise, decoupled ...)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--eval", dest="eval_path", help="evaluate on this file (default: PATH)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        dist.init_process_group("gloo")
    lead = not dist.is_initialized() or dist.get_rank() == 0
    result = train(
        args.path,
        args.epochs,
        args.hidden,
        args.seed,
        args.lr,
        args.eval_path,
        print if lead and not args.json else None,
        args.workers,
    )
    if lead and args.json:
        fields = {"losses": result.losses, "loss": result.loss, "accuracy": result.accuracy}
        print(json.dumps(fields))
    if dist.is_initialized():
        # Both ranks reach the teardown together: a gloo peer that closes its connections
        # while the other still uses them aborts ("terminate called without an active
        # exception"), seen about once in ten runs on a loaded machine.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
