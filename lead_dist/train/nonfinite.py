"""What if the losses go non-finite? A run of non-finite losses is a failure, never a result.

`run_step` already keeps one bad step harmless: every rank agrees the loss is not finite (one all-reduce), the
backward gets zero gradients and, without accumulation, the optimizer and the schedule do not step. Here the loop
keeps count across steps (the counters live in TrainState, so a resume keeps them):

- `record_nonfinite` logs each bad step (event `nonfinite_loss`, with the terms that were non-finite) and stops the
  run after `train.max_nonfinite_in_row` bad steps in a row (default 5), naming the step the streak began at and the
  loss terms (lead_dist/lead/loss.py's `terms`, averaged over ranks) that were non-finite there;
- `refuse_nonfinite_end` refuses to export from a run that ends inside such a streak (shorter than the limit),
  whose weights are those of its last finite step but whose losses say nothing good about them.

Both raise `NonFiniteLossError`: one line, exit code 1 (a failed run, not bad input). Every rank raises at the same
step, since the counters follow the agreed finiteness; checkpoints already written stay, so a `--resume` with other
settings (a lower learning rate) can continue. A bad step followed by good ones is logged and counted
(`nonfinite_total` in the summary), and the run goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lead_dist.errors import RunFailed
from lead_dist.train.checkpoint import TrainState

if TYPE_CHECKING:
    from lead_dist.train.step import StepResult


class NonFiniteLossError(RunFailed, FloatingPointError):
    """The run's losses went non-finite and stayed so: it stops, and no model is exported (exit code 1)."""


def nonfinite_terms(losses: dict[str, float]) -> list[str]:
    """The loss terms (mean over ranks) that are not finite, in the objective's order; ["total"] when every term is
    finite and only their weighted sum is not."""
    bad = [name for name, value in losses.items() if name != "total" and not math.isfinite(value)]
    return bad or (["total"] if not math.isfinite(losses.get("total", 0.0)) else [])


FIX = "lower the learning rates, enable gradient clipping or check the data (and teacher.cache)"


def _where(state: TrainState, limit: int | None = None) -> str:
    """The current run of non-finite steps in words: `(steps 2-4[; the key]); first non-finite at step 2: <terms>`.
    Every rank says the same: the terms are averaged over ranks, and a non-finite term on any rank makes its mean so."""
    first = state.step - state.nonfinite_in_row + 1
    steps = f"step {first}" if state.nonfinite_in_row == 1 else f"steps {first}-{state.step}"
    key = f"; train.max_nonfinite_in_row={limit}" if limit is not None else ""
    finite = " (every term finite, their weighted sum not)" if state.nonfinite_terms == ["total"] else ""
    return f"({steps}{key}); first non-finite at step {first}: {', '.join(state.nonfinite_terms)}{finite}"


def record_nonfinite(state: TrainState, result: StepResult, limit: int, log_event: Callable[..., Any]) -> None:
    """Count the step's non-finite micro-batches into `state` (after `state.step` was advanced), log them with the
    terms that went non-finite, and stop the run with NonFiniteLossError once `limit` steps in a row had one."""
    if not result.nonfinite_micro_batches:
        state.nonfinite_in_row = 0
        state.nonfinite_terms = []
        return
    state.nonfinite_in_row += 1
    state.nonfinite_total += result.nonfinite_micro_batches
    terms = nonfinite_terms(result.losses)
    if state.nonfinite_in_row == 1:
        state.nonfinite_terms = terms
    log_event(
        "nonfinite_loss", state.step, skipped=result.skipped, micro_batches=result.nonfinite_micro_batches,
        in_row=state.nonfinite_in_row, total=state.nonfinite_total, terms=terms,
    )  # fmt: skip
    if state.nonfinite_in_row >= limit:
        raise NonFiniteLossError(
            f"non-finite loss in {state.nonfinite_in_row} steps in a row {_where(state, limit)}; stopped, nothing "
            f"exported: {FIX}"
        )


def refuse_nonfinite_end(state: TrainState) -> None:
    """A run whose last steps were non-finite is not a result: NonFiniteLossError before anything is exported (its
    checkpoints stay, so `--resume` with other settings can continue)."""
    if state.nonfinite_in_row:
        last = "the last step" if state.nonfinite_in_row == 1 else f"the last {state.nonfinite_in_row} steps"
        raise NonFiniteLossError(f"{last} of the run had a non-finite loss {_where(state)}; nothing exported: {FIX}")
