"""Property tests on the readers: random and corrupted inputs give the right records or the clear error naming
file and line (or shard), and nothing else."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lead_dist.data.errors import DataFormatError, ShardError
from lead_dist.data.readers import beir, msmarco, trec_run
from lead_dist.data.shards import read_shard, write_shard

SETTINGS = settings(max_examples=150, deadline=None)
words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
ids = st.one_of(st.integers(0, 10**6), st.text(alphabet="abcXYZ019-_ ", max_size=6))
record_value = st.fixed_dictionaries({"_id": ids, "title": words, "text": words})
json_line = st.one_of(
    record_value.map(json.dumps),
    st.fixed_dictionaries({"_id": ids}).map(json.dumps),  # no text
    st.fixed_dictionaries({"_id": st.none(), "text": words}).map(json.dumps),
    st.lists(st.integers(), max_size=2).map(json.dumps),  # not an object
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=15),
    st.just(""),
)


def expected_corpus(data: bytes) -> tuple[list[tuple[str, str, str, int]], int | None]:
    """What the BEIR corpus reader must return for `data`, written from the format's definition:
    (records, None) when every non-blank line is a valid record, else (records before, first bad line)."""
    records = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            return records, number
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return records, number
        ok = isinstance(value, dict) and "_id" in value and "text" in value
        if ok:
            raw_id, text, title = value["_id"], value["text"], value.get("title", "")
            id_ok = (isinstance(raw_id, int) and not isinstance(raw_id, bool)) or (
                isinstance(raw_id, str) and raw_id.strip() != ""
            )
            ok = id_ok and isinstance(text, str) and isinstance(title, str)
        if not ok:
            return records, number
        records.append((str(raw_id).strip(), title, text, number))
    return records, None


def read_or_error(function, path: Path) -> tuple[list, int | None]:
    records = []
    try:
        for record in function(path):
            records.append(record)
    except DataFormatError as error:
        message = str(error)
        assert message.startswith(f"{path}:"), message  # names the file, then the line
        return records, int(message[len(str(path)) + 1 :].split(":", 1)[0])
    return records, None


@SETTINGS
@given(lines=st.lists(json_line, max_size=8), flips=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255))))
def test_beir_corpus_reader_on_random_and_corrupted_lines(lines: list[str], flips: list[tuple[int, int]]) -> None:
    data = bytearray("\n".join(lines).encode("utf-8"))
    for position, value in flips[:3]:
        if data:
            data[position % len(data)] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.jsonl"
        path.write_bytes(bytes(data))
        passages, error_line = read_or_error(beir.read_corpus, path)
    want, want_error = expected_corpus(bytes(data))
    assert [(p.id, p.title, p.text, p.line) for p in passages] == want
    assert error_line == want_error


qrels_field = st.one_of(ids.map(str), st.integers(-3, 5).map(str), st.just("x y"), st.just(""))


@SETTINGS
@given(rows=st.lists(st.lists(qrels_field, min_size=1, max_size=4), max_size=8), header=st.booleans())
def test_beir_qrels_reader_on_random_rows(rows: list[list[str]], header: bool) -> None:
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(r) for r in rows]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.tsv"
        path.write_text("\n".join(lines), encoding="utf-8")
        judgements, error_line = read_or_error(beir.read_qrels, path)
    expected, expected_error, offset = [], None, 1 + header
    for number, fields in enumerate(rows, start=offset):
        line = "\t".join(fields)
        if not line.strip():
            continue
        if number == 1 and fields[0].strip() == "query-id":
            continue  # a first line that looks like the header is the header
        valid = len(fields) == 3 and fields[0].strip() and fields[1].strip()
        if valid:
            try:
                score = int(fields[2].strip())
            except ValueError:
                valid = False
        if not valid:
            expected_error = number
            break
        expected.append((fields[0].strip(), fields[1].strip(), score, number))
    assert [(j.qid, j.pid, j.score, j.line) for j in judgements] == expected
    assert error_line == expected_error


tsv_cell = st.one_of(
    st.integers(0, 999).map(str), st.just(" 12 "), st.just("x1"), st.just(""), st.just("١٢"), words.map(lambda w: w.replace("\t", " "))
)  # fmt: skip


@SETTINGS
@given(rows=st.lists(st.lists(tsv_cell, min_size=1, max_size=3), max_size=8))
def test_msmarco_collection_reader_on_random_rows(rows: list[list[str]]) -> None:
    lines = ["\t".join(r).replace("\n", " ").replace("\r", " ") for r in rows]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "collection.tsv"
        path.write_text("\n".join(lines), encoding="utf-8")
        passages, error_line = read_or_error(msmarco.read_collection, path)
    expected, expected_error = [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        pid = fields[0].strip()
        if len(fields) != 2 or not (pid.isascii() and pid.isdigit()):  # MS MARCO ids are ASCII digits
            expected_error = number
            break
        expected.append((pid, fields[1], number))
    assert [(p.id, p.text, p.line) for p in passages] == expected
    assert error_line == expected_error


run_line = st.tuples(
    st.sampled_from(["q1", "q2", "q3"]), st.sampled_from([f"d{i}" for i in range(30)]), st.integers(0, 50),
    st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)),
)  # fmt: skip


@SETTINGS
@given(rows=st.lists(run_line, min_size=1, max_size=40), first=st.integers(1, 6), width=st.integers(0, 10))
def test_trec_run_depth_slices_a_score_ranking(rows: list[tuple], first: int, width: int) -> None:
    last = first + width
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.trec"
        path.write_text("".join(f"{q} Q0 {d} {r} {s} tag\n" for q, d, r, s in rows))
        lists = {n.qid: n.pids for n in trec_run.read_trec_run(path, (first, last))}
    assert set(lists) == {q for q, *_ in rows}
    for qid, pids in lists.items():
        mine = [(d, s) for q, d, _r, s in rows if q == qid]
        all_scores = sorted((s for _d, s in mine), reverse=True)
        assert len(pids) == max(0, min(last, len(mine)) - first + 1)
        # The kept documents hold exactly the scores found at positions first..last of the score ranking.
        kept_scores = [all_scores[first - 1 + i] for i in range(len(pids))]
        for pid, score in zip(pids, kept_scores, strict=True):
            assert (pid, score) in mine


def test_trec_run_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 2.5 t\nq1 Q0 d2 two 2.0 t\n")
    with pytest.raises(DataFormatError, match=r"run\.trec:2: expected an integer for the rank"):
        list(trec_run.read_trec_run(path, (1, 10)))
    path.write_text("q1 Q0 d1 1 2.5\n")
    with pytest.raises(DataFormatError, match=r"run\.trec:1: expected 6 whitespace-separated columns"):
        list(trec_run.read_trec_run(path, (1, 10)))
    with pytest.raises(ValueError, match="--depth '5:2'"):
        trec_run.parse_depth("5:2")


shard_record = st.fixed_dictionaries(
    {"qid": words, "query": words, "pos_ids": st.lists(words, max_size=3), "neg_texts": st.lists(words, max_size=3)}
)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(shard_record, min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_shard_reader_gives_the_records_or_a_shard_error(records: list[dict], flips: list, cut: int | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train-000000.tar"
        write_shard(path, records)
        original = path.read_bytes()
        data = bytearray(original)
        for position, value in flips:
            data[position % len(data)] = value
        if cut is not None:
            data = data[: cut % (len(data) + 1)]
        path.write_bytes(bytes(data))
        try:
            got = list(read_shard(path, expected_count=len(records)))
        except ShardError as error:
            assert str(path) in str(error)
            return
    assert got == records  # read without error: then it must be exactly what was written


def test_shards_are_byte_identical_and_round_trip(tmp_path: Path) -> None:
    records = [{"qid": "1", "text": "é ü 中文", "neg_ids": []}, {"qid": "2", "text": "tab\there", "neg_ids": ["x"]}]
    write_shard(tmp_path / "a.tar", records)
    write_shard(tmp_path / "b.tar", list(records))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert list(read_shard(tmp_path / "a.tar", expected_count=2)) == records
    with pytest.raises(ShardError, match=r"a\.tar: holds 2 records but the manifest says 3"):
        list(read_shard(tmp_path / "a.tar", expected_count=3))
