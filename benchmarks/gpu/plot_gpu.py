"""Chart of the GPU run's JSON (benchmarks/results/throughput_gpu.json -> throughput_gpu.png), drawn here.

    .venv/bin/python -m benchmarks.gpu.plot_gpu [--json benchmarks/results/throughput_gpu.json]

The GPU call brings back only JSON and text; this draws its training throughput and MFU against the 35% goal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness.results import RESULTS_DIR, BarPanel, write_bar_chart

MFU_GOAL = 0.35


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "throughput_gpu.json")
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text())
    batch = report["shapes"]["batch_size"]
    labels, rates, mfus = [], [], []
    for key, queries in (("training_bf16", batch), ("training_bf16_batch_x2", 2 * batch)):
        for variant in ("lead-de-frozen", "lead-de-joint"):
            entry = report.get(key, {}).get(variant)
            if entry:
                labels.append(f"{variant.removeprefix('lead-de-')}\n{queries} q")
                rates.append(entry["examples_per_s"])
                mfus.append(entry["mfu"])
    panels = [
        BarPanel("LEAD training, bf16", "queries / s", labels, rates),
        BarPanel("MFU (of measured bf16 matmul peak)", "MFU", labels, mfus, reference=("goal 0.35", MFU_GOAL),
                 value_format="{:.2f}"),
    ]  # fmt: skip
    machine = report["machine"]
    path = write_bar_chart(
        args.json.stem, panels, results_dir=args.json.parent,
        title=f"{machine['device']}: 12-layer BERT-base teacher, 6-layer student, 8 passages x 144 tokens per query",
        footnote=f"torch {machine['torch']}; benchmarks/gpu/run.sh",
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
