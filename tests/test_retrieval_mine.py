"""Mining: the depth range is honoured, every positive is removed, and the shards hold what was mined."""

from __future__ import annotations

import json

import pytest

from lead_dist.cli import main as cli_main
from lead_dist.data.readers.trec_run import parse_depth
from lead_dist.retrieval.mine import mine_negatives, negatives_as_run
from lead_dist.retrieval.runfile import write_run


def test_depth_range_and_positive_removal():
    run = {
        "q1": [(f"d{i}", 1 - i / 100) for i in range(1, 11)],  # d1..d10 at ranks 1..10
        "q2": [("x", 0.9), ("y", 0.8)],
        "q3": [("z", 0.5)],  # judged only as non-relevant: no positive, no example
    }
    # positives of q1: d4 (rank 4) and d9 (rank 9) inside the range, d1 outside; grade-0 d5 stays a negative
    qrels = {"q1": {"d1": 1, "d4": 2, "d9": 1, "d5": 0}, "q2": {"x": 1}, "q3": {"z": 0}}
    report = mine_negatives(run, qrels, (3, 9))
    assert report.negatives["q1"] == ["d3", "d5", "d6", "d7", "d8"]  # ranks 3..9 minus d4 and d9
    assert report.negatives["q2"] == []  # the run is shorter than the range
    assert "q3" not in report.negatives
    assert (report.queries_mined, report.queries_without_positives) == (2, 1)
    assert report.positives_removed == 2
    assert report.queries_short == 2
    # ids are compared as strings: the reference's str/int mix-up cannot happen
    numeric = mine_negatives({"7": [("12", 1.0), ("13", 0.5)]}, {"7": {"12": 1}}, (1, 2))
    assert numeric.negatives == {"7": ["13"]}
    assert negatives_as_run(report, run)["q1"][0] == ("d3", pytest.approx(0.97))


def test_parse_depth():
    assert parse_depth("30:200") == (30, 200)
    assert parse_depth("100") == (1, 100)
    for bad in ("0:5", "9:3", "a:b"):
        with pytest.raises(ValueError, match="depth"):
            parse_depth(bad)


def test_mine_cli_writes_training_shards(tmp_path):
    from lead_dist.data import read_manifest, read_shard
    from lead_dist.data.manifest import file_sha256

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    with open(data / "corpus.jsonl", "w") as handle:
        for i in range(30):
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"passage number {i}"}) + "\n")
    with open(data / "queries.jsonl", "w") as handle:
        for q in range(4):
            handle.write(json.dumps({"_id": f"q{q}", "text": f"query {q}"}) + "\n")
    positives = {f"q{q}": {f"d{q}", f"d{q + 10}"} for q in range(4)}
    with open(data / "qrels" / "train.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in positives.items():
            handle.writelines(f"{qid}\t{d}\t1\n" for d in sorted(docs))
    # every query retrieves all 30 passages, its positives at ranks 1 and 3
    run = {}
    for q in range(4):
        others = [f"d{i}" for i in range(30) if f"d{i}" not in positives[f"q{q}"]]
        order = [f"d{q}", others[0], f"d{q + 10}", *others[1:]]
        run[f"q{q}"] = [(d, 1.0 - r / 100) for r, d in enumerate(order)]
    write_run(run, tmp_path / "run.trec")
    out = tmp_path / "shards"
    args = ["mine", "--run", str(tmp_path / "run.trec"), "--input", str(data), "--depth", "1:8", "--out", str(out)]
    assert cli_main([*args, "--shards", "2"]) == 0
    report = json.loads((out / "mining_report.json").read_text())
    assert (report["queries_mined"], report["positives_removed"]) == (4, 8)
    manifest = read_manifest(out)
    # The negatives are recorded where they were kept (prepare read them from a scratch copy, since removed).
    kept = out / "negatives.trec"
    assert manifest["options"]["negatives_run"] == str(kept)
    [negatives] = [s for s in manifest["sources"] if s["path"].endswith("negatives.trec")]
    assert negatives["path"] == str(kept) and negatives["sha256"] == file_sha256(kept)
    records = [r for entry in manifest["shards"]["train"] for r in read_shard(out / entry["name"], entry["count"])]
    assert sorted(r["qid"] for r in records) == ["q0", "q1", "q2", "q3"]
    for record in records:
        assert len(record["neg_ids"]) == 6  # ranks 1..8 minus the two positives
        assert not set(record["neg_ids"]) & positives[record["qid"]]
        assert set(record["pos_ids"]) == positives[record["qid"]]
