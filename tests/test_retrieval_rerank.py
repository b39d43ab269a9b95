"""Re-ranking (lead_dist/retrieval/rerank.py and `lead-dist rerank`): each kind's re-ranked scores equal the
model's own scores computed directly, a DE re-ranking everything equals exact search, depth cuts as documented,
bad input is refused with a clear message, and 2 ranks equal 1 (a real 2-process launch)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from rounding import assert_same_ranking, reorder_bound

from lead_dist.cli import main as cli_main
from lead_dist.data.readers.trec_run import read_run
from lead_dist.models import load_model
from lead_dist.retrieval.evaluate import retrieve
from lead_dist.retrieval.metrics import score_run
from lead_dist.retrieval.rerank import RerankInputs, candidates_from_run, rerank
from lead_dist.retrieval.runfile import write_run
from lead_dist.retrieval.text_encoder import as_text_encoder

WORDS = "cell protein gene virus dose trial brain mouse risk blood heart lung tumor drug rate".split()


def _corpus(num_docs: int = 40, seed: int = 3) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    rng = random.Random(seed)
    passages = {
        f"d{i}": {
            "title": rng.choice(WORDS) if i % 3 else "",
            "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 30))),
        }
        for i in range(num_docs)
    }  # very different lengths: padding must not change any score
    queries = {f"q{q}": " ".join(rng.choices(WORDS, k=rng.randint(2, 6))) for q in range(5)}
    return queries, passages


def _shuffled_run(queries, passages, seed: int = 5):
    rng = random.Random(seed)
    run = {}
    for qid in queries:
        docids = list(passages)
        rng.shuffle(docids)
        run[qid] = [(d, float(len(docids) - i)) for i, d in enumerate(docids)]
    return run


def _model(tiny_bert_dir, kind: str, **options):
    torch.manual_seed(0)
    return load_model(tiny_bert_dir, kind=kind, **options)


def test_de_reranking_everything_equals_exact_search(tiny_bert_dir):
    model = _model(tiny_bert_dir, "de", pooling="mean", similarity="cos")
    queries, passages = _corpus()
    candidates = candidates_from_run(_shuffled_run(queries, passages), 40, sorted(queries))
    reranked, timings = rerank(model, RerankInputs(queries, candidates, passages), passage_max_length=48,
                               batch_size=7)  # fmt: skip
    assert timings["pairs"] == 5 * 40
    records = [{"id": d, **p} for d, p in passages.items()]
    exact, _ = retrieve(as_text_encoder(model), [queries[q] for q in sorted(queries)], records, k=40,
                        passage_max_length=48)  # fmt: skip
    for qid, (ids, scores) in zip(sorted(queries), zip(exact.doc_ids, exact.scores, strict=True), strict=True):
        # exact search scores cosines; the DE's score multiplies them by its scale
        expected = np.asarray(scores, dtype=np.float64) * model.scale
        # The two encode the passages in other batches (other padding, other kernels): the encoder's rounding is
        # allowed a relative 1e-5 (its probabilistic size, tests/rounding.py), and the cosine of unit vectors in D
        # dimensions rounds by up to D eps32 however small it is, hence an absolute term too.
        dot_rounding = model.scale * reorder_bound(model.hidden_size, 1.0)
        np.testing.assert_allclose([s for _, s in reranked[qid]], expected, rtol=1e-5, atol=dot_rounding)
        # Neighbours closer than twice that may trade places (this data has neighbours 1.4e-4 apart at scale 20).
        tie = 2 * (1e-5 * float(np.abs(expected).max()) + dot_rounding)
        assert_same_ranking(list(ids), [d for d, _ in reranked[qid]], expected.tolist(), tie, qid)


def test_cb_scores_from_cached_tokens_equal_one_padded_batch(tiny_bert_dir):
    model = _model(tiny_bert_dir, "cb", projection_dim=16).eval()
    queries, passages = _corpus(num_docs=25)
    candidates = candidates_from_run(_shuffled_run(queries, passages), 12, sorted(queries))
    reranked, _ = rerank(model, RerankInputs(queries, candidates, passages), query_max_length=16,
                         passage_max_length=40, batch_size=4)  # fmt: skip
    with torch.no_grad():
        for qid, docids in candidates.items():
            q = model(**model.tokenize_queries([queries[qid]], 16))
            chosen = [passages[d] for d in docids]
            p = model(**model.tokenize_passages([c["title"] for c in chosen], [c["text"] for c in chosen], 40))
            direct = dict(zip(docids, type(model).score(q, p)[0][0].tolist(), strict=True))
            got = dict(reranked[qid])
            assert sorted(got) == sorted(docids)
            for docid in docids:
                assert got[docid] == pytest.approx(direct[docid], rel=1e-5, abs=1e-5)
            assert [s for _, s in reranked[qid]] == sorted(got.values(), reverse=True)


def test_ce_batched_sorted_scores_equal_one_pair_at_a_time(tiny_bert_dir):
    model = _model(tiny_bert_dir, "ce").eval()
    queries, passages = _corpus(num_docs=15)
    candidates = candidates_from_run(_shuffled_run(queries, passages), 9, sorted(queries))
    reranked, timings = rerank(model, RerankInputs(queries, candidates, passages), query_max_length=12,
                               passage_max_length=30, batch_size=7)  # fmt: skip
    assert timings["pairs"] == 45
    with torch.no_grad():
        for qid, docids in candidates.items():
            got = dict(reranked[qid])
            for docid in docids:
                p = passages[docid]
                alone = model(**model.tokenize_pairs([queries[qid]], [p["title"]], [p["text"]], 42))[0]
                assert got[docid] == pytest.approx(float(alone[0]), rel=1e-5, abs=1e-5)


def test_depth_reranks_the_first_stage_top_only_and_keeps_recall_at_depth(tiny_bert_dir):
    model = _model(tiny_bert_dir, "ce").eval()
    queries, passages = _corpus()
    first = _shuffled_run(queries, passages)
    rng = random.Random(11)
    qrels = {qid: {d: 1 for d in rng.sample(list(passages), 4)} for qid in queries}
    candidates = candidates_from_run(first, 10, sorted(queries))
    reranked, _ = rerank(model, RerankInputs(queries, candidates, passages), passage_max_length=30)
    for qid in queries:
        assert {d for d, _ in reranked[qid]} == {d for d, _ in first[qid][:10]}
    cut_first = {qid: ranked[:10] for qid, ranked in first.items()}
    assert score_run(reranked, qrels)["metrics"]["recall@100"] == pytest.approx(
        score_run(cut_first, qrels)["metrics"]["recall@100"]
    )
    with pytest.raises(ValueError, match="depth must be >= 1"):
        candidates_from_run(first, 0, ["q0"])
    with pytest.raises(KeyError, match="not in the corpus"):
        rerank(model, RerankInputs(queries, {"q0": ["nope"]}, passages))


def _beir(root, queries, passages, seed: int = 2):
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as handle:
        for docid, p in passages.items():
            handle.write(json.dumps({"_id": docid, **p}) + "\n")
    with open(root / "queries.jsonl", "w") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(root / "qrels" / "test.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid in list(queries)[:4]:  # the last query has no judgments
            for docid in rng.sample(list(passages), 3):
                handle.write(f"{qid}\t{docid}\t1\n")


@pytest.fixture()
def rerank_case(tiny_bert_dir, tmp_path):
    queries, passages = _corpus()
    _beir(tmp_path / "data", queries, passages)
    write_run(_shuffled_run(queries, passages), tmp_path / "first.trec")
    ce = _model(tiny_bert_dir, "ce")
    ce.save(tmp_path / "ce")  # a trained-looking CE: its head is stored, so nothing is fresh when loaded
    args = ["--model", str(tmp_path / "ce"), "--data", str(tmp_path / "data"), "--first-stage", str(tmp_path / "first.trec"),
            "--depth", "20", "--passage-max-length", "30", "--batch-size", "16", "--quiet"]  # fmt: skip
    return tmp_path, args


def test_cli_rerank_writes_evaluate_style_results(rerank_case):
    tmp_path, args = rerank_case
    assert cli_main(["rerank", *args, "--out", str(tmp_path / "r.json"), "--run-out", str(tmp_path / "r.trec")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["num_queries"] == 4 and results["settings"]["kind"] == "ce"
    assert results["settings"]["world_size"] == 1 and results["timings"]["pairs"] == 4 * 20
    assert set(results["metrics"]) >= {"ndcg@10", "mrr@10", "recall@100"}
    # only the first stage's top 20 were re-ranked: deeper recall is the first stage's recall@20
    first_at_20 = {q: r[:20] for q, r in read_run(tmp_path / "first.trec").items()}
    qrels_file = tmp_path / "data" / "qrels" / "test.tsv"
    from lead_dist.data.readers.qrels import read_qrels

    expected = score_run(first_at_20, read_qrels(qrels_file))["metrics"]["recall@100"]
    assert results["metrics"]["recall@100"] == pytest.approx(expected)
    assert all(len(ranked) == 20 for ranked in read_run(tmp_path / "r.trec").values())


def test_cli_rerank_refuses_untrained_heads_and_foreign_runs(rerank_case, tiny_bert_dir, capsys):
    tmp_path, args = rerank_case

    def refused(argv: list[str], expected: str) -> None:
        assert cli_main(["rerank", *argv, "--out", str(tmp_path / "x.json")]) == 2  # bad input: one line, exit 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("lead-dist rerank: error:")]
        assert len(errors) == 1 and expected in errors[0] and "Traceback" not in err, err

    refused(["--model", str(tiny_bert_dir), "--kind", "ce", *args[2:]], "freshly initialised")
    refused(["--model", str(tiny_bert_dir), *args[2:]], "pass --kind")
    (tmp_path / "foreign.trec").write_text("q0 Q0 elsewhere-7 1 3.0 other\n")
    refused([a if a != str(tmp_path / "first.trec") else str(tmp_path / "foreign.trec") for a in args], "lacks")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.multiprocess
def test_two_ranks_rerank_equals_one(rerank_case):
    from test_retrieval_multiprocess import _launch

    tmp_path, args = rerank_case
    assert cli_main(["rerank", *args, "--out", str(tmp_path / "one.json")]) == 0
    _launch(["rerank", *args, "--out", str(tmp_path / "two.json")])
    one, two = (json.loads((tmp_path / n).read_text()) for n in ("one.json", "two.json"))
    assert two["settings"]["world_size"] == 2 and len(two["timings"]["rerank_s_per_rank"]) == 2
    assert two["timings"]["pairs"] == one["timings"]["pairs"] == 80
    assert sorted(two["per_query"]) == sorted(one["per_query"])
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, abs=1e-9), key
