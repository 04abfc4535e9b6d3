"""Run Python code in a fresh process under ``/usr/bin/time -v``: its output and peak memory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(code: str, *args: str, gdal_cache_mb: int = 64) -> tuple[str, float]:
    """(last line printed, peak RSS in MB) of ``python -c code args`` run from the project root.

    GDAL's block cache is capped at ``gdal_cache_mb`` so that it does not hide changewatch's own memory.
    """
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "GDAL_CACHEMAX": str(gdal_cache_mb)}, check=True)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return done.stdout.strip().splitlines()[-1], peak_kb / 1024
