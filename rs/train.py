"""Train the change network on labelled sites (the OSCD layout) and pick its threshold on val.

Sites are small (about 1 Mpx each), so each is aligned and normalised once with the same code
as inference (``rs.align`` + ``rs.normalize``) and kept in memory; training draws random crops,
half of them centred on a change pixel because change covers only a few percent of the ground.
Every ``val_every`` iterations the network runs over the validation sites through the real
tiled inference path; the checkpoint kept is the one with the best pooled val F1, with the
threshold that achieved it.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from models.changenet import ModelSpec, build_network, save_checkpoint
from rs.align import AlignedPair
from rs.atomic import atomic_write
from rs.errors import ModelError
from rs.evaluate import LABEL_NODATA, evaluate, find_sites
from rs.infer import ChangeModel, InferenceConfig, model_input, resolve_device
from rs.normalize import METHOD, pair_stats_from_arrays

OSCD_TRAIN = ("abudhabi", "aguasclaras", "beihai", "bercy", "bordeaux", "mumbai", "paris", "pisa", "rennes", "saclay_e")
OSCD_VAL = ("beirut", "cupertino", "hongkong", "nantes")
OSCD_LICENCE = (
    "Trained on the Onera Satellite Change Detection dataset (Caye Daudt et al., IGARSS 2018): "
    "modified Copernicus Sentinel data 2015-2018; change labels CC BY-NC-SA 4.0, so these weights "
    "carry CC BY-NC-SA 4.0 (non-commercial; contact the dataset authors for commercial use)."
)


@dataclass
class TrainConfig:
    """One training run. Paths are strings so the config serialises into the checkpoint."""

    data_dir: str
    out: str
    train_sites: tuple[str, ...] = OSCD_TRAIN
    val_sites: tuple[str, ...] = OSCD_VAL
    name: str = "changewatch-rgbn"
    encoder: str = "mobilenet_v2"
    bands: tuple[str, ...] = ("blue", "green", "red", "nir")  # what the model's input bands are (its spec)
    select: tuple[str, ...] | None = None  # which bands of the site files feed them (None: all, in order)
    gsd_m: float = 10.0
    crop: int = 128
    batch_size: int = 8
    iterations: int = 6000
    lr: float = 1e-3
    pos_weight: float = 10.0
    val_every: int = 500
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    licence: str = OSCD_LICENCE


@dataclass
class SiteArrays:
    """A training site in memory: model input (2×bands, H, W) and label (H, W; 255 = ignore)."""

    name: str
    x: np.ndarray
    label: np.ndarray
    positives: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.positives = np.argwhere(self.label == 1)


def load_site(site: Path, select: tuple[str, ...] | None = None) -> SiteArrays:
    """Align, normalise (as at inference) and load one site; unlabelled or invalid pixels → 255.

    ``select``: the bands of the site's files to use, by 1-based index or name (None: all)."""
    with AlignedPair(site / "before.tif", site / "after.tif", select) as pair:
        whole = Window(0, 0, pair.grid.width, pair.grid.height)
        w = pair.read(whole)
        label = pair.reader_for(site / "change.tif", "label", fill=LABEL_NODATA).read([1], whole, with_valid=False)[0][0]
    label = np.where(w.valid, label, LABEL_NODATA).astype(np.uint8)
    stats = pair_stats_from_arrays(w.before, w.after, w.valid)
    return SiteArrays(site.name, model_input(w.before, w.after, w.valid, stats), label)


def _crop_origin(site: SiteArrays, crop: int, rng: np.random.Generator, centre_on_change: bool) -> tuple[int, int]:
    h, w = site.label.shape
    if centre_on_change and len(site.positives):
        r, c = site.positives[rng.integers(len(site.positives))]
        r0, c0 = r - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), c - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1)
    else:
        r0, c0 = rng.integers(0, max(1, h - crop + 1)), rng.integers(0, max(1, w - crop + 1))
    return int(np.clip(r0, 0, max(0, h - crop))), int(np.clip(c0, 0, max(0, w - crop)))


