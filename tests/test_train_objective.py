"""Single-process tests of the objective: label layout, the own-group cut, ColBERT padding, layer requests, gradients.

The 2-process equivalence is in test_train_objective_multiprocess.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from rounding import assert_within, colbert_score_bound
from test_train_objective_cases import (
    CASES,
    NEGATIVES,
    PASSAGE_MAX_LENGTH,
    QUERY_MAX_LENGTH,
    build_models,
    load_tokenizer,
    make_examples,
)

from lead_dist.config import LeadConfig
from lead_dist.data import collate_for
from lead_dist.lead import lead_loss
from lead_dist.models.colbert import pad_tokens
from lead_dist.train import candidates
from lead_dist.train.objective import distill_loss, warmup_loss

GROUP = 1 + NEGATIVES


def _case(name: str):
    return next(c for c in CASES if c.name == name)


def _batch(student, teacher, examples) -> dict:
    return {
        "student": collate_for(student, examples, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH),
        "teacher": collate_for(teacher, examples, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH),
    }


# --- labels and the own-group cut ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rank", "expected"), [(0, [0, 4, 8]), (1, [12, 16, 20]), (3, [36, 40, 44])])
def test_global_labels_point_at_own_positive_in_rank_major_layout(monkeypatch, rank: int, expected: list) -> None:
    # 3 queries x groups of 4 per rank: rank r's passages start at column r * 12.
    monkeypatch.setattr(candidates, "rank", lambda: rank)
    assert candidates.global_labels(3, 4, torch.device("cpu")).tolist() == expected


def test_group_labels_are_column_zero() -> None:
    assert candidates.group_labels(3, torch.device("cpu")).tolist() == [0, 0, 0]


def test_cut_to_own_group_hand_values() -> None:
    scores = torch.arange(2 * 6).view(2, 6)  # 2 queries, groups of 3, value = row * 6 + column
    assert candidates.cut_to_own_group(scores, 3).tolist() == [[0, 1, 2], [9, 10, 11]]
    stacked = torch.stack([scores, 100 + scores])  # [K=2, Q, C]
    assert candidates.cut_to_own_group(stacked, 3).tolist() == [
        [[0, 1, 2], [9, 10, 11]],
        [[100, 101, 102], [109, 110, 111]],
    ]
    with pytest.raises(ValueError, match="expected 2 x 4 local candidates, got 6"):
        candidates.cut_to_own_group(scores, 4)


def test_unequal_passage_counts_across_ranks_are_refused() -> None:
    with pytest.raises(RuntimeError, match=r"different numbers of passages \[12, 9\]"):
        candidates._check_equal_passage_counts([(12, 30), (9, 30)])
    candidates._check_equal_passage_counts([(12, 30), (12, 41)])  # token lengths may differ: they are padded


def test_ce_teacher_rows_cut_to_own_group_equal_hand_assembly() -> None:
    """With a cross-encoder teacher the student's [Q, Q*G] matrix is cut to each query's own G passages, the CE's
    Q*G pair scores are laid out [Q, G], and the label is 0; assembled here by hand with explicit indices."""
    case = _case("lead_ce_joint")
    student, teacher = build_models(case, load_tokenizer())
    examples = make_examples()
    batch = _batch(student, teacher, examples)
    layers_s, layers_t = (1,), (2,)
    total, terms = distill_loss(
        student, teacher, batch, layers_s, layers_t, LeadConfig(), teacher_trained=True, candidates="group"
    )

    q = student(**batch["student"]["queries"], layers=layers_s)
    p = student(**batch["student"]["passages"], layers=layers_s)
    full_final, full_layers = student.score(q, p)
    t_final, t_layers = teacher(**batch["teacher"]["pairs"], layers=layers_t)
    rows = range(len(examples))
    s_final = torch.stack([full_final[i, i * GROUP : (i + 1) * GROUP] for i in rows])
    s_layers = torch.stack([full_layers[:, i, i * GROUP : (i + 1) * GROUP] for i in rows], dim=1)
    t_final = torch.stack([t_final[i * GROUP : (i + 1) * GROUP] for i in rows])
    t_layers = torch.stack([t_layers[:, i * GROUP : (i + 1) * GROUP] for i in rows], dim=1)
    expected, expected_terms = lead_loss(
        s_final, t_final, s_layers, t_layers, torch.zeros(len(examples), dtype=torch.long)
    )
    assert s_final.shape == (len(examples), GROUP)
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms["student"], expected_terms["student"], rtol=0, atol=1e-10)


def test_ce_teacher_with_global_candidates_is_refused() -> None:
    student, teacher = build_models(_case("lead_ce_joint"), load_tokenizer())
    batch = _batch(student, teacher, make_examples())
    with pytest.raises(ValueError, match="teacher.candidates: a cross encoder .* use candidates=group"):
        distill_loss(student, teacher, batch, (0,), (0,), LeadConfig(), teacher_trained=True, candidates="global")


def test_global_warmup_is_cross_entropy_over_every_passage_with_hand_labels() -> None:
    student, _ = build_models(_case("contrastive"), load_tokenizer())
    examples = make_examples()
    batch = collate_for(student, examples, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)
    loss, terms = warmup_loss(student, batch, "global")
    scores, _ = student.score(student(**batch["queries"]), student(**batch["passages"]))
    assert scores.shape == (4, 4 * GROUP)
    labels = torch.tensor([0, 3, 6, 9])  # groups of 3: query i's positive is passage 3i
    torch.testing.assert_close(loss, F.cross_entropy(scores, labels), rtol=0, atol=1e-10)
    assert set(terms) == {"contrastive"}


def test_cross_encoder_warmup_is_own_group_cross_entropy_and_needs_group_size() -> None:
    _, model = build_models(_case("warmup_ce"), load_tokenizer())
    batch = collate_for(model, make_examples(), QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)
    with pytest.raises(ValueError, match="group_size"):
        warmup_loss(model, batch, "group")
    loss, _ = warmup_loss(model, batch, "group", group_size=GROUP)
    final, _ = model(**batch["pairs"])
    by_hand = F.cross_entropy(final.view(4, GROUP), torch.zeros(4, dtype=torch.long))  # own group, positive first
    torch.testing.assert_close(loss, by_hand, rtol=0, atol=1e-10)
    # The warm-up config has no candidates key for the one model: a cross encoder scores its own group regardless.
    same, _ = warmup_loss(model, batch | {"group_size": GROUP}, "global")
    torch.testing.assert_close(same, loss, rtol=0, atol=0)


def test_passages_not_a_multiple_of_queries_are_refused() -> None:
    student, teacher = build_models(_case("lead_de_joint"), load_tokenizer())
    batch = _batch(student, teacher, make_examples())
    passages = batch["student"]["passages"]
    batch["student"]["passages"] = {k: v[:-1] for k, v in passages.items()}
    with pytest.raises(ValueError, match="4 queries and 11 passages"):
        distill_loss(student, teacher, batch, (0,), (0,), LeadConfig(), teacher_trained=True, candidates="global")


# --- ColBERT: token padding across ranks --------------------------------------------------------------------------


def test_colbert_padding_to_the_longest_rank_leaves_scores_unchanged() -> None:
    """Two 'ranks' tokenise their passages to different lengths; padded to the longer one and concatenated, as the
    gather does, the scores (final and per layer) equal each rank's unpadded scores side by side."""
    _, colbert = build_models(_case("lead_cb_joint"), load_tokenizer())
    colbert.eval()
    examples = make_examples()
    halves = [examples[:2], examples[2:]]
    layers = (0, 2)
    q_batch = collate_for(colbert, examples, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)["queries"]
    q = colbert(**q_batch, layers=layers)
    per_rank = [
        colbert(**collate_for(colbert, h, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)["passages"], layers=layers)
        for h in halves
    ]
    lengths = [r.mask.shape[1] for r in per_rank]
    assert lengths[0] < lengths[1], lengths  # the case under test: ragged token lengths

    longest = max(lengths)
    padded = [pad_tokens(r, longest) for r in per_rank]
    assert padded[0].mask[:, lengths[0] :].sum() == 0
    joined = dataclasses.replace(
        padded[0],
        final=torch.cat([r.final for r in padded]),
        layers=torch.cat([r.layers for r in padded], dim=1),
        mask=torch.cat([r.mask for r in padded]),
    )
    final, per_layer = colbert.score(q, joined)
    separate = [colbert.score(q, r) for r in per_rank]
    # The same token vectors, scored in other shapes (other kernels, other summation orders): equal up to rounding
    # of the dot products and the query-token sum in the models' dtype (float64 here; tests/rounding.py).
    final_bound, layers_bound = colbert_score_bound(q, joined)
    assert_within(final, torch.cat([s[0] for s in separate], dim=1), final_bound, "final")
    assert_within(per_layer, torch.cat([s[1] for s in separate], dim=2), layers_bound, "layers")
    assert final.shape == (4, 4 * GROUP) and per_layer.shape == (2, 4, 4 * GROUP)


