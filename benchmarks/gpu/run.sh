#!/usr/bin/env bash
# The one GPU call (H100 / H200). Prepare HERE first:   bash benchmarks/gpu/build_wheels.sh
# then run on the lent machine with the wheel folder carried, from the repository root (the benchmarks run as
# modules, `python -m benchmarks.gpu.bench_gpu`; lead_dist is not installed there), e.g. (the session's `run` tool):
#     run(command="bash benchmarks/gpu/run.sh", carry=[".cache/gpu_wheels"], timeout_s=540)
# On the GPU machine it installs the carried wheels into a folder on PYTHONPATH, next to the system
# torch/transformers/accelerate (no network: --no-index), checks the imports, then runs bench_gpu, which writes
# $OUT/gpu_throughput.json, and check_retrieval, which writes $OUT/gpu_retrieval.json
# (copy them to benchmarks/results/throughput_gpu.json and gpu_retrieval.json). Here, to check the script on the CPU:
#     OUT=/tmp/gpu_dry bash benchmarks/gpu/run.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS="${WHEELS:-.cache/gpu_wheels}"
OUT="${OUT:-/tmp/gpu_out}"
ENV_DIR="${ENV_DIR:-/tmp/lead_dist_gpu_env}"
mkdir -p "$OUT"
if [ ! -d "$WHEELS" ]; then
    echo "error: $WHEELS is missing: run benchmarks/gpu/build_wheels.sh on the build machine and carry the folder" >&2
    exit 2
fi
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import deepspeed, webdataset, tensorboard' 2>/dev/null; then
    # Every carried wheel into one folder put first on PYTHONPATH. --no-deps: the folder holds exactly what the
    # GPU machine lacks (torch, numpy, packaging, tqdm, pyyaml come with its torch/transformers), and a resolver
    # without an index would fail on those it cannot see from a --target install.
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$ENV_DIR" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$ENV_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
"$PYTHON" - <<'PY'
import accelerate, deepspeed, torch, transformers, webdataset
from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (lead-dist train logs TensorBoard scalars)
print(f"python ok: torch {torch.__version__} cuda {torch.cuda.is_available()} transformers {transformers.__version__} "
      f"accelerate {accelerate.__version__} deepspeed {deepspeed.__version__} webdataset {webdataset.__version__}")
PY
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia_smi.csv" || true; fi
# RUN_BENCH=0 or RUN_RETRIEVAL=0 leaves a part out (e.g. to repeat only the other one within the device budget).
if [ "${RUN_BENCH:-1}" = 1 ]; then
    "$PYTHON" -m benchmarks.gpu.bench_gpu --out "$OUT/gpu_throughput.json" --tokenizer "$WHEELS/minilm_tokenizer" "$@" 2>&1 \
        | tee "$OUT/bench_gpu.log"
fi
if [ "${RUN_RETRIEVAL:-1}" = 1 ]; then
    # evaluate (DE) and rerank (CB, CE) on the GPU against the CPU; with --dry-run the CPU against itself
    DEVICE=cuda
    case " $* " in *" --dry-run "*) DEVICE=cpu ;; esac
    "$PYTHON" -m benchmarks.gpu.check_retrieval --out "$OUT/gpu_retrieval.json" --device "$DEVICE" \
        --tokenizer "$WHEELS/minilm_tokenizer" 2>&1 | tee "$OUT/check_retrieval.log"
fi
