"""changewatch: find new construction in satellite imagery and flag what has no permit.

One import package, mapped from the repository's folders: ``changewatch.rs`` (the library, one
module per stage of the data flow), ``changewatch.models`` (network definitions, shipped weights
and model cards), ``changewatch.tiles`` (the demo scenes and layers) and ``changewatch.cli`` (the
command line, also installed as the ``changewatch`` console script).
"""

__version__ = "0.2.0"
