"""`lead-dist evaluate` against sentence-transformers on the same model and folder: the same nDCG@10, within 0.001.

    make mpnet                                            # once: the real all-mpnet-base-v2 (about 400 MB)
    nice -n 10 .venv/bin/python -m benchmarks.retrieval.st_parity   # both parts, one after the other
    .venv/bin/python -m benchmarks.retrieval.st_parity --part lead_dist &   # or each part in its own process
    .venv/bin/python -m benchmarks.retrieval.st_parity --part sentence_transformers   # (the last one writes)

Cost, measured on the 2-core AMD EPYC build machine (2026-12-07): all-mpnet-base-v2 at 384 tokens encodes about 0.6
SciFact passages per CPU second, so each part is about 2.4 CPU hours (one thread each: about 2.5 hours of wall time
with both parts side by side on an otherwise idle machine).

Two independent paths over SciFact test (5,183 passages, 300 judged claims), each with its defaults:
- ours: the `lead-dist evaluate` command a user types, default flags (the model's own max length: 384 for
  all-mpnet-base-v2), in a subprocess;
- the peer: `SentenceTransformer(folder).encode` on the queries and on "title text" passages (BEIR's convention),
  exact cosine search for the top 1,000, and pytrec_eval's `ndcg_cut_10` averaged over the judged queries.
The folder is the one `sentence-transformers/all-mpnet-base-v2` resolves to (the assembled PyPI parts). Both parts
keep their progress in --work (ours: the embeddings folder, in shards of 500 passages; the peer: blocks of 500
vectors) and their results, so a killed run resumes where it stopped (--fresh starts again).
Writes benchmarks/results/<--name>.json (default mpnet_scifact_parity) with both numbers, the difference, the
published figure, the timings and the machine (load averages before and after each part).

    .venv/bin/python -m benchmarks.retrieval.st_parity --sample 200    # minutes: the vectors alone, on a sample

`--sample N` compares the vectors instead, on all 300 judged queries and N passages spread over the corpus (every
k-th, so short and 384-token ones), through the functions `lead-dist evaluate` encodes with (`load_text_encoder`,
`encode_passages`, `encode_queries`, its default lengths and batch size) against `SentenceTransformer.encode`:
max |difference| and min cosine, written to <--name>_vectors.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness.fixtures import SCIFACT
from benchmarks.harness.machine import REPO_ROOT, load_average, log, machine, package_versions
from benchmarks.harness.results import write_json
from benchmarks.harness.timing import cpu_seconds
from lead_dist.atomic import atomic_open

DEFAULT_DATA = SCIFACT
MODEL = "sentence-transformers/all-mpnet-base-v2"
# SciFact test nDCG@10 as published (MTEB; the model cards), for the models this parity has been run on
PUBLISHED = {"sentence-transformers/all-mpnet-base-v2": 0.656, "sentence-transformers/all-MiniLM-L6-v2": 0.645}
TOLERANCE = 0.001


def run_ours(model: str, data: Path, work: Path) -> dict:
    out = work / "lead_dist_evaluate.json"
    command = [sys.executable, "-m", "lead_dist.cli", "evaluate", "--model", model, "--data", str(data)]
    # shards of 500 passages: a killed run keeps its finished shards (the folder is reused only for the same model,
    # settings and corpus, checked by lead-dist itself)
    command += ["--split", "test", "--out", str(out), "--shard-size", "500", "--quiet"]
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


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        next(handle)  # header
        for line in handle:
            qid, pid, grade = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[pid] = int(grade)
    return qrels


def encode_in_blocks(st, texts: list[str], folder: Path, block: int = 500):
    """`st.encode` over blocks of texts, each block's vectors kept in `folder` (a rerun skips finished blocks)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, len(texts), block):
        path = folder / f"block-{start:06d}.npy"
        if not path.is_file():
            vectors = st.encode(texts[start : start + block], convert_to_numpy=True)
            with atomic_open(path, "wb") as sink:
                np.save(sink, vectors)
            log(f"sentence-transformers: passages {start}..{min(start + block, len(texts))} of {len(texts)}")
        parts.append(np.load(path))
    return np.concatenate(parts)


def run_peer(model: str, data: Path, work: Path) -> dict:
    import pytrec_eval
    import torch
    from sentence_transformers import SentenceTransformer

    from lead_dist.models.folder import resolve_folder

    folder = resolve_folder(model)
    started, cpu_before = time.perf_counter(), cpu_seconds()
    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = [q for q in _read_jsonl(data / "queries.jsonl") if q["_id"] in qrels]
    corpus = _read_jsonl(data / "corpus.jsonl")
    st = SentenceTransformer(str(folder), device="cpu")
    log(f"sentence-transformers: {len(corpus)} passages, {len(queries)} queries, max_seq_length {st.max_seq_length}")
    texts = [f"{p.get('title', '')} {p['text']}".strip() for p in corpus]
    passages = torch.from_numpy(encode_in_blocks(st, texts, work / "st_blocks"))
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


