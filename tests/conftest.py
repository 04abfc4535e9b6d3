"""Shared fixtures: small generated scene pairs and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from changewatch.models.changenet import build_network, save_checkpoint
from tests.data import UTM48N, make_site, plant_square, textured_scene, tiny_spec, utm_transform, write_raster

SHARED_OSCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 96×96 4-band UTM pair; AFTER has a 10×10 bright square at rows 40–49, cols 30–39."""
    before = textured_scene(96, 96, seed=1)
    after = plant_square(before, 40, 30, 10)
    t = utm_transform()
    return (write_raster(tmp_path / "before.tif", before, UTM48N, t),
            write_raster(tmp_path / "after.tif", after, UTM48N, t))


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A randomly initialised small U-Net saved in the shipped checkpoint format."""
    import torch

    torch.manual_seed(0)
    spec = tiny_spec()
    return save_checkpoint(build_network(spec), spec, tmp_path / "models" / "tiny.json")


@pytest.fixture
def sites(tmp_path: Path) -> Path:
    """Three OSCD-style labelled sites with planted squares."""
    root = tmp_path / "sites"
    make_site(root, "alpha", 1, squares=((10, 10, 12), (40, 30, 8)))
    make_site(root, "beta", 2, squares=((20, 40, 10),))
    make_site(root, "gamma", 3, squares=((5, 5, 6), (30, 30, 14)))
    return root


@pytest.fixture
def oscd() -> Path:
    """The real OSCD copy in ../shared (skips where it is absent, as on a user's machine)."""
    if not SHARED_OSCD.is_dir():
        pytest.skip("../shared/data/oscd is not present")
    return SHARED_OSCD
