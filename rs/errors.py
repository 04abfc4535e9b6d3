"""Exceptions for the user mistakes changewatch can diagnose, each with its CLI exit code.

One exception type per kind of mistake, so the CLI can map it to a documented exit code and a
notebook user can catch exactly what they expect. Messages are one line a user can act on.

Exit codes (also listed in ``README.md``):

====  ==========================  =====================================================
code  exception                   meaning
====  ==========================  =====================================================
1     (any other exception)       a bug: please report it with the traceback
2     (click usage error)         wrong options or arguments on the command line;
      OptionError                 an option's value that cannot be used (``export --since``
                                  not a YYYY-MM-DD date, or given for a run folder);
      SchedulerError              a ``--scheduler`` address where no Dask scheduler answers
3     InputFileError              a file is missing, unreadable or not a raster/vector;
                                  a malformed settings (--columns) file or manifest;
      ProductError                a Sentinel-2 product that cannot be read (L1C, a band missing);
      InputChangedError           a run's scene file changed since the run (its checksum differs)
4     IncompatibleScenesError     the scenes cannot be compared (no overlap, not located,
                                  different bands, too small or too large for a run)
5     LayerError                  a vector layer lacks a CRS or a required column, is not
                                  polygons, holds unreadable dates or values, or is
                                  ambiguous (several layers, none chosen);
      DecisionError               a review decision that is not confirm, dismiss or
                                  needs_visit, or lacks its reviewer or timestamp
6     ModelError                  a checkpoint is missing, unsafe, or does not fit the input
7     (batch)                     a batch finished, but some of its jobs failed
8     OutputError                 outputs cannot be written (permission denied, read-only
                                  or full disk, OUTDIR holds files changewatch did not write)
====  ==========================  =====================================================
"""

from __future__ import annotations


class ChangewatchError(Exception):
    """Base class of every error changewatch reports to a user instead of a traceback."""

    exit_code: int = 1


class OptionError(ChangewatchError):
    """A command-line option's value that cannot be used, reported in one line (exit code 2, as usage errors).

    A date that is not ISO ``YYYY-MM-DD``, or an option the input given does not take (``export
    --since`` of a run folder rather than a monitor store).
    """

    exit_code = 2


class SchedulerError(OptionError):
    """No Dask scheduler answers at the ``batch --scheduler`` address (exit code 2); nothing was written."""


class InputFileError(ChangewatchError):
    """A file is missing, unreadable, corrupt, or not the kind of file expected."""

    exit_code = 3


class ManifestError(InputFileError):
    """A batch manifest is unreadable, lacks a column, or lists an area twice."""


class IncompatibleScenesError(ChangewatchError):
    """BEFORE and AFTER cannot be compared.

    No overlap, no location (CRS, GCPs), different bands, or a common grid too small for the model
    or too large for one run.
    """

    exit_code = 4


class LayerError(ChangewatchError):
    """A vector layer (permits, zoning, parcels) cannot be used as given.

    It lacks a CRS or a required column, holds points or lines, dates or values that cannot be
    read, or several layers of which none was chosen.
    """

    exit_code = 5


class DecisionError(LayerError, ValueError):
    """A review decision that cannot be recorded or read (``rs.decisions``).

    Its word is not one of confirm, dismiss, needs_visit, it lacks its reviewer or its timestamp
    (ISO 8601 with a UTC offset), or it names a flag the run does not have. Also a ValueError.
    """


class ModelError(ChangewatchError):
    """A model checkpoint is missing, malformed, or does not match the input bands."""

    exit_code = 6


class OutputError(ChangewatchError):
    """Outputs cannot be written; the output folder is left as it was.

    Permission denied, a read-only or full disk, or an output folder that a run may not replace
    (it holds files changewatch did not write, or the run's inputs).
    """

    exit_code = 8


BATCH_JOBS_FAILED = 7


class StacItemError(InputFileError):
    """A STAC item or collection that cannot be read as a scene (exit code 3).

    Not STAC JSON, an asset missing, or what its values mean cannot be decided (a Sentinel-2 item without a
    processing baseline, a date range longer than a day).
    """


class ProductError(InputFileError):
    """A Sentinel-2 product (``.SAFE`` folder, zipped, or its ``MTD_MSIL2A.xml``) that cannot be read as a scene.

    Exit code 3. Its metadata missing, unreadable or lacking a field a scene needs (processing baseline, datatake
    sensing start), a band file it lists missing, an L1C product (L2A only: no SCL, another offset), or a GDAL
    ``SENTINEL2_L2A:`` subdataset name given instead of the product.
    """


class InputChangedError(InputFileError):
    """A file a run read has other content now than when the run read it (exit code 3).

    Its checksum differs from the one the run recorded in ``summary.json`` (``rs.runinputs``): what was
    found from it no longer matches it, so the run must be done again.
    """
