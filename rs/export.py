"""Stage 6 — export: write a run's outputs so that a reader never sees a half-written file.

Every output is written into a staging folder beside OUTDIR and moved into OUTDIR only when the
whole run has succeeded (``StagedOutput``). A run that fails leaves OUTDIR as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import geopandas as gpd
import pandas as pd

from changewatch.rs.crosscheck import Judgement


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
            if f.is_dir() and target.is_dir():  # a folder output (Shapefiles) replaces the old folder
                shutil.rmtree(target)
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


def write_vector(gdf: gpd.GeoDataFrame, path: Path, driver: str, **options: Any) -> Path:
    """Write a vector file (pyogrio) keeping the GeoDataFrame's CRS; an empty layer is still
    written, as a Polygon layer with the same columns."""
    extra = {"geometry_type": "Polygon"} if gdf.empty else {}
    gdf.to_file(path, driver=driver, engine="pyogrio", **extra, **options)
    return path


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """Write one GeoPackage layer (see ``write_vector``)."""
    return write_vector(gdf, path, "GPKG", layer=layer)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (memory: one block, whatever the file size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def layer_names(path: Path) -> set[str]:
    """Names of the layers (and attribute tables) in a vector file such as a GeoPackage."""
    import pyogrio

    return {str(name) for name, _ in pyogrio.list_layers(path)}


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write indented JSON (UTF-8); values json cannot encode are written with ``str``."""
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_table(table: pd.DataFrame, path: Path, layer: str) -> Path:
    """Write a table without geometry as a GeoPackage attribute table (QGIS opens it as a layer)."""
    import pyogrio

    pyogrio.write_dataframe(table, path, layer=layer, driver="GPKG")
    return path


def write_judgement(judgement: Judgement, changes_path: Path, flagged_path: Path) -> None:
    """``changes.gpkg`` (layer ``changes``) and ``flagged.gpkg`` (layer ``flagged_changes``; with
    parcels also ``flagged_parcels`` and the attribute table ``flagged_change_parcels``)."""
    write_gpkg(judgement.changes, changes_path, "changes")
    write_gpkg(judgement.flagged, flagged_path, "flagged_changes")
    if judgement.parcels is not None:
        write_gpkg(judgement.parcels, flagged_path, "flagged_parcels")
    if judgement.links is not None:
        write_table(judgement.links, flagged_path, "flagged_change_parcels")


# --- exports for GIS desks ---------------------------------------------------------------------

FORMATS = ("gpkg", "parquet", "geojson", "csv", "shp")
LAYERS = ("changes", "flagged_changes", "flagged_parcels")
LINKS = "flagged_change_parcels"  # attribute table: change_id, parcel_id, overlap_m2
# Shapefile (dBASE) field names stop at 10 characters: the long ones get these names.
SHAPEFILE_NAMES = {"valid_permit_ids": "valid_pids", "flagged_area_m2": "flag_am2", "worst_reason": "worst_rsn",
                   "change_type": "chg_type"}
GEOGRAPHIC = "EPSG:4326"


def read_run_layers(run_dir: str | os.PathLike[str]) -> dict[str, gpd.GeoDataFrame]:
    """The layers of a detect or crosscheck run folder (``flagged_parcels`` only when present).

    The attribute table ``flagged_change_parcels`` comes back as a plain DataFrame when present.
    """
    import pyogrio

    from changewatch.rs.errors import InputFileError

    run = Path(run_dir)
    sources = {"changes": run / "changes.gpkg", "flagged_changes": run / "flagged.gpkg",
               "flagged_parcels": run / "flagged.gpkg", LINKS: run / "flagged.gpkg"}
    layers = {}
    for name, path in sources.items():
        if not path.is_file():
            raise InputFileError(f"{run} is not a changewatch run folder: {path.name} is missing")
        if name in layer_names(path):
            layers[name] = gpd.read_file(path, layer=name) if name != LINKS else \
                pyogrio.read_dataframe(path, layer=name, read_geometry=False)
    if "changes" not in layers or "flagged_changes" not in layers:
        raise InputFileError(f"{run}: changes.gpkg/flagged.gpkg lack the changes or flagged_changes layer")
    return layers


def _csv(gdf: gpd.GeoDataFrame, path: Path, geometry: str) -> None:
    """CSV in EPSG:4326: geometry as a ``wkt`` column, or as ``lon``/``lat`` of the centroid."""
    g = gdf.to_crs(GEOGRAPHIC)
    table = pd.DataFrame(g.drop(columns="geometry"))
    if geometry == "wkt":
        table["wkt"] = g.geometry.to_wkt(rounding_precision=10)  # 1e-10° ≈ 0.01 mm
    else:  # centroid of the polygon, computed in local UTM so it is exact on the ground
        centres = gdf.geometry.to_crs(gdf.estimate_utm_crs()).centroid.to_crs(GEOGRAPHIC) if len(gdf) else g.geometry
        table["lon"], table["lat"] = centres.x, centres.y
    table.to_csv(path, index=False)


