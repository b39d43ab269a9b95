"""BEIR layout: corpus.jsonl {"_id","title","text"}, queries.jsonl {"_id","text"}, qrels/<split>.tsv with a header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers.common import checked_id, checked_number, json_objects, string_field, tsv_rows
from lead_dist.data.readers.records import Judgement, Passage, Query


def read_corpus(path: str | Path) -> Iterator[Passage]:
    for number, record in json_objects(path):
        pid = checked_id(path, number, string_field(path, number, record, "_id"), '"_id"', numeric=False)
        title = string_field(path, number, record, "title", required=False)
        text = string_field(path, number, record, "text")
        yield Passage(pid, title, text, str(path), number)


def read_queries(path: str | Path) -> Iterator[Query]:
    for number, record in json_objects(path):
        qid = checked_id(path, number, string_field(path, number, record, "_id"), '"_id"', numeric=False)
        yield Query(qid, string_field(path, number, record, "text"), str(path), number)


def read_qrels(path: str | Path) -> Iterator[Judgement]:
    """query-id, corpus-id, score (tab-separated, header line `query-id ...` skipped); score must be an integer."""
    for number, fields in tsv_rows(path, 3, "query-id<TAB>corpus-id<TAB>score", header_first_field="query-id"):
        qid = checked_id(path, number, fields[0], "query-id", numeric=False)
        pid = checked_id(path, number, fields[1], "corpus-id", numeric=False)
        score = checked_number(path, number, fields[2].strip(), "score", integer=True)
        yield Judgement(qid, pid, score, str(path), number)


def beir_paths(folder: str | Path, split: str) -> tuple[Path, Path, Path]:
    """(corpus, queries, qrels) of a BEIR folder, with an error naming what is missing."""
    folder = Path(folder)
    corpus, queries, qrels = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    for path in (corpus, queries, qrels):
        if not path.is_file():
            available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            hint = f" (qrels splits present: {', '.join(available) or 'none'})" if path == qrels else ""
            raise DataFormatError(
                f"{path}: not found; a BEIR folder needs corpus.jsonl, queries.jsonl, qrels/<split>.tsv{hint}"
            )
    return corpus, queries, qrels
