"""Readers for what evaluation and mining consume: corpus, queries (BEIR and MS MARCO layouts), a BEIR split.

Qrels are read by `lead_dist.data.readers.qrels.read_qrels` (one reader for every consumer).

Bad input is counted, not dropped silently: empty texts are kept (they still occupy an id the qrels may name) and
counted in `InputReport`; malformed lines raise with the file and line number.

Repeated ids: a corpus passage, a query or a judged (query, passage) pair whose id came before keeps its first
occurrence, as `lead-dist prepare` does (which lists each in its manifest's drops); the repeats are counted in the
input report (`duplicate_passages`, `duplicate_queries`, `duplicate_judgements`, with the first few named by file
and line). So a run never lists the same document twice for a query, and nothing is dropped unsaid. Kept first
rather than refused because public datasets do carry the odd repeat, and refusing would leave the user to edit a
corpus that `prepare` already reads. An empty corpus, an empty qrels file, or qrels that judge none of the queries
are refused, naming the file: they would "succeed" with zeros.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers import beir, msmarco
from lead_dist.data.readers.common import numbered_lines
from lead_dist.data.readers.qrels import Qrels, read_qrels

OnDuplicate = Callable[[str], None]  # told "id (file:line)" of each repeat that was passed over


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
    duplicate_passages: int = 0  # repeats of an earlier corpus id (the first is kept)
    duplicate_queries: int = 0  # repeats of an earlier query id (the first is kept)
    duplicate_judgements: int = 0  # repeats of an earlier judged (query, passage) pair (the first grade is kept)
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
            "duplicate_passages": self.duplicate_passages,
            "duplicate_queries": self.duplicate_queries,
            "duplicate_judgements": self.duplicate_judgements,
            "examples": self.examples,
        }

    def counter(self, kind: str) -> OnDuplicate:
        """An `on_duplicate` callback that counts repeats of `kind` (passages, queries, judgements) here."""
        attribute = f"duplicate_{kind}"

        def count(item: str) -> None:
            setattr(self, attribute, getattr(self, attribute) + 1)
            self.note(attribute, item)

        return count


def corpus_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("corpus.jsonl", "collection.tsv", "manifest.json"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(
            f"{path}: expected corpus.jsonl (BEIR), collection.tsv (MS MARCO) or a `lead-dist prepare` folder"
        )
    return path


def iter_corpus(path: str | Path, on_duplicate: OnDuplicate | None = None) -> Iterator[dict[str, str]]:
    """Corpus records {"id", "title", "text"} in corpus order from BEIR corpus.jsonl, MS MARCO collection.tsv, or
    the corpus shards of a folder written by `lead-dist prepare`. Parsing is the data package's readers'. A repeated
    id keeps its first record (the repeat goes to `on_duplicate`); prepared folders hold none (prepare drops them)."""
    file = corpus_file(Path(path))
    if file.name == "manifest.json":
        from lead_dist.data import read_corpus_shards

        yield from read_corpus_shards(file.parent)
        return
    passages = beir.read_corpus(file) if file.suffix == ".jsonl" else msmarco.read_collection(file)
    seen: set[str] = set()
    for passage in passages:
        if passage.id in seen:
            if on_duplicate is not None:
                on_duplicate(f"{passage.id} ({file}:{passage.line})")
            continue
        seen.add(passage.id)
        yield {"id": passage.id, "title": passage.title, "text": passage.text}


@dataclass
class CorpusSubset:
    """The passages a re-ranking needs, found in one pass over the corpus, and what that pass counted."""

    passages: dict[str, dict[str, str]]  # wanted id -> {"title", "text"}, for the wanted ids the corpus has
    ids: set[str]  # every id of the corpus (for the input report and the missing-document check)
    empty_passages: int


def read_corpus_subset(path: str | Path, wanted: set[str], on_duplicate: OnDuplicate | None = None) -> CorpusSubset:
    """Stream the corpus once: keep the `wanted` passages, collect every id, count empty passages."""
    subset = CorpusSubset({}, set(), 0)
    for record in iter_corpus(path, on_duplicate):
        subset.ids.add(record["id"])
        if not (record["title"].strip() or record["text"].strip()):
            subset.empty_passages += 1
        if record["id"] in wanted:
            subset.passages[record["id"]] = {"title": record["title"], "text": record["text"]}
    return subset


def count_corpus(path: str | Path) -> int:
    """Number of records `iter_corpus` yields (repeated ids not counted), from a prepared manifest or one pass."""
    return corpus_census(path)[0]


def corpus_census(path: str | Path) -> tuple[int, list[str]]:
    """(passages `iter_corpus` yields, the repeats it passes over: "id (file:line)"); remembered per file state, so
    an encode and the input report that follows it read the corpus once."""
    file = corpus_file(Path(path))
    if file.name == "manifest.json":
        from lead_dist.data import read_manifest

        return sum(entry["count"] for entry in read_manifest(file.parent)["shards"]["corpus"]), []
    stat = file.stat()
    return _census(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _census(file: str, _size: int, _mtime_ns: int) -> tuple[int, list[str]]:
    repeats: list[str] = []
    count = sum(1 for _record in iter_corpus(file, repeats.append))
    if count == 0:
        raise DataFormatError(f"{file}: an empty corpus (no passages); expected one record a line")
    return count, repeats


def read_queries(path: str | Path, on_duplicate: OnDuplicate | None = None) -> dict[str, str]:
    """Queries {id: text} from BEIR queries.jsonl (a folder or the file) or an MS MARCO `qid<TAB>text` tsv; a
    repeated id keeps its first text (the repeat goes to `on_duplicate`)."""
    file = Path(path)
    if file.is_dir():
        file = file / "queries.jsonl"
    records = beir.read_queries(file) if file.suffix == ".jsonl" else msmarco.read_queries(file)
    queries: dict[str, str] = {}
    for query in records:
        if query.id in queries:
            if on_duplicate is not None:
                on_duplicate(f"{query.id} ({file}:{query.line})")
            continue
        queries[query.id] = query.text
    return queries


@dataclass
class BeirSplit:
    corpus_path: Path
    queries: dict[str, str]
    qrels: Qrels
    report: InputReport = field(default_factory=InputReport)  # repeats of queries and judgements, counted


def load_beir_split(data_dir: str | Path, split: str) -> BeirSplit:
    """The queries that have judgments in `split`, their qrels, and where the corpus lies (streamed, not loaded).
    An empty qrels file, an empty corpus, or qrels that judge none of the queries are refused, naming the file."""
    root = Path(data_dir)
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.exists():
        raise FileNotFoundError(f"{qrels_file}: no qrels for split {split!r} (expected qrels/<split>.tsv)")
    report = InputReport()
    corpus = corpus_file(root)
    queries = read_queries(root, report.counter("queries"))
    qrels = read_qrels(qrels_file, report.counter("judgements"))
    if not qrels:
        raise DataFormatError(f"{qrels_file}: no judgements (an empty qrels file): nothing to evaluate")
    if not queries.keys() & qrels.keys():
        raise DataFormatError(
            f"{qrels_file}: none of its {len(qrels)} judged queries is in {root / 'queries.jsonl'} "
            f"(e.g. {sorted(qrels)[:3]}); are they the files of one dataset?"
        )
    check_corpus_not_empty(corpus)
    return BeirSplit(corpus_path=corpus, queries=queries, qrels=qrels, report=report)


def check_corpus_not_empty(path: str | Path) -> None:
    """Refuse a corpus file without a single record (reads up to its first non-blank line)."""
    file = corpus_file(Path(path))
    if file.name != "manifest.json" and next(numbered_lines(file), None) is None:
        raise DataFormatError(f"{file}: an empty corpus (no passages); expected one record a line")


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
