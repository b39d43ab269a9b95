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
