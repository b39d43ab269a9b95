"""A rank that dies or stops responding: the others end with a clear error instead of hanging.

Two layers: the process group's timeout (train.rank_timeout_s, set in `engines.build_accelerator`) turns a collective
that waits on a dead or stuck peer into an error, which `collective_failures_explained` words plainly; the
`Watchdog` ends a process that makes no progress for that long (a rank stuck outside any collective, or a
collective implementation that ignores the timeout).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import torch.distributed as dist


@contextlib.contextmanager
def collective_failures_explained(rank: int, world: int, timeout_s: float) -> Iterator[None]:
    """A collective that timed out or lost its peer means another rank died or hung: say so plainly."""
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as exc:
        text = str(exc).lower()
        peer_lost = any(
            s in text for s in ("timed out", "timeout", "connection closed", "connection reset", "broken pipe")
        )
        if world == 1 or not peer_lost:
            raise
        raise RuntimeError(
            f"rank {rank} of {world}: a collective failed because another rank died or stopped responding "
            f"(train.rank_timeout_s={timeout_s:g}); see that rank's log for the cause. Underlying error: {exc}"
        ) from exc


class Watchdog:
    """Ends this process with a clear message when no step finishes within `timeout_s`.

    The process-group timeout already turns a collective that waits on a dead rank into an error; the watchdog
    covers the rest (a rank stuck outside a collective, a collective implementation that ignores the timeout), so
    no rank hangs forever. `paused()` wraps work that may legitimately take longer (checkpoints, evaluation).
    """

    def __init__(self, timeout_s: float, rank: int) -> None:
        self.timeout_s = timeout_s
        self.rank = rank
        self._last = time.monotonic()
        self._paused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lead-dist-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def beat(self) -> None:
        self._last = time.monotonic()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            self.beat()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        interval = max(0.5, min(5.0, self.timeout_s / 10))
        while not self._stop.wait(interval):
            idle = time.monotonic() - self._last
            if self._paused == 0 and idle > self.timeout_s:
                print(
                    f"lead-dist train: rank {self.rank} made no progress for {idle:.0f} s (train.rank_timeout_s="
                    f"{self.timeout_s:g}); another rank has probably died or hung. Exiting.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(3)
