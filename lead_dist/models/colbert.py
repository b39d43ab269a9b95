"""ColBERT-style late interaction (CB): s(q, p) = sum over query tokens i of max over passage tokens j of <q_i, p_j>.

Layout (reference ColBERT / LEAD): the query marker replaces [CLS] (`[unused1] q [SEP]`), the passage marker
likewise (`[unused2] title [SEP] text [SEP]`). When the tokenizer has no such vocabulary entry (RoBERTa-style
vocabularies), the marker falls back to the tokenizer's own start token ([CLS]/<s>) with a logged warning; any
single vocabulary token can be given instead through the `query_marker` / `passage_marker` options.

Query augmentation (default on): the query is filled to exactly `max_length` with [MASK] tokens that are attended
and count in the sum. Without it, queries are padded with [PAD] and padding does not count. Passage padding never
counts in the max. The final score uses the last layer's tokens, projected if `projection_dim` is set, then
L2-normalised; per-layer scores use the raw states of each layer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lead_dist.models.backbone import run_backbone, stack_or_empty
from lead_dist.models.base import RetrievalModel, check_options
from lead_dist.models.reps import Reps
from lead_dist.models.tokenization import build_batch, check_same_length, segment_ids, special_id, vocab_id

logger = logging.getLogger(__name__)

CB_OPTIONS = ("projection_dim", "query_augmentation", "query_marker", "passage_marker")
# Bound on the [Q, C_chunk, Tq, Tp] similarity block scored at once: the max's backward keeps only indices,
# so chunking over candidates bounds peak memory without changing values or gradients.
_MAX_BLOCK_ELEMENTS = 1 << 26


def late_interaction(q_tokens: Tensor, q_mask: Tensor, p_tokens: Tensor, p_mask: Tensor) -> Tensor:
    """[Q, Tq, D], [Q, Tq], [C, Tp, D], [C, Tp] -> [Q, C]: sum_i q_mask_i * max_{j: p_mask_j} <q_i, p_j>."""
    num_q, q_len, _ = q_tokens.shape
    num_c, p_len, _ = p_tokens.shape
    chunk = max(1, _MAX_BLOCK_ELEMENTS // max(1, num_q * q_len * p_len))
    q_weights = q_mask.to(q_tokens.dtype)
    scores = []
    for start in range(0, num_c, chunk):
        tokens, mask = p_tokens[start : start + chunk], p_mask[start : start + chunk]
        similarity = torch.einsum("qid,cjd->qcij", q_tokens, tokens)
        # A padded passage token must never win the max, whatever the sign of the real similarities.
        similarity = similarity.masked_fill(~mask.bool()[None, :, None, :], torch.finfo(similarity.dtype).min)
        best = similarity.max(dim=-1).values  # [Q, c, Tq]
        scores.append((best * q_weights[:, None, :]).sum(dim=-1))
    return torch.cat(scores, dim=1) if scores else q_tokens.new_zeros((num_q, 0))


def pad_tokens(reps: Reps, length: int) -> Reps:
    """Pad CB Reps along the token axis to `length` with zero vectors and mask 0 (scores do not change).

    Ranks tokenise their passages to different lengths; a gather across ranks needs one common length.
    """
    if reps.mask is None:
        raise ValueError("pad_tokens needs token Reps with a mask (ColBERT), got mask=None")
    extra = length - reps.mask.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad {reps.mask.shape[1]} tokens down to {length}")
    if extra == 0:
        return reps
    return dataclasses.replace(
        reps,
        final=F.pad(reps.final, (0, 0, 0, extra)),
        layers=F.pad(reps.layers, (0, 0, 0, extra)),
        mask=F.pad(reps.mask, (0, extra)),
    )


class ColBERT(RetrievalModel):
    kind = "cb"

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        projection_dim: int | None = None,
        query_augmentation: bool = True,
        query_marker: str = "[unused1]",
        passage_marker: str = "[unused2]",
    ) -> None:
        super().__init__(backbone, tokenizer)
        if projection_dim is not None and int(projection_dim) < 1:
            raise ValueError(f"CB option 'projection_dim' must be a positive int or None, got {projection_dim!r}")
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.query_augmentation = bool(query_augmentation)
        self.query_marker, self.query_marker_id = self._resolve_marker("query_marker", query_marker)
        self.passage_marker, self.passage_marker_id = self._resolve_marker("passage_marker", passage_marker)
        self.mask_token_id = special_id(tokenizer, "mask_token") if self.query_augmentation else None
        hidden = int(backbone.config.hidden_size)
        # ColBERT's projection has no bias: it only rotates/reduces the token space before normalisation.
        self.projection = nn.Linear(hidden, self.projection_dim, bias=False) if self.projection_dim else None

    def _resolve_marker(self, option: str, token: str) -> tuple[str, int]:
        token_id = vocab_id(self.tokenizer, token)
        if token_id is not None:
            return token, token_id
        fallback = self.tokenizer.cls_token or self.tokenizer.bos_token
        if fallback is None:
            raise ValueError(f"CB option {option!r}: {token!r} is not in the vocabulary and there is no [CLS]/<s>")
        logger.warning("CB %s %r is not in the vocabulary; falling back to %r", option, token, fallback)
        return fallback, special_id(self.tokenizer, "cls_token", "bos_token")

    @classmethod
    def build(cls, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any) -> ColBERT:
        check_options(cls.kind, options, CB_OPTIONS)
        return cls(backbone, tokenizer, **options)

    @property
    def options(self) -> dict[str, Any]:
        return {
            "projection_dim": self.projection_dim,
            "query_augmentation": self.query_augmentation,
            "query_marker": self.query_marker,
            "passage_marker": self.passage_marker,
        }

    # --- tokenization ------------------------------------------------------------------------------------------

    def tokenize_queries(self, texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[unused1] q [SEP]`, then [MASK] (attended) up to `max_length` with augmentation, else [PAD]."""
        ids = segment_ids(self.tokenizer, texts, max_length)
        return build_batch(
            self.tokenizer,
            [[q] for q in ids],
            max_length,
            self.query_marker_id,
            with_token_types=self.uses_token_types,
            fill_to_max_with=self.mask_token_id,
        )

    def tokenize_passages(self, titles: Sequence[str], texts: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """`[unused2] title [SEP] text [SEP]` (no title segment when the title is empty), [PAD]-padded."""
        check_same_length("titles", titles, "texts", texts)
        title_ids = segment_ids(self.tokenizer, titles, max_length)
        text_ids = segment_ids(self.tokenizer, texts, max_length)
        pairs = list(zip(title_ids, text_ids, strict=True))
        return build_batch(
            self.tokenizer, pairs, max_length, self.passage_marker_id, with_token_types=self.uses_token_types
        )

    # --- model -------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        layers: Sequence[int] = (),
        token_type_ids: Tensor | None = None,
    ) -> Reps:
        last, kept = run_backbone(self.backbone, input_ids, attention_mask, token_type_ids, layers)
        projected = self.projection(last) if self.projection is not None else last
        final = F.normalize(projected, p=2, dim=-1)
        # With augmentation every query position is attended ([MASK] fill), so the attention mask is exactly
        # "which tokens count" for queries and passages alike.
        return Reps(final=final, layers=stack_or_empty(kept, last), mask=attention_mask, scale=1.0)

    pad_tokens = staticmethod(pad_tokens)

    @staticmethod
    def score(q: Reps, p: Reps) -> tuple[Tensor, Tensor]:
        """(final [Q, C], layers [K, Q, C]): sum over counted query tokens of the max over unpadded passage tokens."""
        if q.mask is None or p.mask is None:
            raise ValueError("ColBERT.score needs token masks on both query and passage Reps")
        if q.layers.shape[0] != p.layers.shape[0]:
            raise ValueError(f"query Reps hold {q.layers.shape[0]} layers but passage Reps {p.layers.shape[0]}")
        final = late_interaction(q.final, q.mask, p.final, p.mask)
        per_layer = [late_interaction(q.layers[k], q.mask, p.layers[k], p.mask) for k in range(q.layers.shape[0])]
        return final, stack_or_empty(per_layer, final)
