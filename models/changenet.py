"""The bi-temporal change network and its safe checkpoint format.

Architecture: **early fusion**. Both dates are normalised separately (``rs.normalize``) and
stacked as one 2×bands-channel image fed to an smp U-Net. We chose early fusion over a siamese
encoder for the first model because (1) the first convolution sees both dates at every pixel, so
it can learn band differences and ratios directly, which is what separates new roofs and bare
soil from seasonal change on 10 m imagery; (2) one encoder pass per tile instead of two halves
inference cost on the CPU; (3) on OSCD, early fusion and siamese-difference nets score within a
few F1 points of each other (Caye Daudt et al., ICIP 2018), and small training sets favour the
simpler model. Siamese variants (one shared encoder per date, features fused by difference or
by concatenation) are ``fusion`` options of the same checkpoint format, trainable with
``cli.py train --fusion``.

Checkpoint = ``NAME.safetensors`` (weights, stored fp16 to keep the repository light, loaded as
fp32) + ``NAME.json`` (the ModelSpec: architecture, bands, normalisation, GSD, decision
threshold, training data and licence, metrics). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import cast

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.nn.utils.fusion import fuse_conv_bn_eval

from changewatch.models.spec import (
    DEFAULT_MODEL,
    FUSIONS,
    MODELS_DIR,
    OUTPUTS,
    SEMANTIC_OUTPUTS,
    ModelSpec,
    choose_model,
    is_shipped,
    load_spec,
)
from changewatch.rs.errors import ModelError
from changewatch.rs.io.files import atomic_write

__all__ = ["DEFAULT_MODEL", "FUSIONS", "MODELS_DIR", "OUTPUTS", "SEMANTIC_OUTPUTS", "ModelSpec", "SiameseNet",
           "build_network", "choose_model", "fold_batchnorm", "is_shipped", "load_checkpoint", "load_spec",
           "save_checkpoint"]


def _smp_model(spec: ModelSpec, in_channels: int) -> torch.nn.Module:
    with warnings.catch_warnings():
        # smp 0.6 (pinned) flags its timm- encoders as deprecated; timm-tf_efficientnet_lite0 is the one our
        # offline ImageNet weights fit (models.pretrained), and the pin keeps it available
        warnings.filterwarnings("ignore", message="`timm-` encoders are deprecated", category=DeprecationWarning)
        model: torch.nn.Module = smp.create_model(spec.architecture, encoder_name=spec.encoder, encoder_weights=None,
                                                  encoder_depth=spec.encoder_depth,
                                                  decoder_channels=spec.decoder_channels, in_channels=in_channels,
                                                  classes=len(spec.outputs))
        return model


class SiameseNet(torch.nn.Module):
    """One encoder, shared by both dates; its features fused level by level and decoded once.

    ``siamese-diff`` fuses by the absolute difference of the two dates' features (change is where
    they differ, whatever the direction); ``siamese-concat`` stacks them and mixes them with a 1×1
    convolution per level, so the decoder can also see *what* each date looks like. Input: (N,
    2×bands, H, W) like the early-fusion net, BEFORE's bands first. Built for ``spec`` (its
    architecture, encoder, bands and outputs), randomly initialised.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        base = _smp_model(spec, len(spec.bands))
        self.bands = len(spec.bands)
        self.concat = spec.fusion == "siamese-concat"
        self.encoder, self.decoder, self.segmentation_head = (
            base.get_submodule(name) for name in ("encoder", "decoder", "segmentation_head"))
        channels = list(cast("Sequence[int]", self.encoder.out_channels))  # smp encoders list their feature channels
        self.fuse = torch.nn.ModuleList(
            [torch.nn.Conv2d(2 * c, c, kernel_size=1) if self.concat and c > 0 else torch.nn.Identity()
             for c in channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, outputs, H, W) for a batch (N, 2×bands, H, W), BEFORE's bands first."""
        before = self.encoder(x[:, :self.bands])
        after = self.encoder(x[:, self.bands:])
        if self.concat:
            features = [f(torch.cat([b, a], dim=1)) for f, b, a in zip(self.fuse, before, after, strict=True)]
        else:
            features = [torch.abs(a - b) for b, a in zip(before, after, strict=True)]
        logits: torch.Tensor = self.segmentation_head(self.decoder(features))
        return logits


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """An untrained network for ``spec`` (random init: no weights are downloaded).

    Any smp architecture and encoder, with early fusion (both dates stacked as one image) or a
    siamese encoder (``SiameseNet``). Raises ModelError for an unknown fusion, architecture or encoder.
    """
    if spec.fusion not in FUSIONS:
        raise ModelError(f"unknown fusion {spec.fusion!r}: use one of {', '.join(FUSIONS)}")
    if not spec.outputs or spec.outputs[0] != "change" or not set(spec.outputs) <= set(OUTPUTS):
        raise ModelError(f"model outputs {spec.outputs}: the first must be change, the others of {', '.join(OUTPUTS)}")
    try:
        if spec.fusion == "early":
            return _smp_model(spec, spec.in_channels)
        return SiameseNet(spec)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"cannot build {spec.architecture} with encoder {spec.encoder}: {str(exc)[:160]} "
                         "(segmentation_models_pytorch.encoders.get_encoder_names() lists the encoders)") from exc


def save_checkpoint(network: torch.nn.Module, spec: ModelSpec, json_path: str | os.PathLike[str]) -> Path:
    """Write ``NAME.safetensors`` (fp16 weights) and ``NAME.json`` atomically; returns the JSON path."""
    json_path = Path(json_path).with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in network.state_dict().items()}
    with atomic_write(json_path.with_suffix(".safetensors")) as tmp:
        save_file(weights, str(tmp))
    with atomic_write(json_path) as tmp:
        tmp.write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return json_path


def load_checkpoint(path: str | os.PathLike[str] = DEFAULT_MODEL) -> tuple[torch.nn.Module, ModelSpec]:
    """Rebuild a network from a safetensors checkpoint, in eval mode on the CPU, fp32.

    Raises ModelError when a file is missing, is not what it claims (``load_spec``; weights that
    are not safetensors), or the weights do not fit the architecture.
    """
    spec = load_spec(path)
    weights_path = Path(path).with_suffix(".safetensors")
    if not weights_path.exists():
        raise ModelError(f"model weights not found: {weights_path}")
    network = build_network(spec)
    try:
        state = load_file(weights_path)  # safetensors: a JSON header and raw tensors, nothing is executed
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"model weights are not a valid safetensors file: {weights_path} ({exc})") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {weights_path} do not match the architecture in its JSON") from exc
    return network.eval(), spec


def fold_batchnorm(network: torch.nn.Module) -> torch.nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d in a Sequential into that convolution.

    In place; the network must be in eval mode and is only fit for inference afterwards.

    In eval mode a batch norm is a fixed per-channel affine map, so folding it into the preceding
    convolution's weights and bias gives the same outputs (to float rounding) with one pass over
    the activations fewer: 1.4–1.5× faster on the CPU for the shipped U-Net (bench/RESULTS.md).
    """
    if network.training:
        raise ValueError("fold_batchnorm needs a network in eval mode")
    for module in network.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module._modules.items())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):  # each module and the next
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                module._modules[bn_name] = torch.nn.Identity()
    return network

