"""TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document, ranks from 1."""

from __future__ import annotations

from pathlib import Path

# {qid: [(docid, score), ...]} in rank order (best first).
Run = dict[str, list[tuple[str, float]]]


def write_run(run: Run, path: str | Path, tag: str = "lead_dist") -> None:
    """Write a run, ranks 1.. in the given order; written to a temporary name then renamed (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for qid, ranked in run.items():
            for rank, (docid, score) in enumerate(ranked, 1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    tmp.replace(path)


def read_run(path: str | Path) -> Run:
    """Read a run; each query's documents come back ordered by rank (the file's rank column, not its line order)."""
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise ValueError(f"{path}:{line_no}: expected 'qid Q0 docid rank score tag', got {line.strip()[:80]!r}")
            qid, _q0, docid, rank, score, _tag = parts
            try:
                ranked.setdefault(qid, []).append((int(rank), docid, float(score)))
            except ValueError as err:
                raise ValueError(f"{path}:{line_no}: rank must be an integer and score a number ({err})") from err
    return {qid: [(docid, score) for _r, docid, score in sorted(rows)] for qid, rows in ranked.items()}
