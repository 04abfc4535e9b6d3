"""The ``synth`` command: synthetic VHR change pairs from single-date imagery with building footprints."""

from __future__ import annotations

import json

import click

from changewatch.rs.commands.options import defaults, quiet_opt, reports_errors
from changewatch.rs.synth.config import SynthConfig

SYNTH = defaults(SynthConfig)


@click.command()
@click.option("--source", type=click.Path(file_okay=False), required=True,
              help="Single-date VHR imagery with building polygons: folders of OAM-<x>-<y>-<z>.png web-map tiles "
                   "with a labels.geojson, and/or oam/*.tif chips beside osm/*.geojson (e.g. "
                   "../shared/data/vhr-buildings).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write: train/ and val/ with A/, B/, label/ PNGs (the LEVIR-CD layout train and "
                   "evaluate read) and synth.json.")
@click.option("--gsd", default=",".join(f"{v:g}" for v in dict.fromkeys(SYNTH["gsd_m"])), show_default=True,
              help="Ground sampling distance in metres: one value (0.5), or low,high (0.3,1.0) for a GSD per pair "
                   "drawn log-uniformly in that range.")
@click.option("--pairs", type=click.IntRange(1), default=SYNTH["pairs_per_area"], show_default=True,
              help="Pairs per area (every usable area, the val area included). About 240 kB a pair at 256²: "
                   "240 MB per 1,000 pairs.")
@click.option("--chip", type=click.IntRange(32), default=SYNTH["chip"], show_default=True,
              help="Side of every image, pixels. Areas whose imagery is smaller than one chip are skipped.")
@click.option("--seed", type=int, default=SYNTH["seed"], show_default=True,
              help="Seed: the same seed and options give byte-identical files.")
@click.option("--val-area", default=SYNTH["val_area"], show_default=True,
              help="The area (town) kept out of training, whose pairs make val/: zanzibar, kampala, banepa, "
                   "catanduanes or nairobi.")
@click.option("--nuisance-only", type=click.FloatRange(0.0, 1.0), default=SYNTH["nuisance_only"], show_default=True,
              help="Share of pairs with nothing but nuisance change (empty labels).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=SYNTH["image_quality"],
              help="Write the images (A/, B/) as JPEG of this quality, about 5× smaller than the default lossless "
                   "PNG; labels stay PNG.")
@quiet_opt
@reports_errors
def synth(source: str, out: str, gsd: str, pairs: int, chip: int, seed: int, val_area: str, nuisance_only: float,
          jpeg_quality: int | None, quiet: bool) -> None:
    """Make synthetic VHR change pairs from single-date imagery with building footprints.

    Buildings are removed from BEFORE (appear), from AFTER (disappear) or cut from elsewhere and
    pasted with a shadow into AFTER (paste), or several at once (mix); labels are exactly those
    footprints. Each date also gets unlabelled nuisance change: season, colour and illumination, a
    greyscale date, haze, shadows, misregistration up to ±2 px, blur, resampling, noise, JPEG, soil
    <-> paving. Output: the LEVIR-CD layout, for train --data OUT/train and evaluate --data OUT/val.
    Licences: imagery © OpenAerialMap contributors, CC BY 4.0; footprints © OpenStreetMap
    contributors, ODbL 1.0 (recorded in OUT/synth.json).
    """
    from changewatch.rs.synth.config import SynthConfig, parse_gsd
    from changewatch.rs.synth.generate import generate

    try:
        config = SynthConfig(source=source, out=out, gsd_m=parse_gsd(gsd), chip=chip, pairs_per_area=pairs,
                             seed=seed, val_area=val_area, nuisance_only=nuisance_only, image_quality=jpeg_quality)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    result = generate(config, progress=not quiet)
    counts = json.loads(result.manifest.read_text())["counts"]
    click.echo(f"wrote {counts['train']['pairs']} train and {counts['val']['pairs']} val pairs to {result.out}"
               + (f" (too small for one chip, skipped: {', '.join(result.skipped)})" if result.skipped else ""))
