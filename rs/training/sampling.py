"""Training data in memory and the batches drawn from it.

Whole pairs are prepared once, as at inference, and random augmented crops drawn from them, half
of them centred on change (change covers only a few percent of the ground), the others anywhere in
a site whose every pixel is labelled, else centred on a labelled pixel: a site labelled only here
and there (reviewed flags, ``cli.py labels``) still gives crops with labels. Sites are drawn in
proportion to their labelled pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from rasterio.windows import Window

from changewatch.rs.config import PairOptions
from changewatch.rs.datasets import LABEL_NODATA, LabelledPair, read_whole
from changewatch.rs.errors import InputFileError
from changewatch.rs.infer import model_input
from changewatch.rs.normalize import pair_stats_from_arrays, recorded_stats
from changewatch.rs.prepare import prepare_pair
from changewatch.rs.training.config import TrainConfig


@dataclass
class SiteArrays:
    """A training site in memory.

    Model input (2×bands, H, W) and labels (outputs, H, W; 1 yes, 0 no, 255 ignore), change first.
    ``positives``: (row, col) of the change pixels; ``labelled``: flat indices (row × W + col) of the
    pixels whose change is labelled, None when all are (memory: 4 bytes per labelled pixel, only for
    sites with unlabelled pixels).
    """

    name: str
    x: np.ndarray
    label: np.ndarray
    positives: np.ndarray = field(init=False)
    labelled: np.ndarray | None = field(init=False)

    def __post_init__(self) -> None:
        self.positives = np.argwhere(self.label[0] == 1)
        known = self.label[0] != LABEL_NODATA
        flat = np.flatnonzero(known) if not known.all() else None
        self.labelled = flat.astype(np.int32) if flat is not None and known.size < 2 ** 31 else flat

    @property
    def labelled_pixels(self) -> int:
        """How many pixels have a change label."""
        return int(self.label[0].size if self.labelled is None else len(self.labelled))


def load_site(site: LabelledPair, options: PairOptions = PairOptions(),
              outputs: tuple[str, ...] = ("change",)) -> SiteArrays:
    """Prepare, normalise and load one labelled pair with the labels of each of ``outputs``.

    Prepared by ``rs.prepare``: aligned and co-registered as at inference, at the data's own
    pixels. Unlabelled or invalid pixels → 255. ``options``: the bands of the pair's files used (by
    1-based index or name; None: all), co-registration, whether pixels 0 in every band are data
    (``rs.validity``). Each date is normalised on the statistics its file records (a ``labels``
    site: those of the run's whole scene, ``rs.normalize.recorded_stats``), else on the site's own.
    """
    prepared = prepare_pair(site.before, site.after, options)
    with prepared.open() as pair:
        w = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
        labels = np.stack([read_whole(pair, reader) for reader in site.output_labels(pair, outputs)])
        stats = recorded_stats(pair) or pair_stats_from_arrays(w.before, w.after, w.valid)
    labels = np.where(w.valid, labels, LABEL_NODATA).astype(np.uint8)
    return SiteArrays(site.name, model_input(w.before, w.after, w.valid, stats), labels)


def _crop_origin(site: SiteArrays, crop: int, rng: np.random.Generator, centre_on_change: bool) -> tuple[int, int]:
    h, w = site.label.shape[1:]
    if centre_on_change and len(site.positives):
        r, c = site.positives[rng.integers(len(site.positives))]
    elif site.labelled is not None and len(site.labelled):  # a partly labelled site: on a labelled pixel
        r, c = divmod(int(site.labelled[rng.integers(len(site.labelled))]), w)
    else:
        r0, c0 = rng.integers(0, max(1, h - crop + 1)), rng.integers(0, max(1, w - crop + 1))
        return int(np.clip(r0, 0, max(0, h - crop))), int(np.clip(c0, 0, max(0, w - crop)))
    r0 = r - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1)
    c0 = c - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1)
    return int(np.clip(r0, 0, max(0, h - crop))), int(np.clip(c0, 0, max(0, w - crop)))


def _zoom(x: np.ndarray, y: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a (C, h, w) crop and its (outputs, h, w) labels to crop × crop.

    Bilinear for the image, nearest for the labels (so 255 stays 'ignore').
    """
    xt = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(x))[None], size=(crop, crop),
                                         mode="bilinear", align_corners=False)[0].numpy()
    rows = (np.arange(crop) * y.shape[1] / crop).astype(int)
    cols = (np.arange(crop) * y.shape[2] / crop).astype(int)
    return xt, y[:, rows[:, None], cols[None, :]]


def sample_batch(sites: list[SiteArrays], config: TrainConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A batch of augmented crops: x (N, 2×bands, crop, crop) float32, y (N, outputs, crop, crop) uint8.

    Augmentation (each switchable in TrainConfig): a random zoom of the crop (multi-scale), a
    random dihedral transform (rot90 × flip) shared by both dates, an independent gain/offset
    jitter per date (radiometric differences between acquisitions) and optionally per band
    (``band_jitter``: spectral differences between sensors), and a random shift of AFTER
    by up to ``shift_px`` pixels (the misregistration real pairs have). Crops smaller than ``crop``
    (tiny sites) are padded with ignored pixels.
    """
    weights = np.array([s.labelled_pixels for s in sites], dtype=float)
    if not weights.sum():
        raise InputFileError(f"no labelled pixel in the training pairs ({', '.join(s.name for s in sites)})")
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


def batches(sites: list[SiteArrays], config: TrainConfig, rng: np.random.Generator,
             start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches, drawn in this process or sampled ahead by worker processes.

    Drawn from ``rng`` in this process (``loader_workers`` 0: every run with the same seed sees the
    same batches, resumed runs too), or sampled ahead by worker processes seeded from (seed,
    ``start`` iteration, worker), which keeps a GPU fed but is reproducible only for the same
    worker count and no resume.
    """
    if config.loader_workers == 0:
        while True:
            x, y = sample_batch(sites, config, rng)
            yield torch.from_numpy(x), torch.from_numpy(y)
    loader = torch.utils.data.DataLoader(_BatchStream(sites, config, (config.seed, start)), batch_size=None,
                                         num_workers=config.loader_workers, pin_memory=torch.cuda.is_available(),
                                         prefetch_factor=4, persistent_workers=True)
    yield from loader
