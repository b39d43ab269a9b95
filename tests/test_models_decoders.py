"""Every decoder family (Qwen2, Qwen3, Llama, Mistral, Gemma, Gemma2, Gemma3-text) on tiny random models with tiny
tokenizers of the family's own kind (tests/decoder_models.py): the captured layers are `hidden_states[l + 1]` and the
last one `hidden_states[N]` (after the final norm), no hidden-states tuple and no key/value cache are built, DE and CE
read an intermediate block through the final norm and the last token, left and right padding give the same vectors
and scores, the cut to N blocks, strict loading of causal-LM checkpoints, bf16 weights stay bf16, the token layouts,
and ColBERT refused. Sentence-transformers folders and the export round trip: test_models_decoders_st.py; the LEAD
step: test_models_decoders_lead.py; the verbs: test_models_decoders_verbs.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from decoder_models import DECODER_NAMES, decoder_tokenizer, tiny_decoder
from family_models import PASSAGES, QUERIES, TITLES
from rounding import EPS32, assert_within
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lead_dist.models import BackboneWeightsError, load_model, model_from_config, student_from_teacher
from lead_dist.models.backbone import run_backbone
from lead_dist.models.families import FAMILIES

LAYERS = 3


def build(family: str, kind: str, layers: int = LAYERS, **options):
    config, tokenizer = tiny_decoder(family, layers)
    torch.manual_seed(7)
    return model_from_config(config, tokenizer, kind, **options).eval()


def test_every_decoder_family_is_a_decoder_row_of_the_table() -> None:
    assert {name for name, row in FAMILIES.items() if row.decoder} == set(DECODER_NAMES)
    for name in DECODER_NAMES:
        row = FAMILIES[name]
        assert row.pooling == "lasttoken" and row.final_norm == "norm" and row.kinds == ("de", "ce")
        config, _ = tiny_decoder(name, 2)  # the per-block lists the row cuts are the ones the config has
        assert set(row.per_layer_keys) == ({"layer_types"} & set(config.to_dict()))


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_captured_layers_are_hidden_states_of_those_layers(family: str) -> None:
    """Any order, the last layer included; the same computation in the same shapes, so equal to the bit. The last
    layer is `hidden_states[N]`, which transformers ties to `last_hidden_state` (after the final norm); the others are
    the raw block outputs."""
    model = build(family, "de")
    tokens = model.tokenize_passages(TITLES, PASSAGES, 40)
    assert len(set(tokens["attention_mask"].sum(1).tolist())) > 1  # rows of other lengths: padding is exercised
    with torch.no_grad():
        last, kept = run_backbone(model.backbone, tokens["input_ids"], tokens["attention_mask"], None, (2, 0, 1))
        hidden = model.backbone(**tokens, output_hidden_states=True).hidden_states
    assert len(hidden) == LAYERS + 1
    for states, layer in zip(kept, (2, 0, 1), strict=True):
        assert torch.equal(states, hidden[layer + 1]), (family, layer)
    assert torch.equal(last, hidden[LAYERS])
    assert not torch.allclose(model.backbone.norm(hidden[2]), hidden[2])  # the final norm is not the identity


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_no_hidden_states_tuple_no_cache_and_no_hook_left(family: str) -> None:
    model = build(family, "de")
    seen: dict[str, object] = {}
    handle = model.backbone.register_forward_pre_hook(lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        model(**model.tokenize_queries(QUERIES, 16), layers=[0, 1, 2])
    handle.remove()
    assert seen["output_hidden_states"] is False and seen["use_cache"] is False
    assert all(not module._forward_hooks for module in model.backbone.modules())


def last_real(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's state at its last attended position, found by a loop."""
    rows = []
    for row, row_mask in zip(states, mask, strict=True):
        positions = [i for i, m in enumerate(row_mask.tolist()) if m]
        rows.append(row[positions[-1]])
    return torch.stack(rows)


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_dual_encoder_reads_the_last_token_through_the_final_norm(family: str) -> None:
    """Layer l's vector is the last real token of norm(hidden_states[l + 1]); the last block's is the final vector,
    `hidden_states[N]`'s last token (the model's own norm). Same kernels, same shapes: exact."""
    model = build(family, "de", similarity="dot")
    tokens = model.tokenize_queries(QUERIES, 16)
    with torch.no_grad():
        reps = model(**tokens, layers=[0, 1, 2])
        hidden = model.backbone(**tokens, output_hidden_states=True).hidden_states
        mask = tokens["attention_mask"]
        for k in (0, 1):
            assert torch.equal(reps.layers[k], last_real(model.backbone.norm(hidden[k + 1]), mask)), (family, k)
        assert torch.equal(reps.final, last_real(hidden[LAYERS], mask))
    assert torch.equal(reps.layers[2], reps.final)  # the drawn last block is scored as the final score (issue 19)


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_cross_encoder_head_reads_every_layer_at_the_last_token(family: str) -> None:
    model = build(family, "ce")
    pairs = model.tokenize_pairs(QUERIES, TITLES, PASSAGES, 56)
    with torch.no_grad():
        final, per_layer = model(**pairs, layers=[0, 1, 2])
        hidden = model.backbone(**pairs, output_hidden_states=True).hidden_states
        mask = pairs["attention_mask"]
        w, b = model.head.weight[0], model.head.bias[0]
        for k in (0, 1):
            expected = last_real(model.backbone.norm(hidden[k + 1]), mask) @ w + b
            torch.testing.assert_close(per_layer[k], expected, rtol=0, atol=0)
        torch.testing.assert_close(final, last_real(hidden[LAYERS], mask) @ w + b, rtol=0, atol=0)
    assert torch.equal(per_layer[2], final)  # a CE's last-block score IS its final score


