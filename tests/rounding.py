"""Bounds on float rounding for tests that compare two computations of one value (no tests here).

Two float computations of the same value agree bit for bit only when the same kernels add the same terms in the same
order: the same shapes, the same instruction set (ATEN_CPU_CAPABILITY) and the same BLAS code path. Chunked against
whole, padded against unpadded, batched against one at a time, or one CPU against another, the sums are reordered,
and a test has to allow for it. The bounds used here (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd
ed., section 3.1 and 4.2; u = eps / 2 is the unit roundoff):

- A sum of n terms, added in any order (blocked, pairwise, with FMA), is off from the exact sum by at most
  (n - 1) u sum|terms|; a dot product of length n by at most n u sum|a_i b_i|. Two orders, each within that of the
  exact value, differ by at most twice as much: n * eps * sum|terms| (`reorder_bound`).
- max, masking, copying and adding exact zeros (padding) round nothing; |max(x + d) - max(x)| <= max|d|.
- A whole encoder run in two shapes (other padding, other batches) rounds in every matmul on the way. The worst case
  compounds n u per inner product and lies 10 to 100 times above anything seen, so those comparisons keep
  tolerances of the size of the probabilistic bound, lambda sqrt(n) u per inner product of length n (Higham and
  Mary, SIAM J. Sci. Comput. 41(5), 2019), summed along the layers: for the 2-layer, 32-wide test BERTs about 72 u =
  4e-6 relative, times lambda = 3, so 1e-5 to 2e-5 on O(1) values; for all-MiniLM-L6-v2 about 720 u, times 3, 1.3e-4
  relative, 1e-5 on its unit vectors' entries of about 0.05. These are estimates, not guarantees: on four kernel
  paths (issue 15) vectors stayed 40x and losses computed from them 6x below their tolerances.
- Exactness stays where it is guaranteed: byte-identical files, a resume from a checkpoint, the same computation in
  the same shapes in one process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23 = 1.19e-7


def reorder_bound(n_terms: int, abs_sum: torch.Tensor | float, eps: float = EPS32) -> torch.Tensor | float:
    """Largest difference between two orders of a float sum of `n_terms` terms whose absolute values sum to
    `abs_sum`: n * eps * sum|terms|."""
    return n_terms * eps * abs_sum


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str = "") -> None:
    """|actual - expected| <= bound, element by element (bound broadcasts); names the worst element."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    difference = (actual.double() - expected.double()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64).expand_as(difference)
    excess = difference - bound
    if excess.numel() and excess.max() > 0:
        worst = int(excess.argmax())
        raise AssertionError(
            f"{what}: {int((excess > 0).sum())} of {excess.numel()} elements beyond the rounding bound; worst at flat "
            f"index {worst}: |{actual.flatten()[worst].item()} - {expected.flatten()[worst].item()}| = "
            f"{difference.flatten()[worst].item():.3e} > {bound.flatten()[worst].item():.3e}"
        )


def late_interaction_bound(
    q_tokens: torch.Tensor, q_mask: torch.Tensor, p_tokens: torch.Tensor, p_mask: torch.Tensor
) -> torch.Tensor:
    """[Q, C] bound on the difference of two orders of the ColBERT score s(q, c) = sum_i w_i max_j <q_i, p_j>
    (w_i the query mask, j over unpadded passage tokens), in the tokens' dtype.

    Each similarity is a dot product of D terms: off by <= D eps/2 A_ij, A_ij = sum_d |q_id p_jd|; the max passes that
    on (<= max_j of it); the sum over Tq query tokens adds Tq eps/2 sum_i w_i |best_i|. Two orders: twice that.
    """
    eps = torch.finfo(q_tokens.dtype).eps
    q, p = q_tokens.double(), p_tokens.double()
    dim, q_len = q.shape[-1], q.shape[-2]
    passage_ok = p_mask.bool()[None, :, None, :]  # [1, C, 1, Tp]
    absolute = torch.einsum("qid,cjd->qcij", q.abs(), p.abs()).masked_fill(~passage_ok, 0.0)
    similarity = torch.einsum("qid,cjd->qcij", q, p).masked_fill(~passage_ok, -math.inf)
    weights = q_mask.double()[:, None, :]  # [Q, 1, Tq]
    dots = (weights * absolute.amax(dim=-1)).sum(dim=-1)
    best = (weights * similarity.amax(dim=-1).abs()).sum(dim=-1)
    return reorder_bound(dim, dots, eps) + reorder_bound(q_len, best, eps)


