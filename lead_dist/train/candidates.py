"""Who competes with whom: the candidate passages of every distribution (LEAD_SPEC sections 3 and 12).

Each rank holds Q queries and P = Q * G passages laid out [q0 pos, q0 negs.., q1 pos, ..] (G = 1 + negatives).

* global candidates (DE / ColBERT): every passage of every rank. The passage representations the scores need
  (final + the selected layers; ColBERT also its token masks) are gathered WITH gradient in one collective, rank-major,
  so column `r * P + i * G` is the positive of query i on rank r. Each rank scores only its own queries, averages over
  them, and DDP / DeepSpeed average the gradients: N ranks x B queries == 1 rank x N*B queries.
* group candidates (a cross encoder, or `candidates: group`): the query's own 1 + n passages, label 0. Those are all
  local, so nothing is gathered; a score matrix against the local passages is cut to the own group.

Representations are the `Reps` dataclass of `lead_dist.models` (final, layers, mask, scale), rebuilt with
`dataclasses.replace` so the scale travels with them. Collectives per global step and model: one for the per-rank
(passages, tokens) sizes, then `gather_with_grad` (its shape exchange + the gather).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.distributed as dist

from lead_dist.distributed import gather_with_grad, rank, world_size
from lead_dist.models.colbert import pad_tokens


def passage_sizes_across_ranks(num_passages: int, num_tokens: int, device: torch.device) -> list[tuple[int, int]]:
    """(passages, tokens) of every rank; one tiny collective, needed to pad ColBERT tokens and check batch sizes."""
    world = world_size()
    mine = torch.tensor([num_passages, num_tokens], dtype=torch.long, device=device)
    if world == 1:
        return [(num_passages, num_tokens)]
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    return [(int(pair[0]), int(pair[1])) for pair in everyone]


def _check_equal_passage_counts(sizes: list[tuple[int, int]]) -> None:
    counts = [passages for passages, _tokens in sizes]
    if len(set(counts)) > 1:
        raise RuntimeError(
            f"ranks hold different numbers of passages {counts}: gathered candidates need the same per-rank batch "
            "(train.batch_size and data.num_negatives equal on every rank, and a stream with equal batches per rank)"
        )


def _gather_rows(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Gather several tensors whose dim 0 is the passage, in ONE collective; gradient flows back to each rank's rows.

    Tensors are flattened per row and concatenated in a common dtype, gathered, then split and cast back.
    """
    rows = tensors[0].shape[0]
    common = torch.result_type(*[t for t in tensors if t.is_floating_point()] or [tensors[0]])
    flat = torch.cat([t.reshape(rows, math.prod(t.shape[1:])).to(common) for t in tensors], dim=1)
    gathered = gather_with_grad(flat)
    pieces = gathered.split([math.prod(t.shape[1:]) for t in tensors], dim=1)
    return [p.reshape(gathered.shape[0], *t.shape[1:]).to(t.dtype) for p, t in zip(pieces, tensors, strict=True)]


def gather_passages(reps: Any) -> Any:
    """All ranks' passage reps, rank-major; with gradient when `reps` carries one (a frozen teacher's does not).

    DE: final [P, D], layers [K, P, D]. ColBERT: final [P, T, D'], layers [K, P, T, D], mask [P, T]: the token axis is
    padded to the longest rank first, and each rank's masks travel with its states (LEAD_SPEC 12).
    """
    is_colbert = reps.mask is not None
    num_tokens = reps.mask.shape[1] if is_colbert else 0
    sizes = passage_sizes_across_ranks(reps.final.shape[0], num_tokens, reps.final.device)
    if len(sizes) == 1:
        return reps
    _check_equal_passage_counts(sizes)
    if is_colbert:
        reps = pad_tokens(reps, max(tokens for _passages, tokens in sizes))
    layers_by_row = reps.layers.transpose(0, 1)  # [P, K, ...]: the passage must be dim 0 for the gather
    if is_colbert:
        final, layers_by_row, mask = _gather_rows(reps.final, layers_by_row, reps.mask)
    else:
        final, layers_by_row = _gather_rows(reps.final, layers_by_row)
        mask = None
    return dataclasses.replace(reps, final=final, layers=layers_by_row.transpose(0, 1), mask=mask)


def global_labels(num_queries: int, group_size: int, device: torch.device) -> torch.Tensor:
    """Column of each local query's own positive in the gathered [rank 0's P, rank 1's P, ..] candidate layout."""
    offset = rank() * num_queries * group_size
    return offset + torch.arange(num_queries, device=device) * group_size


def group_labels(num_queries: int, device: torch.device) -> torch.Tensor:
    """Own-group candidates are laid out [pos, negs..]: the positive is column 0."""
    return torch.zeros(num_queries, dtype=torch.long, device=device)


def cut_to_own_group(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[..., Q, Q*G] scores against the local passages -> [..., Q, G]: each query's own 1 + n passages."""
    num_queries = scores.shape[-2]
    if scores.shape[-1] != num_queries * group_size:
        raise ValueError(f"expected {num_queries} x {group_size} local candidates, got {scores.shape[-1]} columns")
    columns = torch.arange(num_queries, device=scores.device)[:, None] * group_size
    columns = columns + torch.arange(group_size, device=scores.device)[None, :]
    return scores.gather(-1, columns.expand(*scores.shape[:-1], group_size))
