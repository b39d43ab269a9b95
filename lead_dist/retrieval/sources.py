"""Readers for what evaluation and mining consume: corpus, queries (BEIR and MS MARCO layouts), a BEIR split.

Qrels are read by `lead_dist.data.readers.qrels.read_qrels` (one reader for every consumer).

Bad input is counted, not dropped silently: empty texts are kept (they still occupy an id the qrels may name) and
counted in `InputReport`; malformed lines raise with the file and line number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lead_dist.data.readers import beir, msmarco
from lead_dist.data.readers.qrels import Qrels, read_qrels


@dataclass
class InputReport:
    """Counts of questionable input, written next to the metrics so nobody has to guess what was skipped."""

    empty_passages: int = 0
    empty_queries: int = 0
    qrels_docs_absent_from_corpus: int = 0
    queries_without_judgments: int = 0
    judged_queries_absent_from_queries: int = 0
    truncated_queries: int = 0  # longer than the query length in use (cut at the end)
    truncated_passages: int | None = None  # the same for passages; None: not counted (embeddings of an older encode)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, item: str, limit: int = 5) -> None:
        """Keep the first few offending ids of each kind so a report points at real examples."""
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < limit:
            bucket.append(item)

    def as_dict(self) -> dict:
        return {
            "empty_passages": self.empty_passages,
            "empty_queries": self.empty_queries,
            "qrels_docs_absent_from_corpus": self.qrels_docs_absent_from_corpus,
            "queries_without_judgments": self.queries_without_judgments,
            "judged_queries_absent_from_queries": self.judged_queries_absent_from_queries,
            "truncated_queries": self.truncated_queries,
            "truncated_passages": self.truncated_passages,
            "examples": self.examples,
        }


def corpus_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("corpus.jsonl", "collection.tsv", "manifest.json"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(
            f"{path}: expected corpus.jsonl (BEIR), collection.tsv (MS MARCO) or a `lead-dist prepare` folder"
        )
    return path


def iter_corpus(path: str | Path) -> Iterator[dict[str, str]]:
    """Corpus records {"id", "title", "text"} in corpus order from BEIR corpus.jsonl, MS MARCO collection.tsv, or
    the corpus shards of a folder written by `lead-dist prepare`. Parsing is the data package's readers'."""
    file = corpus_file(Path(path))
    if file.name == "manifest.json":
        from lead_dist.data import read_corpus_shards

        yield from read_corpus_shards(file.parent)
        return
    passages = beir.read_corpus(file) if file.suffix == ".jsonl" else msmarco.read_collection(file)
    for passage in passages:
        yield {"id": passage.id, "title": passage.title, "text": passage.text}


@dataclass
class CorpusSubset:
    """The passages a re-ranking needs, found in one pass over the corpus, and what that pass counted."""

    passages: dict[str, dict[str, str]]  # wanted id -> {"title", "text"}, for the wanted ids the corpus has
    ids: set[str]  # every id of the corpus (for the input report and the missing-document check)
    empty_passages: int


def read_corpus_subset(path: str | Path, wanted: set[str]) -> CorpusSubset:
    """Stream the corpus once: keep the `wanted` passages, collect every id, count empty passages."""
    subset = CorpusSubset({}, set(), 0)
    for record in iter_corpus(path):
        subset.ids.add(record["id"])
        if not (record["title"].strip() or record["text"].strip()):
            subset.empty_passages += 1
        if record["id"] in wanted:
            subset.passages[record["id"]] = {"title": record["title"], "text": record["text"]}
    return subset


def count_corpus(path: str | Path) -> int:
    """Number of records, by counting non-blank lines (cheap next to encoding them) or from a prepared manifest."""
    file = corpus_file(Path(path))
    if file.name == "manifest.json":
        from lead_dist.data import read_manifest

        return sum(entry["count"] for entry in read_manifest(file.parent)["shards"]["corpus"])
    with open(file, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries {id: text} from BEIR queries.jsonl (a folder or the file) or an MS MARCO `qid<TAB>text` tsv."""
    file = Path(path)
    if file.is_dir():
        file = file / "queries.jsonl"
    records = beir.read_queries(file) if file.suffix == ".jsonl" else msmarco.read_queries(file)
    return {query.id: query.text for query in records}


@dataclass
class BeirSplit:
    corpus_path: Path
    queries: dict[str, str]
    qrels: Qrels


def load_beir_split(data_dir: str | Path, split: str) -> BeirSplit:
    """The queries that have judgments in `split`, their qrels, and where the corpus lies (streamed, not loaded)."""
    root = Path(data_dir)
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.exists():
        raise FileNotFoundError(f"{qrels_file}: no qrels for split {split!r} (expected qrels/<split>.tsv)")
    return BeirSplit(corpus_path=corpus_file(root), queries=read_queries(root), qrels=read_qrels(qrels_file))


def check_inputs(
    queries: dict[str, str], qrels: Qrels, corpus_ids: set[str] | None, report: InputReport | None = None
) -> tuple[dict[str, str], InputReport]:
    """Keep the queries that have judgments; count everything questionable about queries and qrels.

    Returns the judged queries to search and the report. Passages' empty texts are counted by the encoder.
    """
    report = report or InputReport()
    judged: dict[str, str] = {}
    for qid, text in queries.items():
        if qid in qrels:
            judged[qid] = text
            if not text.strip():
                report.empty_queries += 1
                report.note("empty_queries", qid)
    for qid, docs in qrels.items():
        if qid not in queries:
            report.judged_queries_absent_from_queries += 1
            report.note("judged_queries_absent_from_queries", qid)
        if corpus_ids is not None:
            for docid in docs:
                if docid not in corpus_ids:
                    report.qrels_docs_absent_from_corpus += 1
                    report.note("qrels_docs_absent_from_corpus", f"{qid}:{docid}")
    # A query file shared by several splits has many queries without judgments in this split: counted, not searched.
    report.queries_without_judgments = sum(1 for qid in queries if qid not in qrels)
    return judged, report
