"""Token layouts of the families that are not BERT's: special tokens, ColBERT markers, cross-encoder pairs, token types.

One layout for every family, written with the family's own tokens (models/README.md, "Families"): a text is
`first text sep`, a ColBERT query / passage starts with its marker instead of `first`, a cross-encoder pair is
`first query sep title sep text sep` with single separators (not RoBERTa's and MPNet's doubled `</s></s>` pair
template: a lead_dist cross encoder always learns its head on lead_dist's layout). Token types only where the
backbone has segment embeddings. Expected tokens are written by hand from the tiny vocabularies of
tests/family_models.py.
"""

from __future__ import annotations

import logging

import pytest
from family_models import tiny

from lead_dist.models import model_from_config


def tokens_of(model, batch) -> list[str]:
    return model.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())


def build(family: str, kind: str, **overrides):
    config, tokenizer = tiny(family, 1, **overrides)
    return model_from_config(config, tokenizer, kind)


@pytest.mark.parametrize(
    ("family", "first", "sep", "mask", "markers"),
    [
        ("mpnet", "<s>", "</s>", "<mask>", ("[unused1]", "[unused2]")),
        ("modernbert", "[CLS]", "[SEP]", "[MASK]", ("[unused1]", "[unused2]")),
    ],
)
def test_layouts_use_the_family_tokens(family, first, sep, mask, markers) -> None:
    de, cb, ce = (build(family, kind) for kind in ("de", "cb", "ce"))
    # words as the tiny vocabularies split them: WordPiece (MPNet) lower-cases, the byte-level BPE (ModernBERT) marks
    # a leading space with "Ġ" and starts each separately tokenised segment without one
    sea, tides = (["sea"], ["tides"]) if family == "mpnet" else (["s", "ea"], ["Ġtides"])
    title = ["tides"] if family == "mpnet" else ["Tides"]
    the_moon = ["the", "moon"] if family == "mpnet" else ["th", "e", "Ġmoon"]
    query = de.tokenize_queries(["sea tides"], 16)
    assert tokens_of(de, query) == [first, *sea, *tides, sep]
    passage = de.tokenize_passages(["Tides"], ["the moon"], 16)  # one string, "title text"
    assert tokens_of(de, passage) == [first, *title, *(["the", "moon"] if family == "mpnet" else ["Ġthe", "Ġmoon"]),
                                      sep]  # fmt: skip
    assert tokens_of(cb, cb.tokenize_queries(["sea tides"], 8)) == [markers[0], *sea, *tides, sep] + [mask] * (
        8 - 2 - len(sea) - len(tides)
    )
    assert tokens_of(cb, cb.tokenize_passages(["Tides"], ["the moon"], 16)) == [markers[1], *title, sep, *the_moon, sep]
    pair = ce.tokenize_pairs(["sea tides"], ["Tides"], ["the moon"], 32)
    assert tokens_of(ce, pair) == [first, *sea, *tides, sep, *title, sep, *the_moon, sep]
    for batch in (query, passage, pair):  # neither family has segment embeddings
        assert set(batch) == {"input_ids", "attention_mask"}


def test_deberta_v3_layout_has_no_token_types_and_colbert_falls_back_to_cls(caplog) -> None:
    """DeBERTa-v3 checkpoints have type_vocab_size 0 (token types would be ignored: none are made), and its
    vocabulary has no [unusedN]: both ColBERT markers fall back to [CLS], said in the log."""
    ce = build("deberta-v2", "ce")
    pair = ce.tokenize_pairs(["sea tides"], ["Tides"], ["the moon"], 32)
    spelled_title = ["\u2581", "T", "i", "d", "e", "s"]  # the unigram has no "▁Tides": spelled out
    assert tokens_of(ce, pair) == ["[CLS]", "\u2581sea", "\u2581tides", "[SEP]", *spelled_title, "[SEP]",
                                   "\u2581the", "\u2581moon", "[SEP]"]  # fmt: skip
    assert set(pair) == {"input_ids", "attention_mask"}
    with caplog.at_level(logging.WARNING, logger="lead_dist.models.colbert"):
        cb = build("deberta-v2", "cb")
    assert (cb.query_marker, cb.passage_marker) == ("[CLS]", "[CLS]")
    assert sum("falling back to '[CLS]'" in record.getMessage() for record in caplog.records) == 2
    assert tokens_of(cb, cb.tokenize_queries(["sea tides"], 6)) == ["[CLS]", "\u2581sea", "\u2581tides", "[SEP]",
                                                                   "[MASK]", "[MASK]"]  # fmt: skip


def test_deberta_v2_layout_has_token_types_after_the_query() -> None:
    """With segment embeddings (type_vocab_size 2, as DeBERTa-v2 checkpoints): 0 up to the query's [SEP], then 1."""
    ce = build("deberta-v2", "ce", type_vocab_size=2)
    pair = ce.tokenize_pairs(["sea tides"], ["Tides"], ["the moon"], 32)
    assert pair["token_type_ids"][0].tolist() == [0] * 4 + [1] * 10
    de = build("deberta-v2", "de", type_vocab_size=2)
    assert de.tokenize_queries(["sea tides"], 8)["token_type_ids"].tolist() == [[0, 0, 0, 0]]
