"""Unattended runs (cron, Make, CI logs): no progress frames, escapes or prompts in a log,
none on a terminal that asks for none, and Make's rebuild rules hold across a failure."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
for _name in ("NO_COLOR", "TERM"):
    ENV.pop(_name, None)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An input whose gzip:9 write takes over a second, so a progress bar would draw."""
    path = tmp_path_factory.mktemp("slow") / "slow.npy"
    np.save(path, np.random.default_rng(0).normal(size=(8, 200_000)).astype(np.float32))
    return path


def command(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tbptt_cli",
        "split",
        str(data),
        "--length",
        "100",
        "--compression",
        "gzip:9",
        "-o",
        str(out),
    ]


def assert_plain(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, repr(text[:300])
    assert "?" not in text and "[y/N]" not in text  # never a prompt


def test_log_file_under_cron(slow, tmp_path):
    log = tmp_path / "log"
    with open(log, "wb") as sink:
        done = subprocess.run(
            command(slow, tmp_path / "o.h5"),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=ENV,
            timeout=120,
        )
    assert done.returncode == 0
    text = log.read_text()
    assert_plain(text)
    assert text.startswith(f"wrote {tmp_path / 'o.h5'}: 16000 x 100 x 1 float32")
    assert text.count("\n") == 1


def on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a pseudo-terminal; return code and output."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=120), b"".join(chunks).decode()


@pytest.mark.parametrize("setting", [{"TERM": "dumb"}, {"NO_COLOR": "1", "TERM": "xterm"}])
def test_terminal_that_asks_for_plain_output(slow, tmp_path, setting):
    code, text = on_a_terminal(command(slow, tmp_path / "o.h5"), {**ENV, **setting})
    assert code == 0, text
    assert "\x1b" not in text  # no colour, no cursor movement
    if setting.get("TERM") == "dumb":
        assert "\r" not in text.replace("\r\n", "\n")  # no redrawn progress frames
    assert "wrote " in text


@pytest.mark.parametrize(
    ("setting", "coloured"),
    [
        ({"TERM": "xterm"}, True),
        ({"TERM": "xterm", "NO_COLOR": "1"}, False),
        ({"TERM": "dumb"}, False),
    ],
)
def test_error_label_is_coloured_only_when_allowed(tmp_path, setting, coloured):
    argv = [sys.executable, "-m", "tbptt_cli", "asis", str(tmp_path / "missing.csv"), "-n"]
    code, text = on_a_terminal(argv, {**ENV, **setting})
    assert code == 66
    assert ("\x1b[" in text) is coloured
    assert "error:" in text and "missing.csv: no such file" in text


MAKEFILE = """\
out.h5: in.npy
\t{python} -m tbptt_cli split in.npy --length 5 -o $@
"""


def make(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory"],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def touch_later(path: Path, than: Path) -> None:
    """Make ``path`` the newer file by ageing ``than`` (a future time would skew make)."""
    earlier = path.stat().st_mtime_ns - 2_000_000_000
    os.utime(than, ns=(earlier, earlier))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_rebuilds_only_when_needed(tmp_path):
    (tmp_path / "Makefile").write_text(MAKEFILE.format(python=sys.executable))
    data = tmp_path / "in.npy"
    out = tmp_path / "out.h5"
    np.save(data, np.arange(40, dtype=np.float32).reshape(2, 20))
    assert make(tmp_path).returncode == 0
    good = out.read_bytes()
    data.write_bytes(b"not an npy file")  # the input breaks: the recipe fails ...
    touch_later(data, out)
    failed = make(tmp_path)
    assert failed.returncode != 0 and "tbptt: error:" in failed.stderr
    assert out.read_bytes() == good  # ... and the old target stays whole
    np.save(data, np.arange(60, dtype=np.float32).reshape(3, 20))  # fixed: rebuilt once
    touch_later(data, out)
    rebuilt = make(tmp_path)
    assert rebuilt.returncode == 0 and rebuilt.stderr.count("wrote out.h5") == 1
    assert out.read_bytes() != good
    stamp = out.stat().st_mtime_ns
    time.sleep(0.01)
    again = make(tmp_path)  # nothing changed: a no-op
    assert again.returncode == 0 and "up to date" in again.stdout
    assert out.stat().st_mtime_ns == stamp
