"""The configuration of one training run (``rs.training.loop``): every default is defined here, once.

``TrainConfig`` for a training run, ``LabelsConfig`` for the labelled data ``cli.py labels`` makes
from reviewed runs.

Light: the command line reads the defaults of ``train``'s options from ``TrainConfig`` without
loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changewatch.models.spec import Fusion
from changewatch.rs.config import Device, InferenceConfig, PairOptions

EncoderWeights = Literal["imagenet"]  # ImageNet weights shipped in a pinned package (models.pretrained)
OSCD_TRAIN = ("abudhabi", "aguasclaras", "beihai", "bercy", "bordeaux", "mumbai", "paris", "pisa", "rennes", "saclay_e")
OSCD_VAL = ("beirut", "cupertino", "hongkong", "nantes")
# The sites option a default of TrainConfig belongs to, and what they are (named when they are not found).
OSCD_SITES = {"--train-sites": (OSCD_TRAIN, "training cities"), "--val-sites": (OSCD_VAL, "validation cities")}
OSCD_LICENCE = (
    "Trained on the Onera Satellite Change Detection dataset (Caye Daudt et al., IGARSS 2018): "
    "modified Copernicus Sentinel data 2015-2018; change labels CC BY-NC-SA 4.0, so these weights "
    "carry CC BY-NC-SA 4.0 (non-commercial; contact the dataset authors for commercial use)."
)


def default_sites_hint(option: str, sites: tuple[str, ...]) -> str:
    """How to name other pairs when ``sites`` are ``option``'s default, OSCD's cities; else "".

    ``option``: ``--train-sites`` or ``--val-sites``. Example: ``--val-sites defaults to OSCD's validation
    cities: name this data's pairs with --val-sites NAME,NAME or give a separate val set with --val-data DIR``.
    """
    default, what = OSCD_SITES[option]
    if tuple(sites) != default:
        return ""
    other = " or give a separate val set with --val-data DIR" if option == "--val-sites" else " or 'all'"
    return f"{option} defaults to OSCD's {what}: name this data's pairs with {option} NAME,NAME{other}"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Paths are strings so the config serialises into the checkpoint.

    ``out`` is the checkpoint written (``NAME.json`` + ``NAME.safetensors``, under ``runs/`` by
    default: a model shipped with the package is replaced only with ``force``); ``name`` the
    model's name (None: ``out``'s stem). ``train_sites`` ``("all",)`` trains on every pair of
    ``data_dir`` not used for validation.
    """

    data_dir: str
    out: str = "runs/changewatch.json"
    train_sites: tuple[str, ...] = OSCD_TRAIN
    val_sites: tuple[str, ...] = OSCD_VAL
    val_data: tuple[str, ...] = ()  # separate val sets (folders, every pair in each); replaces val_sites
    name: str | None = None  # None: the stem of ``out``
    architecture: str = "unet"  # any smp architecture
    encoder: str = "mobilenet_v2"  # any smp encoder (random init: nothing is downloaded)
    encoder_weights: EncoderWeights | None = None  # None: random init; imagenet: offline, RGB models only
    fusion: Fusion = "early"
    bands: tuple[str, ...] = ("blue", "green", "red", "nir")  # what the model's input bands are (its spec)
    select: tuple[str, ...] | None = None  # which bands of the site files feed them (None: all, in order)
    outputs: tuple[str, ...] = ("change",)  # what the network predicts (models.changenet.OUTPUTS), change first
    gsd_m: float = 10.0
    gsd_range_m: tuple[float, float] | None = None  # input GSDs the model serves at native pixels (ModelSpec)
    crop: int = 128
    batch_size: int = 8
    iterations: int = 10_000
    epochs: float | None = None  # instead of iterations: passes over the training pixels (crop² × batch per step)
    lr: float = 1e-3
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    loss: str = "bce+dice"  # '+'-joined terms of rs.training.losses.LOSSES
    pos_weight: float = 10.0  # weight of change pixels in BCE (class imbalance)
    focal_gamma: float = 2.0
    flips: bool = True  # random rot90 × flip, the same for both dates
    jitter: float = 0.1  # sd of a per-date gain and offset (radiometric differences between dates)
    band_jitter: float = 0.0  # sd of an extra per-band, per-date gain (spectral differences between sensors)
    shift_px: int = 0  # up to this many pixels of random misregistration of AFTER
    coregister: bool = PairOptions.coregister  # remove each pair's measured residual shift first, as detect does
    zero_is_valid: bool = PairOptions.zero_is_valid  # pixels 0 in every band are data, not nodata (rs.validity)
    scale_range: tuple[float, float] | None = None  # random zoom of each crop (multi-scale training)
    val_every: int = 500
    patience: int = 0  # stop after this many validations without a better val F1 (0: never)
    max_minutes: float | None = None  # stop (validating once more) after this much wall time; None: no limit
    average_last: int = 0  # also try the mean of the last K validated weights (SWA); kept if better on val
    seed: int = 0
    threads: int = 1
    loader_workers: int = 0  # processes sampling batches ahead (0: in the training process, bit-reproducible)
    device: Device = InferenceConfig.device
    amp: bool = True  # bf16 autocast on CUDA (no effect on the CPU)
    init_from: str | None = None  # fine-tune: start from this checkpoint's network and weights
    resume: bool = False  # continue an interrupted run from its state file (NAME.state.pt)
    force: bool = False  # allow ``out`` to replace a model shipped with the package
    # of the training data; None: declared by the data itself (rs.training.loop.data_licence)
    licence: str | None = None

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", Path(self.out).stem)


@dataclass(frozen=True)
class LabelsConfig:
    """A labelled data set made from reviewed runs (``rs.labels.write_labels``).

    ``runs``: detect run folders (one site each, named as its folder); ``outdir``: the folder
    written (replaced as a whole); ``margin_px``: the margin around the reviewed flags' extent, in
    pixels of each run's grid: one training crop, so that every crop ``train`` draws around a
    reviewed flag, and every model trained on such crops, fits in the site.
    """

    runs: tuple[str, ...]
    outdir: str
    margin_px: int = TrainConfig.crop
