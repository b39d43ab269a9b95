"""`lead-dist prepare`: real SciFact counts and byte-identical shards, every input format, drops and their
accounting, run-file negatives, and the embedded demo dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_data_fixtures import run_prepare, write_beir

from lead_dist.cli import main as cli_main
from lead_dist.data.demo_dataset import write_demo_dataset
from lead_dist.data.errors import DataFormatError, DropShareExceeded
from lead_dist.data.shards import read_shard

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def train_records(folder: Path) -> list[dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [r for s in manifest["shards"]["train"] for r in read_shard(folder / s["name"], s["count"])]


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="SciFact is not at ../shared/data/scifact on this machine")
def test_scifact_train_counts_and_byte_identical_shards(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        manifest = run_prepare("--format", "beir", "--input", SCIFACT, "--split", "train", "--out", out)
        assert manifest["num_queries"] == 809
        assert manifest["num_positive_pairs"] == 919
        assert manifest["drops"]["records"] == []
        assert manifest["negatives_per_query"]["max"] == 0  # SciFact train has no negative source
    shard_names = sorted(p.name for p in first.glob("*.tar"))
    assert shard_names == sorted(p.name for p in second.glob("*.tar"))
    assert any(n.startswith("train-") for n in shard_names) and any(n.startswith("corpus-") for n in shard_names)
    for name in shard_names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    manifest = json.loads((first / "manifest.json").read_text())
    sizes = [s["count"] for s in manifest["shards"]["train"]]
    assert sum(sizes) == 809 and max(sizes) - min(sizes) <= 1
    # Shard contents against the qrels file itself (not the code under test): every pair exactly once.
    lines = (SCIFACT / "qrels" / "train.tsv").read_text().splitlines()[1:]
    expected_pairs = {tuple(line.split("\t")[:2]) for line in lines}
    records = train_records(first)
    assert {(r["qid"], p) for r in records for p in r["pos_ids"]} == expected_pairs
    assert len(records) == len({r["qid"] for r in records}) == 809
    source = next(s for s in manifest["sources"] if s["path"].endswith("train.tsv"))
    assert source["sha256"] == hashlib.sha256((SCIFACT / "qrels" / "train.tsv").read_bytes()).hexdigest()
    corpus_count = sum(s["count"] for s in manifest["shards"]["corpus"])
    assert corpus_count == len((SCIFACT / "corpus.jsonl").read_text().splitlines()) == 5183


def test_shards_are_readable_by_webdataset(tmp_path: Path) -> None:
    import webdataset as wds

    write_beir(tmp_path / "src", num_queries=10, num_passages=12)
    manifest = run_prepare("--format", "beir", "--input", tmp_path / "src", "--out", tmp_path / "out", "--shards", "2")
    urls = [str(tmp_path / "out" / s["name"]) for s in manifest["shards"]["train"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node))
    decoded = [json.loads(s["json"]) for s in samples]
    ours = train_records(tmp_path / "out")
    assert [{k: v for k, v in d.items() if k != "_crc32"} for d in decoded] == ours
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(10)]


def test_drops_are_listed_with_file_line_and_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_beir(src, num_queries=6, num_passages=6)
    with (src / "corpus.jsonl").open("a") as handle:  # line 7: a repeated id, line 8: an empty passage
        handle.write(json.dumps({"_id": "p0", "title": "again", "text": "duplicate"}) + "\n")
        handle.write(json.dumps({"_id": "p99", "title": "", "text": "  "}) + "\n")
    with (src / "queries.jsonl").open("a") as handle:  # line 7: empty query text
        handle.write(json.dumps({"_id": "q6", "text": ""}) + "\n")
    with (src / "qrels" / "train.tsv").open("a") as handle:  # lines 8-10 of the qrels
        handle.write("q6\tp1\t1\nq0\tp404\t1\nq1\tp1\t1\n")
    manifest = run_prepare("--format", "beir", "--input", src, "--out", tmp_path / "out", "--max-drop-share", "0.5")
    found = {(Path(d["source"]).name, d["line"], d["kind"], d["reason"]) for d in manifest["drops"]["records"]}
    assert found == {
        ("corpus.jsonl", 7, "passages", "duplicate passage id (first kept)"),
        ("corpus.jsonl", 8, "passages", "empty title and text"),
        ("queries.jsonl", 7, "queries", "empty query text"),
        ("train.tsv", 8, "judgements", "query id not in queries (or dropped)"),
        ("train.tsv", 9, "judgements", "passage id not in corpus (or dropped)"),
        ("train.tsv", 10, "judgements", "duplicate judgement (first kept)"),
    }
    assert manifest["num_queries"] == 6 and manifest["num_positive_pairs"] == 6
    assert manifest["drops"]["totals"]["judgements"] == 9
    assert manifest["drops"]["shares"]["judgements"] == pytest.approx(3 / 9)
    # The same input with the default 5% threshold fails, naming the kind and a file:line.
    with pytest.raises(DropShareExceeded, match=r"judgements: 33\.33% dropped.*train\.tsv:8"):
        run_prepare("--format", "beir", "--input", src, "--out", tmp_path / "strict")
    assert not (tmp_path / "strict").exists()  # nothing written when the check fails
    assert cli_main(["prepare", "--format", "beir", "--input", str(src), "--out", str(tmp_path / "s2")]) == 2


def test_run_file_negatives_with_depth_and_positives_removed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_beir(src, num_queries=3, num_passages=8, positives={"q0": ["p0"], "q1": ["p1", "p2"], "q2": ["p2"]})
    run = tmp_path / "run.trec"
    lines = []
    # q0's ranking by score: p5, p0(positive), p3, p404(missing), p6, p7 ; rank column deliberately scrambled.
    for docid, score in [("p3", 7.0), ("p5", 9.0), ("p0", 8.0), ("p404", 6.0), ("p6", 5.0), ("p7", 4.0)]:
        lines.append(f"q0 Q0 {docid} 1 {score} bm25")
    # q1: p2 and p1 are both positives, p4 is the only negative inside the depth; q2: only its positive.
    lines += ["q1 Q0 p1 1 3.0 x", "q1 Q0 p4 2 2.0 x", "q1 Q0 p2 3 1.0 x", "q1 Q0 p7 4 0.5 x"]
    lines += ["q2 Q0 p2 1 3.0 x", "q9 Q0 p1 1 1.0 x"]
    run.write_text("\n".join(lines) + "\n")
    manifest = run_prepare(
        "--format", "beir", "--input", src, "--out", tmp_path / "out", "--negatives-run", run, "--depth", "2:5",
        "--max-drop-share", "0.5",
    )  # fmt: skip
    records = {r["qid"]: r for r in train_records(tmp_path / "out")}
    # positions 2..5 of q0: p0 (positive, removed), p3, p404 (not in corpus), p6
    assert records["q0"]["neg_ids"] == ["p3", "p6"]
    assert records["q0"]["neg_texts"] == ["text of passage 3", "text of passage 6"]
    assert records["q1"]["neg_ids"] == ["p4", "p7"]  # positions 2..4: p4, p2 (positive, removed), p7
    assert "q2" not in records  # its only ranked document is its positive: no negative left, dropped and counted
    assert manifest["stats"]["negatives_removed_as_positive"] == 2  # q0's p0 and q1's p2
    assert manifest["stats"]["negative_lists_for_queries_without_positives"] == 1  # q9
    reasons = {(d["kind"], d["id"], d["reason"]) for d in manifest["drops"]["records"]}
    assert reasons == {
        ("negatives", "p404", "passage id not in corpus (or dropped)"),
        ("examples", "q2", "no negative left after filtering"),
    }
    assert manifest["negatives_per_query"] == {
        "min": 2, "max": 2, "mean": 2.0, "median": 2.0, "queries_without_negatives": 0,
    }  # fmt: skip


def test_msmarco_files_and_triples(tmp_path: Path) -> None:
    data = tmp_path / "msmarco"  # apart from --out: an --out inside an input is refused
    data.mkdir()
    (data / "collection.tsv").write_text("".join(f"{i}\tpassage {i}\n" for i in range(6)))
    (data / "queries.train.tsv").write_text("10\tfirst query\n11\tsecond query\n")
    (data / "qrels.train.tsv").write_text("10 0 1 1\n11 0 2 1\n")
    (data / "triples.tsv").write_text("10\t1\t3\n10\t1\t4\n10\t1\t3\n11\t5\t0\n")
    manifest = run_prepare(
        "--format", "msmarco", "--input", data, "--triples", data / "triples.tsv", "--out", tmp_path / "out"
    )
    records = {r["qid"]: r for r in train_records(tmp_path / "out")}
    assert records["10"]["pos_ids"] == ["1"] and records["10"]["neg_ids"] == ["3", "4"]
    assert records["11"]["pos_ids"] == ["2", "5"] and records["11"]["neg_ids"] == ["0"]
    assert manifest["stats"]["positives_added_from_triples"] == 1
    assert manifest["stats"]["negatives_duplicates_removed"] == 1
    (data / "bad.tsv").write_text("10\tok\nabc\tnot numeric\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:2: expected a numeric query id"):
        run_prepare("--format", "msmarco", "--input", data, "--queries", data / "bad.tsv", "--out", tmp_path / "out2")


def test_reference_json_with_passage_tsv(tmp_path: Path) -> None:
    (tmp_path / "psgs.tsv").write_text("id\ttext\ttitle\n1\tfirst text\tT1\n2\tsecond text\tT2\n3\tthird\tT3\n")
    items = [
        {"question": "what is one", "positive_ctxs": [0], "hard_negative_ctxs": [{"passage_id": 1}, 2], "answers": []},
        {"qid": 77, "question": "what is two", "positive_ctxs": ["1"], "hard_negative_ctxs": [0, 1]},
    ]
    (tmp_path / "train.json").write_text(json.dumps(items, indent=1))
    run_prepare(
        "--format", "reference", "--input", tmp_path / "train.json", "--passages", tmp_path / "psgs.tsv",
        "--id-offset", "1", "--out", tmp_path / "out",
    )  # fmt: skip
    records = {r["qid"]: r for r in train_records(tmp_path / "out")}
    assert records["0"]["pos_ids"] == ["1"] and records["0"]["pos_titles"] == ["T1"]
    assert records["0"]["neg_ids"] == ["2", "3"] and records["0"]["neg_texts"] == ["second text", "third"]
    assert records["77"]["neg_ids"] == ["1"]  # passage 2 is its positive and was removed
    (tmp_path / "broken.json").write_text('[\n {"question": "x",\n  "positive_ctxs": [1,]\n}]')
    with pytest.raises(DataFormatError, match=r"broken\.json:3: expected a JSON list"):
        run_prepare(
            "--format", "reference", "--input", tmp_path / "broken.json", "--passages", tmp_path / "psgs.tsv",
            "--out", tmp_path / "o2",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("corpus.jsonl", '{"_id": "p0", "text": "ok"}\n{"_id": "p1", "text": "broken"\n', r"corpus\.jsonl:2: expected"),
        ("corpus.jsonl", '{"_id": "p0", "title": "t"}\n', r'corpus\.jsonl:1: expected a "text" field'),
        ("queries.jsonl", '["not", "an", "object"]\n', r"queries\.jsonl:1: expected a JSON object"),
        ("qrels/train.tsv", "query-id\tcorpus-id\tscore\nq0\tp0\n", r"train\.tsv:2: expected 3 tab-separated"),
        ("qrels/train.tsv", "query-id\tcorpus-id\tscore\nq0\tp0\thigh\n", r"train\.tsv:2: expected an integer"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, file: str, content: str, message: str) -> None:
    write_beir(tmp_path / "src", num_queries=2, num_passages=2)
    (tmp_path / "src" / file).write_text(content)
    with pytest.raises(DataFormatError, match=message):
        run_prepare("--format", "beir", "--input", tmp_path / "src", "--out", tmp_path / "out")


def test_demo_dataset_is_deterministic_beir_with_heldout_split(tmp_path: Path) -> None:
    counts = write_demo_dataset(tmp_path / "a")
    write_demo_dataset(tmp_path / "b")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert 300 <= counts["queries"] <= 2000 and counts["train"] + counts["test"] == counts["queries"]
    assert 0.1 < counts["test"] / counts["queries"] < 0.3
    corpus = {r["_id"]: r for r in map(json.loads, (tmp_path / "a" / "corpus.jsonl").read_text().splitlines())}
    queries = {
        r["_id"]: r["text"] for r in map(json.loads, (tmp_path / "a" / "queries.jsonl").read_text().splitlines())
    }
    splits = {}
    for split in ("train", "test"):
        rows = [line.split("\t") for line in (tmp_path / "a" / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]]
        splits[split] = {qid for qid, _pid, _score in rows}
        for qid, pid, _score in rows:
            assert pid in corpus and queries[qid] not in corpus[pid]["text"]  # the summary is not in its passage
    assert not splits["train"] & splits["test"]
    assert "json.dumps" in {r["title"] for r in corpus.values()}
    # Every verb can use it: prepare reads it as BEIR.
    manifest = run_prepare("--format", "demo", "--input", tmp_path / "c", "--out", tmp_path / "out")
    assert manifest["num_queries"] == counts["train"] and manifest["num_passages"] == counts["passages"]


def test_corpus_shards_and_evaluation_files_round_trip(tmp_path: Path) -> None:
    from lead_dist.data.corpus import read_corpus_shards, read_eval_qrels, read_eval_queries

    src = tmp_path / "src"
    write_beir(src, num_queries=4, num_passages=7, positives={"q0": ["p1"], "q2": ["p3", "p4"]})
    with (src / "qrels" / "train.tsv").open("a") as handle:
        handle.write("q3\tp5\t0\n")  # a judged non-relevant pair: kept for evaluation, not a positive
    manifest = run_prepare("--format", "beir", "--input", src, "--out", tmp_path / "out", "--corpus-shard-size", "3")
    assert [s["count"] for s in manifest["shards"]["corpus"]] == [3, 3, 1]
    corpus = list(read_corpus_shards(tmp_path / "out"))
    assert [r["id"] for r in corpus] == [f"p{i}" for i in range(7)]
    assert corpus[6] == {"id": "p6", "title": "title 6", "text": "text of passage 6"}
    assert [r["id"] for r in read_corpus_shards(tmp_path / "out", [1])] == ["p3", "p4", "p5"]
    assert read_eval_queries(tmp_path / "out") == [
        {"id": "q0", "text": "query number 0"}, {"id": "q2", "text": "query number 2"},
        {"id": "q3", "text": "query number 3"},
    ]  # fmt: skip
    assert read_eval_qrels(tmp_path / "out") == {"q0": {"p1": 1}, "q2": {"p3": 1, "p4": 1}, "q3": {"p5": 0}}
    assert manifest["num_queries"] == 2 and manifest["stats"]["judgements_below_min_relevance"] == 1
