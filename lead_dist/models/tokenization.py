"""Build model inputs from raw text with an explicit token layout.

Models assemble their own layouts (`[CLS] q [SEP]`, a DE passage `[CLS] title text [SEP]`, ColBERT markers, [MASK]
augmentation) from segment token ids, so the layout is visible here rather than hidden in a tokenizer's pair logic.
An empty segment (e.g. a passage without title) is left out together with its [SEP], so a title-less passage is
`[CLS] text [SEP]` and tokenizes exactly like the same text given alone.
"""

from __future__ import annotations

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
    first_token_id: int,
    *,
    with_token_types: bool,
    fill_to_max_with: int | None = None,
) -> dict[str, Tensor]:
    """Assemble `[first] seg_1 [SEP] seg_2 [SEP] ...` per example, truncated longest-first to `max_length`.

    Examples are padded to the longest in the batch with [PAD] (attention 0). With `fill_to_max_with`, every
    example is instead filled up to exactly `max_length` with that token id, ATTENDED (attention 1): ColBERT's
    query augmentation with [MASK]. `token_type_ids` (0 for the first segment, 1 after) are returned only
    `with_token_types` (the backbone has segment embeddings and the tokenizer uses them).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (start token and [SEP]), got {max_length}")
    sep_id = special_id(tokenizer, "sep_token", "eos_token")
    pad_id = special_id(tokenizer, "pad_token")
    rows: list[list[int]] = []
    type_rows: list[list[int]] = []
    for example in segments:
        parts = [part for part in example if part]
        if not parts:
            parts = [[]]  # an empty text still gives `[first] [SEP]`
        kept = fit_lengths([len(part) for part in parts], max_length - 1 - len(parts))
        ids, types = [first_token_id], [0]
        for index, (part, length) in enumerate(zip(parts, kept, strict=True)):
            ids.extend(part[:length] + [sep_id])
            types.extend([min(index, 1)] * (length + 1))
        rows.append(ids)
        type_rows.append(types)
    width = max_length if fill_to_max_with is not None else max((len(row) for row in rows), default=0)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id if fill_to_max_with is None else fill_to_max_with)
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
