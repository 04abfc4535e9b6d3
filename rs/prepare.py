"""Prepare a scene pair for a model: decide everything first, then open the pair once.

Every command that runs a model on a pair (detect, evaluate, batch) and training (``load_site``)
prepares it here, in this order, on the pair as it first opens (its grid; nothing is warped or
read but the co-registration windows):

1. which model (``models.spec.choose_model``: by band count and GSD), unless one is given;
2. the grid the model sees: the model's GSD for imagery outside the GSDs it serves
   (``rs.grid.grid_for_gsd``, only without a user grid), and whether the model takes the pair
   (bands: as many, and where their names say what they are, the model's in its order;
   grid size: ``ModelSpec.check_bands``, ``ModelSpec.check_grid``);
3. AFTER's residual shift on that grid (``rs.coregister.correction``), when asked for.

The result, ``PreparedPair``, is plain data: its ``source`` opens the pair as decided
(``with prepared.open() as pair:``), in this process, in a reader thread or in a Dask task on
another machine. The probe pairs opened to decide are closed before it is returned, whatever
happens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from changewatch.models.spec import ModelChoice, ModelSpec, choose_model, load_spec
from changewatch.rs.align import AlignedPair, PairSource
from changewatch.rs.config import PairOptions
from changewatch.rs.coregister import Coregistration, correction
from changewatch.rs.errors import IncompatibleScenesError
from changewatch.rs.grid import Grid, GridSpec, grid_for_gsd

SpecReader = Callable[[Path], ModelSpec]


@dataclass(frozen=True)
class PreparedPair:
    """A pair ready for its model: what opens it, its band count, the model, the checkpoint and the shift.

    ``source`` opens it on the grid the model sees (``grid``) with AFTER moved by the measured
    shift; ``band_count``: bands compared per date; ``spec``: the model it was prepared for (None:
    none); ``choice``: which checkpoint and why (None when the model was given as a spec);
    ``coregistration``: what was measured (None when not asked for).
    """

    source: PairSource
    grid: Grid
    band_count: int
    spec: ModelSpec | None = None
    choice: ModelChoice | None = None
    coregistration: Coregistration | None = None

    def open(self) -> AlignedPair:
        """The pair, open as prepared (a context manager: close it when done)."""
        return self.source.open()


def choose_for(pair: AlignedPair, model: str | os.PathLike[str] | None) -> ModelChoice:
    """The checkpoint for an open pair: ``model`` when given, else the shipped model for it.

    The shipped model for its band count and GSD (``models.spec.choose_model``).
    """
    return choose_model(model, pair.band_count, pair.grid.pixel_size_m())


def prepare_pair(before: Path | str, after: Path | str, options: PairOptions, model: ModelSpec | None = None, *,
                 masks: tuple[str, ...] = (), pixel_size_m: float | None = None) -> PreparedPair:
    """BEFORE and AFTER prepared for ``model`` as ``options`` say (see the module docstring).

    ``options``: bands, grid, validity rule, GSD policy, co-registration; with cloud or invalid
    ``masks`` and, for plain images, their ``pixel_size_m`` (``rs.align.AlignedPair``). Without a
    model, the pair keeps its grid and only the shift is measured (training data, compared at its
    own pixels). Raises the ChangewatchError of the first problem found: files (InputFileError),
    scenes that cannot be compared (IncompatibleScenesError), a model that does not take them
    (ModelError, IncompatibleScenesError).
    """
    source = PairSource.of(before, after, options, masks, pixel_size_m)
    with source.open() as probe:
        return _prepare(probe, source, options, model, None)


def prepare_for_model(before: Path | str, after: Path | str, options: PairOptions,
                      model: str | os.PathLike[str] | None, *, masks: tuple[str, ...] = (),
                      spec_of: SpecReader = load_spec, georeferenced: bool = False) -> PreparedPair:
    """BEFORE and AFTER prepared (as ``prepare_pair`` does) for ``model``, or the shipped model that fits them.

    ``model`` is a checkpoint; when it is None, the shipped model that fits them (``choose_for``).
    ``spec_of`` reads a checkpoint's metadata (a ``ModelCache``'s, so that a cached or fixed model
    is used). ``georeferenced``: plain images (no CRS) are an IncompatibleScenesError (they can be
    evaluated, not mapped).
    """
    source = PairSource.of(before, after, options, masks)
    with source.open() as probe:
        if georeferenced and probe.plain:
            raise IncompatibleScenesError("detect needs georeferenced scenes: plain images (no CRS) can be "
                                          "evaluated but not mapped")
        choice = choose_for(probe, model)
        return _prepare(probe, source, options, spec_of(choice.path), choice)


def _prepare(probe: AlignedPair, source: PairSource, options: PairOptions, spec: ModelSpec | None,
             choice: ModelChoice | None) -> PreparedPair:
    """The model's grid decided on ``probe`` (``source`` opened on its own grid); then the shift.

    The shift is then measured on the pair opened on that grid.
    """
    regrid = None
    if spec is not None:
        spec.check_bands(probe.band_count, probe.band_choice, options.bands)
        if source.grid == GridSpec():
            regrid = grid_for_gsd(probe.grid, spec.gsd_m, options.gsd, spec.serves_gsd_m)
    if regrid is None:
        return _finish(probe, source, options, spec, choice)
    source = replace(source, grid=regrid)
    with source.open() as pair:
        return _finish(pair, source, options, spec, choice)


def _finish(pair: AlignedPair, source: PairSource, options: PairOptions, spec: ModelSpec | None,
            choice: ModelChoice | None) -> PreparedPair:
    """Check the grid the model sees and measure AFTER's shift on it."""
    if spec is not None:
        spec.check_grid(pair.grid)
    found = correction(pair) if options.coregister else None
    shift = found.shift(pair.grid) if found is not None else None
    if shift is not None:
        source = replace(source, after_shift=shift)
    return PreparedPair(source, pair.grid, pair.band_count, spec, choice, found)
