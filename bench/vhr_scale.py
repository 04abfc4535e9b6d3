"""Very-high-resolution input to a 10 m model: compare at the model's GSD, or at the imagery's own?

    .venv/bin/python bench/vhr_scale.py [--data ../shared/data/oscd] [--factors 1 4] [--bands 3,2,1]

No VHR change labels exist here, so this measures the *scale* half of the question: each OSCD val
city is upsampled by each factor (bilinear imagery, nearest labels: 10 m → 2.5 m at 4×) into a
temporary site folder and evaluated with the shipped model for those bands, once with ``--gsd
native`` (the network sees buildings 4× larger than it learnt) and once with ``--gsd auto``
(compared on a grid at the model's 10 m GSD, as detect does by default). Prints pooled pixel F1
and object recall for each. Real VHR imagery also has detail and sensors the model never saw;
that half needs a city's own labels (``train --init-from``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.enums import Resampling

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.models.spec import choose_model  # noqa: E402
from changewatch.rs.config import EvalOptions, InferenceConfig  # noqa: E402
from changewatch.rs.evaluate import evaluate, find_sites  # noqa: E402
from changewatch.rs.infer import ChangeModel  # noqa: E402
from changewatch.rs.training.config import OSCD_VAL  # noqa: E402


def upsample(src_path: Path, dst_path: Path, factor: int, resampling: Resampling) -> None:
    """Write ``src_path`` with pixels ``factor`` times smaller (same ground, same CRS)."""
    with rasterio.open(src_path) as src:
        data = src.read(out_shape=(src.count, src.height * factor, src.width * factor), resampling=resampling)
        profile = {**src.profile, "width": src.width * factor, "height": src.height * factor,
                   "transform": src.transform * Affine.scale(1 / factor)}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "oscd"))
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--bands", default="3,2,1")
    args = parser.parse_args()
    bands = tuple(args.bands.split(","))
    model = ChangeModel.load(choose_model(None, len(bands), 10.0).path, "cpu")
    print(f"model {model.spec.name} (trained at {model.spec.gsd_m:g} m), bands {args.bands}, OSCD val cities\n")
    print("| pixel size | --gsd | pooled F1 | precision | recall | object recall (≥ 200 m²) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            root = Path(tmp) / f"x{factor}"
            for site in find_sites(args.data, list(OSCD_VAL)):
                (root / site.name).mkdir(parents=True)
                upsample(site.before, root / site.name / "before.tif", factor, Resampling.bilinear)
                upsample(site.after, root / site.name / "after.tif", factor, Resampling.bilinear)
                upsample(site.label, root / site.name / "change.tif", factor, Resampling.nearest)
            for gsd in (("native", "auto") if factor > 1 else ("native",)):
                report = evaluate(find_sites(root), model, EvalOptions(bands=bands, gsd=gsd),
                                  InferenceConfig(device="cpu"))
                c = report.pooled
                print(f"| {model.spec.gsd_m / factor:g} m | {gsd} | {c.f1:.3f} | {c.precision:.3f} | {c.recall:.3f} "
                      f"| {report.objects.recall:.3f} ({report.objects.hit}/{report.objects.total}) |", flush=True)


if __name__ == "__main__":
    main()