def write_exports(layers: dict[str, gpd.GeoDataFrame], out: StagedOutput, formats: tuple[str, ...] = FORMATS,
                  csv_geometry: str = "wkt") -> list[str]:
    """Write ``layers`` in each of ``formats`` into the staging folder; returns the file names.

    gpkg: one ``changewatch.gpkg`` with every layer (CRS kept); parquet: GeoParquet 1.1 with a
    bbox covering column, one file per layer (CRS kept); geojson: EPSG:4326 (RFC 7946); csv:
    EPSG:4326, WKT or centroid lon/lat; shp: one Shapefile per layer in ``shapefile/``, long
    field names shortened as in SHAPEFILE_NAMES.
    """
    names = []
    links = layers.get(LINKS)
    if links is not None:  # a table without geometry: GeoPackage attribute table, Parquet and CSV only
        if "gpkg" in formats:
            write_table(links, out.path("changewatch.gpkg"), LINKS)
        if "parquet" in formats:
            links.to_parquet(out.path(f"{LINKS}.parquet"), index=False)
            names.append(f"{LINKS}.parquet")
        if "csv" in formats:
            links.to_csv(out.path(f"{LINKS}.csv"), index=False)
            names.append(f"{LINKS}.csv")
    for name, gdf in layers.items():
        if name == LINKS:
            continue
        if "gpkg" in formats:
            write_gpkg(gdf, out.path("changewatch.gpkg"), name)
        if "parquet" in formats:
            gdf.to_parquet(out.path(f"{name}.parquet"), schema_version="1.1.0", write_covering_bbox=True)
            names.append(f"{name}.parquet")
        if "geojson" in formats:
            write_vector(gdf.to_crs(GEOGRAPHIC), out.path(f"{name}.geojson"), "GeoJSON")
            names.append(f"{name}.geojson")
        if "csv" in formats:
            _csv(gdf, out.path(f"{name}.csv"), csv_geometry)
            names.append(f"{name}.csv")
        if "shp" in formats:
            folder = out.path("shapefile")
            folder.mkdir(exist_ok=True)
            write_vector(gdf.rename(columns=SHAPEFILE_NAMES), folder / f"{name}.shp", "ESRI Shapefile",
                         encoding="UTF-8")
    if "gpkg" in formats:
        names.insert(0, "changewatch.gpkg")
    if "shp" in formats:
        names.append("shapefile")
    return names


FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


def _asset_files(root: Path, names: list[str]) -> list[Path]:
    files = []
    for name in names:
        p = root / name
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    return files


def stac_item(run_dir: Path, export_dir: Path, names: list[str], layers: dict[str, gpd.GeoDataFrame]) -> dict[str, Any]:
    """A STAC Item (pystac) describing one run: footprint, as-of date, inputs, model, thresholds,
    software version, and every output with its size and SHA-256 (file extension, multihash)."""
    from datetime import date, datetime, timezone

    import pystac
    import shapely

    import changewatch

    summary_path = next((p for p in (run_dir / "summary.json", run_dir / "crosscheck_summary.json") if p.is_file()), None)
    summary = json.loads(summary_path.read_text()) if summary_path else {}
    as_of = (summary.get("rules") or {}).get("as_of")
    when = datetime.combine(date.fromisoformat(as_of), datetime.min.time(), tzinfo=timezone.utc) if as_of \
        else datetime.now(timezone.utc)
    changes = layers["changes"]
    bounds = changes.to_crs(GEOGRAPHIC).total_bounds if len(changes) else None
    footprint = shapely.box(*bounds) if bounds is not None else None
    item = pystac.Item(
        id=f"changewatch-{run_dir.resolve().name}", geometry=shapely.geometry.mapping(footprint) if footprint else None,
        bbox=[float(v) for v in bounds] if bounds is not None else None, datetime=when,
        properties={"changewatch:version": changewatch.__version__, "changewatch:counts": summary.get("counts"),
                    "changewatch:inputs": summary.get("inputs"), "changewatch:model": summary.get("model"),
                    "changewatch:thresholds": summary.get("thresholds"), "changewatch:rules": summary.get("rules")},
        stac_extensions=[FILE_EXTENSION],
    )
    outputs = [(run_dir, p) for p in sorted(run_dir.iterdir()) if p.is_file()]
    outputs += [(export_dir, p) for p in _asset_files(export_dir, names)]
    for root, path in outputs:
        digest = sha256(path)
        key = ("run/" if root == run_dir else "") + path.relative_to(root).as_posix()
        item.add_asset(key, pystac.Asset(href=str(path.resolve()), roles=["data"],
                                         extra_fields={"file:size": path.stat().st_size, "file:checksum": "1220" + digest}))
    return item.to_dict(include_self_link=False)


def export_run(run_dir: str | os.PathLike[str], outdir: str | os.PathLike[str], formats: tuple[str, ...] = FORMATS,
               csv_geometry: str = "wkt", stac: bool = True) -> list[Path]:
    """Export a run folder's layers in ``formats`` (and a STAC ``item.json``) into ``outdir``, atomically."""
    run = Path(run_dir)
    layers = read_run_layers(run)
    with StagedOutput(outdir) as out:
        names = write_exports(layers, out, formats, csv_geometry)
        if stac:
            item = stac_item(run, out.stage, names, layers)
            for asset in item["assets"].values():  # point at where the files will be, not the staging folder
                asset["href"] = asset["href"].replace(str(out.stage.resolve()), str(out.outdir.resolve()))
            write_json(item, out.path("item.json"))
    return [out.final(n) for n in (*names, *(["item.json"] if stac else []))]
