"""The quality benchmark's results: metrics collected from the steps' outputs, summarised over seeds, charted.

Numbers come only from files the steps wrote: `lead-dist evaluate` / `rerank` results JSON (metrics and per-query
metrics), the trainer's `log.jsonl` (dev curves, seconds per step), the probe's JSON and the step runner's wall
times. Nothing is recomputed here except means, spreads, ratios, the paired tests and the plateau rule
(`summary.py`).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness.machine import REPO_ROOT
from benchmarks.quality.curves import from_log, plateau
from benchmarks.quality.summary import COMPARISONS, build_summary, paired_tests, regimes

METRICS = ("ndcg@10", "mrr@10", "recall@100")
# Teacher kinds that are not single-vector retrievers: evaluated by `lead-dist rerank` of the DE teacher's top list.
RERANKED_KINDS = ("cb", "ce")


def read_metrics(path: Path) -> dict[str, float]:
    """The stable metric keys of a `lead-dist evaluate` / `rerank` results JSON."""
    metrics = json.loads(path.read_text())["metrics"]
    missing = [key for key in METRICS if key not in metrics]
    if missing:
        raise KeyError(f"{path}: metrics {missing} missing (has {sorted(metrics)})")
    return {key: float(metrics[key]) for key in METRICS}


def read_per_query(path: Path, metric: str = "ndcg@10") -> dict[str, float]:
    return {qid: float(values[metric]) for qid, values in json.loads(path.read_text())["per_query"].items()}


def step_seconds_from_log(output_dir: Path) -> float | None:
    """Seconds the trainer spent in its optimizer steps (sum over log windows), without start-up, evaluations and
    export."""
    log_file = output_dir / "log.jsonl"
    if not log_file.is_file():
        return None
    total = 0.0
    for line in log_file.read_text().splitlines():
        record = json.loads(line)
        if "step_s" in record and "window_steps" in record:
            total += float(record["step_s"]) * int(record["window_steps"])
    return total


def trained_steps(output_dir: Path) -> int | None:
    """The optimizer steps a run took (its `exported` event)."""
    for line in reversed((output_dir / "log.jsonl").read_text().splitlines()):
        record = json.loads(line)
        if record.get("event") == "exported":
            return int(record["step"])
    return None


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


def _datasets(plan: Any, zero_shot: bool) -> list[str]:
    return ["scifact"] + (["cranfield"] if plan.zero_shot and zero_shot else [])


def _teachers(plan: Any, steps: dict[str, Any], layout: Any) -> dict[str, Any]:
    teachers: dict[str, Any] = {}
    for kind, recipe in plan.teachers.items():
        entry: dict[str, Any] = {
            "recipe": _repo_relative(recipe),
            "warmup_wall_s": _seconds(steps, f"warmup-{kind}"),
            "warmup_step_s": step_seconds_from_log(layout.teacher_dir(kind)),
            "warmup_steps": trained_steps(layout.teacher_dir(kind)),
            "dev": read_metrics(layout.evaluation(f"teacher_{kind}", "dev")),
        }
        entry.update(_evaluations(layout, f"teacher_{kind}", _datasets(plan, True)))
        if kind == "de":
            start = read_metrics(layout.evaluation("packaged_minilm", "devcorpus"))["ndcg@10"]
            entry["dev_curve"] = [(0, start), *from_log(layout.teacher_dir(kind))]
            entry["dev_curve_plateau"] = plateau(entry["dev_curve"])
        else:
            entry["evaluated_by"] = (
                f"lead-dist rerank of the DE teacher's top {plan.rerank['depth']} per query; recall@"
                f"{plan.rerank['depth']} is the DE teacher's by construction"
            )
        teachers[kind] = entry
    if "ce" in teachers:
        teachers["ce"]["beats_de_first_stage_on_dev"] = (
            teachers["ce"]["dev"]["ndcg@10"] > teachers["de"]["dev"]["ndcg@10"]
        )
    for name, packaged in plan.packaged_teachers.items():
        teachers[name] = _packaged_teacher(name, packaged, steps, layout)
    return teachers


def _packaged_teacher(name: str, packaged: Any, steps: dict[str, Any], layout: Any) -> dict[str, Any]:
    """A packaged teacher: its zero-shot dev numbers against the warmed student's, which teacher the protocol used
    (as published, or warmed up because zero-shot it did not beat the student on dev), and that one's numbers."""
    zero_shot = read_metrics(layout.evaluation(f"teacher_{name}_zeroshot", "dev"))
    student = read_metrics(layout.evaluation("student_warmup", "dev"))
    warmed = not zero_shot["ndcg@10"] > student["ndcg@10"]  # the rule of commands.zero_shot_beats_student
    entry: dict[str, Any] = {
        "model": packaged.model,
        "zero_shot_dev": zero_shot,
        "student_warmup_dev": student,
        "warmed_up": warmed,
        "used": "warmed up on SciFact train: zero-shot it did not beat the warmed student on dev" if warmed
        else "as published: zero-shot it beats the warmed student on dev",
        "dev": read_metrics(layout.evaluation(f"teacher_{name}", "dev")) if warmed else zero_shot,
        "scifact": read_metrics(layout.evaluation(f"teacher_{name}", "scifact")),
        "cache_wall_s": _seconds(steps, f"cache-teacher-{name}"),
    }  # fmt: skip
    if warmed:
        entry["warmup_recipe"] = _repo_relative(packaged.warmup)
        entry["dev_curve"] = from_log(layout.teacher_dir(name))  # on the dev corpus sample, unlike zero_shot_dev
        entry["dev_curve_plateau"] = plateau(entry["dev_curve"])
    return entry


