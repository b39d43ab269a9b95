"""How far a cached teacher's values may lie from the live teacher's (no tests here; used by test_teacher_cache*).

Two sources of difference, per stored value x (a pooled vector entry, a cross-encoder score):
- storage: round to nearest in fp16 / bf16 moves x by at most u |x| (u = 2^-11 fp16, 2^-8 bf16: unit roundoff), plus
  half the smallest subnormal step (2^-25 fp16) for values that small; bf16 has float32's range, so u |x| alone.
- the build ran the teacher on other batches (other padding) than the training step: an encoder run in two shapes, an
  estimate of R32 = 1e-4 relative for the 3-layer 48-wide test teachers (tests/rounding.py: about 72 u32 x lambda 3
  for a 2-layer 32-wide BERT, scaled by depth and sqrt(width), rounded up), times the vector's largest entry.

Scores. DE s = scale <q, p>: with |q~_i - q_i| <= a_i and |p~_i - p_i| <= b_i,
  |s~ - s| <= scale (sum_i a_i |p_i| + |q_i| b_i + a_i b_i) + the float32 dot rounding of both (2 D u32 sum|q_i p_i|).
CE: the score itself is the stored value.

Losses (LEAD_SPEC 4, 6 with a frozen teacher: lead_dist/lead/loss.py). Let every teacher score t_j of a query move
by at most e_j (the score bound above), E = max e. The teacher distribution P = softmax(t / T) then moves as
P' = P exp(d) with |d| <= 2E / T (log-softmax is 2-Lipschitz in the max norm). For one query's KL(P || Q) against the
student's Q, the crude bound is
  |KL(P'||Q) - KL(P||Q)| <= (exp(2E/T) - 1) M + 2E/T =: c,   M = max_j |log P_j - log Q_j|,
and the mean value theorem along t -> t' gives the one used (dKL/dt_j = P_j (log P_j/Q_j - KL) / T; anywhere on
the way P_j is within exp(2E/T) of its live value and |log P_j/Q_j - KL| within 2E/T + c of it):
  |KL' - KL| <= exp(2E/T) / T  sum_j P_j e_j (|log P_j/Q_j - KL| + 2E/T + c).
batchmean averages the queries' bounds. A layer gap g_k = mean over queries of -log P^k[label] has
d(-log P[label])/dt_j = (P_j - [j = label]) / T, so |g'_k - g_k| <= mean (exp(2E/T) sum_j P_j e_j + e_label) / T =: G_k;
each weight w_k = softmax(-g / tau)_k then moves by a factor within exp(+-2 G / tau), G = max_k G_k, and
  |sum_k w'_k KL'_k - sum_k w_k KL_k| <= (exp(2G/tau) - 1) sum_k w_k (KL_k + dk) + sum_k w_k dk.
The student's own cross entropy does not involve the teacher: equal (the same computation in the same shapes).
"""

from __future__ import annotations

import math

import torch

U = {"fp16": 2.0**-11, "bf16": 2.0**-8}
SUBNORMAL = {"fp16": 2.0**-25, "bf16": 0.0}
R32 = 1e-4  # encoder run in two shapes, relative to the vector's largest entry (an estimate; see the docstring)
EPS32 = torch.finfo(torch.float32).eps


