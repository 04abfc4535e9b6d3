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


def _compared(before: tuple[str | None, ...], after: tuple[str | None, ...] | None = None) -> object:
    from changewatch.rs.bands import BandChoice

    after = before if after is None else after
    return BandChoice(tuple(range(1, len(before) + 1)), tuple(range(1, len(after) + 1)), before, after, "--bands")


@pytest.mark.parametrize("before,after,given,words", [
    (("B08", "B04", "B03", "B02"), None, ("B08", "B04", "B03", "B02"),
     "--bands B08,B04,B03,B02 are nir,red,green,blue; the model changewatch-rgbn takes blue,green,red,nir: "
     "give them in that order"),
    (("B02", "B02", "B03", "B04"), None, ("B02", "B02", "B03", "B04"), "are blue,blue,green,red; the model "
     "changewatch-rgbn takes blue,green,red,nir: blue given twice"),
    (("nir", "red", "green", "blue"), None, None, "BEFORE's bands nir,red,green,blue are nir,red,green,blue; "
     "the model changewatch-rgbn takes blue,green,red,nir: pick them in that order with --bands"),
    (("B02", "B03", "B04", "B08"), ("B02", "B03", "B04", "B11"), ("1", "2", "3", "4"),
     "--bands 1,2,3,4 are blue,green,red,swir16 in AFTER; the model changewatch-rgbn takes blue,green,red,nir: give "
     "those bands"),
    (("B08", "band 2", None, "B02"), None, None, "are nir,?,?,blue"),  # what is known is checked
])
def test_named_bands_must_be_the_models_in_its_order(before: tuple[str | None, ...],
                                                     after: tuple[str | None, ...] | None,
                                                     given: tuple[str, ...] | None, words: str) -> None:
    from changewatch.models.spec import ModelSpec

    with pytest.raises(ModelError) as caught:
        ModelSpec().check_bands(4, _compared(before, after), given)  # type: ignore[arg-type]
    assert words in str(caught.value)


@pytest.mark.parametrize("names,model", [
    (("B02", "B03", "B04", "B08"), ("blue", "green", "red", "nir")),
    (("Blue", "GREEN", "red", "NIR"), ("blue", "green", "red", "nir")),
    (("band 4", "band 3", "band 2", "band 1"), ("blue", "green", "red", "nir")),  # names that say nothing
    ((None, None, None, None), ("blue", "green", "red", "nir")),
    (("B8", "B4", "B3", "B2"), ("blue", "green", "red", "nir")),  # Landsat's way: not Sentinel-2 ids
    (("B08", "B04", "B03", "B02"), ("b0", "b1", "b2", "b3")),  # a model whose band names say nothing
])
def test_bands_the_names_do_not_contradict_are_taken(names: tuple[str | None, ...], model: tuple[str, ...]) -> None:
    from changewatch.models.spec import ModelSpec

    ModelSpec(bands=model).check_bands(4, _compared(names), None)  # type: ignore[arg-type]