def _probes(plan: Any, layout: Any) -> dict[str, Any]:
    """The probes of the packaged teachers (the DE teacher's is `probe`): zero-shot, warmed, other student starts."""
    found = {}
    for name in plan.packaged_teachers:
        for label in (f"{name}_zeroshot", name, *(f"{name}-{spec.student}" for spec in plan.runs)):
            path = layout.probe_of(label)
            if path.is_file():
                found[label] = json.loads(path.read_text())
    return found


def _student_warmup(plan: Any, steps: dict[str, Any], layout: Any) -> dict[str, Any]:
    curve = from_log(layout.student_warmup)
    return {"recipe": _repo_relative(plan.student_warmup), "dev_curve": curve, "dev_curve_plateau": plateau(curve),
            "warmup_wall_s": _seconds(steps, "warmup-student"), "warmup_steps": trained_steps(layout.student_warmup),
            "warmup_step_s": step_seconds_from_log(layout.student_warmup)}  # fmt: skip


def _students(plan: Any, steps: dict[str, Any], layout: Any, starts: dict[str, float], skipped: list[str],
              adopted: dict[str, dict[str, Any]]) -> dict:  # fmt: skip
    """Per run, its seeds' records: from this folder's files, or for a seed the folder has not evaluated, the record
    `adopted` holds (adopt.py), listed under the run's `adopted_seeds`."""
    students: dict[str, Any] = {}
    for spec in plan.runs:
        if spec.name in skipped:
            continue
        datasets = _datasets(plan, spec.zero_shot)
        per_seed: dict[str, Any] = {}
        adopted_seeds = []
        for seed in spec.seeds:
            label, run_dir = f"{spec.name}-seed{seed}", layout.student_dir(spec.name, seed)
            if not layout.evaluation(label, "scifact").is_file() and str(seed) in adopted.get(spec.name, {}):
                per_seed[str(seed)] = adopted[spec.name][str(seed)]
                adopted_seeds.append(seed)
                continue
            record: dict[str, Any] = _evaluations(layout, label, datasets)
            record["scifact_per_query_ndcg@10"] = read_per_query(layout.evaluation(label, "scifact"))
            record["dev_curve"] = [(0, starts[spec.student]), *from_log(run_dir)]  # step 0: its start's last value
            record["train_wall_s"] = _seconds(steps, f"train-{label}")
            record["train_step_s"] = step_seconds_from_log(run_dir)
            record["steps"] = trained_steps(run_dir)
            per_seed[str(seed)] = record
        summary: dict[str, Any] = {
            name: {key: spread([r[name][key] for r in per_seed.values()]) for key in METRICS} for name in datasets
        }
        # .get: a record adopted from an earlier report may lack a time field a later report added
        summary["train_wall_s"] = spread([r["train_wall_s"] for r in per_seed.values() if r.get("train_wall_s")])
        summary["train_step_s_per_step"] = spread(
            [r["train_step_s"] / r["steps"] for r in per_seed.values() if r.get("train_step_s") and r.get("steps")]
        )
        students[spec.name] = {"recipe": _repo_relative(spec.config), "teacher": spec.teacher, "group": spec.group,
                               "student_start": spec.student,
                               "distill_steps": next(iter(per_seed.values()))["steps"], "seeds": per_seed,
                               "summary": summary}  # fmt: skip
        if adopted_seeds:
            students[spec.name]["adopted_seeds"] = adopted_seeds
    return students


