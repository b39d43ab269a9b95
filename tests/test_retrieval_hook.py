"""The trainer's hook `evaluate_model`: same numbers as brute force + score_run; training mode restored."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lead_dist.retrieval import evaluate_model
from lead_dist.retrieval.metrics import score_run

WORDS = "cell protein gene virus dose trial brain mouse risk blood heart lung tumor drug rate".split()


def test_evaluate_model_equals_brute_force(tiny_bert_dir):
    from lead_dist.models import load_model

    rng = random.Random(11)
    corpus = [
        {"id": f"d{i}", "title": "", "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 30)))} for i in range(60)
    ]
    corpus[5]["text"] = ""  # counted as empty
    queries = {f"q{i}": " ".join(rng.choices(WORDS, k=3)) for i in range(8)}
    qrels = {f"q{i}": {f"d{rng.randrange(60)}": rng.randint(1, 2)} for i in range(6)}
    qrels["q0"]["not-in-corpus"] = 1
    model = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos").train()

    result = evaluate_model(model, queries, corpus, qrels, k=10, passage_max_length=48, batch_size=16)
    assert model.training  # restored after the eval-mode pass

    model.eval()
    with torch.inference_mode():
        p = model(**model.tokenize_passages([""] * 60, [r["text"] for r in corpus], 48)).final.numpy()
        qids = sorted(qrels)
        q = model(**model.tokenize_queries([queries[x] for x in qids], 64)).final.numpy()
    scores = q @ p.T
    run = {}
    for row, qid in enumerate(qids):
        order = np.argsort(-scores[row])[:10]
        run[qid] = [(corpus[i]["id"], float(scores[row, i])) for i in order]
    expected = score_run(run, qrels)["metrics"]
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key
    report = result["input_report"]
    assert (report["empty_passages"], report["qrels_docs_absent_from_corpus"], report["queries_without_judgments"]) == (
        1,
        1,
        2,
    )
    assert result["num_queries"] == 6


def test_the_evaluate_verb_and_the_hook_give_the_same_result(tiny_bert_dir, tmp_path):
    """One pipeline: `lead-dist evaluate` (corpus encoded into an embeddings folder) and `evaluate_model` (corpus
    encoded in memory) share everything after the encoding, and encode the same batches (one shard, fewer than 64
    queries), so metrics, per-query values and the input report agree exactly."""
    import json

    from lead_dist.cli import main as cli_main
    from lead_dist.models import load_model

    rng = random.Random(3)
    corpus = [
        {"id": f"d{i}", "title": rng.choice(["", "gene"]), "text": " ".join(rng.choices(WORDS, k=rng.randint(1, 20)))}
        for i in range(40)
    ]
    corpus[7]["title"], corpus[7]["text"] = "", ""
    queries = {f"q{i}": " ".join(rng.choices(WORDS, k=3)) for i in range(10)}
    qrels = {f"q{i}": {f"d{rng.randrange(40)}": rng.randint(1, 2), "absent": 1} for i in range(7)}
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": r["id"], **r}) + "\n" for r in corpus))
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (data / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{g}\n" for q, docs in qrels.items() for d, g in docs.items())
    )
    load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos").save(tmp_path / "model")

    args = ["--model", str(tmp_path / "model"), "--data", str(data), "--out", str(tmp_path / "verb.json")]
    assert cli_main(["evaluate", *args, "--top-k", "10", "--passage-max-length", "32", "--quiet"]) == 0
    verb = json.loads((tmp_path / "verb.json").read_text())
    hook = evaluate_model(load_model(tmp_path / "model"), queries, corpus, qrels, k=10, passage_max_length=32)
    assert verb["metrics"] == hook["metrics"]
    assert verb["per_query"] == hook["per_query"]
    assert verb["input_report"] == hook["input_report"]
    assert (hook["input_report"]["empty_passages"], hook["input_report"]["qrels_docs_absent_from_corpus"]) == (1, 7)
