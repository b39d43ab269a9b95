"""Peak memory, one answer for every benchmark: the high-water mark of a process's own resident memory.

`peak_rss_bytes()` reads VmHWM from /proc/self/status. `ru_maxrss` is not used where /proc exists: after exec it
carries the forking parent's peak (torchrun's, or the benchmark's own), so a small child would report its parent's
memory. Inside one process that runs many steps, `RssPeak` samples RSS around a block, since a high-water mark only
ever grows.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

PEAK_TAG = "PEAK_RSS_KIB"  # what `benchmarks.harness.peak` prints on stderr: PEAK_RSS_KIB <rank> <KiB>
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM); ru_maxrss only where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def peaks_from_stderr(stderr: str) -> dict[int, int]:
    """{rank: peak bytes} from the PEAK_TAG lines that `benchmarks.harness.peak` printed."""
    peaks = {}
    for line in stderr.splitlines():
        if line.startswith(PEAK_TAG):
            _tag, rank, kib = line.split()
            peaks[int(rank)] = int(kib) * 1024
    return peaks


def rss_bytes() -> int:
    """Resident set size of this process now (0 where /proc is missing)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class RssPeak:
    """Context manager: `.before` and `.peak` bytes of RSS around the block, sampled every `interval_s` by a thread
    (torch releases the GIL inside its kernels, so the thread gets to run)."""

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
    """Run `step` once under the sampler: {"peak_rss_gib", "step_increase_gib"} (the increase is activations,
    gradients and optimizer temporaries over the RSS just before the step)."""
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
