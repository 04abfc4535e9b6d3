"""rs.training.sampling: sites prepared and loaded whole, augmented batches with their labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from changewatch.rs.datasets import find_pairs
from changewatch.rs.training.config import TrainConfig
from changewatch.rs.training.sampling import load_site, sample_batch
from tests.data import make_site


def test_load_site_and_sample_batch(sites: Path) -> None:
    site = load_site(find_pairs(sites, ["alpha"])[0])
    assert site.x.shape == (8, 64, 64) and site.x.dtype == np.float32
    assert int((site.label == 1).sum()) == 12 * 12 + 8 * 8 and len(site.positives) == 208
    config = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=6)
    x, y = sample_batch([site], config, np.random.default_rng(0))
    assert x.shape == (6, 8, 32, 32) and y.shape == (6, 1, 32, 32)
    assert (y == 1).any()  # half the crops are centred on change


def test_augmentations_keep_shapes_and_labels(sites: Path) -> None:
    site = load_site(find_pairs(sites, ["alpha"])[0])
    config = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=16, shift_px=2,
                         scale_range=(0.5, 2.0), jitter=0.0, flips=False)
    x, y = sample_batch([site], config, np.random.default_rng(1))
    assert x.shape == (16, 8, 32, 32) and y.shape == (16, 1, 32, 32)
    assert set(np.unique(y)) <= {0, 1, 255} and (y == 1).any()


def test_band_jitter_scales_each_band_of_each_date_on_its_own(sites: Path) -> None:
    site = load_site(find_pairs(sites, ["alpha"])[0])
    plain = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=4, jitter=0.0)
    jittered = TrainConfig(data_dir=str(sites), out="unused", crop=32, batch_size=4, jitter=0.0, band_jitter=0.2)
    x0, y0 = sample_batch([site], plain, np.random.default_rng(3))
    x1, y1 = sample_batch([site], jittered, np.random.default_rng(3))
    assert np.array_equal(y0[0], y1[0])  # same first crop: only the gains differ
    ratios = [float(np.median(x1[0, b][x0[0, b] != 0] / x0[0, b][x0[0, b] != 0])) for b in range(8)]
    assert len({round(r, 4) for r in ratios}) == 8 and all(0.3 < r < 1.7 for r in ratios)


def test_misregistration_shift_on_a_site_smaller_than_the_crop(tmp_path: Path) -> None:
    small = load_site(find_pairs(make_site(tmp_path / "s", "tiny", 4, size=20, squares=((5, 5, 6),)).parent)[0])
    config = TrainConfig(data_dir="", out="unused", crop=32, batch_size=8, shift_px=2)
    x, y = sample_batch([small], config, np.random.default_rng(0))
    assert x.shape == (8, 8, 32, 32) and (y == 255).any() and (y == 1).any()


