"""rs.prepare: the model, the grid it sees and AFTER's shift are decided before the pair is opened
for work; the result is plain data that opens the pair as decided, anywhere."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from changewatch.models.spec import ModelSpec
from changewatch.rs.align import AlignedPair
from changewatch.rs.config import PairOptions
from changewatch.rs.errors import IncompatibleScenesError, ModelError
from changewatch.rs.grid import GridSpec
from changewatch.rs.prepare import prepare_for_model, prepare_pair
from tests.data import UTM48N, textured_scene, utm_transform, write_png, write_raster


def vhr_pair(tmp_path: Path, pixel_m: float = 2.0, size: int = 400) -> tuple[Path, Path]:
    scene = textured_scene(size, size, seed=3)
    t = utm_transform(pixel_m=pixel_m)
    return write_raster(tmp_path / "b.tif", scene, UTM48N, t), write_raster(tmp_path / "a.tif", scene, UTM48N, t)


def test_fine_imagery_is_prepared_on_the_models_grid(tmp_path: Path) -> None:
    pair_files = vhr_pair(tmp_path)  # 2 m pixels, 800 m across
    ready = prepare_pair(*pair_files, PairOptions(coregister=False), ModelSpec(gsd_m=10.0))
    assert ready.source.grid == GridSpec("EPSG:32648", 10.0) and (ready.grid.width, ready.grid.height) == (80, 80)
    assert ready.coregistration is None and ready.band_count == 4
    with ready.open() as pair:
        assert pair.grid == ready.grid
    native = prepare_pair(*pair_files, PairOptions(gsd="native", coregister=False), ModelSpec(gsd_m=10.0))
    assert native.source.grid == GridSpec() and native.grid.width == 400
    given = prepare_pair(*pair_files, PairOptions(grid=GridSpec(resolution=4.0), coregister=False),
                         ModelSpec(gsd_m=10.0))
    assert given.source.grid == GridSpec(resolution=4.0) and given.grid.width == 200  # a user grid is kept


def test_the_model_is_chosen_and_checked_before_anything_is_read(tmp_path: Path, tiny_checkpoint: Path) -> None:
    pair_files = vhr_pair(tmp_path, pixel_m=10.0, size=160)
    shipped = prepare_for_model(*pair_files, PairOptions(coregister=False), None)
    assert shipped.choice is not None and shipped.choice.path.stem == "changewatch-rgbn"
    given = prepare_for_model(*pair_files, PairOptions(coregister=False), str(tiny_checkpoint))
    assert given.choice is not None and given.choice.reason == "given with --model" and given.spec is not None
    with pytest.raises(ModelError, match="expects 4 bands per date"):
        prepare_for_model(*pair_files, PairOptions(bands=("1", "2", "3"), coregister=False), str(tiny_checkpoint))
    with pytest.raises(IncompatibleScenesError, match="too small for model"):
        prepare_pair(*pair_files, PairOptions(coregister=False), ModelSpec(training={"config": {"crop": 256}}))


def test_plain_images_can_be_refused(tmp_path: Path) -> None:
    scene = textured_scene(64, 64, bands=3, seed=1).astype("uint8")
    pngs = write_png(tmp_path / "a.png", scene), write_png(tmp_path / "b.png", scene)
    with pytest.raises(IncompatibleScenesError, match="detect needs georeferenced scenes"):
        prepare_for_model(*pngs, PairOptions(), None, georeferenced=True)
    assert prepare_pair(*pngs, PairOptions()).grid.crs is None  # evaluate and train take them
    placed = prepare_pair(*pngs, PairOptions(), pixel_size_m=0.5)  # a known GSD: on a local metric grid
    assert placed.grid.crs is not None and placed.grid.pixel_size_m() == pytest.approx(0.5)


def test_a_prepared_pair_travels_as_plain_data(tmp_path: Path) -> None:
    ready = prepare_pair(*vhr_pair(tmp_path), PairOptions(zero_is_valid=True), ModelSpec(gsd_m=10.0))
    copy = pickle.loads(pickle.dumps(ready))  # what a Dask task receives
    assert copy == ready
    with copy.open() as pair, AlignedPair(ready.source.before, ready.source.after, grid=ready.source.grid,
                                           zero_is_valid=True) as direct:
        assert pair.grid == direct.grid and pair.zero_is_valid and pair.source == ready.source


def test_named_bands_out_of_the_models_order_are_refused_for_every_command(tmp_path: Path) -> None:
    """detect, batch and monitor prepare with ``prepare_for_model``, evaluate with ``prepare_pair``: both check."""
    scene, t = textured_scene(160, 160, seed=3), utm_transform(pixel_m=10.0)
    s2 = ("B02", "B03", "B04", "B08")
    files = [write_raster(tmp_path / f"{n}.tif", scene, UTM48N, t, descriptions=s2) for n in ("b", "a")]
    options = PairOptions(bands=("B08", "B04", "B03", "B02"), coregister=False)
    words = "are nir,red,green,blue; the model changewatch-rgbn takes blue,green,red,nir: give them in that order"
    with pytest.raises(ModelError, match=words):
        prepare_for_model(*files, options, None)
    with pytest.raises(ModelError, match="given twice"):
        prepare_pair(*files, PairOptions(bands=("B02", "B02", "B03", "B04"), coregister=False), ModelSpec())
    assert prepare_pair(*files, PairOptions(coregister=False), ModelSpec()).band_count == 4  # in order: taken
    plain = [write_raster(tmp_path / f"p{n}.tif", scene, UTM48N, t) for n in ("b", "a")]  # names say nothing
    assert prepare_pair(*plain, PairOptions(bands=("4", "3", "2", "1"), coregister=False), ModelSpec()).band_count == 4
