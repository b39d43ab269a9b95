"""Seconds per optimizer step of every quality-grid method, fp32 against bf16 autocast, on this machine.

    .venv/bin/python -m benchmarks.quality.step_costs            # -> benchmarks/results/quality_step_costs.json
    .venv/bin/python -m benchmarks.quality.step_costs --rounds 1 --name quality_step_costs_smoke

What it times is the quality grid's step at the grid's sizes (configs/scifact/bench/grid.yaml): a 3-layer
MiniLM-shaped student and a 6-layer MiniLM-shaped DE teacher, 8 queries x (1 positive + 3 negatives), 32-token
queries, 128-token passages, K = 3 layer pairs; plus the teacher warm-up step and the student warm-up step (the
6-layer and the 3-layer model alone, contrastive, on the same batch). (The committed
benchmarks/results/quality_step_costs.json was measured when the teacher warm-up batch was 16 queries with in-batch
negatives only.) Each cell is the
body of the trainer's loop (`benchmarks/harness/cells.py` drives `lead_dist.train.step.run_step`, the trainer's own step),
with batches collated before timing. Cells run once per round, all in turn, after one untimed warm-up step each, so
load from other users hits every cell alike; the fp32/bf16 ratio is taken within a round (median over rounds), and
CPU seconds per step are recorded next to wall seconds because the build machines are shared.

Weights are random (MiniLM-shaped): the speed of a step does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch

from benchmarks.harness.machine import load_average, log, machine
from benchmarks.harness.results import write_json
from benchmarks.harness.timing import interleaved_rounds, median_ratio

DTYPES = {"fp32": "no", "bf16": "bf16"}
# The DE-teacher cells of the quality grid (benchmarks.harness.cells names: <size>/<dtype>/<mode>[-de-<frozen|joint>]).
DISTILL_CELLS = ("contrastive", "response-de-joint", "lead-de-joint", "response-de-frozen", "lead-de-frozen")


def _specs() -> dict[str, Any]:
    from benchmarks.harness.cells import MINILM_SHAPE, SizeSpec

    student = MINILM_SHAPE | {"num_hidden_layers": 3}
    return {
        # (name, student shape, teacher shape, queries, negatives, query len, passage len, K)
        "distill": SizeSpec("distill", student, MINILM_SHAPE, 8, 3, 32, 128, 3),
        "teacher_warmup": SizeSpec("teacher_warmup", MINILM_SHAPE, MINILM_SHAPE, 8, 3, 32, 128, 3),
    }


def _warmup_variants(spec: Any, dtypes: list[str]) -> list[Any]:
    """A model trained alone (contrastive), as the warm-up stage trains it. make_variants would also build the
    CE-teacher cells, which refuse a batch without hard negatives."""
    from benchmarks.harness.cells import TrainedState, Variant, build_models, run_config
    from benchmarks.harness.fixtures import scifact_examples
    from lead_dist.data import collate_for

    model = build_models(spec)["student"]
    examples = scifact_examples(spec.batch_size, spec.num_negatives)
    batch = {"student": collate_for(model, examples, spec.query_max_length, spec.passage_max_length)}
    variants = []
    for dtype in dtypes:
        trainees = {"student": TrainedState().trainee("student", model, True)}
        config = run_config(spec, "contrastive", None, False, DTYPES[dtype])
        variants.append(Variant(spec.name, DTYPES[dtype], "contrastive", None, False, config, trainees, batch, None,
                                len(examples)))  # fmt: skip
    return variants


def _actions(dtypes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """{cell/dtype: step callable}, and each cell's batch shapes and step FLOPs (for the JSON)."""
    from benchmarks.harness.cells import build_models, make_variants
    from benchmarks.harness.fixtures import scifact_examples

    specs = _specs()
    distill = specs["distill"]
    models = build_models(distill)
    examples = scifact_examples(distill.batch_size, distill.num_negatives)
    variants = [v for v in make_variants(distill, models, examples, tuple(DTYPES[d] for d in dtypes))
                if v.name.split("/", 2)[2] in DISTILL_CELLS]  # fmt: skip
    labelled = [("student_warmup_or_contrastive" if v.mode == "contrastive" else v.name.split("/", 2)[2], v)
                for v in variants]  # fmt: skip
    labelled += [("teacher_warmup", v) for v in _warmup_variants(specs["teacher_warmup"], dtypes)]
    actions: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    work: dict[str, float] = {}
    for label, variant in labelled:
        dtype = "fp32" if variant.dtype == "no" else variant.dtype
        actions[f"{label}/{dtype}"] = variant.step  # the bound method keeps its variant (models, batch) alive
        work[label] = round(variant.work()[0] / 1e9, 1)  # matmul FLOPs of one step (lead_dist.train.flops)
        shapes[label] = {
            model: {part: list(t["input_ids"].shape) for part, t in batch.items()}
            for model, batch in variant.batch.items()
        }
    return actions, {"batch_shapes": shapes, "step_gflops": work}