def sample_batch(sites: list[SiteArrays], config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A batch of augmented crops: x (N, 2×bands, crop, crop) float32, y (N, crop, crop) uint8.

    Augmentation: a random dihedral transform (rot90 × flip) shared by both dates, and an
    independent gain/offset jitter per date (radiometric differences between acquisitions).
    Crops smaller than ``crop`` (tiny sites) are padded with ignored pixels.
    """
    weights = np.array([s.label.size for s in sites], dtype=float)
    nb = len(config.bands)
    xs, ys = [], []
    for _ in range(config.batch_size):
        site = sites[rng.choice(len(sites), p=weights / weights.sum())]
        r0, c0 = _crop_origin(site, config.crop, rng, centre_on_change=rng.random() < 0.5)
        x = site.x[:, r0:r0 + config.crop, c0:c0 + config.crop]
        y = site.label[r0:r0 + config.crop, c0:c0 + config.crop]
        ph, pw = config.crop - y.shape[0], config.crop - y.shape[1]
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
            y = np.pad(y, ((0, ph), (0, pw)), constant_values=LABEL_NODATA)
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        gain = 1.0 + rng.normal(0.0, 0.1, size=2).repeat(nb)[:, None, None]
        offset = rng.normal(0.0, 0.1, size=2).repeat(nb)[:, None, None]
        xs.append((x * gain + offset).astype(np.float32))
        ys.append(np.ascontiguousarray(y))
    return np.stack(xs), np.stack(ys)


def change_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Weighted BCE + soft Dice of the change class over labelled pixels (target 255 ignored)."""
    logits = logits[:, 0]
    keep = target != LABEL_NODATA
    t = (target == 1).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[keep], t[keep], pos_weight=torch.tensor(pos_weight, device=logits.device))
    p = torch.sigmoid(logits) * keep
    dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return bce + dice


@dataclass
class TrainResult:
    """Where the checkpoint went and how good it was on val (pooled, at its chosen threshold)."""

    checkpoint: Path
    threshold: float
    val: dict[str, object]
    seconds: float


def _validate(network: torch.nn.Module, spec: ModelSpec, device: torch.device, val: list[Path],
              select: tuple[str, ...] | None) -> tuple[float, dict[str, object]]:
    model = ChangeModel(network, spec, device)
    report = evaluate(val, model, threshold=0.5, config=InferenceConfig(tile=256, overlap=64), bands=select)
    threshold, pooled = report.histogram.best_threshold()
    return threshold, pooled.metrics()


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train, validate every ``val_every`` iterations, and save the best checkpoint to ``config.out``."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    train_sites = [load_site(s, config.select) for s in find_sites(config.data_dir, list(config.train_sites))]
    if train_sites[0].x.shape[0] != 2 * len(config.bands):
        raise ModelError(f"{len(config.bands)} band names given ({', '.join(config.bands)}) for "
                         f"{train_sites[0].x.shape[0] // 2} bands per date in the data")
    val_sites = find_sites(config.data_dir, list(config.val_sites)) if config.val_sites else []
    spec = ModelSpec(name=config.name, encoder=config.encoder, bands=config.bands, gsd_m=config.gsd_m,
                     normalisation=METHOD, licence=config.licence)
    network = build_network(spec).to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.iterations, pct_start=0.05)
    best: tuple[float, float, dict[str, object], dict[str, torch.Tensor]] | None = None
    log_path = Path(config.out).with_suffix(".log.csv")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_rows: list[dict[str, object]] = []
    running = math.nan
    bar = tqdm(range(1, config.iterations + 1), desc="train", unit="it", disable=not progress)
    for it in bar:
        x, y = sample_batch(train_sites, config, rng)
        loss = change_loss(network(torch.from_numpy(x).to(device)), torch.from_numpy(y).to(device), config.pos_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
        if it % config.val_every == 0 or it == config.iterations:
            row: dict[str, object] = {"iteration": it, "loss": round(running, 5), "seconds": round(time.perf_counter() - start, 1)}
            if val_sites:
                threshold, metrics = _validate(network, spec, device, val_sites, config.select)
                row.update(val_f1=round(float(metrics["f1"]), 4), val_threshold=threshold)
                if best is None or float(metrics["f1"]) > best[0]:
                    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
                    best = (float(metrics["f1"]), threshold, metrics, state)
                bar.set_postfix(loss=f"{running:.3f}", val_f1=f"{float(metrics['f1']):.3f}")
            log_rows.append(row)
            _write_log(log_path, log_rows)
    if best is None:  # no validation sites: keep the last weights at the default threshold
        best = (math.nan, 0.5, {}, network.state_dict())
    _, threshold, metrics, state = best
    network.load_state_dict(state)
    spec.threshold = threshold
    spec.metrics = {"val_pooled": metrics, "val_sites": list(config.val_sites)}
    spec.training = {"config": asdict(config), "log": log_path.name,
                     "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
    path = save_checkpoint(network, spec, config.out)
    return TrainResult(path, threshold, metrics, time.perf_counter() - start)


def _write_log(path: Path, rows: list[dict[str, object]]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[-1]).index(k) if k in rows[-1] else 99)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
