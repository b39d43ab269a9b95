"""Cross encoder (CE): `[CLS] q [SEP] title [SEP] text [SEP]`, scored by ONE linear head shared by every layer.

s^l(q, p) = w . H^l([q; p])[CLS] + b. The head lives in lead_head.safetensors; a folder without it (a plain
transformers checkpoint) gets a fresh head, logged and listed in `fresh_parameters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lead_dist.models.backbone import run_backbone, stack_or_empty
from lead_dist.models.base import RetrievalModel, check_options
from lead_dist.models.tokenization import build_batch, check_same_length, segment_ids, special_id

CE_OPTIONS: tuple[str, ...] = ()


class CrossEncoder(RetrievalModel):
    kind = "ce"

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(backbone, tokenizer)
        self.head = nn.Linear(int(backbone.config.hidden_size), 1)

    @classmethod
    def build(cls, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any) -> CrossEncoder:
        check_options(cls.kind, options, CE_OPTIONS)
        return cls(backbone, tokenizer)

    def tokenize_pairs(
        self, queries: Sequence[str], titles: Sequence[str], texts: Sequence[str], max_length: int
    ) -> dict[str, Tensor]:
        """`[CLS] q [SEP] title [SEP] text [SEP]` (title segment left out when empty); token type 1 after q."""
        check_same_length("queries", queries, "titles", titles)
        check_same_length("queries", queries, "texts", texts)
        first = special_id(self.tokenizer, "cls_token", "bos_token")
        q_ids = segment_ids(self.tokenizer, queries, max_length)
        title_ids = segment_ids(self.tokenizer, titles, max_length)
        text_ids = segment_ids(self.tokenizer, texts, max_length)
        triples = list(zip(q_ids, title_ids, text_ids, strict=True))
        return build_batch(self.tokenizer, triples, max_length, first, with_token_types=self.uses_token_types)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        layers: Sequence[int] = (),
    ) -> tuple[Tensor, Tensor]:
        """(final [B], layers [K, B]): the shared head on each kept layer's [CLS] state. The last block's layer score
        IS the final score (as in the reference), also for a backbone that normalises after its last block."""
        chosen = tuple(layers)
        last, kept = run_backbone(self.backbone, input_ids, attention_mask, token_type_ids, chosen)
        final = self.head(last[:, 0]).squeeze(-1)
        per_layer = [
            final if index == self.num_layers - 1 else self.head(states[:, 0]).squeeze(-1)
            for index, states in zip(chosen, kept, strict=True)
        ]
        return final, stack_or_empty(per_layer, final)
