"""Where a step's time goes: its phases (forward + loss, backward, optimizer) and torch.profiler's top operators.

Used when the benchmark misses a goal. Both steps clock their own phases: a variant's are those of the real step
(`lead_dist.train.step.run_step`), the peer's those of its sentence-transformers step.
"""

from __future__ import annotations

from typing import Any


def phases(target: Any, repeats: int = 3) -> dict[str, float]:
    """Median seconds of each phase over `repeats` steps of a Variant (the phases `run_step` clocks, collation and
    bookkeeping left out) or a PeerStep (forward + MNRL, backward, clip + AdamW)."""
    runs = []
    for _ in range(repeats):
        target.step()
        seconds = target.last.seconds if hasattr(target, "last") else target.seconds
        runs.append({key: seconds[key] for key in ("forward_and_loss_s", "backward_s", "optimizer_s")})
    return {key: round(sorted(r[key] for r in runs)[len(runs) // 2], 4) for key in runs[0]}


def top_operators(step: Any, count: int = 12) -> list[dict[str, Any]]:
    """torch.profiler over one step: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_ms": round(e.self_cpu_time_total / 1000, 2),
            "self_share": round(e.self_cpu_time_total / total, 3),
        }
        for e in rows
    ]
