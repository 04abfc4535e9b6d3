"""rs.coregister: a known sub-pixel misregistration of AFTER is measured and removed (by
``rs.prepare``, which opens the pair with AFTER moved); aligned pairs, plain images and
disagreeing windows are left alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window
from scipy import ndimage

from changewatch.rs.align import AlignedPair, PairSource
from changewatch.rs.config import DetectConfig, PairOptions
from changewatch.rs.coregister import CoregConfig, measure_shift
from changewatch.rs.errors import InputFileError
from changewatch.rs.pipeline import detect
from changewatch.rs.prepare import PreparedPair, prepare_pair
from tests.data import UTM48N, WGS84, utm_transform, write_png, write_raster


def city(rows: int = 300, cols: int = 300, seed: int = 0) -> np.ndarray:
    """Four bands of seeded, spatially correlated texture (blocks and streets at 10 m), uint16."""
    rng = np.random.default_rng(seed)
    grey = ndimage.gaussian_filter(rng.normal(size=(rows, cols)), 1.2)
    return np.stack([1500 + 200 * b + 4000 * grey for b in range(4)]).clip(0, 65535).astype(np.uint16)


def shifted_pair(tmp_path: Path, rows: float, cols: float) -> tuple[Path, Path]:
    """BEFORE, and AFTER = BEFORE's content moved ``rows`` down and ``cols`` right, same georeferencing."""
    before = city()
    after = np.stack([ndimage.shift(b.astype(float), (rows, cols), order=3, mode="nearest") for b in before])
    t = utm_transform()
    return (write_raster(tmp_path / "before.tif", before, UTM48N, t),
            write_raster(tmp_path / "after.tif", after.clip(0, 65535).astype(np.uint16), UTM48N, t))


def prepared(before: Path, after: Path) -> PreparedPair:
    """The pair prepared without a model: its own grid, AFTER's shift measured and removed."""
    return prepare_pair(before, after, PairOptions())


def residual(pair: AlignedPair) -> float:
    """Mean absolute BEFORE − AFTER difference inside a margin (0 when perfectly aligned)."""
    w = pair.read(Window(10, 10, pair.grid.width - 20, pair.grid.height - 20))
    return float(np.abs(w.before - w.after).mean())


def test_a_subpixel_shift_is_measured_and_removed(tmp_path: Path) -> None:
    before, after = shifted_pair(tmp_path, 1.3, -0.6)
    with AlignedPair(before, after) as pair:
        misaligned = residual(pair)
    ready = prepared(before, after)
    found = ready.coregistration
    assert found is not None and found.applied and found.windows >= 3
    assert found.rows == pytest.approx(-1.3, abs=0.1) and found.cols == pytest.approx(0.6, abs=0.1)
    with ready.open() as corrected:
        again = measure_shift(corrected)
        assert abs(again.rows) < 0.1 and abs(again.cols) < 0.1 and not again.applied
        assert residual(corrected) < 0.3 * misaligned
        with corrected.reopen() as copy:  # other threads' copies carry the shift
            assert copy.after_shift == corrected.after_shift and residual(copy) == residual(corrected)


def test_aligned_pairs_and_plain_images_are_left_alone(tmp_path: Path) -> None:
    before, after = shifted_pair(tmp_path, 0.0, 0.0)
    same = prepared(before, after)
    found = same.coregistration
    assert found is not None and not found.applied and abs(found.rows) < 0.05 and abs(found.cols) < 0.05
    assert same.source.after_shift is None
    scene = city(64, 64)[:3].astype(np.uint8)
    a, b = write_png(tmp_path / "a.png", scene), write_png(tmp_path / "b.png", np.roll(scene, 1, axis=1))
    plain = prepared(a, b)
    assert plain.coregistration is not None and plain.coregistration.windows == 0
    assert not plain.coregistration.applied and plain.source.after_shift is None


def test_windows_that_disagree_are_not_applied(tmp_path: Path) -> None:
    """Left half moved one way, right half the other: no single translation fits, none is applied."""
    before = city()
    left = np.stack([ndimage.shift(b.astype(float), (0, 1.5), order=3, mode="nearest") for b in before])
    right = np.stack([ndimage.shift(b.astype(float), (0, -1.5), order=3, mode="nearest") for b in before])
    after = np.concatenate([left[:, :, :150], right[:, :, 150:]], axis=2).astype(np.uint16)
    t = utm_transform()
    b, a = write_raster(tmp_path / "b.tif", before, UTM48N, t), write_raster(tmp_path / "a.tif", after, UTM48N, t)
    with AlignedPair(b, a) as pair:
        found = measure_shift(pair, CoregConfig(window=128))
        assert not found.applied


def test_detect_records_the_correction(tmp_path: Path, tiny_checkpoint: Path) -> None:
    before, after = shifted_pair(tmp_path, 0.0, 1.0)
    for flag in (True, False):
        out = tmp_path / f"out-{flag}"
        detect(DetectConfig(str(before), str(after), str(out), model=str(tiny_checkpoint), coregister=flag),
               progress=False)
        recorded = json.loads((out / "summary.json").read_text())["inputs"]["coregistration"]
        if flag:
            assert recorded["applied"] and recorded["shift_px"][1] == pytest.approx(-1.0, abs=0.1)
        else:
            assert recorded is None


def test_a_shift_is_removed_when_after_is_in_another_crs(tmp_path: Path) -> None:
    """AFTER in WGS84 (warped onto BEFORE's UTM grid): the correction, measured in grid pixels, is
    converted into AFTER's own CRS before it is applied."""
    from rasterio.warp import calculate_default_transform, reproject

    before, shifted = shifted_pair(tmp_path, -0.8, 1.1)
    with rasterio.open(shifted) as src:
        transform, width, height = calculate_default_transform(src.crs, WGS84, src.width, src.height, *src.bounds)
        warped = np.zeros((src.count, height, width), np.float32)
        for b in range(src.count):
            reproject(rasterio.band(src, b + 1), warped[b], dst_transform=transform, dst_crs=WGS84,
                      resampling=Resampling.cubic)
    after = write_raster(tmp_path / "after4326.tif", warped, WGS84, transform, nodata=0.0)
    with AlignedPair(before, after) as pair:
        misaligned = residual(pair)
    ready = prepared(before, after)
    found = ready.coregistration
    assert found is not None and found.applied
    assert found.rows == pytest.approx(0.8, abs=0.15) and found.cols == pytest.approx(-1.1, abs=0.15)
    with ready.open() as corrected:
        again = measure_shift(corrected)
        assert np.hypot(again.rows, again.cols) < 0.15
        assert residual(corrected) < 0.5 * misaligned


def test_a_file_that_cannot_be_decoded_raises_and_closes_the_pair(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = shifted_pair(tmp_path, 0.0, 1.0)
    truncated = tmp_path / "truncated.tif"
    with rasterio.open(after) as src:
        profile = {**src.profile, "compress": "deflate", "tiled": True, "blockxsize": 32, "blockysize": 32}
        with rasterio.open(truncated, "w", **profile) as dst:
            dst.write(src.read())
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # header intact, data cut
    opened: list[AlignedPair] = []
    real_open = PairSource.open

    def recording(source: PairSource) -> AlignedPair:
        opened.append(real_open(source))
        return opened[-1]

    monkeypatch.setattr(PairSource, "open", recording)
    with pytest.raises(InputFileError, match="AFTER file is corrupt or truncated"):
        prepared(before, truncated)
    assert opened and all(ds.closed for pair in opened for ds in pair._files)