def _shares(students: dict[str, Any], teachers: dict[str, Any]) -> None:
    for student in students.values():
        teacher = teachers.get(student["teacher"], {}).get("scifact", {}).get("ndcg@10")
        values = [r["scifact"]["ndcg@10"] / teacher for r in student["seeds"].values()] if teacher else []
        student["summary"]["share_of_teacher_ndcg@10"] = spread(values) if values else None


def build_payload(plan: Any, steps: dict[str, Any], layout: Any, *, skipped_runs: list[str],
                  adopted: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything the JSON holds except the machine (added by the caller). `adopted`: per run, per seed, the records
    taken from an earlier results file for seeds this folder has not evaluated (adopt.py checks them)."""
    seconds = {name: round(result.seconds, 1) for name, result in steps.items()}
    teachers = _teachers(plan, steps, layout)
    warmup = _student_warmup(plan, steps, layout)
    # each run's dev curve starts at its start's last dev value (same dev corpus sample, same evaluation)
    starts = {"student_warmup": warmup["dev_curve"][-1][1] if warmup["dev_curve"] else float("nan"),
              "teacher_de": teachers["de"]["dev_curve"][-1][1]}  # fmt: skip
    students = _students(plan, steps, layout, starts, skipped_runs, adopted or {})
    _shares(students, teachers)
    packaged = None
    if plan.evaluate_packaged:
        packaged = _evaluations(layout, "packaged_minilm", ["dev", *_datasets(plan, True)])
    mining_report = layout.hard_shards / "mining_report.json"
    payload: dict[str, Any] = {
        "grid": plan.grid,
        "grid_file": _repo_relative(plan.source),
        "settings": {
            "seeds": list(plan.seeds),
            "dev_split": {
                "queries": _repo_relative(plan.dev_split.queries),
                "corpus_size": plan.dev_split.corpus_size,
                "seed": plan.dev_split.seed,
                "split_summary": json.loads((layout.split / "split.json").read_text()),
            },  # fmt: skip
            "evaluate": plan.evaluate,
            "rerank": plan.rerank,
            "probe": plan.probe,
            "warmup_overrides": plan.warmup_overrides,
            "student_warmup_overrides": plan.student_warmup_overrides,
            "distill_overrides": plan.distill_overrides,
            "mining": {
                "first_stage": "packaged all-MiniLM-L6-v2",
                "top_k": plan.mining_top_k,
                "depth": plan.mining_depth,
            },  # fmt: skip
            "datasets": {
                "train": f"{plan.train.data.name}/{plan.train.split} minus the dev queries",
                "test": f"{plan.test.data.name}/{plan.test.split}",
                "zero_shot": f"{plan.zero_shot.data.name}/{plan.zero_shot.split}" if plan.zero_shot else None,
            },
            "metric_definitions": "lead_dist/retrieval/README.md (pytrec_eval: ndcg_cut.10 with graded gains, "
            "recip_rank on the run cut at 10, recall.100), means over the judged test queries, full corpus; dev "
            "curves: the trainer's in-training evaluation on the fixed dev corpus sample (for comparing checkpoints "
            "of one curve, higher than whole-corpus numbers)",
        },
        "teachers": teachers,
        "student_warmup": warmup,
        "packaged_minilm": packaged,
        "probe": json.loads(layout.probe.read_text()) if layout.probe.is_file() else None,
        "probes": _probes(plan, layout),
        "students": students,
        "runs_skipped": {name: "the CE teacher does not beat the DE's first stage on dev" for name in skipped_runs},
        "paired_tests": paired_tests(
            students,
            COMPARISONS + [(r.lead, r.response) for r in plan.regimes if (r.lead, r.response) not in COMPARISONS],
        ),
        "mining_report": json.loads(mining_report.read_text()) if mining_report.is_file() else None,
        "step_wall_seconds": seconds,
        "wall_seconds_all_steps": round(sum(seconds.values()), 1),
        "step_cpu_seconds": {
            name: round(result.cpu_seconds, 1) for name, result in steps.items() if result.cpu_seconds is not None
        },
        "steps_skipped_as_done": sorted(name for name, result in steps.items() if result.skipped),
        "determinism": "one process, fixed seeds, DataLoader without workers: rerunning a step with the same seed "
        "on the same machine reproduces its numbers; a rerun of the script skips finished steps",
    }
    payload["summary"] = build_summary(payload)
    payload["regimes"] = regimes(plan.regimes, students, teachers, payload["paired_tests"])
    return payload


def _seconds(steps: dict[str, Any], name: str) -> float | None:
    return round(steps[name].seconds, 1) if name in steps else None


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
    head = ["model", "teacher", "seeds", "SciFact nDCG@10", "MRR@10", "R@100", "share of teacher nDCG@10",
            "dev nDCG@10 (curve start -> end)"]  # fmt: skip
    head += ["Cranfield nDCG@10 (zero-shot)"] if zero_shot else []
    rows = [head, ["---"] * len(head)]

    def one(value: float) -> dict[str, Any]:
        return {"mean": value, "std": None}

    depth = payload["settings"]["rerank"]["depth"]
    for kind, teacher in payload["teachers"].items():
        how = f"; re-ranks DE top {depth}" if kind in RERANKED_KINDS else ""
        label = f"{teacher['model']}, {teacher['used']}" if "model" in teacher else f"warmed-up MiniLM-L6{how}"
        row = [f"teacher {kind.upper()} ({label})", "-", "1"]
        row += [_fmt(one(teacher["scifact"][k])) for k in ("ndcg@10", "mrr@10")]
        row += [f"n/a (top {depth})" if kind in RERANKED_KINDS else _fmt(one(teacher["scifact"]["recall@100"]))]
        row += ["1.000", f"{teacher['dev']['ndcg@10']:.3f} (whole corpus)"]
        row += [_fmt(one(teacher["cranfield"]["ndcg@10"])) if "cranfield" in teacher else "-"] if zero_shot else []
        rows.append(row)
    warm = payload["student_warmup"]["dev_curve"]
    if warm:
        rows.append(["student warm-up (MiniLM's first 3 layers)", "-", "1", "-", "-", "-", "-",
                     f"{warm[0][1]:.3f} -> {warm[-1][1]:.3f}"] + (["-"] if zero_shot else []))  # fmt: skip
    for name, student in payload["students"].items():
        s = student["summary"]
        curves = [r["dev_curve"] for r in student["seeds"].values()]
        ends = spread([c[-1][1] for c in curves])
        row = [f"student {name}", student["teacher"].upper(), str(len(student["seeds"]))]
        row += [_fmt(s["scifact"][k]) for k in ("ndcg@10", "mrr@10", "recall@100")]
        row += [_fmt(s["share_of_teacher_ndcg@10"]), f"{curves[0][0][1]:.3f} -> {_fmt(ends)}"]
        row += [_fmt(s["cranfield"]["ndcg@10"]) if "cranfield" in s else "-"] if zero_shot else []
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def tests_table(payload: dict[str, Any]) -> str:
    """The paired tests (difference in mean nDCG@10 over the test queries, p), then one line per regime."""
    rows = ["| comparison | difference in nDCG@10 | p |", "|---|---|---|"]
    for name, test in payload["paired_tests"].items():
        a, b = name.split("_vs_")
        rows.append(f"| {a} - {b} | {test['mean_difference']:+.4f} | {test['p_value']:.2g} |")
    for name, regime in (payload.get("regimes") or {}).items():
        rows.append(f"| regime {name}: LEAD - response KD (teacher {regime['teacher_ndcg10']:.3f}, "
                    f"{regime['seeds']} seeds) | {regime['lead_minus_response']:+.4f} | "
                    f"{regime['p_lead_vs_response']:.2g} |")  # fmt: skip
    return "\n".join(rows)
