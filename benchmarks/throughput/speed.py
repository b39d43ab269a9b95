"""What each `train.speed` switch does to the CPU step, on the current setting and the length-varied one.

    nice -n 10 .venv/bin/python -m benchmarks.throughput.speed                 # ~15 min on 2 shared cores
    .venv/bin/python -m benchmarks.throughput.speed --size tiny --rounds 1 --no-compile    # a smoke run

Settings (the real all-MiniLM-L6-v2 student, 8 SciFact train queries x (1 + 3) passages a step, 32-token queries):
`current` = passages of 128 tokens (the throughput grid's length, where nearly every SciFact abstract is truncated
to the same length), `scifact256` = 256 tokens (lengths vary). Cells, all timed by `lead_dist.train.step.run_step`
in interleaved rounds (every cell once per round, so load from other users hits them alike):
* the sentence-transformers MNRL peer, and lead_dist's contrastive step with `chunk_size` 0 (one padded batch) and
  each chunk size of `--chunks`: `contrastive_vs_st` per chunk size;
* frozen-teacher LEAD (MiniLM teacher), bf16 autocast, teacher held in fp32 against held in bf16 (`teacher_bf16`);
* with `--compile` (scifact256 only): the contrastive step with compiled blocks (inductor, bucket 16), its compile
  time and count, after the warm-up steps that compile every shape.
Padding shares (benchmarks/throughput/padding.py): SciFact at 128 and 256 tokens and the demo data, per chunk size.
Results: benchmarks/results/throughput_speed.json + .png, with the machine, the load average per round and each
cell's CPU share (the machine is shared: ratios within a round are what to read).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Any

import torch

from benchmarks.harness.machine import load_average, log, machine
from benchmarks.harness.timing import cpu_seconds, interleaved_rounds, paired_ratio

SETTINGS = {"current": 128, "scifact256": 256}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="minilm", choices=("tiny", "minilm"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", default="4,8,16", help="chunk sizes to time besides 0 (comma list)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--name", default="throughput_speed")
    args = parser.parse_args(argv)
    args.chunks = [int(c) for c in args.chunks.split(",") if c.strip()]
    if args.rounds < 1 or any(c < 1 for c in args.chunks):
        parser.error("--rounds and every --chunks value must be >= 1")
    return args


def build_cells(size: str, passage_max_length: int, chunks: list[int], compiled: bool) -> tuple[dict, dict]:
    """{cell name: step action} and {cell name: variant} for one setting."""
    from benchmarks.harness.cells import SIZES, TrainedState, build_models, make_variant, with_speed
    from benchmarks.harness.fixtures import scifact_examples
    from benchmarks.throughput.peer import PeerStep
    from lead_dist.data import collate_for

    spec = dataclasses.replace(SIZES[size], batch_size=8, num_negatives=3, passage_max_length=passage_max_length)
    models = build_models(spec)
    examples = scifact_examples(spec.batch_size, spec.num_negatives)
    lengths = (spec.query_max_length, spec.passage_max_length)
    student, teacher = models["student"], models["teacher_de"]
    batch = {name: collate_for(m, examples, *lengths) for name, m in (("student", student), ("teacher", teacher))}
    shared = TrainedState()
    contrastive = make_variant(spec, "contrastive", None, False, "no", {"student": student}, batch, shared)
    variants = {f"chunk_{c}": with_speed(contrastive, shared, chunk_size=c, compile=False) for c in [0, *chunks]}
    lead = make_variant(spec, "lead", "de", False, "bf16", {"student": student, "teacher": teacher}, batch, shared)
    for label in ("teacher_fp32", "teacher_bf16"):  # held in bf16: apply_to_models casts a copy, as at set-up
        variants[f"lead_frozen_bf16/{label}"] = with_speed(
            lead, shared, chunk_size=0, teacher_bf16=label == "teacher_bf16"
        )
    if compiled:  # a compiled copy of the student with its own optimizer
        variants["chunk_8/compiled"] = with_speed(contrastive, chunk_size=8, compile=True, length_bucket=16)
    peer = PeerStep(student, examples, *lengths, "no")
    actions = {"st-mnrl-peer": peer.step} | {name: v.step for name, v in variants.items()}
    return actions, {"variants": variants, "peer": peer, "spec": spec}


def measure_setting(name: str, args: argparse.Namespace) -> dict[str, Any]:
    passage_max_length = SETTINGS[name]
    compiled = args.compile and name == "scifact256"
    actions, keep = build_cells(args.size, passage_max_length, args.chunks, compiled)
    warm_up = {}
    for cell, action in actions.items():  # the first step of each: allocator, and compilation of every shape
        started, cpu = time.perf_counter(), cpu_seconds()
        action()
        if cell.endswith("compiled"):
            action()  # the second step compiles nothing new (the same batch, the same shapes)
        warm_up[cell] = {
            "wall_s": round(time.perf_counter() - started, 2),
            "cpu_s": round(cpu_seconds() - cpu, 2),
        }
    log(f"{name}: warm-up done {warm_up}")
    timed = interleaved_rounds(actions, args.rounds, unit="queries")
    step_s = {cell: timed[cell]["seconds"] for cell in timed}
    per_cpu = {cell: timed[cell]["per_cpu_second"] for cell in timed}

    chunk_cells = [c for c in timed if c.startswith("chunk_") and "/" not in c]
    result: dict[str, Any] = {
        "passage_max_length": passage_max_length,
        "cells": {
            cell: {
                "step_s_median": round(statistics.median(step_s[cell]), 4),
                "step_s": step_s[cell],
                "cpu_share": timed[cell]["cpu_share"],
                "queries_per_cpu_second": per_cpu[cell],
                "load_average_per_round": timed[cell]["load_average_per_round"],
                "warm_up": warm_up[cell],
            }
            for cell in timed
        },
        "contrastive_vs_st": {cell: paired_ratio(timed, "st-mnrl-peer", cell) for cell in chunk_cells},
        "chunked_over_one_batch": {
            cell: paired_ratio(timed, "chunk_0", cell) for cell in chunk_cells if cell != "chunk_0"
        },
        "teacher_bf16_over_fp32": paired_ratio(timed, "lead_frozen_bf16/teacher_fp32", "lead_frozen_bf16/teacher_bf16"),
    }
    if "chunk_8/compiled" in keep["variants"]:
        result["compiled_over_eager"] = paired_ratio(timed, "chunk_8", "chunk_8/compiled")
        result["compiles"] = keep["variants"]["chunk_8/compiled"].compiles.count
    shapes = keep["variants"]["chunk_0"].batch["student"]
    result["student_shapes"] = {side: list(t["input_ids"].shape) for side, t in shapes.items()}
    keep["peer"].close()
    return result


def padding_section(size: str, chunks: list[int]) -> dict[str, Any]:
    from benchmarks.harness.cells import SIZES, build_models
    from benchmarks.throughput.padding import demo_padding, scifact_padding

    student = build_models(SIZES[size])["student"]
    sizes = [0, *chunks]
    return {
        "scifact128": scifact_padding(student, 128, sizes),
        "scifact256": scifact_padding(student, 256, sizes),
        "demo": demo_padding(student, sizes),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    this_machine = machine()
    padding = padding_section(args.size, args.chunks)
    log(f"padding shares: {padding}")
    settings = {name: measure_setting(name, args) for name in SETTINGS}
    payload = {
        "command": "python -m benchmarks.throughput.speed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": this_machine,
        "machine_after": {"load_average_1_5_15": load_average()},
        "shared_machine": "other jobs ran during the measurement: compare ratios within a round, not rates",
        "threads": args.threads,
        "rounds": args.rounds,
        "size": args.size,
        "padding_share": padding,
        "settings": settings,
    }
    from benchmarks.throughput.speed_report import write_speed_outputs

    json_path, png_path = write_speed_outputs(args.name, payload)
    log(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
