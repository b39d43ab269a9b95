"""Only requested layers are kept, and they equal `output_hidden_states=True` at those indices (several backbones)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, DistilBertConfig, GPT2Config, RobertaConfig

from lead_dist.models import model_from_config
from lead_dist.models.backbone import blocks_of


def _three_layer_bert() -> BertConfig:
    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64
    )


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def _reference_states(model, tokens):
    with torch.no_grad():
        return model.backbone(**tokens, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("layers", [(0, 2), (1,), (0, 1, 2), ()])
def test_colbert_keeps_exactly_the_requested_raw_layers(tokenizer, layers) -> None:
    torch.manual_seed(0)
    model = model_from_config(_three_layer_bert(), tokenizer, "cb").eval()
    tokens = model.tokenize_passages(["a title", ""], ["some text here", "other text"], 24)
    with torch.no_grad():
        reps = model(**tokens, layers=layers)
    hidden = _reference_states(model, tokens)
    assert reps.layers.shape[0] == len(layers)
    for k, layer in enumerate(layers):
        torch.testing.assert_close(reps.layers[k], hidden[layer + 1], atol=1e-6, rtol=1e-5)


def test_dual_encoder_layers_are_pooled_states_of_those_layers(tokenizer) -> None:
    torch.manual_seed(0)
    model = model_from_config(_three_layer_bert(), tokenizer, "de", pooling="cls").eval()
    tokens = model.tokenize_queries(["first query", "second"], 16)
    with torch.no_grad():
        reps = model(**tokens, layers=[2, 0])  # any order is kept as given
    hidden = _reference_states(model, tokens)
    assert reps.layers.shape == (2, 2, 32)
    torch.testing.assert_close(reps.layers[0], hidden[3][:, 0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(reps.layers[1], hidden[1][:, 0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(reps.final, hidden[3][:, 0], atol=1e-6, rtol=1e-5)


def test_no_hidden_states_tuple_and_no_hooks_left(tokenizer) -> None:
    """The backbone is run with output_hidden_states=False, and the capture hooks are removed afterwards."""
    model = model_from_config(_three_layer_bert(), tokenizer, "de").eval()
    seen: dict[str, object] = {}

    def record(_module, _args, kwargs):
        seen.update(kwargs)

    handle = model.backbone.register_forward_pre_hook(record, with_kwargs=True)
    tokens = model.tokenize_queries(["q"], 8)
    with torch.no_grad():
        model(**tokens, layers=[0, 1])
    handle.remove()
    assert seen["output_hidden_states"] is False
    assert all(len(block._forward_hooks) == 0 for block in blocks_of(model.backbone))


def test_out_of_range_layer_is_a_clear_error(tokenizer) -> None:
    model = model_from_config(_three_layer_bert(), tokenizer, "de")
    with pytest.raises(ValueError, match=r"layers \[3\] are out of range.*0\.\.2"):
        model(**model.tokenize_queries(["q"], 8), layers=[0, 3])


@pytest.mark.parametrize(
    "config",
    [
        DistilBertConfig(vocab_size=30522, dim=32, n_layers=3, n_heads=2, hidden_dim=64),
        RobertaConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            pad_token_id=0,
        ),
    ],
    ids=["distilbert", "roberta"],
)
def test_other_bert_like_backbones(tokenizer, config) -> None:
    torch.manual_seed(0)
    model = model_from_config(config, tokenizer, "cb").eval()
    tokens = model.tokenize_queries(["a query"], 8)
    if config.model_type == "distilbert":
        assert "token_type_ids" not in tokens  # DistilBERT has no segment embeddings
        with pytest.raises(ValueError, match="takes no token_type_ids"):
            model(**tokens, token_type_ids=torch.zeros_like(tokens["input_ids"]))
    with torch.no_grad():
        reps = model(**tokens, layers=[0, 2])
    hidden = _reference_states(model, tokens)
    assert model.num_layers == 3
    torch.testing.assert_close(reps.layers[0], hidden[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(reps.layers[1], hidden[3], atol=1e-6, rtol=1e-5)


def test_unsupported_backbone_is_refused(tokenizer) -> None:
    config = GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2)
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported.*bert"):
        model_from_config(config, tokenizer, "de")
