"""The LEAD objective: LEAD_SPEC sections 4 (distributions, KL), 6 (layer re-weighting) and 7 (total loss).

Inputs are score matrices over candidates: finals [Q, C], per-layer stacks [K, Q, C] (K aligned pairs, row k of
the student stack paired with row k of the teacher stack), labels [Q] = the column of each query's positive.

Where each temperature applies (T = `temperature`, tau_L = `layer_temperature`):
- A KL's TARGET is tempered, its LEARNER is not: KL(p || q) with p = softmax(s_target / T) and
  log q = log_softmax(s_learner). For the forward terms the target is the teacher (final and every layer), as the
  spec writes. For the reverse term KL(P_S || Q_T) of a trained teacher we mirror that rule: the student final is
  the target, softmax(s_S / T), and the teacher final is the learner, log_softmax(s_T). At T = 1 (every reference
  run) all choices coincide.
- The ground-truth cross entropies L_stu and L_tch use raw scores (no T).
- The layer gap g_k is the mean cross entropy of the teacher layer's UNTEMPERED distribution, softmax(s_T^k),
  against the labels (the reference's `nll_loss` of the layer's `log_softmax(scores)`; only the KL target is divided
  by T); w = softmax_k(-g / tau_L). tau_L appears nowhere else. At T = 1 this is the KL target's cross entropy.
- No T^2 factor anywhere. KL and CE are `batchmean`: summed over candidates, averaged over the Q queries given.
- Scores must be finite: a -inf "masked" candidate would make 0 * log 0 terms NaN. Cut candidates by slicing.

Coefficients: total = student_coef * L_stu + teacher_coef * L_tch + response_coef * L_rep + layer_coef * L_lyr,
with L_lyr = sum_k w_k KL_k (reweight) or sum_k KL_k (no reweight). `terms` reports every term before its
coefficient, detached (for logging; backpropagate `total`).

Gradient flow: with teacher_trained=False every teacher tensor is detached up front and L_tch and the reverse KL are
left out. With detach_targets=True the target side of every KL is detached (the reference code does not detach, so
by default the teacher also learns through the KL targets). The weights w never carry gradient.

Distributed: the KL and CE terms average over the rank's own queries, which under DDP gradient averaging equals the
global-batch loss when every rank has the same number of queries (see lead_dist.distributed.gather_with_grad). The
layer gaps are means over queries too, so pass `gap_reduce=lead_dist.distributed.all_reduce_mean` to make every rank
use the global batch's weights; without it each rank weights its layers by its own queries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["contrastive_loss", "kl_from_scores", "layer_gaps", "lead_loss"]


def _as_loss_dtype(x: Tensor) -> Tensor:
    # log_softmax over thousands of candidates in bf16/fp16 loses the small probabilities the KL weighs.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_labels(labels: Tensor, num_queries: int, num_candidates: int) -> None:
    if labels.dim() != 1 or labels.shape[0] != num_queries:
        raise ValueError(f"labels must have shape [Q] = [{num_queries}], got {list(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"labels must be an integer tensor (column of each positive), got dtype {labels.dtype}")
    # The range check reads values, which on an accelerator waits for the device (a sync, 2-3 per micro-batch):
    # only on the CPU, where it is free. The trainer's labels are built in range by construction
    # (train/candidates.py), and an out-of-range label on a GPU still fails in the cross entropy's own check.
    if num_queries and labels.device.type == "cpu" and bool(((labels < 0) | (labels >= num_candidates)).any()):
        raise ValueError(
            f"labels must lie in [0, {num_candidates}) (one column per candidate), got min {int(labels.min())} "
            f"max {int(labels.max())}"
        )


def _check_scores(name: str, scores: Tensor, dims: int) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != dims:
        expected = "[Q, C]" if dims == 2 else "[K, Q, C]"
        raise ValueError(f"{name} must have shape {expected}, got {list(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of scores, got dtype {scores.dtype}")


def contrastive_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """Ground-truth cross entropy of the distribution softmax(scores) [Q, C] against labels [Q] (mean over Q).

    This is L_stu of LEAD, the warm-up loss, and the whole loss of a contrastive-only run.
    """
    _check_scores("scores", scores, 2)
    _check_labels(labels, scores.shape[0], scores.shape[1])
    return F.cross_entropy(_as_loss_dtype(scores), labels.long())


def kl_from_scores(target_scores: Tensor, learner_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(target / T) || softmax(learner)) summed over candidates and averaged over queries (batchmean).

    [Q, C] -> scalar; [K, Q, C] -> [K], one KL per aligned layer pair."""
    log_p = torch.log_softmax(_as_loss_dtype(target_scores) / temperature, dim=-1)
    log_q = torch.log_softmax(_as_loss_dtype(learner_scores), dim=-1)
    per_query = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return per_query.mean(dim=-1)


