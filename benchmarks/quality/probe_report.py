"""The step-0 probe's numbers as README tables (benchmarks/README.md "Quality"): each layer's ground-truth cross
entropy on training and dev batches, and each LEAD arm's pairs with their step-0 KL and layer term.

    .venv/bin/python -m benchmarks.quality.probe_report benchmarks/results/quality.json   # print the tables

Reads only the probe's JSON (the `probe` entries of the results file, one per teacher probed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _numbers(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def cross_entropy_table(probe: dict[str, Any]) -> str:
    """Rows: teacher and student on training and dev batches; each layer's cross entropy, then the final score's."""
    rows = ["| model | batches | cross entropy of layers 0.. (the gap LEAD re-weights with, for the teacher) | final |",
            "|---|---|---|---|"]  # fmt: skip
    for model in ("teacher", "student"):
        for where, values in probe["cross_entropy"].items():
            count = probe["batches"] if where == "train" else probe["dev_batches"]
            rows.append(f"| {model} | {where} ({count} x {probe['batch_size']} queries) | {_numbers(values[model][:-1])} "
                        f"| {values[model][-1]:.2f} |")  # fmt: skip
    return "\n".join(rows)


def _pairs(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['student']}-{r['teacher']} {r['share_of_steps']:.0%}" for r in rows)


def arms_table(probe: dict[str, Any]) -> str:
    """One row per LEAD arm: its (student-teacher) pairs with their share of the steps, the step-0 KL per pair and
    on average, and its layer term at step 0 (sum_k w_k KL_k), on training and dev batches."""
    response = {where: probe["scorings"][probe["chosen_scoring"]]["response_kl"] if where == "train"
                else probe["dev"]["response_kl"] for where in probe["cross_entropy"]}  # fmt: skip
    head = ["arm", "pairs student-teacher (share of steps)"]
    for where in probe["cross_entropy"]:
        head += [f"KL per pair, {where}", f"mean KL, {where}", f"layer term, {where}"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in probe["arms"].items():
        first = next(iter(arm.values()))
        drawn = first["strategy"] == "random"  # many pairs: the JSON lists each, the table their means
        row = [name, f"random draws: {len(first['pairs'])} pairs" if drawn else _pairs(first["pairs"])]
        for where in probe["cross_entropy"]:
            per_pair = "(JSON)" if drawn else _numbers([p["kl"] for p in arm[where]["pairs"]])
            row += [per_pair, f"{arm[where]['kl_mean']:.2f}", f"{arm[where]['layer_term']:.2f}"]
        rows.append("| " + " | ".join(row) + " |")
    note = ", ".join(f"{where} {value:.2f}" for where, value in response.items())
    return "\n".join(rows) + f"\n\nResponse KL (teacher final || student final) at step 0: {note}."


def probe_tables(payload: dict[str, Any]) -> str:
    """Both tables for every probe in a results file (the DE teacher's `probe`, then any `probes` of others)."""
    probes = {"de": payload.get("probe")} | (payload.get("probes") or {})
    parts = []
    for teacher, probe in probes.items():
        if probe is None or "cross_entropy" not in probe:
            continue
        parts += [f"Teacher {teacher} ({probe['teacher']}), student {probe['student']}, scoring "
                  f"{probe['chosen_scoring']}:", cross_entropy_table(probe)]  # fmt: skip
        if probe.get("arms"):
            parts.append(arms_table(probe))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality.probe_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("results", type=Path, help="a quality results JSON")
    args = parser.parse_args(argv)
    print(probe_tables(json.loads(args.results.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
