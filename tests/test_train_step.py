"""The pieces of train/step.py and train/faults.py that need no model: the non-finite bookkeeping and the test hooks
read from the environment. The step itself runs in every loop test (test_train_loop*.py) and in the benchmarks."""

from __future__ import annotations

import pytest

from lead_dist.train.checkpoint import TrainState
from lead_dist.train.faults import TestHooks
from lead_dist.train.step import StepResult, record_nonfinite


def _result(nonfinite: int, skipped: bool) -> StepResult:
    return StepResult(
        losses={"total": 1.0}, layer_weights=None, learning_rates={}, grad_norms={}, nonfinite_micro_batches=nonfinite,
        skipped=skipped, flops=0, tokens=0, seconds={},
    )  # fmt: skip


def test_nonfinite_steps_are_counted_logged_and_stop_the_run_at_the_limit() -> None:
    state, events = TrainState(), []

    def log(event: str, step: int, **fields: object) -> None:
        events.append((event, step, fields))

    # steps 1..4: bad (1 of 1 micro-batch, skipped), good, bad (2 of 2 micro-batches), bad (1 of 2): limit 3
    for step, (bad, skipped) in enumerate([(1, True), (0, False), (2, False)], start=1):
        state.step = step
        record_nonfinite(state, _result(bad, skipped), limit=3, log_event=log)
    assert (state.nonfinite_in_row, state.nonfinite_total) == (1, 3)  # the good step reset the run of bad ones
    assert [(e[1], e[2]["in_row"], e[2]["total"], e[2]["skipped"]) for e in events] == [
        (1, 1, 1, True),
        (3, 1, 3, False),
    ]
    state.step = 4
    record_nonfinite(state, _result(1, False), limit=3, log_event=log)
    state.step = 5
    with pytest.raises(FloatingPointError, match=r"3 steps in a row \(step 5; train.max_nonfinite_in_row=3\)"):
        record_nonfinite(state, _result(1, False), limit=3, log_event=log)
    assert (state.nonfinite_in_row, state.nonfinite_total) == (3, 5) and events[-1][0] == "nonfinite_loss"


def test_test_hooks_are_read_once_from_the_environment() -> None:
    hooks = TestHooks.from_env(
        {
            "LEAD_DIST_TEST_NAN_AT_STEPS": "1, 3",
            "LEAD_DIST_TEST_SLEEP_IN_SAVE": "6:0.5",
            "LEAD_DIST_TEST_STEP_SLEEP": "0.25",
            "LEAD_DIST_TEST_HANG_RANK": "1:2",
        }
    )
    assert hooks == TestHooks(frozenset({1, 3}), (6, 0.5), 0.25, (1, 2))
    assert [hooks.poisons(step) for step in range(4)] == [False, True, False, True]
    assert TestHooks.from_env({}) == TestHooks()  # a user's run: no hook does anything
    with pytest.raises(ValueError, match=r"LEAD_DIST_TEST_HANG_RANK='1': expected INT:INT"):
        TestHooks.from_env({"LEAD_DIST_TEST_HANG_RANK": "1"})
