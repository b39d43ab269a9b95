"""The results so far of a grid that is still running, or was stopped before its last seed (`--report-only`).

A grid of three seeds per arm costs hours of a 2-core machine and is resumable, so it is often measured over more
than one sitting. The report of such a grid is built from what has finished: each run keeps the seeds whose test
evaluations exist (a run with none is left out), a packaged teacher whose test evaluation is missing is left out with
its runs, and a regime whose two runs are not both there is left out. The JSON says what it holds in `partial`, so a
reader never takes one seed for three.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from benchmarks.quality.commands import Layout
from benchmarks.quality.plan import Plan
from benchmarks.quality.steps import StepResult


def finished_steps(out: Path) -> dict[str, StepResult]:
    """Every step a marker in `out`/done records as finished, with its recorded wall and CPU seconds."""
    results = {}
    for marker in sorted((out / "done").glob("*.json")):
        recorded = json.loads(marker.read_text())
        results[marker.stem] = StepResult(marker.stem, float(recorded["seconds"]), True, recorded.get("cpu_seconds"))
    return results


def finished_part(
    plan: Plan, layout: Layout, adopted: dict[str, set[int]] | None = None
) -> tuple[Plan, dict[str, Any]]:
    """`plan` cut to what has finished, and the `partial` record that says what was cut. `adopted`: the seeds per
    run whose records come from an earlier results file (adopt.py); they count as finished."""
    adopted = adopted or {}

    def evaluated(label: str, zero_shot: bool) -> bool:
        datasets = ["scifact"] + (["cranfield"] if plan.zero_shot and zero_shot else [])
        return all(layout.evaluation(label, dataset).is_file() for dataset in datasets)

    packaged = {name: spec for name, spec in plan.packaged_teachers.items()
                if layout.evaluation(f"teacher_{name}", "scifact").is_file()}  # fmt: skip
    runs, seeds_done = [], {}
    for spec in plan.runs:
        if spec.teacher in plan.packaged_teachers and spec.teacher not in packaged:
            seeds_done[spec.name] = []
            continue
        seeds = tuple(seed for seed in spec.seeds
                      if evaluated(f"{spec.name}-seed{seed}", spec.zero_shot) or seed in adopted.get(spec.name, ()))  # fmt: skip
        seeds_done[spec.name] = list(seeds)
        if seeds:
            runs.append(dataclasses.replace(spec, seeds=seeds))
    kept = {spec.name for spec in runs}
    regimes = [r for r in plan.regimes if r.response in kept and r.lead in kept]
    cut = dataclasses.replace(plan, runs=runs, packaged_teachers=packaged, regimes=regimes)
    record = {
        "packaged_teachers_measured": {
            name: _zero_shot(layout, name)
            for name in plan.packaged_teachers
            if name not in packaged and layout.evaluation(f"teacher_{name}_zeroshot", "dev").is_file()
        },  # fmt: skip
        "seeds_planned": list(plan.seeds),
        "seeds_done": seeds_done,
        "packaged_teachers_left_out": sorted(set(plan.packaged_teachers) - set(packaged)),
        "regimes_left_out": sorted(r.name for r in plan.regimes if r not in regimes),
        "note": "results so far (--report-only): each run's numbers are over the seeds listed in seeds_done",
    }
    return cut, record


def _zero_shot(layout: Layout, name: str) -> dict[str, Any]:
    """What was measured of a packaged teacher left out (its zero-shot dev evaluation against the warmed student's,
    and its probe's per-layer cross entropies), so that the JSON keeps why its runs have not started."""
    metrics = json.loads(layout.evaluation(f"teacher_{name}_zeroshot", "dev").read_text())["metrics"]
    student = layout.evaluation("student_warmup", "dev")
    probe = layout.probe_of(f"{name}_zeroshot")
    return {
        "zero_shot_dev": metrics,
        "student_warmup_dev": json.loads(student.read_text())["metrics"] if student.is_file() else None,
        "probe_cross_entropy": json.loads(probe.read_text())["cross_entropy"] if probe.is_file() else None,
    }
