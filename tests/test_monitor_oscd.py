"""Acceptance on real data: a monitor of one OSCD val city over BEFORE, AFTER and AFTER again, re-tagged later.

Skipped cleanly where ../shared/data/oscd is absent (the ``oscd`` fixture).
"""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from changewatch.rs.config import MonitorConfig
from changewatch.rs.monitor.history import HISTORY_GPKG
from changewatch.rs.monitor.run import run_monitor
from changewatch.rs.training.config import OSCD_VAL

pytestmark = pytest.mark.slow

# Cupertino and Nantes, val cities other than the demo's. On Nantes the shipped model (early fusion) calls change on
# AFTER compared with itself (11 polygons, probabilities up to 0.93); the tiles whose two dates are identical have
# no change (rs.infer.predict_tiles), so the third date brings nothing there either.
CITIES = ["cupertino", "nantes"]


def retagged(source: Path, target: Path, when: date) -> Path:
    """A copy of ``source`` whose TIFF ``date`` tag (YYYYMMDD, as OSCD's stacked scenes carry) says ``when``."""
    shutil.copyfile(source, target)
    with rasterio.open(target, "r+") as ds:
        ds.update_tags(date=f"{when:%Y%m%d}")
    return target


@pytest.mark.parametrize("name", CITIES)
def test_oscd_city_changes_are_first_seen_at_after_and_nothing_is_new_at_the_third_date(oscd: Path, tmp_path: Path,
                                                                                       name: str) -> None:
    """Every tracked change is first (and last) seen at the AFTER date; at the third date, AFTER again, nothing
    changed, so no change is ``new``: all are ``stable`` (not observed changing at the latest date)."""
    assert name in OSCD_VAL
    city = oscd / name
    meta = json.loads((city / "meta.json").read_text())
    before, after = (datetime.strptime(meta[k], "%Y%m%d").date() for k in ("before_date", "after_date"))
    later = after + timedelta(days=180)
    again = retagged(city / "after.tif", tmp_path / "after_again.tif", later)
    (tmp_path / "scenes.csv").write_text(f"date,path\n{before},{city / 'before.tif'}\n{after},{city / 'after.tif'}\n"
                                         f"{later},{again}\n", encoding="utf-8")
    result = run_monitor(MonitorConfig(scenes=str(tmp_path / "scenes.csv"), store=str(tmp_path / "store")))
    assert result.detected == [f"{before}_{after}", f"{after}_{later}"]
    changes = gpd.read_file(tmp_path / "store" / HISTORY_GPKG, layer="changes")
    assert len(changes) >= 5  # the shipped model finds real change there
    assert (changes["first_seen"] == after.isoformat()).all()
    assert (changes["last_seen"] == after.isoformat()).all()
    assert (changes["status"] == "stable").all()
    observations = gpd.read_file(tmp_path / "store" / HISTORY_GPKG, layer="observations")
    assert set(observations["date"]) == {after.isoformat()}  # nothing observed changing at the third date
