"""The faiss GPU check's top-k comparison (benchmarks/gpu/faiss_gpu.py), by hand: identical sets pass, a difference
passes only where the exact scores at ranks k and k + 1 are within the rounding bound of each other."""

from __future__ import annotations

import numpy as np

from benchmarks.gpu.faiss_gpu import top_k_agreement


def test_top_k_differences_pass_only_at_a_near_tie() -> None:
    exact_ids = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    exact_scores = np.array([[0.9, 0.8, 0.5], [0.9, 0.7000001, 0.7], [0.9, 0.8, 0.1]])  # k = 2: ranks 2 and 3
    got = np.array([[2, 1], [4, 6], [7, 9]])  # same set; a swap at a tie (gap 1e-7); a swap without a tie (0.7)
    bounds = np.full(3, 1e-6)
    report = top_k_agreement(got, exact_ids, exact_scores, bounds)
    assert report == {
        "queries": 3, "identical": 1, "near_tie_differences": 1, "unexplained_differences": 1, "ok": False,
    }  # fmt: skip
    assert top_k_agreement(got[:2], exact_ids[:2], exact_scores[:2], bounds[:2])["ok"]
    assert not top_k_agreement(got[:2], exact_ids[:2], exact_scores[:2], np.full(2, 1e-8))["ok"]  # gap > bound
