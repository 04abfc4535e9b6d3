"""The HTML report and the notebook's map, rendered by a real browser (headless Chromium, no network): the map is
drawn with its legend of reason colours beside it, and the chips with the flag's outline.

Skipped only where Chromium is missing (README: `apt-get install chromium`). The browser gets no network: a page
that needed one (a CDN script, a web font, a tile server) would render blank here, as it would offline.

How a screenshot is read: the map and the chips are the only strongly coloured things on the pages (text and
tables are black and grey), so the rows with many saturated pixels are where they were drawn: the first such band
is the map, whose widest run of coloured columns is its axes; the legend lies to the right of them."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changewatch.rs.styles import reason_colours
from tests.report_data import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

MAP_REASONS = ("NO_BUILD_ZONE", "NO_PERMIT", "EXCEEDS_PERMIT")  # the worst reasons of tests/report_data.py's flags
OUTLINE = "#00e5ff"  # rs.report.figures.OUTLINE_COLOUR
MIN_BAND_PX = 80  # rows (or columns) in a run of coloured ones: a figure, not a table swatch or a line of text


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int]) -> np.ndarray:
    """``page`` rendered by headless Chromium at ``size`` (width, height): (rows, cols, 3) uint8 RGB."""
    assert CHROMIUM is not None
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
                           f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={size[0]},{size[1]}",
                           page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB"))


def coloured(image: np.ndarray) -> np.ndarray:
    """Strongly coloured pixels (channel spread > 60 of 255): not white, grey or black."""
    spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
    return spread > 60


def runs(flags: np.ndarray, min_length: int = MIN_BAND_PX) -> list[tuple[int, int]]:
    """Half-open [start, stop) runs of True in ``flags`` at least ``min_length`` long."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_length]


def near(image: np.ndarray, colour: str, tolerance: int = 12) -> np.ndarray:
    """Pixels within ``tolerance`` (each channel) of ``colour`` (``#rrggbb``)."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(image.astype(int) - rgb) <= tolerance).all(axis=2)


def bands(image: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges where a figure was drawn: rows with at least MIN_BAND_PX coloured pixels, in runs."""
    return runs(coloured(image).sum(axis=1) >= MIN_BAND_PX)


def assert_map_drawn(image: np.ndarray) -> tuple[int, int]:
    """The first figure band is a map: imagery in its axes, every reason colour in the legend right of them."""
    found = bands(image)
    assert found, "nothing coloured was drawn"
    top, bottom = found[0]
    region = image[top:bottom]
    axes = max(runs(coloured(region).sum(axis=0) >= MIN_BAND_PX), key=lambda r: r[1] - r[0])
    assert bottom - top >= 300 and axes[1] - axes[0] >= 300  # a map, not a thumbnail
    inside = region[:, axes[0]:axes[1]]
    assert coloured(inside).mean() > 0.5  # the scene fills the axes
    assert len(np.unique(inside.reshape(-1, 3) // 16, axis=0)) > 50  # imagery, not a flat fill
    legend = region[:, axes[1]:]
    colours = reason_colours()
    for reason in MAP_REASONS:
        assert near(legend, colours[reason]).sum() >= 20, f"legend colour of {reason} not drawn"
    return top, bottom


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("render"))


def test_report_html_renders_map_and_chips(run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from changewatch.cli import cli

    result = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "report")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shot = tmp_path / "report.png"
    image = screenshot(tmp_path / "report" / "report.html", shot, tmp_path / "profile", (1200, 3000))
    _, map_bottom = assert_map_drawn(image)
    chips = [b for b in bands(image) if b[0] > map_bottom]
    assert chips, "no chips drawn below the map"
    top, bottom = chips[0]
    assert near(image[top:bottom], OUTLINE).sum() >= 60  # the flag's outline, on each of its three chips


def test_notebook_map_renders(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The map the notebook displays (its map cell's PNG output, executed headless) in a page of its own."""
    from tests.test_notebook import cell_outputs, execute

    outputs = cell_outputs(execute(run, monkeypatch), "overview_map(run)")
    png = base64.b64decode(outputs[0]["data"]["image/png"])
    page = tmp_path / "map.html"
    page.write_text('<!DOCTYPE html><html><body style="margin:8px;background:#fff">'
                    f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"></body></html>',
                    encoding="utf-8")
    assert_map_drawn(screenshot(page, tmp_path / "map.png", tmp_path / "profile", (1200, 1000)))
