"""A LEAD step across families: a teacher of each family and kind, a dual-encoder student of another family (another
tokenizer too), and the trainer's objective equals the loss assembled by hand from the two models' scores.

The hand side reads each model's `hidden_states` (transformers' own `output_hidden_states=True`, not lead_dist's layer
capture), pools, normalises, projects and scores with explicit loops, and sums the LEAD terms with the float64
reference of LEAD_SPEC (tests/reference_lead.py). Both sides run the same models in float64, where rounding differs by
~1e-15 relative: 1e-9 lets only a real difference through. The gradients of both losses agree as well.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_models import FAMILY_NAMES, PASSAGES, QUERIES, TITLES, tiny
from reference_lead import reference_lead

from lead_dist.config import LeadConfig
from lead_dist.data import collate_for
from lead_dist.models import model_from_config
from lead_dist.train.objective import distill_loss

TEACHER_LAYERS, STUDENT_LAYERS = (0, 2), (0, 1)  # the last layer of each model is among them
QUERY_LENGTH, PASSAGE_LENGTH = 16, 40
NEGATIVES = 2
GROUP = 1 + NEGATIVES
# a sentence encoder's final scoring with the reference's raw [CLS] dot products for its intermediate blocks, and the
# reference's scoring throughout
STUDENT_OPTIONS = (
    {"pooling": "mean", "similarity": "cos", "scale": 20.0, "layer_pooling": "cls", "layer_similarity": "dot"},
    {"pooling": "cls", "similarity": "dot"},
)


def examples() -> list[dict]:
    """Each query with its own passage as the positive and the two others as hard negatives."""
    rows = []
    for i, query in enumerate(QUERIES):
        negatives = [j for j in range(len(PASSAGES)) if j != i]
        rows.append({
            "qid": f"q{i}", "query": query, "pos_id": f"p{i}", "pos_title": TITLES[i], "pos_text": PASSAGES[i],
            "neg_ids": [f"p{j}" for j in negatives], "neg_titles": [TITLES[j] for j in negatives],
            "neg_texts": [PASSAGES[j] for j in negatives],
        })  # fmt: skip
    return rows


def build(family: str, kind: str, layers: int, seed: int, **options):
    config, tokenizer = tiny(family, layers)
    torch.manual_seed(seed)
    return model_from_config(config, tokenizer, kind, **options).to(torch.float64).eval()


def hidden_states(model, tokens: dict) -> tuple[torch.Tensor, ...]:
    return model.backbone(**tokens, output_hidden_states=True).hidden_states


def pool_by_hand(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    rows = []
    for row, row_mask in zip(states, mask, strict=True):
        length = int(row_mask.sum())
        assert bool(row_mask[:length].all())  # right padding: the real tokens come first
        rows.append(row[0] if pooling == "cls" else row[:length].sum(0) / length)
    return torch.stack(rows)


def de_scores_by_hand(model, queries: dict, passages: dict, layers: tuple[int, ...]):
    """(final [Q, C], layers [K, Q, C]) of a DE from its hidden states."""
    hq, hp = hidden_states(model, queries), hidden_states(model, passages)

    def score(index: int, pooling: str, similarity: str, scale: float) -> torch.Tensor:
        q = pool_by_hand(hq[index], queries["attention_mask"], pooling)
        p = pool_by_hand(hp[index], passages["attention_mask"], pooling)
        if similarity == "cos":
            q = q / q.norm(dim=-1, keepdim=True)
            p = p / p.norm(dim=-1, keepdim=True)
        return scale * torch.stack([torch.stack([qi.dot(pj) for pj in p]) for qi in q])

    final = score(-1, model.pooling, model.similarity, model.scale)
    # an intermediate block is scored with the layer options; the last block is scored as the final score (issue 19)
    per_layer = [
        final if layer == model.num_layers - 1 else
        score(layer + 1, model.layer_pooling, model.layer_similarity, model.layer_scale)
        for layer in layers
    ]  # fmt: skip
    return final, torch.stack(per_layer)


def late_interaction_by_hand(q: torch.Tensor, q_mask, p: torch.Tensor, p_mask) -> torch.Tensor:
    scores = torch.zeros(q.shape[0], p.shape[0], dtype=q.dtype)
    for a in range(q.shape[0]):
        for c in range(p.shape[0]):
            kept = p[c][p_mask[c].bool()]  # unpadded passage tokens
            for i in range(q.shape[1]):
                if q_mask[a, i]:
                    scores[a, c] = scores[a, c] + (kept @ q[a, i]).max()
    return scores


def cb_scores_by_hand(model, queries: dict, passages: dict, layers: tuple[int, ...]):
    hq, hp = hidden_states(model, queries), hidden_states(model, passages)
    qm, pm = queries["attention_mask"], passages["attention_mask"]

    def projected(states: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.projection(states), dim=-1)

    final = late_interaction_by_hand(projected(hq[-1]), qm, projected(hp[-1]), pm)
    per_layer = [late_interaction_by_hand(hq[layer + 1], qm, hp[layer + 1], pm) for layer in layers]
    return final, torch.stack(per_layer)


def ce_scores_by_hand(model, pairs: dict, layers: tuple[int, ...]):
    hidden = hidden_states(model, pairs)

    def score(index: int) -> torch.Tensor:
        return (hidden[index][:, 0] @ model.head.weight[0] + model.head.bias[0]).view(-1, GROUP)

    return score(-1), torch.stack([score(layer + 1) for layer in layers])


def own_group(scores: torch.Tensor) -> torch.Tensor:
    """[..., Q, Q * G] -> [..., Q, G]: each query's own passages."""
    return torch.stack([scores[..., q, q * GROUP : (q + 1) * GROUP] for q in range(scores.shape[-2])], dim=-2)


