"""TREC run files (`qid Q0 docid rank score tag`): the one reader, for re-ranking, mining and negative sources.

The order of a query's documents, decided once for every reader of a run (`read_run`, `read_trec_run`):
score descending; equal scores by the rank column (lower first); equal score and rank by line order. Score first
because trec_eval ranks by score and ignores the rank column, and because some tools write a constant or
meaningless rank; the rank column then keeps the writer's order where scores tie (our own runs print six
decimals, so near-equal scores tie on disk). Pinned by tests/test_trec_run_order.py.

As a negative source, the 1-based positions `first..last` of that ranking (inclusive) become a query's negative
list. Positives are removed later, after the depth cut, so a depth of 3:100 means "what the retriever put at
3..100, minus anything relevant".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers.common import checked_id, checked_number, whitespace_rows
from lead_dist.data.readers.records import NegativeList

# {qid: [(docid, score), ...]} best first.
Run = dict[str, list[tuple[str, float]]]


def parse_depth(text: str) -> tuple[int, int]:
    """ "3:100" -> (3, 100); both ends 1-based and inclusive; "100" means 1:100."""
    try:
        first, last = text.split(":", 1) if ":" in text else ("1", text)
        first_i, last_i = int(first), int(last)
    except ValueError:
        raise ValueError(f"--depth {text!r}: expected FIRST:LAST rank positions, e.g. 3:100") from None
    if first_i < 1 or last_i < first_i:
        raise ValueError(f"--depth {text!r}: expected 1 <= FIRST <= LAST")
    return first_i, last_i


def _ranked(path: str | Path) -> tuple[Run, dict[str, int]]:
    """Every query's documents in the module's order, and the line each query first appears on."""
    rows: dict[str, list[tuple[float, int, int, str, float]]] = {}
    first_line: dict[str, int] = {}
    for number, fields in whitespace_rows(path, 6, "qid Q0 docid rank score tag"):
        qid = checked_id(path, number, fields[0], "query id", numeric=False)
        docid = checked_id(path, number, fields[2], "document id", numeric=False)
        rank = int(checked_number(path, number, fields[3], "rank", integer=True))
        score = checked_number(path, number, fields[4], "score", integer=False)
        rows.setdefault(qid, []).append((-score, rank, number, docid, score))
        first_line.setdefault(qid, number)
    if not rows:
        raise DataFormatError(f"{path}: expected at least one run line (qid Q0 docid rank score tag)")
    run = {qid: [(docid, score) for _key, _rank, _line, docid, score in sorted(found)] for qid, found in rows.items()}
    return run, first_line


def read_run(path: str | Path) -> Run:
    """{qid: [(docid, score), ...]}: queries in order of first appearance, documents in the module's order.

    A malformed line or an empty file raises DataFormatError (a ValueError) naming the file and line.
    """
    return _ranked(path)[0]


def read_trec_run(path: str | Path, depth: tuple[int, int]) -> Iterator[NegativeList]:
    """One NegativeList per query (in order of first appearance), cut to the depth range."""
    run, first_line = _ranked(path)
    first, last = depth
    for qid, ranked in run.items():
        pids = tuple(docid for docid, _score in ranked[first - 1 : last])
        yield NegativeList(qid, pids, str(path), first_line[qid])
