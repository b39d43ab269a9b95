"""The memory section of `python -m benchmarks.retrieval`: peak RSS per rank of `lead-dist encode` and `lead-dist search`
on synthetic corpora (200k and 1M passages by default) under `torchrun --nproc_per_node 2`, and a linear model of
it per index kind that extrapolates to MS MARCO (8.8M passages x 768 dims on 8 ranks).

What runs: the real verbs, each in its own torchrun launch so that each phase has its own peak, through `benchmarks.harness.peak`,
which prints every rank's VmHWM (the high-water mark of its own memory map, from /proc/self/status) at its end.
The model is a BERT with 768-wide embeddings and no transformer layer (random weights, the MiniLM tokenizer): it
makes vectors of MS MARCO's width at a speed a shared 2-core machine can afford for a million passages. What a
real encoder adds (its weights, its activations) does not depend on the corpus and is added in the extrapolation.
Passages are 8-14 random words (max 16 tokens); 200 queries, top-100.

Phases: a baseline (imports, the model, the process group), encode (shards of 100k passages), and search with the
torch exact index in fp32 and in fp16 (`--fp16-index`) and with faiss `IVF256,PQ64x4` (`nprobe=16`; each rank
trains it on its first shard; 4-bit codes because faiss trains 8-bit PQ codebooks on 768-d vectors in hours on
this CPU, not minutes). For each search kind, the peaks of both sizes give `fixed + per_vector x vectors` per rank;
per_vector is compared with the bytes the index must hold (4 x 768, 2 x 768, 32 + 8 per vector) plus the ids.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from benchmarks.harness.fixtures import minilm_path, random_words, write_beir
from benchmarks.harness.launch import torchrun_peaks

DIM = 768
SHARD = 100_000
QUERIES = 200
TOP_K = 100
IVF_PQ = "IVF256,PQ64x4"  # 4-bit codes: 8-bit PQ training is hours on this CPU
WORLD = 2

SEARCHES: dict[str, list[str]] = {
    "flat fp32": ["--backend", "torch"],
    "flat fp16": ["--backend", "torch", "--fp16-index"],
    f"faiss {IVF_PQ}": ["--backend", "faiss", "--factory", IVF_PQ, "--search-params", "nprobe=16"],
}
INDEX_BYTES_PER_VECTOR = {"flat fp32": 4 * DIM, "flat fp16": 2 * DIM, f"faiss {IVF_PQ}": 64 * 4 // 8 + 8}


def write_corpus(folder: Path, passages: int) -> None:
    """corpus.jsonl (short random passages) and queries.jsonl in BEIR layout."""
    rng = random.Random(passages)
    words = random_words(rng, 3000, (3, 9))
    corpus = ((f"d{i}", "", " ".join(rng.choices(words, k=rng.randint(8, 14)))) for i in range(passages))
    write_beir(folder, corpus, ((f"q{i}", " ".join(rng.choices(words, k=6))) for i in range(QUERIES)))


def write_model(folder: Path) -> Path:
    """A 768-wide BERT without transformer layers (seeded), with the packaged MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig(hidden_size=DIM, num_hidden_layers=0, num_attention_heads=12, intermediate_size=4 * DIM)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def launch(work: Path, arguments: list[str]) -> tuple[list[int], float]:
    """A verb (or `--baseline MODEL`) under torchrun with 2 ranks; (peak RSS in bytes per rank, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return torchrun_peaks(arguments, WORLD, env)


def measure_size(work: Path, model: Path, passages: int, log: Any) -> dict[str, Any]:
    """Encode one corpus with 2 ranks, then search it every way; peaks per rank and phase."""
    data, embeddings = work / f"corpus-{passages}", work / f"emb-{passages}"
    write_corpus(data, passages)
    found: dict[str, Any] = {"passages": passages}
    peaks, seconds = launch(work, ["--baseline", str(model)])
    found["baseline"] = {"peak_rss_bytes": peaks, "seconds": round(seconds, 1)}
    encode = ["encode", "--model", str(model), "--corpus", str(data / "corpus.jsonl"), "--out", str(embeddings), "--device", "cpu",
              "--passage-max-length", "16", "--batch-size", "512", "--shard-size", str(SHARD), "--quiet"]  # fmt: skip
    peaks, seconds = launch(work, encode)
    found["encode"] = {"peak_rss_bytes": peaks, "seconds": round(seconds, 1)}
    log(f"{passages:,} passages: encode peaks {[round(p / 2**20) for p in peaks]} MiB in {seconds:.0f} s")
    manifest = json.loads((embeddings / "manifest.json").read_text())
    shards = manifest["num_shards"]
    found["vectors_per_rank"] = [
        sum(min(SHARD, passages - k * SHARD) for k in _share(shards, rank)) for rank in range(WORLD)
    ]
    for name, options in SEARCHES.items():
        search = ["search", "--model", str(model), "--index", str(embeddings), "--queries", str(data / "queries.jsonl"), "--device",
                  "cpu", "--query-max-length", "16", "--top-k", str(TOP_K), "--out", str(work / "run.trec"), *options]  # fmt: skip
        peaks, seconds = launch(work, search)
        found[name] = {"peak_rss_bytes": peaks, "seconds": round(seconds, 1)}
        log(f"{passages:,} passages: search {name} peaks {[round(p / 2**20) for p in peaks]} MiB in {seconds:.0f} s")
    return found


def _share(count: int, rank: int) -> range:
    from lead_dist.distributed import contiguous_share

    return contiguous_share(count, rank, WORLD)


def fit(runs: list[dict[str, Any]], phase: str) -> dict[str, float]:
    """Least squares `peak = fixed + per_vector x vectors` over every rank of every size."""
    import numpy as np

    xs = np.array([n for run in runs for n in run["vectors_per_rank"]], dtype=np.float64)
    ys = np.array([p for run in runs for p in run[phase]["peak_rss_bytes"]], dtype=np.float64)
    per_vector, fixed = np.polyfit(xs, ys, 1)
    return {"fixed_bytes": round(float(fixed)), "per_vector_bytes": round(float(per_vector), 1)}


MSMARCO_PASSAGES = 8_841_823
MSMARCO_RANKS = 8
MSMARCO_DEV_QUERIES = 6_980
QUERY_CHUNK = 4096  # TorchExactIndex's default: queries scored at once against one shard of SHARD passages
BERT_BASE_WEIGHTS = 109_482_240 * 4  # fp32 parameters of a BERT-base encoder (768 wide, 12 layers)


def extrapolate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-rank peaks for MS MARCO on 8 ranks from the fitted lines, measured setup and then with what a real
    12-layer encoder and the 6,980 dev queries add (weights; a bigger score block for the exact index)."""
    per_rank = -(-MSMARCO_PASSAGES // MSMARCO_RANKS)
    tiny_weights = 30522 * DIM + 512 * DIM + 2 * DIM + 2 * DIM  # embeddings + layer norm of the benchmark model
    extra_weights = BERT_BASE_WEIGHTS - tiny_weights * 4
    result: dict[str, Any] = {"passages_per_rank": per_rank, "ranks": MSMARCO_RANKS, "dim": DIM}
    for name in SEARCHES:
        line = fit(runs, name)
        measured = line["fixed_bytes"] + line["per_vector_bytes"] * per_rank
        score_bytes = 6 if "fp16" in name else 4  # fp16 scores are copied to fp32 before the top-k
        block = (min(MSMARCO_DEV_QUERIES, QUERY_CHUNK) - QUERIES) * SHARD * score_bytes if "flat" in name else 0
        result[name] = {
            **line,
            "index_bytes_per_vector": INDEX_BYTES_PER_VECTOR[name],
            "predicted_peak_gib_measured_setup": round(measured / 2**30, 2),
            "predicted_peak_gib_bert_base_dev_queries": round((measured + extra_weights + block) / 2**30, 2),
            "added_for_6980_queries_gib": round(block / 2**30, 2),
        }
    encode = max(p for run in runs for p in run["encode"]["peak_rss_bytes"])
    result["encode"] = {
        "measured_peak_gib_any_size": round(encode / 2**30, 2),
        "predicted_peak_gib_bert_base": round((encode + extra_weights) / 2**30, 2),
        "note": "independent of the corpus size (one shard of 100k passages at a time); a real encoder adds its "
        "activations at the chosen batch size and length on top",
    }
    result["added_weights_gib"] = round(extra_weights / 2**30, 2)
    return result


def measure_memory(sizes: list[int], folder: Path | None, log: Any) -> dict[str, Any]:
    """Every size, smallest first, in one scratch folder removed at the end; fits and the MS MARCO extrapolation."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lead_dist_bench_retrieval_memory_", dir=folder) as tmp:
        work = Path(tmp)
        model = write_model(work / "model")
        runs = [measure_size(work, model, n, log) for n in sorted(sizes)]
    return {
        "runs": runs,
        "world_size": WORLD,
        "dim": DIM,
        "queries": QUERIES,
        "top_k": TOP_K,
        "shard_size": SHARD,
        "model": f"BERT, {DIM}-wide embeddings, no transformer layer, random weights (seed 0), MiniLM tokenizer",
        "peak_rss": "VmHWM of each rank process (/proc/self/status at its end), one torchrun launch per phase",
        "msmarco_8_ranks": extrapolate(runs) if len(runs) > 1 else None,
    }
