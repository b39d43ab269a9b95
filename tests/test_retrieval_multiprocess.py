"""2-rank encode + search (+ evaluate) equals 1 rank: real 2-process launches over gloo."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from rounding import assert_same_ranking, reorder_bound

from lead_dist.cli import main as cli_main
from lead_dist.data.readers.trec_run import read_run
from lead_dist.retrieval.store import iter_shards, read_manifest

pytestmark = pytest.mark.multiprocess
WORDS = "cell protein gene virus dose trial brain mouse risk blood heart lung tumor drug rate".split()


def _beir_folder(root):
    rng = random.Random(7)
    root.mkdir()
    (root / "qrels").mkdir()
    with open(root / "corpus.jsonl", "w") as handle:
        for i in range(101):  # odd: ranks get unequal shares
            text = " ".join(rng.choices(WORDS, k=rng.randint(3, 40)))
            handle.write(json.dumps({"_id": f"d{i}", "title": rng.choice(WORDS), "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as handle:
        for q in range(12):
            handle.write(json.dumps({"_id": f"q{q}", "text": " ".join(rng.choices(WORDS, k=4))}) + "\n")
    with open(root / "qrels" / "test.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for q in range(10):  # q10, q11 have no judgments
            for d in rng.sample(range(101), 3):
                handle.write(f"q{q}\td{d}\t{rng.randint(1, 2)}\n")
        handle.write("q0\tmissing-doc\t1\n")


def _launch(args, nproc=2):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(29500 + random.Random().randint(0, 2000)), "-m", "lead_dist.cli", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return _json_objects(done.stdout)


def _json_objects(text: str) -> list[dict]:
    """Every JSON object printed; two ranks' lines may share a line of the launcher's merged output."""
    decoder, found, position = json.JSONDecoder(), [], text.find("{")
    while position >= 0:
        try:
            obj, end = decoder.raw_decode(text, position)
            found.append(obj)
            position = text.find("{", end)
        except json.JSONDecodeError:
            position = text.find("{", position + 1)
    return [obj for obj in found if isinstance(obj, dict) and "world_size" in obj]


def test_two_ranks_equal_one_rank(tiny_bert_dir, tmp_path):
    data = tmp_path / "data"
    _beir_folder(data)
    common = ["--model", str(tiny_bert_dir), "--batch-size", "8", "--quiet"]
    enc = ["--corpus", str(data), "--passage-max-length", "48"]
    search = ["--queries", str(data), "--qrels", str(data / "qrels" / "test.tsv"), "--top-k", "20"]

    assert cli_main(["encode", *common, *enc, "--out", str(tmp_path / "emb1")]) == 0
    assert cli_main(["search", *common, *search, "--index", str(tmp_path / "emb1"), "--out", str(tmp_path / "r1")]) == 0

    summaries = _launch(["encode", *common, *enc, "--out", str(tmp_path / "emb2")])
    assert sorted(s["rank"] for s in summaries) == [0, 1]
    assert all(s["world_size"] == 2 for s in summaries)
    assert read_manifest(tmp_path / "emb2")["num_shards"] == 2  # one contiguous shard per rank: 51 + 50
    assert sum(s["encoded"] for s in summaries) == 101
    one = np.concatenate([v for v, _ in iter_shards(tmp_path / "emb1")])
    two = np.concatenate([v for v, _ in iter_shards(tmp_path / "emb2")])
    assert [i for _v, ids in iter_shards(tmp_path / "emb2") for i in ids] == [f"d{i}" for i in range(101)]
    np.testing.assert_allclose(two, one, atol=1e-5)

    # 2-rank search of the 2-rank shards (each rank its own shard, merged) == 1-rank search of the 1-rank folder
    searched = _launch(["search", *common, *search, "--index", str(tmp_path / "emb2"), "--out", str(tmp_path / "r2")])
    assert [s["world_size"] for s in searched] == [2]  # printed by rank 0 only
    run1, run2 = read_run(tmp_path / "r1"), read_run(tmp_path / "r2")
    assert sorted(run1) == [f"q{i}" for i in range(10)]
    # A score is q . p over D dimensions, q and p mean-pooled states of a fresh BERT whose last LayerNorm (weight 1,
    # bias 0) gives every token state the norm sqrt(D): so |q|_1, |p|_1 <= D and sum|q_d p_d| <= D. The passages of
    # the two runs differ by at most 1e-5 per coordinate (asserted above; the queries, encoded alike by both
    # searches, by no more), the dot product rounds by at most D eps32 sum|q_d p_d| (tests/rounding.py) and the run
    # file prints 6 decimals.
    dim = one.shape[1]
    score_bound = 1e-5 * 2 * dim + reorder_bound(dim, dim) + 1e-6
    for qid in run1:
        scores = [s for _, s in run1[qid]]
        np.testing.assert_allclose([s for _, s in run2[qid]], scores, rtol=0, atol=score_bound)
        # Neighbours closer than twice that may trade places (this data's closest are 2.8e-4 apart, the next 1.6e-3);
        # the metrics below stay equal unless such a swap crosses a relevance level, which none does here.
        assert_same_ranking([d for d, _ in run1[qid]], [d for d, _ in run2[qid]], scores, 2 * score_bound, qid)

    # evaluate end to end: same metrics; bad input counted
    ev = ["--data", str(data), "--split", "test", "--top-k", "20", "--passage-max-length", "48"]
    assert cli_main(["evaluate", *common, *ev, "--out", str(tmp_path / "e1.json")]) == 0
    _launch(["evaluate", *common, *ev, "--out", str(tmp_path / "e2.json")])
    e1, e2 = (json.loads((tmp_path / name).read_text()) for name in ("e1.json", "e2.json"))
    assert e2["settings"]["world_size"] == 2 and e1["settings"]["world_size"] == 1
    for key, value in e1["metrics"].items():
        assert e2["metrics"][key] == pytest.approx(value, abs=1e-9), key
    assert e1["input_report"]["qrels_docs_absent_from_corpus"] == 1
    assert e1["input_report"]["queries_without_judgments"] == 2
    assert e1["num_queries"] == 10 and len(e1["per_query"]) == 10
