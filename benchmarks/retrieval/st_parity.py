"""`lead-dist evaluate` against sentence-transformers on the same model and folder: the same nDCG@10, within 0.001.

    make mpnet                                            # once: the real all-mpnet-base-v2 (about 400 MB)
    nice -n 10 .venv/bin/python -m benchmarks.retrieval.st_parity   # about an hour on 2 shared cores

Two independent paths over SciFact test (5,183 passages, 300 judged claims), each with its defaults:
- ours: the `lead-dist evaluate` command a user types, default flags (the model's own max length: 384 for
  all-mpnet-base-v2), in a subprocess;
- the peer: `SentenceTransformer(folder).encode` on the queries and on "title text" passages (BEIR's convention),
  exact cosine search for the top 1,000, and pytrec_eval's `ndcg_cut_10` averaged over the judged queries.
The folder is the one `sentence-transformers/all-mpnet-base-v2` resolves to (the assembled PyPI parts). Each part's
result is kept in --work, so a rerun redoes only what is missing (--fresh redoes everything).
Writes benchmarks/results/<--name>.json (default mpnet_scifact_parity) with both numbers, the difference, the
published figure, the timings and the machine (load averages before and after each part).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO_ROOT, cpu_seconds, load_average, log, machine, package_versions, write_json

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
MODEL = "sentence-transformers/all-mpnet-base-v2"
PUBLISHED = 0.656  # the model card's / MTEB's SciFact nDCG@10 for all-mpnet-base-v2 (about)
TOLERANCE = 0.001


def run_ours(model: str, data: Path, work: Path) -> dict:
    out = work / "lead_dist_evaluate.json"
    command = [sys.executable, "-m", "lead_dist.cli", "evaluate", "--model", model, "--data", str(data)]
    command += ["--split", "test", "--out", str(out), "--overwrite", "--quiet"]
    log(" ".join(command))
    started, cpu_before = time.perf_counter(), cpu_seconds()
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    results = json.loads(out.read_text())
    return {
        "command": " ".join(command[1:]),
        "ndcg@10": results["metrics"]["ndcg@10"],
        "metrics": results["metrics"],
        "num_queries": results["num_queries"],
        "settings": results["settings"],
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(cpu_seconds() - cpu_before, 1),
    }


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_peer(model: str, data: Path) -> dict:
    import pytrec_eval
    import torch
    from sentence_transformers import SentenceTransformer

    from lead_dist.models.folder import resolve_folder

    folder = resolve_folder(model)
    started, cpu_before = time.perf_counter(), cpu_seconds()
    qrels: dict[str, dict[str, int]] = {}
    with open(data / "qrels" / "test.tsv", encoding="utf-8") as handle:
        next(handle)  # header
        for line in handle:
            qid, pid, grade = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[pid] = int(grade)
    queries = [q for q in _read_jsonl(data / "queries.jsonl") if q["_id"] in qrels]
    corpus = _read_jsonl(data / "corpus.jsonl")
    st = SentenceTransformer(str(folder), device="cpu")
    log(f"sentence-transformers: {len(corpus)} passages, {len(queries)} queries, max_seq_length {st.max_seq_length}")
    passages = st.encode([f"{p.get('title', '')} {p['text']}".strip() for p in corpus], convert_to_tensor=True)
    encoded = st.encode([q["text"] for q in queries], convert_to_tensor=True)
    scores, indices = torch.topk(encoded @ passages.T, k=min(1000, len(corpus)), dim=1)
    run = {
        q["_id"]: {corpus[i]["_id"]: float(s) for s, i in zip(row_scores.tolist(), row_indices.tolist(), strict=True)}
        for q, row_scores, row_indices in zip(queries, scores, indices, strict=True)
    }
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    ndcg = sum(values["ndcg_cut_10"] for values in per_query.values()) / len(per_query)
    return {
        "folder": str(folder),
        "ndcg@10": ndcg,
        "num_queries": len(per_query),
        "max_seq_length": st.max_seq_length,
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(cpu_seconds() - cpu_before, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench" / "st-parity")
    parser.add_argument("--name", default="mpnet_scifact_parity", help="results file name (without .json)")
    parser.add_argument("--fresh", action="store_true", help="redo both parts even if --work holds their results")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    parts: dict[str, dict] = {}
    for name, action in (("lead_dist", lambda: run_ours(args.model, args.data, args.work)),
                         ("sentence_transformers", lambda: run_peer(args.model, args.data))):  # fmt: skip
        kept = args.work / f"{name}.json"
        if kept.is_file() and not args.fresh:
            parts[name] = json.loads(kept.read_text())
            log(f"{name}: kept from {kept}")
            continue
        load_before = load_average()
        result = action()
        result["load_average_before"], result["load_average_after"] = load_before, load_average()
        kept.write_text(json.dumps(result, indent=1))
        parts[name] = result
        log(f"{name}: nDCG@10 {result['ndcg@10']:.4f} in {result['wall_s']} s")
    difference = parts["lead_dist"]["ndcg@10"] - parts["sentence_transformers"]["ndcg@10"]
    payload = {
        "model": args.model,
        "data": f"{args.data.name} test",
        "ndcg@10": {name: round(part["ndcg@10"], 5) for name, part in parts.items()},
        "difference": round(difference, 5),
        "tolerance": TOLERANCE,
        "within_tolerance": abs(difference) <= TOLERANCE,
        "published_ndcg@10": PUBLISHED,
        "parts": parts,
        "machine": machine(),
        "versions": package_versions("transformers", "sentence-transformers", "torch", "pytrec-eval-terrier"),
    }
    path = write_json(args.name, payload)
    log(f"nDCG@10 lead_dist {parts['lead_dist']['ndcg@10']:.4f}, sentence-transformers "
        f"{parts['sentence_transformers']['ndcg@10']:.4f}, difference {difference:+.5f}: {path}")  # fmt: skip
    return 0 if abs(difference) <= TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
