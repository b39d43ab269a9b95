"""Tiny random models of every backbone family, with a tiny tokenizer of the family's own kind (no downloads).

`tiny(family, layers)` gives (config, tokenizer): a 32-wide config of the family and a tokenizer built here from the
words of `TEXTS`, laid out like the family's real one:
- BERT, ELECTRA, DistilBERT: WordPiece with [CLS] [SEP] [PAD] [MASK] [UNK] and BERT's [unused1] / [unused2];
- RoBERTa: byte-level BPE with <s> </s> <pad> <mask>; XLM-R: a SentencePiece-style unigram with the same specials;
- MPNet: WordPiece with <s> </s> <pad> <mask> and [UNK] (and BERT's [unusedN], as in all-mpnet-base-v2's vocab);
- DeBERTa-v2/v3: a unigram with [CLS] [SEP] [PAD] [MASK] [UNK] and no [unusedN] (as in DeBERTa-v3);
- ModernBERT: a BPE with [CLS] [SEP] [PAD] [MASK] [UNK] and [unused0..2] (the real one has 83 [unusedN]), no
  token types.
Every vocabulary covers every character of the texts, so no test text falls to the unknown token. Configs have
dropout off and a wide init (scores spread, distributions far from uniform).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2Tokenizer,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    MPNetConfig,
    MPNetTokenizer,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaTokenizer,
)

FAMILY_NAMES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "deberta-v2", "modernbert")
NEW_FAMILIES = ("mpnet", "deberta-v2", "modernbert")

QUERIES = ["how do tides form", "what powers a jet engine", "why is the sky blue"]
TITLES = ["Tides", "Jet engines", "Rayleigh scattering"]
PASSAGES = [
    "Tides are the rise and fall of sea levels caused by the gravity of the moon and the sun.",
    "A jet engine burns fuel with compressed air and pushes hot exhaust backwards for thrust.",
    "Short blue wavelengths of sunlight scatter more strongly in air than long red ones.",
]
TEXTS = QUERIES + TITLES + PASSAGES
_BERT_SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[unused2]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _words() -> list[str]:
    return sorted({word.strip(".,?").lower() for text in TEXTS for word in text.split()} - {""})


def _characters() -> list[str]:
    return sorted({char for text in TEXTS for char in text.lower() if not char.isspace()})


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    pieces = specials + _characters() + [f"##{c}" for c in _characters()] + _words()
    return {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}


def _unigram_vocab(specials: list[str]) -> list[tuple[str, float]]:
    """Specials first, then whole words (likely) and single characters (always possible), with log-prob scores."""
    pieces = [(s, 0.0) for s in specials] + [("\u2581", -3.0)]
    pieces += [(f"\u2581{w}", -5.0) for w in _words()] + [(c, -9.0) for c in _characters()]
    pieces += [(c.upper(), -9.5) for c in _characters() if c.upper() != c]
    return list(dict.fromkeys(pieces))


def _bpe(specials: list[str]) -> Tokenizer:
    """A byte-level BPE trained on the texts (any text encodes: the 256 byte symbols are in the alphabet)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    return tok


@functools.cache
def tokenizer(family: str) -> Any:
    """The tiny tokenizer of `family` (cached: treat it as read-only, deep-copy before changing it)."""
    if family in ("bert", "electra", "distilbert"):
        return BertTokenizer(vocab=_wordpiece_vocab(_BERT_SPECIALS), do_lower_case=True)
    if family == "mpnet":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[unused0]", "[unused1]", "[unused2]", "[UNK]"]
        vocab = _wordpiece_vocab(specials)
        vocab["<mask>"] = len(vocab)
        return MPNetTokenizer(vocab=vocab, do_lower_case=True)
    if family == "roberta":
        trained = json.loads(_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]).to_str())
        merges = [tuple(pair) for pair in trained["model"]["merges"]]
        return RobertaTokenizer(vocab=trained["model"]["vocab"], merges=merges)
    if family == "xlm-roberta":
        return XLMRobertaTokenizer(vocab=_unigram_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    if family == "deberta-v2":
        return DebertaV2Tokenizer(vocab=_unigram_vocab(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]), unk_id=3)
    if family == "modernbert":
        specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[unused0]", "[unused1]", "[unused2]"]
        tok = _bpe(specials)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "attention_mask"],
        )
    raise ValueError(f"no tiny tokenizer for {family!r}")


_COMMON = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.2}


def config(family: str, layers: int, *, width: int = 32, **overrides: Any) -> Any:
    """A tiny config of `family` sized for its tiny tokenizer, with the tokenizer's special ids."""
    tok = tokenizer(family)
    vocab = len(tok)
    bert_like = {"vocab_size": vocab, "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 2,
                 "intermediate_size": 2 * width, "max_position_embeddings": 130, **_COMMON}  # fmt: skip
    ids = {"pad_token_id": tok.pad_token_id}
    if family == "bert":
        built = BertConfig(**bert_like, **ids)
    elif family == "roberta":
        built = RobertaConfig(**bert_like, **ids, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    elif family == "xlm-roberta":
        built = XLMRobertaConfig(**bert_like, **ids, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    elif family == "electra":  # embeddings narrower than the blocks: exercises ELECTRA's projection
        built = ElectraConfig(**bert_like, **ids, embedding_size=width // 2)
    elif family == "distilbert":
        built = DistilBertConfig(
            vocab_size=vocab, dim=width, n_layers=layers, n_heads=2, hidden_dim=2 * width, max_position_embeddings=130,
            dropout=0.0, attention_dropout=0.0, initializer_range=0.2, **ids,
        )  # fmt: skip
    elif family == "mpnet":
        built = MPNetConfig(**bert_like, **ids, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    elif family == "deberta-v2":  # v3 layout: relative attention, no absolute positions, no token types
        built = DebertaV2Config(
            **bert_like, **ids, relative_attention=True, position_buckets=16, max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0, norm_rel_ebd="layer_norm",
        )  # fmt: skip
    elif family == "modernbert":  # 3 blocks: global, sliding, sliding; a window of 8 tokens, shorter than the texts
        built = ModernBertConfig(
            vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
            intermediate_size=2 * width, max_position_embeddings=256, local_attention=8, global_attn_every_n_layers=3,
            attention_dropout=0.0, mlp_dropout=0.0, embedding_dropout=0.0, initializer_range=0.2,
            pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        )  # fmt: skip
    else:
        raise ValueError(f"no tiny config for {family!r}")
    for key, value in overrides.items():
        setattr(built, key, value)
    return built


def tiny(family: str, layers: int, **overrides: Any) -> tuple[Any, Any]:
    return config(family, layers, **overrides), tokenizer(family)
