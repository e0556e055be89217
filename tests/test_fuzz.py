"""Fuzzing the CSV reader, the NPY/NPZ reader and the YAML config loader.

Only the documented error types (`TbpttError` subclasses) may escape a target. Three
layers, all in the suite:

- every input in ``tests/fuzz_corpus/<target>/`` (seeds, and what fuzzing found) is
  replayed, so a crash once found stays fixed;
- a short coverage-guided atheris run per target (bounded by ``-runs``), when atheris
  is installed (it is in the ``test`` extra);
- Hypothesis byte mutations of the corpus, which run everywhere.

A longer hunt, whose findings go into the corpus by hand::

    python tests/test_fuzz.py csv -max_total_time=300 /tmp/found tests/fuzz_corpus/csv
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
TARGETS = ("csv", "npy", "npz", "yaml")


def fuzz_one(target: str, data: bytes) -> None:
    """Feed ``data`` to one reader; any exception but a TbpttError is a finding."""
    from tbptt_cli import config as cfg
    from tbptt_cli.errors import TbpttError
    from tbptt_cli.options import InputOptions
    from tbptt_cli.readers import read_input

    try:
        if target == "yaml":
            with tempfile.NamedTemporaryFile(suffix=".yaml") as file:
                file.write(data)
                file.flush()
                raw = cfg.load_file(file.name)
                name = cfg.strategy_of(raw, file.name)
                cfg.resolve(name, raw, {}, file.name)
            return
        layout = "wide" if data[:1] == b"w" else "long"
        options = InputOptions(path="-", format=target, layout=layout)
        read_input(options, stdin=io.BytesIO(data))
    except TbpttError:
        pass


def corpus(target: str) -> list[Path]:
    return sorted((CORPUS / target).iterdir())


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_cleanly(target):
    files = corpus(target)
    assert files, f"no seeds in {CORPUS / target}"
    for path in files:
        fuzz_one(target, path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_atheris_short_run(target, tmp_path):
    pytest.importorskip("atheris")
    command = [
        sys.executable,
        __file__,
        target,
        "-runs=1500",
        "-max_len=4096",
        f"-artifact_prefix={tmp_path}/",
        str(tmp_path),
        str(CORPUS / target),
    ]
    env = {**os.environ, "PYTHONPATH": str(CORPUS.parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    found = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-"))]
    assert done.returncode == 0 and not found, done.stderr[-3000:]


def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for position, cut, insert in edits:
        at = position % (len(data) + 1)
        data[at : at + cut] = insert
    return bytes(data)


EDITS = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 8), st.binary(max_size=8)), max_size=6
)


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutations_raise_only_documented_errors(target, data):
    seeds = corpus(target)
    seed = data.draw(st.sampled_from(seeds)).read_bytes()
    fuzz_one(target, mutate(seed, data.draw(EDITS)))


def main() -> None:
    import atheris

    target = sys.argv.pop(1)
    with atheris.instrument_imports():
        import tbptt_cli.config  # noqa: F401
        import tbptt_cli.readers  # noqa: F401
        import tbptt_cli.readers.arrays  # noqa: F401
        import tbptt_cli.readers.delimited  # noqa: F401
    atheris.Setup(sys.argv, lambda data: fuzz_one(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
