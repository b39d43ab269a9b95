"""Layer selection (LEAD_SPEC section 5): determinism across ranks, resampling windows, hand-checked strategies."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lead_dist.lead import LayerSchedule, select_layers


def _assert_sorted_distinct(layers: tuple[int, ...], depth: int) -> None:
    assert list(layers) == sorted(set(layers))
    assert all(0 <= layer < depth for layer in layers)


def test_random_same_seed_and_step_draw_the_same_layers() -> None:
    # Two independent calls stand in for two ranks: nothing is shared between them but (seed, step).
    for step in (0, 7, 123, 10_000):
        assert select_layers("random", 6, 12, 5, seed=888, step=step) == select_layers(
            "random", 6, 12, 5, seed=888, step=step
        )


def test_random_fixed_inside_a_window_and_redrawn_across_windows() -> None:
    draws = [select_layers("random", 6, 12, 3, seed=888, step=step, resample_every=10) for step in range(200)]
    for window in range(20):
        inside = draws[window * 10 : window * 10 + 10]
        assert all(draw == inside[0] for draw in inside), f"draw changed inside window {window}"
    per_window = [draws[window * 10] for window in range(20)]
    # 20 windows of C(6,3) * C(12,3) = 4400 possible draws: all-equal would mean no resampling at all.
    assert len(set(per_window)) > 10
    # resample_every=1 redraws at every step.
    every_step = {select_layers("random", 6, 12, 3, seed=888, step=s, resample_every=1) for s in range(20)}
    assert len(every_step) > 10


def test_random_draws_are_sorted_distinct_and_paired_lengths() -> None:
    for seed in range(30):
        student, teacher = select_layers("random", 6, 24, 5, seed=seed, step=seed * 13)
        assert len(student) == len(teacher) == 5
        _assert_sorted_distinct(student, 6)
        _assert_sorted_distinct(teacher, 24)


def test_random_is_uniform_over_layers() -> None:
    # Each of 12 teacher layers is in a K=4 draw with probability 4/12; 3000 windows give a std of about
    # sqrt(3000 * 1/3 * 2/3) = 26 around 1000, so a band of +-130 (5 std) fails only for a biased draw.
    counts = np.zeros(12)
    for window in range(3000):
        _, teacher = select_layers("random", 4, 12, 4, seed=5, step=window, resample_every=1)
        counts[list(teacher)] += 1
    assert np.all(np.abs(counts - 1000) < 130), counts


def test_random_depends_on_seed_and_leaves_global_rngs_alone() -> None:
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    python_state = random.getstate()
    seed_a = [select_layers("random", 6, 12, 3, seed=1, step=10 * w) for w in range(10)]
    seed_b = [select_layers("random", 6, 12, 3, seed=2, step=10 * w) for w in range(10)]
    assert seed_a != seed_b
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state
    # And the global RNGs do not influence the draw either.
    torch.manual_seed(123)
    np.random.seed(123)
    assert [select_layers("random", 6, 12, 3, seed=1, step=10 * w) for w in range(10)] == seed_a


def test_last_hand_checked() -> None:
    assert select_layers("last", 6, 12, 3, seed=0, step=0) == ((3, 4, 5), (9, 10, 11))
    assert select_layers("last", 4, 4, 4, seed=0, step=99) == ((0, 1, 2, 3), (0, 1, 2, 3))


def test_skip_hand_checked() -> None:
    # Layer i of K is floor((i+1) * depth / K) - 1.
    # depth 6, K 3: 2-1, 4-1, 6-1 = 1, 3, 5.  depth 12, K 3: 4-1, 8-1, 12-1 = 3, 7, 11.
    assert select_layers("skip", 6, 12, 3, seed=0, step=0) == ((1, 3, 5), (3, 7, 11))
    # depth 24, K 5: floor(4.8, 9.6, 14.4, 19.2, 24) - 1 = 3, 8, 13, 18, 23; depth 6, K 5: floor(1.2, 2.4, 3.6,
    # 4.8, 6) - 1 = 0, 1, 2, 3, 5.
    assert select_layers("skip", 6, 24, 5, seed=0, step=0) == ((0, 1, 2, 3, 5), (3, 8, 13, 18, 23))
    # K = depth takes every layer.
    assert select_layers("skip", 5, 5, 5, seed=0, step=0) == ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4))


def test_fixed_is_sorted_and_paired_by_rank() -> None:
    assert select_layers("fixed", 6, 12, 2, seed=0, step=0, fixed=[(2, 7), (0, 3)]) == ((0, 2), (3, 7))
    assert select_layers("fixed", 6, 12, 1, seed=0, step=0, fixed=[[5, 11]]) == ((5,), (11,))


def test_k_zero_gives_empty_tuples_for_every_strategy() -> None:
    for strategy in ("random", "last", "skip"):
        assert select_layers(strategy, 6, 12, 0, seed=3, step=4) == ((), ())
    assert select_layers("fixed", 6, 12, 0, seed=3, step=4, fixed=[]) == ((), ())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "random", "k": 7}, "'k' = 7 exceeds the student's depth"),
        ({"strategy": "last", "k": 7, "student_depth": 12, "teacher_depth": 6}, "exceeds the teacher's depth"),
        ({"strategy": "skip", "k": -1}, "'k' must be >= 0"),
        ({"strategy": "bogus"}, "'strategy' must be one of"),
        ({"strategy": "random", "resample_every": 0}, "'resample_every' must be >= 1"),
        ({"strategy": "random", "step": -1}, "'step' must be >= 0"),
        ({"strategy": "random", "k": 2.0}, "'k' must be an integer"),
        ({"strategy": "fixed"}, "needs option 'fixed'"),
        ({"strategy": "last", "fixed": [(0, 0)]}, "only used with strategy 'fixed'"),
        ({"strategy": "fixed", "k": 2, "fixed": [(0, 5), (1, 2)]}, "teacher layers must be distinct and increase"),
        ({"strategy": "fixed", "k": 2, "fixed": [(1, 5), (1, 6)]}, "student layers must be distinct"),
        ({"strategy": "fixed", "k": 1, "fixed": [(6, 0)]}, "student layer 6 >= student depth 6"),
        ({"strategy": "fixed", "k": 1, "fixed": [(0, 12)]}, "teacher layer 12 >= teacher depth 12"),
        ({"strategy": "fixed", "k": 1, "fixed": [(0, 1, 2)]}, "must be a (student, teacher) pair"),
        ({"strategy": "fixed", "k": 3, "fixed": [(0, 1)]}, "'k' = 3 but 'fixed' lists 1 pairs"),
    ],
)
def test_bad_options_raise_naming_the_option(kwargs: dict, message: str) -> None:
    options = {"student_depth": 6, "teacher_depth": 12, "k": 1, "seed": 0, "step": 0} | kwargs
    strategy = options.pop("strategy")
    with pytest.raises(ValueError) as excinfo:
        select_layers(strategy, **options)
    assert message in str(excinfo.value)


def test_layer_schedule_matches_select_layers_and_validates_early() -> None:
    schedule = LayerSchedule("random", student_depth=6, teacher_depth=12, k=5, seed=888, resample_every=10)
    for step in (0, 9, 10, 55, 1000):
        assert schedule.at(step) == select_layers("random", 6, 12, 5, seed=888, step=step, resample_every=10)
    with pytest.raises(ValueError, match="exceeds the student's depth"):
        LayerSchedule("last", student_depth=2, teacher_depth=12, k=3, seed=0)
