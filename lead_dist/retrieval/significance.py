"""Is system A better than system B on the same queries? A paired randomization (sign-flip) test.

The statistic is the mean over queries of d_q = a_q - b_q, where a_q and b_q are a metric of query q (e.g. nDCG@10)
for each system, each already averaged over the system's seeds (`mean_over_seeds`), so seed noise is averaged out
before the queries are compared. Under the null hypothesis that A and B are exchangeable, each d_q is as likely to
have either sign; the two-sided p-value is the share of the 2^n sign patterns s whose |mean(s * d)| reaches the
observed |mean(d)|. Up to `max_exact` queries every pattern is enumerated (an exact p); beyond, `samples` patterns
are drawn at random and p = (1 + hits) / (1 + samples), which never reports 0 (Monte Carlo's floor). A query whose
systems agree (d_q = 0) contributes nothing either way, as in the exact test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_SAMPLES = 100_000
DEFAULT_MAX_EXACT = 16  # 2^16 = 65,536 patterns: cheaper than the default Monte Carlo draw


def mean_over_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-query mean over seeds; every seed must hold the same queries (else ValueError naming the difference)."""
    if not per_seed:
        raise ValueError("mean_over_seeds: no seeds given")
    queries = set(per_seed[0])
    for number, values in enumerate(per_seed[1:], start=2):
        if set(values) != queries:
            extra, missing = sorted(set(values) - queries)[:3], sorted(queries - set(values))[:3]
            raise ValueError(f"mean_over_seeds: seed #{number} has other queries than seed #1 "
                             f"(extra {extra}, missing {missing})")  # fmt: skip
    return {q: math.fsum(values[q] for values in per_seed) / len(per_seed) for q in sorted(queries)}


def _differences(a: Mapping[str, float], b: Mapping[str, float]) -> np.ndarray:
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b))[:3], sorted(set(b) - set(a))[:3]
        raise ValueError(f"paired test: the systems were scored on different queries (only A: {only_a}, "
                         f"only B: {only_b})")  # fmt: skip
    if not a:
        raise ValueError("paired test: no queries")
    return np.array([a[q] - b[q] for q in sorted(a)], dtype=np.float64)


def _reaches(sums: np.ndarray, observed: float, diffs: np.ndarray) -> int:
    """How many |sums| reach |observed|. Sums of the same terms in other orders can differ by rounding: allow n
    units of rounding of the largest possible sum (float64 epsilon x n x sum |d|), no more."""
    slack = np.finfo(np.float64).eps * len(diffs) * float(np.abs(diffs).sum())
    return int(np.count_nonzero(np.abs(sums) >= abs(observed) - slack))


def paired_randomization_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    samples: int = DEFAULT_SAMPLES,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
) -> dict[str, Any]:
    """Two-sided paired sign-flip test of A against B over their (identical) query sets.

    Returns {"queries", "mean_a", "mean_b", "mean_difference" (A - B), "p_value", "method" ("exact" |
    "monte_carlo"), "patterns" (how many sign patterns were counted), "p_floor" (the smallest p the method can
    give)}. Same inputs and seed, same p.
    """
    if samples < 1:
        raise ValueError(f"paired test: samples must be >= 1, got {samples}")
    diffs = _differences(a, b)
    n = len(diffs)
    observed = float(diffs.sum())
    if n <= max_exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        hits, patterns = _reaches(signs @ diffs, observed, diffs), 2**n
        p_value, method, floor = hits / patterns, "exact", 2 / patterns
    else:
        rng = np.random.Generator(np.random.PCG64(seed))
        hits, left = 0, samples
        while left:
            chunk = min(left, 4096)
            signs = rng.integers(0, 2, size=(chunk, n), dtype=np.int8).astype(np.float64) * 2.0 - 1.0
            hits += _reaches(signs @ diffs, observed, diffs)
            left -= chunk
        patterns = samples
        p_value, method, floor = (1 + hits) / (1 + samples), "monte_carlo", 1 / (1 + samples)
    keys = sorted(a)
    return {
        "queries": n,
        "mean_a": math.fsum(a[q] for q in keys) / n,
        "mean_b": math.fsum(b[q] for q in keys) / n,
        "mean_difference": observed / n,
        "p_value": p_value,
        "method": method,
        "patterns": patterns,
        "p_floor": floor,
    }
