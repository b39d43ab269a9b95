"""The quality probe's step-0 numbers (benchmarks/quality/probe.py, probe_arms.py): each arm's pairs over its run,
LEAD's pair weights and layer term computed by hand, and the probe's measurements on tiny models, where the last
block of a DE is its final score (so its KL row is the response KL)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from benchmarks.quality.probe import measure, probe
from benchmarks.quality.probe_arms import Arm, draws, layer_term, layer_weights, summarise

REPO = Path(__file__).resolve().parents[1]


def _arm(strategy: str = "fixed", k: int = 2, fixed=((0, 1), (1, 3)), reweight: bool = True) -> Arm:
    return Arm("arm", strategy, k, 10, fixed if strategy == "fixed" else None, 10.0, reweight)


def test_layer_weights_by_hand() -> None:
    # softmax(-gap / 10) of gaps 0.5 and 1.5: 1 / (1 + e^-0.1) and e^-0.1 / (1 + e^-0.1)
    w = layer_weights([0.5, 1.5], 10.0, True)
    assert w == pytest.approx([1 / (1 + math.exp(-0.1)), math.exp(-0.1) / (1 + math.exp(-0.1))], rel=1e-12)
    assert layer_weights([0.5, 1.5], 10.0, False) == [1.0, 1.0]  # reweight off: every pair counts fully


def test_layer_term_weights_each_batch_by_its_own_gaps() -> None:
    # 2 student x 4 teacher layers; pairs (0, 1) and (1, 3). Batch 1: gaps of teacher layers 1 and 3 equal -> w = 1/2
    kl = [[[9, 1.0, 9, 9], [9, 9, 9, 3.0]], [[9, 2.0, 9, 9], [9, 9, 9, 4.0]]]
    gaps = [[0, 2.0, 0, 2.0], [0, 0.0, 0, 10.0]]
    # batch 2: w = softmax(0, -1) = (1 / (1 + e^-1), e^-1 / (1 + e^-1))
    w0 = 1 / (1 + math.exp(-1))
    expected = ((1.0 + 3.0) / 2 + (w0 * 2.0 + (1 - w0) * 4.0)) / 2
    assert layer_term(((0, 1), (1, 3)), kl, gaps, _arm()) == pytest.approx(expected, rel=1e-12)
    assert layer_term(((0, 1), (1, 3)), kl, gaps, _arm(reweight=False)) == pytest.approx((4.0 + 6.0) / 2)


def test_draws_follow_the_trainers_schedule() -> None:
    fixed = draws(_arm(), 3, 6, [888, 889], 64)
    assert fixed == {888: Counter({((0, 1), (1, 3)): 64}), 889: Counter({((0, 1), (1, 3)): 64})}
    last = draws(_arm("last", 3), 3, 6, [888], 64)
    assert last == {888: Counter({((0, 1, 2), (3, 4, 5)): 64})}
    random = draws(_arm("random", 3), 3, 6, [888], 64)[888]
    # 64 steps, a new draw every 10: windows of 10, 10, 10, 10, 10, 10, 4 steps; K = 3 of 3 student blocks
    assert sum(random.values()) == 64 and 1 <= len(random) <= 7
    assert all(pairs[0] == (0, 1, 2) and len(pairs[1]) == 3 for pairs in random)
    # a draw holds for whole windows, so each distinct draw's steps are a sum of windows: 10s and at most one 4
    assert all(steps % 10 in (0, 4) for steps in random.values())


def test_summarise_weights_pairs_by_their_steps() -> None:
    kl = [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]] * 2  # the same KL matrix on both batches
    gaps = [[1.0, 1.0, 1.0]] * 2  # equal gaps: equal weights
    used = {1: Counter({((0, 1), (0, 2)): 30, ((0, 1), (1, 2)): 10}), 2: Counter({((0, 1), (0, 2)): 40})}
    arm = _arm("random", 2)
    result = summarise(arm, used, kl, gaps)
    # pairs: (0,0) 70 steps KL 0; (1,2) 80 steps KL 5; (0,1) 10 steps KL 1 -> shares over 80 steps
    assert result["pairs"] == [
        {"student": 0, "teacher": 0, "share_of_steps": 70 / 80, "kl": 0.0},
        {"student": 0, "teacher": 1, "share_of_steps": 10 / 80, "kl": 1.0},
        {"student": 1, "teacher": 2, "share_of_steps": 1.0, "kl": 5.0},
    ]
    assert result["kl_mean"] == pytest.approx((70 * 0.0 + 10 * 1.0 + 80 * 5.0) / 160)
    # layer term: draw (0,0)+(1,2): (0 + 5) / 2 for 70 of 80 steps; draw (0,1)+(1,2): (1 + 5) / 2 for 10
    assert result["layer_term"] == pytest.approx(70 / 80 * 2.5 + 10 / 80 * 3.0)
    assert result["seeds"]["2"] == [{"student": [0, 1], "teacher": [0, 2], "steps": 40}]


def _batches() -> list[list[dict]]:
    texts = ["proteins fold in cells", "the cat sat on the mat", "stars form from gas clouds", "rain falls in spring",
             "genes code for proteins", "rivers flow to the sea"]  # fmt: skip
    batch = []
    for i, query in enumerate(["protein folding", "galaxy formation"]):
        batch.append({"query": query, "pos_title": "", "pos_text": texts[3 * i], "pos_id": f"p{i}",
                      "neg_ids": [f"n{i}a", f"n{i}b"], "neg_titles": ["", ""],
                      "neg_texts": [texts[3 * i + 1], texts[3 * i + 2]]})  # fmt: skip
    return [batch, list(reversed(batch))]


@pytest.fixture(scope="module")
def other_tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert_config, minilm_dir: str) -> Path:
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert_other")
    torch.manual_seed(99)
    BertModel(tiny_bert_config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    return folder


def test_probe_measures_the_last_block_as_the_final_score(tiny_bert_dir: Path, other_tiny_dir: Path) -> None:
    """Under every scoring, a DE's last block is its final score: the last layer's cross entropy is the final's,
    and KL(teacher last || student last) is the response KL; the same model against itself has a zero diagonal."""
    results = probe(str(tiny_bert_dir), str(other_tiny_dir), _batches(), (8, 16), k=2)
    for name, result in results.items():
        for model in ("teacher", "student"):
            last, final = result[model][-2], result[model][-1]
            # the same scores computed in two shapes (the probe's pooling of the captured block, the model's own
            # final): tests/rounding.py's estimate for the 2-layer test BERTs, 3 x 72 u = 2e-5 relative on O(1)
            # values (1e-6 failed on ATen's portable kernels: 1.3e-6)
            assert last["cross_entropy"] == pytest.approx(final["cross_entropy"], rel=2e-5), (name, model)
        kl = result["kl_teacher_layer_to_student_layer"]
        assert kl[-1][-1] == pytest.approx(result["response_kl"], rel=1e-5, abs=1e-7), name
        # the gaps the arms use are the teacher layers' cross entropies, batch by batch
        per_batch = result["per_batch"]["teacher_gaps"]
        assert [sum(g[a] for g in per_batch) / 2 for a in range(2)] == pytest.approx(
            [layer["cross_entropy"] for layer in result["teacher"][:2]], rel=1e-6)  # fmt: skip

    from lead_dist.models import load_model

    same = load_model(tiny_bert_dir, kind="de", layer_pooling="mean", layer_similarity="dot", layer_scale=1.0).eval()
    itself = measure(same, same, _batches(), (8, 16))
    assert [itself["kl_teacher_layer_to_student_layer"][i][i] for i in range(2)] == [0.0, 0.0]
    assert itself["kl_teacher_layer_to_student_layer"][0][1] > 0  # two different layers rank differently


def test_probe_tables_show_each_layer_and_each_fixed_arm() -> None:
    from benchmarks.quality.probe_report import probe_tables

    arm = {"strategy": "fixed", "pairs": [{"student": 0, "teacher": 1, "share_of_steps": 1.0, "kl": 0.25},
                                         {"student": 1, "teacher": 3, "share_of_steps": 1.0, "kl": 0.5}],
           "kl_mean": 0.375, "layer_term": 0.37}  # fmt: skip
    probe = {"teacher": "T", "student": "S", "chosen_scoring": "mean_dot", "batches": 8, "dev_batches": 10,
             "batch_size": 8, "cross_entropy": {"train": {"teacher": [2.0, 1.0, 0.5], "student": [1.5, 0.25, 0.25]},
                                                "dev": {"teacher": [2.5, 1.5, 0.75], "student": [1.75, 0.5, 0.5]}},
             "scorings": {"mean_dot": {"response_kl": 0.125}}, "dev": {"response_kl": 0.375},
             "arms": {"nolast": {"train": arm, "dev": arm}}}  # fmt: skip
    text = probe_tables({"probe": probe})
    assert "| teacher | train (8 x 8 queries) | 2.00 1.00 | 0.50 |" in text
    assert "| student | dev (10 x 8 queries) | 1.75 0.50 | 0.50 |" in text
    assert "| nolast | 0-1 100%, 1-3 100% | 0.25 0.50 | 0.38 | 0.37 | 0.25 0.50 | 0.38 | 0.37 |" in text
    assert "train 0.12, dev 0.38" in text  # response KL: 0.125 and 0.375 to two places (round half to even)
