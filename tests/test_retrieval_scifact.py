"""`lead-dist evaluate` with the packaged all-MiniLM-L6-v2 on SciFact equals sentence-transformers + pytrec_eval.

The 300 judged test claims over a fixed part of the corpus: every judged passage and every 50th other one (380 of
5,183), at the model's own 256 tokens. Both paths encode independently and rank exactly, so they can differ only
where float rounding reorders two near-equal scores: within 0.001 nDCG@10.

Why not the whole corpus: encoding 5,183 abstracts twice costs about 7 minutes of a 2-core CI machine, a third of its
budget. The whole-corpus figure (lead-dist evaluate 0.6451, sentence-transformers + pytrec_eval 0.645, MTEB 64.51) is
in the README's performance table; `python -m benchmarks.retrieval.st_parity` measures such a parity for a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lead_dist.cli import main as cli_main

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
OTHER_PASSAGE_STRIDE = 50  # every 50th unjudged passage joins the judged ones


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, grade = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(grade)
    return qrels


def _corpus_part(folder: Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """SciFact with its judged test passages and every 50th other one, written to `folder` in BEIR layout."""
    qrels = _qrels(SCIFACT / "qrels" / "test.tsv")
    judged = {doc for docs in qrels.values() for doc in docs}
    corpus = _jsonl(SCIFACT / "corpus.jsonl")
    part = [p for i, p in enumerate(corpus) if p["_id"] in judged or i % OTHER_PASSAGE_STRIDE == 0]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in part), encoding="utf-8")
    (folder / "queries.jsonl").write_bytes((SCIFACT / "queries.jsonl").read_bytes())
    (folder / "qrels" / "test.tsv").write_bytes((SCIFACT / "qrels" / "test.tsv").read_bytes())
    return part, qrels


def _sentence_transformers_ndcg10(model_dir: str, corpus: list[dict], qrels: dict[str, dict[str, int]]) -> float:
    import pytrec_eval
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == 256  # the length lead-dist evaluate is given below
    queries = [q for q in _jsonl(SCIFACT / "queries.jsonl") if q["_id"] in qrels]
    passages = model.encode([f"{p['title']} {p['text']}".strip() for p in corpus], convert_to_tensor=True)
    claims = model.encode([q["text"] for q in queries], convert_to_tensor=True)
    scores, rows = torch.topk(claims @ passages.T, k=len(corpus), dim=1)
    run = {
        q["_id"]: {corpus[i]["_id"]: float(s) for s, i in zip(q_scores.tolist(), q_rows.tolist(), strict=True)}
        for q, q_scores, q_rows in zip(queries, scores, rows, strict=True)
    }
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    assert len(per_query) == 300
    return sum(values["ndcg_cut_10"] for values in per_query.values()) / len(per_query)


@pytest.mark.slow
@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").exists(), reason=f"SciFact data not present at {SCIFACT}")
def test_minilm_scifact_equals_sentence_transformers(minilm_dir, tmp_path):
    corpus, qrels = _corpus_part(tmp_path / "scifact")
    out = tmp_path / "scifact.json"
    args = ["evaluate", "--model", minilm_dir, "--data", str(tmp_path / "scifact"), "--split", "test"]
    lengths = ["--passage-max-length", "256", "--query-max-length", "256"]
    assert cli_main([*args, *lengths, "--out", str(out), "--quiet"]) == 0
    results = json.loads(out.read_text())
    assert results["num_queries"] == 300  # SciFact test: 300 judged claims
    assert results["settings"]["num_passages"] == len(corpus)
    assert len(results["per_query"]) == 300
    report = results["input_report"]
    assert report["qrels_docs_absent_from_corpus"] == 0  # every judged passage was kept
    assert report["queries_without_judgments"] == 1109 - 300  # the other claims belong to the train split
    ours = results["metrics"]["ndcg@10"]
    assert ours == pytest.approx(_sentence_transformers_ndcg10(minilm_dir, corpus, qrels), abs=0.001)
    # a fiftieth of the distractors: easier than the whole corpus (0.645), so the number cannot be a collapsed model's
    assert ours > 0.645
    # recall can only grow with depth, and MRR@10 cannot exceed the top-10 hit rate
    metrics = results["metrics"]
    assert metrics["recall@100"] <= metrics["recall@1000"]
    assert metrics["mrr@10"] <= metrics["hit@20"]
