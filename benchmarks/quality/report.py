"""The quality benchmark's results: metrics collected from the steps' outputs, summarised over seeds, charted.

Numbers come only from files the CLI steps wrote: `lead-dist evaluate` results JSON (metrics), the trainer's
`log.jsonl` (seconds per step) and the step runner's wall times. Nothing is recomputed here except means, spreads
and ratios.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BarPanel, write_bar_chart

METRICS = ("ndcg@10", "mrr@10", "recall@100")
# Teacher kinds that are not single-vector retrievers: evaluated by `lead-dist rerank` of the DE teacher's top list.
RERANKED_KINDS = ("cb", "ce")


def read_metrics(path: Path) -> dict[str, float]:
    """The stable metric keys of a `lead-dist evaluate` results JSON."""
    metrics = json.loads(path.read_text())["metrics"]
    missing = [key for key in METRICS if key not in metrics]
    if missing:
        raise KeyError(f"{path}: metrics {missing} missing (has {sorted(metrics)})")
    return {key: float(metrics[key]) for key in METRICS}


def step_seconds_from_log(output_dir: Path) -> float | None:
    """Seconds the trainer spent in its optimizer steps (sum over log windows), without start-up and export."""
    log_file = output_dir / "log.jsonl"
    if not log_file.is_file():
        return None
    total = 0.0
    for line in log_file.read_text().splitlines():
        record = json.loads(line)
        if "step_s" in record and "window_steps" in record:
            total += float(record["step_s"]) * int(record["window_steps"])
    return total


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and spread of per-seed values: sample standard deviation (None for one seed), min, max, n."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _evaluations(layout: Any, label: str, datasets: list[str]) -> dict[str, dict[str, float]]:
    return {name: read_metrics(layout.evaluation(label, name)) for name in datasets}


def build_payload(plan: Any, steps: dict[str, Any], layout: Any, *, full_plan: Any) -> dict[str, Any]:
    """Everything the JSON holds except the machine (added by the caller)."""
    datasets = ["scifact"] + (["cranfield"] if plan.zero_shot else [])
    seconds = {name: round(result.seconds, 1) for name, result in steps.items()}

    teachers: dict[str, Any] = {}
    for kind, recipe in plan.teachers.items():
        entry: dict[str, Any] = {
            "recipe": _repo_relative(recipe),
            "warmup_wall_s": seconds.get(f"warmup-{kind}"),
            "warmup_step_s": step_seconds_from_log(layout.teacher_dir(kind)),
        }
        entry.update(_evaluations(layout, f"teacher_{kind}", datasets))
        if kind in RERANKED_KINDS:
            entry["evaluated_by"] = (
                f"lead-dist rerank of the DE teacher's top {plan.rerank['depth']} per query; recall@"
                f"{plan.rerank['depth']} is the DE teacher's by construction"
            )
        teachers[kind] = entry

    packaged = None
    if plan.evaluate_packaged:
        packaged = _evaluations(layout, "packaged_minilm", datasets)

    students: dict[str, Any] = {}
    for spec in plan.runs:
        per_seed: dict[str, Any] = {}
        teacher_ndcg = teachers[spec.teacher].get("scifact", {}).get("ndcg@10")
        for seed in spec.seeds:
            label = f"{spec.name}-seed{seed}"
            record: dict[str, Any] = _evaluations(layout, label, datasets)
            record["train_wall_s"] = seconds.get(f"train-{label}")
            record["train_step_s"] = step_seconds_from_log(layout.student_dir(spec.name, seed))
            if teacher_ndcg:
                record["share_of_teacher_ndcg@10"] = record["scifact"]["ndcg@10"] / teacher_ndcg
            per_seed[str(seed)] = record
        summary: dict[str, Any] = {
            name: {key: spread([r[name][key] for r in per_seed.values()]) for key in METRICS} for name in datasets
        }
        shares = [r["share_of_teacher_ndcg@10"] for r in per_seed.values() if "share_of_teacher_ndcg@10" in r]
        summary["share_of_teacher_ndcg@10"] = spread(shares) if shares else None
        summary["train_wall_s"] = spread([r["train_wall_s"] for r in per_seed.values() if r["train_wall_s"]])
        students[spec.name] = {
            "recipe": _repo_relative(spec.config),
            "teacher": spec.teacher,
            "group": spec.group,
            "seeds": per_seed,
            "summary": summary,
        }

    mining_report = layout.hard_shards / "mining_report.json"
    return {
        "grid": plan.grid,
        "grid_file": _repo_relative(plan.source),
        "settings": {
            "seeds": list(plan.seeds),
            "evaluate": plan.evaluate,
            "rerank": plan.rerank,
            "warmup_overrides": plan.warmup_overrides,
            "distill_overrides": plan.distill_overrides,
            "mining": {"top_k": plan.mining_top_k, "depth": plan.mining_depth},
            "datasets": {
                "train": f"{plan.train.data.name}/{plan.train.split}",
                "test": f"{plan.test.data.name}/{plan.test.split}",
                "zero_shot": f"{plan.zero_shot.data.name}/{plan.zero_shot.split}" if plan.zero_shot else None,
            },
            "metric_definitions": "lead_dist/retrieval/README.md (pytrec_eval: ndcg_cut.10 with graded gains, "
            "recip_rank on the run cut at 10, recall.100), means over the judged test queries, full corpus",
        },
        "teachers": teachers,
        "packaged_minilm": packaged,
        "students": students,
        "mining_report": json.loads(mining_report.read_text()) if mining_report.is_file() else None,
        "step_wall_seconds": seconds,
        "wall_seconds_all_steps": round(sum(seconds.values()), 1),
        "step_cpu_seconds": {
            name: round(result.cpu_seconds, 1) for name, result in steps.items() if result.cpu_seconds is not None
        },
        "steps_skipped_as_done": sorted(name for name, result in steps.items() if result.skipped),
        "determinism": "one process, fixed seed, DataLoader without workers: rerunning a step with the same seed "
        "on the same machine reproduces its numbers; a rerun of the script skips finished steps",
    }


def _repo_relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat["std"] is not None and not math.isnan(stat["std"]):
        text += f" ± {stat['std']:.{digits}f}"
    return text


def markdown_table(payload: dict[str, Any]) -> str:
    """The README table: teachers, then each student run (mean ± sample std over its seeds)."""
    zero_shot = payload["settings"]["datasets"]["zero_shot"] is not None
    head = ["model", "teacher", "seeds", "SciFact nDCG@10", "MRR@10", "R@100", "share of teacher nDCG@10"]
    head += ["Cranfield nDCG@10 (zero-shot)"] if zero_shot else []
    head += ["train s (wall)"]
    rows = [head, ["---"] * len(head)]

    def one(value: float) -> dict[str, Any]:
        return {"mean": value, "std": None}

    depth = payload["settings"].get("rerank", {}).get("depth")
    for kind, teacher in payload["teachers"].items():
        how = f"; re-ranks DE top {depth}" if kind in RERANKED_KINDS else ""
        row = [f"teacher {kind.upper()} (warmed-up MiniLM-L6{how})", "-", "1"]
        row += [_fmt(one(teacher["scifact"][k])) for k in ("ndcg@10", "mrr@10")]
        # a re-ranking keeps the first stage's documents: its recall is the DE teacher's, not its own
        row += [f"n/a (top {depth})" if kind in RERANKED_KINDS else _fmt(one(teacher["scifact"]["recall@100"]))]
        row += ["1.000"]
        row += [_fmt(one(teacher["cranfield"]["ndcg@10"]))] if zero_shot else []
        row += [f"{teacher['warmup_wall_s']:.0f}" if teacher.get("warmup_wall_s") else "-"]
        rows.append(row)
    if payload.get("packaged_minilm"):
        packaged = payload["packaged_minilm"]
        row = ["all-MiniLM-L6-v2 as packaged", "-", "1"]
        row += [_fmt(one(packaged["scifact"][k])) for k in ("ndcg@10", "mrr@10", "recall@100")] + ["-"]
        row += [_fmt(one(packaged["cranfield"]["ndcg@10"]))] if zero_shot else []
        rows.append(row + ["-"])
    for name, student in payload["students"].items():
        s = student["summary"]
        row = [f"student {name}", student["teacher"].upper(), str(len(student["seeds"]))]
        row += [_fmt(s["scifact"][k]) for k in ("ndcg@10", "mrr@10", "recall@100")]
        row += [_fmt(s["share_of_teacher_ndcg@10"])]
        row += [_fmt(s["cranfield"]["ndcg@10"])] if zero_shot else []
        row += [_fmt(s["train_wall_s"], 0)]
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def write_chart(name: str, payload: dict[str, Any], results_dir: Path) -> Path:
    """nDCG@10 and R@100 on SciFact test per student run (bars: mean; whiskers: min..max over seeds), the DE
    teacher as a dashed line. Training times are in the table and the JSON."""
    labels, ndcg, ndcg_err, recall, recall_err = [], [], [], [], []
    for run, student in payload["students"].items():
        s = student["summary"]
        labels.append(f"{run} (n={len(student['seeds'])})")
        ndcg.append(s["scifact"]["ndcg@10"]["mean"])
        ndcg_err.append((s["scifact"]["ndcg@10"]["min"], s["scifact"]["ndcg@10"]["max"]))
        recall.append(s["scifact"]["recall@100"]["mean"])
        recall_err.append((s["scifact"]["recall@100"]["min"], s["scifact"]["recall@100"]["max"]))
    teacher = payload["teachers"]["de"]["scifact"]
    panels = [
        BarPanel("SciFact test nDCG@10", "nDCG@10", labels, ndcg, ndcg_err,
                 reference=("DE teacher", teacher["ndcg@10"]), value_format="{:.3f}"),
        BarPanel("SciFact test recall@100", "recall@100", labels, recall, recall_err,
                 reference=("DE teacher", teacher["recall@100"]), value_format="{:.3f}"),
    ]  # fmt: skip
    machine = payload.get("machine", {})
    footnote = (
        f"grid {payload['grid']} ({payload['grid_file']}); 3-layer MiniLM students; {machine.get('cpu_model', '?')}, "
        f"{machine.get('usable_cores', '?')} cores, load {machine.get('load_average_1_5_15', '?')}"
    )
    return write_bar_chart(
        name, panels, title="LEAD vs response KD vs contrastive on SciFact", footnote=footnote, results_dir=results_dir
    )
