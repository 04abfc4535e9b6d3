"""Synthetic VHR change pairs from single-date imagery with building footprints (``cli.py synth``).

The modules follow the data flow: ``sources`` (imagery and footprints on a metric grid) →
``shadow`` (where shadows fall) and ``edit`` (the labelled changes: buildings removed, pasted) →
``nuisance`` (unlabelled differences between dates) → ``generate`` (pairs written in the
LEVIR-CD layout with ``synth.json``). ``config`` holds ``SynthConfig``, every default in one place.
This package imports nothing itself, so that reading a config stays light::

    from changewatch.rs.synth.config import SynthConfig
    from changewatch.rs.synth.generate import generate

    generate(SynthConfig("../shared/data/vhr-buildings", "runs/synth-0.5", gsd_m=(0.5, 0.5)))
"""
