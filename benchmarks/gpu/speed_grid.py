"""MFU before and after each `train.speed` switch on a lent GPU: frozen and joint LEAD at 32 and 64 queries a step.

    python -m benchmarks.gpu.speed_grid --out OUT/gpu_speed.json         # on the GPU machine (run.sh, stage speed)
    python -m benchmarks.gpu.speed_grid --dry-run --out /tmp/speed.json  # here: CPU, tiny shapes, 1 timed step

The models and the full-length batch are bench_gpu's (12-layer BERT-base-shaped teacher, 6-layer student cut from
it, 8 passages of 144 tokens and a 32-token query per query, bf16 autocast), so the `baseline` row repeats the
measured 0.21 / 0.29 MFU. The switches are added one at a time, each row keeping the ones above it:
  baseline (teacher fp32 under autocast, eager, one padded batch) -> teacher_bf16 (frozen only) -> compile
  (inductor, every block, lengths bucketed to 32) -> chunk_size 64.
The full-length batch has no padding, so chunking can only cost there (smaller matmuls); what it saves is measured
on a second batch whose passage lengths are drawn uniformly from 48..256 tokens and queries from 8..32 (about the
spread of SciFact at 256 tokens), as queries/s with and without chunks (MFU counts padded positions, so the saving
shows in queries/s). `--dry-run` compiles with dynamo's aot_eager backend (no C++ compiler needed). Each cell: 3 warm-up steps (compilation of every shape, its time recorded), then `--steps`
timed steps with synchronisation; the compile count and peak memory are recorded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch

from benchmarks.harness.fixtures import gpu_tokenizer
from benchmarks.harness.goals import value_goal
from benchmarks.harness.results import write_json_file
from benchmarks.harness.timing import timed_steps

ROWS: list[tuple[str, dict[str, Any]]] = [
    ("baseline", {"chunk_size": 0, "teacher_bf16": False, "compile": False}),
    ("+teacher_bf16", {"chunk_size": 0, "teacher_bf16": True, "compile": False}),
    ("+compile", {"chunk_size": 0, "teacher_bf16": True, "compile": True, "length_bucket": 32}),
    ("+chunks", {"chunk_size": 64, "teacher_bf16": True, "compile": True, "length_bucket": 32}),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, 1 timed step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per cell")
    parser.add_argument("--queries", default=None, help="queries per step, comma list (default 32,64; dry run 8,16)")
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args(argv)
    args.device, args.tiny = ("cpu", True) if args.dry_run else ("cuda", False)
    args.backend = "aot_eager" if args.dry_run else "inductor"  # no minutes of C++ compilation in a CPU check
    args.steps = 1 if args.dry_run else args.steps
    args.queries = [int(q) for q in (args.queries or ("8,16" if args.dry_run else "32,64")).split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no GPU visible to torch; use --dry-run to check the script on the CPU")
    args.tokenizer = gpu_tokenizer(args.tokenizer)
    args.num_negatives = 7
    return args


def varied_batch(args: argparse.Namespace, queries: int, vocab: int, device: torch.device) -> dict[str, Any]:
    """Like bench_gpu.random_batch, but every text has its own length (padded to the batch's longest, mask 0)."""
    generator = torch.Generator().manual_seed(1)
    scale = 8 if args.tiny else 1

    def tokens(rows: int, low: int, high: int) -> dict[str, torch.Tensor]:
        lengths = torch.randint(low // scale, high // scale + 1, (rows,), generator=generator)
        longest = int(lengths.max())
        ids = torch.randint(1000, vocab, (rows, longest), generator=generator)
        mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
        ids = ids * mask
        ids[:, 0] = 101
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": (mask * 0).to(device)}

    side = {"queries": tokens(queries, 8, 32), "passages": tokens(queries * (1 + args.num_negatives), 48, 256)}
    return {"student": side, "teacher": side}


def measure_cell(
    models: tuple[Any, Any], batch: dict, joint: bool, speed: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """One cell: the switches applied to copies of the models (`with_speed`), warm-up (compiles), timed steps."""
    from benchmarks.gpu.bench_gpu import make_variant
    from benchmarks.harness.cells import with_speed

    device = torch.device(args.device)
    teacher, student = models
    variant = with_speed(make_variant(teacher, student, batch, joint, "bf16", device), backend=args.backend, **speed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm_up_s, seconds = timed_steps(variant.step, 1 if args.dry_run else 3, args.steps, device)
    flops, tokens = variant.work()
    step_s = statistics.median(seconds)
    return {
        "queries_per_s": variant.examples / step_s,
        "step_s_median": step_s,
        "step_s": seconds,
        "step_tflops": flops / 1e12,
        "real_tokens": tokens,
        "warm_up_s": warm_up_s,
        "compiles": variant.compiles.count if variant.compiles is not None else 0,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def run_grid(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from benchmarks.gpu.bench_gpu import build_models, random_batch
    from lead_dist.train.flops import peak_matmul_flops

    device = torch.device(args.device)
    teacher, student = build_models(args, device)
    peak = peak_matmul_flops(torch.bfloat16, device)
    report["matmul_peak_tflops_bf16"] = peak / 1e12
    grid = report.setdefault("grid", {})
    for queries in args.queries:
        shaped = argparse.Namespace(**{**vars(args), "batch_size": queries})
        batch = random_batch(shaped, len(student.tokenizer), device)
        for joint in (False, True):
            for row, speed in ROWS:
                if joint and row == "+teacher_bf16":
                    continue  # a trained teacher keeps fp32 master weights
                cell = measure_cell((teacher, student), batch, joint, speed, args)
                cell["mfu"] = cell["step_tflops"] * 1e12 / cell["step_s_median"] / peak
                grid[f"{'joint' if joint else 'frozen'}/{queries}/{row}"] = cell
                print(f"{'joint' if joint else 'frozen'}/{queries}/{row}: MFU {cell['mfu']:.3f}", flush=True)
                write_json_file(args.out, report)
        varied = varied_batch(args, queries, len(student.tokenizer), device)
        for row, speed in ROWS[2:]:  # compiled, without and with chunks, on length-varied text
            cell = measure_cell((teacher, student), varied, False, speed, args)
            grid[f"varied/frozen/{queries}/{row}"] = cell
        pair = (grid[f"varied/frozen/{queries}/+chunks"], grid[f"varied/frozen/{queries}/+compile"])
        report.setdefault("chunks_speedup_varied", {})[str(queries)] = (
            pair[0]["queries_per_s"] / pair[1]["queries_per_s"]
        )
        write_json_file(args.out, report)


def goals(report: dict[str, Any], queries: int, tiny: bool) -> dict[str, Any]:
    """The issue's goals at `queries` a step (64 on the GPU), from the best row of each cell; the frozen baseline
    measured on the H100 before this work: 423 queries/s at 64."""
    grid = report["grid"]

    def best(prefix: str, key: str) -> float:
        return max(cell[key] for name, cell in grid.items() if name.startswith(prefix))

    frozen_mfu, frozen_qps = best(f"frozen/{queries}/", "mfu"), best(f"frozen/{queries}/", "queries_per_s")
    joint_mfu = best("joint/", "mfu")
    return {
        f"frozen_{queries}_mfu_at_least_0.40": value_goal(frozen_mfu, ">=", 0.40),
        f"frozen_{queries}_queries_per_s_at_least_1.5x_423": value_goal(frozen_qps, ">=", 1.5 * 423),
        "joint_mfu_at_least_0.35": value_goal(joint_mfu, ">=", 0.35),
        "meaningful": not tiny and queries == 64,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"torch": torch.__version__, "tiny": args.tiny, "rows": dict(ROWS), "steps": args.steps}
    if args.device == "cuda":
        report["device"] = torch.cuda.get_device_name(0)
    run_grid(args, report)
    report["goals"] = goals(report, max(args.queries), args.tiny)
    write_json_file(args.out, report)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
