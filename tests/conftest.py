"""Shared fixtures: run the CLI in-process and read what it wrote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

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
