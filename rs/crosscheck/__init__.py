"""Stage 5 — crosscheck: judge each change polygon against permits, zoning and parcels, as of a date.

``settings`` (column names, layer sources, date formats, tolerances: the ``--columns`` file) →
``layers`` (read and check the permit, zoning and parcel layers; ``values`` reads their dates and
yes/no values) → ``rules`` (the reason codes, on the overlaps ``spatial`` finds) → ``parcels``
(flagged changes attributed to parcels) → ``judge`` (all of it: a ``Judgement``).
"""
