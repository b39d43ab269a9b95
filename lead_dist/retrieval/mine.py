"""Hard negatives from a run: keep ranks FIRST..LAST of each query, remove every judged positive.

The depth range is parsed by `lead_dist.data.readers.trec_run.parse_depth`, the same function `prepare --depth` uses.

The reference code compared string and integer ids and so kept positives among the negatives (LEAD_SPEC 12):
here ids are strings on both sides and every document with grade >= `min_relevance` is removed, wherever it ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lead_dist.data.readers.qrels import Qrels
from lead_dist.retrieval.runfile import Run


@dataclass
class MiningReport:
    queries_in_run: int = 0
    queries_mined: int = 0
    queries_without_positives: int = 0  # in the run but no judged positive: no training example can be made
    positives_removed: int = 0
    queries_short: int = 0  # fewer negatives than the depth range holds (positives removed or a short run)
    negatives: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {key: value for key, value in vars(self).items() if key != "negatives"}


def mine_negatives(run: Run, qrels: Qrels, depth: tuple[int, int], *, min_relevance: int = 1) -> MiningReport:
    """Negatives per query: the run's documents at ranks depth[0]..depth[1] (1-based, inclusive) minus positives.

    Queries without any positive are counted and skipped (a training example needs one).
    """
    first, last = depth
    report = MiningReport(queries_in_run=len(run))
    for qid, ranked in run.items():
        positives = {docid for docid, grade in qrels.get(qid, {}).items() if grade >= min_relevance}
        if not positives:
            report.queries_without_positives += 1
            continue
        window = [docid for docid, _score in ranked[first - 1 : last]]
        kept = [docid for docid in window if docid not in positives]
        report.positives_removed += len(window) - len(kept)
        if len(kept) < last - first + 1:
            report.queries_short += 1
        report.negatives[qid] = kept
        report.queries_mined += 1
    return report


def negatives_as_run(report: MiningReport, run: Run) -> Run:
    """The mined negatives as a run (original scores, in rank order) for `lead-dist prepare --negatives-run`."""
    mined: Run = {}
    for qid, negatives in report.negatives.items():
        scores = dict(run[qid])
        mined[qid] = [(docid, scores[docid]) for docid in negatives]
    return mined
