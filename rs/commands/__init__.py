"""The command line's commands, grouped by what they serve (``cli.py`` at the repository root assembles them).

``run`` (detect, demo, crosscheck, export), ``batch``, ``labels``, ``models`` (evaluate, train)
and ``synth``; ``options`` holds what they share. Each command parses its options into the
library's configuration (``rs.config``), calls ``rs`` and prints; heavy libraries are imported
inside the commands that need them.
"""