def colbert_score_bound(q: Any, p: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(final [Q, C], layers [K, Q, C]) bounds for `ColBERT.score(q, p)` of two token Reps (final, layers, mask)."""
    final = late_interaction_bound(q.final, q.mask, p.final, p.mask)
    layers = [late_interaction_bound(q.layers[k], q.mask, p.layers[k], p.mask) for k in range(q.layers.shape[0])]
    return final, torch.stack(layers) if layers else final.new_zeros((0, *final.shape))


def assert_same_ranking(
    expected_ids: Sequence, got_ids: Sequence, expected_scores: Sequence[float], tie: float, what: str = ""
) -> None:
    """The same documents at the same ranks, except that documents whose scores lie within `tie` of each other (where
    two correct float computations may order them either way) may trade places among themselves.

    Runs of neighbours closer than `tie` in `expected_scores` (best first) form one block; each block must hold the
    same documents in both rankings. With no such neighbours this is exact equality of the two orders.
    """
    assert len(expected_ids) == len(got_ids) == len(expected_scores), (what, len(expected_ids), len(got_ids))
    start = 0
    for end in range(1, len(expected_ids) + 1):
        if end == len(expected_ids) or abs(expected_scores[end - 1] - expected_scores[end]) > tie:
            block = slice(start, end)
            assert sorted(expected_ids[block]) == sorted(got_ids[block]), (
                f"{what}: ranks {start}..{end - 1} hold {list(got_ids[block])}, expected {list(expected_ids[block])} "
                f"(scores {list(expected_scores[block])}, ties within {tie:.2e})"
            )
            start = end


# --- AdamW ----------------------------------------------------------------------------------------------------------


def adam_step_bound(steps: int, betas: tuple[float, float] = (0.9, 0.999)) -> float:
    """Largest |m_hat / sqrt(v_hat)| Adam can reach within `steps` steps, whatever the gradients (Cauchy-Schwarz over
    the bias-corrected averages; 1 at the first step, 1.004 by the third): one entry moves by at most this times the
    learning rate per step."""
    beta1, beta2 = betas
    worst = 0.0
    for t in range(1, steps + 1):
        first = [(1 - beta1) * beta1 ** (t - k) / (1 - beta1**t) for k in range(1, t + 1)]
        second = [(1 - beta2) * beta2 ** (t - k) / (1 - beta2**t) for k in range(1, t + 1)]
        worst = max(worst, math.sqrt(sum(a * a / w for a, w in zip(first, second, strict=True))))
    return worst


R_GRADIENT = 100  # an entry's gradient counts as well above its rounding when its rounding error is below 1 / R


def noisy_share(summed_terms: int) -> float:
    """Share of a gradient's entries whose rounding error may exceed 1 / R of their value, for a gradient summed from n
    terms without much cancellation: its entries carry about n eps32 of a typical entry, and about 0.8 R n eps32 of
    them (a Gaussian's density at zero times the width) lie within R such errors of zero."""
    return 0.8 * R_GRADIENT * summed_terms * EPS32


def assert_adam_runs_agree(
    got: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    learning_rates: Sequence[float],
    noisy: float,
    what: str = "",
) -> None:
    """Weights after the same AdamW steps taken from gradients that differ only by float32 rounding.

    AdamW's step is lr * m_hat / (sqrt(v_hat) + eps), eps = 1e-8: it does not depend on the gradient's scale, so a
    small gradient's rounding is amplified. Where the two runs' gradients differ by a relative r, m_hat and sqrt(v_hat)
    each differ by at most r, so the steps differ by at most 2 r kappa lr (kappa = `adam_step_bound`). For an entry
    whose rounding error stays below 1 / R of its gradient (R = `R_GRADIENT`), that is 2 / R kappa lr per step:
    summed over the steps, the `bulk` bound below. Any other entry can take any step in [-kappa lr, kappa lr] in
    either run, so its weights may differ by up to `cap` = 2 kappa sum(lr); a share `noisy` of each tensor's entries
    may be such entries (at least one is always allowed). A broken computation moves most entries of a tensor by far
    more than `bulk`, which this still catches; the gradients themselves are compared through the losses and
    gradient norms of the same runs.
    """
    kappa = adam_step_bound(len(learning_rates))
    total = sum(learning_rates)
    cap = 2 * kappa * total
    bulk = 2 / R_GRADIENT * kappa * total
    assert got.keys() == expected.keys(), what
    for name, tensor in expected.items():
        difference = (got[name].double() - tensor.double()).abs()
        label = f"{what} {name}"
        assert difference.max() <= cap, f"{label}: {difference.max().item():.3e} beyond what any Adam step allows"
        outliers = int((difference > bulk).sum())
        allowed = max(1, math.ceil(noisy * tensor.numel()))
        assert outliers <= allowed, (
            f"{label}: {outliers} of {tensor.numel()} entries differ by more than {bulk:.2e} "
            f"(rounding allows {allowed}; largest difference {difference.max().item():.3e})"
        )
