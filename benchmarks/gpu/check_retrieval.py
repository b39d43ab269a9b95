"""GPU check of the retrieval verbs: `lead-dist evaluate` (DE) and `lead-dist rerank` (CB, CE) on the GPU give the
CPU's results (run by benchmarks/gpu/run.sh after bench_gpu; here `--device cpu` compares CPU with CPU).

    python -m benchmarks.gpu.check_retrieval --out OUT/gpu_retrieval.json [--device cuda]

Tiny random models (2 layers, 64 wide, the carried MiniLM tokenizer) and a synthetic BEIR folder of 300 passages
and 30 judged queries, so the check takes seconds. Each verb runs twice through the real CLI, once with
`--device cpu` and once with `--device DEVICE` (fp32 both), and the two TREC runs are compared query by query:
the sorted top-10 scores must agree to `--atol` (robust to two near-equal documents trading places), and the share
of top-10 documents in common is reported. The JSON records every comparison; the exit status is 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness.fixtures import gpu_tokenizer, write_beir
from benchmarks.harness.machine import REPO_ROOT

WORDS = "cell protein gene virus dose trial brain mouse risk blood heart lung tumor drug rate wing flow lift".split()


def write_beir_corpus(root: Path, seed: int = 0) -> None:
    """300 passages of 5-60 words, 30 queries of 5, 3 judged passages each (qrels/test.tsv)."""
    rng = random.Random(seed)

    def corpus() -> Iterator[tuple[str, str, str]]:
        for i in range(300):
            text = " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))
            yield f"d{i}", rng.choice(WORDS), text

    queries = ((f"q{q}", " ".join(rng.choices(WORDS, k=5))) for q in range(30))
    write_beir(
        root, corpus(), queries, {"test": ((f"q{q}", f"d{d}") for q in range(30) for d in rng.sample(range(300), 3))}
    )


def save_models(folder: Path, tokenizer: str) -> dict[str, Path]:
    import torch
    from transformers import BertConfig

    from lead_dist.models import model_from_config

    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=256)  # fmt: skip
    paths = {}
    for kind, options in (("de", {"pooling": "mean", "similarity": "cos"}), ("cb", {"projection_dim": 32}),
                          ("ce", {})):  # fmt: skip
        torch.manual_seed(0)
        model = model_from_config(config, tokenizer, kind, **options)
        paths[kind] = folder / kind
        model.save(paths[kind])
    return paths


def cli(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "lead_dist.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"lead-dist {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")


def compare_runs(cpu: Path, other: Path, atol: float) -> dict[str, Any]:
    from lead_dist.data.readers.trec_run import read_run

    a, b = read_run(cpu), read_run(other)
    worst, overlap = 0.0, []
    for qid in a:
        top_a, top_b = a[qid][:10], b.get(qid, [])[:10]
        scores_a = sorted((s for _d, s in top_a), reverse=True)
        scores_b = sorted((s for _d, s in top_b), reverse=True)
        if len(scores_a) != len(scores_b):
            return {"ok": False, "error": f"query {qid}: {len(scores_a)} vs {len(scores_b)} documents"}
        worst = max([worst, *(abs(x - y) for x, y in zip(scores_a, scores_b, strict=True))])
        overlap.append(len({d for d, _ in top_a} & {d for d, _ in top_b}) / max(1, len(top_a)))
    same_queries = sorted(a) == sorted(b)
    return {"queries": len(a), "same_queries": same_queries, "max_top10_score_difference": worst, "atol": atol,
            "mean_top10_overlap": sum(overlap) / max(1, len(overlap)), "ok": same_queries and worst <= atol}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--atol", type=float, default=1e-3, help="top-10 score agreement (scores are logits/x20)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the carried MiniLM one)")
    args = parser.parse_args(argv)
    tokenizer = gpu_tokenizer(args.tokenizer)
    report: dict[str, Any] = {"device": args.device}
    with tempfile.TemporaryDirectory(prefix="gpu-retrieval-") as tmp:
        root = Path(tmp)
        write_beir_corpus(root / "data")
        models = save_models(root / "models", tokenizer)
        common = ["--data", str(root / "data"), "--split", "test", "--passage-max-length", "64", "--quiet"]
        runs: dict[str, dict[str, Path]] = {}
        for tag, device in (("cpu", "cpu"), ("device", args.device)):
            out = root / tag
            runs[tag] = {}
            cli(["evaluate", "--model", str(models["de"]), *common, "--device", device, "--top-k", "50",
                 "--out", str(out / "de.json"), "--run-out", str(out / "de.trec")])  # fmt: skip
            runs[tag]["de"] = out / "de.trec"
            for kind in ("cb", "ce"):  # each re-ranks the CPU DE run, so both devices see the same candidates
                cli(["rerank", "--model", str(models[kind]), *common, "--device", device, "--depth", "50",
                     "--first-stage", str(runs["cpu"]["de"]), "--query-max-length", "16",
                     "--out", str(out / f"{kind}.json"), "--run-out", str(out / f"{kind}.trec")])  # fmt: skip
                runs[tag][kind] = out / f"{kind}.trec"
        report["comparisons"] = {
            name: compare_runs(runs["cpu"][name], runs["device"][name], args.atol) for name in ("de", "cb", "ce")
        }
    report["ok"] = all(c["ok"] for c in report["comparisons"].values())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("retrieval check:", json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
