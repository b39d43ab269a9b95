"""Build model inputs from raw text with an explicit token layout.

Models assemble their own layouts (`[CLS] q [SEP]`, a DE passage `[CLS] title text [SEP]`, ColBERT markers, [MASK]
augmentation) from segment token ids, so the layout is visible here rather than hidden in a tokenizer's pair logic.
An empty segment (e.g. a passage without title) is left out together with its [SEP], so a title-less passage is
`[CLS] text [SEP]` and tokenizes exactly like the same text given alone.

Decoder-only LLMs have no [CLS]/[SEP]: their text is laid out as their tokenizer's own template lays out one text
(`text_template`: Llama's and Gemma's BOS before it, an embedder's EOS after it where the template appends one), the
layout sentence-transformers gets from the same tokenizer. `with_eos_appended` makes a tokenizer's template end
with EOS (the `append_eos` option, and a tokenizer_config.json's `add_eos_token: true`, which transformers 5 no
longer applies when a tokenizer.json is present), so the tokenizer saved with a model carries the rule with it.
Every batch built here is padded on the right, whatever the tokenizer's `padding_side` (a left-padded batch from
elsewhere is read correctly too: pooling finds each row's first or last real token from the attention mask).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def special_id(tokenizer: PreTrainedTokenizerBase, *names: str) -> int:
    """The id of the first special token the tokenizer defines among `names` (e.g. "cls_token", "bos_token")."""
    for name in names:
        token_id = getattr(tokenizer, f"{name}_id", None)
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} defines none of the special tokens {names}")


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id padded positions get (attention 0, so any id works): [PAD], else EOS or UNK (Llama and Mistral
    tokenizers define no padding token)."""
    return special_id(tokenizer, "pad_token", "eos_token", "unk_token")


def with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer if it has a padding token, else a copy that pads with EOS (Llama and Mistral tokenizers define
    none). Padded positions are masked, so the id does not matter; it is set on the tokenizer so a saved folder pads
    in sentence-transformers and transformers too, as e5-mistral's own folder does."""
    if tokenizer.pad_token is not None or tokenizer.eos_token is None:
        return tokenizer
    changed = copy.deepcopy(tokenizer)
    changed.pad_token = tokenizer.eos_token
    return changed


_PROBE = "lead dist"  # any text: only what the template adds around it is looked at


def text_template(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the text that the tokenizer's own template adds to one text, e.g. ([bos], []) for
    Llama, ([], [eos]) for Qwen3-Embedding's tokenizer, ([cls], [sep]) for BERT."""
    full = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    plain = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"tokenizer {type(tokenizer).__name__}: its template changes the text's own tokens")