# --- which layers are requested, and where gradient flows ---------------------------------------------------------


def _spy_on_layers(model: torch.nn.Module, calls: list) -> None:
    forward = model.forward

    def spy(*args, layers=(), **kwargs):
        calls.append(tuple(layers))
        return forward(*args, layers=layers, **kwargs)

    model.forward = spy


@pytest.mark.parametrize(
    ("mode", "student_calls", "teacher_calls"),
    [("lead", [(1,), (1,)], [(0,), (0,)]), ("response", [(), ()], [(), ()]), ("contrastive", [(), ()], [])],
)
def test_only_the_selected_layers_are_requested(mode: str, student_calls: list, teacher_calls: list) -> None:
    student, teacher = build_models(_case("lead_cb_joint"), load_tokenizer())
    seen_student: list = []
    seen_teacher: list = []
    _spy_on_layers(student, seen_student)
    _spy_on_layers(teacher, seen_teacher)
    batch = _batch(student, teacher, make_examples())
    distill_loss(
        student, teacher, batch, (1,), (0,), LeadConfig(), teacher_trained=True, candidates="global", mode=mode
    )
    assert seen_student == student_calls  # queries, then passages
    assert seen_teacher == teacher_calls


@pytest.mark.parametrize("teacher_trained", [True, False])
def test_frozen_teacher_gets_no_gradient_and_joint_teacher_does(teacher_trained: bool) -> None:
    student, teacher = build_models(_case("lead_de_joint"), load_tokenizer())
    batch = _batch(student, teacher, make_examples())
    total, terms = distill_loss(
        student, teacher, batch, (0, 1), (0, 2), LeadConfig(), teacher_trained=teacher_trained, candidates="global"
    )
    total.backward()
    assert all(p.grad is not None for p in student.parameters())
    teacher_grads = [p.grad for p in teacher.parameters()]
    if teacher_trained:
        assert all(g is not None for g in teacher_grads) and terms["teacher"] > 0
    else:
        assert all(g is None for g in teacher_grads) and terms["teacher"] == 0
