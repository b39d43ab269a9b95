"""Join passages, queries, judgements and negative lists into training examples, counting every drop.

Rules (each drop is listed in the manifest with file, line and reason; shares are checked by the caller):
- passages: a repeated id keeps the first occurrence; a passage whose title and text are both empty is dropped.
- queries: a repeated id keeps the first; an empty text is dropped.
- judgements: a query or passage id that is unknown (or was dropped) drops the judgement, and so does a repeated
  (query, passage) pair. A judgement with score >= min_relevance is a positive.
- negatives: an id missing from the corpus is dropped. Positives of the query and repeats inside one query's list
  are removed and counted (they are filtering, not loss of data). Lists for queries that have no positive in this
  split are ignored and counted.
- examples: one per query with at least one positive. When a negatives source is given, a query left with no
  negative is dropped (so every batch has the same group size), unless keep_without_negatives.

Everything the join holds lives in a `PrepareStore` (an sqlite3 file, see store.py), not in dicts: memory does not
grow with the corpus. The rules are applied one input record at a time, in input order, as they always were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from lead_dist.data.drops import DropLog
from lead_dist.data.readers.records import Judgement, NegativeList, Passage, Query
from lead_dist.data.store import PrepareStore


@dataclass
class SourceBundle:
    """What a source format provides, as re-iterable callables (the corpus is streamed once)."""

    passages: Callable[[], Iterator[Passage]]
    queries: Callable[[], Iterator[Query]]
    judgements: Callable[[], Iterator[Judgement]]
    negatives: Callable[[], Iterator[NegativeList]] | None = None
    extra_positives: Callable[[], Iterator[Judgement]] | None = None  # e.g. the positives of MS MARCO triples
    files: list[str] = field(default_factory=list)
    file_of: dict[str, str] = field(default_factory=dict)  # "passages", "queries", "judgements" -> the file read


@dataclass
class Assembled:
    store: PrepareStore  # passages, queries, qrels and the kept examples (table `kept`, in order)
    num_examples: int
    stats: dict[str, int]
    has_negative_source: bool


def _load_passages(passages: Iterable[Passage], log: DropLog, store: PrepareStore) -> None:
    for passage in passages:
        log.seen("passages")
        empty = not passage.text.strip() and not passage.title.strip()
        # An empty passage is never stored, so its id is looked up; any other is stored unless its id is taken.
        duplicate = (
            store.has_passage(passage.id) if empty else not store.add_passage(passage.id, passage.title, passage.text)
        )
        if duplicate:
            log.drop("passages", passage.id, "duplicate passage id (first kept)", passage.source, passage.line)
        elif empty:
            log.drop("passages", passage.id, "empty title and text", passage.source, passage.line)


def _load_queries(queries: Iterable[Query], log: DropLog, store: PrepareStore) -> None:
    for query in queries:
        log.seen("queries")
        if store.query_state(query.id) != "unseen":
            log.drop("queries", query.id, "duplicate query id (first kept)", query.source, query.line)
        elif not query.text.strip():
            store.add_query(query.id, query.text, kept=False)
            log.drop("queries", query.id, "empty query text", query.source, query.line)
        else:
            store.add_query(query.id, query.text, kept=True)


def _join_judgements(
    judgements: Iterable[Judgement], log: DropLog, store: PrepareStore, stats: dict[str, int], min_relevance: float
) -> None:
    for judgement in judgements:
        log.seen("judgements")
        qid, pid = judgement.qid, judgement.pid
        reason = None
        if store.query_state(qid) != "kept":
            reason = "query id not in queries (or dropped)"
        elif not store.has_passage(pid):
            reason = "passage id not in corpus (or dropped)"
        elif not store.add_judged_pair(qid, pid):
            reason = "duplicate judgement (first kept)"
        if reason:
            log.drop("judgements", f"{qid}\t{pid}", reason, judgement.source, judgement.line)
            continue
        store.add_qrel(qid, pid, judgement.score)
        if judgement.score >= min_relevance:
            store.add_positive(qid, pid)
        else:
            stats["judgements_below_min_relevance"] += 1


def _add_extra_positives(judgements: Iterable[Judgement], store: PrepareStore, stats: dict[str, int]) -> None:
    for judgement in judgements:
        qid, pid = judgement.qid, judgement.pid
        if store.query_state(qid) == "kept" and store.has_passage(pid) and not store.is_positive(qid, pid):
            store.add_positive(qid, pid)
            store.add_qrel(qid, pid, judgement.score)
            stats["positives_added_from_triples"] += 1


def _join_negatives(
    negative_lists: Iterable[NegativeList], log: DropLog, store: PrepareStore, stats: dict[str, int]
) -> None:
    for negative_list in negative_lists:
        qid = negative_list.qid
        if not store.has_positives(qid):
            stats["negative_lists_for_queries_without_positives"] += 1
            continue
        for pid in negative_list.pids:
            log.seen("negatives")
            if not store.has_passage(pid):
                source, line = negative_list.source, negative_list.line
                log.drop("negatives", pid, "passage id not in corpus (or dropped)", source, line, qid=qid)
            elif store.is_positive(qid, pid):
                stats["negatives_removed_as_positive"] += 1
            elif not store.add_negative(qid, pid):
                stats["negatives_duplicates_removed"] += 1


def assemble(
    bundle: SourceBundle,
    log: DropLog,
    store: PrepareStore,
    *,
    min_relevance: float = 1,
    keep_without_negatives: bool = False,
) -> Assembled:
    """Join the bundle's sources into `store`; the kept examples end up in its table `kept`, in order."""
    _load_passages(bundle.passages(), log, store)
    _load_queries(bundle.queries(), log, store)
    stats = {
        "judgements_below_min_relevance": 0,
        "positives_added_from_triples": 0,
        "negatives_removed_as_positive": 0,
        "negatives_duplicates_removed": 0,
        "negative_lists_for_queries_without_positives": 0,
    }
    _join_judgements(bundle.judgements(), log, store, stats, min_relevance)
    if bundle.extra_positives is not None:
        _add_extra_positives(bundle.extra_positives(), store, stats)
    if bundle.negatives is not None:
        _join_negatives(bundle.negatives(), log, store, stats)
    for qid, negatives in store.example_queries():
        log.seen("examples")
        if bundle.negatives is not None and negatives == 0 and not keep_without_negatives:
            log.drop("examples", qid, "no negative left after filtering", "(assembled)", 0)
        else:
            store.keep_example(qid)
    return Assembled(store, store.count_kept(), stats, bundle.negatives is not None)
