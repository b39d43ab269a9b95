"""Metrics: equal to pytrec_eval on random graded runs, and to hand arithmetic on a small case."""

from __future__ import annotations

import math
import random

import pytest
import pytrec_eval

from lead_dist.data.readers.trec_run import read_run
from lead_dist.retrieval.metrics import METRIC_KEYS, score_run
from lead_dist.retrieval.runfile import write_run

# q1: judged d1 (grade 2), d2 (1), d3 (0), d9 (1, never retrieved). Run: d3, d1, d4 (unjudged), d2.
# q2: one relevant d5, retrieved at rank 11 behind ten unjudged documents.
HAND_QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0, "d9": 1}, "q2": {"d5": 1}}
HAND_RUN = {
    "q1": [("d3", 0.9), ("d1", 0.8), ("d4", 0.7), ("d2", 0.6)],
    "q2": [(f"x{i}", 1.0 - i / 100) for i in range(10)] + [("d5", 0.5)],
    "q_unjudged": [("d1", 1.0)],  # in the run, not in the qrels: ignored
}


def test_hand_computed_small_case():
    result = score_run(HAND_RUN, HAND_QRELS, hit_ks=(1, 2, 20))
    q1, q2 = result["per_query"]["q1"], result["per_query"]["q2"]
    # q1, threshold 1: relevant = {d1, d2, d9}; retrieved relevant at ranks 2 and 4.
    assert q1["mrr@10"] == pytest.approx(1 / 2)  # first relevant at rank 2
    assert q1["recall@100"] == pytest.approx(2 / 3)  # d9 never retrieved
    assert q1["map@1000"] == pytest.approx((1 / 2 + 2 / 4) / 3)  # precision at ranks 2 and 4, over 3 relevant
    # nDCG@10, gain = grade, discount log2(rank + 1): DCG = 2/log2(3) + 1/log2(5); ideal grades 2, 1, 1.
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert q1["ndcg@10"] == pytest.approx(dcg / ideal)  # = 1.69254 / 3.13093 = 0.54058
    assert (q1["hit@1"], q1["hit@2"], q1["hit@20"]) == (0.0, 1.0, 1.0)
    # q2: relevant at rank 11: outside MRR@10 and nDCG@10, inside recall@100 and hit@20; AP = 1/11.
    assert q2["mrr@10"] == 0.0
    assert q2["ndcg@10"] == 0.0
    assert q2["recall@100"] == 1.0
    assert q2["map@1000"] == pytest.approx(1 / 11)
    assert (q2["hit@2"], q2["hit@20"]) == (0.0, 1.0)
    assert result["num_queries"] == 2  # q_unjudged ignored
    assert result["metrics"]["mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["metrics"]["map@1000"] == pytest.approx((1 / 3 + 1 / 11) / 2)
    assert set(METRIC_KEYS) <= set(result["metrics"])


def test_threshold_two_applies_to_binary_metrics_not_ndcg():
    qrels = {"q1": HAND_QRELS["q1"]}
    strict = score_run({"q1": HAND_RUN["q1"]}, qrels, relevance_threshold=2, hit_ks=(1, 2))["per_query"]["q1"]
    # only d1 (grade 2) is relevant now: rank 2, found.
    assert strict["mrr@10"] == pytest.approx(1 / 2)
    assert strict["recall@100"] == 1.0
    assert strict["map@1000"] == pytest.approx(1 / 2)
    assert strict["ndcg@10"] == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3) + 0.5))
    assert (strict["hit@1"], strict["hit@2"]) == (0.0, 1.0)


def test_judged_query_without_results_counts_zero():
    qrels = dict(HAND_QRELS, q3={"d7": 1})
    result = score_run(HAND_RUN, qrels)
    assert result["judged_queries_without_results"] == 1
    assert result["num_queries"] == 3
    assert result["per_query"]["q3"]["ndcg@10"] == 0.0
    alone = score_run(HAND_RUN, HAND_QRELS)["metrics"]["ndcg@10"]
    assert result["metrics"]["ndcg@10"] == pytest.approx(alone * 2 / 3)


