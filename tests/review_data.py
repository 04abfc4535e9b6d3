"""Small reviewed runs for the review-loop tests: a real detect run of a generated pair, decisions recorded on it
as a planner would, and review layers as earlier versions wrote them."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import rasterio.transform
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import Polygon, box

from changewatch.cli import cli
from changewatch.rs.io.vector import write_gpkg
from changewatch.rs.review import load_run, record_decisions
from tests.data import UTM48N, plant_square, textured_scene, utm_transform, write_raster

AT = "2024-05-02T14:03:00+07:00"  # when the decisions of these tests were made

Square = tuple[int, int, int]  # row, col, side in pixels of the 10 m grid


def detect_args(before: Path, after: Path, out: Path, checkpoint: Path) -> list[str]:
    """``detect`` of a generated pair with a test checkpoint, small tiles."""
    return ["detect", str(before), str(after), "-o", str(out), "--model", str(checkpoint), "--threshold", "0.5",
            "--tile", "64", "--overlap", "16", "-q"]


def detect_run(pair: tuple[Path, Path], checkpoint: Path, out: Path) -> Path:
    """A real detect run folder of ``pair`` (the random tiny checkpoint flags a few dozen small patches)."""
    result = CliRunner().invoke(cli, detect_args(*pair, out, checkpoint))
    assert result.exit_code == 0, result.output
    return out


def pixel_box(row: int, col: int, side: int) -> Polygon:
    """The outline of a square of pixels of the generated pairs' grid (UTM 48N, 10 m)."""
    return box(*rasterio.transform.array_bounds(side, side, utm_transform() * Affine.translation(col, row)))


def reviewed_ward(root: Path, name: str, seed: int, built: tuple[Square, ...], shadows: tuple[Square, ...],
                  checkpoint: Path) -> Path:
    """A ward reviewed by someone who knows the ground: AFTER gains bright roofs (``built``) and darker
    patches (``shadows``: no construction); the run (detect with ``checkpoint``) flags exactly those squares
    (its flagged layer replaced: a model that finds both), and every roof is confirmed, every shadow dismissed."""
    before = textured_scene(96, 96, seed=seed)
    after = before.copy()
    for row, col, side in built:
        after = plant_square(after, row, col, side)
    for row, col, side in shadows:
        after[:, row:row + side, col:col + side] = (after[:, row:row + side, col:col + side] * 0.6).astype(after.dtype)
    pair = (write_raster(root / f"{name}-before.tif", before, UTM48N, utm_transform()),
            write_raster(root / f"{name}-after.tif", after, UTM48N, utm_transform()))
    run = detect_run(pair, checkpoint, root / name)
    squares = [*built, *shadows]
    flags = gpd.GeoDataFrame({"change_id": range(1, len(squares) + 1), "reasons": "NO_PERMIT",
                              "area_m2": [100.0 * side * side for _, _, side in squares]},
                             geometry=[pixel_box(*s) for s in squares], crs=UTM48N)
    write_gpkg(flags, run / "flagged.gpkg", "flagged_changes")
    decisions = {i: ("confirm" if i <= len(built) else "dismiss") for i in range(1, len(squares) + 1)}
    record_decisions(load_run(run), decisions, reviewer="An", at=AT)
    return run


def legacy_review(run: Path, decided: dict[int, tuple[str, str]]) -> None:
    """Layer ``review`` as changewatch 0.2.0 wrote it: every flag, with 'needs visit' and no note unless
    ``decided`` gives its (review, note)."""
    flagged = gpd.read_file(run / "flagged.gpkg", layer="flagged_changes")
    rows = [decided.get(int(i), ("needs visit", "")) for i in flagged["change_id"]]
    layer = gpd.GeoDataFrame({"change_id": flagged["change_id"], "reasons": flagged["reasons"],
                              "review": [r[0] for r in rows], "note": [r[1] for r in rows]},
                             geometry=flagged.geometry, crs=flagged.crs)
    write_gpkg(layer, run / "flagged.gpkg", "review")
