"""A progress bar on stderr: only on a terminal, only for work over about a second."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

SAMPLES = 0  # what a bar counts: samples written ...
BYTES = 1  # ... or bytes read


def wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
    """``--progress`` forces it; by default only a real terminal that is not ``dumb``."""
    if flag is not None:
        return flag
    return (stream or sys.stderr).isatty() and os.environ.get("TERM", "") != "dumb"


def use_color(stream: TextIO | None = None) -> bool:
    return (
        (stream or sys.stderr).isatty()
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM") != "dumb"
    )


class Bar:
    """``writing 4200/10000 samples  42%  3,500/s  ETA 3s`` redrawn with a carriage return;
    ``reading 120.0/400.0 MB  30%  150.0 MB/s  ETA 2s`` for bytes."""

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        delay: float = 1.0,
        kind: int = SAMPLES,
    ):
        self.total, self.label, self.stream = max(total, 1), label, stream or sys.stderr
        self.kind = kind
        self.done = 0
        self.start = time.monotonic()
        self.delay = delay
        self.last_draw = 0.0
        self.drawn = False

    def tick(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.start < self.delay or now - self.last_draw < 0.1:
            return
        self.last_draw = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0.0
        percent = 100 * self.done // self.total
        if self.kind == BYTES:
            amount = f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
            speed = f"{rate / 1e6:.1f} MB/s"
        else:
            amount, speed = f"{self.done}/{self.total} samples", f"{rate:,.0f}/s"
        self.stream.write(f"\r{self.label} {amount} {percent:3d}%  {speed}  ETA {eta:.0f}s ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def factory(enabled: bool) -> Callable[[int, int], Callable[[int], None]] | None:
    """What ``core.RunOptions.progress`` takes: total -> tick function, or None."""
    if not enabled:
        return None
    bars: list[Bar] = []

    def make(total: int, kind: int = SAMPLES) -> Callable[[int], None]:
        for bar in bars:
            bar.close()
        bar = Bar(total, "reading" if kind == BYTES else "writing", kind=kind)
        bars.append(bar)

        def tick(count: int) -> None:
            bar.tick(count)
            if bar.done >= bar.total:
                bar.close()

        return tick

    return make
