"""The throughput benchmark's goals, its JSON + PNG, and the README table.

.venv/bin/python -m benchmarks.throughput.report benchmarks/results/throughput.json   # print the README table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness.goals import goal as harness_goal
from benchmarks.harness.results import BarPanel, write_bar_grid, write_json
from benchmarks.throughput.cached import cached_panels

GOALS = {
    "contrastive_vs_st": "lead_dist's contrastive step at least 1.2x the sentence-transformers step's examples/s",
    "lead_over_response": "LEAD step time at most 1.10x the response-based step time with the same teacher",
    "mfu": "MFU within 2x of the matmul peak measured in the same run (MFU >= 0.5) on this CPU",
}
THRESHOLDS = {"contrastive_vs_st": (">=", 1.2), "lead_over_response": ("<=", 1.10), "mfu": (">=", 0.5)}


def goal_status(contrastive_vs_st: dict, lead_over_response: dict, mfu: dict) -> dict[str, Any]:
    """Per goal: the threshold, the keys that meet it, those that miss it (worst first), and `met` overall."""
    status: dict[str, Any] = {}
    for goal, values in (
        ("contrastive_vs_st", contrastive_vs_st),
        ("lead_over_response", lead_over_response),
        ("mfu", mfu),
    ):
        if goal == "mfu":  # the peer's MFU is shown, but the goal is lead_dist's
            values = {k: v for k, v in values.items() if "st-mnrl-peer" not in k}
        status[goal] = harness_goal(values, *THRESHOLDS[goal])
    return status


def _short(name: str) -> str:
    """'minilm/bf16/lead-cb-joint' -> 'bf16 lead-cb-joint' (the panel's title names the size)."""
    return " ".join(name.split("/")[1:])


def _panels(payload: dict[str, Any]) -> list[list[BarPanel]]:
    rows = []
    for size in payload["setup"]:
        names = [n for n in payload["cells"] if n.startswith(f"{size}/")]
        cells = [payload["cells"][n] for n in names]
        rows.append(
            [
                BarPanel(
                    f"{size}: training examples/s (median; bars = min..max of rounds)",
                    "examples/s",
                    [_short(n) for n in names],
                    [c["examples_per_s"] for c in cells],
                    errors=[tuple(c["examples_per_s_min_max"]) for c in cells],
                    value_format="{:.1f}",
                ),
                BarPanel(
                    f"{size}: MFU vs measured matmul peak",
                    "MFU",
                    [_short(n) for n in names],
                    [c["mfu"] for c in cells],
                    reference=("goal 0.5", 0.5),
                    value_format="{:.3f}",
                ),
            ]
        )
    summary = [
        BarPanel(
            "contrastive / sentence-transformers",
            "examples/s ratio",
            list(payload["contrastive_vs_st"]),
            list(payload["contrastive_vs_st"].values()),
            reference=("goal >= 1.2", 1.2),
            value_format="{:.2f}",
        ),
        BarPanel(
            "LEAD / response step time",
            "step time ratio",
            list(payload["lead_over_response"]),
            list(payload["lead_over_response"].values()),
            reference=("goal <= 1.10", 1.10),
            value_format="{:.2f}",
        ),
    ]
    summary += cached_panels(payload)  # issue 12: benchmarks/throughput/cached.py
    memory = payload.get("large_teacher_memory")
    if memory:
        engines = list(memory["by_engine"])
        # A run the memory guard stopped shows the highest RSS sampled before the stop, marked as such.
        values = [
            max(memory["by_engine"][e].get("peak_rss_gib_per_rank") or memory["by_engine"][e]["sampled_peak_rss_gib"])
            for e in engines
        ]
        labels = [e if "stopped" not in memory["by_engine"][e] else f"{e} (stopped, >=)" for e in engines]
        summary.append(
            BarPanel(
                "24-layer teacher + 6-layer student, 2 ranks",
                "peak RSS per rank (GiB, max of ranks)",
                labels,
                values,
                value_format="{:.2f}",
            )
        )
    scaling = payload.get("scaling_1_vs_2_processes")
    if scaling:
        names = list(scaling["launches"])
        summary.append(
            BarPanel(
                f"same global batch ({scaling['global_batch']}), tiny LEAD, lead-dist train",
                "examples/s",
                [n.replace("_", " ") for n in names],
                [scaling[f"{n}_examples_per_s_median"] for n in names],
                value_format="{:.1f}",
            )
        )
    rows.append(summary)
    return rows


def write_outputs(name: str, payload: dict[str, Any]) -> tuple[Path, Path]:
    json_path = write_json(name, payload)
    machine = payload["machine"]
    footnote = (
        f"{machine['cpu_model']}, {machine['usable_cores']} cores, torch {machine.get('torch')} "
        f"({payload['threads']} threads); load average before {machine['load_average_1_5_15']}, after "
        f"{payload['machine_after']['load_average_1_5_15']}; matmul peak {payload['matmul_peak_gflops']} GFLOP/s; "
        f"{payload['rounds']} interleaved rounds, warm-up step excluded"
    )
    png_path = write_bar_grid(name, _panels(payload), title="lead_dist training throughput (CPU)", footnote=footnote)
    return json_path, png_path


def markdown_table(payload: dict[str, Any]) -> str:
    """The README's performance table: one line per cell, then the ratios against the goals."""
    lines = [
        "| cell (size/dtype/mode) | examples/s | tokens/s | step s | GFLOP/step | MFU | step peak RSS GiB (+increase) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in payload["cells"].items():
        lines.append(
            f"| {name} | {c['examples_per_s']:.1f} | {c['tokens_per_s']:,.0f} | {c['step_s_median']:.3f} | "
            f"{c['step_gflops']:.2f} | {c['mfu']:.3f} | {c['peak_rss_gib']:.2f} (+{c['step_increase_gib']:.2f}) |"
        )
    lines += ["", "| goal | threshold | value(s) | met |", "|---|---|---|---|"]
    for goal in ("contrastive_vs_st", "lead_over_response"):
        values = ", ".join(f"{k} {v:.2f}" for k, v in payload[goal].items())
        status = payload["goals"][goal]
        lines.append(f"| `{goal}` | {status['threshold']} | {values} | {'yes' if status['met'] else 'NO'} |")
    mfu = payload["goals"]["mfu"]
    best = max((v, k) for k, v in payload["mfu"].items() if "peer" not in k)
    lines.append(f"| `mfu` | {mfu['threshold']} | best {best[1]} {best[0]:.3f} | {'yes' if mfu['met'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    loaded = json.loads(Path(sys.argv[1]).read_text())
    if "--png" in sys.argv[2:]:  # redraw the PNG of a results JSON (same name, same folder)
        path = Path(sys.argv[1])
        print(write_bar_grid(path.stem, _panels(loaded), title="lead_dist training throughput (CPU)",
                                    results_dir=path.parent))  # fmt: skip
    else:
        print(markdown_table(loaded))
