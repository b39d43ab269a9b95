"""A 24-layer teacher (BERT-large shape) frozen under the ZeRO-3 teacher-inference config beside a 6-layer student,
against the same teacher held plainly, on one GPU: peak GPU memory and step time.

    python -m benchmarks.gpu.large_teacher --out OUT/gpu_large_teacher.json     # on the GPU machine (stage large)
    python -m benchmarks.gpu.large_teacher --dry-run --out /tmp/large.json      # here: CPU, tiny teacher, fp32

Each run is a real `lead-dist train` loop under torchrun (benchmarks.harness.launch.run_training) of
benchmarks/throughput/configs/large_teacher.yaml with the teacher frozen (`teacher.trained=false`) and bf16:
the student trains under ZeRO-2 in both; `plain` holds the teacher as a module on the GPU, `zero3` makes it a DeepSpeed ZeRO-3 inference engine
(launch/deepspeed/zero3_inference.json: weights partitioned, gathered block by block in the forward). On one GPU
ZeRO-3 has nobody to share with, so what it can save is the teacher's resident weights between its forwards; what
it costs is the gathers. The loop logs peak memory (CUDA max_memory_allocated) and step time per step; the first
step (allocation, DeepSpeed's set-up) is left out of the step time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness.fixtures import gpu_tokenizer
from benchmarks.harness.machine import REPO_ROOT, usable_cores
from benchmarks.harness.results import write_json_file

CONFIG = REPO_ROOT / "benchmarks" / "throughput" / "configs" / "large_teacher.yaml"
ZERO3_INFERENCE = "teacher.deepspeed=launch/deepspeed/zero3_inference.json"
# The student trains under ZeRO-2 in both runs (a teacher under DeepSpeed needs every trained model under it), so
# the two runs differ in how the teacher is held, nothing else.
STUDENT_ZERO2 = "student.deepspeed=launch/deepspeed/zero2.json"
TINY_TEACHER = "{hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 128}"
TINY_STUDENT = "{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}"


def overrides(args: argparse.Namespace, shards: Path) -> list[str]:
    given = [f"data.train={shards}", "teacher.trained=false", "train.max_steps=5", STUDENT_ZERO2]
    given += [f"student.tokenizer={args.tokenizer}", f"teacher.tokenizer={args.tokenizer}"]
    if args.dry_run:
        given += [f"teacher.config={TINY_TEACHER}", f"student.config={TINY_STUDENT}", "train.mixed_precision=no"]
        given += ["lead.k=2"]
    else:
        given += ["train.mixed_precision=bf16", "train.batch_size=32", "data.passage_max_length=144"]
    return given


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    if "stopped" in run:
        return run
    steps = run["steps"]
    timed = [s["step_s"] for s in steps[1:]] or [s["step_s"] for s in steps]
    return {
        "engines": run["ranks"][0]["engines"],
        "peak_memory_gib": max(s.get("peak_memory_gib") or 0.0 for s in steps),
        "step_s_median": statistics.median(timed),
        "step_s": [s["step_s"] for s in steps],
        "losses": [s["loss"]["total"] for s in steps],
        "wall_s": run["wall_s"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, fp32")
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args(argv)
    args.tokenizer = gpu_tokenizer(args.tokenizer)
    report = compare_plain_and_zero3(CONFIG, lambda shards: overrides(args, shards), args)
    return 0 if report["ok"] else 1


def compare_plain_and_zero3(
    config: Path, overrides_for: Callable[[Path], list[str]], args: argparse.Namespace
) -> dict[str, Any]:
    """The run of `config` with the frozen teacher held plainly, then as a ZeRO-3 inference engine (the overrides
    `overrides_for(shards)` given to both), summarised with the ratios zero3 / plain; written to `args.out`."""
    from benchmarks.harness.launch import prepare_demo_shards, run_training

    report: dict[str, Any] = {"config": str(config.relative_to(REPO_ROOT)), "tiny": args.dry_run, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="large-teacher-") as tmp:
        shards = prepare_demo_shards(Path(tmp))
        for name, extra in (("plain", []), ("zero3", [ZERO3_INFERENCE])):
            try:
                run = run_training(config, 1, overrides_for(shards) + extra, Path(tmp), threads=usable_cores(),
                                   timeout_s=900 if args.dry_run else 420)  # fmt: skip
            except RuntimeError as exc:
                run = {"stopped": f"failed: {str(exc)[-2000:]}"}
            report["runs"][name] = summarise(run)
            print(f"{Path(args.out).stem} {name}: {report['runs'][name]}", flush=True)
            write_json_file(args.out, report)
    plain, zero3 = report["runs"]["plain"], report["runs"]["zero3"]
    if "stopped" not in plain and "stopped" not in zero3:
        report["zero3_over_plain"] = {
            "peak_memory": zero3["peak_memory_gib"] / plain["peak_memory_gib"] if plain["peak_memory_gib"] else None,
            "step_time": zero3["step_s_median"] / plain["step_s_median"],
        }
        pairs = zip(plain["losses"], zero3["losses"], strict=False)
        report["worst_relative_loss_difference"] = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
        report["ok"] = zero3["engines"].get("teacher") == "deepspeed-zero3"
    else:
        report["ok"] = False
    write_json_file(args.out, report)
    return report


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
