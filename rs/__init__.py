"""The changewatch library, one module per stage of the data flow (see the README's Layout).

``config`` (every run's settings) → ``prepare`` (model, grid, shift decided; the pair opened once)
→ ``align`` → ``tiling`` → ``infer`` → ``vectorize`` → ``crosscheck`` → ``runfolder`` /
``export``; ``pipeline`` runs them for one scene pair, ``batch`` for many; ``io`` reads and writes
for all of them.
"""
