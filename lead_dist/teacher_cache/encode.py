"""Running the teacher once over a shard of entries: every layer's output, in the shard's entry order.

Batches are cut from the shard's entries sorted by token length and trimmed to their longest member (as
`lead_dist.retrieval.encode` does): the padding a batch carries does not change any unpadded token's states, so
the values are those of the training-time forward on a differently padded batch, up to float32 reordering. The
teacher runs in float32 under inference mode; storage rounds to fp16 or bf16 afterwards (format.py).

What one entry yields (N = the teacher's depth; what `format.py` stores):
    de   final [D], layers [N, D]                       the pooled vectors `DualEncoder.forward` returns
    ce   final [], layers [N]                           the shared head's score of each layer
    cb   final [T, D'], layers [T, N, D]                the T tokens that count (mask 1), projected final + raw layers
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lead_dist.teacher_cache.plan import Entry, ShardPlan


def tokenize_entries(teacher: nn.Module, family: str, entries: Sequence[Entry], lengths: tuple[int, int]) -> dict:
    """Tokens of `entries` exactly as `data.collate_for` makes them for training."""
    query_max, passage_max = lengths
    if family == "query":
        return dict(teacher.tokenize_queries([e.query for e in entries], query_max))
    if family == "passage":
        return dict(teacher.tokenize_passages([e.title for e in entries], [e.text for e in entries], passage_max))
    queries, titles, texts = [e.query for e in entries], [e.title for e in entries], [e.text for e in entries]
    return dict(teacher.tokenize_pairs(queries, titles, texts, query_max + passage_max))


def _per_entry(kind: str, output: object, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
    """A batch's forward output -> (final, layers) per row, on the CPU in float32."""
    if kind == "ce":
        final, layers = output  # [B], [N, B]
        return list(zip(final.float().cpu(), layers.float().cpu().transpose(0, 1), strict=True))
    final, layers = output.final.float().cpu(), output.layers.float().cpu()  # type: ignore[attr-defined]
    if kind == "de":
        return list(zip(final, layers.transpose(0, 1), strict=True))
    counts = output.mask.sum(dim=1).tolist()  # type: ignore[attr-defined]
    # Right padding: the tokens that count are each row's first `count` positions.
    return [(final[i, :n], layers[:, i, :n].transpose(0, 1)) for i, n in enumerate(counts)]


@torch.inference_mode()
def encode_shard(
    teacher: nn.Module, plan: ShardPlan, lengths: tuple[int, int], *, batch_size: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """(final, layers) of every entry of `plan`, in the plan's order, float32 on the CPU."""
    tokens = tokenize_entries(teacher, plan.family, plan.entries, lengths)
    mask = tokens["attention_mask"]
    # lead_dist's layouts pad on the right whatever the tokenizer's padding_side (a decoder's is often "left"):
    # the trimming below and the CB token rows rely on it, so the tokens themselves are checked
    if bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("teacher cache: the teacher's tokens are not padded on the right")
    token_counts = mask.sum(dim=1)
    order = torch.argsort(token_counts, descending=True, stable=True)
    all_layers = tuple(range(teacher.num_layers))
    results: list[tuple[Tensor, Tensor] | None] = [None] * len(plan.entries)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(token_counts[rows].max())
        batch = {key: value[rows, :width].to(device) for key, value in tokens.items()}
        output = teacher(**batch, layers=all_layers)
        for row, pair in zip(rows.tolist(), _per_entry(teacher.kind, output, batch["attention_mask"]), strict=True):
            results[row] = pair
    assert all(pair is not None for pair in results)
    return results  # type: ignore[return-value]