@torch.no_grad()
def layer_gaps(teacher_layers: Tensor, labels: Tensor) -> Tensor:
    """g_k = mean over queries of -log softmax(s_T^k)[label], untempered (LEAD_SPEC section 6); [K, Q, C] -> [K],
    no gradient."""
    log_p = torch.log_softmax(_as_loss_dtype(teacher_layers), dim=-1)
    index = labels.long().view(1, -1, 1).expand(log_p.shape[0], -1, 1)
    return -log_p.gather(-1, index).squeeze(-1).mean(dim=-1)


def _check_inputs(
    student_final: Tensor, teacher_final: Tensor, student_layers: Tensor, teacher_layers: Tensor, labels: Tensor
) -> None:
    _check_scores("student_final", student_final, 2)
    _check_scores("teacher_final", teacher_final, 2)
    _check_scores("student_layers", student_layers, 3)
    _check_scores("teacher_layers", teacher_layers, 3)
    if student_final.shape != teacher_final.shape:
        raise ValueError(
            f"student_final {list(student_final.shape)} and teacher_final {list(teacher_final.shape)} must both be "
            "[Q, C] over the same candidates"
        )
    num_queries, num_candidates = student_final.shape
    for name, stack in (("student_layers", student_layers), ("teacher_layers", teacher_layers)):
        if stack.shape[1:] != student_final.shape:
            raise ValueError(
                f"{name} has shape {list(stack.shape)}; expected [K, {num_queries}, {num_candidates}] "
                "(same queries and candidates as the finals)"
            )
    if student_layers.shape[0] != teacher_layers.shape[0]:
        raise ValueError(
            f"student_layers has K = {student_layers.shape[0]} layers but teacher_layers has K = "
            f"{teacher_layers.shape[0]}; layers are aligned in pairs"
        )
    _check_labels(labels, num_queries, num_candidates)


def lead_loss(
    student_final: Tensor,
    teacher_final: Tensor,
    student_layers: Tensor | None,
    teacher_layers: Tensor | None,
    labels: Tensor,
    *,
    teacher_trained: bool = True,
    temperature: float = 1.0,
    layer_temperature: float = 10.0,
    reweight: bool = True,
    layer_coef: float = 1.0,
    student_coef: float = 1.0,
    teacher_coef: float = 1.0,
    response_coef: float = 1.0,
    detach_targets: bool = False,
    gap_reduce: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """LEAD total loss and its detached terms. `student_layers`/`teacher_layers` may be None or [0, Q, C] (K = 0,
    response-based distillation). `gap_reduce` (e.g. distributed.all_reduce_mean) is applied to the [K] layer gaps
    before the softmax. See the module docstring for temperatures, coefficients and gradient flow."""
    if student_layers is None:
        student_layers = student_final.new_zeros((0, *student_final.shape))
    if teacher_layers is None:
        teacher_layers = teacher_final.new_zeros((0, *teacher_final.shape))
    _check_inputs(student_final, teacher_final, student_layers, teacher_layers, labels)
    if not temperature > 0:
        raise ValueError(f"LEAD option 'temperature' must be > 0, got {temperature}")
    if not layer_temperature > 0:
        raise ValueError(f"LEAD option 'layer_temperature' must be > 0, got {layer_temperature}")

    if not teacher_trained:
        teacher_final = teacher_final.detach()
        teacher_layers = teacher_layers.detach()

    def target(scores: Tensor) -> Tensor:
        return scores.detach() if detach_targets else scores

    loss_student = contrastive_loss(student_final, labels)
    forward_kl = kl_from_scores(target(teacher_final), student_final, temperature)
    zero = forward_kl.new_zeros(())
    if teacher_trained:
        loss_teacher = contrastive_loss(teacher_final, labels)
        reverse_kl = kl_from_scores(target(student_final), teacher_final, temperature)
    else:
        loss_teacher, reverse_kl = zero, zero
    loss_response = forward_kl + reverse_kl

    num_pairs = student_layers.shape[0]
    if num_pairs:
        pair_kl = kl_from_scores(target(teacher_layers), student_layers, temperature)
        gaps = layer_gaps(teacher_layers, labels)
        if gap_reduce is not None:
            gaps = gap_reduce(gaps)
        weights = torch.softmax(-gaps / layer_temperature, dim=0) if reweight else torch.ones_like(gaps)
        loss_layers = (weights.detach() * pair_kl).sum()
    else:
        pair_kl = zero.new_zeros((0,))
        gaps = zero.new_zeros((0,))
        weights = zero.new_zeros((0,))
        loss_layers = zero

    total = (
        student_coef * loss_student
        + teacher_coef * loss_teacher
        + response_coef * loss_response
        + layer_coef * loss_layers
    )
    terms = {
        "student": loss_student.detach(),
        "teacher": loss_teacher.detach(),
        "response": loss_response.detach(),
        "response_forward": forward_kl.detach(),
        "response_reverse": reverse_kl.detach(),
        "layers": loss_layers.detach(),
        "layer_weights": weights.detach(),
        "layer_gaps": gaps.detach(),
        "layer_kl": pair_kl.detach(),
    }
    for k in range(num_pairs):
        terms[f"layer_kl/{k}"] = terms["layer_kl"][k]
    return total, terms
