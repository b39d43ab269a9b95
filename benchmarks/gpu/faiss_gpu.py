"""faiss GPU search sharded over the GPUs present, against lead_dist's torch exact search: top-10 and speed.

    python -m benchmarks.gpu.faiss_gpu --out OUT/gpu_faiss.json            # on the GPU machine (run.sh, stage faiss)
    python -m benchmarks.gpu.faiss_gpu --dry-run --out /tmp/faiss.json     # here: faiss CPU, 20k x 64

The `faiss-gpu-cu12` wheel needs the CUDA 12 runtime (libcudart.so.12) and cuBLAS (libcublas.so.12); the GPU
machine's torch was last seen built for CUDA 13, and the CUDA 12 library wheels are far over the carry limit. So
`cuda12_libraries()` looks first (ldconfig's cache, the nvidia-* pip packages and their library folders) and the
search runs only where both are there and faiss sees a GPU; otherwise the JSON records what was found, and the torch
exact search stays the GPU path (benchmarks/README.md says which).

The check: 1M x 768 fp32 vectors, 8,192 queries, top-10, `IndexFlatIP` cloned to every GPU with
`GpuMultipleClonerOptions.shard` (each GPU holds 1/n of the vectors), against `TorchExactIndex` on the GPU. The
top-10 sets must be identical per query, except where the 10th and 11th exact scores are closer than twice the
rounding of two orders of a 768-term dot product (n eps |q| |p| each, tests/rounding.py's reorder bound), a tie
either may break. Timed: one search of all queries after a warm-up, both backends.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks.harness.results import write_json_file
from benchmarks.harness.timing import sync


def cuda12_libraries() -> dict[str, Any]:
    """What the machine holds of the CUDA 12 runtime and cuBLAS (the faiss-gpu-cu12 wheel's needs)."""
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    cache = [line.strip() for line in ldconfig.splitlines() if "cublas" in line or "cudart" in line]
    pip = subprocess.run([sys.executable, "-m", "pip", "list"], capture_output=True, text=True, check=False).stdout
    nvidia_packages = [line.strip() for line in pip.splitlines() if line.lower().startswith("nvidia")]
    wheel_libs: list[str] = []
    spec = importlib.util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec and spec.submodule_search_locations else []:
        wheel_libs += sorted(glob.glob(os.path.join(root, "*", "lib", "lib*.so.*")))
    names = [line.split()[0] for line in cache] + [os.path.basename(p) for p in wheel_libs]
    found = {lib: any(name.startswith(f"{lib}.so.12") for name in names) for lib in ("libcudart", "libcublas")}
    return {
        "ldconfig_cublas_cudart": cache,
        "pip_nvidia_packages": nvidia_packages,
        "nvidia_wheel_libraries": [p for p in wheel_libs if "cublas" in p or "cudart" in p],
        "cuda12": found,
        "ok": all(found.values()),
    }


def top_k_agreement(
    got: np.ndarray, exact_ids: np.ndarray, exact_scores: np.ndarray, tie_bounds: np.ndarray
) -> dict[str, Any]:
    """Per query: the same top-k id set, or a difference explained by a near tie at rank k (`tie_bounds`[q] is the
    rounding bound of that query's scores; exact_scores holds k + 1 scores, best first)."""
    k = got.shape[1]
    same = np.array([set(got[q]) == set(exact_ids[q, :k]) for q in range(len(got))])
    gap = exact_scores[:, k - 1] - exact_scores[:, k]
    explained = ~same & (gap <= tie_bounds)
    return {
        "queries": len(got),
        "identical": int(same.sum()),
        "near_tie_differences": int(explained.sum()),
        "unexplained_differences": int((~same & ~explained).sum()),
        "ok": bool((same | explained).all()),
    }


def exact_top_k(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """TorchExactIndex's top-(k + 1) ids and scores (k + 1 to see the gap at rank k) and the top-k search time."""
    index.search(queries[:64], k)  # warm-up
    start = time.perf_counter()
    index.search(queries, k)
    sync("cuda" if torch.cuda.is_available() else "cpu")
    seconds = time.perf_counter() - start
    result = index.search(queries, k + 1)
    return np.asarray(result.doc_ids, dtype=np.int64), np.asarray(result.scores, dtype=np.float64), seconds


def faiss_search(corpus: np.ndarray, queries: np.ndarray, k: int, gpu: bool) -> tuple[np.ndarray, float, int]:
    """(ids [Q, k], search seconds, GPUs used): a flat inner-product index, sharded over every GPU when `gpu`."""
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    shards = 0
    if gpu:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        shards = faiss.get_num_gpus()
        index = faiss.index_cpu_to_all_gpus(index, co=options, ngpu=shards)
    index.add(corpus)
    index.search(queries[:64], k)  # warm-up
    start = time.perf_counter()
    _scores, ids = index.search(queries, k)
    return ids, time.perf_counter() - start, shards


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lead_dist.retrieval.index_torch import TorchExactIndex

    report: dict[str, Any] = {"libraries": cuda12_libraries()}
    try:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        report["faiss"] = {"version": faiss.__version__, "gpus": gpus}
    except ImportError as exc:
        report["faiss"] = {"error": str(exc)}
    gpu = not args.dry_run
    if gpu and not (report["libraries"]["ok"] and report["faiss"].get("gpus", 0) > 0):
        report["ran"] = False
        report["reason"] = (
            "no CUDA 12 runtime + cuBLAS, or faiss sees no GPU: the torch exact search stays the GPU path"
        )
        return report
    num, dim, num_queries, k = (20_000, 64, 256, 10) if args.dry_run else (1_000_000, 768, 8192, 10)
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((num, dim), dtype=np.float32)
    queries = rng.standard_normal((num_queries, dim), dtype=np.float32)
    index = TorchExactIndex(dim, device="cuda" if gpu else "cpu")
    index.add(corpus, [str(i) for i in range(num)])
    exact_ids, exact_scores, torch_s = exact_top_k(index, queries, k)
    del index
    ids, faiss_s, shards = faiss_search(corpus, queries, k, gpu)
    norms = np.linalg.norm(queries, axis=1) * float(np.linalg.norm(corpus, axis=1).max())
    # Each of the two scores at ranks k and k + 1 may move by n eps |q| |p| between two orders: twice that.
    tie_bounds = 2 * dim * np.finfo(np.float32).eps * norms
    report.update(
        ran=True,
        vectors=num,
        dim=dim,
        queries=num_queries,
        k=k,
        gpu_shards=shards,
        torch_exact_search_s=torch_s,
        faiss_search_s=faiss_s,
        faiss_over_torch_speed=torch_s / faiss_s,
        top_k=top_k_agreement(ids, exact_ids, exact_scores, tie_bounds),
    )
    report["goal_faiss_at_least_as_fast_at_equal_recall"] = {
        "met": report["top_k"]["ok"] and faiss_s <= torch_s,
        "meaningful": gpu,
    }
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="faiss CPU against torch on the CPU, 20k x 64")
    args = parser.parse_args(argv)
    report = run(args)
    write_json_file(args.out, report)
    print(f"faiss: ran={report.get('ran')} libraries ok={report['libraries']['ok']} top_k={report.get('top_k')}")
    return 0 if not report.get("ran") or report["top_k"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
