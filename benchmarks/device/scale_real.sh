#!/usr/bin/env bash
# The GPU part of the ImageNet rehearsal (docs/scale.md, "On a GPU"): benchmarks/scale.py with the real networks
# (random weights) on a lent device machine, as one prepared command.
#
# Prepared here, once: the packages that machine's image lacks, as wheels for its Python 3.12, into
# .device-wheels/ (ignored by git; carried with the call):
#   .venv/bin/pip download pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing-extensions==4.16.0 --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 \
#     -d .device-wheels
# There: `run` with carry [".device-wheels"] and this script as the command; the figures come back from $OUT.
#
# SIZE: single-instance images (default 200: ~3,800 label edges, a few minutes on an H200);
# EXTRA: further benchmarks/scale.py arguments; PY: the Python (default python3, the device image's).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/scale-real-out}
mkdir -p "$OUT"
if [ -d .device-wheels ]; then
  "$PY" -m pip install -q --no-index --find-links .device-wheels pydantic pydantic-core annotated-types \
    typing-inspection typing-extensions
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo-config
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# shellcheck disable=SC2086  # EXTRA is a list of arguments
"$PY" benchmarks/scale.py --sizes "${SIZE:-200}" --network real --train-steps 50 --work /tmp/scale-real \
  --json "$OUT/scale-real.json" ${EXTRA:-} 2>&1 | tee "$OUT/scale-real.txt"