def _random_case(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(1500)]
    qrels, run = {}, {}
    for q in range(25):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[qid] = {d: rng.randint(0, 3) for d in judged}
        retrieved = rng.sample(docs, rng.randint(5, 1200))
        # put some judged documents near the top so the metrics are not all zero
        retrieved = list(dict.fromkeys(rng.sample(judged, len(judged) // 2 + 1) + retrieved))
        scores = rng.sample(range(10**6), len(retrieved))  # distinct: no tie-breaking ambiguity
        run[qid] = sorted(((d, s / 1e6) for d, s in zip(retrieved, scores, strict=True)), key=lambda x: -x[1])
    return qrels, run


def _reference_mrr10(ranked, judged, threshold):
    for rank, (docid, _score) in enumerate(ranked[:10], 1):
        if judged.get(docid, 0) >= threshold:
            return 1 / rank
    return 0.0


@pytest.mark.parametrize("threshold", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_pytrec_eval_on_random_graded_runs(seed, threshold):
    qrels, run = _random_case(seed)
    ours = score_run(run, qrels, relevance_threshold=threshold, hit_ks=(1, 5, 10))["per_query"]
    as_dict = {qid: dict(ranked) for qid, ranked in run.items()}
    measures = {"ndcg_cut.10", "recall.100", "recall.1000", "map_cut.1000", "success.1,5,10"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=threshold).evaluate(as_dict)
    for qid in qrels:
        assert ours[qid]["ndcg@10"] == pytest.approx(reference[qid]["ndcg_cut_10"], abs=1e-12)
        assert ours[qid]["recall@100"] == pytest.approx(reference[qid]["recall_100"], abs=1e-12)
        assert ours[qid]["recall@1000"] == pytest.approx(reference[qid]["recall_1000"], abs=1e-12)
        assert ours[qid]["map@1000"] == pytest.approx(reference[qid]["map_cut_1000"], abs=1e-12)
        for k in (1, 5, 10):  # DPR hit rate is trec_eval's success@k
            assert ours[qid][f"hit@{k}"] == reference[qid][f"success_{k}"]
        assert ours[qid]["mrr@10"] == pytest.approx(_reference_mrr10(run[qid], qrels[qid], threshold))
    # the random case must exercise both outcomes, or the comparison proves little
    assert any(v["mrr@10"] > 0 for v in ours.values()) and any(v["mrr@10"] == 0 for v in ours.values())
    assert any(0 < v["recall@1000"] < 1 for v in ours.values())


def test_mrr_cut_follows_trec_order_on_ties():
    # three documents tie at the top score; trec_eval orders ties by docid descending: z, y, x.
    run = {"q": [("x", 1.0), ("y", 1.0), ("z", 1.0)]}
    assert score_run(run, {"q": {"x": 1}})["per_query"]["q"]["mrr@10"] == pytest.approx(1 / 3)
    assert score_run(run, {"q": {"z": 1}})["per_query"]["q"]["mrr@10"] == pytest.approx(1.0)


def test_bad_threshold_refused():
    with pytest.raises(ValueError, match="relevance_threshold"):
        score_run(HAND_RUN, HAND_QRELS, relevance_threshold=0)


def test_run_file_round_trip(tmp_path):
    path = tmp_path / "run.trec"
    write_run(HAND_RUN, path)
    back = read_run(path)
    assert list(back) == list(HAND_RUN)
    for qid, ranked in HAND_RUN.items():
        assert [d for d, _s in back[qid]] == [d for d, _s in ranked]
        assert [s for _d, s in back[qid]] == pytest.approx([s for _d, s in ranked], abs=1e-6)
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "d3", "1", "0.900000", "lead_dist"]


def test_run_file_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 two 0.4 tag\n")
    with pytest.raises(ValueError, match=r"bad.trec:2"):
        read_run(path)
