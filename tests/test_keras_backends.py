"""Proof on every Keras 3 backend: a stateful LSTM trained with `BatchSequence` and
`ResetStates` learns a task whose answer is up to three chunks back, from a ragged block
file (irregular resets: ``reset_every`` is null) and a lanes file, and stays at chance on
the same rows in the sequence-major order.

Each backend runs in its own process (Keras picks it at import). TensorFlow 2.21 pins
h5py < 3.15 while this suite runs with the newest h5py, so its proof runs in the
interpreter named by ``TENSORFLOW_PYTHON`` (`.ci/run` makes a virtualenv for it), or in
this one when TensorFlow is installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from handmade import sequence_major, sign_task

from tbptt_cli.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "keras_stateful.py"
CHUNK, BATCH = 8, 32
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
pytestmark = pytest.mark.slow

# Trains examples/keras_stateful.py on each (train, test) pair: accuracy, and whether the
# state variables ended up tracked (the JAX fix that ResetStates applies).
DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("keras_stateful", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
import keras
from tbptt_cli.keras import stateful_layers
result = {"backend": keras.backend.backend(), "keras": keras.__version__}
for name, (train, test) in json.loads(sys.argv[2]).items():
    run = example.train(train, test, epochs=10, hidden=16, seed=0, lr=0.01)
    model, states = run["model"], stateful_layers(run["model"])[0].states
    tracked = all(any(v is s for v in model.non_trainable_variables) for s in states)
    result[name] = {"accuracy": run["accuracy"], "tracked": tracked}
print(json.dumps(result))
"""


def interpreter(backend: str) -> str:
    """The Python that has the backend: TENSORFLOW_PYTHON for TensorFlow, if set."""
    python = os.environ.get("TENSORFLOW_PYTHON", "") if backend == "tensorflow" else ""
    python = python or sys.executable
    probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({MODULES[backend]!r}) is None)"
    if subprocess.run([python, "-c", probe]).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"{backend} is missing from {python}: CI must run this proof")
        pytest.skip(f"{backend} is not installed in {python}")
    return python


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("keras_proof")
    pairs: dict[str, list[str]] = {"block": [], "lanes": [], "sequence_major": []}
    rng = np.random.default_rng(0)
    for name, seed in (("train", 1), ("test", 2)):
        # Half of the sequences 2 chunks long, half 4: blocks of 2 and of 4 batches.
        lengths = np.concatenate(
            [
                rng.integers(CHUNK + 1, 2 * CHUNK + 1, 128),
                rng.integers(3 * CHUNK + 1, 4 * CHUNK + 1, 128),
            ]
        )
        source = sign_task(root / f"{name}.npz", lengths, seed)
        for packing in ("block", "lanes"):
            out = root / f"{name}_{packing}.h5"
            args = ["split", source, "--target", "x2", "--length", CHUNK, "--batch-size", BATCH]
            assert run_main([str(a) for a in (*args, "--packing", packing, "-q", "-o", out)]) == 0
            pairs[packing].append(str(out))
        naive = sequence_major(root / f"{name}_block.h5", root / f"{name}_sm.h5")
        pairs["sequence_major"].append(str(naive))
    layout = json.loads((root / "train_block.manifest.json").read_text())["layout"]
    assert layout["reset_every"] is None  # ragged blocks: resets come from the file's flags
    return pairs


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_a_stateful_lstm_learns_across_chunks(files, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": "1"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's start-up chatter
    command = [interpreter(backend), "-c", DRIVER, str(EXAMPLE), json.dumps(files)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["block"]["accuracy"] > 0.9, result
    assert result["lanes"]["accuracy"] > 0.9, result
    assert result["sequence_major"]["accuracy"] < 0.65, result  # chance is 0.5
    assert all(result[name]["tracked"] for name in files), result
