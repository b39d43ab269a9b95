"""Peak resident memory of one step on a CPU, where torch keeps no allocator statistics.

`ru_maxrss` only ever grows over a process's life, so it cannot tell one variant's step from another's in a process
that runs many. A sampler thread reads this process's RSS from /proc every millisecond while the step runs (torch
releases the GIL inside its kernels, so the thread gets to run); the step's peak is the highest sample, and its
increase is that peak over the RSS just before the step (activations, gradients and optimizer temporaries).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def rss_bytes() -> int:
    """Resident set size of this process now (0 where /proc is missing)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class RssPeak:
    """Context manager: `.before` and `.peak` bytes of RSS around the block, sampled every `interval_s`."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.before = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssPeak:
        self.before = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure_step_memory(step: Callable[[], Any]) -> dict[str, float]:
    """Run `step` once under the sampler: {"peak_rss_gib", "step_increase_gib"}."""
    with RssPeak() as sampler:
        step()
    return {
        "peak_rss_gib": round(sampler.peak / 2**30, 3),
        "step_increase_gib": round((sampler.peak - sampler.before) / 2**30, 3),
    }


def state_gib(trainees: dict[str, Any]) -> float:
    """Model state the step keeps between steps, counted: fp32 weights of every model, plus gradient and the two
    AdamW moments (3 more fp32 copies) of every trained one."""
    total = 0
    for trainee in trainees.values():
        params = sum(p.numel() for p in trainee.model.parameters())
        total += params * 4 * (4 if trainee.trained else 1)
    return round(total / 2**30, 3)
