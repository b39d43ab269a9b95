"""Multi-process parts of the throughput benchmark: real `lead-dist train` loops launched with torchrun (gloo).

* scaling: the same global batch on 1 process (2 threads, and 1 thread) and on 2 processes (1 thread each); rounds
  alternate the launches so a change of load hits them alike.
* large teacher: peak memory per rank of a 24-layer BERT-large-shaped teacher trained jointly with a 6-layer
  student on 2 processes under DDP, ZeRO-2 and ZeRO-3 (launch/deepspeed JSONs), config in benchmarks/throughput/configs.

Each run writes the loop's own log.jsonl (step times, examples and tokens per second, MFU against the peak the loop
measures) and one result file per rank (world size, peak RSS): `benchmarks.harness.launch.run_training`. The world size every
rank reports is checked against the number of processes launched: a launch that silently ran one process fails.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness.launch import ENGINES, run_training
from benchmarks.harness.machine import REPO_ROOT, log
from benchmarks.harness.timing import median_ratio

CONFIGS = Path(__file__).resolve().parent / "configs"


def _timed_steps(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step after the first (the first pays for lazy initialisation, thread pools and first allocations)."""
    return run["steps"][1:]


SCALING_LAUNCHES = {  # name: (processes, threads per process)
    "1_process_2_threads": (1, 2),
    "1_process_1_thread": (1, 1),
    "2_processes_1_thread": (2, 1),
}


def scaling(workdir: Path, shards: Path, rounds: int, global_batch: int = 16) -> dict[str, Any]:
    """1 process against 2 at the same global batch, alternating; examples/s over the global batch.

    1 process runs both with 2 threads (the machine's cores) and with 1: on a loaded machine OpenMP's second
    thread waits for a core that other processes hold, which can make 2 threads far slower than 1."""
    config = CONFIGS / "scaling_tiny.yaml"
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SCALING_LAUNCHES}
    for number in range(rounds):
        for name, (nproc, threads) in SCALING_LAUNCHES.items():
            overrides = [f"data.train={shards}", f"train.batch_size={global_batch // nproc}"]
            run = run_training(config, nproc, overrides, workdir, threads=threads)
            step_s = statistics.median(s["step_s"] for s in _timed_steps(run))
            runs[name].append(
                {
                    "step_s_median": round(step_s, 4),
                    "global_examples_per_s": round(global_batch / step_s, 1),
                    "mfu_rank0_median": round(statistics.median(s.get("mfu", 0.0) for s in _timed_steps(run)), 4),
                    "peak_rss_gib_per_rank": [r["peak_rss_gib"] for r in run["ranks"]],
                    "wall_s": run["wall_s"],
                    "load_average_before": run["load_average_before"],
                }
            )
            log(f"scaling round {number + 1}/{rounds} {name}: {global_batch / step_s:.1f} examples/s")
    summary: dict[str, Any] = {
        "config": str(config.relative_to(REPO_ROOT)),
        "global_batch": global_batch,
        "launches": {name: {"processes": p, "threads_per_process": t} for name, (p, t) in SCALING_LAUNCHES.items()},
        "runs": runs,
    }
    for name, items in runs.items():
        summary[f"{name}_examples_per_s_median"] = statistics.median(r["global_examples_per_s"] for r in items)
    for one in ("1_process_2_threads", "1_process_1_thread"):
        two, single = ([r["global_examples_per_s"] for r in runs[k]] for k in ("2_processes_1_thread", one))
        summary[f"two_processes_over_{one}_per_round"] = [round(b / a, 3) for a, b in zip(single, two, strict=True)]
        summary[f"two_processes_over_{one}"] = median_ratio(two, single)
    return summary


def large_teacher_memory(workdir: Path, shards: Path, engines: tuple[str, ...] = ("zero3", "zero2", "ddp")) -> dict:
    """Peak RSS per rank of the 24-layer teacher + 6-layer student on 2 processes under each engine."""
    config = CONFIGS / "large_teacher.yaml"
    results: dict[str, Any] = {"config": str(config.relative_to(REPO_ROOT)), "processes": 2, "by_engine": {}}
    for name in engines:
        run = run_training(config, 2, [f"data.train={shards}", *ENGINES[name]], workdir, threads=1)
        if "stopped" in run:
            results["by_engine"][name] = run
            log(f"large teacher {name}: stopped ({run['stopped']}); sampled peak RSS {run['sampled_peak_rss_gib']}")
            continue
        timed = _timed_steps(run)
        results["by_engine"][name] = {
            "peak_rss_gib_per_rank": [r["peak_rss_gib"] for r in run["ranks"]],
            # ru_maxrss covers the whole run, including model building and the final export (which gathers the
            # full weights under ZeRO-3); the loop's own log gives rank 0's peak up to the end of the last step.
            "rank0_peak_rss_gib_through_last_step": run["steps"][-1]["peak_memory_gib"] if run["steps"] else None,
            "sampled_peak_rss_gib_of_launched_processes": run["sampled_peak_rss_gib"],
            "engines": run["ranks"][0]["engines"],
            "step_s_median": round(statistics.median(s["step_s"] for s in timed), 2) if timed else None,
            "wall_s": run["wall_s"],
            "load_average_before": run["load_average_before"],
        }
        log(f"large teacher {name}: peak RSS per rank {results['by_engine'][name]['peak_rss_gib_per_rank']} GiB")
    finished = {k: v for k, v in results["by_engine"].items() if "peak_rss_gib_per_rank" in v}
    if "ddp" in finished:
        ddp = max(finished["ddp"]["peak_rss_gib_per_rank"])
        for item in finished.values():
            item["peak_over_ddp"] = round(max(item["peak_rss_gib_per_rank"]) / ddp, 3)
    return results
