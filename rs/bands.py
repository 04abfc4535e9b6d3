"""Band identity: which band of BEFORE is compared with which band of AFTER.

A band's *name* is its description (``B04``, ``red``, ``nir``) or its colour interpretation
(``red``, ``green``, ``blue``: RGB exports). Names are compared case-insensitively, ignoring
spaces, ``_``/``-`` and leading zeros of band numbers (``B8`` = ``B08`` = ``b_08``). Alpha bands
are masks, not colour bands (``rs.validity``), and are never compared.

The rule (``choose_bands``):

- without a selection, when both files name all their colour bands the same way (both by
  description, or both by colour interpretation), bands are matched by name: AFTER's are read in
  BEFORE's order; different sets of names are an error. Otherwise bands are compared in file
  order, and both dates must have as many;
- a selection (``--bands``) picks bands by name or by 1-based index in each file; when both files
  name the picked bands and the names are the same set in another order (``--bands 1,2,3,4`` on
  B02..B08 against B08..B02), that is an error, not a comparison of different bands.

What a band *is* (``common_name``): a STAC common name (``blue``, ``nir``, ``swir16``), or a Sentinel-2
band id as Sentinel-2 writes it, two digits (``B02`` is blue, ``B08`` nir, ``B8A`` nir08). Other names
(``band 1``, Landsat's ``B4``, free text) say nothing: a model's check (``models.spec.ModelSpec.check_bands``)
then cannot tell, and the bands go to it in the order compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rasterio.enums import ColorInterp

from changewatch.rs.errors import IncompatibleScenesError
from changewatch.rs.validity import alpha_band, colour_bands

Dataset = Any  # a rasterio DatasetReader or WarpedVRT

UNNAMED_COLOURS = {ColorInterp.undefined, ColorInterp.gray, ColorInterp.palette, ColorInterp.alpha}

# Sentinel-2 MSI band id → the common name of that band (as a Sentinel-2 product's STAC item gives it).
SENTINEL2_COMMON_NAMES = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                          "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                          "B10": "cirrus", "B11": "swir16", "B12": "swir22"}
# STAC ``eo`` common names (STAC 1.1 band common names), and those of the Sentinel-2 bands above.
COMMON_NAMES = frozenset({"coastal", "blue", "green", "red", "yellow", "pan", "rededge", "rededge071", "rededge075",
                          "rededge078", "nir", "nir08", "nir09", "cirrus", "swir16", "swir22", "lwir", "lwir11",
                          "lwir12", *SENTINEL2_COMMON_NAMES.values()})


def name_key(name: str) -> str:
    """A band name as compared: lower case, without spaces, ``_`` or ``-``, numbers without leading zeros.

    Example: ``" B_08 "`` → ``"b8"``.
    """
    key = re.sub(r"[\s_\-]+", "", name.strip().lower())
    return re.sub(r"(?<![0-9])0+(?=[0-9])", "", key)


def common_name(name: str | None) -> str | None:
    """The STAC common name that band name ``name`` stands for, or None when the name does not say.

    A common name itself, compared as ``name_key`` does (``Red``, ``NIR``, ``swir16``), or a Sentinel-2 band
    id written as Sentinel-2 writes it, ``B`` and two digits or ``B8A`` (``B08`` → ``nir``). ``B8`` or ``B4``
    (Landsat writes its bands so, and its B4 is another band) and other names (``band 1``) give None.
    """
    if name is None:
        return None
    key = name_key(name)
    if key in COMMON_NAMES:
        return key
    return SENTINEL2_COMMON_NAMES.get(name.strip().upper())


def band_names(ds: Dataset, source: str) -> dict[int, str] | None:
    """``ds``'s colour bands by 1-based index → name, from ``source`` ("description" or "colour").

    None unless every colour band has a name there and no two names are the same.
    """
    bands = colour_bands(ds)
    if source == "description":
        names = {i: (ds.descriptions[i - 1] or "").strip() for i in bands}
    else:
        names = {i: ds.colorinterp[i - 1].name for i in bands}
        if any(ds.colorinterp[i - 1] in UNNAMED_COLOURS for i in bands):
            return None
    keys = [name_key(n) for n in names.values()]
    if not bands or not all(keys) or len(set(keys)) != len(keys):
        return None
    return names


def shared_names(before: Dataset, after: Dataset) -> tuple[dict[int, str], dict[int, str], str] | None:
    """Both files' band names from the same source, and that source.

    Descriptions first, else colour interpretation; None when no source names both files' bands.
    """
    for source in ("description", "colour"):
        b, a = band_names(before, source), band_names(after, source)
        if b is not None and a is not None:
            return b, a, source
    return None


def select_bands(ds: Dataset, bands: tuple[str, ...], role: str) -> list[int]:
    """1-based band indexes of ``bands`` in ``ds``.

    Each of ``bands`` is a 1-based index ("4") or a band name matched (see ``name_key``) against the
    file's band descriptions ("B08") or colour interpretation ("red"). Picking the alpha band, an
    unknown name or an index out of range raises IncompatibleScenesError.
    """
    by_name = {name_key(c.name): i for i, c in enumerate(ds.colorinterp, start=1) if c not in UNNAMED_COLOURS}
    by_name.update({name_key(d): i for i, d in enumerate(ds.descriptions, start=1) if d and name_key(d)})
    chosen = []
    for band in bands:
        key = str(band).strip()
        index = int(key) if key.isdigit() and 1 <= int(key) <= ds.count else by_name.get(name_key(key))
        if index is None:
            known = ", ".join(d or "?" for d in ds.descriptions)
            raise IncompatibleScenesError(
                f"{role} has no band {key!r}: give 1-based indexes (1..{ds.count}) or names ({known})")
        if index == alpha_band(ds):
            raise IncompatibleScenesError(f"band {index} of {role} is its alpha band, a mask of where the image "
                                          "has data, not a colour band: leave it out of --bands")
        chosen.append(index)
    return chosen


@dataclass(frozen=True)
class BandChoice:
    """The bands compared: 1-based indexes in each file, in comparison order, their names and the rule.

    Names are None where a file does not name them; the rule is the one that paired them.
    """

    before: tuple[int, ...]
    after: tuple[int, ...]
    before_names: tuple[str | None, ...]
    after_names: tuple[str | None, ...]
    rule: str

    def to_dict(self) -> dict[str, object]:
        """JSON form for ``summary.json``: per date, the source band indexes and names compared."""
        def bands(indexes: tuple[int, ...], names: tuple[str | None, ...]) -> list[dict[str, object]]:
            return [{"index": i, "name": n} for i, n in zip(indexes, names, strict=True)]

        return {"rule": self.rule, "before": bands(self.before, self.before_names),
                "after": bands(self.after, self.after_names)}


def _names_of(ds: Dataset, indexes: list[int]) -> tuple[str | None, ...]:
    """The names of ``indexes`` as the file gives them (description, else a colour), None where it has none.

    All from the descriptions or all from the colours when the file names every colour band one way;
    else band by band (an RGB + NIR file's colours name three of its four bands: red, green, blue, —),
    so that the bands it does name are still checked against the model's (``ModelSpec.check_bands``).
    """
    names = band_names(ds, "description") or band_names(ds, "colour")
    if names:
        return tuple(names.get(i) for i in indexes)
    return tuple(_own_name(ds, i) for i in indexes)


def _own_name(ds: Dataset, index: int) -> str | None:
    """Band ``index``'s description, else its colour, else None (an unnamed colour: gray, undefined…)."""
    description = (ds.descriptions[index - 1] or "").strip()
    if description:
        return description
    colour = ds.colorinterp[index - 1]
    return None if colour in UNNAMED_COLOURS else colour.name


def choose_bands(before: Dataset, after: Dataset, bands: tuple[str, ...] | None) -> BandChoice:
    """Pair the bands of BEFORE and AFTER (see the module docstring for the rule).

    Raises IncompatibleScenesError when names show different bands, when counts differ, or for
    an unknown or alpha band in ``bands``.
    """
    named = shared_names(before, after)
    if bands:
        b_idx, a_idx = select_bands(before, bands, "BEFORE"), select_bands(after, bands, "AFTER")
        if named is not None:
            b_keys = [name_key(named[0][i]) if i in named[0] else "" for i in b_idx]
            a_keys = [name_key(named[1][i]) if i in named[1] else "" for i in a_idx]
            if b_keys != a_keys and sorted(b_keys) == sorted(a_keys):
                raise IncompatibleScenesError(
                    f"--bands {','.join(bands)} picks {_listing(named[0], b_idx)} in BEFORE but "
                    f"{_listing(named[1], a_idx)} in AFTER: the same bands in another order; pick them by name")
        rule = "--bands"
    elif named is not None:
        b_names, a_names, source = named
        by_key = {name_key(n): i for i, n in a_names.items()}
        if {name_key(n) for n in b_names.values()} != set(by_key):
            raise IncompatibleScenesError(
                f"BEFORE's bands ({', '.join(b_names.values())}) and AFTER's ({', '.join(a_names.values())}) "
                f"differ (by {source}): pick the bands to compare with --bands "
                "(names, or 1-based indexes in each file)")
        b_idx = list(b_names)
        a_idx = [by_key[name_key(b_names[i])] for i in b_idx]
        rule = f"matched by name ({source})"
    else:
        b_idx, a_idx = colour_bands(before), colour_bands(after)
        if len(b_idx) != len(a_idx):
            raise IncompatibleScenesError(
                f"BEFORE has {len(b_idx)} bands but AFTER has {len(a_idx)}: "
                "both dates must carry the same bands in the same order (or pick them with --bands)")
        rule = "file order (the files do not both name their bands)"
    return BandChoice(tuple(b_idx), tuple(a_idx), _names_of(before, b_idx), _names_of(after, a_idx), rule)


def _listing(names: dict[int, str], indexes: list[int]) -> str:
    return ",".join(names.get(i, "?") for i in indexes)


OFFSET_TAGS = ("PROCESSING_BASELINE", "BOA_ADD_OFFSET", "RADIO_ADD_OFFSET", "BOA_QUANTIFICATION_VALUE")
RADIOMETRY_NOTE = ("each date is normalised on its own statistics (rs.normalize), so per-band gains and offsets — "
                   "Sentinel-2 processing baseline 04.00's +1000 DN, GDAL scales and offsets — are not change and "
                   "are not applied to raster files (a STAC item's are: inputs.intake)")


def radiometry(ds: Dataset, bands: tuple[int, ...]) -> dict[str, object]:
    """A file's radiometric metadata for the record.

    Sentinel-2 processing-baseline tags (of the dataset or of ``bands``) and GDAL scales/offsets
    of ``bands`` other than 1 and 0.
    """
    tags = {k: v for k, v in ds.tags().items() if k.upper() in OFFSET_TAGS}
    for i in bands:
        tags.update({f"{k}[{i}]": v for k, v in ds.tags(i).items() if k.upper() in OFFSET_TAGS})
    scaled = {i: (ds.scales[i - 1], ds.offsets[i - 1]) for i in bands
              if (ds.scales[i - 1], ds.offsets[i - 1]) != (1, 0)}
    return {"tags": tags, "scale_offset": {str(i): list(v) for i, v in scaled.items()}}

