"""A rank that dies or stops responding: the others end with a clear error instead of hanging. And the faults the
tests inject (`TestHooks`).

Two layers: the process group's timeout (train.rank_timeout_s, set in `setup.build_accelerator`) turns a collective
that waits on a dead or stuck peer into an error, which `collective_failures_explained` words plainly; the
`Watchdog` ends a process that makes no progress for that long (a rank stuck outside any collective, or a
collective implementation that ignores the timeout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping

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


@dataclasses.dataclass(frozen=True)
class TestHooks:
    """Faults the tests inject into a training run, read once from the environment (`from_env`) at its start.

    LEAD_DIST_TEST_NAN_AT_STEPS="3,4": the loss of those optimizer steps (0-based) is NaN;
    LEAD_DIST_TEST_NAN_IN=teacher: ... through every output of that model instead (the terms it feeds go NaN);
    LEAD_DIST_TEST_NAN_RANK=R: ... on rank R only (every rank must still agree to skip, and to stop).
    LEAD_DIST_TEST_SLEEP_IN_SAVE=STEP:SECONDS: sleep inside the checkpoint write of that step, after every file is
        written and before the directory is committed (so a test can kill the run mid-write).
    LEAD_DIST_TEST_STEP_SLEEP=SECONDS: sleep after every step (so a test can kill a run between checkpoints).
    LEAD_DIST_TEST_HANG_RANK=R:STEP: rank R stops responding at that step (to test the others' timeout).
    LEAD_DIST_TEST_HOLD_WHILE=PATH: after every step, wait while PATH exists (a test holds the run mid-training for
        as long as it needs, however slow the machine, then lets it finish).
    None of them set (a user's run): every hook does nothing.
    """

    __test__ = False  # a class named Test*, not a pytest test class

    nan_at_steps: frozenset[int] = frozenset()
    sleep_in_save: tuple[int, float] | None = None  # (step, seconds)
    step_sleep_s: float = 0.0
    hang: tuple[int, int] | None = None  # (rank, step)
    hold_while: str | None = None  # a path
    nan_in: str | None = None  # a model's name; None: the total loss
    nan_rank: int | None = None  # None: every rank

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TestHooks:
        env = os.environ if environ is None else environ

        def pair(name: str, second: type) -> tuple | None:
            raw = env.get(name, "")
            if not raw:
                return None
            first, _, rest = raw.partition(":")
            try:
                return int(first), second(rest)
            except ValueError:
                raise ValueError(f"{name}={raw!r}: expected INT:{second.__name__.upper()}") from None

        steps = env.get("LEAD_DIST_TEST_NAN_AT_STEPS", "")
        return cls(
            nan_at_steps=frozenset(int(s) for s in steps.split(",") if s.strip()),
            nan_in=env.get("LEAD_DIST_TEST_NAN_IN") or None,
            nan_rank=int(env["LEAD_DIST_TEST_NAN_RANK"]) if env.get("LEAD_DIST_TEST_NAN_RANK") else None,
            sleep_in_save=pair("LEAD_DIST_TEST_SLEEP_IN_SAVE", float),
            step_sleep_s=float(env.get("LEAD_DIST_TEST_STEP_SLEEP", "0") or 0),
            hang=pair("LEAD_DIST_TEST_HANG_RANK", int),
            hold_while=env.get("LEAD_DIST_TEST_HOLD_WHILE") or None,
        )

    def poison(self, rank: int, step: int) -> bool | str:
        """`run_step`'s `poison` for this rank and step: False, True (the loss is NaN) or the model whose outputs are."""
        if step not in self.nan_at_steps or self.nan_rank not in (None, rank):
            return False
        return self.nan_in or True

    def hang_if_chosen(self, rank: int, step: int) -> None:
        if self.hang == (rank, step):
            while True:  # a stuck rank: the others must notice through their timeout
                time.sleep(3600)

    def pause_in_save(self, step: int) -> None:
        if self.sleep_in_save is not None and self.sleep_in_save[0] == step:
            time.sleep(self.sleep_in_save[1])

    def after_step(self) -> None:
        time.sleep(self.step_sleep_s)
        while self.hold_while is not None and os.path.exists(self.hold_while):
            time.sleep(0.2)
