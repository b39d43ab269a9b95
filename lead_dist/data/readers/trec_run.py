"""TREC run files (qid Q0 docid rank score tag) as a source of hard negatives.

Each query's lines are ordered by score (highest first; ties by the rank column, then file order) and the
1-based positions `first..last` of that ranking (inclusive) become its negative list. Positives are removed later,
after the depth cut, so a depth of 3:100 means "what the retriever put at 3..100, minus anything relevant".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers.common import checked_id, checked_number, whitespace_rows
from lead_dist.data.readers.records import NegativeList


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


def read_trec_run(path: str | Path, depth: tuple[int, int]) -> Iterator[NegativeList]:
    """One NegativeList per query (in order of first appearance), cut to the depth range."""
    rankings: dict[str, list[tuple[float, int, int, str]]] = {}
    first_line: dict[str, int] = {}
    for number, fields in whitespace_rows(path, 6, "qid Q0 docid rank score tag"):
        qid = checked_id(path, number, fields[0], "query id", numeric=False)
        docid = checked_id(path, number, fields[2], "document id", numeric=False)
        rank = int(checked_number(path, number, fields[3], "rank", integer=True))
        score = checked_number(path, number, fields[4], "score", integer=False)
        rankings.setdefault(qid, []).append((-score, rank, number, docid))
        first_line.setdefault(qid, number)
    if not rankings:
        raise DataFormatError(f"{path}: expected at least one run line (qid Q0 docid rank score tag)")
    first, last = depth
    for qid, entries in rankings.items():
        entries.sort()
        pids = tuple(docid for _s, _r, _n, docid in entries[first - 1 : last])
        yield NegativeList(qid, pids, str(path), first_line[qid])
