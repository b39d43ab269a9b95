"""Qrels as {qid: {docid: grade}}: the one reader behind evaluation, mining and prepared folders.

Two layouts, told apart by the first non-blank line: BEIR (`query-id<TAB>corpus-id<TAB>score`, header skipped) and
TREC / MS MARCO (`qid 0 docid relevance`, whitespace-separated, numeric ids). The line parsers are the format
modules' (`beir.read_qrels`, `msmarco.read_qrels`, which `prepare` also uses with line numbers for its drop report);
a malformed line raises DataFormatError naming the file and line. Grades are integers (pytrec_eval wants them).
A pair judged twice keeps its first grade, as `prepare` does, and the repeats are reported to `on_duplicate`
("qid:docid (file:line)"), which the verbs count in their input report: never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lead_dist.data.readers import beir, msmarco
from lead_dist.data.readers.common import numbered_lines

Qrels = dict[str, dict[str, int]]


def read_qrels(path: str | Path, on_duplicate: Callable[[str], None] | None = None) -> Qrels:
    """{qid: {docid: grade}} from a BEIR qrels tsv or a TREC qrels file; a repeated pair keeps its first grade."""
    first = next((line for _number, line in numbered_lines(path)), "")
    # BEIR rows have three tab-separated fields; TREC rows four whitespace-separated ones.
    judgements = beir.read_qrels(path) if len(first.split("\t")) == 3 else msmarco.read_qrels(path)
    qrels: Qrels = {}
    for judgement in judgements:
        docs = qrels.setdefault(judgement.qid, {})
        if judgement.pid in docs:
            if on_duplicate is not None:
                on_duplicate(f"{judgement.qid}:{judgement.pid} ({path}:{judgement.line})")
            continue
        docs[judgement.pid] = int(judgement.score)
    return qrels
