"""changewatch: find new construction in satellite imagery and flag what has no permit.

The data flow, one module per stage: ``align`` → ``tiling`` → ``infer`` → ``vectorize`` →
``crosscheck`` → ``export``; ``pipeline`` runs them in order for one scene pair.
"""

__version__ = "0.1.0"
