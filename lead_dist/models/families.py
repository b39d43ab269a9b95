"""What a model family is, for lead_dist: one row per transformers `model_type` it can use as a backbone.

Each row says where the transformer blocks are and how deep the config says the model is (so layers can be captured
and a student cut from the first N blocks), what checkpoint keys are no part of the backbone (skipped and reported on
loading; any other unknown key is an error), whether the backbone has segment embeddings, how its texts are pooled
when nothing else says so, and the few switches a family needs to run the same everywhere. The code that acts on
a row is backbone.py; nothing else looks at `model_type`.

Facts checked against transformers 5.25 (the classes AutoModel builds for each type):
- BERT, RoBERTa, XLM-R, ELECTRA, MPNet and DeBERTa-v2 blocks return a tuple whose first element is the states;
  DistilBERT's too; ModernBERT's return the states alone. Capture handles both.
- MPNet has no segment embeddings (`token_type_ids` are not an input); its positions count from the padding id like
  RoBERTa's (514 position embeddings hold 512 tokens). Its tokenizer writes `<s> text </s>`; its vocabulary keeps
  BERT's `[unused1]`/`[unused2]` (ColBERT's markers).
- DeBERTa-v2 (and v3, the same model_type) takes `token_type_ids` only when `type_vocab_size > 0` (v3 checkpoints
  have 0). Its model forward always collects every layer's states, so lead_dist runs its embeddings and encoder
  itself with the collection off (`runner="deberta"`). v2-xlarge style configs apply a convolution after block 0
  (`conv_kernel_size > 0`): layer 0 is that convolution's output (`after_first_block`). Checkpoints carry MLM heads
  (`lm_predictions.*`, legacy `cls.*`), v3's replaced-token-detection head (`mask_predictions.*`) and, from
  sequence-classification models, `pooler.*` (ContextPooler).
- ModernBERT has no segment embeddings, pre-norm blocks and a final LayerNorm after the last block: layer N-1 is
  `last_hidden_state` (after the norm), as in `hidden_states[N]`; the other layers are the raw block outputs, as in
  `hidden_states[l + 1]`. Its blocks alternate global and sliding-window attention by the config's per-block
  `layer_types`, which a cut keeps in step with the blocks. Attention is pinned to PyTorch's SDPA, which runs on any
  CPU or GPU without flash-attn and keeps every state padded [B, T, H].

Issue 22 adds decoder families (last-token pooling, left padding) as more rows and fields here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One model family as lead_dist sees it (a row of `FAMILIES`)."""

    name: str  # what users call it (docs, errors)
    blocks: str  # dotted attribute path, from the base model, of the nn.ModuleList of transformer blocks
    depth_key: str  # config attribute holding the number of blocks
    ignorable_prefixes: tuple[str, ...]  # checkpoint keys outside the backbone (pooler, pre-training heads)
    has_pooler: bool = False  # the base model class takes `add_pooling_layer` (lead_dist builds it without)
    token_types: bool = False  # segment embeddings exist (and, where the config has it, type_vocab_size > 0)
    pooling: str = "cls"  # how a DE of this family pools a text unless a folder or option says otherwise
    per_layer_keys: tuple[str, ...] = ()  # config lists with one entry per block, cut with the blocks
    attn_implementation: str | None = None  # pinned attention implementation (None: transformers' default)
    after_first_block: str | None = None  # a module applied to block 0's output before block 1 (its output is layer 0)
    runner: str = "model"  # how the backbone is run: "model" (its forward) or "deberta" (embeddings, then encoder)
    positions_after_padding: bool = False  # position ids start after the padding id (RoBERTa-style): fewer tokens fit


_BERT_LIKE = "BERT-like encoder"
# A config section without model_type builds a BERT (train/setup.py reads it so).
DEFAULT_MODEL_TYPE = "bert"

_ROBERTA_HEADS = ("pooler.", "lm_head.")

FAMILIES: dict[str, Family] = {
    "bert": Family(_BERT_LIKE, "encoder.layer", "num_hidden_layers", ("pooler.", "cls."), has_pooler=True,
                   token_types=True),
    "roberta": Family(_BERT_LIKE, "encoder.layer", "num_hidden_layers", _ROBERTA_HEADS, has_pooler=True,
                      token_types=True, positions_after_padding=True),
    "xlm-roberta": Family(_BERT_LIKE, "encoder.layer", "num_hidden_layers", _ROBERTA_HEADS, has_pooler=True,
                          token_types=True, positions_after_padding=True),
    "electra": Family(_BERT_LIKE, "encoder.layer", "num_hidden_layers",
                      ("discriminator_predictions.", "generator_predictions.", "generator_lm_head."), token_types=True),
    "distilbert": Family(_BERT_LIKE, "transformer.layer", "n_layers",
                         ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.")),
    "mpnet": Family("MPNet", "encoder.layer", "num_hidden_layers", _ROBERTA_HEADS, has_pooler=True,
                    positions_after_padding=True),
    "deberta-v2": Family("DeBERTa-v2/v3", "encoder.layer", "num_hidden_layers",
                         ("pooler.", "cls.", "lm_predictions.", "mask_predictions."), token_types=True,
                         after_first_block="encoder.conv", runner="deberta"),
    "modernbert": Family("ModernBERT", "layers", "num_hidden_layers", ("head.", "decoder."),
                         per_layer_keys=("layer_types",), attn_implementation="sdpa"),
}  # fmt: skip


def unsupported_type(model_type: object) -> str:
    """The one message for a model_type outside the table (it names the type and the table's types)."""
    return f"backbone model_type {model_type!r} is not supported; lead_dist handles: {', '.join(sorted(FAMILIES))}"


def family_of(model_type: object) -> Family:
    """The row of a config's `model_type`; ValueError naming it and the supported types otherwise."""
    if model_type not in FAMILIES:
        raise ValueError(unsupported_type(model_type))
    return FAMILIES[model_type]  # type: ignore[index]
