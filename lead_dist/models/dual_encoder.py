"""Dual encoder (DE): one shared tower; a layer's score is the similarity of the pooled query and passage states.

s^l(q, p) = scale * <pool(H^l(q)), pool(H^l(p))>, where pool is [CLS] or the masked mean, and for `similarity="cos"`
the pooled vectors are L2-normalised first (in `forward`, so retrieval can use `.final` directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lead_dist.config.schema import POOLINGS, SIMILARITIES
from lead_dist.models.backbone import run_backbone, stack_or_empty
from lead_dist.models.base import RetrievalModel, check_options
from lead_dist.models.reps import Reps
from lead_dist.models.st_folder import write_sentence_transformers
from lead_dist.models.tokenization import build_batch, check_same_length, join_title, segment_ids, special_id

DE_OPTIONS = ("pooling", "similarity", "scale", "max_seq_length")
# A cosine similarity lives in [-1, 1]: without a scale its softmax over candidates is nearly flat.
DEFAULT_COS_SCALE = 20.0


def pool(states: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """[B, T, H] -> [B, H]: the first token's state, or the mean over unpadded tokens."""
    if pooling == "cls":
        return states[:, 0]
    weights = attention_mask.to(states.dtype).unsqueeze(-1)
    # The clamp only matters for an all-padding row, which then pools to zeros instead of NaN.
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class DualEncoder(RetrievalModel):
    kind = "de"

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        pooling: str = "cls",
        similarity: str = "dot",
        scale: float | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        super().__init__(backbone, tokenizer)
        if pooling not in POOLINGS:
            raise ValueError(f"DE option 'pooling' must be 'cls' or 'mean', got {pooling!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"DE option 'similarity' must be 'dot' or 'cos', got {similarity!r}")
        self.pooling = pooling
        self.similarity = similarity
        self.scale = float(scale if scale is not None else (DEFAULT_COS_SCALE if similarity == "cos" else 1.0))
        if not self.scale > 0:
            raise ValueError(f"DE option 'scale' must be positive, got {scale!r}")
        limit = int(getattr(backbone.config, "max_position_embeddings", 512))
        self.max_seq_length = int(max_seq_length) if max_seq_length is not None else min(512, limit)

    @staticmethod
    def option_names() -> tuple[str, ...]:
        return DE_OPTIONS

    @classmethod
    def build(cls, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any) -> DualEncoder:
        check_options(cls.kind, options, DE_OPTIONS)
        return cls(backbone, tokenizer, **options)

    @property
    def options(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "similarity": self.similarity,
            "scale": self.scale,
            "max_seq_length": self.max_seq_length,
        }

    # --- tokenization ------------------------------------------------------------------------------------------

    def tokenize_queries(self, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[CLS] query [SEP]`, padded to the longest in the batch."""
        first = special_id(self.tokenizer, "cls_token", "bos_token")
        ids = segment_ids(self.tokenizer, texts, max_length)
        return build_batch(
            self.tokenizer, [[q] for q in ids], max_length, first, with_token_types=self.uses_token_types
        )

    def tokenize_passages(self, titles: Sequence[str], texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[CLS] title text [SEP]`: one string, `join_title`'s "title text", cut at the end.

        One string, not a (title, text) pair, because that is what a DE is served with: the exported folder loads in
        sentence-transformers, whose `encode` takes one string per passage (BEIR's convention, "title text"). With a
        pair, the vectors lead_dist trains and evaluates and the ones sentence-transformers serves would differ
        (cosine 0.92-0.95 on titled SciFact passages, issue 15)."""
        check_same_length("titles", titles, "texts", texts)
        return self.tokenize_queries(join_title(titles, texts), max_length)

    # --- model -------------------------------------------------------------------------------------------------

    def embed(self, states: Tensor, attention_mask: Tensor) -> Tensor:
        pooled = pool(states, attention_mask, self.pooling)
        return F.normalize(pooled, p=2, dim=-1) if self.similarity == "cos" else pooled

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int] = (),
        token_type_ids: Tensor | None = None,
    ) -> Reps:
        last, kept = run_backbone(self.backbone, input_ids, attention_mask, token_type_ids, layers)
        final = self.embed(last, attention_mask)
        per_layer = [self.embed(states, attention_mask) for states in kept]
        return Reps(final=final, layers=stack_or_empty(per_layer, final), mask=None, scale=self.scale)

    @staticmethod
    def score(q: Reps, p: Reps) -> tuple[Tensor, Tensor]:
        """(final [Q, C], layers [K, Q, C]) = scale * inner products; no parameters."""
        if q.scale != p.scale:
            raise ValueError(f"query and passage Reps carry different scales ({q.scale} vs {p.scale})")
        if q.layers.shape[0] != p.layers.shape[0]:
            raise ValueError(f"query Reps hold {q.layers.shape[0]} layers but passage Reps {p.layers.shape[0]}")
        final = q.final @ p.final.transpose(0, 1)
        per_layer = torch.einsum("kqd,kcd->kqc", q.layers, p.layers)
        return final * q.scale, per_layer * q.scale

    def save_extras(self, folder: Path) -> None:
        write_sentence_transformers(
            folder,
            pooling=self.pooling,
            normalize=self.similarity == "cos",
            hidden_size=self.hidden_size,
            max_seq_length=self.max_seq_length,
        )
