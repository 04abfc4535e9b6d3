"""Monitoring one area over many dates: consecutive pairs detected into a store, changes tracked across them.

``scenes`` reads the dated scenes (SCENES); ``run.run_monitor`` detects every consecutive pair
that is not done yet into ``STORE/pairs/<date_a>_<date_b>/`` (a batch job each, resumable as
``rs.batch`` jobs are) and rebuilds ``STORE/history.gpkg`` from all pair folders
(``history.build_history``).
"""
