"""The dev split carved from a training split (`lead_dist.data.dev_split`, `lead-dist split`): deterministic,
disjoint from the training queries, of the asked size; prepared training shards never hold a dev query; the
committed SciFact list is the one the carving gives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_data_fixtures import run_prepare, write_beir

from lead_dist.cli import main as cli_main
from lead_dist.data.dev_split import (
    carve_dev_queries,
    read_query_list,
    write_dev_corpus,
    write_query_list,
    write_split_folder,
)
from lead_dist.data.errors import DataFormatError
from lead_dist.data.shards import read_shard

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
SCIFACT_LIST = REPO / "configs" / "scifact" / "dev_queries.txt"


def _qrels_queries(path: Path) -> set[str]:
    return {line.split("\t")[0] for line in path.read_text().splitlines()[1:]}


def test_carving_follows_its_definition_and_ignores_input_order() -> None:
    ids = [f"q{i}" for i in range(57)]
    dev = carve_dev_queries(ids, 0.1, seed=3)
    # the definition, spelled out independently: the round(0.1 * 57) = 6 ids with the smallest sha256("3:<id>")
    by_key = sorted(ids, key=lambda q: hashlib.sha256(f"3:{q}".encode()).hexdigest())
    assert dev == sorted(by_key[:6])
    assert carve_dev_queries(list(reversed(ids)) + ids[:5], 0.1, seed=3) == dev  # order and repeats do not matter
    assert carve_dev_queries(ids, 0.1, seed=4) != dev  # the seed picks another split


def test_carving_sizes_and_bad_fractions() -> None:
    ids = [str(i) for i in range(809)]
    assert len(carve_dev_queries(ids, 0.1, seed=0)) == 81  # round(80.9)
    assert len(carve_dev_queries(["a", "b"], 0.01, seed=0)) == 1  # at least one dev query ...
    assert len(carve_dev_queries(["a", "b"], 0.99, seed=0)) == 1  # ... and at least one left to train on
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            carve_dev_queries(ids, fraction, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        carve_dev_queries(["a"], 0.5, seed=0)


def test_query_list_round_trip_and_bad_lists(tmp_path: Path) -> None:
    path = tmp_path / "dev.txt"
    write_query_list(path, ["b", "a"], "two queries\nsecond comment line")
    assert read_query_list(path) == ["b", "a"]
    assert path.read_text().startswith("# two queries\n# second comment line\n")
    path.write_text("a\n# comment\nb\na\n")
    with pytest.raises(DataFormatError, match=r"dev\.txt:4: query id 'a' repeats line 1"):
        read_query_list(path)
    path.write_text("# only a comment\n")
    with pytest.raises(DataFormatError, match="no query ids"):
        read_query_list(path)


def test_split_folder_is_disjoint_complete_and_prepare_never_trains_on_dev(tmp_path: Path) -> None:
    source = tmp_path / "beir"
    positives = write_beir(source, num_queries=20, num_passages=30)
    positives["q3"].append("p25")  # a query with two judged passages moves as a whole
    (source / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{p}\t1\n" for q, ps in positives.items() for p in ps)
    )
    (source / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp0\t2\n")
    dev = ["q3", "q7", "q11"]
    summary = write_split_folder(source, "train", dev, tmp_path / "split")
    out = tmp_path / "split"
    train_q, dev_q = _qrels_queries(out / "qrels" / "train.tsv"), _qrels_queries(out / "qrels" / "dev.tsv")
    assert dev_q == set(dev) and not train_q & dev_q and train_q | dev_q == set(positives)
    assert (summary.train_queries, summary.dev_queries, summary.dev_judgements) == (17, 3, 4)
    assert (out / "corpus.jsonl").resolve() == (source / "corpus.jsonl").resolve()  # linked, not copied
    assert (out / "qrels" / "test.tsv").read_text() == (source / "qrels" / "test.tsv").read_text()
    assert read_query_list(out / "dev_queries.txt") == sorted(dev)
    assert json.loads((out / "split.json").read_text())["dev_queries"] == 3

    manifest = run_prepare("--format", "beir", "--input", out, "--split", "train", "--out", tmp_path / "shards")
    records = [r for s in manifest["shards"]["train"] for r in read_shard(tmp_path / "shards" / s["name"], s["count"])]
    assert {r["qid"] for r in records} == set(positives) - set(dev)


def test_split_refuses_unknown_ids_existing_output_and_name_clash(tmp_path: Path) -> None:
    source = tmp_path / "beir"
    write_beir(source, num_queries=5, num_passages=5)
    with pytest.raises(DataFormatError, match=r"\['q9'\] are not judged queries of split 'train'"):
        write_split_folder(source, "train", ["q1", "q9"], tmp_path / "a")
    assert not (tmp_path / "a").exists()  # nothing written
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_split_folder(source, "train", ["q1"], tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "a user's file"
    with pytest.raises(ValueError, match="exists already"):
        write_split_folder(source, "train", ["q1"], tmp_path / "c", dev_name="train")


def test_dev_corpus_holds_every_judged_passage_and_a_fixed_sample(tmp_path: Path) -> None:
    source = tmp_path / "beir"
    write_beir(source, num_queries=10, num_passages=40)
    write_split_folder(source, "train", ["q2", "q5"], tmp_path / "split")
    info = write_dev_corpus(tmp_path / "split", 12, seed=1, out=tmp_path / "small")
    ids = [json.loads(line)["_id"] for line in (tmp_path / "small" / "corpus.jsonl").read_text().splitlines()]
    assert len(ids) == 12 and {"p2", "p5"} <= set(ids)
    assert ids == sorted(ids, key=lambda pid: int(pid[1:]))  # the source's order
    assert (info["judged_passages"], info["sampled_passages"]) == (2, 10)
    write_dev_corpus(tmp_path / "split", 12, seed=1, out=tmp_path / "again")
    assert (tmp_path / "again" / "corpus.jsonl").read_bytes() == (tmp_path / "small" / "corpus.jsonl").read_bytes()
    with pytest.raises(ValueError, match="between 2"):
        write_dev_corpus(tmp_path / "split", 1, seed=1, out=tmp_path / "tiny")


def test_split_verb_writes_the_folder_and_fails_with_one_line(tmp_path: Path, capsys) -> None:
    source = tmp_path / "beir"
    write_beir(source, num_queries=30, num_passages=30)
    out = tmp_path / "split"
    assert cli_main(["split", "--data", str(source), "--dev-fraction", "0.2", "--seed", "5", "--out", str(out)]) == 0
    assert read_query_list(out / "dev_queries.txt") == carve_dev_queries([f"q{i}" for i in range(30)], 0.2, 5)
    bad = tmp_path / "bad.txt"
    bad.write_text("q1\nq99\n")
    status = cli_main(["split", "--data", str(source), "--dev-queries", str(bad), "--out", str(tmp_path / "x")])
    assert status == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line, no traceback


def test_committed_scifact_list_has_81_unique_ids() -> None:
    ids = read_query_list(SCIFACT_LIST)
    assert len(ids) == len(set(ids)) == 81


@pytest.mark.skipif(not (SCIFACT / "qrels" / "train.tsv").is_file(), reason=f"SciFact not present at {SCIFACT}")
def test_committed_scifact_list_is_the_carving_of_scifact_train() -> None:
    train = _qrels_queries(SCIFACT / "qrels" / "train.tsv")
    assert len(train) == 809
    assert read_query_list(SCIFACT_LIST) == carve_dev_queries(train, 0.1, seed=0)
    assert not set(read_query_list(SCIFACT_LIST)) & _qrels_queries(SCIFACT / "qrels" / "test.tsv")
