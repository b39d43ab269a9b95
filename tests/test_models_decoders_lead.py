"""A LEAD step with a decoder teacher: a tiny teacher of every decoder family (DE and CE, last-token reading, its own
BPE tokenizer, prompts on the DE) and a tiny BERT student, and the trainer's objective equals the loss assembled by
hand from the two models' `hidden_states`.

The hand side finds each row's last real token with a loop over the attention mask, reads an intermediate block
through the decoder's final norm (`hidden_states[l + 1]` normed, families.py) and the last block as
`hidden_states[N]`, scores with explicit loops and sums the LEAD terms with the float64 reference of LEAD_SPEC
(tests/reference_lead.py). Both sides run the same models in float64: the losses agree to 1e-9 relative (the
forwards are the same computations; only the LEAD sums are ordered differently). The gradients agree as well, the
teacher's included, within float32 rounding, not float64's: the decoders' RMSNorm (and eager softmax) compute in
float32 whatever the dtype, so the gradient through each norm is rounded to float32 on the way back (relative
u = EPS32 / 2), and the two sides add the contributions that reach a block's states (its own reading, the blocks
after it) in another order. About 8 norms lie on a path through 3 blocks (2 per block, the final one, the reading);
times the lambda = 3 of tests/rounding.py, relative to the gradient tensor's largest entry. A wrong gradient is off
by its own size. The 1e-12 floor (as in test_models_families_lead.py) is for gradients that are zero in exact
arithmetic and float64 noise here.
"""

from __future__ import annotations

import pytest
import torch
from decoder_models import DECODER_NAMES, tiny_decoder
from family_models import tiny
from rounding import EPS32, assert_within
from test_models_families_lead import (
    GROUP,
    PASSAGE_LENGTH,
    QUERY_LENGTH,
    de_scores_by_hand,
    examples,
    hand_assembled_loss,
)

from lead_dist.config import LeadConfig
from lead_dist.data import collate_for
from lead_dist.models import model_from_config
from lead_dist.train.objective import distill_loss

TEACHER_LAYERS, STUDENT_LAYERS = (0, 2), (0, 1)  # the last layer of each model is among them
CE_PAIR_LENGTH = QUERY_LENGTH + PASSAGE_LENGTH


def last_real_by_hand(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = []
    for row, row_mask in zip(states, mask, strict=True):
        positions = [i for i, m in enumerate(row_mask.tolist()) if m]
        rows.append(row[positions[-1]])
    return torch.stack(rows)


def read_by_hand(model, tokens: dict, layer: int) -> torch.Tensor:
    """[B, H]: block `layer`'s last-token state as a decoder is read (through the final norm; the last block is
    `hidden_states[N]`, after it already)."""
    hidden = model.backbone(**tokens, output_hidden_states=True).hidden_states
    states = hidden[layer + 1]
    if layer != model.num_layers - 1:
        states = model.backbone.norm(states)
    return last_real_by_hand(states, tokens["attention_mask"])


def decoder_de_scores_by_hand(model, queries: dict, passages: dict, layers: tuple[int, ...]):
    def score(layer: int, similarity: str, scale: float) -> torch.Tensor:
        q, p = read_by_hand(model, queries, layer), read_by_hand(model, passages, layer)
        if similarity == "cos":
            q = q / q.norm(dim=-1, keepdim=True)
            p = p / p.norm(dim=-1, keepdim=True)
        return scale * torch.stack([torch.stack([qi.dot(pj) for pj in p]) for qi in q])

    last = model.num_layers - 1
    final = score(last, model.similarity, model.scale)
    per_layer = [
        final if layer == last else score(layer, model.layer_similarity, model.layer_scale) for layer in layers
    ]
    return final, torch.stack(per_layer)


def decoder_ce_scores_by_hand(model, pairs: dict, layers: tuple[int, ...]):
    def score(layer: int) -> torch.Tensor:
        return (read_by_hand(model, pairs, layer) @ model.head.weight[0] + model.head.bias[0]).view(-1, GROUP)

    return score(model.num_layers - 1), torch.stack([score(layer) for layer in layers])


CASES = [(family, kind) for family in DECODER_NAMES for kind in ("de", "ce")]


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_lead_loss_with_a_decoder_teacher_equals_the_hand_assembled_one(family: str, kind: str) -> None:
    config, tokenizer = tiny_decoder(family, 3)
    torch.manual_seed(11)
    options = {"similarity": "cos", "query_prompt": "find: ", "layer_similarity": "dot"} if kind == "de" else {}
    teacher = model_from_config(config, tokenizer, kind, **options).to(torch.float64).eval()
    student_config, student_tokenizer = tiny("bert", 2)
    torch.manual_seed(12)
    student = model_from_config(student_config, student_tokenizer, "de", pooling="cls", similarity="dot")
    student = student.to(torch.float64).eval()
    rows = examples()
    batch = {
        "student": collate_for(student, rows, QUERY_LENGTH, PASSAGE_LENGTH),
        "teacher": collate_for(teacher, rows, QUERY_LENGTH, PASSAGE_LENGTH),
    }
    if kind == "de":  # the teacher's prompt is in the teacher's queries only
        assert "find:" in teacher.tokenizer.decode(batch["teacher"]["queries"]["input_ids"][0])
        assert "find" not in student.tokenizer.decode(batch["student"]["queries"]["input_ids"][0])
    candidates = "group" if kind == "ce" else "global"
    lead = LeadConfig()
    ours, _terms = distill_loss(
        student, teacher, batch, STUDENT_LAYERS, TEACHER_LAYERS, lead, teacher_trained=True, candidates=candidates
    )

    s_final, s_layers = de_scores_by_hand(student, batch["student"]["queries"], batch["student"]["passages"],
                                          STUDENT_LAYERS)  # fmt: skip
    if kind == "de":
        t_final, t_layers = decoder_de_scores_by_hand(teacher, **batch["teacher"], layers=TEACHER_LAYERS)
    else:
        t_final, t_layers = decoder_ce_scores_by_hand(teacher, batch["teacher"]["pairs"], TEACHER_LAYERS)
    hand, terms = hand_assembled_loss(s_final, s_layers, t_final, t_layers, candidates, lead)
    assert float(terms["layers"].detach()) > 1e-3  # the layer term is live: the two models' layers rank differently
    torch.testing.assert_close(ours, hand, rtol=1e-9, atol=0)

    params = [p for p in (*student.parameters(), *teacher.parameters()) if p.requires_grad]
    teacher_params = {id(p) for p in teacher.parameters()}
    ours_grad = torch.autograd.grad(ours, params, allow_unused=True)
    hand_grad = torch.autograd.grad(hand, params, allow_unused=True)
    reached_teacher = False
    for index, (param, a, b) in enumerate(zip(params, ours_grad, hand_grad, strict=True)):
        assert (a is None) == (b is None), index
        if a is not None:
            assert_within(a, b, 3 * 8 * EPS32 * b.abs().max() + 1e-12, f"gradient {index}")
            reached_teacher = reached_teacher or (id(param) in teacher_params and bool(a.abs().sum() > 0))
    assert reached_teacher  # a trained teacher learns through its per-layer reading too
