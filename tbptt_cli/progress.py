"""A progress bar on stderr: only on a terminal, only for work over about a second."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO


def wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
    """``--progress`` forces it; by default only a real terminal that is not ``dumb``."""
    if flag is not None:
        return flag
    return (stream or sys.stderr).isatty() and os.environ.get("TERM", "") != "dumb"


def use_color(stream: TextIO | None = None) -> bool:
    return (stream or sys.stderr).isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Bar:
    """``samples 4200/10000  42%  1.2 GB/s  ETA 3s`` redrawn with a carriage return."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, delay: float = 1.0):
        self.total, self.label, self.stream = max(total, 1), label, stream or sys.stderr
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
        self.stream.write(
            f"\r{self.label} {self.done}/{self.total} {percent:3d}%  {rate:,.0f}/s  ETA {eta:.0f}s "
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def factory(enabled: bool) -> Callable[[int, int], Callable[[int], None]] | None:
    """What ``core.RunOptions.progress`` takes: total -> tick function, or None."""
    if not enabled:
        return None
    bars: list[Bar] = []

    def make(total: int, _: int = 0) -> Callable[[int], None]:
        for bar in bars:
            bar.close()
        bar = Bar(total, "samples")
        bars.append(bar)

        def tick(count: int) -> None:
            bar.tick(count)
            if bar.done >= bar.total:
                bar.close()

        return tick

    return make
