"""notebooks/review.ipynb runs headless, top to bottom, on the demo's output, and saves a review layer."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from cli import cli

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "review.ipynb"
pytestmark = pytest.mark.slow


def test_review_notebook_on_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "demo"
    assert CliRunner().invoke(cli, ["demo", "-o", str(run), "-q"], catch_exceptions=False).exit_code == 0
    monkeypatch.setenv("CHANGEWATCH_RUN", str(run))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)          # chips and plots were drawn
    assert any("folium" in str(o.get("data", {}).get("text/html", "")) or
               "leaflet" in str(o.get("data", {}).get("text/html", "")).lower() for o in outputs)  # the map
    review = gpd.read_file(run / "flagged.gpkg", layer="review")
    flagged = gpd.read_file(run / "flagged.gpkg", layer="flagged_changes")
    assert list(review["change_id"]) == list(flagged["change_id"])
    assert review["review"].iloc[0] == "confirm" and set(review["review"]) <= {"confirm", "dismiss", "needs visit"}
