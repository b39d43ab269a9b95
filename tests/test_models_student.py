"""student_from_teacher copies the teacher's first N blocks; model_from_config builds fresh weights."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from lead_dist.models import load_model, model_from_config, student_from_teacher


@pytest.fixture(scope="module")
def teacher(minilm_dir):
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(7)
    return model_from_config(config, minilm_dir, "cb", projection_dim=8).eval()


def test_student_equals_teacher_first_blocks(teacher) -> None:
    student = student_from_teacher(teacher, 2, kind="de", pooling="mean").eval()
    assert student.num_layers == 2 and student.backbone.config.num_hidden_layers == 2
    assert teacher.num_layers == 4  # the teacher is untouched
    assert student.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()
    tokens = student.tokenize_queries(["a query about flows", "x"], 16)
    with torch.no_grad():
        teacher_states = teacher.backbone(**tokens, output_hidden_states=True).hidden_states
        student_states = student.backbone(**tokens, output_hidden_states=True).hidden_states
        student_reps = student(**tokens, layers=[0, 1])
    assert len(student_states) == 3
    for layer in range(2):  # layer l = hidden_states[l + 1]
        torch.testing.assert_close(student_states[layer + 1], teacher_states[layer + 1], atol=1e-6, rtol=1e-5)
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    expected_mean = (teacher_states[2] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(student_reps.layers[1], expected_mean, atol=1e-6, rtol=1e-5)
    # A student of another kind gets no teacher options; DE has no head so nothing is fresh.
    assert student.options["pooling"] == "mean" and student.fresh_parameters == []


def test_student_is_an_independent_copy(teacher) -> None:
    student = student_from_teacher(teacher, 1, kind="cb")
    with torch.no_grad():
        student.backbone.embeddings.word_embeddings.weight.zero_()
        student.projection.weight.zero_()
    assert teacher.backbone.embeddings.word_embeddings.weight.abs().sum() > 0
    assert teacher.projection.weight.abs().sum() > 0


def test_same_kind_student_inherits_options_and_head(teacher) -> None:
    student = student_from_teacher(teacher, 3, kind="cb")
    assert student.options == teacher.options and student.fresh_parameters == []
    assert torch.equal(student.projection.weight, teacher.projection.weight)
    changed = student_from_teacher(teacher, 3, kind="cb", projection_dim=4)
    assert changed.fresh_parameters == ["projection.weight"]
    teacher.train()
    try:
        assert not any(module.training for module in student_from_teacher(teacher, 2).modules())
    finally:
        teacher.eval()


def test_student_depth_is_checked(teacher) -> None:
    with pytest.raises(ValueError, match=r"num_layers must be in 1\.\.4"):
        student_from_teacher(teacher, 5)
    with pytest.raises(ValueError, match=r"num_layers must be in 1\.\.4"):
        student_from_teacher(teacher, 0)


def test_student_saves_with_its_depth(teacher, tmp_path) -> None:
    student = student_from_teacher(teacher, 2, kind="ce").eval()
    student.save(tmp_path / "ce")
    again = load_model(tmp_path / "ce").eval()
    assert again.num_layers == 2 and again.kind == "ce"
    pairs = student.tokenize_pairs(["q"], ["t"], ["text"], 16)
    with torch.no_grad():
        assert torch.equal(student(**pairs)[0], again(**pairs)[0])


def test_model_from_config_is_fresh_and_checks_vocab(minilm_dir) -> None:
    small = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    with pytest.raises(ValueError, match="vocab_size is 100"):
        model_from_config(small, minilm_dir, "de")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    a = model_from_config(config, minilm_dir, "ce")
    torch.manual_seed(1)
    b = model_from_config(config, minilm_dir, "ce")
    assert "head.weight" in a.fresh_parameters and "backbone.embeddings.word_embeddings.weight" in a.fresh_parameters
    assert not torch.equal(a.backbone.embeddings.word_embeddings.weight, b.backbone.embeddings.word_embeddings.weight)
