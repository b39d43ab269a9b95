"""The quality benchmark's charts: test metrics per student run, and the dev curves of every warm-up and run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness.results import BarPanel, write_bar_chart


def write_chart(name: str, payload: dict[str, Any], results_dir: Path) -> Path:
    """nDCG@10 and R@100 on SciFact test per student run (bars: mean; whiskers: min..max over seeds), the DE
    teacher as a dashed line."""
    labels, ndcg, ndcg_err, recall, recall_err = [], [], [], [], []
    for run, student in payload["students"].items():
        s = student["summary"]["scifact"]
        labels.append(f"{run} (n={len(student['seeds'])})")
        ndcg.append(s["ndcg@10"]["mean"])
        ndcg_err.append((s["ndcg@10"]["min"], s["ndcg@10"]["max"]))
        recall.append(s["recall@100"]["mean"])
        recall_err.append((s["recall@100"]["min"], s["recall@100"]["max"]))
    teacher = payload["teachers"]["de"]["scifact"]
    panels = [
        BarPanel("SciFact test nDCG@10", "nDCG@10", labels, ndcg, ndcg_err,
                 reference=("DE teacher", teacher["ndcg@10"]), value_format="{:.3f}"),
        BarPanel("SciFact test recall@100", "recall@100", labels, recall, recall_err,
                 reference=("DE teacher", teacher["recall@100"]), value_format="{:.3f}"),
    ]  # fmt: skip
    summary = payload["summary"]
    p_text = "" if summary["p_lead_vs_response"] is None else (
        f"; LEAD - response {summary['lead_minus_response']:+.4f}, p = {summary['p_lead_vs_response']:.3g}")  # fmt: skip
    return write_bar_chart(name, panels, title=f"LEAD vs response KD vs contrastive on SciFact{p_text}",
                           footnote=_footnote(payload), results_dir=results_dir)  # fmt: skip


def _footnote(payload: dict[str, Any]) -> str:
    machine = payload.get("machine", {})
    six = any(s.get("student_start") == "teacher_de" for s in payload["students"].values())
    starts = "MiniLM students from the warmed 3-layer student" + (
        " (runs *_l6: the warmed 6-layer DE teacher)" if six else ""
    )
    return (f"grid {payload['grid']} ({payload['grid_file']}); {starts}; "
            f"{machine.get('cpu_model', '?')}, {machine.get('usable_cores', '?')} cores, load "
            f"{machine.get('load_average_1_5_15', '?')}")  # fmt: skip


def write_curves_chart(name: str, payload: dict[str, Any], results_dir: Path) -> Path:
    """Dev nDCG@10 against steps: the warm-ups (left) and every distillation run, mean over seeds (right)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on the build machines
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    warm_ups = [(f"{kind.upper()} teacher warm-up", t["dev_curve"]) for kind, t in payload["teachers"].items()
                if t.get("dev_curve")]  # fmt: skip
    for label, curve in (*warm_ups, ("student warm-up", payload["student_warmup"]["dev_curve"])):
        if curve:
            left.plot(*zip(*curve, strict=True), marker="o", label=label)
    left.set(title="warm-ups (alone, contrastive)", xlabel="step", ylabel="dev nDCG@10 (dev corpus sample)")
    for run, student in payload["students"].items():
        curves = [r["dev_curve"] for r in student["seeds"].values()]
        steps = [s for s, _v in curves[0]]
        values = [statistics.fmean(c[i][1] for c in curves) for i in range(len(steps))]
        # one line style per teacher and student start (the 6-layer student's curves start higher)
        style = {"de": "-", "cb": "-."}.get(
            student["teacher"], "--" if student.get("student_start") != "teacher_de" else ":"
        )
        right.plot(steps, values, style, marker="o", markersize=3, label=f"{run} (n={len(curves)})")
    right.set(title="distillation from the warmed students (mean over seeds)", xlabel="step",
              ylabel="dev nDCG@10 (dev corpus sample)")  # fmt: skip
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.text(0.01, 0.01, _footnote(payload), fontsize=7, color="#555555")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
