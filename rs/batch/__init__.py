"""Batch runs: many areas and dates from one manifest, resumable, optionally on Dask.

Each job is one ``rs.pipeline.detect`` run into ``OUTDIR/<area_id>/`` (replaced as a whole,
``rs.runfolder.StagedOutput``). A job is *done* only when its outputs are in place and its completion
record ``_done.json`` (written last, atomically) agrees with them and with what the job depended
on: the outputs' SHA-256, the changewatch version, the job's settings, the size and modification
time of every input file (scenes with their sidecars, masks, layers) and of the model's files.
``resume`` skips done jobs and redoes every other one (``stale_reason`` says why), so a batch
killed at any moment and resumed ends as an uninterrupted one would, and a job whose inputs,
settings or model changed since it completed is redone. A failing job is recorded with its
error and exit code and does not stop the others.

Jobs run in this process (``scheduler="serial"``), on a Dask ``LocalCluster`` (``"local"``)
or on an existing Dask cluster (``"tcp://host:8786"``). On Dask each job is a task, and the
tiles of a scene larger than ``split_mpx`` megapixels are tasks of their own, so one large
scene also uses every worker; the model is loaded once per worker by a worker plugin, not once
per task. Workers pick a CUDA GPU when torch sees one (``--device auto``).

``manifest`` (the jobs) → ``resume`` (completion records, what is stale) → ``jobs`` (one detect
run per job) → ``cluster`` (where jobs run) → ``outputs`` (the batch's summary and combined
flags); ``run.run_batch`` runs it all. A manifest row naming an area's SCENES instead of BEFORE
and AFTER is a monitor of that area into ``OUTDIR/<area_id>/`` (``areas``), run by the same runner.
"""
