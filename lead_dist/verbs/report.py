"""What `evaluate` and `rerank` print: a short metrics table and the input counts worth a look. The whole result
(per-query values, settings, timings) is in the JSON file they write to --out."""

from __future__ import annotations

from collections.abc import Mapping


def metrics_table(columns: Mapping[str, Mapping[str, float]], out: str, num_queries: int) -> str:
    """One row per metric, one column per run (e.g. {"first stage": ..., "re-ranked": ...}), 4 decimals."""
    names = list(next(iter(columns.values())))
    width = max(len(name) for name in names) + 2
    header = f"{'metric':<{width}}" + "".join(f"{title:>14}" for title in columns)
    rows = [f"{name:<{width}}" + "".join(f"{values[name]:>14.4f}" for values in columns.values()) for name in names]
    return "\n".join([header, *rows, f"{num_queries} queries; everything else in {out}"])


def input_notes(report: Mapping[str, object]) -> str | None:
    """The non-zero counts of the input report, one line (None when every count is zero)."""
    counts = {key: value for key, value in report.items() if isinstance(value, int) and value}
    if not counts:
        return None
    return "input: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counts.items())


def print_summary(columns: Mapping[str, Mapping[str, float]], report: Mapping[str, object], out: str, n: int) -> None:
    print(metrics_table(columns, out, n), flush=True)
    notes = input_notes(report)
    if notes:
        print(notes, flush=True)
