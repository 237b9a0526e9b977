#!/usr/bin/env bash
# GPU acceptance on one GPU: CIFAR fp32 vs bf16+channels_last (+ torch.compile), LM tokens/s and
# MFU, LoRA vs QLoRA memory on a random 1.1B Llama, notebooks 01/06/07 with DEVICE="cuda".
#
#   benchmarks/gpu/acceptance.sh [--out build/gpu-acceptance] [--budget-s 480] [--dry-run]
#
# Writes OUT/acceptance.json and OUT/acceptance.md (about 6 min on one H200, 8 min budget).
# Nothing is downloaded. Without CUDA it runs nothing, writes the plan with "skipped: no CUDA",
# and exits 0. Python: $PYTHON, else the repository's .venv, else python3 (a GPU image's torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD/helpers:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m benchmarks.gpu.acceptance "$@"
