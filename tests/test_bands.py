"""rs.bands through rs.align: bands are paired by name when both files name them, never silently by
position when the names say otherwise; the bands compared are recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from changewatch.rs.align import AlignedPair
from changewatch.rs.bands import common_name, name_key
from changewatch.rs.errors import IncompatibleScenesError
from tests.data import UTM48N, textured_scene, utm_transform, write_raster

S2 = ("B02", "B03", "B04", "B08")
WHOLE = Window(0, 0, 48, 48)


def scene(tmp_path: Path, name: str, order: list[int], descriptions: tuple[str, ...] | None) -> Path:
    """The same seeded 4-band scene with its bands stored in ``order`` (0-based indexes of S2)."""
    data = textured_scene(48, 48, seed=5)[order]
    return write_raster(tmp_path / name, data, UTM48N, utm_transform(), descriptions=descriptions)


@pytest.mark.parametrize("raw,key", [("B08", "b8"), (" b_08 ", "b8"), ("B8A", "b8a"), ("B10", "b10"), ("Red", "red"),
                                     ("SR-B4", "srb4"), ("band 01", "band1")])
def test_name_key(raw: str, key: str) -> None:
    assert name_key(raw) == key


def test_after_stored_in_another_band_order_is_read_in_befores_order(tmp_path: Path) -> None:
    before = scene(tmp_path, "before.tif", [0, 1, 2, 3], S2)
    after = scene(tmp_path, "after.tif", [3, 2, 1, 0], ("B08", "B04", "B03", "B02"))
    with AlignedPair(before, after) as pair:
        w = pair.read(WHOLE)
        record = pair.provenance()["bands_compared"]
    np.testing.assert_array_equal(w.after, w.before)  # band for band the same ground, the same band
    assert record["rule"] == "matched by name (description)"
    assert [(b["index"], b["name"]) for b in record["after"]] == [(4, "B02"), (3, "B03"), (2, "B04"), (1, "B08")]
    assert [(b["index"], b["name"]) for b in record["before"]] == [(1, "B02"), (2, "B03"), (3, "B04"), (4, "B08")]


def test_different_band_sets_are_an_error(tmp_path: Path) -> None:
    before = scene(tmp_path, "before.tif", [0, 1, 2, 3], S2)
    after = scene(tmp_path, "after.tif", [0, 1, 2, 3], ("B02", "B03", "B04", "B8A"))
    with pytest.raises(IncompatibleScenesError, match=r"B08\) and AFTER's \(B02, B03, B04, B8A\) differ.*--bands"):
        AlignedPair(before, after)
    with AlignedPair(before, after, bands=("1", "2", "3", "4")) as pair:  # the user's explicit choice stands
        assert pair.provenance()["bands_compared"]["rule"] == "--bands"


def test_indexes_that_pick_the_same_bands_in_another_order_are_an_error(tmp_path: Path) -> None:
    before = scene(tmp_path, "before.tif", [0, 1, 2, 3], S2)
    after = scene(tmp_path, "after.tif", [3, 2, 1, 0], ("B08", "B04", "B03", "B02"))
    with pytest.raises(IncompatibleScenesError, match="B02,B03,B04,B08 in BEFORE but B08,B04,B03,B02 in AFTER"):
        AlignedPair(before, after, bands=("1", "2", "3", "4"))
    with AlignedPair(before, after, bands=("b4", "B_03", "B2")) as pair:  # names are matched loosely
        w = pair.read(WHOLE)
        assert pair.band_choice.after == (2, 3, 4)
    np.testing.assert_array_equal(w.after, w.before)


def test_unnamed_bands_are_compared_in_file_order(tmp_path: Path) -> None:
    before = scene(tmp_path, "before.tif", [0, 1, 2, 3], S2)
    after = scene(tmp_path, "after.tif", [0, 1, 2, 3], None)
    with AlignedPair(before, after) as pair:
        record = pair.provenance()["bands_compared"]
    assert record["rule"].startswith("file order")
    assert [b["name"] for b in record["after"]] == [None] * 4 and [b["name"] for b in record["before"]] == list(S2)
    three = write_raster(tmp_path / "three.tif", textured_scene(48, 48, bands=3), UTM48N, utm_transform())
    with pytest.raises(IncompatibleScenesError, match="BEFORE has 4 bands but AFTER has 3"):
        AlignedPair(before, three)


def test_the_alpha_band_cannot_be_picked(tmp_path: Path) -> None:
    rgba = np.concatenate([textured_scene(48, 48, bands=3) // 16, np.full((1, 48, 48), 255)]).astype(np.uint8)
    path = write_raster(tmp_path / "rgba.tif", rgba, UTM48N, utm_transform(), photometric="RGB", alpha="YES")
    with pytest.raises(IncompatibleScenesError, match="band 4 of BEFORE is its alpha band"):
        AlignedPair(path, path, bands=("1", "2", "3", "4"))
    with AlignedPair(path, path, bands=("blue", "green", "red")) as pair:  # colour names pick bands too
        assert pair.band_choice.before == (3, 2, 1)


@pytest.mark.parametrize("name,common", [("B02", "blue"), ("b08", "nir"), ("B8A", "nir08"), ("B11", "swir16"),
                                         ("Red", "red"), (" NIR ", "nir"), ("swir_16", "swir16"), ("B8", None),
                                         ("B4", None), ("band 1", None), ("", None), (None, None)])
def test_common_name(name: str | None, common: str | None) -> None:
    assert common_name(name) == common
