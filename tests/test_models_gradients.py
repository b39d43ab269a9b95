"""Every parameter takes part in the final score, so DDP needs no find_unused_parameters (no pooler, no idle head)."""

from __future__ import annotations

import pytest
import torch

from lead_dist.models import ColBERT, DualEncoder, load_model


@pytest.mark.parametrize(("kind", "options"), [("de", {}), ("cb", {"projection_dim": 8}), ("ce", {})])
def test_final_score_reaches_every_parameter(tiny_bert_dir, kind, options) -> None:
    model = load_model(tiny_bert_dir, kind=kind, **options).train()
    if kind == "ce":
        final, _ = model(**model.tokenize_pairs(["q"], ["t"], ["some text"], 16))
        loss = final.sum()
    else:
        q = model(**model.tokenize_queries(["a query", "another"], 8))
        p = model(**model.tokenize_passages(["t", ""], ["some text", "more text"], 16))
        scores, _ = (DualEncoder if kind == "de" else ColBERT).score(q, p)
        loss = torch.log_softmax(scores, dim=-1).diagonal().neg().mean()
    loss.backward()
    without_grad = [name for name, param in model.named_parameters() if param.grad is None]
    assert without_grad == []
    assert model.backbone.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
