"""Every backbone family, on tiny random models with tiny tokenizers of the family's own kind (tests/family_models.py):
the captured layers are `hidden_states[l + 1]`, no hidden-states tuple is built, the cut to N blocks, strict loading
of the family's own checkpoints, and the export round trip through sentence-transformers.
The LEAD step across families is in test_models_families_lead.py; token layouts in test_models_families_layout.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_models import FAMILY_NAMES, PASSAGES, QUERIES, TITLES, tiny
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import DebertaV2ForMaskedLM, ModernBertForMaskedLM, MPNetForMaskedLM

from lead_dist.models import BackboneWeightsError, load_model, model_from_config, student_from_teacher
from lead_dist.models.backbone import blocks_of
from lead_dist.models.families import FAMILIES
from lead_dist.models.tokenization import join_title

# DeBERTa as v2 checkpoints have it: segment embeddings and the convolution after block 0 (layer 0 is its output).
DEBERTA_V2_LAYOUT = {"type_vocab_size": 2, "conv_kernel_size": 3, "position_biased_input": True}
CASES = {name: (name, {}) for name in FAMILY_NAMES} | {"deberta-v2-conv": ("deberta-v2", DEBERTA_V2_LAYOUT)}


def build(case: str, kind: str, layers: int = 3, **options):
    family, overrides = CASES[case]
    config, tokenizer = tiny(family, layers, **overrides)
    torch.manual_seed(7)
    return model_from_config(config, tokenizer, kind, **options).eval()


def test_every_family_in_the_table_is_tested() -> None:
    assert set(FAMILY_NAMES) == set(FAMILIES)


@pytest.mark.parametrize("case", CASES)
def test_captured_layers_are_hidden_states_of_those_layers(case: str) -> None:
    """Raw states (ColBERT keeps them unpooled) of a padded batch, any order, the last layer included; the same
    computation in the same shapes, so equal to the bit."""
    model = build(case, "cb")
    tokens = model.tokenize_passages(TITLES, PASSAGES, 40)
    assert len(set(tokens["attention_mask"].sum(1).tolist())) > 1  # rows of other lengths: padding is exercised
    with torch.no_grad():
        reps = model(**tokens, layers=[2, 0, 1])
        hidden = model.backbone(**tokens, output_hidden_states=True).hidden_states
    assert len(hidden) == 4 and reps.layers.shape == (3, *hidden[1].shape)
    for k, layer in enumerate((2, 0, 1)):
        assert torch.equal(reps.layers[k], hidden[layer + 1]), (case, layer)
    # the final representation is made from the last layer's states (here: L2-normalised, no projection)
    assert torch.equal(reps.final, F.normalize(hidden[3], dim=-1))


def test_deberta_v2_layout_layer_zero_is_after_the_convolution() -> None:
    """Not vacuous: the convolution changes block 0's output, and the capture takes the changed one."""
    model = build("deberta-v2-conv", "cb")
    assert model.backbone.encoder.conv is not None and model.uses_token_types
    tokens = model.tokenize_passages(TITLES, PASSAGES, 40)
    raw: list[torch.Tensor] = []
    handle = blocks_of(model.backbone)[0].register_forward_hook(lambda _m, _i, out: raw.append(out[0]))
    with torch.no_grad():
        reps = model(**tokens, layers=[0])
    handle.remove()
    assert not torch.allclose(raw[0], reps.layers[0])


