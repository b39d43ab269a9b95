"""The packaged all-MiniLM-L6-v2 loads as a DE (mean + cos) equal to sentence-transformers; saved DEs reload there."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer

from lead_dist.models import load_model

SENTENCES = [
    "what causes the northern lights",
    "Aurora borealis is caused by charged particles from the sun hitting the atmosphere.",
    "a",
    "Cranfield tested aerodynamic heating of thin plates at high Mach numbers, with long text " * 3,
]


def _our_embeddings(model, max_length: int) -> torch.Tensor:
    with torch.no_grad():
        return model(**model.tokenize_queries(SENTENCES, max_length)).final


def test_minilm_loads_as_mean_cos_dual_encoder(minilm_dir) -> None:
    model = load_model(minilm_dir, kind="de").eval()
    assert (model.pooling, model.similarity, model.max_seq_length) == ("mean", "cos", 256)
    assert model.num_layers == 6 and model.hidden_size == 384
    assert model.fresh_parameters == [] and sorted(model.ignored_keys) == ["pooler.dense.bias", "pooler.dense.weight"]
    ours = _our_embeddings(model, 256)
    reference = SentenceTransformer(minilm_dir, device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("pooling", "similarity"), [("cls", "dot"), ("mean", "cos")])
def test_saved_dual_encoder_reloads_in_sentence_transformers(tiny_bert_dir, tmp_path, pooling, similarity) -> None:
    model = load_model(tiny_bert_dir, kind="de", pooling=pooling, similarity=similarity, max_seq_length=64).eval()
    model.save(tmp_path / "de")
    reloaded = SentenceTransformer(str(tmp_path / "de"), device="cpu")
    assert reloaded.max_seq_length == 64
    theirs = reloaded.encode(SENTENCES, convert_to_tensor=True)
    ours = _our_embeddings(model, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    if similarity == "dot":  # no Normalize module: raw CLS vectors, not unit length
        assert not torch.allclose(theirs.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-3)


def test_saved_minilm_student_reloads_in_sentence_transformers(minilm_dir, tmp_path) -> None:
    """A 2-layer student cut from MiniLM keeps mean + cos through save -> SentenceTransformer."""
    from lead_dist.models import student_from_teacher

    student = student_from_teacher(load_model(minilm_dir, kind="de"), 2).eval()
    student.save(tmp_path / "student")
    theirs = SentenceTransformer(str(tmp_path / "student"), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(_our_embeddings(student, 256), theirs, atol=1e-5, rtol=0)


def _saved_by_sentence_transformers(backbone_dir, folder, pooling: str, normalize: bool) -> SentenceTransformer:
    """A folder written by the installed sentence-transformers itself (6.x: `"pooling_mode": "cls"`, no max length
    in sentence_bert_config.json), not by lead_dist's writer."""
    try:  # sentence-transformers 6 moved the modules; 5 has them here only
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    if hasattr(transformer, "get_embedding_dimension"):  # 6.x renamed it
        width = transformer.get_embedding_dimension()
    else:
        width = transformer.get_word_embedding_dimension()
    modules = [transformer, Pooling(width, pooling_mode=pooling)]
    model = SentenceTransformer(modules=modules + ([Normalize()] if normalize else []), device="cpu")
    model.save(str(folder))
    return model


def test_cls_folder_saved_by_installed_sentence_transformers_loads_as_cls(tiny_bert_dir, tmp_path) -> None:
    """Issue 15 item 7: load_model refused such a folder ("found []") and retrieval's encoder pooled the mean."""
    from lead_dist.retrieval.text_encoder import load_text_encoder

    folder = tmp_path / "st-cls"
    reference_model = _saved_by_sentence_transformers(tiny_bert_dir, folder, "cls", normalize=False)
    reference = reference_model.encode(SENTENCES, convert_to_tensor=True)

    model = load_model(folder, kind="de").eval()
    assert (model.pooling, model.similarity, model.max_seq_length) == ("cls", "dot", 64)
    encoder = load_text_encoder(folder)
    assert (encoder.pooling, encoder.normalize) == ("cls", False)
    with torch.no_grad():
        theirs = encoder.embed(encoder.tokenize_queries(SENTENCES, 64))
    # Same weights, same tokens, one batch each; the forwards may differ in attention kernel (eager / SDPA), so
    # they agree to float32 rounding of a 2-layer, 32-wide forward (~1e-6), inside 1e-5; mean pooling is O(1) off.
    torch.testing.assert_close(_our_embeddings(model, 64), reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs, reference, atol=1e-5, rtol=0)


def test_sentence_transformers_folder_the_parser_cannot_reproduce_is_refused_by_name(tiny_bert_dir, tmp_path) -> None:
    import json

    from lead_dist.retrieval.text_encoder import load_text_encoder

    folder = tmp_path / "st-max"
    _saved_by_sentence_transformers(tiny_bert_dir, folder, "max", normalize=True)
    for load in (lambda: load_model(folder, kind="de"), lambda: load_text_encoder(folder)):
        with pytest.raises(ValueError, match=r"exactly one of cls, mean or lasttoken pooling, found \[.max.\]"):
            load()
    config_path = folder / "1_Pooling" / "config.json"
    config = json.loads(config_path.read_text()) | {"pooling_mode": "mean", "pooling_mode_weird": True}
    config_path.write_text(json.dumps(config))
    for load in (lambda: load_model(folder, kind="de"), lambda: load_text_encoder(folder)):
        with pytest.raises(ValueError, match=r"unknown pooling key\(s\) \['pooling_mode_weird'\]"):
            load()