def measure(dtypes: list[str], rounds: int) -> dict[str, Any]:
    actions, described = _actions(dtypes)
    # fp32 and bf16 of one cell next to each other in every round
    order = sorted(actions, key=lambda name: (name.split("/")[0], dtypes.index(name.split("/")[1])))
    actions = {name: actions[name] for name in order}
    log(f"{len(actions)} cells: one untimed warm-up step each, then {rounds} timed rounds")
    for action in actions.values():
        action()
    timed = interleaved_rounds(actions, rounds, unit="queries")
    cells: dict[str, Any] = {}
    for name, result in timed.items():
        cpu = [s * share for s, share in zip(result["seconds"], result["cpu_share"], strict=True)]
        cells[name] = {
            "step_s": result["seconds"],
            "step_s_median": round(statistics.median(result["seconds"]), 3),
            "cpu_s_per_step": [round(c, 3) for c in cpu],
            "cpu_s_per_step_median": round(statistics.median(cpu), 3),
            "load_average_per_round": result["load_average_per_round"],
        }
    ratios = {}
    for cell in sorted({name.split("/")[0] for name in cells}):
        if len(dtypes) == 2 and all(f"{cell}/{d}" in cells for d in dtypes):
            fp32, bf16 = cells[f"{cell}/fp32"], cells[f"{cell}/bf16"]
            per_round = [b / f for b, f in zip(bf16["step_s"], fp32["step_s"], strict=True)]
            ratios[cell] = {
                "bf16_over_fp32_wall_per_round": [round(r, 3) for r in per_round],
                "bf16_over_fp32_wall_median": median_ratio(bf16["step_s"], fp32["step_s"]),
                "bf16_over_fp32_cpu_median": median_ratio(bf16["cpu_s_per_step"], fp32["cpu_s_per_step"]),
            }
    return {"cells": cells, "bf16_over_fp32": ratios, **described}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.step_costs", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole machine)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--name", default="quality_step_costs", help="results file stem")
    args = parser.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        print(f"--dtypes: unknown {unknown}; choose from {', '.join(DTYPES)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    this_machine = machine()
    from lead_dist.train.flops import peak_matmul_flops

    peaks = {d: round(peak_matmul_flops(torch.float32 if d == "fp32" else torch.bfloat16, "cpu") / 1e9, 1)
             for d in dtypes}  # fmt: skip
    log(f"matmul peak GFLOP/s: {peaks}")
    payload = {
        "command": "python -m benchmarks.quality.step_costs " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": this_machine,
        "threads": args.threads,
        "rounds": args.rounds,
        "matmul_peak_gflops": peaks,
        **measure(dtypes, args.rounds),
        "machine_after": {"load_average_1_5_15": load_average()},
    }
    path = write_json(args.name, payload)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