@pytest.mark.parametrize("case", CASES)
def test_no_hidden_states_tuple_is_built_and_no_hook_is_left(case: str) -> None:
    model = build(case, "de")
    # DeBERTa-v2's model forward always collects every layer: lead_dist runs its encoder itself, so look there.
    called = model.backbone.encoder if CASES[case][0] == "deberta-v2" else model.backbone
    seen: dict[str, object] = {}
    handle = called.register_forward_pre_hook(lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        model(**model.tokenize_queries(QUERIES, 16), layers=[0, 1, 2])
    handle.remove()
    assert seen["output_hidden_states"] is False
    assert all(not module._forward_hooks for module in model.backbone.modules())


@pytest.mark.parametrize("case", CASES)
def test_cut_to_the_first_blocks_keeps_their_states_and_round_trips(case: str, tmp_path) -> None:
    teacher = build(case, "cb")
    student = student_from_teacher(teacher, 2, kind="cb")
    family = FAMILIES[CASES[case][0]]
    assert student.num_layers == 2 and getattr(student.backbone.config, family.depth_key) == 2
    for key in family.per_layer_keys:  # ModernBERT: the attention type of each kept block
        assert getattr(student.backbone.config, key) == getattr(teacher.backbone.config, key)[:2]
    tokens = teacher.tokenize_passages(TITLES, PASSAGES, 40)
    with torch.no_grad():
        hidden = teacher.backbone(**tokens, output_hidden_states=True).hidden_states
        reps = student(**tokens, layers=[0, 1])
    assert torch.equal(reps.layers[0], hidden[1])
    # the student's last layer: the teacher's block 1 output, then the family's final norm where it has one
    final_norm = getattr(teacher.backbone, "final_norm", None)
    with torch.no_grad():
        expected = hidden[2] if final_norm is None else final_norm(hidden[2])
    assert torch.equal(reps.layers[1], expected)
    student.save(tmp_path / "student")
    reloaded = load_model(tmp_path / "student").eval()
    with torch.no_grad():
        again = reloaded(**tokens, layers=[0, 1])
    assert torch.equal(again.layers, reps.layers) and torch.equal(again.final, reps.final)


MASKED_LM = {"mpnet": MPNetForMaskedLM, "deberta-v2": DebertaV2ForMaskedLM, "modernbert": ModernBertForMaskedLM}


@pytest.mark.parametrize("family", MASKED_LM)
def test_pretraining_checkpoint_loads_strictly_with_its_head_ignored(family: str, tmp_path) -> None:
    """A masked-LM checkpoint of the family (prefixed backbone keys + MLM head) loads; every key outside the backbone
    is ignored and reported, and one unknown backbone key is an error naming it."""
    from safetensors.torch import save_file

    config, tokenizer = tiny(family, 2)
    torch.manual_seed(3)
    checkpoint = MASKED_LM[family](config)
    folder = tmp_path / family
    checkpoint.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    stored = load_file(str(folder / "model.safetensors"))
    prefix = f"{checkpoint.base_model_prefix}."
    outside = sorted(key for key in stored if not key.startswith(prefix))
    assert outside  # the head is there to be ignored
    model = load_model(folder, kind="de")
    assert model.ignored_keys == outside
    embeddings = model.backbone.get_input_embeddings().weight
    torch.testing.assert_close(embeddings, stored[f"{prefix}{_embedding_key(family)}"], rtol=0, atol=0)

    stored[f"{prefix}encoder.extra_block.weight"] = torch.zeros(2)
    save_file(stored, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackboneWeightsError, match=r"unexpected.*encoder\.extra_block\.weight"):
        load_model(folder, kind="de")


def _embedding_key(family: str) -> str:
    return "embeddings.tok_embeddings.weight" if family == "modernbert" else "embeddings.word_embeddings.weight"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("pooling", "similarity"), [("mean", "cos"), ("cls", "dot")])
def test_exported_dual_encoder_encodes_the_same_in_sentence_transformers(case, pooling, similarity, tmp_path) -> None:
    """Titled passages: sentence-transformers encodes "title text" from the saved folder, lead_dist tokenizes the
    (title, text) pair; the vectors agree (the issue's bar: cosine >= 0.9999)."""
    model = build(case, "de", pooling=pooling, similarity=similarity, max_seq_length=64)
    model.save(tmp_path / "de")
    theirs = SentenceTransformer(str(tmp_path / "de"), device="cpu").encode(
        join_title(TITLES, PASSAGES), convert_to_tensor=True
    )
    with torch.no_grad():
        ours = model(**model.tokenize_passages(TITLES, PASSAGES, 64)).final
    cosine = F.cosine_similarity(ours, theirs, dim=-1)
    assert cosine.min() >= 0.9999, cosine
    if similarity == "dot":  # raw vectors: their lengths agree too
        torch.testing.assert_close(ours.norm(dim=-1), theirs.norm(dim=-1), rtol=1e-4, atol=0)


@pytest.mark.parametrize(("case", "fits"), [("mpnet", 128), ("roberta", 128), ("bert", 130), ("deberta-v2", 130)])
def test_default_length_is_what_the_positions_hold(case: str, fits: int) -> None:
    """130 position embeddings; RoBERTa-style families (MPNet too) start positions after the padding id (1), so 128
    tokens fit. A ColBERT query filled to the default length runs (it failed with an index error at 130)."""
    from lead_dist.retrieval.text_encoder import default_max_length

    model = build(case, "de")
    assert model.max_seq_length == fits
    cb = build(case, "cb")
    assert default_max_length(cb.backbone, cb.tokenizer) == fits
    with torch.no_grad():
        reps = cb(**cb.tokenize_queries(QUERIES, fits))
    assert reps.final.shape[1] == fits
