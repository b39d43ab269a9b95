"""Dual encoder (DE): one shared tower; a layer's score is the similarity of the pooled query and passage states.

s^l(q, p) = scale * <pool(H^l(q)), pool(H^l(p))>, where pool is [CLS] or the masked mean, and for `similarity="cos"`
the pooled vectors are L2-normalised first (in `forward`, so retrieval can use `.final` directly).

The per-layer scores LEAD distils (`Reps.layers`) of the INTERMEDIATE blocks may be scored differently from the final
one: `layer_pooling`, `layer_similarity` and `layer_scale` (each None = the final score's setting). The reference
scores every layer by the raw dot product of its [CLS] vectors (LEAD_SPEC section 2: layer_pooling="cls",
layer_similarity="dot"), while a MiniLM sentence encoder was trained with mean pooling and cosine: the layer options
let a model keep the final scoring it was trained with and still give its intermediate layers the reference's
scoring. `layer_scale` defaults to the final `scale` when the layer similarity is the final one, else to that
similarity's own default (cos: 20, dot: 1).

The last block, when it is drawn, is scored exactly as the final score (its vector IS `final`, with `scale`): in the
reference the final DE score is the last block's per-layer score, so the layer term and the response term pull the
same score. Scoring it with the layer options instead pulled one block toward two geometries at once (issue 19).
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
from lead_dist.models.backbone import max_tokens, run_backbone, stack_or_empty
from lead_dist.models.base import RetrievalModel, check_options
from lead_dist.models.reps import Reps
from lead_dist.models.st_folder import write_sentence_transformers
from lead_dist.models.tokenization import build_batch, check_same_length, join_title, segment_ids, special_id

DE_OPTIONS = ("pooling", "similarity", "scale", "max_seq_length", "layer_pooling", "layer_similarity", "layer_scale")
# A cosine similarity lives in [-1, 1]: without a scale its softmax over candidates is nearly flat.
DEFAULT_COS_SCALE = 20.0


def pool(states: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """[B, T, H] -> [B, H]: the first token's state, or the mean over unpadded tokens."""
    if pooling == "cls":
        return states[:, 0]
    weights = attention_mask.to(states.dtype).unsqueeze(-1)
    # The clamp only matters for an all-padding row, which then pools to zeros instead of NaN.
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"DE option {name!r} must be one of {allowed}, got {value!r}")
    return value


def _positive_scale(name: str, scale: float | None, similarity: str) -> float:
    value = float(scale if scale is not None else (DEFAULT_COS_SCALE if similarity == "cos" else 1.0))
    if not value > 0:
        raise ValueError(f"DE option {name!r} must be positive, got {scale!r}")
    return value


def _embed(states: Tensor, attention_mask: Tensor, pooling: str, similarity: str) -> Tensor:
    pooled = pool(states, attention_mask, pooling)
    return F.normalize(pooled, p=2, dim=-1) if similarity == "cos" else pooled


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
        layer_pooling: str | None = None,
        layer_similarity: str | None = None,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__(backbone, tokenizer)
        self.pooling = _one_of("pooling", pooling, POOLINGS)
        self.similarity = _one_of("similarity", similarity, SIMILARITIES)
        self.scale = _positive_scale("scale", scale, similarity)
        self.layer_pooling = _one_of("layer_pooling", layer_pooling or pooling, POOLINGS)
        self.layer_similarity = _one_of("layer_similarity", layer_similarity or similarity, SIMILARITIES)
        if layer_scale is None and self.layer_similarity == self.similarity:
            layer_scale = self.scale
        self.layer_scale = _positive_scale("layer_scale", layer_scale, self.layer_similarity)
        limit = max_tokens(backbone.config)
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
            "layer_pooling": self.layer_pooling,
            "layer_similarity": self.layer_similarity,
            "layer_scale": self.layer_scale,
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
        """The final vector: pooled, and L2-normalised for cosine similarity."""
        return _embed(states, attention_mask, self.pooling, self.similarity)

    def embed_layer(self, states: Tensor, attention_mask: Tensor) -> Tensor:
        """An intermediate block's vector for LEAD's per-layer scores (the layer_* options; the last block's is `embed`)."""
        return _embed(states, attention_mask, self.layer_pooling, self.layer_similarity)

    def layer_scales(self, layers: Sequence[int]) -> tuple[float, ...]:
        """Each layer's score factor: `scale` for the last block (scored as the final vector), else `layer_scale`."""
        return tuple(self.scale if index == self.num_layers - 1 else self.layer_scale for index in layers)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int] = (),
        token_type_ids: Tensor | None = None,
    ) -> Reps:
        chosen = tuple(layers)
        last, kept = run_backbone(self.backbone, input_ids, attention_mask, token_type_ids, chosen)
        final = self.embed(last, attention_mask)
        per_layer = [
            final if index == self.num_layers - 1 else self.embed_layer(states, attention_mask)
            for index, states in zip(chosen, kept, strict=True)
        ]
        stacked = stack_or_empty(per_layer, final)
        return Reps(final=final, layers=stacked, scale=self.scale, layer_scales=self.layer_scales(chosen))

    @staticmethod
    def score(q: Reps, p: Reps) -> tuple[Tensor, Tensor]:
        """(final [Q, C], layers [K, Q, C]) = scale * inner products (each layer its own scale); no parameters."""
        if q.scale != p.scale or q.layer_scales != p.layer_scales:
            raise ValueError(
                f"query and passage Reps carry different scales ({q.scale}, layers {q.layer_scales} vs "
                f"{p.scale}, layers {p.layer_scales})"
            )
        depth = q.layers.shape[0]
        if p.layers.shape[0] != depth:
            raise ValueError(f"query Reps hold {depth} layers but passage Reps {p.layers.shape[0]}")
        scales = q.layer_scales if q.layer_scales is not None else (q.scale,) * depth
        if len(scales) != depth:
            raise ValueError(f"Reps hold {depth} layers but {len(scales)} layer scales")
        final = q.final @ p.final.transpose(0, 1)
        per_layer = torch.einsum("kqd,kcd->kqc", q.layers, p.layers)
        factors = torch.tensor(scales, dtype=per_layer.dtype, device=per_layer.device).view(-1, 1, 1)
        return final * q.scale, per_layer * factors

    def save_extras(self, folder: Path) -> None:
        write_sentence_transformers(
            folder,
            pooling=self.pooling,
            normalize=self.similarity == "cos",
            hidden_size=self.hidden_size,
            max_seq_length=self.max_seq_length,
        )
