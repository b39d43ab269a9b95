#!/usr/bin/env bash
# The quality grid's DE-teacher comparison on one GPU (H100 / H200), at 10x the CPU grid's steps (grid `gpu` in
# configs/scifact/bench/grid.yaml): contrastive, response KD, LEAD joint and LEAD frozen over 3 seeds, from warm-ups
# 10x as long; writes $OUT/quality_gpu.json (+ charts) with the same `summary` as benchmarks/results/quality.json.
# Prepare HERE first:   bash benchmarks/gpu/build_quality_carry.sh
# then on the lent machine, with the folder carried (the session's `run` tool):
#     run(command="bash benchmarks/gpu/quality.sh", carry=[".cache/gpu_quality"], timeout_s=540)
# and copy $OUT/quality_gpu.json (+ .png) to benchmarks/results/. Here, to check the script on the CPU:
#     OUT=/tmp/gpu_quality_dry bash benchmarks/gpu/quality.sh --dry-run
# (--dry-run does every preparation step for real, then prints the grid's commands instead of running them.)
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY="${CARRY:-.cache/gpu_quality}"
OUT="${OUT:-/tmp/gpu_out}"
ENV_DIR="${ENV_DIR:-/tmp/lead_dist_gpu_quality_env}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-6}"   # student runs at once: one small model leaves an H100 mostly idle
mkdir -p "$OUT"
if [ ! -d "$CARRY" ]; then
    echo "error: $CARRY is missing: run benchmarks/gpu/build_quality_carry.sh here and carry the folder" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import pytrec_eval; from torch.utils.tensorboard import SummaryWriter' 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$ENV_DIR" \
        "$CARRY"/wheels/*.whl
    export PYTHONPATH="$ENV_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# SciFact where the grid expects it (../shared/data from the repository root), unless it is there already
if [ ! -f ../shared/data/scifact/corpus.jsonl ]; then
    mkdir -p ../shared/data
    tar -C ../shared/data -xJf "$CARRY/scifact.tar.xz"
fi
# the base model back in float32 (the carried copy holds fp16-rounded weights; see build_quality_carry.sh)
BASE="$OUT/minilm_fp16_as_fp32"
"$PYTHON" - "$CARRY/minilm_fp16" "$BASE" <<'PY'
import shutil, sys
from pathlib import Path

from safetensors.torch import load_file, save_file

source, target = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(target, ignore_errors=True)
shutil.copytree(source, target)
save_file({k: t.float() for k, t in load_file(source / "model.safetensors").items()}, target / "model.safetensors",
          metadata={"format": "pt"})
PY
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/nvidia_smi.csv" || true; fi
"$PYTHON" -m benchmarks.quality --grid gpu --out "$OUT/run" --results-dir "$OUT" --results-name quality_gpu \
    --base-model "$BASE" --jobs "$JOBS" "$@" 2>&1 | tee "$OUT/quality_gpu.log"