def with_eos_appended(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer if its template already ends a text with EOS, else a copy whose template appends it (saved with
    the tokenizer in tokenizer.json, so transformers and sentence-transformers apply it too)."""
    from tokenizers import processors

    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token to append")
    _before, after = text_template(tokenizer)
    if after[-1:] == [tokenizer.eos_token_id]:
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"appending EOS needs a fast (tokenizers) tokenizer, not {type(tokenizer).__name__}")
    changed = copy.deepcopy(tokenizer)
    appended = processors.TemplateProcessing(
        single=f"$A:0 {eos}:0", pair=f"$A:0 $B:1 {eos}:1", special_tokens=[(eos, int(tokenizer.eos_token_id))]
    )
    old = changed.backend_tokenizer.post_processor
    changed.backend_tokenizer.post_processor = appended if old is None else processors.Sequence([old, appended])
    if text_template(changed)[1][-1:] != [tokenizer.eos_token_id]:
        raise ValueError(f"tokenizer {type(tokenizer).__name__}: could not make its template append EOS")
    return changed


def vocab_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of `token` if it is a single entry of the vocabulary, else None."""
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


def join_title(titles: Sequence[str], texts: Sequence[str]) -> list[str]:
    """A passage as one string, "title text" (just the text when the title is empty): how dual encoders read a
    passage, here and in sentence-transformers (BEIR's convention)."""
    return [f"{title} {text}".strip() for title, text in zip(titles, texts, strict=True)]


def segment_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text without special tokens, each cut to `max_length` (no layout can use more)."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def fit_lengths(lengths: Sequence[int], budget: int) -> list[int]:
    """Cut segment lengths to a total budget, longest first (the shorter segment survives whole when it can)."""
    if sum(lengths) <= budget:
        return list(lengths)
    low, high = 0, max(lengths)
    while low < high:  # the largest cap c with sum(min(length, c)) <= budget
        middle = (low + high + 1) // 2
        if sum(min(length, middle) for length in lengths) <= budget:
            low = middle
        else:
            high = middle - 1
    kept = [min(length, low) for length in lengths]
    spare = budget - sum(kept)
    for index, length in enumerate(lengths):  # hand the remainder to the earliest capped segments
        if spare and length > kept[index]:
            kept[index] += 1
            spare -= 1
    return kept


def build_batch(
    tokenizer: PreTrainedTokenizerBase,
    segments: Sequence[Sequence[list[int]]],
    max_length: int,
    start: int | Sequence[int],
    *,
    with_token_types: bool,
    fill_to_max_with: int | None = None,
    end: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """Assemble `start seg_1 [SEP] seg_2 ... seg_n end` per example (`end` defaults to [SEP]; [SEP] is EOS where
    the tokenizer has no separator), truncated longest-first to `max_length`. `start` is one token id ([CLS], a
    ColBERT marker) or a list of them (a decoder's template prefix, possibly empty).

    Examples are padded on the right to the longest in the batch (attention 0). With `fill_to_max_with`, every
    example is instead filled up to exactly `max_length` with that token id, ATTENDED (attention 1): ColBERT's
    query augmentation with [MASK]. `token_type_ids` (0 for the first segment, 1 after) are returned only
    `with_token_types` (the backbone has segment embeddings and the tokenizer uses them).
    """
    sep_id = special_id(tokenizer, "sep_token", "eos_token")
    start_ids = [int(start)] if isinstance(start, int) else [int(token) for token in start]
    end_ids = [sep_id] if end is None else [int(token) for token in end]
    fill_id = pad_id(tokenizer)
    rows: list[list[int]] = []
    type_rows: list[list[int]] = []
    for example in segments:
        parts = [part for part in example if part]
        if not parts:
            parts = [[]]  # an empty text still gives `start end`
        fixed = len(start_ids) + len(parts) - 1 + len(end_ids)  # everything but the segments' own tokens
        if max_length < max(fixed, 1):
            raise ValueError(f"max_length must be at least {max(fixed, 1)} (the layout's own tokens), got {max_length}")
        kept = fit_lengths([len(part) for part in parts], max_length - fixed)
        ids, types = list(start_ids), [0] * len(start_ids)
        for index, (part, length) in enumerate(zip(parts, kept, strict=True)):
            closing = [sep_id] if index < len(parts) - 1 else end_ids
            ids.extend(part[:length] + closing)
            types.extend([min(index, 1)] * (length + len(closing)))
        rows.append(ids)
        type_rows.append(types)
    width = max_length if fill_to_max_with is not None else max((len(row) for row in rows), default=0)
    batch = len(rows)
    input_ids = torch.full((batch, width), fill_id if fill_to_max_with is None else fill_to_max_with)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    token_type_ids = torch.zeros((batch, width), dtype=torch.long)
    for row, (ids, types) in enumerate(zip(rows, type_rows, strict=True)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        token_type_ids[row, : len(types)] = torch.tensor(types)
        attention_mask[row, : width if fill_to_max_with is not None else len(ids)] = 1
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_token_types:
        out["token_type_ids"] = token_type_ids
    return out


def check_same_length(name_a: str, a: Sequence[object], name_b: str, b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {len(a)} and {len(b)}")
