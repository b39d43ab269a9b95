"""Multi-process parts of the throughput benchmark: real `lead-dist train` loops launched with torchrun (gloo).

* scaling: the same global batch on 1 process (2 threads, and 1 thread) and on 2 processes (1 thread each); rounds
  alternate the launches so a change of load hits them alike.
* large teacher: peak memory per rank of a 24-layer BERT-large-shaped teacher trained jointly with a 6-layer
  student on 2 processes under DDP, ZeRO-2 and ZeRO-3 (launch/deepspeed JSONs), config in benchmarks/throughput/configs.

Each run writes the loop's own log.jsonl (step times, examples and tokens per second, MFU against the peak the loop
measures) and one result file per rank from `worker.py` (world size, peak RSS). The world size every
rank reports is checked against the number of processes launched: a launch that silently ran one process fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, load_average, log

CONFIGS = Path(__file__).resolve().parent / "configs"
WORKER = "benchmarks.throughput.worker"  # run as a module from the repository root
CORES = 2  # the build machine's cores: 1 process x 2 threads against 2 processes x 1 thread


def prepare_demo_shards(folder: Path) -> Path:
    """The packaged demo dataset as training shards (4 shards: an equal share for 1 or 2 ranks)."""
    out = folder / "shards"
    command = [sys.executable, "-m", "lead_dist.cli", "prepare", "--format", "demo"]
    command += ["--input", str(folder / "demo_src"), "--out", str(out), "--shards", "4"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def _watch(proc: subprocess.Popen, timeout_s: float, guard_gib: float) -> tuple[str | None, dict[int, float]]:
    """Poll a launched run until it ends: the peak RSS of each process under it, and why it was stopped, if it was.

    The machine is shared: when available memory falls under `guard_gib` the run's process group is ended (our
    own processes only) before the kernel's OOM killer picks a victim, which might be someone else's process."""
    import psutil

    peaks: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    stopped = None
    while proc.poll() is None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    peaks[child.pid] = max(peaks.get(child.pid, 0.0), child.memory_info().rss / 2**30)
        except psutil.Error:
            pass
        if _available_gib() < guard_gib:
            stopped = f"available memory fell under {guard_gib} GiB"
        elif time.monotonic() > deadline:
            stopped = f"ran past {timeout_s:.0f} s"
        if stopped:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            break
        time.sleep(0.5)
    return stopped, peaks


def run_training(
    config: Path,
    nproc: int,
    overrides: list[str],
    workdir: Path,
    *,
    threads: int,
    timeout_s: float = 900,
    guard_gib: float = 1.5,
) -> dict[str, Any]:
    """One `lead-dist train` run under torchrun; returns per-step records, per-rank results and wall time.

    A run stopped by the memory guard or the timeout returns {"stopped": reason, "sampled_peak_rss_gib": ..}."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    prefix = run_dir / "result"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    command += ["--master_port", str(_free_port()), "-m", WORKER, str(config), str(prefix)]
    command += [f"output_dir={run_dir / 'out'}", *overrides]
    load, start = load_average(), time.perf_counter()
    with open(run_dir / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)  # fmt: skip
        stopped, peaks = _watch(proc, timeout_s, guard_gib)
    wall = time.perf_counter() - start
    sampled = sorted((round(v, 3) for v in peaks.values()), reverse=True)
    if stopped:
        shutil.rmtree(run_dir, ignore_errors=True)
        return {"stopped": stopped, "sampled_peak_rss_gib": sampled, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({proc.returncode}):\n{(run_dir / 'stderr.txt').read_text()[-4000:]}"
        )
    ranks = [json.loads((run_dir / f"result.rank{r}.json").read_text()) for r in range(nproc)]
    for rank in ranks:
        if rank["world_size"] != nproc:
            raise RuntimeError(
                f"launched {nproc} processes but rank {rank['rank']} ran in a world of {rank['world_size']}"
            )
    records = [json.loads(line) for line in (run_dir / "out" / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "step_s" in r]
    shutil.rmtree(run_dir, ignore_errors=True)  # exported models of a 24-layer teacher are over a GiB
    return {
        "ranks": ranks,
        "steps": steps,
        "wall_s": round(wall, 1),
        "load_average_before": load,
        "sampled_peak_rss_gib": sampled,
    }


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
        ratios = [
            b["global_examples_per_s"] / a["global_examples_per_s"]
            for a, b in zip(runs[one], runs["2_processes_1_thread"], strict=True)
        ]
        summary[f"two_processes_over_{one}_per_round"] = [round(r, 3) for r in ratios]
        summary[f"two_processes_over_{one}"] = round(statistics.median(ratios), 3)
    return summary


ENGINES = {
    "ddp": [],
    "zero2": ["student.deepspeed=launch/deepspeed/zero2.json", "teacher.deepspeed=launch/deepspeed/zero2.json"],
    "zero3": ["student.deepspeed=launch/deepspeed/zero3.json", "teacher.deepspeed=launch/deepspeed/zero3.json"],
}


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
