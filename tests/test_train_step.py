"""The pieces of train/nonfinite.py and train/faults.py that need no model: the non-finite bookkeeping and the test
hooks read from the environment. The step itself runs in every loop test (test_train_loop*.py) and in the
benchmarks."""

from __future__ import annotations

import pytest

from lead_dist.train.checkpoint import TrainState
from lead_dist.train.faults import TestHooks
from lead_dist.train.nonfinite import NonFiniteLossError, record_nonfinite, refuse_nonfinite_end
from lead_dist.train.step import StepResult


def _result(nonfinite: int, skipped: bool, losses: dict[str, float] | None = None) -> StepResult:
    return StepResult(
        losses=losses or {"total": 1.0}, layer_weights=None, learning_rates={}, grad_norms={}, nonfinite_micro_batches=nonfinite,
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
    with pytest.raises(FloatingPointError, match=r"3 steps in a row \(steps 3-5; train.max_nonfinite_in_row=3\)"):
        record_nonfinite(state, _result(1, False), limit=3, log_event=log)
    assert (state.nonfinite_in_row, state.nonfinite_total) == (3, 5) and events[-1][0] == "nonfinite_loss"


NAN = float("nan")


def test_the_terms_that_went_nonfinite_first_are_named_and_a_run_ending_in_them_exports_nothing() -> None:
    """The streak keeps the terms of its first step (later steps may have more); a run ending inside a streak shorter
    than the limit is refused as well, and a good step clears both."""
    state, events = TrainState(), []
    log = lambda event, step, **fields: events.append((step, fields["terms"]))  # noqa: E731
    steps = [
        {"total": NAN, "student": 2.1, "response": NAN, "layers": 0.3},  # step 1: the response term went first
        {"total": NAN, "student": NAN, "response": NAN, "layers": NAN},  # step 2: everything
    ]
    for step, losses in enumerate(steps, start=1):
        state.step = step
        record_nonfinite(state, _result(1, True, losses), limit=5, log_event=log)
    assert events == [(1, ["response"]), (2, ["student", "response", "layers"])]
    with pytest.raises(NonFiniteLossError) as refused:
        refuse_nonfinite_end(state)
    message = str(refused.value)
    assert (
        "the last 2 steps of the run had a non-finite loss (steps 1-2); first non-finite at step 1: response; nothing exported"
        in message
    ), message
    assert isinstance(refused.value, FloatingPointError) and "\n" not in message

    state.step = 3  # only the weighted sum: every term finite
    record_nonfinite(state, _result(0, False), limit=5, log_event=log)
    refuse_nonfinite_end(state)  # a good last step: the run is a result
    state.step = 4
    with pytest.raises(NonFiniteLossError, match=r"at step 4: total \(every term finite, their weighted sum not\)"):
        record_nonfinite(state, _result(1, True, {"total": float("inf"), "student": 1.0}), limit=1, log_event=log)


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
    assert [hooks.poison(0, step) for step in range(4)] == [False, True, False, True]
    one_rank = TestHooks.from_env(
        {"LEAD_DIST_TEST_NAN_AT_STEPS": "2", "LEAD_DIST_TEST_NAN_IN": "teacher", "LEAD_DIST_TEST_NAN_RANK": "1"}
    )
    assert [one_rank.poison(rank, 2) for rank in (0, 1)] == [False, "teacher"] and one_rank.poison(1, 1) is False
    assert TestHooks.from_env({}) == TestHooks()  # a user's run: no hook does anything
    with pytest.raises(ValueError, match=r"LEAD_DIST_TEST_HANG_RANK='1': expected INT:INT"):
        TestHooks.from_env({"LEAD_DIST_TEST_HANG_RANK": "1"})
