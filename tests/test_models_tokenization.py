"""Token layouts of each kind (markers, [MASK] augmentation, pair layout), truncation, marker fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertTokenizer

from lead_dist.models import model_from_config
from lead_dist.models.tokenization import fit_lengths

CONFIG = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def ids(tokenizer):
    def convert(*tokens: str) -> list[int]:
        found = tokenizer.convert_tokens_to_ids(list(tokens))
        assert tokenizer.unk_token_id not in found, tokens  # every expected token is a real vocabulary entry
        return found

    return convert


def test_fit_lengths_cuts_longest_first() -> None:
    assert fit_lengths([2, 3], 10) == [2, 3]
    assert fit_lengths([10, 3], 8) == [5, 3]
    assert fit_lengths([10, 10], 7) == [4, 3]
    assert fit_lengths([1, 9, 6], 9) == [1, 4, 4]


def test_empty_batch_gives_empty_tensors(tokenizer) -> None:
    model = model_from_config(CONFIG, tokenizer, "de")
    empty = model.tokenize_passages([], [], 16)
    assert empty["input_ids"].shape == (0, 0) and empty["attention_mask"].shape == (0, 0)


def test_dual_encoder_layouts(tokenizer, ids) -> None:
    model = model_from_config(CONFIG, tokenizer, "de")
    queries = model.tokenize_queries(["hello world", "cat"], 16)
    assert queries["input_ids"].tolist() == [
        ids("[CLS]", "hello", "world", "[SEP]"),
        ids("[CLS]", "cat", "[SEP]", "[PAD]"),
    ]
    assert queries["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # one string "title text", as sentence-transformers reads the exported folder (no title: just the text)
    passages = model.tokenize_passages(["cat", ""], ["hello world", "world"], 16)
    assert passages["input_ids"].tolist() == [
        ids("[CLS]", "cat", "hello", "world", "[SEP]"),
        ids("[CLS]", "world", "[SEP]", "[PAD]", "[PAD]"),
    ]
    assert passages["token_type_ids"].tolist() == [[0] * 5, [0] * 5]
    # Truncation cuts the end and keeps the [SEP]: 6 tokens hold [CLS], the title, 3 text words and [SEP].
    cut = model.tokenize_passages(["cat"], ["hello world hello world"], 6)
    assert cut["input_ids"].tolist() == [ids("[CLS]", "cat", "hello", "world", "hello", "[SEP]")]


def test_colbert_markers_and_mask_augmentation(tokenizer, ids) -> None:
    model = model_from_config(CONFIG, tokenizer, "cb")
    queries = model.tokenize_queries(["hello world", "cat"], 6)
    assert queries["input_ids"].tolist() == [
        ids("[unused1]", "hello", "world", "[SEP]", "[MASK]", "[MASK]"),
        ids("[unused1]", "cat", "[SEP]", "[MASK]", "[MASK]", "[MASK]"),
    ]
    assert queries["attention_mask"].tolist() == [[1] * 6, [1] * 6]  # [MASK] fill is attended
    passages = model.tokenize_passages(["", "cat"], ["world", "hello"], 16)
    assert passages["input_ids"].tolist() == [
        ids("[unused2]", "world", "[SEP]", "[PAD]", "[PAD]"),
        ids("[unused2]", "cat", "[SEP]", "hello", "[SEP]"),
    ]
    plain = model_from_config(CONFIG, tokenizer, "cb", query_augmentation=False)
    no_aug = plain.tokenize_queries(["hello world", "cat"], 6)
    assert no_aug["input_ids"].tolist()[1] == ids("[unused1]", "cat", "[SEP]", "[PAD]")
    assert no_aug["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with torch.no_grad():
        reps = plain(**no_aug)
    assert torch.equal(reps.mask, no_aug["attention_mask"])  # query padding does not count without augmentation


def test_cross_encoder_pair_layout(tokenizer, ids) -> None:
    model = model_from_config(CONFIG, tokenizer, "ce")
    pairs = model.tokenize_pairs(["cat", "cat"], ["hello", ""], ["world", "world"], 16)
    assert pairs["input_ids"].tolist() == [
        ids("[CLS]", "cat", "[SEP]", "hello", "[SEP]", "world", "[SEP]"),
        ids("[CLS]", "cat", "[SEP]", "world", "[SEP]", "[PAD]", "[PAD]"),
    ]
    assert pairs["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="queries and texts must have the same length"):
        model.tokenize_pairs(["a", "b"], ["", ""], ["x"], 16)


def test_colbert_marker_fallback_is_documented_and_logged(caplog) -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "title"]
    small = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)})
    config = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    with caplog.at_level(logging.WARNING, logger="lead_dist"):
        model = model_from_config(config, small, "cb")
    assert (model.query_marker, model.passage_marker) == ("[CLS]", "[CLS]")
    assert sum("not in the vocabulary" in record.getMessage() for record in caplog.records) == 2
    assert model.tokenize_queries(["hello"], 4)["input_ids"].tolist() == [[2, 5, 3, 4]]
    chosen = model_from_config(config, small, "cb", query_marker="title")
    assert chosen.tokenize_queries(["hello"], 4)["input_ids"].tolist() == [[7, 5, 3, 4]]
