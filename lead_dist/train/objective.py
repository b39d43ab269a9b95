"""The training objective of one step: models -> per-layer score matrices -> `lead_dist.lead.lead_loss`.

What the loop calls (every function returns `(total, terms)`: a scalar with gradient and a dict of detached scalars):

    distill_loss(student, teacher, batch, student_layers, teacher_layers, lead_cfg, *,
                 teacher_trained: bool, candidates: "global" | "group", mode: "lead" | "response" | "contrastive")
        batch = {"student": collate_for(student, ...), "teacher": collate_for(teacher, ...)}
        student_layers / teacher_layers: the pairs of `lead_dist.lead.select_layers` for this step (ignored by
        modes response and contrastive, which request no layers). lead_cfg: `config.LeadConfig`.
    warmup_loss(model, batch, candidates, *, group_size=None)
        one model of any kind, contrastive over its candidates; batch = collate_for(model, ...). A cross encoder
        always uses its own group and needs `group_size` (1 + negatives) unless the batch carries "group_size".
        Mode `contrastive` of distill_loss is this function on the student; terms = {"contrastive": loss}.

Models may be wrapped (DDP, a DeepSpeed engine): forwards go through the wrapper so its hooks see them, and the
parameter-free `score` is taken from the unwrapped module.

Candidates (LEAD_SPEC 3, DESIGN "distributed semantics", details in `candidates.py`):
  * global (DE / ColBERT teacher, and warm-up of a DE / ColBERT): each rank scores its own queries against every rank's
    passages, gathered with gradient; labels = column of the own positive in that rank-major layout.
  * group (a cross-encoder teacher, or `candidates: group`): each query's own 1 + n passages, label 0; the student's
    rows are cut to the same group for every distribution, including its own ground-truth loss. Nothing is gathered.
A frozen teacher runs under `torch.no_grad()`, so nothing of it is gathered with gradient.
Scores keep the models' dtype; lead_loss computes its softmaxes in float32 when they are bf16 / fp16.
Every rank must hold the same number of queries and passages (checked; the stream guarantees it), which is also
what makes N ranks x B queries == 1 rank x N*B queries; gradient accumulation adds no negatives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lead_dist.config import CANDIDATES, MODES
from lead_dist.distributed import all_reduce_mean, unwrap
from lead_dist.lead import contrastive_loss, lead_loss
from lead_dist.train.candidates import cut_to_own_group, gather_passages, global_labels, group_labels
from lead_dist.train.chunking import Chunking, encode


def _group_size(queries: Mapping[str, torch.Tensor], passages: Mapping[str, torch.Tensor]) -> int:
    # The first entry: token ids, or a cached teacher's rows (lead_dist/teacher_cache/read.py); one row per text.
    num_queries, num_passages = len(next(iter(queries.values()))), len(next(iter(passages.values())))
    if num_queries == 0 or num_passages % num_queries:
        raise ValueError(
            f"batch has {num_queries} queries and {num_passages} passages; expected passages laid out "
            "[q0 pos, q0 negs.., q1 pos, ..] with the same number of negatives for every query"
        )
    return num_passages // num_queries


def score_bi_encoder(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    layers: Sequence[int],
    candidates: str,
    chunking: Chunking | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """DE / ColBERT: (final [Q, C], layers [K, Q, C], group size); C = global passages, or the own group.
    `chunking`: length-sorted chunks per encoder call (train/chunking.py); the default is one padded batch."""
    group_size = _group_size(batch["queries"], batch["passages"])
    q = encode(model, batch["queries"], layers, chunking)
    p = encode(model, batch["passages"], layers, chunking)
    if candidates == "global":
        p = gather_passages(p)
    final, per_layer = unwrap(model).score(q, p)
    if candidates == "group":
        final, per_layer = cut_to_own_group(final, group_size), cut_to_own_group(per_layer, group_size)
    return final, per_layer, group_size


def score_cross_encoder(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    layers: Sequence[int],
    group_size: int,
    chunking: Chunking | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross encoder: its own group only, (final [Q, G], layers [K, Q, G])."""
    final, per_layer = encode(model, batch["pairs"], layers, chunking)
    if final.shape[0] % group_size:
        raise ValueError(f"cross-encoder batch has {final.shape[0]} pairs, not a multiple of group size {group_size}")
    num_queries = final.shape[0] // group_size
    return final.view(num_queries, group_size), per_layer.reshape(len(layers), num_queries, group_size)


