"""Writing TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document, ranks from 1.

The reader (and the order it gives tied scores) is `lead_dist.data.readers.trec_run.read_run`, shared with the
negative sources of `lead-dist prepare`.
"""

from __future__ import annotations

from pathlib import Path

from lead_dist.atomic import atomic_open
from lead_dist.data.readers.trec_run import Run

__all__ = ["Run", "write_run"]


def write_run(run: Run, path: str | Path, tag: str = "lead_dist") -> None:
    """Write a run, ranks 1.. in the given order; written to a temporary name then renamed (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as handle:
        for qid, ranked in run.items():
            for rank, (docid, score) in enumerate(ranked, 1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
