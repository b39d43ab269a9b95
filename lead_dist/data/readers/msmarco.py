"""MS MARCO files: collection.tsv (pid<TAB>text), queries tsv (qid<TAB>text), qrels (qid 0 pid rel),
training triples of ids (qid<TAB>pos_pid<TAB>neg_pid) and per-query negative lists (qid<TAB>pid,pid,...).

MS MARCO ids are integers, so every id here must be numeric.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers.common import checked_id, checked_number, tsv_rows, whitespace_rows
from lead_dist.data.readers.records import Judgement, NegativeList, Passage, Query


def read_collection(path: str | Path) -> Iterator[Passage]:
    for number, fields in tsv_rows(path, 2, "pid<TAB>text"):
        pid = checked_id(path, number, fields[0], "passage id", numeric=True)
        yield Passage(pid, "", fields[1], str(path), number)


def read_queries(path: str | Path) -> Iterator[Query]:
    for number, fields in tsv_rows(path, 2, "qid<TAB>text"):
        yield Query(checked_id(path, number, fields[0], "query id", numeric=True), fields[1], str(path), number)


def read_qrels(path: str | Path) -> Iterator[Judgement]:
    """TREC qrels: qid, iteration (ignored), pid, relevance."""
    for number, fields in whitespace_rows(path, 4, "qid 0 pid relevance"):
        qid = checked_id(path, number, fields[0], "query id", numeric=True)
        pid = checked_id(path, number, fields[2], "passage id", numeric=True)
        score = checked_number(path, number, fields[3], "relevance", integer=True)
        yield Judgement(qid, pid, score, str(path), number)


def read_triples(path: str | Path) -> Iterator[tuple[Judgement, NegativeList]]:
    """Each id triple gives a positive judgement and a one-element negative list for its query."""
    for number, fields in tsv_rows(path, 3, "qid<TAB>pos_pid<TAB>neg_pid"):
        qid = checked_id(path, number, fields[0], "query id", numeric=True)
        pos = checked_id(path, number, fields[1], "positive passage id", numeric=True)
        neg = checked_id(path, number, fields[2], "negative passage id", numeric=True)
        yield Judgement(qid, pos, 1, str(path), number), NegativeList(qid, (neg,), str(path), number)


def read_negative_lists(path: str | Path) -> Iterator[NegativeList]:
    """qid<TAB>pid,pid,... (the list may be empty, which is reported later as a query without negatives)."""
    for number, fields in tsv_rows(path, 2, "qid<TAB>comma-separated passage ids"):
        qid = checked_id(path, number, fields[0], "query id", numeric=True)
        raw = [p for p in fields[1].split(",")]
        if fields[1].strip() == "":
            raw = []
        pids = tuple(checked_id(path, number, p, "passage id in the negative list", numeric=True) for p in raw)
        yield NegativeList(qid, pids, str(path), number)


def msmarco_default_paths(folder: str | Path, split: str) -> dict[str, Path]:
    """The usual file names in an MS MARCO folder: collection.tsv, queries.<split>.tsv, qrels.<split>.tsv."""
    folder = Path(folder)
    paths = {
        "collection": folder / "collection.tsv",
        "queries": folder / f"queries.{split}.tsv",
        "qrels": folder / f"qrels.{split}.tsv",
    }
    for key, path in paths.items():
        if not path.is_file():
            raise DataFormatError(f"{path}: not found; pass --{key} FILE or use the standard MS MARCO file names")
    return paths
