"""Tiny random decoder-only LLMs of every decoder family, with tiny tokenizers of the family's own kind (no downloads).

`tiny_decoder(family, layers)` gives (config, tokenizer). The tokenizers are transformers' own classes, built here
from a BPE trained on the words of `family_models.TEXTS`, laid out as the real ones:
- qwen2: Qwen2Tokenizer (byte-level BPE), <|endoftext|> as EOS and padding, no BOS, no EOS appended (gte-Qwen2's);
- qwen3: the same, with the template appending <|endoftext|> and left padding (Qwen3-Embedding's tokenizer);
- llama, mistral: LlamaTokenizer (SentencePiece-style BPE with byte fallback), <s> added before every text, no
  padding token, left padding (Llama's and e5-mistral's);
- gemma, gemma2, gemma3_text: GemmaTokenizer, <bos> added, <pad> and <eos>.
Configs are 32 wide with 4 heads of 8 and 2 key/value heads (grouped-query attention), sliding windows of 8 tokens
(shorter than the test texts) where the family has them, and per-block attention types mixed (qwen2: full then
sliding; gemma2 / gemma3: sliding, full, ...), so a cut to fewer blocks has to keep them in step.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from family_models import TEXTS
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaTokenizer,
    LlamaConfig,
    LlamaTokenizer,
    MistralConfig,
    Qwen2Config,
    Qwen2Tokenizer,
    Qwen3Config,
)

DECODER_NAMES = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3_text")
WINDOW = 8


def _trained(tok: Tokenizer, specials: list[str], size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
                                  if isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel) else [])  # fmt: skip
    tok.train_from_iterator(TEXTS, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def _byte_level(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return _trained(tok, specials, 400)


def _sentencepiece_like(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Metaspace BPE with the 256 byte tokens of byte fallback (any text encodes)."""
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    return _trained(tok, specials + [f"<0x{i:02X}>" for i in range(256)], 600)


@functools.cache
def decoder_tokenizer(family: str) -> Any:
    """The tiny tokenizer of a decoder family (cached: treat it as read-only, deep-copy before changing it)."""
    if family in ("qwen2", "qwen3"):
        vocab, merges = _byte_level(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        if family == "qwen2":
            return Qwen2Tokenizer(vocab=vocab, merges=merges)
        from lead_dist.models.tokenization import with_eos_appended

        # padding_side given to the constructor, so save_pretrained writes it (an attribute set later is not saved)
        return with_eos_appended(Qwen2Tokenizer(vocab=vocab, merges=merges, padding_side="left"))
    if family in ("llama", "mistral"):
        vocab, merges = _sentencepiece_like(["<unk>", "<s>", "</s>"])
        return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, padding_side="left")
    if family in ("gemma", "gemma2", "gemma3_text"):
        vocab, merges = _sentencepiece_like(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
        return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    raise ValueError(f"no tiny decoder tokenizer for {family!r}")


def _alternating(layers: int, first: str, second: str) -> list[str]:
    return [first if index % 2 == 0 else second for index in range(layers)]


def decoder_config(family: str, layers: int, *, width: int = 32, **overrides: Any) -> Any:
    """A tiny config of a decoder family sized for its tiny tokenizer, with its special ids."""
    tok = decoder_tokenizer(family)
    common = {
        "vocab_size": len(tok), "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "initializer_range": 0.2, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id, "attention_dropout": 0.0,
    }  # fmt: skip
    head_dim = width // 4
    if family == "qwen2":  # block 0 global, the others a sliding window (max_window_layers: 1)
        built = Qwen2Config(**common, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)
    elif family == "qwen3":
        built = Qwen3Config(**common, head_dim=head_dim)
    elif family == "llama":
        built = LlamaConfig(**common)
    elif family == "mistral":
        built = MistralConfig(**common, sliding_window=WINDOW)
    elif family == "gemma":
        built = GemmaConfig(**common, head_dim=head_dim)
    elif family == "gemma2":  # eager attention with soft-capped logits, alternating sliding and global blocks
        built = Gemma2Config(**common, head_dim=head_dim, sliding_window=WINDOW, query_pre_attn_scalar=head_dim,
                             layer_types=_alternating(layers, "sliding_attention", "full_attention"))  # fmt: skip
    elif family == "gemma3_text":
        built = Gemma3TextConfig(**common, head_dim=head_dim, sliding_window=WINDOW, query_pre_attn_scalar=head_dim,
                                 layer_types=_alternating(layers, "sliding_attention", "full_attention"))  # fmt: skip
    else:
        raise ValueError(f"no tiny decoder config for {family!r}")
    for key, value in overrides.items():
        setattr(built, key, value)
    return built


def tiny_decoder(family: str, layers: int, **overrides: Any) -> tuple[Any, Any]:
    return decoder_config(family, layers, **overrides), decoder_tokenizer(family)
