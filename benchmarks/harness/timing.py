"""Timing: interleaved rounds on a shared CPU, rates with their CPU share, device-synchronised step loops, ratios.

Interleaving (every action once per round) makes a change of load hit every action alike, so each round's ratio to
the reference is fair; medians over rounds are the headline.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness.machine import load_average, log


def rate_summary(items: Sequence[int], seconds: Sequence[float]) -> dict[str, Any]:
    """Items per second of each repeat, and their median/min/max. The median is the headline: on a shared
    machine one repeat may lose the CPU to another process, which the spread then shows."""
    if len(items) != len(seconds) or not seconds:
        raise ValueError("rate_summary: expected one item count per timing, and at least one timing")
    rates = [n / s for n, s in zip(items, seconds, strict=True)]
    return {
        "items": list(items),
        "seconds": [round(s, 4) for s in seconds],
        "per_second": [significant(r) for r in rates],
        "median_per_second": significant(statistics.median(rates)),
        "min_per_second": significant(min(rates)),
        "max_per_second": significant(max(rates)),
    }


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: rates of 2 items/s and of 20,000 keep the same relative precision
    (one decimal place made a ratio of two rates near 1-2/s move in steps of 5-10%)."""
    return float(f"{value:.{digits}g}")


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has reaped (e.g. DataLoader workers, once joined)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed_with_cpu(action: Callable[[], int]) -> tuple[int, float, float]:
    """(items the action reports, wall seconds, CPU share = CPU seconds / wall seconds). On a shared machine a
    single-threaded step with a CPU share well below 1 was waiting for a core, not working."""
    cpu, start = cpu_seconds(), time.perf_counter()
    items = action()
    wall = time.perf_counter() - start
    return items, wall, (cpu_seconds() - cpu) / wall


def run_summary(runs: Sequence[tuple[int, float, float]], load: list[float] | None) -> dict[str, Any]:
    """rate_summary of `timed_with_cpu` results, plus CPU shares and items per CPU second."""
    summary = rate_summary([n for n, _s, _c in runs], [s for _n, s, _c in runs])
    summary["cpu_share"] = [round(c, 2) for _n, _s, c in runs]
    # Items per CPU second: what the work costs, whatever share of a core the shared machine granted.
    per_cpu = [n / (s * c) for n, s, c in runs if c > 0]
    summary["per_cpu_second"] = [significant(r) for r in per_cpu]
    summary["median_per_cpu_second"] = significant(statistics.median(per_cpu)) if per_cpu else None
    summary["load_average_before"] = load
    return summary


def interleaved_rounds(
    actions: dict[str, Callable[[], int]], rounds: int, unit: str = "items"
) -> dict[str, dict[str, Any]]:
    """Every action once per round, in their order, for `rounds` rounds; each returns how many items it handled.
    The first action is the reference. Interleaving makes a change of load on a shared machine hit every action
    alike, so each round's ratio to the reference is fair; the median over rounds is the headline."""
    if rounds < 1 or not actions:
        raise ValueError(f"interleaved_rounds: expected rounds >= 1 and some actions, got {rounds}, {list(actions)}")
    runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in actions}
    loads: dict[str, list] = {name: [] for name in actions}
    for number in range(rounds):
        for name, action in actions.items():
            loads[name].append(load_average())
            runs[name].append(timed_with_cpu(action))
            items, seconds, share = runs[name][-1]
            log(f"round {number + 1}/{rounds} {name}: {items / seconds:,.0f} {unit}/s (cpu share {share:.2f})")
    results = {name: run_summary(runs[name], loads[name][0]) for name in actions}
    reference = results[next(iter(actions))]
    for name, result in results.items():
        result["load_average_per_round"] = loads[name]
        per_round = [rate / ref for rate, ref in zip(result["per_second"], reference["per_second"], strict=True)]
        result["ratio_to_reference_per_round"] = [round(r, 3) for r in per_round]
        result["ratio_to_reference_median_of_rounds"] = round(statistics.median(per_round), 3)
        if result["median_per_cpu_second"] and reference["median_per_cpu_second"]:
            cpu_ratio = result["median_per_cpu_second"] / reference["median_per_cpu_second"]
            result["ratio_to_reference_per_cpu_second"] = round(cpu_ratio, 3)
    return results


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median over rounds of each round's ratio, to 3 decimals: the one way every benchmark states a ratio of
    two cells timed in the same rounds (a ratio of medians would pair a fast round of one with a slow one of the
    other)."""
    return round(statistics.median(n / d for n, d in zip(numerators, denominators, strict=True)), 3)


def sync(device: Any) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: a clock read without this times the launch)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[], Any], warm_up: int, steps: int, device: Any) -> tuple[float, list[float]]:
    """(seconds of the `warm_up` calls: kernel selection, allocator, optimizer state, compilation; seconds of each
    of the `steps` timed calls), each synchronised with the device."""
    start = time.perf_counter()
    for _ in range(warm_up):
        step()
    sync(device)
    warm_up_s = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return warm_up_s, seconds


def paired_ratio(timed: dict[str, dict[str, Any]], over: str, under: str) -> dict[str, float | None]:
    """How much faster cell `under` is than cell `over` in the same `interleaved_rounds`: "wall", the median over
    rounds of the step-time ratio, and "cpu", of the ratio of items per CPU second (less disturbed by other jobs'
    share of the cores; None where a round recorded no CPU time)."""
    wall = median_ratio(timed[over]["seconds"], timed[under]["seconds"])
    over_cpu, under_cpu = timed[over]["per_cpu_second"], timed[under]["per_cpu_second"]
    complete = len(over_cpu) == len(under_cpu) == len(timed[over]["seconds"])
    return {"wall": wall, "cpu": median_ratio(under_cpu, over_cpu) if complete else None}


def counted(action: Callable[[], Any], items: int) -> Callable[[], int]:
    """`action` as an `interleaved_rounds` contender that handles `items` items per call."""

    def run() -> int:
        action()
        return items

    return run
