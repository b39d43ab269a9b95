#!/usr/bin/env bash
# Run HERE before the faiss stage of a GPU call: the faiss-gpu-cu12 wheel (about 48 MB, cp312) into its own folder,
# carried in a call of its own (with .cache/gpu_wheels it would pass the 64 MiB carry limit):
#
#     bash benchmarks/gpu/faiss_wheel.sh [FOLDER]        # default .cache/faiss_gpu_wheel (git-ignored)
#     run(command="RUN_BENCH=0 RUN_RETRIEVAL=0 RUN_SPEED=0 RUN_LARGE=0 bash benchmarks/gpu/run.sh",
#         carry=[".cache/gpu_wheels/minilm_tokenizer", ".cache/faiss_gpu_wheel"], timeout_s=300)
#
# The wheel needs the CUDA 12 runtime and cuBLAS on the GPU machine (it brings neither); run.sh looks for them
# first and installs the wheel only where they are (benchmarks/gpu/faiss_gpu.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-.cache/faiss_gpu_wheel}"
VERSION="${FAISS_GPU_VERSION:-1.14.1.post1}"  # the newest on PyPI on 2026-11-30
mkdir -p "$OUT"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --dest "$OUT" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    "faiss-gpu-cu12==$VERSION"
SIZE_KIB="$(du -sk "$OUT" | cut -f1)"
ls -l "$OUT"
echo "folder $OUT: $((SIZE_KIB / 1024)) MiB"
if [ "$SIZE_KIB" -gt $((64 * 1024)) ]; then
    echo "error: $OUT is over the 64 MiB a GPU call may carry" >&2
    exit 1
fi