def vector_check(model: str, data: Path, sample: int) -> dict:
    """The vectors of `lead-dist evaluate`'s encoding path against sentence-transformers' on a sample."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from lead_dist.models.folder import resolve_folder
    from lead_dist.retrieval.encode import encode_passages, encode_queries
    from lead_dist.retrieval.sources import iter_corpus
    from lead_dist.retrieval.text_encoder import load_text_encoder

    started, cpu_before = time.perf_counter(), cpu_seconds()
    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = [q["text"] for q in _read_jsonl(data / "queries.jsonl") if q["_id"] in qrels]
    everything = list(iter_corpus(data))
    records = everything[:: max(1, len(everything) // sample)][:sample]
    encoder = load_text_encoder(model, "cpu")
    length = encoder.max_seq_length  # what evaluate's default flags give both lengths
    ours = {"passages": encode_passages(encoder, records, max_length=length, batch_size=64),
            "queries": encode_queries(encoder, queries, max_length=length, batch_size=64)}  # fmt: skip
    st = SentenceTransformer(str(resolve_folder(model)), device="cpu")
    theirs = {"passages": st.encode([f"{r['title']} {r['text']}".strip() for r in records], convert_to_numpy=True),
              "queries": st.encode(queries, convert_to_numpy=True)}  # fmt: skip
    tokens = [len(encoder.tokenizer(f"{r['title']} {r['text']}".strip())["input_ids"]) for r in records]
    result: dict = {"sample": f"every {len(everything) // sample}th passage, {len(records)}; all {len(queries)} queries",
                    "max_length": length, "passages_at_max_length": sum(t >= length for t in tokens)}  # fmt: skip
    for part in ours:
        difference = np.abs(ours[part] - theirs[part]).max()
        cosine = (ours[part] * theirs[part]).sum(1) / (
            np.linalg.norm(ours[part], axis=1) * np.linalg.norm(theirs[part], axis=1)
        )
        result[part] = {"count": len(ours[part]), "max_abs_difference": float(difference),
                        "min_cosine": float(cosine.min())}  # fmt: skip
    result["wall_s"], result["cpu_s"] = round(time.perf_counter() - started, 1), round(cpu_seconds() - cpu_before, 1)
    return result


PARTS = {"lead_dist": run_ours, "sentence_transformers": run_peer}


def claim_work_folder(work: Path, model: str, data: Path) -> None:
    """--work holds one model's and one corpus's progress: the peer's blocks are reused by position, so a folder
    begun for another model or corpus is refused instead of mixed in (a folder without the stamp is adopted)."""
    stamp, wanted = work / "parity.json", {"model": model, "data": str(data.resolve())}
    if stamp.is_file() and json.loads(stamp.read_text()) != wanted:
        raise SystemExit(f"st_parity: {work} holds progress for {json.loads(stamp.read_text())}, not {wanted}; "
                         "give another --work, or --fresh to start this one over")  # fmt: skip
    stamp.write_text(json.dumps(wanted))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench" / "st-parity")
    parser.add_argument("--name", default="mpnet_scifact_parity", help="results file name (without .json)")
    parser.add_argument("--fresh", action="store_true", help="redo both parts even if --work holds their results")
    parser.add_argument("--sample", type=int, help="compare the vectors on this many passages instead (minutes)")
    parser.add_argument("--part", choices=("both", *PARTS), default="both",
                        help="run this part only (the other may run in another process); the results file is written "
                             "by whichever invocation finds both parts kept")  # fmt: skip
    args = parser.parse_args(argv)
    if args.sample:
        load_before = load_average()
        result = vector_check(args.model, args.data, args.sample)
        result |= {"model": args.model, "data": f"{args.data.name} test", "load_average_before": load_before,
                   "load_average_after": load_average(), "machine": machine(),
                   "versions": package_versions("transformers", "sentence-transformers", "torch")}  # fmt: skip
        path = write_json(f"{args.name}_vectors", result)
        log(f"passages {result['passages']}, queries {result['queries']}: {path}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        import shutil

        shutil.rmtree(args.work)
        args.work.mkdir(parents=True)
    claim_work_folder(args.work, args.model, args.data)
    parts: dict[str, dict] = {}
    for name, action in PARTS.items():
        kept = args.work / f"{name}.json"
        if kept.is_file():
            parts[name] = json.loads(kept.read_text())
            log(f"{name}: kept from {kept}")
            continue
        if args.part not in ("both", name):
            continue
        load_before = load_average()
        result = action(args.model, args.data, args.work)
        result["load_average_before"], result["load_average_after"] = load_before, load_average()
        kept.write_text(json.dumps(result, indent=1))
        parts[name] = result
        log(f"{name}: nDCG@10 {result['ndcg@10']:.4f} in {result['wall_s']} s")
    for name in PARTS:  # the other process may have finished while this one ran: the last to finish writes
        kept = args.work / f"{name}.json"
        if name not in parts and kept.is_file():
            parts[name] = json.loads(kept.read_text())
    if len(parts) < len(PARTS):
        log(f"kept {sorted(parts)} in {args.work}; the results file is written once both parts are there")
        return 0
    difference = parts["lead_dist"]["ndcg@10"] - parts["sentence_transformers"]["ndcg@10"]
    payload = {
        "model": args.model,
        "data": f"{args.data.name} test",
        "ndcg@10": {name: round(part["ndcg@10"], 5) for name, part in parts.items()},
        "difference": round(difference, 5),
        "tolerance": TOLERANCE,
        "within_tolerance": abs(difference) <= TOLERANCE,
        "published_ndcg@10": PUBLISHED.get(args.model),
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
