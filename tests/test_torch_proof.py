"""Proof with a real LSTM: the interleaved layout lets a stateful model carry what it
learned across chunks; the textbook sequence-major layout with the same batch size does not.

The task: step 0 of every sequence carries a sign (+1 or -1), then only noise follows, and
the target of every step is that sign. Sequences are 3 chunks long, so the last step's
answer lies two chunks (two batches) back: only the state carried from row i of batch k to
row i of batch k+1 can hold it. Gradients never cross a chunk boundary (the state is
detached), so what the model learns inside chunk 0 has to be carried forward by the layout.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from handmade import sequence_major

from tbptt_cli.batches import BatchFile
from tbptt_cli.cli import run_main

if os.environ.get("CI"):
    import torch  # CI installs the test extra, which pins torch: missing must fail, not skip
else:
    torch = pytest.importorskip("torch")

from tbptt_cli.torch import BatchDataset  # noqa: E402  (after torch is known to be there)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_stateful.py"
SEQUENCES, CHUNK, CHUNKS, BATCH = 256, 8, 3, 32
TRAINING = {"epochs": 10, "hidden": 16, "seed": 0, "lr": 0.01, "log": None}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torch_stateful", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def sign_task(path: Path, seed: int) -> Path:
    """[N, T, 3]: x0 = the sign at step 0 (else 0), x1 = noise, x2 = the sign (the target)."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=SEQUENCES)
    data = np.zeros((SEQUENCES, CHUNK * CHUNKS, 3))
    data[:, 0, 0] = sign
    data[:, :, 1] = rng.normal(size=data.shape[:2])
    data[:, :, 2] = sign[:, None]
    np.save(path, data)
    return path


def split(source: Path, out: Path, *options: str) -> Path:
    code = run_main(
        [
            "split",
            str(source),
            "--target",
            "x2",
            "--length",
            str(CHUNK),
            "--batch-size",
            str(BATCH),
            "-q",
            "-o",
            str(out),
            *options,
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("proof")
    train = split(sign_task(root / "train.npy", seed=1), root / "train.h5")
    test = split(sign_task(root / "test.npy", seed=2), root / "test.h5")
    return {
        "train": train,
        "test": test,
        "train_sm": sequence_major(train, root / "train_sm.h5"),
        "test_sm": sequence_major(test, root / "test_sm.h5"),
    }


def test_the_two_layouts_hold_the_same_rows(files):
    ours, naive = BatchFile(files["train"]), BatchFile(files["train_sm"])
    assert len(ours) == len(naive) == SEQUENCES // BATCH * CHUNKS
    first, mistake = ours[1], naive[1]
    # Ours: row r of batch 1 continues row r of batch 0. Sequence-major: it does not.
    assert np.array_equal(first.sequence, ours[0].sequence)
    assert not np.array_equal(mistake.sequence, naive[0].sequence)
    assert naive[0].sequence[:6].tolist() == [0, 0, 0, 1, 1, 1]
    assert int(sum(b.reset.sum() for b in ours)) == int(sum(b.reset.sum() for b in naive))


def test_interleaved_layout_carries_the_sign_across_chunks(example, files):
    result = example.train(str(files["train"]), eval_path=str(files["test"]), **TRAINING)
    assert result.accuracy > 0.9, result
    assert result.loss < 0.1  # chance (always predicting 0) is 1.0
    assert result.losses[-1] < 0.1 < result.losses[0]


def test_sequence_major_layout_with_the_same_batch_size_does_not(example, files):
    result = example.train(str(files["train_sm"]), eval_path=str(files["test_sm"]), **TRAINING)
    assert result.accuracy < 0.65, result  # chance is 0.5
    assert result.loss > 0.4 and result.losses[-1] > 0.4


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_dataloader_workers_yield_the_batches_in_stored_order(files):
    from torch.utils.data import DataLoader

    batches = BatchFile(files["train"])
    batches[0]  # the parent holds an open handle when the workers fork
    loader = DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=2, multiprocessing_context="fork"
    )
    seen = list(loader)
    assert [b.index for b in seen] == list(range(len(batches)))
    assert all(np.array_equal(b.X, batches[b.index].X) for b in seen)
    assert np.array_equal(seen[3].reset, batches[3].reset)


def test_decoupled_windows_train_the_last_k2_steps_only(example, files, tmp_path):
    source = files["train"].with_name("train.npy")
    out = tmp_path / "decoupled.h5"
    code = run_main(
        [
            "decoupled",
            str(source),
            "--target",
            "x2",
            "--k1",
            "8",
            "--k2",
            "3",
            "--batch-size",
            str(BATCH),
            "-q",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    batches = BatchFile(out)
    assert batches.attrs["grad_start"] == 5 and batches[0].loss_mask is not None
    first = next(iter(BatchDataset(str(out))))
    model = example.StatefulLSTM(2, 4, 1)
    pred, _ = example.forward_batch(model, first, example.zero_state(BATCH, 4).start(first), 5)
    assert pred.shape == (BATCH, 8, 1)
    pred[:, :5].sum().backward(retain_graph=True)  # the warm-up steps: no gradient at all
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    pred[:, 5:].sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())
    result = example.train(str(out), **{**TRAINING, "epochs": 1})
    assert np.isfinite(result.losses[0]) and 0 < result.loss < 2