def left_padded(tokens: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """The same rows with their padding moved to the left (as a left-padding tokenizer gives them)."""
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    moved_ids, moved_mask = torch.full_like(ids, pad_id), torch.zeros_like(mask)
    width = ids.shape[1]
    for row in range(ids.shape[0]):
        count = int(mask[row].sum())
        moved_ids[row, width - count :] = ids[row, :count]
        moved_mask[row, width - count :] = 1
    return {"input_ids": moved_ids, "attention_mask": moved_mask}


def padding_bound(values: torch.Tensor, scale: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """Left and right padding run the same text at rotary positions shifted by the padding: the attention scores are
    the same in exact arithmetic (they depend on relative positions only), but every angle m * theta is rounded at
    another m (relative error u, absolute up to length * u) and every inner product is summed in another blocking.
    Per block that is about (sqrt(2 * width) + length) u relative; over the blocks, times the lambda = 3 of
    tests/rounding.py, relative to `scale` (the size of the quantity compared)."""
    unit = EPS32 / 2
    relative = 3 * LAYERS * (math.sqrt(2 * width) + length) * unit
    return (relative * scale).expand_as(values)


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_left_and_right_padding_give_the_same_vectors_and_scores(family: str) -> None:
    de = build(family, "de", similarity="dot")
    tokens = de.tokenize_passages(TITLES, PASSAGES, 40)
    assert len(set(tokens["attention_mask"].sum(1).tolist())) > 1
    moved = left_padded(tokens, de.tokenizer.pad_token_id or 0)
    assert not torch.equal(moved["attention_mask"], tokens["attention_mask"])
    with torch.no_grad():
        right, left = de(**tokens, layers=[0, 1]), de(**moved, layers=[0, 1])
    length = tokens["input_ids"].shape[1]
    for ours, theirs in ((left.final, right.final), (left.layers, right.layers)):
        norms = theirs.norm(dim=-1, keepdim=True)
        assert_within(ours, theirs, padding_bound(theirs, norms, de.hidden_size, length), f"{family} DE")

    ce = build(family, "ce")
    pairs = ce.tokenize_pairs(QUERIES, TITLES, PASSAGES, 56)
    with torch.no_grad():
        (right_final, right_layers), (left_final, left_layers) = (
            ce(**pairs, layers=[0]),
            ce(**left_padded(pairs, ce.tokenizer.pad_token_id or 0), layers=[0]),
        )
        states = last_real(ce.backbone(**pairs).last_hidden_state, pairs["attention_mask"])
    size = (states.abs() @ ce.head.weight[0].abs()) + ce.head.bias.abs()  # sum |w_i h_i| + |b|
    length = pairs["input_ids"].shape[1]
    assert_within(left_final, right_final, padding_bound(right_final, size, ce.hidden_size, length), f"{family} CE")
    assert_within(left_layers, right_layers, padding_bound(right_layers, 10 * size, ce.hidden_size, length), family)


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_cut_to_the_first_blocks_keeps_their_states_and_round_trips(family: str, tmp_path) -> None:
    teacher = build(family, "de")
    student = student_from_teacher(teacher, 2)
    row = FAMILIES[family]
    assert student.num_layers == 2 and student.backbone.config.num_hidden_layers == 2
    for key in row.per_layer_keys:  # the attention type of each kept block
        assert getattr(student.backbone.config, key) == getattr(teacher.backbone.config, key)[:2]
    tokens = teacher.tokenize_queries(QUERIES, 16)
    with torch.no_grad():
        hidden = teacher.backbone(**tokens, output_hidden_states=True).hidden_states
        reps = student(**tokens, layers=[0, 1])
        mask = tokens["attention_mask"]
        # the student's block 0 is read as the teacher's; its last layer is the teacher's block 1, then the norm
        assert torch.equal(reps.layers[0], last_real(teacher.backbone.norm(hidden[1]), mask))
        assert torch.equal(reps.final, last_real(teacher.backbone.norm(hidden[2]), mask))
    student.save(tmp_path / "student")
    reloaded = load_model(tmp_path / "student").eval()
    saved, held = reloaded.backbone.config.to_dict(), student.backbone.config.to_dict()
    assert {k: v for k, v in saved.items() if k != "_name_or_path"} == {
        k: v for k, v in held.items() if k != "_name_or_path"
    }
    with torch.no_grad():
        again = reloaded(**tokens, layers=[0, 1])
    assert torch.equal(again.layers, reps.layers) and torch.equal(again.final, reps.final)


@pytest.mark.parametrize("family", ["qwen2", "llama", "gemma2"])
def test_causal_lm_checkpoint_loads_strictly_with_its_head_ignored(family: str, tmp_path) -> None:
    """A ForCausalLM checkpoint (`model.` prefixed keys, an untied `lm_head`) loads; `lm_head.*` is ignored and
    reported; an unknown backbone key and a sequence-classification `score.*` head are errors naming them."""
    config, tokenizer = tiny_decoder(family, 2, tie_word_embeddings=False)
    torch.manual_seed(3)
    folder = tmp_path / family
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    stored = load_file(str(folder / "model.safetensors"))
    assert "lm_head.weight" in stored
    model = load_model(folder, kind="de")
    assert model.ignored_keys == ["lm_head.weight"]
    torch.testing.assert_close(model.backbone.embed_tokens.weight, stored["model.embed_tokens.weight"], rtol=0, atol=0)

    stored["model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(stored, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackboneWeightsError, match=r"unexpected.*layers\.0\.extra\.weight"):
        load_model(folder, kind="de")

    reranker = tmp_path / f"{family}-seqcls"
    seqcls_config, _ = tiny_decoder(family, 2, num_labels=1)
    AutoModelForSequenceClassification.from_config(seqcls_config).save_pretrained(reranker, safe_serialization=True)
    tokenizer.save_pretrained(reranker)
    with pytest.raises(BackboneWeightsError, match=r"unexpected.*score\.weight"):
        load_model(reranker, kind="ce")


@pytest.mark.parametrize("kind", ["de", "ce"])
def test_a_bf16_checkpoint_stays_bf16(kind: str, tmp_path) -> None:
    """No silent upcast: a bf16 folder loads with bf16 weights (the CE head too) and runs in bf16 without autocast;
    a config asking for bf16 builds bf16."""
    config, tokenizer = tiny_decoder("qwen3", 2, dtype="bfloat16")
    torch.manual_seed(5)
    built = model_from_config(config, tokenizer, kind)
    assert {p.dtype for p in built.parameters()} == {torch.bfloat16}
    built.save(tmp_path / "bf16")
    assert {t.dtype for t in load_file(str(tmp_path / "bf16" / "model.safetensors")).values()} == {torch.bfloat16}
    model = load_model(tmp_path / "bf16").eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        if kind == "de":
            out = model(**model.tokenize_queries(QUERIES, 16), layers=[0]).final
        else:
            out = model(**model.tokenize_pairs(QUERIES, TITLES, PASSAGES, 56), layers=[0])[0]
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())


def tokens_of(model, batch, row: int = 0) -> list[str]:
    ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
    return model.tokenizer.convert_ids_to_tokens(ids.tolist())


def test_layouts_follow_each_tokenizer_template() -> None:
    """Written by hand from the tiny vocabularies: Llama puts <s> before a text and nothing after it; the Qwen3
    embedder tokenizer appends <|endoftext|>; a prompt comes before the query; a CE pair is `[BOS] q EOS title EOS text
    EOS` (Qwen: no BOS); all padded on the right, whatever the tokenizer's padding_side ("left" for these three)."""
    llama = build("llama", "de", query_prompt="why is ")
    assert llama.tokenizer.padding_side == "left"
    query = llama.tokenize_queries(["sea tides", "how do tides form"], 16)
    assert tokens_of(llama, query) == ["<s>", "\u2581why", "\u2581is", "\u2581sea", "\u2581tides"]
    assert query["attention_mask"][0].tolist()[:5] == [1] * 5 and query["attention_mask"][0, -1] == 0  # right pad
    assert set(query) == {"input_ids", "attention_mask"}
    qwen3 = build("qwen3", "de")
    assert tokens_of(qwen3, qwen3.tokenize_passages(["Tides"], ["the moon"], 16))[-1] == "<|endoftext|>"
    assert tokens_of(qwen3, qwen3.tokenize_queries(["sea"], 16))[0] != "<|endoftext|>"  # no BOS
    gemma_ce = build("gemma", "ce")
    pair = tokens_of(gemma_ce, gemma_ce.tokenize_pairs(["sea tides"], ["Tides"], ["the moon"], 32))
    assert pair[0] == "<bos>" and pair[-1] == "<eos>" and pair.count("<eos>") == 3
    qwen_ce = build("qwen2", "ce")
    pair = tokens_of(qwen_ce, qwen_ce.tokenize_pairs(["sea"], [""], ["the moon"], 32))  # no title: one EOS less
    assert pair.count("<|endoftext|>") == 2 and pair[-1] == "<|endoftext|>" and pair[0] != "<|endoftext|>"
    # truncation keeps the template: the text is cut, the EOS stays
    cut = tokens_of(qwen3, qwen3.tokenize_passages([""], [PASSAGES[0]], 6))
    assert len(cut) == 6 and cut[-1] == "<|endoftext|>"


def test_append_eos_option_makes_the_template_end_with_eos() -> None:
    llama = build("llama", "de", append_eos=True)
    assert tokens_of(llama, llama.tokenize_queries(["sea tides"], 16)) == ["<s>", "\u2581sea", "\u2581tides", "</s>"]
    assert llama.tokenizer("sea")["input_ids"][-1] == llama.tokenizer.eos_token_id  # the tokenizer carries the rule
    assert decoder_tokenizer("llama")("sea")["input_ids"][-1] != llama.tokenizer.eos_token_id  # on a copy
    assert build("qwen3", "de", append_eos=True).tokenizer is decoder_tokenizer("qwen3")  # already appends: unchanged
    with pytest.raises(ValueError, match="'append_eos' applies to decoder backbones"):
        from family_models import tiny

        model_from_config(*tiny("bert", 1), "de", append_eos=True)


@pytest.mark.parametrize("family", ["qwen3", "gemma"])
def test_colbert_is_refused_on_a_decoder_with_one_line(family: str) -> None:
    with pytest.raises(ValueError, match=rf"model kind 'cb' is not offered for .* \(model_type '{family}'\).*de, ce"):
        build(family, "cb")


def test_cosine_scores_of_a_decoder_dual_encoder_are_bounded_by_the_scale() -> None:
    model = build("mistral", "de", similarity="cos", layer_similarity="cos")
    with torch.no_grad():
        q = model(**model.tokenize_queries(QUERIES, 16), layers=[0, 1, 2])
        p = model(**model.tokenize_passages(TITLES, PASSAGES, 40), layers=[0, 1, 2])
    final, per_layer = model.score(q, p)
    assert final.abs().max() <= model.scale + 1e-4 and per_layer.abs().max() <= model.scale + 1e-4
    torch.testing.assert_close(F.normalize(q.final, dim=-1), q.final)