def _labels(candidates: str, num_queries: int, group_size: int, device: torch.device) -> torch.Tensor:
    if candidates == "group":
        return group_labels(num_queries, device)
    return global_labels(num_queries, group_size, device)


def _check_candidates(candidates: str, teacher_kind: str | None, key: str) -> None:
    if candidates not in CANDIDATES:
        raise ValueError(f"{key}: {candidates!r} is not one of {', '.join(CANDIDATES)}")
    if teacher_kind == "ce" and candidates == "global":
        raise ValueError(
            f"{key}: a cross encoder scores only the pairs it is given and cannot score the global batch; "
            "use candidates=group"
        )


def warmup_loss(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    candidates: str,
    *,
    group_size: int | None = None,
    chunking: Chunking | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One model alone: cross-entropy of its final distribution over its candidates (in-batch + cross-rank + hard
    negatives when global; the own group when `group`).

    A cross encoder can only score its own group, so it always trains on the group whatever `candidates` says (the
    config has no candidates key for the warm-up model); it needs `group_size`, from the keyword or batch["group_size"].
    """
    kind = unwrap(model).kind
    if kind == "ce":
        candidates = "group"
        group_size = batch.get("group_size", group_size)
        if group_size is None:
            raise ValueError("warmup_loss: a cross-encoder batch needs group_size (1 + data.num_negatives)")
        final, _ = score_cross_encoder(model, batch, (), int(group_size), chunking)
    else:
        _check_candidates(candidates, kind, "candidates")
        final, _, group_size = score_bi_encoder(model, batch, (), candidates, chunking)
    labels = _labels(candidates, final.shape[0], group_size, final.device)
    loss = contrastive_loss(final, labels)
    return loss, {"contrastive": loss.detach()}


def distill_loss(
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    batch: Mapping[str, Mapping[str, Any]],
    student_layers: Sequence[int],
    teacher_layers: Sequence[int],
    lead_cfg: Any,
    *,
    teacher_trained: bool,
    candidates: str,
    mode: str = "lead",
    chunking: Chunking | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Student + teacher: L_stu + L_tch + L_rep (+ L_lyr for mode lead), LEAD_SPEC section 7.

    `candidates` is the teacher section's setting; a cross-encoder teacher requires "group". Mode `response` requests
    no layers (K = 0); mode `contrastive` runs the student alone (`teacher` may be None).
    """
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "contrastive":
        return warmup_loss(student, batch["student"], candidates, chunking=chunking)
    if teacher is None:
        raise ValueError(f"mode {mode} distils from a teacher, but teacher is None")
    if mode == "response":
        student_layers, teacher_layers = (), ()
    if len(student_layers) != len(teacher_layers):
        raise ValueError(f"layer pairs differ in length: student {student_layers}, teacher {teacher_layers}")
    teacher_kind = unwrap(teacher).kind
    _check_candidates(candidates, teacher_kind, "teacher.candidates")

    s_final, s_layers, group_size = score_bi_encoder(student, batch["student"], student_layers, candidates, chunking)
    with contextlib.nullcontext() if teacher_trained else torch.no_grad():
        if teacher_kind == "ce":
            t_final, t_layers = score_cross_encoder(teacher, batch["teacher"], teacher_layers, group_size, chunking)
        else:
            t_final, t_layers, t_group = score_bi_encoder(
                teacher, batch["teacher"], teacher_layers, candidates, chunking
            )
            if t_group != group_size:
                raise ValueError(f"student batch has groups of {group_size} passages, teacher batch of {t_group}")
    if t_final.shape != s_final.shape:
        raise ValueError(f"student scores {tuple(s_final.shape)} and teacher scores {tuple(t_final.shape)} differ")

    labels = _labels(candidates, s_final.shape[0], group_size, s_final.device)
    coef = lead_cfg.coef
    return lead_loss(
        s_final,
        t_final,
        s_layers,
        t_layers,
        labels,
        teacher_trained=teacher_trained,
        temperature=lead_cfg.temperature,
        layer_temperature=lead_cfg.layer_temperature,
        reweight=lead_cfg.reweight,
        detach_targets=lead_cfg.detach_targets,
        student_coef=coef.student,
        teacher_coef=coef.teacher,
        response_coef=coef.response,
        layer_coef=coef.layers,
        gap_reduce=all_reduce_mean,  # the layer weights of the GLOBAL batch, identical on every rank
    )
