"""Score functions against hand-computed values (DE, ColBERT) and the CE head applied per layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from rounding import assert_within, colbert_score_bound, reorder_bound

from lead_dist.models import ColBERT, DualEncoder, Reps, load_model
from lead_dist.models.dual_encoder import pool


def test_pool_cls_and_masked_mean_by_hand() -> None:
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(states, mask, "cls"), torch.tensor([[1.0, 2.0]]))
    # (1+3)/2, (2+4)/2: the padded third token must not enter the mean.
    assert torch.equal(pool(states, mask, "mean"), torch.tensor([[2.0, 3.0]]))


def test_dual_encoder_dot_score_by_hand() -> None:
    q = Reps(final=torch.tensor([[1.0, 0.0], [0.0, 2.0]]), layers=torch.tensor([[[1.0, 1.0], [1.0, -1.0]]]))
    p = Reps(
        final=torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.0, 0.5]]),
        layers=torch.tensor([[[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]),
    )
    final, layers = DualEncoder.score(q, p)
    assert torch.equal(final, torch.tensor([[1.0, 2.0, 0.0], [2.0, -2.0, 1.0]]))
    assert layers.shape == (1, 2, 3)
    assert torch.equal(layers[0], torch.tensor([[3.0, 1.0, 2.0], [3.0, -1.0, 0.0]]))


def test_dual_encoder_scale_multiplies_every_score_and_must_match() -> None:
    q = Reps(final=torch.tensor([[0.6, 0.8]]), layers=torch.tensor([[[1.0, 0.0]]]), scale=20.0)
    p = Reps(final=torch.tensor([[1.0, 0.0]]), layers=torch.tensor([[[0.0, 1.0]]]), scale=20.0)
    final, layers = DualEncoder.score(q, p)
    assert final.item() == pytest.approx(12.0)  # 20 * 0.6
    assert layers.item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="different scales"):
        DualEncoder.score(q, dataclasses.replace(p, scale=1.0))


def test_dual_encoder_forward_pools_by_hand(tiny_bert_dir) -> None:
    """mean+cos forward equals masked mean of the backbone states, normalised; score = scale * cosine."""
    model = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos", scale=7.0).eval()
    tokens = model.tokenize_queries(["a short one", "a much longer query with words"], 16)
    with torch.no_grad():
        reps = model(**tokens, layers=[0])
        states = model.backbone(**tokens, output_hidden_states=True).hidden_states
    for row in range(2):
        length = int(tokens["attention_mask"][row].sum())
        for got, h in ((reps.final[row], states[2][row]), (reps.layers[0, row], states[1][row])):
            mean = h[:length].sum(0) / length
            torch.testing.assert_close(got, mean / mean.norm(), atol=1e-6, rtol=1e-5)
    final, _ = DualEncoder.score(reps, reps)
    expected = 7.0 * torch.nn.functional.cosine_similarity(reps.final[0], reps.final[1], dim=0)
    torch.testing.assert_close(final[0, 1], expected, atol=1e-5, rtol=1e-5)


def test_colbert_sum_max_by_hand_with_padding_on_both_sides() -> None:
    q_tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # third query token is padding
    p_tokens = torch.tensor(
        [
            [[2.0, 0.0], [0.0, 3.0], [10.0, 10.0]],  # padded token would win every max if counted
            [[-1.0, -1.0], [-2.0, 0.0], [0.0, 0.0]],  # padded zero vector would beat negative similarities
        ]
    )
    p_mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    layers_q, layers_p = q_tokens.unsqueeze(0), p_tokens.unsqueeze(0)
    # Without augmentation the padded query token does not count:
    # p0: max(2, 0) + max(0, 3) = 5;  p1: max(-1, -2) + max(-1, 0) = -1.
    q = Reps(final=q_tokens, layers=layers_q, mask=torch.tensor([[1, 1, 0]]))
    p = Reps(final=p_tokens, layers=layers_p, mask=p_mask)
    final, layers = ColBERT.score(q, p)
    assert torch.equal(final, torch.tensor([[5.0, -1.0]]))
    assert torch.equal(layers, torch.tensor([[[5.0, -1.0]]]))
    # With augmentation the third query token counts: + max(10, 15) = 15 for p0, + max(-10, -10) = -10 for p1.
    q_aug = dataclasses.replace(q, mask=torch.ones(1, 3, dtype=torch.long))
    final_aug, _ = ColBERT.score(q_aug, p)
    assert torch.equal(final_aug, torch.tensor([[20.0, -11.0]]))


def test_colbert_score_is_chunk_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring candidates in small chunks (memory bound) gives the same values as one block."""
    from lead_dist.models import colbert

    generator = torch.Generator().manual_seed(0)
    q = Reps(
        torch.randn(3, 4, 8, generator=generator),
        torch.randn(2, 3, 4, 8, generator=generator),
        mask=torch.ones(3, 4, dtype=torch.long),
    )
    p_mask = (torch.rand(7, 5, generator=generator) > 0.3).long()
    p_mask[:, 0] = 1
    p = Reps(torch.randn(7, 5, 8, generator=generator), torch.randn(2, 7, 5, 8, generator=generator), mask=p_mask)
    whole = ColBERT.score(q, p)
    monkeypatch.setattr(colbert, "_MAX_BLOCK_ELEMENTS", 3 * 4 * 5 * 2)  # two candidates per chunk
    chunked = ColBERT.score(q, p)
    # Chunks give einsum other shapes, so other kernels and summation orders: equal only up to float32 rounding of
    # the D-term dot products and the Tq-term sum (tests/rounding.py: 2e-5 to 5e-5 here; 3.8e-6 seen on an AMD EPYC).
    for a, b, bound, name in zip(whole, chunked, colbert_score_bound(q, p), ("final", "layers"), strict=True):
        assert_within(a, b, bound, name)
    assert whole[1].shape == (2, 3, 7)


