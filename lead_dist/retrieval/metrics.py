"""Retrieval metrics, computed by pytrec_eval (trec_eval's C code) so the numbers agree with the literature.

Stable keys of the dict `score_run` returns (documented in README.md, "Metric keys"):

    ndcg@10      nDCG at 10 with graded gains (trec_eval ndcg_cut.10; the threshold does not apply)
    mrr@10       reciprocal rank of the first relevant document in the top 10, else 0 (trec_eval recip_rank on the
                 run cut at 10 in trec_eval's own order: score descending, then docid descending)
    recall@100   relevant found in the top 100 / relevant judged (trec_eval recall.100)
    recall@1000  same at 1000
    map@1000     average precision over the top 1000 (trec_eval map_cut.1000)
    hit@K        DPR-style hit rate: 1 if at least one relevant document is in the top K, else 0 (K from `hit_ks`,
                 default 20 and 100); not a recall, hence its own name

"Relevant" for mrr, recall, map and hit means grade >= `relevance_threshold` (1 by default; 2 for TREC DL, as
trec_eval -l 2). Every value is the mean over the judged queries; a judged query that retrieved nothing counts 0
(trec_eval -c). Per-query values are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytrec_eval

from lead_dist.data.readers.qrels import Qrels
from lead_dist.retrieval.runfile import Run

METRIC_KEYS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000", "map@1000")
DEFAULT_HIT_KS = (20, 100)

# our key -> pytrec_eval measure string and the name of its result field
_TREC_MEASURES = {
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10"),
    "recall@100": ("recall.100", "recall_100"),
    "recall@1000": ("recall.1000", "recall_1000"),
    "map@1000": ("map_cut.1000", "map_cut_1000"),
}


def _trec_order(ranked: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """trec_eval ignores the rank column and sorts by score descending, ties by docid descending."""
    return sorted(ranked, key=lambda item: (item[1], item[0]), reverse=True)


def _hit(ranked_docids: Sequence[str], judged: dict[str, int], k: int, threshold: int) -> float:
    return 1.0 if any(judged.get(docid, 0) >= threshold for docid in ranked_docids[:k]) else 0.0


def score_run(
    run: Run,
    qrels: Qrels,
    *,
    relevance_threshold: int = 1,
    hit_ks: Sequence[int] = DEFAULT_HIT_KS,
) -> dict:
    """Score a run against qrels. Returns {"metrics": {key: mean}, "per_query": {qid: {key: value}}, "num_queries"}.

    Only judged queries are scored (queries in the run without judgments are ignored, as trec_eval does).
    """
    if relevance_threshold < 1:
        raise ValueError(f"relevance_threshold must be >= 1 (grade 0 means not relevant), got {relevance_threshold}")
    # pytrec_eval wants {qid: {docid: score}}; sort first so duplicates and the cut at 10 follow trec_eval's order.
    ordered = {qid: _trec_order(ranked) for qid, ranked in run.items() if qid in qrels}
    full = {qid: {docid: float(score) for docid, score in ranked} for qid, ranked in ordered.items()}
    top10 = {qid: {docid: float(score) for docid, score in ranked[:10]} for qid, ranked in ordered.items()}
    # a query whose only grades are below the threshold has nothing to find: trec_eval keeps it with 0s.
    measures = {measure for measure, _field in _TREC_MEASURES.values()}
    main = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=relevance_threshold).evaluate(full)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=relevance_threshold).evaluate(top10)

    keys = list(METRIC_KEYS) + [f"hit@{k}" for k in hit_ks]
    per_query: dict[str, dict[str, float]] = {}
    for qid in sorted(qrels):
        if qid not in main:  # judged but retrieved nothing: 0 for every metric (trec_eval -c)
            per_query[qid] = dict.fromkeys(keys, 0.0)
            continue
        values = {key: float(main[qid][field]) for key, (_measure, field) in _TREC_MEASURES.items()}
        values["mrr@10"] = float(rr[qid]["recip_rank"])
        docids = [docid for docid, _score in ordered[qid]]
        for k in hit_ks:
            values[f"hit@{k}"] = _hit(docids, qrels[qid], k, relevance_threshold)
        per_query[qid] = {key: values[key] for key in keys}
    count = len(per_query)
    means = {key: (math.fsum(v[key] for v in per_query.values()) / count if count else 0.0) for key in keys}
    return {
        "metrics": means,
        "per_query": per_query,
        "num_queries": count,
        "judged_queries_without_results": sum(1 for qid in qrels if qid not in main),
        "relevance_threshold": relevance_threshold,
    }
