"""Stage 6 — export: write a run's outputs so that a reader never sees a half-written file.

Every output is written into a staging folder beside OUTDIR and moved into OUTDIR only when the
whole run has succeeded (``StagedOutput``). A run that fails leaves OUTDIR as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import geopandas as gpd

from rs.crosscheck import Judgement


class StagedOutput:
    """A staging folder whose files are moved into ``outdir`` on success, and deleted on failure.

    Use as a context manager; write files under ``.path(name)``. Each file is moved with
    ``os.replace`` (atomic on one filesystem), so each output is either the old one or the new one.
    """

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.outdir = Path(outdir)
        self.outdir.parent.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(dir=self.outdir.parent, prefix=f".{self.outdir.name}.staging-"))

    def path(self, name: str) -> Path:
        """Where to write output ``name`` while the run is in progress."""
        return self.stage / name

    def final(self, name: str) -> Path:
        """Where output ``name`` will be once the run has succeeded."""
        return self.outdir / name

    def commit(self) -> list[Path]:
        """Move every staged file into ``outdir``; returns their final paths."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        moved = []
        for f in sorted(self.stage.iterdir()):
            target = self.outdir / f.name
            os.replace(f, target)
            moved.append(target)
        shutil.rmtree(self.stage, ignore_errors=True)
        return moved

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            shutil.rmtree(self.stage, ignore_errors=True)


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """Write one GeoPackage layer (pyogrio), keeping the GeoDataFrame's CRS.

    An empty layer is still written, as a Polygon layer with the same columns.
    """
    extra = {"geometry_type": "Polygon"} if gdf.empty else {}
    gdf.to_file(path, layer=layer, driver="GPKG", engine="pyogrio", **extra)
    return path


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write indented JSON (UTF-8); values json cannot encode are written with ``str``."""
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_judgement(judgement: Judgement, changes_path: Path, flagged_path: Path) -> None:
    """``changes.gpkg`` (layer ``changes``) and ``flagged.gpkg`` (layers ``flagged_changes`` and,
    with parcels, ``flagged_parcels``)."""
    write_gpkg(judgement.changes, changes_path, "changes")
    write_gpkg(judgement.flagged, flagged_path, "flagged_changes")
    if judgement.parcels is not None:
        write_gpkg(judgement.parcels, flagged_path, "flagged_parcels")
