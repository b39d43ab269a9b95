"""Length-sorted chunked encoding: a step's texts encoded in chunks of similar length, each padded to its own longest.

A collated batch is padded to its longest text, so with passages of 20 to 256 tokens most of the encoder's work is
spent on padding. Every text's representation is independent of the other texts in its batch (the attention mask
removes padded keys: their softmax weight is exactly zero, and pooling and ColBERT's mask skip padded positions), so
sorting the texts by length, cutting them into chunks of `size` texts and trimming each chunk to its own longest
gives the same representations with less padding. The chunks' outputs are put back in the batch's order, so the
objective sees the same tensors (a ColBERT chunk's tokens are zero-padded back to one length, mask 0).

With compiled backbones every new (texts, length) shape is a recompile, so a chunk's length is rounded up to a
multiple of `bucket` (never beyond what the chunk needs plus bucket - 1; it may exceed the collated length, the
extra positions are padding with attention 0).

Each chunk is a separate forward through the model's wrapper (DDP, DeepSpeed, hooks), like the separate query and
passage forwards: the step's output capture sees each chunk's outputs and the backward reaches all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lead_dist.distributed import unwrap
from lead_dist.models.colbert import pad_tokens
from lead_dist.models.reps import Reps


@dataclasses.dataclass(frozen=True)
class Chunking:
    """How one encoder call is split: `size` texts per chunk (0: one chunk of every text) and lengths rounded up to
    a multiple of `bucket` (1: each chunk's exact longest)."""

    size: int = 0
    bucket: int = 1

    @property
    def is_plain(self) -> bool:
        """The unchanged call: one batch at the collated length."""
        return self.size == 0 and self.bucket == 1


@dataclasses.dataclass(frozen=True)
class Chunk:
    rows: Tensor  # indices into the batch, longest text first
    length: int  # the token length this chunk is padded to


def round_up(length: int, bucket: int) -> int:
    return -(-length // bucket) * bucket


def plan_chunks(attention_mask: Tensor, chunking: Chunking) -> list[Chunk]:
    """The chunks of one batch: rows sorted by length (longest first, ties in batch order), cut every `size` rows."""
    lengths = attention_mask.sum(dim=1)
    order = torch.sort(lengths, descending=True, stable=True).indices
    size = chunking.size if chunking.size > 0 else max(1, len(order))
    chunks = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        longest = max(1, int(lengths[rows].max()))
        chunks.append(Chunk(rows=rows, length=round_up(longest, chunking.bucket)))
    return chunks


def padding_share(attention_mask: Tensor, chunking: Chunking) -> tuple[float, float]:
    """(share of padded positions in the one padded batch, share after chunking): 1 - real tokens / positions run."""
    real = float(attention_mask.sum())
    whole = attention_mask.shape[0] * attention_mask.shape[1]
    chunked = sum(len(chunk.rows) * chunk.length for chunk in plan_chunks(attention_mask, chunking))
    return 1.0 - real / whole if whole else 0.0, 1.0 - real / chunked if chunked else 0.0


def _slice_tokens(tokens: Mapping[str, Tensor], chunk: Chunk, pad_id: int) -> dict[str, Tensor]:
    """The chunk's rows at the chunk's length (cut, or extended with padding of attention 0)."""
    out = {}
    for key, value in tokens.items():
        rows = value.index_select(0, chunk.rows)
        extra = chunk.length - rows.shape[1]
        if extra < 0:
            rows = rows[:, : chunk.length]
        elif extra > 0:
            fill = pad_id if key == "input_ids" else 0
            rows = torch.nn.functional.pad(rows, (0, extra), value=fill)
        out[key] = rows.contiguous()
    return out


def _inverse(chunks: Sequence[Chunk]) -> Tensor:
    """Positions in the concatenated chunk outputs of the batch's rows 0..B-1."""
    order = torch.cat([chunk.rows for chunk in chunks])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return inverse


def _pad_id(model: torch.nn.Module) -> int:
    tokenizer = getattr(unwrap(model), "tokenizer", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _join_reps(parts: list[Reps], inverse: Tensor) -> Reps:
    """Chunk Reps back into one batch in the batch's order; token Reps (ColBERT) padded to one length first."""
    if parts[0].mask is not None:
        length = max(int(part.mask.shape[1]) for part in parts if part.mask is not None)
        parts = [pad_tokens(part, length) for part in parts]
    final = torch.cat([part.final for part in parts]).index_select(0, inverse)
    layers = torch.cat([part.layers for part in parts], dim=1).index_select(1, inverse)
    masks = [part.mask for part in parts if part.mask is not None]
    mask = torch.cat(masks).index_select(0, inverse) if masks else None
    # replace, not a new Reps: the chunks' scales (final and per layer) travel with the joined batch
    return dataclasses.replace(parts[0], final=final, layers=layers, mask=mask)


def encode(
    model: torch.nn.Module, tokens: Mapping[str, Tensor], layers: Sequence[int], chunking: Chunking | None
) -> Any:
    """`model(**tokens, layers=layers)`, chunked: Reps for a DE / ColBERT, (final [B], layers [K, B]) for a cross
    encoder, equal to the one-batch call up to the rounding of differently shaped kernels. None: the plain call."""
    layers = tuple(layers)
    # a cached teacher (lead_dist/teacher_cache) gets cache rows, not tokens: it runs no encoder, nothing to trim
    if chunking is None or chunking.is_plain or "attention_mask" not in tokens:
        return model(**tokens, layers=layers)
    chunks = plan_chunks(tokens["attention_mask"], chunking)
    pad_id = _pad_id(model)
    outputs = [model(**_slice_tokens(tokens, chunk, pad_id), layers=layers) for chunk in chunks]
    inverse = _inverse(chunks)
    if isinstance(outputs[0], Reps):
        return _join_reps(outputs, inverse)
    final = torch.cat([out[0] for out in outputs]).index_select(0, inverse)
    per_layer = torch.cat([out[1] for out in outputs], dim=1).index_select(1, inverse)
    return final, per_layer
