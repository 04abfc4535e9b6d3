"""A montage of random pairs of a LEVIR-CD-layout folder (e.g. a ``cli.py synth`` set), to look at.

    .venv/bin/python bench/synth_montage.py runs/synth-0.5 -o runs/synth-0.5-montage.png [--pairs 12] [--seed 0]

Each row is one pair: BEFORE | AFTER | label | AFTER with the label's outline in magenta, with the
pair's name, kind and GSD from synth.json when there is one. Pairs are drawn at random from
``train/`` and ``val/`` (or the folder itself when it holds A/, B/, label/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _pairs(root: Path) -> list[tuple[Path, Path, Path]]:
    splits = [root] if (root / "A").is_dir() else [root / s for s in ("train", "val") if (root / s / "A").is_dir()]
    return [(a, split / "B" / a.name, split / "label" / a.name) for split in splits
            for a in sorted((split / "A").glob("*.png"))]


def _row(paths: tuple[Path, Path, Path], caption: str, side: int) -> np.ndarray:
    before, after, label = (np.asarray(Image.open(p).convert("RGB")) for p in paths)
    edge = cv2.morphologyEx((label[..., 0] > 127).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    outlined = after.copy()
    outlined[edge] = (255, 0, 255)
    tiles = [cv2.resize(t, (side, side), interpolation=cv2.INTER_NEAREST) for t in (before, after, label, outlined)]
    gap = np.full((side, 6, 3), 255, np.uint8)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    bar = np.full((18, row.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", type=int, default=256, help="pixels per image in the montage")
    args = parser.parse_args()
    manifest = args.folder / "synth.json"
    records = {p["name"]: p for p in json.loads(manifest.read_text())["pairs"]} if manifest.exists() else {}
    pairs = _pairs(args.folder)
    chosen = np.random.default_rng(args.seed).choice(len(pairs), size=min(args.pairs, len(pairs)), replace=False)
    rows = []
    for i in sorted(chosen):
        name = pairs[i][0].stem
        r = records.get(name, {})
        caption = f"{name}  {r.get('kind', '')} {r.get('changed', '')}  {r.get('gsd_m', '')} m  " \
                  f"A:{','.join(r.get('nuisance_before', []))}  B:{','.join(r.get('nuisance_after', []))}"
        rows.append(_row(pairs[i], caption, args.side))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
