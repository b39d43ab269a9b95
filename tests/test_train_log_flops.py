"""FLOPs counting (hand-computed, and against torch's own FLOP counter) and the MFU estimate."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, DistilBertConfig

from lead_dist.train.flops import (
    ModelWork,
    TransformerShape,
    block_forward_flops,
    forward_flops,
    late_interaction_flops,
    mfu,
    peak_matmul_flops,
    step_flops,
    tensor_shape,
)


def test_hand_computed_step_flops() -> None:
    shape = TransformerShape(num_layers=2, hidden_size=4, intermediate_size=8)
    # (3, 5): projections 2*15*(4*4*4 + 2*4*8) = 2*15*128 = 3840; attention 4*3*5*5*4 = 1200; block 5040
    assert block_forward_flops(shape, 3, 5) == 5040
    # (2, 3): projections 2*6*128 = 1536; attention 4*2*3*3*4 = 288; block 1824
    assert block_forward_flops(shape, 2, 3) == 1824
    # two layers over both inputs: 2*5040 + 2*1824 = 13728
    assert forward_flops(shape, [(3, 5), (2, 3)]) == 13728
    student = ModelWork(shape, ((3, 5), (2, 3)), trained=True)
    teacher = ModelWork(TransformerShape(1, 4, 8), ((3, 5),), trained=False)
    assert student.flops == 3 * 13728
    assert teacher.flops == 5040
    assert step_flops([student, teacher], extra_flops=7) == 3 * 13728 + 5040 + 7


def test_late_interaction_flops_hand_computed() -> None:
    # 2 queries x 3 candidates x 4 query tokens x 5 passage tokens x 6 dims x 2 FLOPs, for 2 layers = 2880
    assert late_interaction_flops(2, 3, 4, 5, 6, num_scores=2) == 2880


def _bert(layers: int = 2, hidden: int = 32, ffn: int = 64) -> BertModel:
    config = BertConfig(
        vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=ffn
    )
    return BertModel(config, add_pooling_layer=False)


def test_counts_equal_torch_flop_counter_for_a_real_bert_forward_and_backward() -> None:
    torch.manual_seed(0)
    model = _bert(layers=3, hidden=32, ffn=48)
    batch = {"input_ids": torch.randint(0, 100, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    batch["attention_mask"][0, 4:] = 0  # padding still costs compute: counts use the padded length
    shape = TransformerShape.from_config(model.config)
    with FlopCounterMode(display=False) as forward_counter:
        model(**batch)
    assert forward_counter.get_total_flops() == forward_flops(shape, [tensor_shape(batch)])
    with FlopCounterMode(display=False) as train_counter:
        model(**batch).last_hidden_state.sum().backward()
    assert train_counter.get_total_flops() == ModelWork(shape, (tensor_shape(batch),), trained=True).flops


def test_late_interaction_count_equals_torch_flop_counter() -> None:
    queries, passages = torch.randn(2, 4, 6), torch.randn(3, 5, 6)
    with FlopCounterMode(display=False) as counter:
        torch.einsum("qid,cjd->qcij", queries, passages).amax(-1).sum(-1)
    assert counter.get_total_flops() == late_interaction_flops(2, 3, 4, 5, 6)


def test_shape_from_configs_and_models() -> None:
    assert TransformerShape.from_config(BertConfig(num_hidden_layers=3, hidden_size=48, intermediate_size=96)) == (
        TransformerShape(3, 48, 96)
    )
    distil = DistilBertConfig(n_layers=6, dim=768, hidden_dim=3072)
    assert TransformerShape.from_config(distil) == TransformerShape(6, 768, 3072)

    class Wrapped(torch.nn.Module):  # a lead_dist model keeps its transformers model in .backbone
        def __init__(self) -> None:
            super().__init__()
            self.backbone = _bert(layers=2, hidden=32, ffn=64)

    assert TransformerShape.of_model(Wrapped()) == TransformerShape(2, 32, 64)
    with pytest.raises(ValueError, match="none of .*intermediate_size"):
        TransformerShape.from_config(type("Cfg", (), {"num_hidden_layers": 2, "hidden_size": 8})())
    with pytest.raises(ValueError, match="input_ids of shape"):
        tensor_shape({"input_ids": torch.zeros(2, 3, 4)})


def test_mfu_and_measured_peak() -> None:
    assert mfu(1e12, 2.0, 1e12) == 0.5
    assert mfu(1e12, 0.0, 1e12) == 0.0
    peak = peak_matmul_flops(torch.float32, "cpu", size=256)
    assert 1e6 < peak < 1e15  # some FLOP/s, far below any machine's impossible bound
    start = time.perf_counter()
    assert peak_matmul_flops(torch.float32, "cpu", size=256) == peak  # cached: the very same measurement
    assert time.perf_counter() - start < 0.01
