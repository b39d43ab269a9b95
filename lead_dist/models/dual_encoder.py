"""Dual encoder (DE): one shared tower; a layer's score is the similarity of the pooled query and passage states.

s^l(q, p) = scale * <pool(H^l(q)), pool(H^l(p))>, where pool is [CLS] (the first real token), the masked mean or the
last real token (decoder embedders), and for `similarity="cos"` the pooled vectors are L2-normalised first (in
`forward`, so retrieval can use `.final` directly). A decoder's intermediate H^l is read through its final norm
(`backbone.read_out`, families.py).

Prompts (`query_prompt`, `passage_prompt`; sentence-transformers' `prompts`) are prepended to the text, as
sentence-transformers' `encode_query` / `encode_document` do: "Instruct: ...\nQuery: " + query.

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
from lead_dist.models.backbone import family_for, max_tokens, read_out, run_backbone, stack_or_empty
from lead_dist.models.base import RetrievalModel, check_options
from lead_dist.models.reps import Reps
from lead_dist.models.st_folder import write_sentence_transformers
from lead_dist.models.tokenization import (
    build_batch,
    check_same_length,
    join_title,
    segment_ids,
    special_id,
    text_template,
    with_eos_appended,
)

DE_OPTIONS = ("pooling", "similarity", "scale", "max_seq_length", "layer_pooling", "layer_similarity", "layer_scale",
              "query_prompt", "passage_prompt", "append_eos")  # fmt: skip
# A cosine similarity lives in [-1, 1]: without a scale its softmax over candidates is nearly flat.
DEFAULT_COS_SCALE = 20.0


def pool(states: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """[B, T, H] -> [B, H]: each row's first real token ("cls"), the mean over its real tokens ("mean"), or its last
    real token ("lasttoken"), wherever its padding is (left or right); as sentence-transformers' Pooling picks them."""
    if pooling == "mean":
        weights = attention_mask.to(states.dtype).unsqueeze(-1)
        # The clamp only matters for an all-padding row, which then pools to zeros instead of NaN.
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    real = attention_mask.to(torch.int32)
    if pooling == "cls":
        index = real.argmax(dim=1)  # the first 1 (0 for right padding, and for a row without any)
    else:
        index = states.shape[1] - 1 - real.flip(1).argmax(dim=1)  # the last 1 (the last position for a row without)
    return states[torch.arange(states.shape[0], device=states.device), index]


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"DE option {name!r} must be one of {allowed}, got {value!r}")
    return value


def _positive_scale(name: str, scale: float | None, similarity: str) -> float:
    value = float(scale if scale is not None else (DEFAULT_COS_SCALE if similarity == "cos" else 1.0))
    if not value > 0:
        raise ValueError(f"DE option {name!r} must be positive, got {scale!r}")
    return value


def _text(name: str, value: str | None) -> str:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"DE option {name!r} must be a string, got {value!r}")
    return value or ""


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
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        append_eos: bool | None = None,
    ) -> None:
        decoder = family_for(backbone.config).decoder
        if append_eos and not decoder:
            raise ValueError("DE option 'append_eos' applies to decoder backbones (an encoder's text ends with [SEP])")
        if append_eos:  # the tokenizer carries the rule, so a saved folder (and sentence-transformers) keep it
            tokenizer = with_eos_appended(tokenizer)
        super().__init__(backbone, tokenizer)
        self.append_eos = bool(append_eos)
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
        self.query_prompt = _text("query_prompt", query_prompt)
        self.passage_prompt = _text("passage_prompt", passage_prompt)
        # What surrounds a text: [CLS] ... [SEP] for an encoder; a decoder's own template (BOS, EOS where it has them)
        if decoder:
            self.text_start, self.text_end = text_template(self.tokenizer)
        else:
            self.text_start = [special_id(self.tokenizer, "cls_token", "bos_token")]
            self.text_end = [special_id(self.tokenizer, "sep_token", "eos_token")]

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
            "query_prompt": self.query_prompt,
            "passage_prompt": self.passage_prompt,
            "append_eos": self.append_eos,
        }

    # --- tokenization ------------------------------------------------------------------------------------------

    def _tokenize_texts(self, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[CLS] text [SEP]` (a decoder: its template around the text), padded to the longest in the batch."""
        ids = segment_ids(self.tokenizer, texts, max_length)
        return build_batch(self.tokenizer, [[t] for t in ids], max_length, self.text_start,
                           with_token_types=self.uses_token_types, end=self.text_end)  # fmt: skip

    def tokenize_queries(self, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[CLS] query_prompt query [SEP]`, padded to the longest in the batch."""
        return self._tokenize_texts([self.query_prompt + text for text in texts], max_length)

    def tokenize_passages(self, titles: Sequence[str], texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[CLS] passage_prompt title text [SEP]`: one string, `join_title`'s "title text", cut at the end.

        One string, not a (title, text) pair, because that is what a DE is served with: the exported folder loads in
        sentence-transformers, whose `encode` takes one string per passage (BEIR's convention, "title text"). With a
        pair, the vectors lead_dist trains and evaluates and the ones sentence-transformers serves would differ
        (cosine 0.92-0.95 on titled SciFact passages, issue 15)."""
        check_same_length("titles", titles, "texts", texts)
        return self._tokenize_texts([self.passage_prompt + text for text in join_title(titles, texts)], max_length)

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
            final
            if index == self.num_layers - 1
            else self.embed_layer(read_out(self.backbone, states, index), attention_mask)
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
            query_prompt=self.query_prompt,
            passage_prompt=self.passage_prompt,
        )