def _colbert_scores(model, queries, titles, texts, q_len=12, p_len=32):
    with torch.no_grad():
        q = model(**model.tokenize_queries(queries, q_len), layers=[0, 1])
        p = model(**model.tokenize_passages(titles, texts, p_len), layers=[0, 1])
    return ColBERT.score(q, p)


@pytest.mark.parametrize("augmentation", [True, False])
def test_colbert_padding_does_not_change_scores(tiny_bert_dir, augmentation: bool) -> None:
    """A passage scored alone (no padding) or next to a longer one (padded) scores the same; so does a query."""
    model = load_model(tiny_bert_dir, kind="cb", projection_dim=16, query_augmentation=augmentation).eval()
    long_text = "a much longer passage that forces padding on the shorter one in the same batch"
    alone = _colbert_scores(model, ["short query"], ["title"], ["short text"])
    padded = _colbert_scores(model, ["short query"], ["title", ""], ["short text", long_text])
    for a, b in zip(alone, padded, strict=True):
        torch.testing.assert_close(a[..., 0], b[..., 0], atol=1e-5, rtol=1e-5)
    q_alone = _colbert_scores(model, ["short query"], ["title"], ["short text"])
    q_padded = _colbert_scores(model, ["short query", "a longer query with many more words"], ["title"], ["short text"])
    for a, b in zip(q_alone, q_padded, strict=True):
        torch.testing.assert_close(a[..., 0, :], b[..., 0, :], atol=1e-5, rtol=1e-5)


def test_colbert_pad_tokens_keeps_scores(tiny_bert_dir) -> None:
    """Padding passage Reps to a common length (as a cross-rank gather needs) leaves every score unchanged."""
    model = load_model(tiny_bert_dir, kind="cb", query_augmentation=False).eval()
    with torch.no_grad():
        q = model(**model.tokenize_queries(["a query", "q"], 8), layers=[0])
        p = model(**model.tokenize_passages(["", "t"], ["some passage", "x"], 16), layers=[0])
    padded_p, padded_q = ColBERT.pad_tokens(p, 20), ColBERT.pad_tokens(q, 11)
    assert padded_p.final.shape[1] == 20 and padded_p.layers.shape[2] == 20 and padded_q.mask.shape == (2, 11)
    # Zero vectors under mask 0 add nothing, but the padded shapes run other kernels in another order: equal up to
    # float32 rounding of the dot products and the query-token sum, bounded on the padded Reps (tests/rounding.py).
    unpadded, padded = ColBERT.score(q, p), ColBERT.score(padded_q, padded_p)
    bounds = colbert_score_bound(padded_q, padded_p)
    for a, b, bound, name in zip(unpadded, padded, bounds, ("final", "layers"), strict=True):
        assert_within(a, b, bound, name)
    with pytest.raises(ValueError, match="cannot pad"):
        ColBERT.pad_tokens(p, 2)


def test_colbert_final_uses_normalised_projected_tokens(tiny_bert_dir) -> None:
    model = load_model(tiny_bert_dir, kind="cb", projection_dim=16).eval()
    tokens = model.tokenize_passages(["t"], ["some passage text"], 16)
    with torch.no_grad():
        reps = model(**tokens, layers=[1])
        last = model.backbone(**tokens).last_hidden_state
    expected = torch.nn.functional.normalize(last @ model.projection.weight.T, dim=-1)
    assert reps.final.shape == (1, tokens["input_ids"].shape[1], 16)
    torch.testing.assert_close(reps.final, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(reps.layers[0], last, atol=0, rtol=0)  # per-layer states stay raw


def test_cross_encoder_shared_head_per_layer(tiny_bert_dir) -> None:
    model = load_model(tiny_bert_dir, kind="ce").eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.linspace(-1.0, 1.0, model.hidden_size).unsqueeze(0))
        model.head.bias.fill_(0.5)
    pairs = model.tokenize_pairs(["q one", "q two"], ["title", ""], ["text one", "a longer text two"], 32)
    with torch.no_grad():
        final, layers = model(**pairs, layers=[0, 1])
        states = model.backbone(**pairs, output_hidden_states=True).hidden_states
    w = torch.linspace(-1.0, 1.0, model.hidden_size)

    def by_hand(layer_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        products = layer_states[:, 0] * w
        # nn.Linear sums the H products and the bias in its own order: within rounding of a sum of H + 1 terms.
        return products.sum(-1) + 0.5, reorder_bound(model.hidden_size + 1, products.abs().sum(-1) + 0.5)

    for k, layer in enumerate([0, 1]):
        assert_within(layers[k], *by_hand(states[layer + 1]), f"layer {layer}")
    assert_within(final, *by_hand(states[2]), "final")
    assert final.shape == (2,) and layers.shape == (2, 2)
    assert torch.equal(layers[1], final)  # the last block's layer score is the final score (LEAD_SPEC section 2)
