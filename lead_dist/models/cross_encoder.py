"""Cross encoder (CE): `[CLS] q [SEP] title [SEP] text [SEP]`, scored by ONE linear head shared by every layer.

s^l(q, p) = w . H^l([q; p])[CLS] + b. The head lives in lead_head.safetensors; a folder without it (a plain
transformers checkpoint) gets a fresh head, logged and listed in `fresh_parameters`.

On a decoder backbone (a causal model: only the last token has seen the whole pair) the pair is laid out with the
tokenizer's own start (BOS where its template has one) and EOS between and after the segments, and the head reads
the last real token: s^l = w . read_out(H^l)[last] + b, where `read_out` is the final norm for intermediate blocks
(families.py), so every layer's score goes through the same head on the scale that head is trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lead_dist.models.backbone import family_for, read_out, run_backbone, stack_or_empty
from lead_dist.models.base import RetrievalModel, check_options
from lead_dist.models.dual_encoder import pool
from lead_dist.models.tokenization import build_batch, check_same_length, segment_ids, special_id, text_template

CE_OPTIONS: tuple[str, ...] = ()


class CrossEncoder(RetrievalModel):
    kind = "ce"

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(backbone, tokenizer)
        # the head in the backbone's dtype: a bf16 backbone stays bf16 end to end (no silent upcast)
        self.head = nn.Linear(int(backbone.config.hidden_size), 1, dtype=backbone.dtype)
        if family_for(backbone.config).decoder:
            self.start = text_template(tokenizer)[0]
            self.read_at = "lasttoken"  # the token that has seen the whole pair
        else:
            self.start = [special_id(tokenizer, "cls_token", "bos_token")]
            self.read_at = "cls"

    @classmethod
    def build(cls, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any) -> CrossEncoder:
        check_options(cls.kind, options, CE_OPTIONS)
        return cls(backbone, tokenizer)

    def tokenize_pairs(
        self, queries: Sequence[str], titles: Sequence[str], texts: Sequence[str], max_length: int
    ) -> dict[str, Tensor]:
        """`[CLS] q [SEP] title [SEP] text [SEP]` (title segment left out when empty); token type 1 after q.
        A decoder: `[BOS] q [EOS] title [EOS] text [EOS]` (BOS only where its tokenizer's template adds one)."""
        check_same_length("queries", queries, "titles", titles)
        check_same_length("queries", queries, "texts", texts)
        q_ids = segment_ids(self.tokenizer, queries, max_length)
        title_ids = segment_ids(self.tokenizer, titles, max_length)
        text_ids = segment_ids(self.tokenizer, texts, max_length)
        triples = list(zip(q_ids, title_ids, text_ids, strict=True))
        return build_batch(self.tokenizer, triples, max_length, self.start, with_token_types=self.uses_token_types)

    def score_states(self, states: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T, H] -> [B]: the head on each pair's [CLS] (a decoder: last real token) state."""
        return self.head(pool(states, attention_mask, self.read_at)).squeeze(-1)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        layers: Sequence[int] = (),
    ) -> tuple[Tensor, Tensor]:
        """(final [B], layers [K, B]): the shared head on each kept layer's [CLS] (decoder: last-token) state. The
        last block's layer score IS the final score (as in the reference), also for a backbone that normalises after
        its last block."""
        chosen = tuple(layers)
        last, kept = run_backbone(self.backbone, input_ids, attention_mask, token_type_ids, chosen)
        final = self.score_states(last, attention_mask)
        per_layer = [
            final
            if index == self.num_layers - 1
            else self.score_states(read_out(self.backbone, states, index), attention_mask)
            for index, states in zip(chosen, kept, strict=True)
        ]
        return final, stack_or_empty(per_layer, final)
