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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from lead_dist.data.drops import DropLog
from lead_dist.data.readers.records import Judgement, NegativeList, Passage, Query


@dataclass
class SourceBundle:
    """What a source format provides, as re-iterable callables (the corpus is streamed once)."""

    passages: Callable[[], Iterator[Passage]]
    queries: Callable[[], Iterator[Query]]
    judgements: Callable[[], Iterator[Judgement]]
    negatives: Callable[[], Iterator[NegativeList]] | None = None
    extra_positives: Callable[[], Iterator[Judgement]] | None = None  # e.g. the positives of MS MARCO triples
    files: list[str] = field(default_factory=list)


@dataclass
class Assembled:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text), in source order
    queries: dict[str, str]
    examples: list[dict]  # {"qid", "pos_ids", "neg_ids"}, in order of first positive judgement
    qrels: list[tuple[str, str, float]]  # every kept judgement of the split, for evaluation
    stats: dict[str, int]
    has_negative_source: bool


def _load_passages(passages: Iterable[Passage], log: DropLog) -> dict[str, tuple[str, str]]:
    corpus: dict[str, tuple[str, str]] = {}
    for passage in passages:
        log.seen("passages")
        if passage.id in corpus:
            log.drop("passages", passage.id, "duplicate passage id (first kept)", passage.source, passage.line)
        elif not passage.text.strip() and not passage.title.strip():
            log.drop("passages", passage.id, "empty title and text", passage.source, passage.line)
        else:
            corpus[passage.id] = (passage.title, passage.text)
    return corpus


def _load_queries(queries: Iterable[Query], log: DropLog) -> dict[str, str]:
    result: dict[str, str] = {}
    empty: set[str] = set()
    for query in queries:
        log.seen("queries")
        if query.id in result or query.id in empty:
            log.drop("queries", query.id, "duplicate query id (first kept)", query.source, query.line)
        elif not query.text.strip():
            empty.add(query.id)
            log.drop("queries", query.id, "empty query text", query.source, query.line)
        else:
            result[query.id] = query.text
    return result


def assemble(
    bundle: SourceBundle, log: DropLog, *, min_relevance: float = 1, keep_without_negatives: bool = False
) -> Assembled:
    corpus = _load_passages(bundle.passages(), log)
    queries = _load_queries(bundle.queries(), log)
    stats = {
        "judgements_below_min_relevance": 0,
        "positives_added_from_triples": 0,
        "negatives_removed_as_positive": 0,
        "negatives_duplicates_removed": 0,
        "negative_lists_for_queries_without_positives": 0,
    }
    positives: dict[str, list[str]] = {}
    qrels: list[tuple[str, str, float]] = []
    seen_pairs: set[tuple[str, str]] = set()
    for judgement in bundle.judgements():
        log.seen("judgements")
        qid, pid = judgement.qid, judgement.pid
        reason = None
        if qid not in queries:
            reason = "query id not in queries (or dropped)"
        elif pid not in corpus:
            reason = "passage id not in corpus (or dropped)"
        elif (qid, pid) in seen_pairs:
            reason = "duplicate judgement (first kept)"
        if reason:
            log.drop("judgements", f"{qid}\t{pid}", reason, judgement.source, judgement.line)
            continue
        seen_pairs.add((qid, pid))
        qrels.append((qid, pid, judgement.score))
        if judgement.score >= min_relevance:
            positives.setdefault(qid, []).append(pid)
        else:
            stats["judgements_below_min_relevance"] += 1
    if bundle.extra_positives is not None:
        for judgement in bundle.extra_positives():
            qid, pid = judgement.qid, judgement.pid
            if qid in queries and pid in corpus and pid not in positives.get(qid, ()):
                positives.setdefault(qid, []).append(pid)
                qrels.append((qid, pid, judgement.score))
                stats["positives_added_from_triples"] += 1
    negatives: dict[str, list[str]] = {}
    if bundle.negatives is not None:
        seen_negatives: dict[str, set[str]] = {}
        for negative_list in bundle.negatives():
            qid = negative_list.qid
            if qid not in positives:
                stats["negative_lists_for_queries_without_positives"] += 1
                continue
            kept = negatives.setdefault(qid, [])
            already = seen_negatives.setdefault(qid, set())
            own_positives = set(positives[qid])
            for pid in negative_list.pids:
                log.seen("negatives")
                if pid not in corpus:
                    log.drop(
                        "negatives",
                        pid,
                        "passage id not in corpus (or dropped)",
                        negative_list.source,
                        negative_list.line,
                        qid=qid,
                    )
                elif pid in own_positives:
                    stats["negatives_removed_as_positive"] += 1
                elif pid in already:
                    stats["negatives_duplicates_removed"] += 1
                else:
                    already.add(pid)
                    kept.append(pid)
    examples = []
    for qid, pos_ids in positives.items():
        log.seen("examples")
        neg_ids = negatives.get(qid, [])
        if bundle.negatives is not None and not neg_ids and not keep_without_negatives:
            log.drop("examples", qid, "no negative left after filtering", "(assembled)", 0)
            continue
        examples.append({"qid": qid, "pos_ids": pos_ids, "neg_ids": neg_ids})
    return Assembled(corpus, queries, examples, qrels, stats, bundle.negatives is not None)


def materialise(example: dict, queries: dict[str, str], corpus: dict[str, tuple[str, str]]) -> dict:
    """An example with its texts, as written into a training shard."""
    return {
        "qid": example["qid"],
        "query": queries[example["qid"]],
        "pos_ids": list(example["pos_ids"]),
        "pos_titles": [corpus[p][0] for p in example["pos_ids"]],
        "pos_texts": [corpus[p][1] for p in example["pos_ids"]],
        "neg_ids": list(example["neg_ids"]),
        "neg_titles": [corpus[p][0] for p in example["neg_ids"]],
        "neg_texts": [corpus[p][1] for p in example["neg_ids"]],
    }
