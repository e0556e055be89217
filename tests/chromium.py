"""Headless Chromium for the report tests: render a page, screenshot it, find its plots.

Debian's ``chromium`` (``.ci/run`` installs it). The flags keep it off the network:
without them it stalls on background lookups.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

WIDTH = 1200
MAX_HEIGHT = 12000
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Appended to a copy of the page: writes where each plot landed into the DOM.
PROBE = """<script>
const found = {
  height: document.documentElement.scrollHeight, plots: {}, text: document.body.innerText
};
for (const f of document.querySelectorAll("figure.plot")) {
  const r = f.getBoundingClientRect();
  found.plots[f.id] = [r.left, r.top + window.scrollY, r.width, r.height];
}
const out = document.createElement("pre");
out.id = "probe";
out.textContent = JSON.stringify(found);
document.body.appendChild(out);
</script>"""


def browser() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed (`apt-get install -y chromium`; .ci/run does it)")
    return found


@dataclass
class Rendered:
    image: np.ndarray  # [height, width, 3] uint8, the whole page
    plots: dict[str, tuple[int, int, int, int]]  # id -> left, top, width, height (pixels)
    text: str  # what the page shows as text

    def plot(self, name: str) -> np.ndarray:
        left, top, width, height = self.plots[name]
        return self.image[top : top + height, left : left + width]


def run(args: list[str], profile: str) -> str:
    command = [browser(), *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def render(page: Path, screenshot: Path) -> Rendered:
    """Lay the page out, then screenshot it whole at the height it needs."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as work:
        probe = Path(work) / "probe.html"
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
        dom = run([f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri()], work + "/a")
        start = dom.index('<pre id="probe">') + len('<pre id="probe">')
        found = json.loads(html.unescape(dom[start : dom.index("</pre>", start)]))
        height = min(MAX_HEIGHT, int(found["height"]) + 20)
        run(
            [f"--window-size={WIDTH},{height}", f"--screenshot={screenshot}", page.as_uri()],
            work + "/b",
        )
    image = np.asarray(Image.open(screenshot).convert("RGB"))
    plots = {k: tuple(int(round(v)) for v in rect) for k, rect in found["plots"].items()}
    return Rendered(image, plots, found["text"])  # type: ignore[arg-type]


def assert_drawn(region: np.ndarray, name: str) -> None:
    """A plot is there and not blank: big enough, varied pixels, a fair share of ink."""
    assert region.shape[0] > 100 and region.shape[1] > 400, (name, region.shape)
    gray = region.mean(axis=2)
    ink = float((gray < 200).mean())
    assert gray.std() > 20, (name, float(gray.std()))
    assert 0.01 < ink < 0.9, (name, ink)
    assert len(np.unique(region.reshape(-1, 3), axis=0)) > 20, name
