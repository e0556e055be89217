"""Train a stateful LSTM in PyTorch on a tbptt output file.

    tbptt split data.npy --target x2 --length 8 --batch-size 32 -o out/train.h5
    python examples/torch_stateful.py out/train.h5 --epochs 20 --hidden 32

The file is read in stored order with `tbptt_cli.batches.BatchFile`. Row i of batch k
continues row i of batch k-1, so the LSTM state (h, c) is carried from batch to batch:
zeroed for the rows flagged in ``reset``, and detached at each batch end (that is the
truncation of TBPTT). The loss is a mean squared error over the real steps (``mask``),
and over the trained steps only (``loss_mask``) in a ``tbptt decoupled`` file, whose first
``k1 - k2`` steps of each window run under ``torch.no_grad()`` while still moving the state.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tbptt_cli.batches import Batch, BatchFile

State = tuple[torch.Tensor, torch.Tensor]


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
    model: StatefulLSTM
    losses: list[float] = field(default_factory=list)  # masked training loss per epoch
    loss: float = float("nan")  # masked loss of the evaluation pass
    accuracy: float = float("nan")  # sign agreement at the last step of every sequence


def start_state(state: State | None, batch: Batch, hidden: int) -> State:
    """The state this batch starts from: carried over, with the ``reset`` rows zeroed."""
    if state is None or state[0].shape[1] != batch.rows:
        # First batch, or a partial last batch of a stateless file (every row resets).
        zeros = torch.zeros(1, batch.rows, hidden)
        return zeros, zeros.clone()
    h, c = state
    reset = torch.from_numpy(batch.reset)
    h[:, reset] = 0
    c[:, reset] = 0
    return h, c


def forward_batch(
    model: StatefulLSTM, batch: Batch, state: State, grad_start: int
) -> tuple[torch.Tensor, State]:
    """Run the whole window; steps before ``grad_start`` only warm the state up."""
    x = torch.from_numpy(batch.X).float()
    outputs = []
    if grad_start > 0:
        with torch.no_grad():
            warm, state = model(x[:, :grad_start], state)
        outputs.append(warm)
    if grad_start < batch.length:
        trained, state = model(x[:, grad_start:], state)
        outputs.append(trained)
    return torch.cat(outputs, dim=1), state


def gradient_start(attrs: dict[str, Any]) -> int:
    """Decoupled files (attributes k1, k2): the first k1 - k2 steps only warm the state up."""
    if "k1" not in attrs:
        return 0
    return int(attrs.get("grad_start", attrs["k1"] - attrs["k2"]))


def masked_loss(pred: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
    """Sum of squared errors over the counted steps, and how many steps were counted."""
    assert batch.y is not None
    weight = batch.loss_mask if batch.loss_mask is not None else batch.mask
    w = torch.from_numpy(weight.astype(np.float32)).unsqueeze(-1)
    error = (pred - torch.from_numpy(batch.y).float()) ** 2 * w
    return error.sum(), int(weight.sum()) * batch.y.shape[-1]


def run_epoch(
    model: StatefulLSTM,
    batches: BatchFile,
    hidden: int,
    optimizer: torch.optim.Optimizer | None = None,
    on_batch: Callable[[Batch, torch.Tensor], None] | None = None,
) -> float:
    """One pass in stored order (never shuffled); trains when an optimizer is given."""
    grad_start = gradient_start(batches.attrs)
    state: State | None = None  # a new epoch starts from zero state
    total, counted = 0.0, 0
    for batch in batches:
        state = start_state(state, batch, hidden)
        with torch.set_grad_enabled(optimizer is not None):
            pred, state = forward_batch(model, batch, state, min(grad_start, batch.length))
            loss_sum, count = masked_loss(pred, batch)
            if optimizer is not None and count:
                optimizer.zero_grad()
                (loss_sum / count).backward()
                optimizer.step()
        state = (state[0].detach(), state[1].detach())  # truncate: no gradient into the past
        total, counted = total + float(loss_sum.detach()), counted + count
        if on_batch is not None:
            on_batch(batch, pred.detach())
    return total / max(counted, 1)


def final_step_accuracy(
    model: StatefulLSTM, batches: BatchFile, hidden: int
) -> tuple[float, float]:
    """(masked loss, share of sequences whose last step's prediction has the target's sign)."""
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (sequence, end, correct)

    def record(batch: Batch, pred: torch.Tensor) -> None:
        assert batch.y is not None
        real = batch.mask.astype(bool)
        rows = np.flatnonzero((batch.sequence >= 0) & real.any(axis=1))
        last = batch.length - 1 - np.argmax(real[rows, ::-1], axis=1)  # last real step
        agree = np.sign(pred.numpy()[rows, last]) == np.sign(batch.y[rows, last])
        end = batch.offset[rows] + real[rows].sum(axis=1)
        seen.append((batch.sequence[rows], end, agree.all(axis=-1)))

    with torch.no_grad():
        loss = run_epoch(model, batches, hidden, on_batch=record)
    sequence, end, correct = (np.concatenate(column) for column in zip(*seen, strict=True))
    order = np.lexsort((end, sequence))  # by sequence, then by end: the last row wins
    is_last = np.append(np.diff(sequence[order]) != 0, True)
    return loss, float(correct[order][is_last].mean())


def train(
    path: str,
    epochs: int = 20,
    hidden: int = 32,
    seed: int = 0,
    lr: float = 0.01,
    eval_path: str | None = None,
    log: Callable[[str], None] | None = print,
) -> Result:
    """Train on ``path``, then evaluate on ``eval_path`` (default: the same file)."""
    torch.manual_seed(seed)
    batches = BatchFile(path)
    if not batches.has_target:
        raise SystemExit(f"{path}: no target in the file; write it with --target next|NAME")
    features, targets = len(batches.attrs["features"]), len(batches.attrs["targets"])
    model = StatefulLSTM(features, hidden, targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    result = Result(model)
    for epoch in range(1, epochs + 1):
        result.losses.append(run_epoch(model, batches, hidden, optimizer))
        if log:
            log(f"epoch {epoch:3d}  masked loss {result.losses[-1]:.4f}")
    result.loss, result.accuracy = final_step_accuracy(model, BatchFile(eval_path or path), hidden)
    if log:
        log(f"eval: masked loss {result.loss:.4f}, "
            f"sign accuracy at the last step {result.accuracy:.3f}")
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
    args = parser.parse_args()
    train(args.path, args.epochs, args.hidden, args.seed, args.lr, args.eval_path)


if __name__ == "__main__":
    main()
