"""models.changenet: safe checkpoint round trip and clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from changewatch.models.changenet import (
    DEFAULT_MODEL,
    build_network,
    fold_batchnorm,
    load_checkpoint,
    load_spec,
    save_checkpoint,
)
from changewatch.rs.errors import ModelError
from tests.data import tiny_spec


def test_round_trip_gives_same_predictions(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = tiny_spec()
    spec.threshold = 0.42
    net = build_network(spec).eval()
    # fp16 storage: compare against the fp16-rounded weights
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.half().float())
    path = save_checkpoint(net, spec, tmp_path / "m.json")
    assert path.with_suffix(".safetensors").exists()
    loaded, spec2 = load_checkpoint(path)
    assert spec2 == spec and spec2.threshold == 0.42
    x = torch.randn(1, 8, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-5)


def test_missing_and_broken_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "none.json")
    spec = tiny_spec()
    path = save_checkpoint(build_network(spec), spec, tmp_path / "m.json")
    path.with_suffix(".safetensors").write_bytes(b"\x80\x04pickle? no thanks")
    with pytest.raises(ModelError, match="not a valid safetensors"):
        load_checkpoint(path)
    data = json.loads(path.read_text())
    data["encoderr"] = "typo"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="unknown keys"):
        load_spec(path)


def test_weights_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    spec = tiny_spec()
    path = save_checkpoint(build_network(spec), spec, tmp_path / "m.json")
    data = json.loads(path.read_text())
    data["decoder_channels"] = [64, 32, 16]
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not match"):
        load_checkpoint(path)


def test_shipped_model_loads_and_is_documented() -> None:
    net, spec = load_checkpoint(DEFAULT_MODEL)
    assert spec.bands == ("blue", "green", "red", "nir") and spec.gsd_m == 10.0
    assert 0.0 < spec.threshold < 1.0
    assert "CC BY-NC-SA" in spec.licence and spec.metrics["val_pooled"]["f1"] > 0.35
    assert DEFAULT_MODEL.with_suffix(".safetensors").stat().st_size < 25 * 2**20


def test_shipped_rgb_model_is_the_default_for_three_bands() -> None:
    from changewatch.models.spec import choose_model

    path = choose_model(None, 3, 10.0).path
    net, spec = load_checkpoint(path)
    assert path.stem == "changewatch-rgb" and spec.bands == ("red", "green", "blue") and spec.in_channels == 6
    assert "CC BY-NC-SA" in spec.licence and 0.0 < spec.threshold < 1.0
    assert spec.training["config"]["select"] == ["3", "2", "1"]
    assert path.with_suffix(".safetensors").stat().st_size < 25 * 2**20


def test_folding_batch_norms_keeps_the_outputs() -> None:
    network, _ = load_checkpoint(DEFAULT_MODEL)
    network.eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (2, 8, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        expected = network(x)
        folded = fold_batchnorm(network)
        got = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_network(tiny_spec()).train())


def test_change_model_leaves_a_training_network_alone() -> None:
    from changewatch.rs.infer import ChangeModel

    network = build_network(tiny_spec()).train()
    ChangeModel(network, tiny_spec(), torch.device("cpu"))
    assert network.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())


class _Payload:
    """Unpickling this would create a file: proof that a loader ran code from a model or state file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.marker),))  # type: ignore[return-value]


def _corrupt(kind: str, path: Path, marker: Path) -> str:
    """Make the checkpoint at ``path`` (NAME.json) not what it claims; returns the words expected."""
    import pickle

    weights = path.with_suffix(".safetensors")
    good = weights.read_bytes()
    if kind == "json not json":
        path.write_text("{'name': 'tiny', threshold: 0.5")
        return "not a readable JSON file"
    if kind == "json binary":
        path.write_bytes(bytes(range(256)))
        return "not a readable JSON file"
    if kind == "json a list":
        path.write_text("[1, 2, 3]")
        return "must be a JSON object"
    if kind == "json wrong types":
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "bands": "b0,b1,b2,b3", "threshold": "0.5"}))
        return "wrong type for bands, threshold"
    if kind == "threshold out of range":
        path.write_text(json.dumps({**json.loads(path.read_text()), "threshold": 5}))
        return "threshold must be in (0, 1)"
    if kind == "weights a pickle":
        weights.write_bytes(pickle.dumps({"w": _Payload(marker)}))
        return "not a valid safetensors file"
    if kind == "weights truncated":
        weights.write_bytes(good[: len(good) // 2])
        return "not a valid safetensors file"
    if kind == "weights empty":
        weights.write_bytes(b"")
        return "not a valid safetensors file"
    raise ValueError(kind)


MODEL_FAULTS = ["json not json", "json binary", "json a list", "json wrong types", "threshold out of range",
                "weights a pickle", "weights truncated", "weights empty"]


@pytest.mark.parametrize("kind", MODEL_FAULTS)
def test_model_files_that_are_not_what_they_claim(kind: str, tmp_path: Path) -> None:
    spec = tiny_spec()
    path = save_checkpoint(build_network(spec), spec, tmp_path / "m.json")
    marker = tmp_path / "payload-ran"
    words = _corrupt(kind, path, marker)
    with pytest.raises(ModelError, match=re.escape(words)):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["json not json", "weights a pickle"])
def test_detect_with_a_broken_model_is_one_line_exit_6(kind: str, pair: tuple[Path, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from changewatch.cli import cli

    spec = tiny_spec()
    path = save_checkpoint(build_network(spec), spec, tmp_path / "m.json")
    marker = tmp_path / "payload-ran"
    words = _corrupt(kind, path, marker)
    result = CliRunner().invoke(cli, ["detect", *map(str, pair), "-o", str(tmp_path / "out"), "--model", str(path),
                                      "-q"])
    assert result.exit_code == 6
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    """The control for the tests above and in test_train: unpickling _Payload does create the file."""
    import pickle

    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()
