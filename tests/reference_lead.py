"""An independent float64 implementation of LEAD_SPEC sections 4-7, for checking lead_dist.lead.loss.

Written from the spec with plain loops over layers, queries and candidates and explicit exp/log on scalar tensors,
so autograd still gives gradients but nothing is shared with the vectorised code under test. Temperature choices
follow the decisions documented in lead_dist/lead/loss.py: a KL's target side is softmax(s / T), its learner side
is softmax(s); ground-truth CE uses raw scores; the layer gap uses the UNTEMPERED teacher layer distribution (SimXNS LEAD/util.py: nll_loss of
the layer's log_softmax(scores); only the KL target is divided by T).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _log_softmax_row(row: list[Tensor], temperature: float) -> list[Tensor]:
    scaled = [value / temperature for value in row]
    # Subtracting a constant shift leaves value and gradient unchanged; it only keeps exp() finite.
    shift = max(float(value.detach()) for value in scaled)
    total = sum(torch.exp(value - shift) for value in scaled)
    log_norm = shift + torch.log(total)
    return [value - log_norm for value in scaled]


def _rows(scores: Tensor) -> list[list[Tensor]]:
    return [[scores[q, c] for c in range(scores.shape[1])] for q in range(scores.shape[0])]


def reference_kl(target: Tensor, learner: Tensor, temperature: float) -> Tensor:
    """(1/Q) sum_q sum_c p_qc (log p_qc - log q_qc), p = softmax(target / T), q = softmax(learner)."""
    per_query = []
    for target_row, learner_row in zip(_rows(target), _rows(learner), strict=True):
        log_p = _log_softmax_row(target_row, temperature)
        log_q = _log_softmax_row(learner_row, 1.0)
        per_query.append(sum(torch.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q, strict=True)))
    return sum(per_query) / len(per_query)


def reference_ce(scores: Tensor, labels: list[int], temperature: float = 1.0) -> Tensor:
    """(1/Q) sum_q -log softmax(scores_q / T)[label_q]."""
    losses = [-_log_softmax_row(row, temperature)[label] for row, label in zip(_rows(scores), labels, strict=True)]
    return sum(losses) / len(losses)


def reference_lead(
    student_final: Tensor,
    teacher_final: Tensor,
    student_layers: Tensor,
    teacher_layers: Tensor,
    labels: Tensor,
    *,
    teacher_trained: bool,
    temperature: float,
    layer_temperature: float,
    reweight: bool,
    layer_coef: float,
    student_coef: float,
    teacher_coef: float,
    response_coef: float,
    detach_targets: bool,
) -> tuple[Tensor, dict[str, object]]:
    label_list = [int(v) for v in labels]
    tf, tl = teacher_final, teacher_layers
    if not teacher_trained:
        tf, tl = tf.detach(), tl.detach()

    def target(x: Tensor) -> Tensor:
        return x.detach() if detach_targets else x

    l_stu = reference_ce(student_final, label_list)
    if teacher_trained:
        l_tch = reference_ce(tf, label_list)
        l_rep = reference_kl(target(tf), student_final, temperature) + reference_kl(
            target(student_final), tf, temperature
        )
    else:
        l_tch = torch.zeros((), dtype=torch.float64)
        l_rep = reference_kl(target(tf), student_final, temperature)

    num_pairs = student_layers.shape[0]
    pair_kls = [reference_kl(target(tl[k]), student_layers[k], temperature) for k in range(num_pairs)]
    gaps = [float(reference_ce(tl[k].detach(), label_list)) for k in range(num_pairs)]
    if reweight:
        exps = [math.exp(-g / layer_temperature) for g in gaps]
        weights = [e / sum(exps) for e in exps]
    else:
        weights = [1.0] * num_pairs
    l_lyr = sum((w * kl for w, kl in zip(weights, pair_kls, strict=True)), torch.zeros((), dtype=torch.float64))

    total = student_coef * l_stu + teacher_coef * l_tch + response_coef * l_rep + layer_coef * l_lyr
    terms = {
        "student": l_stu,
        "teacher": l_tch,
        "response": l_rep,
        "layers": l_lyr,
        "layer_weights": weights,
        "layer_gaps": gaps,
        "layer_kl": pair_kls,
    }
    return total, terms
