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
