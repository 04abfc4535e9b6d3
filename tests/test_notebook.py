"""notebooks/review.ipynb runs headless, top to bottom, on the demo's output and on a small generated run, draws
its chips, plots and map (static images: nothing loaded from the network), and records no decision: nobody made
one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from changewatch.rs.io.vector import layer_names
from cli import cli
from tests.review_data import detect_run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "review.ipynb"


def execute(run: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The notebook executed on ``run`` (an nbformat notebook with its outputs)."""
    monkeypatch.setenv("CHANGEWATCH_RUN", str(run))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return notebook


def cell_outputs(notebook: Any, code: str) -> list[Any]:
    """The outputs of the code cells whose source holds ``code``."""
    return [o for cell in notebook.cells if cell.cell_type == "code" and code in cell.source for o in cell.outputs]


def run_notebook(run: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Execute the notebook on ``run``; its outputs, none of them an error.

    The map and the chips are static images (PNG), drawn with no network: no folium, no Leaflet."""
    notebook = execute(run, monkeypatch)
    outputs = cell_outputs(notebook, "")
    assert not [o for o in outputs if o.output_type == "error"]
    assert [o.output_type for o in cell_outputs(notebook, "overview_map(run)")] == ["display_data"]
    assert "image/png" in cell_outputs(notebook, "overview_map(run)")[0]["data"]
    assert any("image/png" in o.get("data", {}) for o in cell_outputs(notebook, "chip_figure("))
    html = " ".join(str(o.get("data", {}).get("text/html", "")) for o in outputs).lower()
    assert "leaflet" not in html and "http" not in html  # nothing the page would load from the network
    return outputs


def assert_no_decision_written(run: Path, untouched: bytes, outputs: list[Any]) -> None:
    assert (run / "flagged.gpkg").read_bytes() == untouched and "review" not in layer_names(run / "flagged.gpkg")
    assert any("no decision entered: nothing saved" in str(o.get("text", "")) for o in outputs)


def test_review_notebook_writes_no_decision(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = detect_run(pair, tiny_checkpoint, tmp_path / "run")
    untouched = (run / "flagged.gpkg").read_bytes()
    outputs = run_notebook(run, monkeypatch)
    assert_no_decision_written(run, untouched, outputs)
    assert any("unreviewed" in str(o.get("text", "")) for o in outputs)  # every flag shown as unreviewed


@pytest.mark.slow
def test_review_notebook_on_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "demo"
    assert CliRunner().invoke(cli, ["demo", "-o", str(run), "-q"], catch_exceptions=False).exit_code == 0
    untouched = (run / "flagged.gpkg").read_bytes()
    outputs = run_notebook(run, monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)          # map, chips and plots were drawn
    assert_no_decision_written(run, untouched, outputs)
