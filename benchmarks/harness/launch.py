"""Launchers that measure peak memory: a verb in a fresh process, a verb under torchrun, a training run.

Every child reports its own peak (`memory.peak_rss_bytes`, through `benchmarks.harness.peak` or
`benchmarks.harness.worker`); a torchrun launch checks that every rank it started answered, and a training run that
each rank saw the world size launched (a launch that silently ran one process fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.machine import REPO_ROOT, load_average
from benchmarks.harness.memory import peaks_from_stderr

PEAK = [sys.executable, "-m", "benchmarks.harness.peak"]  # + a lead-dist verb and its arguments
WORKER = "benchmarks.harness.worker"
ENGINES = {  # train overrides per engine of a training run
    "ddp": [],
    "zero2": ["student.deepspeed=launch/deepspeed/zero2.json", "teacher.deepspeed=launch/deepspeed/zero2.json"],
    "zero3": ["student.deepspeed=launch/deepspeed/zero3.json", "teacher.deepspeed=launch/deepspeed/zero3.json"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_with_peak_rss(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in bytes) of `PEAK + [verb, ...]` run in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    _pid, status, usage = os.wait4(process.pid, 0)  # this child's CPU time
    seconds = time.perf_counter() - start
    stdout, stderr = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({status}): {stderr.strip()[-2000:]}")
    if stdout.strip():
        print(stdout.strip(), file=sys.stderr)
    return seconds, usage.ru_utime + usage.ru_stime, peaks_from_stderr(stderr)[0]


def torchrun_peaks(arguments: list[str], world: int, env: dict[str, str]) -> tuple[list[int], float]:
    """`benchmarks.harness.peak` + `arguments` under torchrun with `world` ranks: (peak bytes per rank, wall s)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world)]
    command += ["--master_port", str(free_port()), "-m", "benchmarks.harness.peak", *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=REPO_ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[:3000]}")
    peaks = peaks_from_stderr(done.stderr)
    if sorted(peaks) != list(range(world)):
        raise RuntimeError(f"expected a peak from each of {world} ranks, got {peaks}: {done.stderr[-2000:]}")
    return [peaks[r] for r in range(world)], seconds


def prepare_demo_shards(folder: Path) -> Path:
    """The packaged demo dataset as training shards (4 shards: an equal share for 1 or 2 ranks)."""
    out = folder / "shards"
    command = [sys.executable, "-m", "lead_dist.cli", "prepare", "--format", "demo"]
    command += ["--input", str(folder / "demo_src"), "--out", str(out), "--shards", "4"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return out


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
    """One `lead-dist train` run under torchrun; returns per-step records (the loop's log.jsonl), per-rank results
    (world size, peak RSS, engines) and wall time.

    A run stopped by the memory guard or the timeout returns {"stopped": reason, "sampled_peak_rss_gib": ..}."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    prefix = run_dir / "result"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    command += ["--master_port", str(free_port()), "-m", WORKER, str(config), str(prefix)]
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
