#!/usr/bin/env bash
# Issue 4's benchmark in one command: ratio 1 (detect ÷ model-only ceiling), memory at 1× and 4× the
# pixels, and ratio 2 (changewatch vs the torchgeo idiom). torchgeo lives in its own environment,
# .bench-venv, made here on first use (it is never a dependency of changewatch itself).
# Extra arguments go to bench/detect_scale.py, e.g. --sizes 2048 4096 or --device cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }
if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 torchgeo==0.8.1 requests -e .
fi
.venv/bin/python bench/detect_scale.py --torchgeo-python .bench-venv/bin/python "$@"
