"""Where a step's time goes: its phases (forward + loss, backward, optimizer) and torch.profiler's top operators.

Used when the benchmark misses a goal. A variant's phases are those `lead_dist.train.step.run_step` clocks in the
real step (its collation and bookkeeping phases are left out); the peer's phases are its forward + MNRL, backward
and clip + AdamW.
"""

from __future__ import annotations

import time
from typing import Any

import torch


def _variant_phases(variant: Any) -> dict[str, float]:
    variant.step()
    seconds = variant.last.seconds  # run_step's own clock between its phases
    return {key: seconds[key] for key in ("forward_and_loss_s", "backward_s", "optimizer_s")}


def _peer_phases(peer: Any) -> dict[str, float]:
    autocast = torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=peer.dtype == "bf16")
    t0 = time.perf_counter()
    with autocast:
        value = peer.loss([dict(c) for c in peer.columns], None)
    t1 = time.perf_counter()
    value.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(peer.model.parameters(), 2.0)
    peer.optimizer.step()
    peer.optimizer.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {"forward_and_loss_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2}


def phases(target: Any, repeats: int = 3) -> dict[str, float]:
    """Median seconds of each phase over `repeats` steps of a Variant or a PeerStep."""
    measure = _peer_phases if hasattr(target, "columns") else _variant_phases
    runs = [measure(target) for _ in range(repeats)]
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
