"""The paired randomization test (`lead_dist.retrieval.significance`) on cases whose answer is known by hand."""

from __future__ import annotations

import pytest

from lead_dist.retrieval.significance import mean_over_seeds, paired_randomization_test


def test_identical_systems_give_p_one_exact_and_monte_carlo() -> None:
    small = {f"q{i}": 0.1 * i for i in range(5)}
    large = {f"q{i}": (i % 7) / 7 for i in range(300)}
    exact = paired_randomization_test(small, dict(small))
    sampled = paired_randomization_test(large, dict(large), samples=2000)
    assert (exact["method"], exact["p_value"], exact["mean_difference"]) == ("exact", 1.0, 0.0)
    assert (sampled["method"], sampled["p_value"]) == ("monte_carlo", 1.0)


def test_three_queries_enumerated_by_hand() -> None:
    # d = (1, 2, 3): the 8 sign patterns give sums +-6, +-4, +-2, 0, 0; |sum| >= 6 for 2 of them: p = 2/8.
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    b = {"x": 0.0, "y": 0.0, "z": 0.0}
    result = paired_randomization_test(a, b)
    assert result["p_value"] == 0.25 and result["patterns"] == 8 and result["mean_difference"] == 2.0
    # d = (3, -1, -1): sums 1, 3, 3, 5, -5, -3, -3, -1; |sum| >= 1 for all 8: p = 1 (a mixed result)
    assert paired_randomization_test({"x": 3.0, "y": -1.0, "z": -1.0}, b)["p_value"] == 1.0
    # d = (0.5, 0.25, 0.5): sums +-1.25, +-0.75, +-0.25, +-0.25; |sum| >= 1.25 for 2 of 8; the sign of A - B
    # does not matter to a two-sided test
    c = {"x": 0.5, "y": 0.25, "z": 0.5}
    assert paired_randomization_test(c, b)["p_value"] == paired_randomization_test(b, c)["p_value"] == 0.25


def test_ties_reached_through_other_summation_orders_count() -> None:
    # d = (0.1, 0.2, -0.3): the binary values sum to 2.8e-17, but left to right in floats 0.1 + 0.2 - 0.3 is
    # 5.6e-17, and the mirror pattern (-0.1 - 0.2 + 0.3) may be summed in another order and come out 2.8e-17. The
    # two are the same |sum| in exact arithmetic, and every other pattern's |sum| is at least 0.2: p = 8/8 = 1.
    b = {"x": 0.0, "y": 0.0, "z": 0.0}
    assert paired_randomization_test({"x": 0.1, "y": 0.2, "z": -0.3}, b)["p_value"] == 1.0
    # d = (0.1, 0.2, 0.3): only the two all-same-sign patterns reach |0.6|; the near-zero ones must not count
    assert paired_randomization_test({"x": 0.1, "y": 0.2, "z": 0.3}, b)["p_value"] == 0.25


def test_a_consistent_shift_reaches_the_floor() -> None:
    n = 300
    a = {f"q{i}": 0.5 + 0.01 * (i % 5) for i in range(n)}
    b = {q: v - 0.05 for q, v in a.items()}
    result = paired_randomization_test(a, b, samples=5000, seed=1)
    # Every d is +0.05: only the all-plus and all-minus patterns (probability 2 / 2^300) reach it, so no sampled
    # pattern does and p is Monte Carlo's floor 1 / (1 + samples).
    assert result["p_value"] == result["p_floor"] == 1 / 5001
    assert result["mean_difference"] == pytest.approx(0.05, abs=1e-12)  # 300 roundings of values near 0.5
    exact = paired_randomization_test({f"q{i}": 1.0 for i in range(10)}, {f"q{i}": 0.0 for i in range(10)})
    assert exact["p_value"] == exact["p_floor"] == 2 / 1024


def test_monte_carlo_is_reproducible_and_near_the_exact_value() -> None:
    a = {f"q{i}": float(i % 3) for i in range(16)}
    b = {f"q{i}": float((i + 1) % 3) for i in range(16)}
    exact = paired_randomization_test(a, b)
    sampled = paired_randomization_test(a, b, max_exact=0, samples=20_000, seed=7)
    assert sampled == paired_randomization_test(a, b, max_exact=0, samples=20_000, seed=7)
    # binomial standard error of a proportion near 0.5 from 20,000 draws is 0.0035: 5 of them is 0.018
    assert sampled["p_value"] == pytest.approx(exact["p_value"], abs=0.018)


def test_mean_over_seeds_and_mismatched_queries() -> None:
    seeds = [{"a": 0.2, "b": 1.0}, {"a": 0.4, "b": 0.0}, {"a": 0.6, "b": 0.5}]
    assert mean_over_seeds(seeds) == pytest.approx({"a": 0.4, "b": 0.5}, abs=1e-15)  # three-term fsum, one division
    with pytest.raises(ValueError, match=r"seed #2 has other queries"):
        mean_over_seeds([{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(ValueError, match="different queries"):
        paired_randomization_test({"a": 1.0}, {"b": 1.0})
