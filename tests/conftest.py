"""Shared fixtures: run the CLI in-process and read what it wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tbptt_cli import hdf5
from tbptt_cli.cli import run_main


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def tbptt(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``tbptt("split", path, "--length", 5)``: exit code, stdout and stderr of one run."""

    def run(*args: object) -> Result:
        capsys.readouterr()
        code = run_main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def one_batch_per_chunk_and_slab() -> Iterator[None]:
    """Files written in many chunks and slabs (one batch each), so the hand-offs between
    the gather, the raw chunk writes and the streamed hash are all exercised."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hdf5, "CHUNK_TARGET", 1)
        patch.setattr(hdf5, "SLAB_TARGET", 1)
        yield
