"""Qrels as {qid: {docid: grade}}: the one reader behind evaluation, mining and prepared folders.

Two layouts, told apart by the first non-blank line: BEIR (`query-id<TAB>corpus-id<TAB>score`, header skipped) and
TREC / MS MARCO (`qid 0 docid relevance`, whitespace-separated, numeric ids). The line parsers are the format
modules' (`beir.read_qrels`, `msmarco.read_qrels`, which `prepare` also uses with line numbers for its drop report);
a malformed line raises DataFormatError naming the file and line. Grades are integers (pytrec_eval wants them);
a pair judged twice keeps its last grade.
"""

from __future__ import annotations

from pathlib import Path

from lead_dist.data.readers import beir, msmarco
from lead_dist.data.readers.common import numbered_lines

Qrels = dict[str, dict[str, int]]


def read_qrels(path: str | Path) -> Qrels:
    """{qid: {docid: grade}} from a BEIR qrels tsv or a TREC qrels file."""
    first = next((line for _number, line in numbered_lines(path)), "")
    # BEIR rows have three tab-separated fields; TREC rows four whitespace-separated ones.
    judgements = beir.read_qrels(path) if len(first.split("\t")) == 3 else msmarco.read_qrels(path)
    qrels: Qrels = {}
    for judgement in judgements:
        qrels.setdefault(judgement.qid, {})[judgement.pid] = int(judgement.score)
    return qrels
