"""Length-sorted chunked encoding (lead_dist/train/chunking.py): the plan by hand, and chunked == one padded batch for
every model kind, in fp32."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lead_dist.train.chunking import Chunking, encode, padding_share, plan_chunks

# Chunked against one padded batch, fp32: the embedding, projection and feed-forward matmuls have the same inner
# length (the hidden size) in both shapes, and padded keys add exact zeros (their softmax weight underflows to 0,
# and adding 0 rounds nothing), so what changes is only the grouping of the same non-zero terms in the sums along the
# sequence (softmax denominator, attention-weighted sum, mean pooling), whose blocking follows the padded length.
# Each such sum of T terms differs by about sqrt(T) u relative (u = 2**-24, the probabilistic bound of Higham and
# Mary; tests/rounding.py); the layer norms rescale each layer, so the sums' errors add in quadrature instead of
# compounding: 2 layers x 2 sums + 1 pooling = 5 sums of T <= 42 tokens: sqrt(5 * 42) * u = 8.6e-7 relative to the
# largest entry, under the 1e-6. (Seen on this CPU: 2e-7.) On a BLAS whose matmul blocking changes with the
# number of rows this no longer holds, and the whole-encoder estimate of tests/rounding.py (1e-5) would apply.
MAX_TOKENS = 42
RELATIVE = 1e-6
assert math.sqrt(5 * MAX_TOKENS) * 2.0**-24 < RELATIVE


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = "alpha beta gamma delta protein cell gene study result effect".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    bound = RELATIVE * float(expected.abs().max())
    difference = float((actual - expected).abs().max())
    assert difference <= bound, f"{what}: {difference:.3e} > {bound:.3e}"


def test_plan_sorts_by_length_and_pads_each_chunk_to_its_longest() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    plan = plan_chunks(mask, Chunking(size=2))  # lengths 3, 5, 2, 5, 4
    assert [(chunk.rows.tolist(), chunk.length) for chunk in plan] == [([1, 3], 5), ([4, 0], 4), ([2], 2)]
    bucketed = plan_chunks(mask, Chunking(size=2, bucket=4))
    assert [chunk.length for chunk in bucketed] == [8, 4, 4]  # rounded up to multiples of 4
    # 19 real tokens: 25 positions in one batch, 2*5 + 2*4 + 1*2 = 20 in chunks
    before, after = padding_share(mask, Chunking(size=2))
    assert before == pytest.approx(6 / 25) and after == pytest.approx(1 / 20)
    assert padding_share(mask, Chunking()) == pytest.approx((6 / 25, 6 / 25))  # one chunk: nothing changes


@pytest.mark.parametrize("chunking", [Chunking(4), Chunking(5, bucket=8), Chunking(0, bucket=16)])
@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "mean", "similarity": "cos"},
        {"pooling": "cls"},
        # the SciFact recipes' scoring: intermediate blocks by raw dot of means, the last block by cosine x 20
        {"pooling": "mean", "similarity": "cos", "layer_similarity": "dot", "layer_scale": 1.0},
    ],
)
def test_dual_encoder_chunked_equals_one_padded_batch(tiny_bert_dir, chunking, options) -> None:
    from lead_dist.models import load_model

    model = load_model(tiny_bert_dir, kind="de", **options)
    tokens = model.tokenize_passages([""] * 23, _texts(23, seed=1), 64)
    assert tokens["attention_mask"].shape[1] <= MAX_TOKENS
    with torch.no_grad():
        whole = model(**tokens, layers=(0, 1))
        chunked = encode(model, tokens, (0, 1), chunking)
    _close(chunked.final, whole.final, "final")
    _close(chunked.layers, whole.layers, "layers")
    # the joined chunks keep every scale (the join once rebuilt Reps and dropped the per-layer one)
    assert (chunked.scale, chunked.layer_scales) == (whole.scale, whole.layer_scales)


def test_colbert_chunked_equals_one_padded_batch_on_counted_tokens(tiny_bert_dir) -> None:
    from lead_dist.models import load_model

    model = load_model(tiny_bert_dir, kind="cb")
    tokens = model.tokenize_passages([""] * 17, _texts(17, seed=2), 64)
    with torch.no_grad():
        whole = model(**tokens, layers=(1,))
        chunked = encode(model, tokens, (1,), Chunking(4, bucket=8))
    length = whole.mask.shape[1]
    # Bucketing may pad beyond the batch's length: those positions, and every padded one, have mask 0.
    assert chunked.mask.shape[1] >= length and int(chunked.mask[:, length:].sum()) == 0
    assert torch.equal(chunked.mask[:, :length], whole.mask)
    counted = whole.mask[..., None].bool()
    _close(chunked.final[:, :length] * counted, whole.final * counted, "final")
    _close(chunked.layers[:, :, :length] * counted, whole.layers * counted, "layers")
    scores, layer_scores = model.score(whole, chunked)  # ColBERT.score of padded-differently Reps still works
    assert scores.shape == (17, 17) and layer_scores.shape == (1, 17, 17)


def test_cross_encoder_chunked_equals_one_padded_batch(tiny_bert_dir) -> None:
    from lead_dist.models import load_model

    model = load_model(tiny_bert_dir, kind="ce")
    texts = _texts(10, seed=3)
    tokens = model.tokenize_pairs(texts, [""] * 10, texts[::-1], 64)
    with torch.no_grad():
        whole = model(**tokens, layers=(0,))
        chunked = encode(model, tokens, (0,), Chunking(3))
    _close(chunked[0], whole[0], "final")
    _close(chunked[1], whole[1], "layers")


def test_chunked_gradients_reach_every_text(tiny_bert_dir) -> None:
    """Each chunk is its own forward; the backward of a loss over the re-ordered outputs reaches every chunk, and the
    parameter gradients match one padded batch."""
    from lead_dist.models import load_model

    model = load_model(tiny_bert_dir, kind="de", pooling="mean")
    tokens = model.tokenize_passages([""] * 12, _texts(12, seed=4), 64)
    weights = torch.randn(12, model.hidden_size, generator=torch.Generator().manual_seed(0))
    grads = []
    for chunking in (None, Chunking(5)):
        model.zero_grad()
        (encode(model, tokens, (), chunking).final * weights).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape and grads[0].abs().max() > 0
    # Each text's share of the gradient differs by the relative bound above (the backward runs the same sums along
    # the sequence), and adding the 12 shares in another order adds 12 u of their sum, far below: the bound is
    # RELATIVE times the sum of each text's largest gradient entry.
    per_text = []
    for row in range(12):
        model.zero_grad()
        (model(**{k: v[row : row + 1] for k, v in tokens.items()}).final * weights[row]).sum().backward()
        per_text.append(max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None))
    bound = RELATIVE * sum(per_text)
    difference = float((grads[1] - grads[0]).abs().max())
    assert difference <= bound, f"{difference:.3e} > {bound:.3e}"
