"""Train the change network on labelled pairs and pick its checkpoint and threshold on val.

Pairs come in any layout ``rs.datasets`` reads (OSCD-style sites, LEVIR-CD folders, vector
labels). They are expected to be small (about 1 Mpx each, as OSCD cities or LEVIR-CD chips): each
is aligned and normalised once with the same code as inference (``rs.align`` + ``rs.normalize``)
and kept in memory (about 33 bytes per pixel with 4 bands); training draws random crops, half of
them centred on a change pixel because change covers only a few percent of the ground. Every
``val_every`` iterations the network runs over the validation pairs through the real tiled
inference path; the checkpoint kept is the one with the best pooled val F1, with the threshold
that achieved it.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from changewatch.models.changenet import (ModelSpec, build_network, is_shipped, load_checkpoint, load_spec,
                                          save_checkpoint)
from changewatch.models.pretrained import load_pretrained_encoder
from changewatch.rs.io.files import atomic_write, writing
from changewatch.rs.errors import ModelError
from changewatch.rs.datasets import LABEL_NODATA, LabelledPair, find_pairs, read_whole
from changewatch.rs.config import EvalOptions, PairOptions
from changewatch.rs.evaluate import best_common_threshold, evaluate
from changewatch.rs.infer import ChangeModel, model_input, resolve_device
from changewatch.rs.normalize import METHOD, pair_stats_from_arrays
from changewatch.rs.prepare import prepare_pair
from changewatch.rs.training.config import OSCD_LICENCE, TrainConfig

PRETRAINED_BANDS = ("red", "green", "blue")


@dataclass
class SiteArrays:
    """A training site in memory: model input (2×bands, H, W) and labels (outputs, H, W; 1 yes,
    0 no, 255 ignore), change first."""

    name: str
    x: np.ndarray
    label: np.ndarray
    positives: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.positives = np.argwhere(self.label[0] == 1)


def load_site(site: LabelledPair, options: PairOptions = PairOptions(),
              outputs: tuple[str, ...] = ("change",)) -> SiteArrays:
    """Prepare (``rs.prepare``: aligned and co-registered as at inference, at the data's own pixels),
    normalise and load one labelled pair with the labels of each of ``outputs``; unlabelled or
    invalid pixels → 255. ``options``: the bands of the pair's files used (by 1-based index or name;
    None: all), co-registration, whether pixels 0 in every band are data (``rs.validity``)."""
    prepared = prepare_pair(site.before, site.after, options)
    with prepared.open() as pair:
        w = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
        labels = np.stack([read_whole(pair, reader) for reader in site.output_labels(pair, outputs)])
    labels = np.where(w.valid, labels, LABEL_NODATA).astype(np.uint8)
    stats = pair_stats_from_arrays(w.before, w.after, w.valid)
    return SiteArrays(site.name, model_input(w.before, w.after, w.valid, stats), labels)


def _pair_options(config: TrainConfig) -> PairOptions:
    """How training and validation pairs are prepared: the selected bands, at their own pixels."""
    return PairOptions(bands=config.select, gsd="native", coregister=config.coregister,
                       zero_is_valid=config.zero_is_valid)


def _crop_origin(site: SiteArrays, crop: int, rng: np.random.Generator, centre_on_change: bool) -> tuple[int, int]:
    h, w = site.label.shape[1:]
    if centre_on_change and len(site.positives):
        r, c = site.positives[rng.integers(len(site.positives))]
        r0, c0 = r - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), c - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1)
    else:
        r0, c0 = rng.integers(0, max(1, h - crop + 1)), rng.integers(0, max(1, w - crop + 1))
    return int(np.clip(r0, 0, max(0, h - crop))), int(np.clip(c0, 0, max(0, w - crop)))


def _zoom(x: np.ndarray, y: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a (C, h, w) crop and its (outputs, h, w) labels to crop × crop: bilinear for the
    image, nearest for the labels (so 255 stays 'ignore')."""
    xt = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(x))[None], size=(crop, crop),
                                         mode="bilinear", align_corners=False)[0].numpy()
    rows = (np.arange(crop) * y.shape[1] / crop).astype(int)
    cols = (np.arange(crop) * y.shape[2] / crop).astype(int)
    return xt, y[:, rows[:, None], cols[None, :]]