CASES = [
    (family, kind, FAMILY_NAMES[(index + 1) % len(FAMILY_NAMES)])
    for index, family in enumerate(FAMILY_NAMES)
    for kind in ("de", "cb", "ce")
]


@pytest.mark.parametrize(("teacher_family", "teacher_kind", "student_family"), CASES)
def test_lead_loss_equals_the_hand_assembled_one(teacher_family: str, teacher_kind: str, student_family: str) -> None:
    options = {"projection_dim": 16} if teacher_kind == "cb" else {}
    teacher = build(teacher_family, teacher_kind, 3, seed=11, **options)
    student_options = STUDENT_OPTIONS[CASES.index((teacher_family, teacher_kind, student_family)) % 2]
    student = build(student_family, "de", 2, seed=12, **student_options)
    rows = examples()
    batch = {
        "student": collate_for(student, rows, QUERY_LENGTH, PASSAGE_LENGTH),
        "teacher": collate_for(teacher, rows, QUERY_LENGTH, PASSAGE_LENGTH),
    }
    candidates = "group" if teacher_kind == "ce" else "global"
    lead = LeadConfig()
    ours, _terms = distill_loss(
        student, teacher, batch, STUDENT_LAYERS, TEACHER_LAYERS, lead, teacher_trained=True, candidates=candidates
    )

    s_final, s_layers = de_scores_by_hand(student, batch["student"]["queries"], batch["student"]["passages"],
                                          STUDENT_LAYERS)  # fmt: skip
    if teacher_kind == "de":
        t_final, t_layers = de_scores_by_hand(teacher, **batch["teacher"], layers=TEACHER_LAYERS)
    elif teacher_kind == "cb":
        t_final, t_layers = cb_scores_by_hand(teacher, **batch["teacher"], layers=TEACHER_LAYERS)
    else:
        t_final, t_layers = ce_scores_by_hand(teacher, batch["teacher"]["pairs"], TEACHER_LAYERS)
    hand, terms = hand_assembled_loss(s_final, s_layers, t_final, t_layers, candidates, lead)
    assert float(terms["layers"].detach()) > 1e-3  # the layer term is live: the two models' layers rank differently
    torch.testing.assert_close(ours, hand, rtol=1e-9, atol=0)

    params = [p for p in (*student.parameters(), *teacher.parameters()) if p.requires_grad]
    ours_grad = torch.autograd.grad(ours, params, allow_unused=True)
    hand_grad = torch.autograd.grad(hand, params, allow_unused=True)
    for name_grad, (a, b) in enumerate(zip(ours_grad, hand_grad, strict=True)):
        assert (a is None) == (b is None), name_grad
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def hand_assembled_loss(s_final, s_layers, t_final, t_layers, candidates: str, lead: LeadConfig) -> tuple:
    """The LEAD loss of LEAD_SPEC (tests/reference_lead.py) from the two models' scores computed by hand, with the
    step's candidates (`group`: each query against its own passages, the positive first; `global`: every passage of
    the batch, query i's positive at i * GROUP) and `lead`'s settings, for a trained teacher."""
    rows = s_final.shape[0]
    if candidates == "group":
        s_final, s_layers = own_group(s_final), own_group(s_layers)
        labels = torch.zeros(rows, dtype=torch.long)
    else:
        labels = torch.arange(rows) * GROUP
    assert s_final.shape == t_final.shape and s_layers.shape == t_layers.shape
    return reference_lead(
        s_final, t_final, s_layers, t_layers, labels, teacher_trained=True, temperature=lead.temperature,
        layer_temperature=lead.layer_temperature, reweight=lead.reweight, layer_coef=lead.coef.layers,
        student_coef=lead.coef.student, teacher_coef=lead.coef.teacher, response_coef=lead.coef.response,
        detach_targets=lead.detach_targets,
    )  # fmt: skip
