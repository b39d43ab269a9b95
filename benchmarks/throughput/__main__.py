"""Training throughput of lead_dist on this machine, against the sentence-transformers peer and the matmul peak.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TORCH_EXTENSIONS_DIR=.cache/torch_extensions \\
        .venv/bin/python -m benchmarks.throughput            # the full run (~10-15 min on 2 shared cores)
    .venv/bin/python -m benchmarks.throughput --quick        # tiny size, fp32, 1 round, no launches (~1 min)

One run measures (benchmarks/results/throughput.json + .png):
* every grid cell (size x dtype x contrastive | response | LEAD x DE/CB/CE teacher x frozen/joint): examples/s,
  tokens/s, the step's peak RSS and its increase, FLOPs (lead_dist.train.flops) and MFU against the matmul peak
  measured in this run for the same dtype (`benchmarks/harness/cells.py`: each cell's step is the loop's `lead_dist.train.step.run_step`);
* the peer, a sentence-transformers MNRL step on the same student, batch, lengths, threads and dtype
  (`contrastive_vs_st` = lead_dist contrastive examples/s over the peer's, per round, median);
* LEAD's overhead (`lead_over_response` = LEAD step time over the response step time, same teacher);
* 1 against 2 processes at the same global batch, and the per-rank memory of a 24-layer teacher under DDP,
  ZeRO-2 and ZeRO-3 (`launch.py`, real `lead-dist train` loops under torchrun).
Every timed cell runs once per round, all cells in turn (the first step of each is a warm-up and is not timed), so
load from other users of the shared machine hits every cell alike; ratios are taken within a round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.machine import load_average, log, machine, usable_cores
from benchmarks.harness.timing import interleaved_rounds, median_ratio
from benchmarks.throughput.cached import CACHED_GOALS, cached_goals
from benchmarks.throughput.report import GOALS, goal_status, write_outputs

DTYPES = {"fp32": "no", "bf16": "bf16"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny,minilm", help="comma list of: tiny, minilm")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of: fp32, bf16")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per cell (medians are reported)")
    parser.add_argument("--scaling-rounds", type=int, default=2, help="alternating 1- and 2-process runs")
    parser.add_argument("--no-launch", action="store_true", help="skip the multi-process runs")
    parser.add_argument("--no-large-teacher", action="store_true", help="skip the 24-layer teacher memory runs")
    parser.add_argument(
        "--large-teacher-from",
        default=None,
        metavar="JSON",
        help="take large_teacher_memory from an earlier results JSON instead of measuring it (memory, not time)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny, fp32, 1 round, no launches (a smoke run)")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="torch threads (default: cores)")
    parser.add_argument(
        "--name", default=None, help="results name: benchmarks/results/<name>.json/.png (default throughput, or "
        "throughput_quick with --quick, so a smoke run never overwrites the committed full results)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dtypes, args.rounds, args.no_launch = "tiny", "fp32", 1, True
    if args.name is None:
        args.name = "throughput_quick" if args.quick else "throughput"
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    from benchmarks.harness.cells import SIZES

    for key, values, valid in (("--sizes", args.sizes, SIZES), ("--dtypes", args.dtypes, DTYPES)):
        unknown = [v for v in values if v not in valid]
        if unknown or not values:
            parser.error(f"{key}: {unknown or values} not understood; expected a comma list of {', '.join(valid)}")
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be >= 1")
    return args


def measure_size(size: str, dtypes: list[str], rounds: int, peaks: dict[str, float]) -> dict[str, Any]:
    """The grid of one model size: every cell and the peer, warmed up, memory-sampled, then timed round by round."""
    from benchmarks.harness.cells import SIZES, build_models, make_variants
    from benchmarks.harness.fixtures import scifact_examples
    from benchmarks.harness.memory import measure_step_memory, state_gib
    from benchmarks.throughput.cached import build_over_encode, cached_ratios, cached_variants
    from benchmarks.throughput.peer import PeerStep

    spec = SIZES[size]
    models = build_models(spec)
    examples = scifact_examples(spec.batch_size, spec.num_negatives)
    variants = make_variants(spec, models, examples, tuple(DTYPES[d] for d in dtypes))
    variants += cached_variants(spec, models, examples, tuple(DTYPES[d] for d in dtypes))  # issue 12: cached.py
    peers = {
        d: PeerStep(models["student"], examples, spec.query_max_length, spec.passage_max_length, DTYPES[d])
        for d in dtypes
    }
    actions: dict[str, Any] = {}
    for dtype in dtypes:
        actions[f"{size}/{dtype}/st-mnrl-peer"] = peers[dtype].step
        actions.update({v.name: v.step for v in variants if v.name.startswith(f"{size}/{dtype}/")})
    log(f"{size}: {len(actions)} cells; warm-up step of each, then one step under the memory sampler")
    memory = {}
    for name, action in actions.items():
        action()
        memory[name] = measure_step_memory(action)
    timed = interleaved_rounds(actions, rounds, unit="examples")

    cells: dict[str, Any] = {}
    by_name = {v.name: v for v in variants}
    for name, result in timed.items():
        dtype = name.split("/")[1]
        if name in by_name:
            flops, tokens = by_name[name].work()
            state = state_gib(by_name[name].trainees)
        else:
            peer = peers[dtype]
            flops, tokens = by_name[f"{size}/{dtype}/contrastive"].work()[0], peer.tokens()
            state = None
        step_s = statistics.median(result["seconds"])
        cells[name] = {
            "examples_per_step": spec.batch_size,
            "examples_per_s": round(spec.batch_size / step_s, 3),
            "examples_per_s_min_max": [
                round(spec.batch_size / max(result["seconds"]), 3),
                round(spec.batch_size / min(result["seconds"]), 3),
            ],
            "tokens_per_step": tokens,
            "tokens_per_s": round(tokens / step_s, 1),
            "step_s_median": round(step_s, 4),
            "step_s": result["seconds"],
            "cpu_share": result["cpu_share"],
            "load_average_per_round": result["load_average_per_round"],
            "step_gflops": round(flops / 1e9, 3),
            "mfu": round(flops / step_s / peaks[dtype], 4),
            "model_state_gib": state,
            **memory[name],
        }
    # Ratios from the step times of each round (rates are rounded to 0.1 in the summary, too coarse for MiniLM).
    ratios: dict[str, Any] = {"contrastive_vs_st": {}, "lead_over_response": {}}
    for dtype in dtypes:
        own = timed[f"{size}/{dtype}/contrastive"]["seconds"]
        peer = timed[f"{size}/{dtype}/st-mnrl-peer"]["seconds"]
        ratios["contrastive_vs_st"][f"{size}/{dtype}"] = median_ratio(peer, own)  # same examples: rate ratio
        for v in variants:
            if v.mode == "lead" and v.name.startswith(f"{size}/{dtype}/") and not v.name.endswith("-cached"):
                response = timed[v.name.replace("/lead-", "/response-")]["seconds"]
                key = v.name.replace("/lead-", "/")
                ratios["lead_over_response"][key] = median_ratio(timed[v.name]["seconds"], response)
    ratios |= cached_ratios(timed, size, dtypes)
    build_texts = 256 if size == "tiny" else 64
    ratios["cache_build_over_encode"] = {size: build_over_encode(models["teacher_de"], spec, build_texts, rounds)}
    shapes = {name: {k: list(t["input_ids"].shape) for k, t in b.items()} for name, b in variants[0].batch.items()}
    setup = {
        "student": models["student"].backbone.config.to_diff_dict() | {"kind": "de"},
        "teacher_shape": spec.teacher_config,
        "batch_size": spec.batch_size,
        "num_negatives": spec.num_negatives,
        "query_max_length": spec.query_max_length,
        "passage_max_length": spec.passage_max_length,
        "lead_k": spec.lead_k,
        "student_input_shapes": shapes,
        "peer_input_shapes": peers[dtypes[0]].shapes(),
    }
    keep = {"variants": variants, "peers": peers}
    return {"cells": cells, "ratios": ratios, "setup": setup, "_keep": keep}


def profile_misses(per_size: dict[str, Any], goals: dict[str, Any], per_goal: int = 2) -> dict[str, Any]:
    """For the worst `per_goal` misses of each goal and size: the phases of the cells compared and the top
    operators of each. An MFU miss is profiled on the contrastive cell (the student alone) of that size and dtype."""
    from benchmarks.throughput.phases import phases, top_operators

    profiles: dict[str, Any] = {}
    for goal, status in goals.items():
        for size in per_size:
            keys = [k for k in status.get("missed", []) if k.startswith(f"{size}/")]
            if goal == "mfu":  # one profile per dtype is enough to see where a step's time goes
                keys = sorted({"/".join(k.split("/")[:2]) + "/contrastive" for k in keys})
            for key in keys[:per_goal]:
                dtype = key.split("/")[1]
                keep = per_size[size]["_keep"]
                by_name = {v.name: v for v in keep["variants"]}
                if goal == "lead_over_response":
                    lead = by_name[f"{size}/{dtype}/lead-{key.split('/', 2)[2]}"]
                    targets = {"lead": lead, "response": by_name[lead.name.replace("/lead-", "/response-")]}
                else:
                    targets = {"lead_dist": by_name[f"{size}/{dtype}/contrastive"], "peer": keep["peers"][dtype]}
                profiles[f"{goal}:{key}"] = {
                    "phases_median_s": {name: phases(t) for name, t in targets.items()},
                    "top_operators": {name: top_operators(t.step) for name, t in targets.items()},
                }
                log(f"profiled {goal} miss at {key}")
    return profiles


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    from lead_dist.train.flops import peak_matmul_flops

    this_machine = machine()
    peaks = {d: peak_matmul_flops(torch.float32 if d == "fp32" else torch.bfloat16, "cpu") for d in args.dtypes}
    log("measured matmul peak: " + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items()))
    per_size = {size: measure_size(size, args.dtypes, args.rounds, peaks) for size in args.sizes}

    cells = {name: cell for s in per_size.values() for name, cell in s["cells"].items()}
    contrastive_vs_st = {k: v for s in per_size.values() for k, v in s["ratios"]["contrastive_vs_st"].items()}
    lead_over_response = {k: v for s in per_size.values() for k, v in s["ratios"]["lead_over_response"].items()}
    mfu = {name: cell["mfu"] for name, cell in cells.items()}
    goals = goal_status(contrastive_vs_st, lead_over_response, mfu)
    cache_keys = ("lead_frozen_cached_over_contrastive", "lead_frozen_live_over_cached", "cache_build_over_encode")
    cache_results = {key: {k: v for s in per_size.values() for k, v in s["ratios"][key].items()} for key in cache_keys}
    goals |= cached_goals(cache_results)
    profiles = profile_misses(per_size, goals)

    launches: dict[str, Any] = {}
    if not args.no_launch:
        from benchmarks.harness.launch import prepare_demo_shards
        from benchmarks.throughput.launch import large_teacher_memory, scaling

        with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
            shards = prepare_demo_shards(Path(tmp))
            launches["scaling_1_vs_2_processes"] = scaling(Path(tmp), shards, args.scaling_rounds)
            if not args.no_large_teacher and args.large_teacher_from is None:
                launches["large_teacher_memory"] = large_teacher_memory(Path(tmp), shards)
    if args.large_teacher_from is not None:
        earlier = json.loads(Path(args.large_teacher_from).read_text())
        if "large_teacher_memory" not in earlier:
            raise SystemExit(f"--large-teacher-from {args.large_teacher_from}: no large_teacher_memory key in it")
        launches["large_teacher_memory"] = earlier["large_teacher_memory"] | {
            "measured_in_run_of": earlier["machine"]["date_utc"],
            "measured_with_threads": earlier.get("threads"),
        }

    payload = {
        "command": "python -m benchmarks.throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": this_machine,
        "machine_after": {"load_average_1_5_15": load_average()},
        "matmul_peak_gflops": {d: round(p / 1e9, 1) for d, p in peaks.items()},
        "threads": args.threads,
        "rounds": args.rounds,
        "setup": {size: s["setup"] for size, s in per_size.items()},
        "cells": cells,
        "contrastive_vs_st": contrastive_vs_st,
        "lead_over_response": lead_over_response,
        "mfu": mfu,
        "goals": goals,
        "goal_definitions": GOALS | CACHED_GOALS,
        **cache_results,
        "profiles_of_missed_goals": profiles,
        **launches,
    }
    json_path, png_path = write_outputs(args.name, payload)
    log(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
