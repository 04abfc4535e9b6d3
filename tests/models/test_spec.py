"""models.spec: which shipped model fits a scene, by band count and GSD, and why (light: no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from changewatch.models.spec import DEFAULT_MODEL
from changewatch.rs.errors import ModelError


def test_default_model_by_band_count() -> None:
    from changewatch.models.spec import choose_model

    assert choose_model(None, 4).path == DEFAULT_MODEL and choose_model(None, 4, 10.0).path == DEFAULT_MODEL
    chosen = choose_model("mine.json", 4, 0.5)
    assert chosen.path == Path("mine.json") and chosen.reason == "given with --model"
    with pytest.raises(ModelError, match="no shipped model takes 5 bands"):
        choose_model(None, 5)
    with pytest.raises(ModelError, match="pick red, green, blue"):  # 4-band VHR: the VHR model is RGB
        choose_model(None, 5, 0.5)


def test_model_choice_by_gsd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from changewatch.models import spec as specs

    def shipped(name: str, gsd: float, served: tuple[float, float] | None) -> tuple[Path, specs.ModelSpec]:
        return tmp_path / f"{name}.json", specs.ModelSpec(name=name, bands=("red", "green", "blue"), gsd_m=gsd,
                                                          gsd_range_m=served)

    models = [shipped("s2-rgb", 10.0, None), shipped("vhr-rgb", 0.5, (0.25, 2.5))]
    monkeypatch.setattr(specs, "shipped_models", lambda: models)
    assert specs.choose_model(None, 3, 0.5).path.stem == "vhr-rgb"  # Pléiades
    assert specs.choose_model(None, 3, 2.5).path.stem == "vhr-rgb"  # VNREDSat-1
    assert specs.choose_model(None, 3, 10.0).path.stem == "s2-rgb"  # Sentinel-2
    assert specs.choose_model(None, 3, 0.075).path.stem == "vhr-rgb"  # drone: nearest range, resampled to 0.5 m
    assert specs.choose_model(None, 3, 4.0).path.stem == "s2-rgb"  # PlanetScope: 5-30 m is nearer than 0.25-2.5
    assert specs.choose_model(None, 3).path.stem == "s2-rgb"  # plain images of unknown GSD
    reason = specs.choose_model(None, 3, 0.5).reason
    assert "0.5 m GSD" in reason and "within the 0.25–2.5 m vhr-rgb serves" in reason
