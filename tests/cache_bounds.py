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

Losses (LEAD_SPEC 4, 6 with a frozen teacher: lead_dist/lead/loss.py). With every teacher score moved by at most e,
the teacher distribution P = softmax(t / T) moves as P' = P exp(d), |d| <= 2e / T (log-softmax is 2-Lipschitz in the
max norm). For one query's KL(P || Q) against the student's Q:
  KL(P'||Q) - KL(P||Q) = sum (P' - P)(log P - log Q) + sum P' (log P' - log P)
  |.| <= (exp(2e/T) - 1) M + 2e/T,   M = max |log P - log Q| over the candidates (computed from the live values);
batchmean averages such rows, so the same bound holds for the mean. The layer gap g_k (a mean of -log P^k[label])
moves by at most 2e/T, so each weight w_k = softmax(-g / tau)_k by a factor within exp(+-4e/(T tau)), and
  |sum_k w'_k KL'_k - sum_k w_k KL_k| <= (exp(4e/(T tau)) - 1) sum_k w_k (KL_k + dk) + sum_k w_k dk.
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


def kl_bound(target: torch.Tensor, learner: torch.Tensor, e: float, temperature: float) -> float:
    """Bound on |KL(softmax(t'/T) || softmax(s)) - KL(softmax(t/T) || softmax(s))| for |t' - t| <= e ([Q, C])."""
    log_p = torch.log_softmax(target.double() / temperature, dim=-1)
    log_q = torch.log_softmax(learner.double(), dim=-1)
    spread = float((log_p - log_q).abs().max())
    return math.expm1(2 * e / temperature) * spread + 2 * e / temperature


def lead_term_bounds(
    terms: dict[str, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    student: tuple[torch.Tensor, torch.Tensor],
    e: float,
    lead_cfg,
) -> dict[str, float]:
    """Bounds on each logged term of a frozen-teacher LEAD loss when every teacher score moves by at most `e`, and on
    each layer weight ("layer_weights/k"). `terms`: the live loss's terms; teacher / student: (final [Q, C], layers
    [K, Q, C]) live scores."""
    temperature, tau = lead_cfg.temperature, lead_cfg.layer_temperature
    forward = kl_bound(teacher[0], student[0], e, temperature)
    per_layer = [kl_bound(teacher[1][k], student[1][k], e, temperature) for k in range(teacher[1].shape[0])]
    weights, kls = terms["layer_weights"].double(), terms["layer_kl"].double()
    grow = math.expm1(4 * e / (temperature * tau)) if lead_cfg.reweight else 0.0
    dk = torch.tensor(per_layer, dtype=torch.float64)
    layers = float(grow * (weights * (kls + dk)).sum() + (weights * dk).sum()) if per_layer else 0.0
    coef = lead_cfg.coef
    bounds = {"student": 0.0, "response_forward": forward, "response": forward, "layers": layers}
    bounds |= {f"layer_kl/{k}": bound for k, bound in enumerate(per_layer)}
    bounds["total"] = coef.response * forward + coef.layers * layers
    bounds |= {f"layer_weights/{k}": grow * float(w) for k, w in enumerate(weights)}
    return bounds
