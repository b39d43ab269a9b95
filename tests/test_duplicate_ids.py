"""Repeated ids (issue 21, BAD item 4): every verb that reads a corpus, queries or qrels keeps the first occurrence of
an id (as `prepare` always did) and counts the rest where its user looks: evaluate's and rerank's input_report,
encode's and search's summary, mine's report, split.json. A run never lists a document twice for a query."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lead_dist.cli import main as cli_main


def _beir_with_repeats(folder: Path) -> Path:
    """Six passages, p2 given twice (line 4 repeats line 3); q1 given twice (line 3); q0:p0 judged twice (line 3)."""
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"p{i}", "title": "", "text": f"passage {i} about topic {i}"} for i in range(6)]
    corpus.insert(3, {"_id": "p2", "title": "", "text": "a second passage that claims the id p2"})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": "q0", "text": "topic 0"}, {"_id": "q1", "text": "topic 1"}, {"_id": "q1", "text": "again"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    for split in ("test", "train"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp0\t1\nq0\tp0\t2\nq1\tp1\t1\n")
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _beir_with_repeats(tmp_path / "data")


def _run_lines(path: Path) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[2]) for line in path.read_text().splitlines()]


def test_evaluate_keeps_the_first_of_each_id_and_counts_the_rest(tmp_path, data, tiny_bert_dir, capsys):
    out, run = tmp_path / "r.json", tmp_path / "r.trec"
    argv = ["evaluate", "--model", str(tiny_bert_dir), "--data", str(data), "--out", str(out), "--run-out", str(run),
            "--top-k", "10", "--quiet"]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    pairs = _run_lines(run)
    assert len(pairs) == len(set(pairs)) == 2 * 6  # every query, every one of the 6 distinct passages, once
    report = json.loads(out.read_text())["input_report"]
    assert (report["duplicate_passages"], report["duplicate_queries"], report["duplicate_judgements"]) == (1, 1, 1)
    assert report["examples"]["duplicate_passages"] == [f"p2 ({data / 'corpus.jsonl'}:4)"]
    assert report["examples"]["duplicate_queries"] == [f"q1 ({data / 'queries.jsonl'}:3)"]
    assert report["examples"]["duplicate_judgements"] == [f"q0:p0 ({data / 'qrels' / 'test.tsv'}:3)"]
    emb = tmp_path / "r.embeddings"
    ids = [i for p in sorted(emb.glob("shard-*.ids.json")) for i in json.loads(p.read_text())]
    assert ids == [f"p{i}" for i in range(6)]  # the first p2 is the one encoded

    first = tmp_path / "first.trec"
    first.write_text("q0 Q0 p2 1 3.0 x\nq0 Q0 p0 2 2.0 x\nq1 Q0 p1 1 1.0 x\n")
    reranked = tmp_path / "rr.json"
    argv = ["rerank", "--model", str(tiny_bert_dir), "--kind", "de", "--data", str(data), "--first-stage", str(first),
            "--out", str(reranked), "--quiet"]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    report = json.loads(reranked.read_text())["input_report"]
    assert (report["duplicate_passages"], report["duplicate_queries"], report["duplicate_judgements"]) == (1, 1, 1)


def test_encode_search_mine_and_split_count_repeats(tmp_path, data, tiny_bert_dir, capsys):
    emb = tmp_path / "emb"
    assert cli_main(["encode", "--model", str(tiny_bert_dir), "--corpus", str(data), "--out", str(emb), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["duplicate_passages"] == 1 and summary["duplicate_passage_examples"] == [
        f"p2 ({data / 'corpus.jsonl'}:4)"
    ]
    run = tmp_path / "s.trec"
    argv = ["search", "--model", str(tiny_bert_dir), "--index", str(emb), "--queries", str(data), "--qrels",
            str(data / "qrels" / "test.tsv"), "--out", str(run), "--top-k", "10"]  # fmt: skip
    assert cli_main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["queries"], summary["duplicate_queries"], summary["duplicate_judgements"]) == (2, 1, 1)
    assert len(_run_lines(run)) == len(set(_run_lines(run))) == 12

    mined = tmp_path / "mined"
    argv = ["mine", "--run", str(run), "--input", str(data), "--split", "train", "--depth", "1:10", "--out", str(mined),
            "--negatives-only"]  # fmt: skip
    assert cli_main(argv) == 0
    assert json.loads((mined / "mining_report.json").read_text())["duplicate_judgements"] == 1

    split = tmp_path / "split"
    argv = ["split", "--data", str(data), "--split", "train", "--dev-fraction", "0.5", "--out", str(split),
            "--dev-corpus-size", "6"]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert json.loads((split / "split.json").read_text())["duplicate_judgements"] == 1
    rows = [
        line for name in ("train", "dev") for line in (split / "qrels" / f"{name}.tsv").read_text().splitlines()[1:]
    ]
    assert sorted(rows) == ["q0\tp0\t1", "q1\tp1\t1"]  # the first grade of q0:p0, once
    dev_ids = [json.loads(line)["_id"] for line in (split / "dev_corpus" / "corpus.jsonl").read_text().splitlines()]
    assert len(dev_ids) == len(set(dev_ids)) == 6
    assert (
        json.loads((split / "dev_corpus" / "corpus.jsonl").read_text().splitlines()[2])["text"]
        == "passage 2 about topic 2"
    )