def sample_batch(sites: list[SiteArrays], config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A batch of augmented crops: x (N, 2×bands, crop, crop) float32, y (N, outputs, crop, crop) uint8.

    Augmentation (each switchable in TrainConfig): a random zoom of the crop (multi-scale), a
    random dihedral transform (rot90 × flip) shared by both dates, an independent gain/offset
    jitter per date (radiometric differences between acquisitions) and optionally per band
    (``band_jitter``: spectral differences between sensors), and a random shift of AFTER
    by up to ``shift_px`` pixels (the misregistration real pairs have). Crops smaller than ``crop``
    (tiny sites) are padded with ignored pixels.
    """
    weights = np.array([s.label.size for s in sites], dtype=float)
    nb = len(config.bands)
    xs, ys = [], []
    for _ in range(config.batch_size):
        site = sites[rng.choice(len(sites), p=weights / weights.sum())]
        scale = float(rng.uniform(*config.scale_range)) if config.scale_range else 1.0
        side = max(8, int(round(config.crop / scale)))
        margin = config.shift_px
        r0, c0 = _crop_origin(site, side + 2 * margin, rng, centre_on_change=rng.random() < 0.5)
        x = site.x[:, r0:r0 + side + 2 * margin, c0:c0 + side + 2 * margin]
        y = site.label[:, r0:r0 + side + 2 * margin, c0:c0 + side + 2 * margin]
        if margin:
            dr, dc = rng.integers(-margin, margin + 1, size=2)
            before = x[:nb, margin:margin + side, margin:margin + side]
            after = x[nb:, margin + dr:margin + dr + side, margin + dc:margin + dc + side]
            label = y[:, margin:margin + side, margin:margin + side]
            if before.shape[1:] == after.shape[1:] == label.shape[1:]:
                x, y = np.concatenate([before, after]), label
            else:  # a crop cut short by the site's edge: no shift
                x, y = site.x[:, r0:r0 + side, c0:c0 + side], site.label[:, r0:r0 + side, c0:c0 + side]
        if side != config.crop and y.shape[1:] == (side, side):
            x, y = _zoom(x, y, config.crop)
        ph, pw = config.crop - y.shape[1], config.crop - y.shape[2]
        if ph or pw:
            x = np.pad(x[:, :config.crop, :config.crop], ((0, 0), (0, max(0, ph)), (0, max(0, pw))))
            y = np.pad(y[:, :config.crop, :config.crop], ((0, 0), (0, max(0, ph)), (0, max(0, pw))),
                       constant_values=LABEL_NODATA)
        if config.flips:
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
        if config.jitter:
            gain = 1.0 + rng.normal(0.0, config.jitter, size=2).repeat(nb)[:, None, None]
            offset = rng.normal(0.0, config.jitter, size=2).repeat(nb)[:, None, None]
            x = x * gain + offset
        if config.band_jitter:
            x = x * (1.0 + rng.normal(0.0, config.band_jitter, size=2 * nb))[:, None, None]
        xs.append(np.ascontiguousarray(x, dtype=np.float32))
        ys.append(np.ascontiguousarray(y))
    return np.stack(xs), np.stack(ys)


class _BatchStream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Endless augmented batches for one loader worker, from its own seeded generator."""

    def __init__(self, sites: list[SiteArrays], config: TrainConfig, seed: tuple[int, ...]) -> None:
        self.sites, self.config, self.seed = sites, config, seed

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([*self.seed, info.id if info else 0])
        while True:
            yield sample_batch(self.sites, self.config, rng)


def _batches(sites: list[SiteArrays], config: TrainConfig, rng: np.random.Generator,
             start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches: drawn from ``rng`` in this process (``loader_workers`` 0: every run with
    the same seed sees the same batches, resumed runs too), or sampled ahead by worker processes
    seeded from (seed, ``start`` iteration, worker), which keeps a GPU fed but is reproducible only
    for the same worker count and no resume."""
    if config.loader_workers == 0:
        while True:
            x, y = sample_batch(sites, config, rng)
            yield torch.from_numpy(x), torch.from_numpy(y)
    loader = torch.utils.data.DataLoader(_BatchStream(sites, config, (config.seed, start)), batch_size=None,
                                         num_workers=config.loader_workers, pin_memory=torch.cuda.is_available(),
                                         prefetch_factor=4, persistent_workers=True)
    yield from loader


LOSSES = ("bce", "dice", "focal")


def parse_loss(text: str) -> tuple[str, ...]:
    """'bce+dice' → ('bce', 'dice'); an unknown or empty term is a ValueError."""
    terms = tuple(t.strip().lower() for t in text.split("+") if t.strip())
    unknown = [t for t in terms if t not in LOSSES]
    if not terms or unknown:
        raise ValueError(f"loss {text!r}: use terms of {', '.join(LOSSES)} joined with '+', e.g. bce+dice")
    return terms


def change_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float, terms: tuple[str, ...] = ("bce", "dice"),
                gamma: float = 2.0, building_weight: float = 0.5) -> torch.Tensor:
    """Loss of logits (N, outputs, H, W) against uint8 targets (N, outputs, H, W; 255 ignored).

    Change (channel 0): the sum of the ``terms`` over labelled pixels — weighted BCE, soft Dice of
    the change class, and focal loss (BCE down-weighting easy pixels by (1 − p_t)^gamma, with the
    same class weight). Building outputs (further channels, if any): BCE + soft Dice each, times
    ``building_weight`` (an auxiliary task: what stands on the ground at each date)."""
    total = _binary_loss(logits[:, 0], target[:, 0], pos_weight, terms, gamma)
    for k in range(1, logits.shape[1]):
        total = total + building_weight * _binary_loss(logits[:, k], target[:, k], 1.0, ("bce", "dice"), gamma)
    return total


def _binary_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float, terms: tuple[str, ...],
                 gamma: float) -> torch.Tensor:
    """``terms`` of one binary output: logits and targets (N, H, W), 255 = ignored."""
    keep = target != LABEL_NODATA
    t = (target == 1).float()
    weight = torch.tensor(pos_weight, device=logits.device)
    total = logits.new_zeros(())
    if not keep.any():
        return total + 0.0 * logits.sum()  # nothing labelled (no building masks here): no gradient
    if "bce" in terms:
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], t[keep], pos_weight=weight)
    if "focal" in terms:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], t[keep], reduction="none")
        p_t = torch.exp(-bce)
        w = torch.where(t[keep] > 0, weight, torch.ones_like(bce))
        total = total + (w * (1 - p_t) ** gamma * bce).mean()
    if "dice" in terms:
        p = torch.sigmoid(logits) * keep
        total = total + 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return total


@dataclass
class TrainResult:
    """Where the checkpoint went and how good it was on val (pooled, at its chosen threshold)."""

    checkpoint: Path
    threshold: float
    val: dict[str, Any]  # the checkpoint's val record (Validation.record)
    seconds: float


ValSets = dict[str, list[LabelledPair]]


@dataclass(frozen=True)
class Validation:
    """One validation: the threshold chosen, the F1 it reaches, and the record the checkpoint keeps
    (``ModelSpec.metrics["val_pooled"]``): the pooled pixel metrics (``rs.evaluate.PixelMetrics``)
    of the one val set, or, with several, their mean F1 and each set's pooled metrics under ``sets``."""

    threshold: float
    f1: float
    record: dict[str, Any]


def _validate(network: torch.nn.Module, spec: ModelSpec, device: torch.device, val: ValSets,
              config: TrainConfig) -> Validation:
    """The network on the val sets, run as ``evaluate`` runs a model (tiled, GSD policy auto): the
    threshold maximises the mean of the sets' pooled F1 (one set: its pooled F1), so a small set
    weighs as much as a large one."""
    model = ChangeModel(network, spec, device)
    options = EvalOptions(bands=config.select, coregister=config.coregister, zero_is_valid=config.zero_is_valid,
                          threshold=0.5)
    histograms = {name: evaluate(pairs, model, options).histogram for name, pairs in val.items()}
    threshold, per_set = best_common_threshold(histograms)
    if len(per_set) == 1:
        pooled = next(iter(per_set.values())).metrics()
        return Validation(threshold, pooled.f1, asdict(pooled))
    mean_f1 = float(np.mean([c.f1 for c in per_set.values()]))
    return Validation(threshold, mean_f1,
                      {"f1": mean_f1, "sets": {name: asdict(c.metrics()) for name, c in per_set.items()}})


def _split(config: TrainConfig) -> tuple[list[LabelledPair], ValSets]:
    """Training pairs and validation sets. With ``val_data`` each folder is a set of its own;
    otherwise ``val_sites`` of ``data_dir`` are one set. train_sites ("all",) means every pair of
    ``data_dir`` not used for val."""
    if config.val_data:
        val = {Path(d).name: find_pairs(d) for d in config.val_data}
    else:
        val = {"val": find_pairs(config.data_dir, list(config.val_sites))} if config.val_sites else {}
    if tuple(config.train_sites) == ("all",):
        names = {p.name for pairs in val.values() for p in pairs if not config.val_data}
        return [p for p in find_pairs(config.data_dir) if p.name not in names], val
    return find_pairs(config.data_dir, list(config.train_sites)), val


def data_licence(data_dir: str | Path) -> str:
    """The licence the training data declares: the attribution in a ``synth.json`` in ``data_dir``
    or its parent (``cli.py synth`` output), the OSCD statement for the OSCD folder (it holds
    ``README_OSCD_labels.txt``), else a note that none was declared (pass ``licence``)."""
    root = Path(data_dir)
    for manifest in (root / "synth.json", root.parent / "synth.json"):
        if manifest.is_file():
            declared = json.loads(manifest.read_text())
            return f"Trained on synthetic change pairs made by changewatch synth from {declared['attribution']}"
    if (root / "README_OSCD_labels.txt").is_file():
        return OSCD_LICENCE
    return "Training data licence not declared (train --licence)."


def _initial_network(config: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, ModelSpec]:
    """A fresh network for ``config``, or, with ``init_from``, that checkpoint's network and weights
    (its architecture, fusion and encoder; its band count must match)."""
    licence = config.licence or data_licence(config.data_dir)
    if config.init_from:
        network, base = load_checkpoint(config.init_from)
        if len(base.bands) != len(config.bands):
            raise ModelError(f"--init-from {config.init_from} takes {len(base.bands)} bands per date, "
                             f"the training data {len(config.bands)}")
        spec = ModelSpec(name=config.name, architecture=base.architecture, fusion=base.fusion, encoder=base.encoder,
                         encoder_depth=base.encoder_depth, decoder_channels=base.decoder_channels, bands=config.bands,
                         gsd_m=config.gsd_m, gsd_range_m=config.gsd_range_m, outputs=base.outputs,
                         normalisation=METHOD, licence=f"{licence} Fine-tuned from {base.name}: {base.licence}")
        return network.to(device).train(), spec
    spec = ModelSpec(name=config.name, architecture=config.architecture, fusion=config.fusion, encoder=config.encoder,
                     bands=config.bands, gsd_m=config.gsd_m, gsd_range_m=config.gsd_range_m, outputs=config.outputs,
                     normalisation=METHOD, licence=licence)
    network = build_network(spec)
    if config.encoder_weights == "imagenet":
        if tuple(config.bands) != PRETRAINED_BANDS:
            raise ModelError(f"--encoder-weights imagenet needs the bands {', '.join(PRETRAINED_BANDS)} in that order "
                             f"(--band-names), not {', '.join(config.bands)}")
        source = load_pretrained_encoder(network.encoder, spec.encoder, dates=2 if spec.fusion == "early" else 1)
        spec.licence = f"{spec.licence} Encoder initialised from ImageNet weights: {source}."
    elif config.encoder_weights is not None:
        raise ModelError(f"unknown encoder weights {config.encoder_weights!r}: use imagenet or none")
    return network.to(device).train(), spec


def iterations_for(config: TrainConfig, sites: list[SiteArrays]) -> int:
    """Optimiser steps: ``config.iterations``, or ``config.epochs`` passes over the labelled pixels."""
    if config.epochs is None:
        return config.iterations
    pixels = sum(int((s.label != LABEL_NODATA).sum()) for s in sites)
    return max(1, math.ceil(config.epochs * pixels / (config.batch_size * config.crop ** 2)))


@dataclass
class Progress:
    """What a run has done so far: saved at every validation so that ``resume`` can continue."""

    iteration: int = 0
    running: float = math.nan
    best_f1: float = -1.0
    best_threshold: float = 0.5
    best_metrics: dict[str, Any] = field(default_factory=dict)  # Validation.record of the best step
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    since_best: int = 0
    log: list[dict[str, object]] = field(default_factory=list)
    recent: list[dict[str, torch.Tensor]] = field(default_factory=list)  # the last validated weights (average_last)


def _state_path(config: TrainConfig) -> Path:
    return Path(config.out).with_suffix(".state.pt")


def _save_state(config: TrainConfig, progress: Progress, network: torch.nn.Module, optimiser: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator) -> None:
    """Everything needed to continue the run, written atomically (tensors and plain data only, so
    it loads with ``torch.load(weights_only=True)``)."""
    state = {"progress": asdict(progress), "network": network.state_dict(), "optimiser": optimiser.state_dict(),
             "schedule": schedule.state_dict(), "numpy_rng": json.dumps(rng.bit_generator.state),
             "torch_rng": torch.get_rng_state(), "config": json.dumps(asdict(config))}
    with atomic_write(_state_path(config)) as tmp:
        torch.save(state, tmp)


def _load_state(config: TrainConfig, network: torch.nn.Module, optimiser: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator) -> Progress:
    """Restore a run from ``NAME.state.pt``; returns its progress. Loaded with
    ``torch.load(weights_only=True)``: tensors and plain data only, nothing in the file is executed.
    Raises ModelError when the file is missing, holds pickled objects, is truncated or corrupt, or
    was saved by a run with other settings."""
    path = _state_path(config)
    if not path.exists():
        raise ModelError(f"--resume: no saved training state at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on a foreign pickle protocol: the file is judged below
            state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"--resume: {path} is not a training state changewatch wrote (it holds pickled objects "
                         "other than tensors and plain data, or is not a torch file); it was refused without "
                         "running anything in it. Delete it to train from the start") from exc
    except (OSError, EOFError, RuntimeError, ValueError) as exc:
        raise ModelError(f"--resume: {path} is truncated or corrupt ({type(exc).__name__}); delete it to train "
                         "from the start") from exc
    try:
        saved = json.loads(state["config"])
        changed = [k for k in ("data_dir", "fusion", "encoder", "architecture", "bands", "crop", "batch_size",
                               "iterations", "epochs", "init_from")
                   if saved.get(k) != json.loads(json.dumps(asdict(config)))[k]]
        if changed:
            raise ModelError(f"--resume: {path} was saved by a run with different {', '.join(changed)}")
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        return Progress(**state["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ModelError(f"--resume: {path} does not hold a complete training state of this run "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); delete it to train "
                         "from the start") from exc


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train, validate every ``val_every`` iterations, and save the best checkpoint to ``config.out``.

    Deterministic on the CPU for a given seed. Writes ``NAME.log.csv`` and ``NAME.log.jsonl`` (one
    row per validation) and ``NAME.state.pt`` (to ``resume`` from) beside the checkpoint; stops
    early after ``patience`` validations without a better val F1.
    """
    if is_shipped(config.out) and not config.force:
        raise ModelError(f"{config.out} is a model shipped with changewatch: write elsewhere (default runs/) "
                         "or pass --force to replace it")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    try:
        terms = parse_loss(config.loss)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    train_pairs, val_sets = _split(config)
    outputs = load_spec(config.init_from).outputs if config.init_from else config.outputs
    train_sites = [load_site(s, _pair_options(config), outputs) for s in train_pairs]
    if train_sites[0].x.shape[0] != 2 * len(config.bands):
        raise ModelError(f"{len(config.bands)} band names given ({', '.join(config.bands)}) for "
                         f"{train_sites[0].x.shape[0] // 2} bands per date in the data")
    network, spec = _initial_network(config, device)
    iterations = iterations_for(config, train_sites)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=iterations, pct_start=0.05)
    state = _load_state(config, network, optimiser, schedule, rng) if config.resume else Progress()
    log_path = Path(config.out).with_suffix(".log.csv")
    with writing(log_path.parent):
        log_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(state.iteration + 1, iterations + 1), desc="train", unit="it", disable=not progress,
               initial=state.iteration, total=iterations)
    batches = _batches(train_sites, config, rng, state.iteration)
    for it in bar:
        x, y = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda"):
            logits = network(x.to(device, non_blocking=True))
        loss = change_loss(logits.float(), y.to(device, non_blocking=True), config.pos_weight, terms,
                           config.focal_gamma)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        state.iteration = it
        state.running = loss.item() if math.isnan(state.running) else 0.98 * state.running + 0.02 * loss.item()
        out_of_time = config.max_minutes is not None and time.perf_counter() - start > 60 * config.max_minutes
        if it % config.val_every == 0 or it == iterations or out_of_time:
            row: dict[str, object] = {"iteration": it, "loss": round(state.running, 5),
                                      "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - start, 1)}
            if val_sets:
                checked = _validate(network, spec, device, val_sets, config)
                row.update(val_f1=round(checked.f1, 4), val_threshold=checked.threshold)
                if checked.f1 > state.best_f1:
                    state.best_f1, state.best_threshold, state.best_metrics = checked.f1, checked.threshold, \
                        checked.record
                    state.best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
                    state.since_best = 0
                else:
                    state.since_best += 1
                bar.set_postfix(loss=f"{state.running:.3f}", val_f1=f"{checked.f1:.3f}")
                if config.average_last:
                    snapshot = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
                    state.recent = [*state.recent, snapshot][-config.average_last:]
            state.log.append(row)
            with writing(log_path.parent):
                _write_logs(log_path, state.log)
                _save_state(config, state, network, optimiser, schedule, rng)
            if config.patience and state.since_best >= config.patience or out_of_time:
                break
    averaged = False
    if len(state.recent) > 1:
        averaged = _try_average(state, network, spec, device, val_sets, train_sites, config, rng)
        with writing(log_path.parent):
            _write_logs(log_path, state.log)
    if not state.best_state:  # no validation pairs: keep the last weights at the default threshold
        state.best_state, state.best_threshold = network.state_dict(), 0.5
    network.load_state_dict(state.best_state)
    spec.threshold = state.best_threshold
    spec.metrics = {"val_pooled": state.best_metrics, "val_sites": [p.name for s in val_sets.values() for p in s],
                    **({"val_sets": {name: Path(d).as_posix() for name, d in zip(val_sets, config.val_data)}}
                       if config.val_data else {})}
    spec.training = {"config": asdict(config), "log": log_path.name, "iterations_run": state.iteration,
                     "iterations_planned": iterations, "seconds": round(time.perf_counter() - start, 1),
                     "averaged_weights": averaged, "torch": torch.__version__}
    with writing(config.out):
        path = save_checkpoint(network, spec, config.out)
    return TrainResult(path, state.best_threshold, state.best_metrics, time.perf_counter() - start)


def _try_average(state: Progress, network: torch.nn.Module, spec: ModelSpec, device: torch.device,
                 val: ValSets, sites: list[SiteArrays], config: TrainConfig,
                 rng: np.random.Generator) -> bool:
    """Stochastic weight averaging: the mean of the last validated weights, batch-norm statistics
    re-estimated on 50 training batches, validated like any checkpoint and kept (True) only when
    its val F1 beats the best single checkpoint."""
    floating = [k for k, v in state.recent[0].items() if v.is_floating_point()]
    mean = {**state.recent[-1], **{k: torch.stack([r[k] for r in state.recent]).mean(0) for k in floating}}
    network.load_state_dict(mean)
    batches = (torch.from_numpy(sample_batch(sites, config, rng)[0]) for _ in range(50))
    torch.optim.swa_utils.update_bn(batches, network, device)
    checked = _validate(network, spec, device, val, config)
    state.log.append({"iteration": f"mean of last {len(state.recent)}", "val_f1": round(checked.f1, 4),
                      "val_threshold": checked.threshold})
    if checked.f1 <= state.best_f1:
        return False
    state.best_f1, state.best_threshold, state.best_metrics = checked.f1, checked.threshold, checked.record
    state.best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return True


def _write_logs(path: Path, rows: list[dict[str, object]]) -> None:
    """The validation log as CSV (``path``) and JSON lines (``.jsonl`` beside it), atomically."""
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[-1]).index(k) if k in rows[-1] else 99)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(path.with_suffix(".jsonl")) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