def value_bound(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Per entry: how far the cached value of live value `x` may lie (storage rounding + the build's other shapes).
    The last dim is one vector (a DE embedding), or size 1 for scalars."""
    largest = x.abs().amax(dim=-1, keepdim=True)
    return U[dtype] * x.abs() + SUBNORMAL[dtype] + R32 * largest


def de_score_bound(q: torch.Tensor, p: torch.Tensor, scale: float, dtype: str) -> torch.Tensor:
    """[Q, C] bound on |s~ - s| for s = scale q @ p.T, q [Q, D], p [C, D] the live vectors."""
    a, b = value_bound(q, dtype).double(), value_bound(p, dtype).double()
    qa, pa = q.abs().double(), p.abs().double()
    rounding = a @ pa.T + qa @ b.T + a @ b.T
    dot32 = 2 * q.shape[-1] * EPS32 * (qa @ pa.T)
    return scale * (rounding + dot32)


def cb_score_bound(q, p, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(final [Q, C], layers [K, Q, C]) bounds on |s~ - s| for ColBERT scores s = sum_i w_i max_j <q_i, p_j> of the
    live token Reps q, p: each similarity moves by at most eta_ij = sum_d a_id |p_jd| + |q_id| b_jd + a_id b_jd (a, b
    the value bounds), a max by at most the largest eta over the passage's tokens, the sum by the weighted sum of
    those; plus the float32 rounding of both computations (tests/rounding.py)."""
    from rounding import colbert_score_bound

    def one(qt: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
        a, b = value_bound(qt, dtype).double(), value_bound(pt, dtype).double()
        qa, pa = qt.abs().double(), pt.abs().double()
        eta = (torch.einsum("qid,cjd->qcij", a, pa) + torch.einsum("qid,cjd->qcij", qa, b)
               + torch.einsum("qid,cjd->qcij", a, b))  # fmt: skip
        eta = eta.masked_fill(~p.mask.bool()[None, :, None, :], 0.0).amax(dim=-1)
        return (q.mask.double()[:, None, :] * eta).sum(dim=-1)

    rounding = colbert_score_bound(q, p)
    final = one(q.final, p.final) + rounding[0]
    layers = torch.stack([one(q.layers[k], p.layers[k]) for k in range(q.layers.shape[0])]) + rounding[1]
    return final, layers


def kl_bound(target: torch.Tensor, learner: torch.Tensor, e: torch.Tensor, temperature: float) -> float:
    """Bound on |KL(softmax(t'/T) || softmax(s)) - KL(softmax(t/T) || softmax(s))| (batchmean) for |t' - t| <= e,
    all [Q, C] (see the module docstring)."""
    e = e.double().expand_as(target)
    log_p = torch.log_softmax(target.double() / temperature, dim=-1)
    log_q = torch.log_softmax(learner.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1, keepdim=True)
    moved = 2 * float(e.max()) / temperature
    crude = math.expm1(moved) * (log_p - log_q).abs().amax(dim=-1, keepdim=True) + moved
    slope = log_p.exp() * e * ((log_p - log_q - kl).abs() + moved + crude)
    return float(math.exp(moved) / temperature * slope.sum(dim=-1).mean())


def gap_bound(target: torch.Tensor, labels: torch.Tensor, e: torch.Tensor, temperature: float) -> float:
    """Bound on |g' - g| for the layer gap g = mean -log softmax(t / T)[label] when |t' - t| <= e ([Q, C])."""
    e = e.double().expand_as(target)
    p = torch.softmax(target.double() / temperature, dim=-1)
    grow = math.exp(2 * float(e.max()) / temperature)
    own = e.gather(-1, labels.view(-1, 1)).squeeze(-1)
    return float(((grow * (p * e).sum(dim=-1) + own) / temperature).mean())


def lead_term_bounds(
    terms: dict[str, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    student: tuple[torch.Tensor, torch.Tensor],
    e: tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    lead_cfg,
) -> dict[str, float]:
    """Bounds on each logged term of a frozen-teacher LEAD loss, and on each layer weight ("layer_weights/k"), when
    the teacher's scores move by at most `e` (final [Q, C], layers [K, Q, C], broadcastable). `terms`: the live
    loss's terms; teacher / student: (final [Q, C], layers [K, Q, C]) live scores; labels [Q]."""
    temperature, tau = lead_cfg.temperature, lead_cfg.layer_temperature
    depth = teacher[1].shape[0]
    forward = kl_bound(teacher[0], student[0], e[0], temperature)
    layer_e = e[1].expand_as(teacher[1]) if depth else e[1]
    per_layer = [kl_bound(teacher[1][k], student[1][k], layer_e[k], temperature) for k in range(depth)]
    gaps = [gap_bound(teacher[1][k], labels, layer_e[k], temperature) for k in range(depth)]
    weights, kls = terms["layer_weights"].double(), terms["layer_kl"].double()
    grow = math.expm1(2 * max(gaps) / tau) if lead_cfg.reweight and gaps else 0.0
    dk = torch.tensor(per_layer, dtype=torch.float64)
    layers = float(grow * (weights * (kls + dk)).sum() + (weights * dk).sum()) if per_layer else 0.0
    coef = lead_cfg.coef
    bounds = {"student": 0.0, "response_forward": forward, "response": forward, "layers": layers}
    bounds |= {f"layer_kl/{k}": bound for k, bound in enumerate(per_layer)}
    bounds["total"] = coef.response * forward + coef.layers * layers
    bounds |= {f"layer_weights/{k}": grow * float(w) for k, w in enumerate(weights)}
    return bounds
