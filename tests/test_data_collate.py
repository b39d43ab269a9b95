"""collate_for with the real model classes (tiny random BERT + the MiniLM tokenizer): layout, dynamic padding,
length caps, ColBERT query augmentation, cross-encoder pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lead_dist.data.collate import collate_for
from lead_dist.models import load_model


def make_examples(num_negatives: int) -> list[dict]:
    examples = []
    for q in range(3):
        examples.append(
            {
                "qid": f"q{q}",
                "query": f"what about topic {q}" + " and more" * q,
                "pos_id": f"p{q}",
                "pos_title": f"title{q}",
                "pos_text": f"positive text {q}",
                "neg_ids": [f"n{q}_{k}" for k in range(num_negatives)],
                "neg_titles": ["" if k == 0 else f"negtitle {q} {k}" for k in range(num_negatives)],
                "neg_texts": [f"negative {q} {k}" + " filler" * (k * 5) for k in range(num_negatives)],
            }
        )
    return examples


def decoded(tokenizer, tokens: dict, row: int) -> str:
    ids = tokens["input_ids"][row][tokens["attention_mask"][row].bool()]
    return tokenizer.decode(ids)


@pytest.fixture(scope="module")
def models(tiny_bert_dir: Path) -> dict:
    return {kind: load_model(tiny_bert_dir, kind=kind) for kind in ("de", "cb", "ce")}


def test_dual_encoder_layout_padding_and_caps(models: dict) -> None:
    model = models["de"]
    examples = make_examples(num_negatives=2)
    batch = collate_for(model, examples, query_max_length=8, passage_max_length=12)
    queries, passages = batch["queries"], batch["passages"]
    assert queries["input_ids"].shape[0] == 3 and passages["input_ids"].shape[0] == 9
    # Passage row q * 3 + j is query q's positive (j = 0) or its negative j - 1.
    tokenizer = model.tokenizer
    # one string "title text", as sentence-transformers reads an exported DE
    assert decoded(tokenizer, passages, 3) == "[CLS] title1 positive text 1 [SEP]"
    assert decoded(tokenizer, passages, 4) == "[CLS] negative 1 0 [SEP]"  # empty title: just the text
    assert decoded(tokenizer, queries, 2) == "[CLS] what about topic 2 and more [SEP]"  # 8 tokens with [CLS], [SEP]
    # Dynamic padding: the batch is as long as its longest row, never longer than the cap.
    for tokens, cap in ((queries, 8), (passages, 12)):
        lengths = tokens["attention_mask"].sum(dim=1)
        assert tokens["input_ids"].shape[1] == int(lengths.max()) <= cap
    assert int(passages["attention_mask"][5].sum()) == 12  # the long negative reaches the cap exactly
    short = collate_for(model, make_examples(num_negatives=1)[:1], query_max_length=32, passage_max_length=64)
    assert short["passages"]["input_ids"].shape[1] == int(short["passages"]["attention_mask"].sum(dim=1).max())


def test_colbert_queries_are_mask_augmented_to_the_cap(models: dict) -> None:
    model = models["cb"]
    batch = collate_for(model, make_examples(num_negatives=1), query_max_length=10, passage_max_length=16)
    queries = batch["queries"]
    assert queries["input_ids"].shape == (3, 10)
    mask_id = model.tokenizer.mask_token_id
    row = queries["input_ids"][0].tolist()
    text = decoded(model.tokenizer, queries, 0).split()
    assert text[0] == "[unused1]" and text[1:6] == ["what", "about", "topic", "0", "[SEP]"]
    assert row[6:] == [mask_id] * 4  # [MASK] padding up to the cap, attended
    assert decoded(model.tokenizer, batch["passages"], 2).startswith("[unused2] title1 [SEP]")
    assert batch["passages"]["input_ids"].shape[0] == 6


def test_cross_encoder_pairs_follow_the_group_layout(models: dict) -> None:
    model = models["ce"]
    examples = make_examples(num_negatives=2)
    batch = collate_for(model, examples, query_max_length=6, passage_max_length=10)
    pairs = batch["pairs"]
    assert set(batch) == {"pairs"} and pairs["input_ids"].shape[0] == 9
    assert pairs["input_ids"].shape[1] <= 16  # pair cap = query cap + passage cap
    assert decoded(model.tokenizer, pairs, 0) == "[CLS] what about topic 0 [SEP] title0 [SEP] positive text 0 [SEP]"
    assert decoded(model.tokenizer, pairs, 7) == "[CLS] what about topic 2 and more and more [SEP] negative 2 0 [SEP]"
    row8 = decoded(model.tokenizer, pairs, 8)  # more tokens than the 16-token pair cap: the model cuts segments
    assert row8.startswith("[CLS] what about topic 2") and "[SEP] negtitle" in row8 and "negative 2 1" in row8
    assert int(pairs["attention_mask"][8].sum()) == 16


def test_unequal_groups_and_unknown_kinds_are_refused(models: dict) -> None:
    examples = make_examples(num_negatives=2)
    examples[1] = {**examples[1], "neg_ids": [], "neg_titles": [], "neg_texts": []}
    with pytest.raises(ValueError, match=r"different numbers of negatives \[0, 2\]"):
        collate_for(models["de"], examples, 8, 8)

    class Other(torch.nn.Module):
        kind = "xx"

    with pytest.raises(ValueError, match="model kind 'xx'"):
        collate_for(Other(), make_examples(0), 8, 8)
